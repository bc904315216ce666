"""Tests for hneuron_lens.stats against known values and scipy / scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import average_precision_score, roc_auc_score

from hneuron_lens import stats as hs


def test_interval_str_and_dict_roundtrip():
    iv = hs.Interval(0.7312, 0.7021, 0.7594, 0.95, "x")
    assert str(iv) == "0.731 [0.702, 0.759]"
    assert hs.Interval.from_dict(iv.to_dict()) == iv
    assert iv.contains(0.73) and not iv.contains(0.8)
    nan_iv = hs.Interval(float("nan"), float("nan"), float("nan"))
    assert nan_iv.to_dict()["low"] is None


@pytest.mark.parametrize(
    "k,n,low,high",
    [
        # reference values from the Wilson formula (Newcombe 1998, Table I style; checked by hand)
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
    ],
)
def test_wilson_known_values(k, n, low, high):
    iv = hs.wilson_ci(k, n)
    assert iv.estimate == pytest.approx(k / n)
    assert iv.low == pytest.approx(low, abs=1e-3)
    assert iv.high == pytest.approx(high, abs=1e-3)


def test_wilson_matches_scipy_binomtest():
    res = sps.binomtest(37, 90).proportion_ci(confidence_level=0.9, method="wilson")
    iv = hs.wilson_ci(37, 90, level=0.9)
    assert (iv.low, iv.high) == pytest.approx((res.low, res.high), abs=1e-9)


def test_wilson_validation():
    with pytest.raises(ValueError):
        hs.wilson_ci(1, 0)
    with pytest.raises(ValueError):
        hs.wilson_ci(5, 4)
    with pytest.raises(ValueError):
        hs.wilson_ci(1, 4, level=1.5)


def test_bootstrap_ci_mean_close_to_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=400)
    iv = hs.bootstrap_ci(np.mean, x, n_resamples=2000, seed=1)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert iv.estimate == pytest.approx(x.mean())
    assert iv.low == pytest.approx(x.mean() - 1.96 * se, abs=0.05)
    assert iv.high == pytest.approx(x.mean() + 1.96 * se, abs=0.05)
    # deterministic given the seed
    assert hs.bootstrap_ci(np.mean, x, n_resamples=200, seed=3) == hs.bootstrap_ci(
        np.mean, x, n_resamples=200, seed=3
    )


def test_bootstrap_stratified_keeps_class_counts():
    y = np.array([1] * 5 + [0] * 95)
    for idx in hs.bootstrap_indices(100, 50, seed=0, stratify=y):
        assert y[idx].sum() == 5
    s = y + np.random.default_rng(0).normal(0, 1, 100)
    iv = hs.bootstrap_ci(hs.auroc, y, s, n_resamples=300, stratify=y)
    assert np.isfinite(iv.low) and iv.low <= iv.estimate <= iv.high
    assert "stratified" in iv.method


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 300)
    b = np.where(rng.random(300) < 0.2, 1, a)
    iv = hs.paired_bootstrap_diff(a, b, n_resamples=1000, seed=0)
    assert iv.estimate == pytest.approx(b.mean() - a.mean())
    assert iv.low > 0
    same = hs.paired_bootstrap_diff(a, a, n_resamples=100)
    assert (same.low, same.high) == (0.0, 0.0)
    with pytest.raises(ValueError):
        hs.paired_bootstrap_diff(a, b[:-1])


def test_permutation_test_matches_scipy_and_plus_one():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1, 40)
    y = rng.normal(0.0, 1, 50)
    p = hs.permutation_test(x, y, n_permutations=4000, seed=0)
    ref = sps.permutation_test(
        (x, y),
        lambda a, b: np.mean(a) - np.mean(b),
        n_resamples=4000,
        vectorized=False,
        random_state=0,
    ).pvalue
    assert p == pytest.approx(ref, abs=0.03)
    # +1 correction: never zero; with an extreme effect p == 1 / (n + 1)
    p_min = hs.permutation_test(
        np.arange(10) + 100.0, np.arange(10), n_permutations=99, alternative="greater"
    )
    assert p_min == pytest.approx(1 / 100)
    p_less = hs.permutation_test(
        np.arange(10) + 100.0, np.arange(10), n_permutations=99, alternative="less"
    )
    assert p_less == pytest.approx(1.0)
    with pytest.raises(ValueError):
        hs.permutation_test(x, y, alternative="bigger")


def test_spearman_matches_scipy_and_unpacks():
    x = np.array([1, 2, 3, 4, 5, 6, 7.0])
    y = np.array([2, 1, 4, 3, 7, 5, 6.0])
    rho, p = hs.spearman(x, y)
    ref = sps.spearmanr(x, y)
    assert rho == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)
    assert hs.spearman(x, x).rho == pytest.approx(1.0)


def test_cohens_d_known_value_and_columns():
    pos = np.array([2.0, 4.0, 6.0])
    neg = np.array([1.0, 2.0, 3.0])
    # pooled sd = sqrt((2*4 + 2*1)/4) = sqrt(2.5)
    assert hs.cohens_d(pos, neg) == pytest.approx(2.0 / np.sqrt(2.5))
    d = hs.cohens_d(np.stack([pos, np.ones(3)], 1), np.stack([neg, np.ones(3)], 1))
    assert d[0] == pytest.approx(2.0 / np.sqrt(2.5)) and np.isnan(d[1])


def test_slope_ci_recovers_linear_trend():
    rng = np.random.default_rng(0)
    alphas = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    n = 500
    p = 0.3 + 0.1 * alphas  # true slope 0.1 per alpha
    y = (rng.random((n, alphas.size)) < p).astype(float)
    iv = hs.slope_ci(alphas, y, n_resamples=500, seed=0)
    ref = sps.linregress(alphas, y.mean(0)).slope
    assert iv.estimate == pytest.approx(ref)
    assert iv.contains(0.1)
    with pytest.raises(ValueError):
        hs.slope_ci(np.ones(5), y)


def test_auroc_and_ap_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 200)
        s = np.round(rng.normal(y * 0.5, 1.0), 1)  # ties on purpose
        assert hs.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
        assert hs.average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    with pytest.raises(ValueError):
        hs.auroc(np.ones(5), np.arange(5))


def test_sign_flip_pvalue_matches_the_exact_null():
    # 8 positive differences: exactly 2 of the 2^8 sign patterns reach |mean| = observed
    d = np.ones(8)
    p = hs.sign_flip_pvalue(d, n_permutations=20000, seed=0)
    assert p == pytest.approx(2 / 256, abs=0.003)
    assert hs.sign_flip_pvalue(np.array([1.0, -1.0, 2.0, -2.0]), 2000, 0) == 1.0
    assert np.isnan(hs.sign_flip_pvalue(np.zeros(0)))
    with pytest.raises(ValueError):
        hs.sign_flip_pvalue(d, n_permutations=0)


def test_paired_diff_and_slope_are_scipy_bca():
    rng = np.random.default_rng(1)
    a = (rng.random(120) < 0.1).astype(float)  # rare outcomes: a skewed bootstrap distribution
    b = (rng.random(120) < 0.2).astype(float)
    iv = hs.paired_bootstrap_diff(a, b, n_resamples=999, seed=3)
    ref = sps.bootstrap(
        (b - a,), np.mean, n_resamples=999, method="BCa", random_state=np.random.default_rng(3)
    ).confidence_interval
    assert iv.method == "paired-bootstrap-bca"
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    alphas = np.array([0.0, 1.0, 2.0])
    y = (rng.random((80, 3)) < [0.2, 0.3, 0.4]).astype(float)
    sl = hs.slope_ci(alphas, y, n_resamples=999, seed=0)
    per_item = (y - y.mean(1, keepdims=True)) @ (alphas - 1.0) / 2.0
    ref = sps.bootstrap(
        (per_item,), np.mean, n_resamples=999, method="BCa", random_state=np.random.default_rng(0)
    ).confidence_interval
    assert sl.method.endswith("-bca") and (sl.low, sl.high) == pytest.approx((ref.low, ref.high))
