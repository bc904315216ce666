"""The torch L1 logistic solver against scikit-learn on problems both can solve: the same
objective to 1e-6 relative and the same support."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from hneuron_lens.errors import UsageError
from hneuron_lens.probe import SparseProbe
from hneuron_lens.solvers import (
    RowBlocks,
    RowSelection,
    column_mean_std,
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
    # the working-set solver (a first set of 4 of the 40 columns) finds the same solution
    ws = fit_l1_logistic(X, y, C, sample_weight=s, tol=1e-9, working_set=4)
    assert ws.converged and ws.n_rounds >= 1  # at least one restricted solve
    f_ws = l1_logistic_objective(X, y, ws.coef, ws.intercept, C, s)
    assert abs(f_ws - f_sk) <= 1e-6 * abs(f_sk), (f_ws, f_sk)
    assert abs(ws.objective - f_ws) <= 1e-9 * abs(f_ws)
    assert np.array_equal(ws.coef != 0, sk.coef_[0] != 0)
    np.testing.assert_allclose(ws.coef, fit.coef, atol=1e-5)


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
    f_sk = l1_logistic_objective(X, y, sk.coef_[0], 0.0, C)
    for working_set in (None, 4):
        fit = fit_l1_logistic(
            X, y, C, fit_intercept=False, tol=1e-9, max_iter=50_000, working_set=working_set
        )
        assert fit.converged and fit.intercept == 0.0
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


@pytest.mark.parametrize("source", ["array", "tensor", "memmap", "cached"])
def test_row_blocks_columns(source, tmp_path):
    """``RowBlocks.columns`` is ``X[:, idx]`` in float64, however X is held."""
    X = np.random.default_rng(0).normal(size=(23, 11)).astype(np.float32)
    idx = np.array([7, 0, 3, 10])
    if source == "memmap":
        np.save(tmp_path / "x.npy", X)
        blocks = RowBlocks(np.load(tmp_path / "x.npy", mmap_mode="r"), block_rows=5)
    elif source == "tensor":
        blocks = RowBlocks(torch.from_numpy(X), block_rows=5)
    else:
        blocks = RowBlocks(X, block_rows=5, dtype="float32")
        if source == "cached":
            list(blocks)  # fills the cache
            assert blocks._cached is not None
    got = blocks.columns(idx)
    assert got.dtype == torch.float64 and tuple(got.shape) == (23, 4)
    np.testing.assert_array_equal(got.numpy(), X[:, idx].astype(np.float64))
    assert tuple(blocks.columns(np.array([], dtype=int)).shape) == (23, 0)


def test_row_blocks_over_parts_read_as_one_matrix(tmp_path):
    """A list of arrays (an in-memory float32 part, a float16 memory map) is one matrix stacked
    by rows: blocks never span parts; products, columns, statistics, the on-the-fly
    standardisation and a fit all equal those of the concatenation."""
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(13, 9))).astype(np.float32)
    np.save(tmp_path / "b.npy", np.abs(rng.normal(size=(8, 9))).astype(np.float16))
    b = np.load(tmp_path / "b.npy", mmap_mode="r")
    full = np.concatenate([a.astype(np.float64), b.astype(np.float64)])
    blocks = RowBlocks([a, b], block_rows=5)
    assert blocks.n == 21 and blocks.p == 9 and not blocks.cache  # a part is a memmap
    assert [(first, xb.shape[0]) for first, xb in blocks] == [
        (0, 5),
        (5, 5),
        (10, 3),
        (13, 5),
        (18, 3),
    ]
    np.testing.assert_array_equal(torch.cat([xb for _, xb in blocks]).numpy(), full)
    v = rng.normal(size=21)
    np.testing.assert_allclose(blocks.xt(v).numpy(), full.T @ v, rtol=1e-12)
    idx = np.array([8, 2, 5])
    np.testing.assert_array_equal(blocks.columns(idx).numpy(), full[:, idx])
    mean, std = column_mean_std(blocks)
    np.testing.assert_allclose(mean, full.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, full.std(0), rtol=1e-10)
    z = (full - mean) / std
    scaled = blocks.transformed(shift=mean, scale=std)
    np.testing.assert_allclose(torch.cat([xb for _, xb in scaled]).numpy(), z, atol=1e-12)
    np.testing.assert_allclose(scaled.columns(idx).numpy(), z[:, idx], atol=1e-12)
    y = (z[:, 3] + rng.logistic(size=21) * 0.3 > 0).astype(int)
    got = fit_l1_logistic(scaled, y, 2.0, tol=1e-10, working_set=2)
    ref = fit_l1_logistic(z, y, 2.0, tol=1e-10, working_set=2)
    assert got.converged and got.n_nonzero > 0
    np.testing.assert_allclose(got.coef, ref.coef, atol=1e-9)
    with pytest.raises(UsageError, match="different widths"):
        RowBlocks([a, a[:, :4]])
    with pytest.raises(UsageError, match="shift must have shape"):
        RowBlocks(a, shift=np.zeros(3))


def test_row_selection_is_a_lazy_resample(tmp_path):
    """A resample (repeats allowed) of a memory map read as RowBlocks parts equals the
    fancy-indexed copy, is not cached, and fits the same; bad rows are refused."""
    rng = np.random.default_rng(2)
    X = np.abs(rng.normal(size=(30, 7))).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = rng.integers(0, 30, size=40)
    sel = RowSelection(mm, rows)
    assert sel.shape == (40, 7) and sel.is_memmap
    np.testing.assert_array_equal(sel[5:9], X[rows[5:9]])
    blocks = RowBlocks([sel, RowSelection(X, rows[:10])], block_rows=8)
    assert not blocks.cache  # a part reads a memory map
    full = np.concatenate([X[rows], X[rows[:10]]]).astype(np.float64)
    np.testing.assert_array_equal(torch.cat([xb for _, xb in blocks]).numpy(), full)
    np.testing.assert_array_equal(blocks.columns(np.array([6, 1])).numpy(), full[:, [6, 1]])
    y = (full[:, 2] + rng.logistic(size=50) * 0.2 > np.median(full[:, 2])).astype(int)
    got = fit_l1_logistic(blocks, y, 3.0, tol=1e-10, working_set=2)
    ref = fit_l1_logistic(full, y, 3.0, tol=1e-10, working_set=2)
    np.testing.assert_allclose(got.coef, ref.coef, atol=1e-9)
    with pytest.raises(UsageError, match="out of range"):
        RowSelection(X, np.array([0, 30]))


def test_column_mean_std_merges_blocks_stably():
    """Values around 1e4 with a spread of 1e-2: merged block statistics stay exact where the
    one-pass sum of squares would lose every digit."""
    rng = np.random.default_rng(1)
    X = 1e4 + rng.normal(size=(1000, 4)) * 1e-2
    mean, std = column_mean_std(RowBlocks(X, block_rows=7))
    np.testing.assert_allclose(mean, X.mean(0), rtol=1e-14)
    np.testing.assert_allclose(std, X.std(0), rtol=1e-8)


def test_working_set_on_a_wide_streamed_problem(tmp_path):
    """p = 50 n, streamed from a memory map: the working-set solver reaches the same optimum
    as plain FISTA over all columns, with a small working set and far fewer passes over X."""
    X, y = _problem(13, n=60, p=3000, nonneg=True)
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    C = 3.0 / np.abs(X.T @ (y - y.mean())).max()  # 3x the smallest C with a non-zero weight
    plain = fit_l1_logistic(RowBlocks(mm, block_rows=16), y, C, tol=1e-6, working_set=None)
    ws = fit_l1_logistic(RowBlocks(mm, block_rows=16), y, C, tol=1e-6, working_set=64)
    assert plain.converged and ws.converged
    assert plain.working_set == 0 and 0 < ws.working_set <= 512
    assert abs(ws.objective - plain.objective) <= 1e-6 * plain.objective
    assert np.array_equal(ws.coef != 0, plain.coef != 0)
    assert ws.n_passes < plain.n_passes / 5, (ws.n_passes, plain.n_passes)
    assert ws.n_passes == 2 * ws.n_rounds + 1  # gather + KKT pass per round, one last check


def test_working_set_falls_back_to_all_columns():
    """When the working set would pass half the columns the fit finishes over all of X."""
    X, y = _problem(14, n=80, p=20)
    ref = fit_l1_logistic(X, y, 5.0, tol=1e-9, working_set=None)
    fit = fit_l1_logistic(X, y, 5.0, tol=1e-9, working_set=2)
    assert ref.n_nonzero > 10  # dense enough that the set must grow past p / 2
    assert fit.converged and fit.working_set == X.shape[1]
    assert abs(fit.objective - ref.objective) <= 1e-8 * ref.objective
    assert np.array_equal(fit.coef != 0, ref.coef != 0)


def test_working_set_warm_start_that_is_already_optimal_costs_one_pass():
    X, y = _problem(15, n=80, p=40)
    ref = fit_l1_logistic(X, y, 0.3, tol=1e-9, working_set=None)
    again = fit_l1_logistic(
        X, y, 0.3, tol=1e-6, working_set=4, coef_init=ref.coef, intercept_init=ref.intercept
    )
    assert again.converged and again.n_rounds == 0
    assert again.n_passes == 2  # gather the support, check KKT
    np.testing.assert_array_equal(again.coef, ref.coef)


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
    for working_set in (None, 4):
        path = l1_logistic_path(X, y, Cs, tol=1e-9, working_set=working_set)
        for C, fit in zip(Cs, path, strict=True):
            cold = fit_l1_logistic(X, y, C, tol=1e-9, working_set=None)
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
