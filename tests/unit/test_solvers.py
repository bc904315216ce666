"""The torch L1 logistic solver against scikit-learn on problems both can solve: the same
objective to 1e-6 relative and the same support."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from hneuron_lens.errors import UsageError
from hneuron_lens.probe import SparseProbe
from hneuron_lens.solvers import (
    RowBlocks,
    fit_l1_logistic,
    l1_logistic_objective,
    l1_logistic_path,
    sample_weights,
)


def _problem(seed: int, n: int = 120, p: int = 40, nonneg: bool = False):
    """A random sparse logistic problem (non-negative features like CETT when ``nonneg``)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.2, 2.0, size=p)
    if nonneg:
        X = np.abs(X)
    w = np.zeros(p)
    w[rng.choice(p, 5, replace=False)] = rng.normal(size=5) * 2
    z = X @ w
    y = (z - np.quantile(z, 0.7) + rng.logistic(size=n) > 0).astype(int)  # ~30% positives
    return X, y


def _saga(X, y, C, sample_weight=None, class_weight=None, fit_intercept=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(
            C=C, l1_ratio=1.0, solver="saga", tol=1e-12, max_iter=200_000,
            class_weight=class_weight, fit_intercept=fit_intercept,
        ).fit(X, y, sample_weight=sample_weight)  # fmt: skip


CASES = [  # seed, C, non-negative features, sample weights, class_weight
    (0, 0.05, False, False, None),
    (1, 0.3, False, False, None),
    (2, 1.0, True, False, None),
    (3, 0.2, True, True, None),
    (4, 0.5, True, False, "balanced"),
    (5, 0.3, False, True, {0: 1.0, 1: 3.0}),
]


@pytest.mark.parametrize(("seed", "C", "nonneg", "weighted", "class_weight"), CASES)
def test_matches_sklearn_saga(seed, C, nonneg, weighted, class_weight):
    X, y = _problem(seed, nonneg=nonneg)
    sw = np.random.default_rng(100 + seed).uniform(0.5, 2.0, size=y.size) if weighted else None
    sk = _saga(X, y, C, sample_weight=sw, class_weight=class_weight)
    s = sample_weights(y, class_weight, sw)
    fit = fit_l1_logistic(X, y, C, sample_weight=s, tol=1e-9)
    assert fit.converged
    f_sk = l1_logistic_objective(X, y, sk.coef_[0], sk.intercept_[0], C, s)
    f_t = l1_logistic_objective(X, y, fit.coef, fit.intercept, C, s)
    assert abs(f_t - f_sk) <= 1e-6 * abs(f_sk), (f_t, f_sk)
    assert abs(fit.objective - f_t) <= 1e-9 * abs(f_t)
    assert np.array_equal(fit.coef != 0, sk.coef_[0] != 0)
    assert 0 < fit.n_nonzero < X.shape[1]
    np.testing.assert_allclose(fit.coef, sk.coef_[0], atol=1e-4)


def test_no_intercept_matches_liblinear():
    """Without an intercept liblinear minimises exactly this objective."""
    X, y = _problem(7, nonneg=True)
    C = 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = LogisticRegression(
            C=C, l1_ratio=1.0, solver="liblinear", tol=1e-10, max_iter=100_000,
            fit_intercept=False,
        ).fit(X, y)  # fmt: skip
    fit = fit_l1_logistic(X, y, C, fit_intercept=False, tol=1e-9, max_iter=50_000)
    assert fit.converged and fit.intercept == 0.0
    f_sk = l1_logistic_objective(X, y, sk.coef_[0], 0.0, C)
    assert abs(fit.objective - f_sk) <= 1e-6 * f_sk
    assert np.array_equal(fit.coef != 0, sk.coef_[0] != 0)


def test_streamed_memmap_blocks_equal_in_memory(tmp_path):
    X, y = _problem(8, nonneg=True)
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    streamed = RowBlocks(mm, block_rows=17)
    assert not streamed.cache  # a memmap is re-read block by block on every pass
    a = fit_l1_logistic(streamed, y, 0.5, tol=1e-9)
    b = fit_l1_logistic(np.asarray(mm), y, 0.5, tol=1e-9)
    assert a.converged and b.converged
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-9)
    assert abs(a.objective - b.objective) <= 1e-10 * b.objective


def test_float32_and_bf16_cache_are_close():
    X, y = _problem(9, nonneg=True)
    ref = fit_l1_logistic(X, y, 0.5, tol=1e-9)
    f32 = fit_l1_logistic(X.astype(np.float32), y, 0.5, dtype="float32", tol=1e-4)
    assert f32.converged
    assert abs(l1_logistic_objective(X, y, f32.coef, f32.intercept, 0.5) - ref.objective) <= (
        1e-5 * ref.objective
    )
    half = RowBlocks(X, dtype="float32", cache_dtype="bfloat16")  # X stored in bf16
    fb = fit_l1_logistic(half, y, 0.5, tol=1e-4)
    assert fb.converged and set(np.flatnonzero(ref.coef)) >= set(
        np.flatnonzero(np.abs(fb.coef) > 1e-2)
    )


def test_warm_started_path_equals_cold_fits():
    X, y = _problem(10, nonneg=True)
    Cs = [1.0, 0.05, 0.3]
    path = l1_logistic_path(X, y, Cs, tol=1e-9)
    for C, fit in zip(Cs, path, strict=True):
        cold = fit_l1_logistic(X, y, C, tol=1e-9)
        assert fit.converged
        assert abs(fit.objective - cold.objective) <= 1e-8 * cold.objective
        assert np.array_equal(fit.coef != 0, cold.coef != 0)
    assert path[1].n_nonzero <= path[2].n_nonzero <= path[0].n_nonzero


def test_bad_inputs_raise():
    X, y = _problem(11)
    with pytest.raises(UsageError, match="C must be"):
        fit_l1_logistic(X, y, 0.0)
    with pytest.raises(UsageError, match="both classes"):
        fit_l1_logistic(X, np.zeros_like(y), 1.0)
    with pytest.raises(UsageError, match="labels"):
        fit_l1_logistic(X, y[:-1], 1.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"standardize": False, "class_weight": None},
        {"standardize": True, "class_weight": "balanced"},
    ],
)
def test_sparse_probe_torch_solver_matches_saga_probe(settings):
    """The seam: SparseProbe(solver="torch") fits what SparseProbe(solver="saga") fits (both
    with an unpenalised intercept), with the probe's standardisation and class weights."""
    X, y = _problem(12, n=160, p=30, nonneg=True)
    X = X.astype(np.float32)
    torch_probe = SparseProbe(C=0.5, solver="torch", tol=1e-9, **settings).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        saga = SparseProbe(C=0.5, solver="saga", tol=1e-12, max_iter=200_000, **settings)
        saga.fit(X.astype(np.float64), y)
    assert torch_probe.converged_
    assert np.array_equal(torch_probe.coef_ != 0, saga.coef_ != 0)
    # the probe hands the solvers float32 and saga computes in it: agreement to ~1e-4
    np.testing.assert_allclose(torch_probe.coef_, saga.coef_, atol=1e-3)
    assert abs(torch_probe.intercept_ - saga.intercept_) < 1e-3


def test_sparse_probe_torch_solver_is_l1_only():
    X, y = _problem(12, n=160, p=30, nonneg=True)
    with pytest.raises(ValueError, match="penalty='l1' only"):
        SparseProbe(penalty="l2", solver="torch").fit(X, y)
