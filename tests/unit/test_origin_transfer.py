"""Probe transfer to a base checkpoint (hneuron_lens.origin.transfer) on tiny models.

The "instruct" model is a tiny random Llama; the "base" is a copy with noise on its MLP weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hneuron_lens.cett import CETTConfig
from hneuron_lens.data.records import JudgedSample
from hneuron_lens.errors import DataError, ModelError, ProbeError
from hneuron_lens.extract import extract
from hneuron_lens.features import NeuronLayout
from hneuron_lens.models import boot_bridge
from hneuron_lens.origin import TransferReport, _layer_matched, transfer
from hneuron_lens.probe import SparseProbe
from hneuron_lens.spans import SpanConfig
from hneuron_lens.store import ActivationStore
from hneuron_lens.testing import tiny_hf_model, tiny_tokenizer

WORDS = ["Paris", "Jupiter", "Shakespeare", "gold", "Au", "1969", "answer", "capital"]


def _samples(n: int = 60) -> list[JudgedSample]:
    out = []
    for i in range(n):
        label = i % 2
        w = WORDS[(i * 3 + label) % len(WORDS)]
        out.append(
            JudgedSample(
                f"q{i:03d}",
                f"Question {i}: what is {WORDS[i % 8]}?",
                f"It is {w}.",
                label,
                answer_text=w,
                split="train" if i < 40 else "test",
            )
        )
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    hf = tiny_hf_model("llama")
    instruct = boot_bridge(
        copy.deepcopy(hf), tiny_tokenizer(), "tiny-instruct", check_decoding=False
    )
    noisy = copy.deepcopy(hf)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            if ".mlp." in name:
                p.add_(0.05 * p.std() * torch.randn(p.shape, generator=gen))
    base = boot_bridge(noisy, tiny_tokenizer(), "tiny-base", check_decoding=False)
    samples = _samples()
    store = ActivationStore(tmp_path_factory.mktemp("store"), dtype="float32")
    extract(instruct, samples, store, CETTConfig(regions=("answer", "other")), progress=False)
    probe = SparseProbe(C=10.0).fit(store.split("train"))
    assert len(probe.h_neurons) > 0
    test = [s for s in samples if s.split == "test"]
    return instruct, base, store, probe, test


def test_transfer_report_with_controls(pair):
    instruct, base, store, probe, test = pair
    report = transfer(
        probe, base, test, instruct=store.split("test"), n_random=5, n_resamples=200, progress=False
    )
    assert report.n == 20 and report.labels.sum() == 10
    assert report.ids == [s.qid for s in test]
    assert report.params["base_span_config"]["chat"] is False  # the paper's base prompt
    assert report.params["instruct_model"] == "tiny-instruct"
    for m in (report.base, report.instruct, report.ceiling):
        assert m is not None and m.auroc.low <= m.auroc.estimate <= m.auroc.high
    assert report.auroc_drop is not None
    np.testing.assert_allclose(
        report.auroc_drop.estimate, report.instruct.auroc.estimate - report.base.auroc.estimate
    )
    r = report.random
    assert r is not None and r.n_sets == 5 and r.base_auroc_values.shape == (5,)
    assert report.random_base_scores.shape == (5, 20)
    assert 1 / 6 <= r.p_value <= 1.0
    assert "5-fold CV" in report.ceiling_method
    # the instruct row is the probe's own score on the stored features
    np.testing.assert_allclose(report.instruct_scores, probe.decision_function(store.split("test")))


def test_same_model_same_prompt_transfers_exactly(pair):
    instruct, _, store, probe, test = pair
    report = transfer(
        probe,
        instruct,
        test,
        instruct=store.split("test"),
        base_span_cfg=SpanConfig(),
        n_random=0,
        n_resamples=50,
        progress=False,
    )
    np.testing.assert_allclose(report.base_scores, report.instruct_scores, rtol=1e-5, atol=1e-5)
    assert report.random is None


def test_instruct_model_and_base_store(pair, tmp_path):
    instruct, base, store, probe, test = pair
    ref = transfer(
        probe, base, test, instruct=store.split("test"), n_random=0, n_resamples=50, progress=False
    )
    bstore = ActivationStore(tmp_path / "base_store", dtype="float32")
    got = transfer(
        probe,
        base,
        test,
        instruct=instruct,
        base_store=bstore,
        n_random=0,
        n_resamples=50,
        progress=False,
    )
    np.testing.assert_allclose(got.base_scores, ref.base_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.instruct_scores, ref.instruct_scores, rtol=1e-5, atol=1e-5)
    assert len(bstore.ids) == len(test)
    again = transfer(
        probe, base, test, base_store=bstore, n_random=0, n_resamples=50, progress=False
    )
    np.testing.assert_array_equal(again.base_scores, got.base_scores)  # read back, not recomputed
    assert again.instruct is None and again.auroc_drop is None


def test_layer_matched_sets_keep_the_layer_profile():
    layout = NeuronLayout((10, 12, 8))
    h = np.array([1, 3, 12, 13, 14, 25])
    rng = np.random.default_rng(0)
    for _ in range(20):
        cols = _layer_matched(rng, layout, h)
        layers = np.searchsorted(layout.offsets, cols, side="right") - 1
        assert np.bincount(layers, minlength=3).tolist() == [2, 3, 1]
        assert not set(cols) & set(h) and len(set(cols)) == 6


def test_layout_mismatch_is_refused_naming_both(pair):
    _, _, _, probe, test = pair
    other = boot_bridge(
        tiny_hf_model("llama-varied"), tiny_tokenizer(), "tiny-varied", check_decoding=False
    )
    with pytest.raises(ModelError) as err:
        transfer(probe, other, test, progress=False)
    msg = str(err.value)
    assert "tiny-instruct" in msg and "tiny-varied" in msg and "d_mlp=[48, 80]" in msg


def test_saved_probe_without_training_data_skips_random_with_a_note(pair, tmp_path):
    _, base, store, probe, test = pair
    probe.save(tmp_path / "probe")
    loaded = SparseProbe.load(tmp_path / "probe")
    report = transfer(loaded, base, test, n_random=3, n_resamples=50, progress=False)
    assert report.random is None and any("train=" in n for n in report.notes)
    with_train = transfer(
        loaded, base, test, train=store.split("train"), n_random=3, n_resamples=50, progress=False
    )
    assert with_train.random is not None and with_train.random.n_sets == 3


def test_ceiling_from_base_training_features(pair):
    from hneuron_lens.extract import compute_features

    _, base, store, probe, test = pair
    train = [s for s in _samples() if s.split == "train"]
    base_train, _ = compute_features(
        base,
        train,
        CETTConfig(regions=("answer", "other")),
        span_cfg=SpanConfig(chat=False),
        progress=False,
    )
    report = transfer(
        probe, base, test, base_train=base_train, n_random=0, n_resamples=50, progress=False
    )
    assert report.ceiling_method == "trained on base features of the training split"
    assert report.ceiling is not None
    # the same ceiling from the training samples themselves (features computed on the base)
    from_samples = transfer(
        probe, base, test, base_train=train, n_random=0, n_resamples=50, progress=False
    )
    np.testing.assert_allclose(
        from_samples.ceiling_scores, report.ceiling_scores, rtol=1e-6, atol=1e-6
    )
    with pytest.raises(DataError, match="also scored"):
        transfer(probe, base, test, base_train=test, n_random=0, progress=False)


def test_refusals(pair):
    _, base, store, probe, test = pair
    with pytest.raises(ProbeError, match="one class"):
        transfer(probe, base, [s for s in test if s.label == 0], n_random=0, progress=False)
    with pytest.raises(ProbeError, match="not fitted"):
        transfer(SparseProbe(), base, test, progress=False)
    with pytest.raises(ProbeError, match="no samples"):
        transfer(probe, base, [], progress=False)


def test_report_save_load_tables_and_figure(pair, tmp_path):
    from hneuron_lens.viz.origin import plot_transfer_roc
    from hneuron_lens.viz.style import save_figure

    _, base, store, probe, test = pair
    report = transfer(
        probe, base, test, instruct=store.split("test"), n_random=3, n_resamples=100, progress=False
    )
    report.save(tmp_path / "transfer.json")
    back = TransferReport.load(tmp_path / "transfer.json")
    np.testing.assert_array_equal(back.base_scores, report.base_scores)
    assert back.random.p_value == report.random.p_value
    assert str(back.base.auroc) == str(report.base.auroc)
    df = report.to_pandas()
    assert {"scorer", "features", "auroc", "auroc_low", "auroc_high"} <= set(df.columns)
    assert len(df) == 7
    text = str(report)
    assert "probe (unchanged)" in text and "random layer-matched x3" in text and "ceiling" in text
    fig = plot_transfer_roc(report)
    assert len(fig.axes[0].lines) == 3 + 3 + 1  # random sets, ceiling/instruct/base, chance
    assert save_figure(fig, tmp_path / "roc.png").stat().st_size > 1000


def test_format_control_separates_prompt_from_weights(pair):
    instruct, base, store, probe, test = pair
    # the base model *is* the instruct model: the transfer equals the format control exactly
    same = transfer(
        probe,
        instruct,
        test,
        instruct=store.split("test"),
        format_control=instruct,
        n_random=0,
        n_resamples=50,
        progress=False,
    )
    np.testing.assert_allclose(same.format_control_scores, same.base_scores, rtol=1e-6, atol=1e-6)
    other = transfer(
        probe, base, test, format_control=instruct, n_random=0, n_resamples=50, progress=False
    )
    assert other.format_control is not None
    np.testing.assert_allclose(other.format_control_scores, same.base_scores, rtol=1e-6, atol=1e-6)
    assert "format control" in str(other)
    assert (
        TransferReport.from_dict(other.to_dict()).format_control.auroc == other.format_control.auroc
    )
