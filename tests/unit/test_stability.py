"""Stability selection (Meinshausen & Buhlmann) on the issue-14 reference setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hneuron_lens.probe import NeuronTable, SparseProbe, probe_path
from hneuron_lens.recovery import PlantedConfig, planted_splits
from hneuron_lens.stability import error_bound, stability_selection


@pytest.fixture(scope="module")
def reference():
    data = planted_splits(PlantedConfig(mean=2e-3, seed=0))
    return data, probe_path(data.train, data.validation, n_resamples=100).probe


def test_planted_neurons_are_stable_and_noise_is_not(reference):
    data, probe = reference
    res = stability_selection(data.train, probe, n_subsamples=20, progress=False)
    noise = np.setdiff1d(np.arange(data.train.layout.n_features), data.planted)
    assert (res.frequency[data.planted] >= 0.9).all()
    assert res.frequency[noise].mean() <= 0.1
    assert set(res.stable.tolist()) == set(data.planted.tolist())
    assert res.C == pytest.approx(probe.C / 0.5)  # same penalty per sample as the full fit
    assert res.expected_false() == pytest.approx(res.q**2 / ((2 * 0.6 - 1) * 1500))
    assert "E[false]" in str(res)
    json.dumps(res.to_dict())


def test_frequencies_beside_weights_and_selection_by_frequency(reference, tmp_path):
    data, fitted = reference
    probe = SparseProbe(**fitted.get_params()).fit(data.train)
    res = stability_selection(data.train, probe, n_subsamples=6, progress=False)
    probe.use_stability(res)
    h = probe.h_neurons
    assert h.frequency is not None and h.frequency.shape == (len(h),)
    assert "frequency" in h.to_pandas().columns and "freq" in str(h)
    back = NeuronTable.from_dict(json.loads(json.dumps(h.to_dict())))
    np.testing.assert_array_equal(back.frequency, h.frequency)
    assert back.units == "standardized"
    report = probe.evaluate(data.test, n_random=0, n_resamples=50)
    np.testing.assert_array_equal(report.neuron_stats.frequency, h.frequency)
    assert "freq" in str(report) and "frequency" in report.to_dict()["neuron_stats"]
    probe.save(tmp_path / "p")
    loaded = SparseProbe.load(tmp_path / "p")
    np.testing.assert_array_equal(loaded.h_neurons.frequency, h.frequency)
    assert loaded.stability_["n_subsamples"] == 6
    # the H-Neuron set defined by frequency: every neuron at or above the threshold
    res.threshold = 1.0
    probe.use_stability(res, select=True)
    assert probe.h_neurons.flat_set == {int(i) for i in np.flatnonzero(res.frequency >= 1.0)}
    assert (probe.h_neurons.frequency >= 1.0).all()
    probe.fit(data.train)  # a refit forgets the old frequencies
    assert probe.h_neurons.frequency is None


@pytest.mark.slow  # joblib's worker processes take ~15 s to start on the shared 2-core machine
def test_parallel_equals_serial_and_bad_arguments():
    data = planted_splits(PlantedConfig(d_mlp=40, n_per_class=60, seed=2))
    probe = SparseProbe(C=0.05)
    one = stability_selection(data.train, probe, n_subsamples=4, progress=False, seed=1)
    two = stability_selection(data.train, probe, n_subsamples=4, progress=False, seed=1, n_jobs=2)
    np.testing.assert_array_equal(one.frequency, two.frequency)
    with pytest.raises(ValueError, match="fraction"):
        stability_selection(data.train, probe, fraction=1.0)
    with pytest.raises(ValueError, match="threshold"):
        error_bound(5.0, 100, 0.5)


@pytest.mark.filterwarnings("ignore:probe_path. the chosen C")  # a one-C grid: not the point
def test_torch_refits_read_each_half_in_place(reference, monkeypatch):
    """With solver="torch" each stability refit and each bootstrap refit reads its resample
    through RowSelection (no training matrix) and selects what a fit on that resample's
    matrix selects."""
    import hneuron_lens.probe as probe_module
    from hneuron_lens.probe import training_matrix
    from hneuron_lens.stability import _fit_one

    data, fitted = reference
    params = {**fitted.get_params(), "solver": "torch", "tol": 1e-8}
    rows = np.sort(np.random.default_rng(0).choice(len(data.train), 300, replace=False))
    xm, ym = training_matrix(data.train, "3-vs-1", rows=rows)
    ref = SparseProbe(**params).fit(xm, ym, layout=data.train.layout)

    def no_matrix(*args, **kwargs):
        raise AssertionError("the torch solver must not build a training matrix")

    monkeypatch.setattr(probe_module, "training_matrix", no_matrix)
    selected = _fit_one(data.train, rows, params)
    np.testing.assert_array_equal(selected, np.flatnonzero(ref.coef_ > 0))
    res = stability_selection(data.train, SparseProbe(**params), n_subsamples=2, progress=False)
    assert res.n_selected.shape == (2,) and res.n_selected.min() > 0
    path = probe_path(
        data.train, data.validation, Cs=[fitted.C], solver="torch", tol=1e-6,
        n_resamples=20, n_bootstrap_stability=2, extend=False,
    )  # fmt: skip
    assert path.probe.coef_.any()
