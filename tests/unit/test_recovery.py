"""Does the default probe find the planted neurons? (issue 14's reference setting, fast version
of benchmarks/bench_recovery.py): 3 layers x 500 neurons, 400 samples per class, 5 planted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hneuron_lens.probe import (
    DEFAULT_RULE,
    SparseProbe,
    _boot_metrics,
    _resample_counts,
    balanced_log_loss,
    l1_min_C,
    probe_path,
    training_matrix,
)
from hneuron_lens.recovery import PlantedConfig, plant_into, planted_splits, recovery_scores
from hneuron_lens.stats import auroc, bootstrap_indices


@pytest.fixture(scope="module")
def reference():
    return {mean: planted_splits(PlantedConfig(mean=mean, seed=0)) for mean in (2e-3, 2e-2)}


@pytest.mark.parametrize("mean", [2e-3, 2e-2])
def test_default_probe_path_recovers_the_planted_set(reference, mean):
    data = reference[mean]
    path = probe_path(data.train, data.validation)  # every default, the rule included
    assert path.rule == DEFAULT_RULE and path.edge is None
    got = recovery_scores(path.probe.h_neurons.flat_index, data.planted)
    assert got["precision"] >= 0.8 and got["recall"] == 1.0, (got, str(path))
    assert len(path.probe.negative_neurons) == 0  # no intercept stand-ins on pure-positive data
    assert path.probe.h_neurons.units == "standardized"


def test_paper_rule_on_the_raw_fit_dilutes_the_set(reference):
    """The failure the issue reports: the paper's fit and rule choose a dense, noisy set."""
    data = reference[2e-2]
    with pytest.warns(UserWarning, match="upper end"):  # accuracy still rising at C = 3
        path = probe_path(
            data.train,
            data.validation,
            Cs=(0.3, 1.0, 3.0),
            rule="held-out",
            standardize=False,
            class_weight=None,
            intercept_scaling=1.0,
            n_resamples=50,
            extend=False,
        )
    got = recovery_scores(path.probe.h_neurons.flat_index, data.planted)
    assert got["precision"] < 0.5


def test_same_C_same_support_when_features_are_10x_smaller(reference):
    data = reference[2e-2]
    x, y = training_matrix(data.train)
    big = SparseProbe(C=0.01).fit(x, y)
    small = SparseProbe(C=0.01).fit(x * np.float32(0.1), y)
    assert len(big.h_neurons) > 0
    assert big.h_neurons.flat_set == small.h_neurons.flat_set
    np.testing.assert_allclose(big.coef_, small.coef_, atol=1e-4)
    assert l1_min_C(x, y) != pytest.approx(l1_min_C(x * 0.1, y))  # raw scale does matter
    raw_big = SparseProbe(C=1.0, standardize=False).fit(x, y)
    raw_small = SparseProbe(C=1.0, standardize=False).fit(x * np.float32(0.1), y)
    assert len(raw_small.h_neurons) < len(raw_big.h_neurons)  # what standardising fixes


def test_no_negative_weights_on_pure_positive_planted_data(reference):
    data = reference[2e-2]
    x, y = training_matrix(data.train)
    paper = SparseProbe(C=3.0, standardize=False, class_weight=None, intercept_scaling=1.0)
    assert len(paper.fit(x, y).negative_neurons) > 0  # liblinear's penalised intercept
    for C in (0.005, 0.01, 0.015):
        assert len(SparseProbe(C=C).fit(x, y).negative_neurons) == 0


def test_a_choice_at_a_grid_end_never_passes_silently(reference):
    data = reference[2e-2]
    # the automatic grid: no extension, no warning, an interior choice
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        wide = probe_path(data.train, data.validation, n_resamples=50)
    assert 0 < wide.chosen_index < len(wide.points) - 1 and not wide.extensions
    # a grid entirely below the useful range (the auto grid starts at the first C with a
    # non-zero weight): the best C is above its upper end
    cmin = wide.points[0].C
    low_grid = (cmin * 1.05, cmin * 1.2)
    path = probe_path(data.train, data.validation, Cs=low_grid, n_resamples=50)
    assert path.extensions and path.extensions[0] == "up"
    assert path.best_C > max(low_grid) and path.edge is None  # the grid grew past the optimum
    with pytest.warns(UserWarning, match="upper end of the grid"):
        stuck = probe_path(data.train, data.validation, Cs=low_grid, n_resamples=50, extend=False)
    assert stuck.edge == "upper" and stuck.to_dict()["edge"] == "upper"


def test_vectorised_bootstrap_matches_the_loop():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # ties on purpose
    idx = list(bootstrap_indices(100, 30, seed=1, stratify=y))
    cis, boots = _boot_metrics(y, s, _resample_counts(idx, 100))
    np.testing.assert_allclose(boots["auroc"], [auroc(y[i], s[i]) for i in idx])
    np.testing.assert_allclose(boots["log_loss"], [balanced_log_loss(y[i], s[i]) for i in idx])
    np.testing.assert_allclose(boots["accuracy"], [np.mean((s[i] > 0) == y[i]) for i in idx])
    assert cis["auroc"].estimate == pytest.approx(auroc(y, s))


def test_plant_into_a_real_like_split(reference):
    split = reference[2e-2].train
    planted_split, planted = plant_into(split, n_planted=3, effect=2.0, seed=1)
    assert planted.size == 3 and sorted(set(planted)) == list(planted)
    assert planted_split.labels.sum() == len(split) // 2
    ans = planted_split.region("answer")
    pos = planted_split.labels == 1
    assert all(ans[pos, j].mean() > ans[~pos, j].mean() for j in planted)
    assert recovery_scores([1, 2, 3], [2, 3, 4]) == pytest.approx(
        {"n_selected": 3.0, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    )
