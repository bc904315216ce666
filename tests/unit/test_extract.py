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

from hneuron_lens.errors import StoreError
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
    ex = importlib.import_module("hneuron_lens.extract")  # the module, not the function
    from hneuron_lens.store import ActivationStore
    from hneuron_lens.testing import tiny_model

    delay = float(os.environ.get("EXTRACT_DELAY", "0"))
    hold = os.environ.get("EXTRACT_HOLD")  # wait for this file before the first batch
    real = ex.cett
    def slow(*a, **k):
        while hold and not os.path.exists(hold):
            time.sleep(0.01)
        time.sleep(delay)
        return real(*a, **k)
    ex.cett = slow
    extract = ex.extract
    model = tiny_model("llama")
    store = ActivationStore(sys.argv[1], chunk_size=5)
    extract(model, make_samples(40), store, batch_size=3, progress=False)
    """
)


def _run(
    script: Path, store: Path, delay: float = 0.0, hold: Path | None = None
) -> subprocess.Popen:
    env = {**os.environ, "EXTRACT_DELAY": str(delay), "HF_HUB_OFFLINE": "1"}
    if hold is not None:
        env["EXTRACT_HOLD"] = str(hold)
    return subprocess.Popen([sys.executable, str(script), str(store)], env=env)


def _read_all(path: Path) -> dict[str, np.ndarray]:
    store = ActivationStore(path, verify=True)
    out = {"ids": np.array(store.ids), "labels": store.labels}
    for region in store.regions:
        out[region] = np.array(store.features(region)[0])
    return out


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory) -> dict[str, np.ndarray]:
    """The store an uninterrupted run of SCRIPT writes (computed once, in a subprocess)."""
    root = tmp_path_factory.mktemp("reference")
    script = root / "run_extract.py"
    script.write_text(SCRIPT)
    assert _run(script, root / "clean").wait() == 0
    return _read_all(root / "clean")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference_store, seed):
    """SIGKILL at a seeded point (after 1-6 chunks, plus a random fraction of a batch), resume:
    the store ends identical to an uninterrupted run's, nothing lost or duplicated."""
    rng = np.random.default_rng(seed)  # 8 chunks of 5 rows in all, one batch of 3 per 0.15 s
    after_chunks, jitter = int(rng.integers(1, 6)), float(rng.uniform(0, 0.3))
    script = tmp_path / "run_extract.py"
    script.write_text(SCRIPT)
    killed = tmp_path / "killed"
    proc = _run(script, killed, delay=0.15)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        chunks = killed / "chunks"
        if chunks.is_dir() and len(list(chunks.glob("*.json"))) >= after_chunks:
            break
        time.sleep(0.01)
    time.sleep(jitter)  # somewhere inside the next batch or chunk write
    assert proc.poll() is None, "extract finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "writing.json").exists()  # the run did not close cleanly
    partial = ActivationStore(killed)  # a reader: reads what is complete, changes nothing
    assert 5 * after_chunks <= len(partial) < 40
    assert _run(script, killed).wait() == 0  # resume: repairs, then extracts the rest
    a = _read_all(killed)
    assert sorted(a) == sorted(reference_store) and len(a["ids"]) == 40
    for key in a:
        np.testing.assert_array_equal(a[key], reference_store[key], err_msg=key)
    assert not (killed / "writing.json").exists()
    quarantined = (
        list((killed / "quarantine").iterdir()) if (killed / "quarantine").is_dir() else []
    )
    assert all(".npy" in p.name or p.name.endswith(".json") for p in quarantined)


@pytest.mark.slow
def test_two_concurrent_extracts_never_duplicate(tmp_path, reference_store):
    """Two extractions into one store: the second is refused while the first writes (exit
    code 2, naming the holder); rerun afterwards it finds everything cached. No duplicates."""
    import json

    script = tmp_path / "run_extract.py"
    script.write_text(SCRIPT)
    store, go = tmp_path / "store", tmp_path / "go"
    first = _run(script, store, hold=go)  # takes the lock, then waits for "go"
    deadline = time.time() + 120
    while time.time() < deadline and not (store / "manifest.json").exists():
        time.sleep(0.01)
    data = tmp_path / "judged.jsonl"  # the same samples through the command line
    keys = ("qid", "question", "response", "label", "answer_text", "split")
    rows = [{k: getattr(s, k) for k in keys} for s in make_samples(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli = "import sys, hneuron_lens.cli as c; from hneuron_lens.testing import tiny_model; "
    cli += "c._load_model = lambda a: tiny_model('llama'); raise SystemExit(c.main(sys.argv[1:]))"
    second = subprocess.run(
        [sys.executable, "-c", cli, "extract", "--data", str(data), "--store", str(store)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    go.write_text("go")
    assert first.wait() == 0
    errors = [x for x in second.stderr.splitlines() if x.startswith("error: ")]
    assert second.returncode == 2 and len(errors) == 1, second.stderr
    assert "another process is writing to this store (pid" in errors[0]
    assert "Traceback" not in second.stderr
    assert _run(script, store).wait() == 0  # afterwards: all cached
    a = _read_all(store)
    assert len(set(a["ids"].tolist())) == len(a["ids"]) == 40
    for key in a:
        np.testing.assert_array_equal(a[key], reference_store[key], err_msg=key)


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


FAULTS = {
    "deleted manifest": lambda root: (root / "manifest.json").unlink(),
    "flipped byte": lambda root: _flip(root / "chunks" / "00001.answer.npy"),
    "truncated chunk": lambda root: (root / "chunks" / "00001.other.npy").write_bytes(
        (root / "chunks" / "00001.other.npy").read_bytes()[:-7]
    ),
    "deleted chunk": lambda root: [p.unlink() for p in (root / "chunks").glob("00002.*")],
    "garbage manifest": lambda root: (root / "manifest.json").write_text("{oops"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_then_rerun_is_identical_or_refused(model, tmp_path, fault):
    """Damage a store, then read it (train's path) and extract into it again (a writer)."""
    samples = make_samples(12)
    ref = ActivationStore(tmp_path / "ref", chunk_size=4)
    extract(model, samples, ref, batch_size=4, progress=False)
    root = tmp_path / "st"
    extract(model, samples, ActivationStore(root, chunk_size=4), batch_size=4, progress=False)
    FAULTS[fault](root)
    reader = ActivationStore(root)
    if fault == "deleted manifest":  # rebuilt in memory from the sidecars: nothing lost
        reader.split("train")
    else:  # refused with the chunk (or file) named and the repair command
        with pytest.raises(StoreError, match="--repair"):
            reader.split("train")
    report = extract(model, samples, ActivationStore(root, chunk_size=4), batch_size=4,
                     progress=False)  # fmt: skip
    assert report.n_cached + report.n_extracted == 12
    got, want = ActivationStore(root, verify=True), ActivationStore(tmp_path / "ref")
    assert got.ids == want.ids and not got.problems
    for region in ("answer", "other"):
        np.testing.assert_array_equal(got.features(region)[0], want.features(region)[0])
    for split in ("train", "test"):
        assert got.split(split).ids == want.split(split).ids


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
