"""extract(): CETT features into an ActivationStore on a tiny model; cache, mismatch, resume."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hneuron_lens.extract import extract
from hneuron_lens.store import ActivationStore, StoreMismatchError

cett_mod = pytest.importorskip("hneuron_lens.cett", reason="hneuron_lens.cett not available")
spans_mod = pytest.importorskip("hneuron_lens.spans", reason="hneuron_lens.spans not available")

SAMPLES_CODE = textwrap.dedent(
    """
    from hneuron_lens.data.records import JudgedSample

    def make_samples(n):
        answers = ["Paris", "William Shakespeare", "Au", "Jupiter", "1969", "42"]
        fillers = ["", "I think ", "The answer is ", "Well, the capital of France is not it. "]
        out = []
        for i in range(n):
            ans = answers[i % len(answers)]
            pre = fillers[(i // 2) % len(fillers)] * (1 + i % 3)
            out.append(
                JudgedSample(
                    qid=f"q{i:03d}",
                    question=f"Question {i}: which answer is it?" + " Who wrote Hamlet?" * (i % 4),
                    response=f"{pre}{ans}.",
                    label=i % 2,
                    answer_text=ans,
                    split="train" if i % 4 else "test",
                )
            )
        return out
    """
)
_ns: dict = {}
exec(SAMPLES_CODE, _ns)
make_samples = _ns["make_samples"]


@pytest.fixture
def model(tiny):
    return tiny("llama")


def _direct(model, samples, cfg):
    """Reference: cett on each sample alone, flattened."""
    toks, _ = spans_mod.tokenize_samples(model.tokenizer, samples, spans_mod.SpanConfig())
    layout_d = [b.mlp.W_out.shape[0] for b in model.blocks]
    out = {}
    for t in toks:
        batch = cett_mod.collate([t], 0, cfg.regions)
        feats = cett_mod.cett(model, batch, cfg)
        out[t.sample_id] = {
            r: torch.cat([feats[r][0, layer, :d] for layer, d in enumerate(layout_d)]).numpy()
            for r in cfg.regions
        }
    return out


def test_extract_values_and_report(model, tmp_path):
    samples = make_samples(10)
    cfg = cett_mod.CETTConfig(regions=("answer", "other"))
    store = ActivationStore(tmp_path / "st", dtype="float32", chunk_size=4)
    report = extract(model, samples, store, cfg, batch_size=3, progress=False)
    assert (report.n_requested, report.n_cached, report.n_extracted, report.n_skipped) == (
        10,
        0,
        10,
        0,
    )
    assert report.samples_per_s > 0 and "10 extracted" in str(report)
    assert report.span_methods == {"answer_text": 10}
    assert len(store) == 10 and store.regions == ("answer", "other")
    ref = _direct(model, samples, cfg)
    for region in ("answer", "other"):
        X, y, ids = store.features(region)
        for row, sid in zip(X, ids, strict=True):
            np.testing.assert_allclose(row, ref[sid][region], rtol=1e-4, atol=1e-6)
    assert store.split("test").ids == ["q000", "q004", "q008"]
    fp = store.fingerprint
    assert fp["model"]["name"] == "tiny-llama" and fp["cett_config"]["regions"] == [
        "answer",
        "other",
    ]
    assert fp["tokenizer"]["vocab_size"] == len(model.tokenizer)
    assert fp["chat_template"] == spans_mod.chat_template_fingerprint(model.tokenizer)


def test_cache_hit_computes_nothing(model, tmp_path, monkeypatch):
    samples = make_samples(6)
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    extract(model, samples, store, batch_size=4, progress=False)

    def boom(*a, **k):
        raise AssertionError("cett called on a cache hit")

    monkeypatch.setattr(cett_mod, "cett", boom)
    report = extract(model, samples, ActivationStore(tmp_path / "st"), progress=False)
    assert (report.n_cached, report.n_extracted) == (6, 0)
    # new split assignments for cached samples are recorded without computing
    report = extract(
        model, samples, ActivationStore(tmp_path / "st"), splits={"q000": "dev"}, progress=False
    )
    assert ActivationStore(tmp_path / "st").split("dev").ids == ["q000"]


def test_changed_config_raises_naming_field(model, tmp_path):
    samples = make_samples(4)
    store = ActivationStore(tmp_path / "st")
    extract(model, samples, store, progress=False)
    with pytest.raises(StoreMismatchError, match=r"cett_config\.reduce: 'mean' != 'max'"):
        extract(model, samples, store, cett_mod.CETTConfig(reduce="max"), progress=False)
    with pytest.raises(StoreMismatchError, match=r"span_config\.fallback: 'none' != 'response'"):
        extract(
            model,
            samples,
            store,
            span_cfg=spans_mod.SpanConfig(fallback="response"),
            progress=False,
        )
    report = extract(
        model, samples, store, cett_mod.CETTConfig(reduce="max"), overwrite=True, progress=False
    )
    assert report.n_extracted == 4 and store.fingerprint["cett_config"]["reduce"] == "max"


def test_changed_sample_content_raises(model, tmp_path):
    samples = make_samples(4)
    store = ActivationStore(tmp_path / "st")
    extract(model, samples, store, progress=False)
    s = samples[1]
    samples[1] = type(s)(
        s.qid, s.question, s.response + " Yes.", s.label, answer_text=s.answer_text
    )
    with pytest.raises(StoreMismatchError, match="q001"):
        extract(model, samples, store, progress=False)


def test_corrupted_chunk_is_reextracted(model, tmp_path, caplog):
    samples = make_samples(10)
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    extract(model, samples, store, batch_size=4, progress=False)
    before, _, ids = store.features("answer")
    before = np.array(before)
    data = tmp_path / "st" / "chunks" / "00001.other.npy"
    data.write_bytes(data.read_bytes()[:-2])
    with caplog.at_level(logging.WARNING):
        again = ActivationStore(tmp_path / "st")
    assert "00001.json" in caplog.text
    assert len(again) == 6
    report = extract(model, samples, again, batch_size=4, progress=False)
    assert (report.n_cached, report.n_extracted) == (6, 4)
    after, _, ids2 = ActivationStore(tmp_path / "st", verify=True).features("answer")
    assert ids2 == ids
    np.testing.assert_array_equal(after, before)


def test_skipped_samples_are_reported(model, tmp_path):
    samples = make_samples(4)
    s = samples[2]
    samples[2] = type(s)(s.qid, s.question, s.response, s.label, answer_text="Zanzibar")
    report = extract(model, samples, ActivationStore(tmp_path / "st"), progress=False)
    assert report.n_skipped == 1 and report.skipped[0][0] == "q002"
    assert "skipped 1" in str(report)
    assert "q002" not in ActivationStore(tmp_path / "st")


def test_varied_d_mlp(tiny, tmp_path):
    model = tiny("llama-varied")
    store = ActivationStore(tmp_path / "st", chunk_size=2)
    extract(model, make_samples(3), store, progress=False)
    assert store.layout.d_mlp == (48, 80)
    X, _, _ = store.features("answer", layers=[1])
    assert X.shape == (3, 80) and np.isfinite(X).all()


# ------------------------------------------------------------------ kill -9 and resume

SCRIPT = SAMPLES_CODE + textwrap.dedent(
    """
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    import importlib
    cm = importlib.import_module("hneuron_lens.cett")  # the package re-exports a function "cett"
    from hneuron_lens.extract import extract
    from hneuron_lens.store import ActivationStore
    from hneuron_lens.testing import tiny_model

    delay = float(os.environ.get("EXTRACT_DELAY", "0"))
    real = cm.cett
    def slow(*a, **k):
        time.sleep(delay)
        return real(*a, **k)
    cm.cett = slow
    model = tiny_model("llama")
    store = ActivationStore(sys.argv[1], chunk_size=5)
    extract(model, make_samples(40), store, batch_size=3, progress=False)
    """
)


def _run(script: Path, store: Path, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "EXTRACT_DELAY": str(delay), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(script), str(store)], env=env)


def _read_all(path: Path) -> dict[str, np.ndarray]:
    store = ActivationStore(path, verify=True)
    out = {"ids": np.array(store.ids), "labels": store.labels}
    for region in store.regions:
        out[region] = np.array(store.features(region)[0])
    return out


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / "run_extract.py"
    script.write_text(SCRIPT)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _run(script, killed, delay=0.15)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((killed / "chunks").glob("*.json")) if (killed / "chunks").is_dir() else []:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "extract finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "writing.json").exists()  # the run did not close cleanly
    partial = ActivationStore(killed)  # repairs: full check of that run's chunks
    assert 0 < len(partial) < 40
    resume, reference = _run(script, killed), _run(script, clean)  # side by side
    assert resume.wait() == 0 and reference.wait() == 0
    a, b = _read_all(killed), _read_all(clean)
    assert sorted(a) == sorted(b)
    assert len(a["ids"]) == 40
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not (killed / "writing.json").exists()


def test_compute_features_matches_the_store_and_reports_skips(model, tmp_path):
    from hneuron_lens.extract import compute_features

    samples = make_samples(9)
    s = samples[4]
    samples[4] = type(s)(s.qid, s.question, s.response, s.label, answer_text="Zanzibar")
    cfg = cett_mod.CETTConfig(regions=("answer", "other"))
    split, report = compute_features(model, samples, cfg, batch_size=4, progress=False)
    assert split.ids == [x.qid for x in samples if x.qid != "q004"]
    assert report.n_skipped == 1 and report.skipped[0][0] == "q004"
    assert (
        report.n_extracted == 8
        and split.labels.tolist() == [x.label for x in samples][:4] + [x.label for x in samples][5:]
    )
    store = ActivationStore(tmp_path / "st", dtype="float32")
    extract(model, samples, store, cfg, batch_size=4, progress=False)
    for region in ("answer", "other"):
        X, _, ids = store.features(region)
        by_id = dict(zip(ids, X, strict=True))
        for sid, row in zip(split.ids, split.features[region], strict=True):
            np.testing.assert_allclose(row, by_id[sid], rtol=1e-6, atol=1e-7)


def test_probe_score_on_model_and_samples(model, tiny, tmp_path, caplog):
    from hneuron_lens.probe import SparseProbe

    samples = make_samples(24)
    cfg = cett_mod.CETTConfig(regions=("answer", "other"), reduce="max")
    store = ActivationStore(tmp_path / "st", dtype="float32")
    extract(model, samples, store, cfg, batch_size=8, progress=False)
    train = store.split("train")
    probe = SparseProbe(C=10.0, penalty="l2").fit(train)
    # the training features' config travels with the probe (also through save/load)
    assert probe.metadata_["features"]["cett_config"]["reduce"] == "max"
    refit = SparseProbe(C=10.0, penalty="l2").fit(train)
    refit.fit(np.asarray(train.features["answer"]), train.labels, layout=train.layout)
    assert "features" not in refit.metadata_  # arrays carry no provenance: none is kept
    probe = SparseProbe.load(probe.save(tmp_path / "probe"))
    new = list(samples)
    s = new[1]
    new[1] = type(s)(s.qid, s.question, s.response, s.label, answer_text="Zanzibar")
    with caplog.at_level(logging.WARNING, logger="hneuron_lens"):
        p = probe.score_on(model, new, batch_size=5, progress=False)
    assert p.shape == (24,) and np.isnan(p[1]) and np.isfinite(np.delete(p, 1)).all()
    assert "1 of 24 samples have no located answer span" in caplog.text
    # same numbers as scoring the stored features (computed with reduce="max")
    want = probe.score_on(train)
    rows = [k for k, sid in enumerate(train.ids) if sid != "q001"]  # q001 has no span now
    got = p[[int(train.ids[k][1:]) for k in rows]]
    np.testing.assert_allclose(got, want[rows], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layout mismatch"):
        probe.score_on(tiny("gpt2"), new, progress=False)
    with pytest.raises(ValueError, match="samples are required"):
        probe.score_on(model)
