"""Tests for hneuron_lens.probe on synthetic CETT matrices with planted H-Neurons."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.probe import (
    NeuronTable,
    ProbePath,
    ProbeReport,
    SparseProbe,
    probe_path,
    training_matrix,
    training_parts,
)

N_LAYERS, D_MLP = 2, 64
LAYOUT = NeuronLayout.uniform(N_LAYERS, D_MLP)
# (layer, neuron) pairs whose CETT is higher in hallucinated answer vectors
PLANTED = [(0, 3), (0, 17), (0, 40), (1, 5), (1, 60)]
PLANTED_FLAT = {LAYOUT.flat_index(layer, n) for layer, n in PLANTED}


def make_split(
    n: int = 400, seed: int = 0, dtype: type = np.float32, shift: float = 1.5
) -> FeatureSplit:
    """CETT-like data: non-negative, right-skewed; planted neurons shifted in hallucinated answers."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    answer = rng.gamma(2.0, 0.5, size=(n, LAYOUT.n_features))
    other = rng.gamma(2.0, 0.5, size=(n, LAYOUT.n_features))
    cols = sorted(PLANTED_FLAT)
    answer[np.ix_(labels == 1, cols)] += shift
    return FeatureSplit.from_arrays(
        {"answer": answer.astype(dtype), "other": other.astype(dtype)},
        labels,
        ids=[f"s{seed}-{i}" for i in range(n)],
        layout=LAYOUT,
    )


@pytest.fixture(scope="module")
def train() -> FeatureSplit:
    return make_split(400, seed=0)


@pytest.fixture(scope="module")
def test_split() -> FeatureSplit:
    return make_split(300, seed=1)


@pytest.fixture(scope="module")
def fitted(train: FeatureSplit) -> SparseProbe:
    return SparseProbe(C=0.05).fit(train)


def test_training_matrix_3_vs_1_counts_exact():
    split = make_split(40, seed=3)
    n_pos = int(split.labels.sum())
    x, y = training_matrix(split, "3-vs-1")
    assert x.dtype == np.float32 and x.shape == (80, LAYOUT.n_features)
    assert int(y.sum()) == n_pos  # positives: hallucinated answers only
    assert int((y == 0).sum()) == (40 - n_pos) + 40  # faithful answers + every "other"
    np.testing.assert_array_equal(x[:40], split.features["answer"])
    np.testing.assert_array_equal(x[40:], split.features["other"])
    np.testing.assert_array_equal(y[:40], split.labels)
    x1, y1 = training_matrix(split, "1-vs-1")
    assert x1.shape == (40, LAYOUT.n_features) and int(y1.sum()) == n_pos
    assert not np.shares_memory(x1, split.features["answer"])


def test_training_matrix_float16_memmap_like(tmp_path):
    split = make_split(30, seed=4, dtype=np.float16)
    mm = np.lib.format.open_memmap(
        tmp_path / "a.npy", mode="w+", dtype=np.float16, shape=(30, LAYOUT.n_features)
    )
    mm[:] = split.features["answer"]
    split.features["answer"] = np.load(tmp_path / "a.npy", mmap_mode="r")
    x, _ = training_matrix(split, "3-vs-1")
    assert x.dtype == np.float32 and x.shape == (60, LAYOUT.n_features)


def test_recovers_planted_neurons(fitted: SparseProbe, test_split: FeatureSplit):
    h = fitted.h_neurons
    top = {(layer, n) for layer, n in h.top(len(PLANTED))}
    assert set(PLANTED) <= top
    assert np.all(np.diff(h.weight) <= 0) and np.all(h.weight > 0)
    assert fitted.coef_.shape == (LAYOUT.n_features,)
    assert fitted.score(test_split) > 0.9
    assert h.per_layer_counts().sum() == len(h)
    assert h.per_mille == pytest.approx(1000 * len(h) / 128)
    assert list(h.to_pandas().columns) == ["layer", "neuron", "weight", "flat_index"]
    assert np.all(fitted.negative_neurons.weight < 0)


def test_evaluate_report_and_random_baseline(
    fitted: SparseProbe, test_split: FeatureSplit, tmp_path
):
    val = make_split(200, seed=2)
    rep = fitted.evaluate(test_split, n_resamples=200, n_random=10, seed=0, val_split=val)
    assert isinstance(rep, ProbeReport)
    auc = rep.metrics["auroc"]
    assert auc.estimate > 0.9 and auc.low <= auc.estimate <= auc.high
    assert set(rep.metrics) == {"accuracy", "precision", "recall", "f1", "auroc", "auprc"}
    assert rep.threshold is not None and 0 < rep.threshold < 1
    assert rep.threshold_metrics is not None and "f1" in rep.threshold_metrics
    kinds = {b.kind: b for b in rep.baselines}
    assert set(kinds) == {"unconstrained", "layer-matched"}
    for b in kinds.values():
        # random neurons carry no signal here (planted ones are excluded from the pool)
        assert abs(b.auroc.estimate - 0.5) < 0.1
        assert b.gap_auroc > 0.3
        assert b.auroc_values.shape == (10,)
    assert rep.h_refit["auroc"] > 0.9
    ns = rep.neuron_stats
    assert ns is not None and len(ns) == len(fitted.h_neurons)
    planted_rows = [
        i for i in range(len(ns)) if (int(ns.layer[i]), int(ns.neuron[i])) in set(PLANTED)
    ]
    assert np.all(ns.auroc[planted_rows] > 0.8) and np.all(ns.cohens_d[planted_rows] > 1.0)
    text = str(rep)
    assert "auroc" in text and "layer-matched" in text
    rep.save(tmp_path / "report.json")
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["metrics"]["auroc"]["estimate"] == pytest.approx(auc.estimate)
    assert len(rep.to_pandas()) >= 12
    assert fitted.metrics_ is not None


def test_layer_matched_baseline_keeps_layer_counts(fitted: SparseProbe):
    counts = fitted.h_neurons.per_layer_counts()
    assert counts.shape == (N_LAYERS,) and counts.sum() == len(fitted.h_neurons)


def test_save_load_roundtrip_no_pickle(fitted: SparseProbe, test_split: FeatureSplit, tmp_path):
    fitted.metadata_["model"] = {"name": "tiny-test", "revision": "abc"}
    out = fitted.save(tmp_path / "probe")
    files = sorted(p.name for p in out.iterdir())
    assert files == [".hneuron_lens.json", "neurons.json", "probe.json", "weights.safetensors"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # temp dirs cleaned
    for p in out.iterdir():
        raw = p.read_bytes()
        assert (
            b"\x80\x04\x95" not in raw and b"\x80\x05\x95" not in raw
        )  # no pickle protocol header
    meta = json.loads((out / "probe.json").read_text())
    assert meta["format_version"] == 1 and meta["params"]["C"] == 0.05
    assert meta["metadata"]["model"]["name"] == "tiny-test"
    assert meta["layout"] == {"d_mlp": [D_MLP] * N_LAYERS}
    loaded = SparseProbe.load(out)
    np.testing.assert_array_equal(
        loaded.predict_proba(test_split), fitted.predict_proba(test_split)
    )
    np.testing.assert_array_equal(loaded.h_neurons.flat_index, fitted.h_neurons.flat_index)
    assert loaded.get_params() == fitted.get_params()
    fitted.save(out, overwrite=True)  # replacing a saved probe needs overwrite=True
    assert SparseProbe.load(out).train_fingerprint_ == fitted.train_fingerprint_


def test_save_load_standardized(train: FeatureSplit, test_split: FeatureSplit, tmp_path):
    probe = SparseProbe(C=0.05, standardize=True).fit(train)
    assert probe.mean_ is not None and probe.scale_ is not None
    assert set(PLANTED) <= set(probe.h_neurons.top(len(PLANTED)))
    loaded = SparseProbe.load(probe.save(tmp_path / "p"))
    np.testing.assert_allclose(
        loaded.decision_function(test_split), probe.decision_function(test_split)
    )
    # the training split was not modified by in-place standardisation
    assert train.features["answer"].min() >= 0


def test_neuron_table_save_load_iter(fitted: SparseProbe, tmp_path):
    h = fitted.h_neurons
    h.save(tmp_path / "n.json")
    h2 = NeuronTable.load(tmp_path / "n.json")
    assert list(h2) == list(h) and all(isinstance(v, int) for pair in h2 for v in pair)
    np.testing.assert_array_equal(h2.weight, h.weight)
    t = NeuronTable.from_pairs([(1, 5), (0, 3)], LAYOUT)
    assert t.flat_index.tolist() == [69, 3] and len(t) == 2
    assert "NeuronTable" in str(h)


def test_check_compatible_names_both_shapes(fitted: SparseProbe):
    other = NeuronLayout.uniform(3, 32)
    with pytest.raises(ValueError, match=r"2 layers x d_mlp=64.*3 layers x d_mlp=32"):
        fitted.check_compatible(other)
    fitted.check_compatible(LAYOUT)
    bad = FeatureSplit.from_arrays(
        {"answer": np.zeros((4, 96), np.float32)}, np.array([0, 1, 0, 1]), layout=other
    )
    with pytest.raises(ValueError, match="layout mismatch"):
        fitted.score_on(bad)


def test_no_warnings_on_converging_data(train: FeatureSplit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for solver in ("liblinear", "saga"):
            for penalty in ("l1", "l2"):
                p = SparseProbe(
                    C=0.05, penalty=penalty, solver=solver, standardize=(solver == "saga")
                ).fit(train)
                assert p.converged_


def test_sklearn_contract(train: FeatureSplit, test_split: FeatureSplit):
    probe = SparseProbe(C=0.3, penalty="l2", mode="1-vs-1")
    assert probe.get_params()["mode"] == "1-vs-1"
    c = clone(probe)
    assert c.get_params() == probe.get_params() and not hasattr(c, "coef_")
    c.set_params(C=0.05, penalty="l1")
    assert c.C == 0.05
    assert c.fit(train) is c
    assert c.n_train_rows_ == len(train)  # 1-vs-1: answer vectors only
    assert isinstance(c.n_iter_, int) and isinstance(c.intercept_, float)
    proba = c.predict_proba(test_split)
    assert proba.shape == (len(test_split), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(c.predict(test_split), (proba[:, 1] > 0.5).astype(int))
    # array interface gives the same fit as the split interface in 1-vs-1
    d = clone(c).fit(train.features["answer"], train.labels, layout=LAYOUT)
    np.testing.assert_allclose(d.coef_, c.coef_)
    assert d.score(test_split.features["answer"], test_split.labels) == pytest.approx(
        c.score(test_split)
    )
    with pytest.raises(ValueError):
        SparseProbe(penalty="l3").fit(train)
    with pytest.raises(ValueError):
        SparseProbe(C=-1).fit(train)
    with pytest.raises(RuntimeError):
        SparseProbe().predict(test_split)


def test_probe_path_held_out_and_stability(train: FeatureSplit):
    val = make_split(200, seed=2)
    path = probe_path(
        train,
        val,
        Cs=(0.003, 0.02, 0.1),
        rule="held-out",
        n_bootstrap_stability=3,
        n_resamples=100,
    )
    assert isinstance(path, ProbePath)
    assert [p.C for p in path.points] == [0.003, 0.02, 0.1]
    nz = [p.n_nonzero for p in path.points]
    assert nz == sorted(nz)  # sparser at small C
    accs = [p.accuracy.estimate if p.n_positive else -1 for p in path.points]
    assert path.chosen.accuracy.estimate == max(accs)
    assert path.points[0].jaccard_prev is None and path.points[1].jaccard_prev is not None
    assert path.stability is not None and 0 <= path.stability.estimate <= 1
    assert path.selection_frequency is not None and path.selection_frequency.shape == (
        len(path.probe.h_neurons),
    )
    assert set(PLANTED) <= set(path.probe.h_neurons.top(len(PLANTED)))
    assert "chosen C" in str(path) and len(path.to_pandas()) == 3
    json.dumps(path.to_dict())


def test_probe_path_suppression_rule(train: FeatureSplit):
    val = make_split(200, seed=2)
    with pytest.raises(NotImplementedError, match="suppression_fn"):
        probe_path(train, val, Cs=(0.05,), rule="held-out+suppression")
    # a suppression function that rewards only tiny neuron sets overrides held-out accuracy
    # the paper's raw fit (unstandardised, unweighted, penalised intercept) on a fixed grid:
    # the choice sits at the grid's lower end, which must warn when the grid may not grow
    with pytest.warns(UserWarning, match="lower end of the grid"):
        path = probe_path(
            train,
            val,
            Cs=(0.01, 0.1),
            rule="held-out+suppression",
            suppression_fn=lambda t: 1.0 if len(t) <= 2 else 0.0,
            n_resamples=50,
            standardize=False,
            class_weight=None,
            intercept_scaling=1.0,
            extend=False,
        )
    assert path.edge == "lower" and "WARNING" in str(path)
    assert len(path.points[0].neurons) <= 2 < len(path.points[1].neurons)
    assert path.points[1].accuracy.estimate > path.points[0].accuracy.estimate
    assert path.best_C == 0.01
    assert all(p.suppression_accuracy is not None for p in path.points)


def test_probe_path_saga_warm_start(train: FeatureSplit):
    val = make_split(200, seed=2)
    path = probe_path(train, val, Cs=(0.02, 0.1), solver="saga", standardize=True, n_resamples=50)
    assert all(p.converged for p in path.points)
    # each point has its own coefficient array (warm start must not alias them)
    assert not np.shares_memory(path.probes[0].coef_, path.probes[1].coef_)
    assert path.probe.mean_ is not None


def test_intercept_scaling_removes_spurious_negative_weights(train: FeatureSplit):
    raw = {"standardize": False, "class_weight": None}
    default = SparseProbe(C=0.1, intercept_scaling=1.0, **raw).fit(train)  # the paper's fit
    scaled = SparseProbe(C=0.1, intercept_scaling=100.0, **raw).fit(train)
    assert len(default.negative_neurons) > 20  # liblinear's penalised intercept at work
    assert len(scaled.negative_neurons) < 5
    assert set(scaled.h_neurons) == set(default.h_neurons) == set(PLANTED)


def test_evaluate_on_a_tiny_test_set_gives_nan_effect_sizes():
    """One sample per class: Cohen's d is undefined and reported as NaN, not an error."""
    import numpy as np

    from hneuron_lens.features import FeatureSplit
    from hneuron_lens.probe import SparseProbe

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    x = rng.gamma(2.0, 0.01, size=(40, 16)).astype(np.float32)
    x[y == 1, 2] += 0.1
    train = FeatureSplit.from_arrays({"answer": x, "other": x[::-1].copy()}, y)
    probe = SparseProbe(C=10.0).fit(train)
    test = FeatureSplit.from_arrays({"answer": x[:2], "other": x[:2]}, y[:2])
    report = probe.evaluate(test, n_random=0, n_resamples=20)
    assert len(report.neuron_stats) > 0 and np.isnan(report.neuron_stats.cohens_d).all()


def test_perfect_separation_gets_wilson_intervals_not_a_zero_width_ci(fitted: SparseProbe):
    """20 perfectly separated samples: the bootstrap says [1, 1]; the report must not."""
    from hneuron_lens.stats import wilson_ci

    pool = make_split(80, seed=5, shift=3.0)
    right = np.flatnonzero(fitted.predict(pool) == pool.labels)
    keep = np.sort(np.r_[right[pool.labels[right] == 1][:10], right[pool.labels[right] == 0][:10]])
    small = FeatureSplit.from_arrays(
        {r: np.asarray(pool.features[r])[keep] for r in ("answer", "other")},
        pool.labels[keep],
        layout=LAYOUT,
    )
    assert fitted.score(small) == 1.0
    rep = fitted.evaluate(small, n_resamples=200, n_random=0)
    acc = rep.metrics["accuracy"]
    assert acc.estimate == 1.0 and acc.method == "wilson (bootstrap degenerate)"
    assert (acc.low, acc.high) == pytest.approx((wilson_ci(20, 20).low, 1.0))
    assert rep.metrics["recall"].low == pytest.approx(wilson_ci(10, 10).low)
    auc = rep.metrics["auroc"]
    assert auc.estimate == 1.0 and "degenerate" in auc.method
    assert "Wilson interval instead" in str(rep) and "*" in str(rep)
    # a set with mistakes keeps the bootstrap
    assert (
        "bootstrap"
        in fitted.evaluate(make_split(60, seed=6, shift=0.3), n_random=0, n_resamples=100)
        .metrics["accuracy"]
        .method
    )


@pytest.mark.filterwarnings("ignore:probe_path. the chosen C")  # a grid end: not the point here
def test_probe_path_warm_starts_the_torch_solver(train: FeatureSplit, monkeypatch):
    """probe_path(solver="torch") starts each C from the previous C's solution and norm bound:
    the same supports and weights as cold fits, with fewer passes over X."""
    import hneuron_lens.solvers as solvers

    calls: list[tuple[bool, int]] = []
    real = solvers.fit_l1_logistic

    def spy(*args, **kwargs):
        fit = real(*args, **kwargs)
        calls.append((kwargs.get("coef_init") is not None, fit.n_passes))
        return fit

    monkeypatch.setattr(solvers, "fit_l1_logistic", spy)
    val = make_split(200, seed=2)
    Cs = (0.01, 0.02, 0.05)
    path = probe_path(train, val, Cs=Cs, solver="torch", tol=1e-7, n_resamples=50, extend=False)
    warm = list(calls)
    assert [w for w, _ in warm] == [False, True, True]
    calls.clear()
    for C, probe in zip(Cs, path.probes, strict=True):
        cold = SparseProbe(C=C, solver="torch", tol=1e-7).fit(train)
        assert np.array_equal(probe.coef_ != 0, cold.coef_ != 0), C
        np.testing.assert_allclose(probe.coef_, cold.coef_, atol=1e-4)
    assert sum(n for _, n in warm[1:]) < sum(n for _, n in calls[1:])


@pytest.mark.parametrize(("mode", "standardize"), [("3-vs-1", True), ("1-vs-1", False)])
def test_torch_probe_streams_the_split(train: FeatureSplit, mode, standardize, monkeypatch):
    """SparseProbe(solver="torch").fit(split) reads the split's arrays as they are (no training
    matrix is built; standardisation on the fly) and fits what it fits on that matrix."""
    xm, ym = training_matrix(train, mode)
    params = {"C": 0.05, "solver": "torch", "tol": 1e-9, "mode": mode, "standardize": standardize}
    ref = SparseProbe(**params).fit(xm, ym, layout=train.layout)
    parts, y = training_parts(train, mode)
    assert all(
        np.shares_memory(p, train.region(r))
        for p, r in zip(parts, ("answer", "other")[: len(parts)], strict=True)
    )
    np.testing.assert_array_equal(y, ym)
    import hneuron_lens.probe as probe_module

    def no_matrix(*args, **kwargs):
        raise AssertionError("the torch solver must not build the training matrix")

    monkeypatch.setattr(probe_module, "training_matrix", no_matrix)
    got = SparseProbe(**params).fit(train)
    assert got.converged_ and ref.converged_
    assert np.array_equal(got.coef_ != 0, ref.coef_ != 0) and got.coef_.any()
    np.testing.assert_allclose(got.coef_, ref.coef_, atol=1e-5)
    assert abs(got.intercept_ - ref.intercept_) < 1e-5
    if standardize:
        np.testing.assert_allclose(got.mean_, ref.mean_, rtol=1e-6)
        np.testing.assert_allclose(got.scale_, ref.scale_, rtol=1e-6)
    np.testing.assert_allclose(
        got.decision_function(train), ref.decision_function(train), atol=1e-4
    )


@pytest.mark.filterwarnings("ignore:probe_path. the chosen C")
def test_torch_probe_path_on_a_compacted_store_reads_its_memory_maps(tmp_path, monkeypatch):
    """A compacted store's split is memory maps; probe_path(solver="torch") and
    SparseProbe(solver="torch") fit from them without a training matrix, and find what the
    in-memory arrays give."""
    from hneuron_lens.store import ActivationStore
    from tests.unit.test_store import FP, LAYOUT, REGIONS

    rng = np.random.default_rng(0)
    store = ActivationStore(tmp_path / "st", chunk_size=8)
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    for start in range(0, 60, 6):  # ten chunks; column 3 is higher in hallucinated answers
        ids = [f"s{i:03d}" for i in range(start, start + 6)]
        labels = [i % 2 for i in range(start, start + 6)]
        rows = {r: rng.lognormal(-1, 0.5, (6, LAYOUT.n_features)) for r in REGIONS}
        rows["answer"][:, 3] += np.asarray(labels, dtype=float)
        store.write_batch(ids, labels, ["train"] * 6, rows)
    store.close()
    store.compact()
    split = ActivationStore(tmp_path / "st").split("train")
    parts, _ = training_parts(split)
    assert all(
        isinstance(getattr(p, "base", p), np.memmap) or isinstance(p, np.memmap) for p in parts
    )
    in_memory = FeatureSplit.from_arrays(
        {r: np.array(split.region(r)) for r in ("answer", "other")},
        split.labels,
        ids=split.ids,
        layout=split.layout,
    )
    ref_path = probe_path(in_memory, in_memory, Cs=(0.5, 2.0), solver="torch", tol=1e-9,
                          n_resamples=20, extend=False)  # fmt: skip
    import hneuron_lens.probe as probe_module

    def no_matrix(*args, **kwargs):
        raise AssertionError("the torch solver must not build the training matrix")

    monkeypatch.setattr(probe_module, "training_matrix", no_matrix)
    path = probe_path(split, in_memory, Cs=(0.5, 2.0), solver="torch", tol=1e-9,
                      n_resamples=20, extend=False)  # fmt: skip
    for got, ref in zip(path.probes, ref_path.probes, strict=True):
        assert np.array_equal(got.coef_ != 0, ref.coef_ != 0)
        np.testing.assert_allclose(got.coef_, ref.coef_, atol=1e-6)
    assert path.probes[-1].coef_.any()
    one = SparseProbe(C=2.0, solver="torch", tol=1e-9).fit(split)
    np.testing.assert_allclose(one.coef_, path.probes[-1].coef_, atol=1e-6)
