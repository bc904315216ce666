"""Tests for hneuron_lens.collect: the JSONL format, resumption, settings checks, judging."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hneuron_lens.collect import (
    CollectConfig,
    CollectedQuestion,
    collect,
    judge_collected,
    load_collected,
)
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, QAItem

ITEMS = [
    QAItem("q1", "Who wrote Hamlet?", ("William Shakespeare", "Shakespeare"), "test"),
    QAItem("q2", "What is the chemical symbol for gold?", ("Au",), "test"),
    QAItem("q3", "Which planet is largest?", ("Jupiter",), "test"),
    QAItem("q4", "What is the capital of France?", ("Paris",), "test"),
]


def small(**kw) -> CollectConfig:
    base = dict(k=2, max_new_tokens=4, write_every=1, progress=False)
    base.update(kw)
    return CollectConfig(**base)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory):
    """An uninterrupted collection of all ITEMS (the reference for resumed runs)."""
    path = tmp_path_factory.mktemp("collect") / "full.jsonl"
    res = collect(tiny("llama"), ITEMS, small(), path)
    return path, res


def test_config_round_trip_and_validation():
    cfg = CollectConfig(k=3, mode="single", top_k=None, system="Be brief.")
    assert CollectConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_samples == 1 and CollectConfig().n_samples == 10
    assert CollectConfig(mode="greedy").generation_config(chat=True).do_sample is False
    assert CollectConfig().generation_config(chat=False).stop_at_newline is True
    assert CollectConfig().generation_config(chat=True).stop_at_newline is False
    for bad in (
        dict(mode="beam"),
        dict(k=0),
        dict(write_every=0),
        dict(top_p=0.0),
        dict(temperature=-1),
    ):
        with pytest.raises(ValueError):
            CollectConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        CollectConfig.from_dict({"n": 3})


def test_file_format(full_run):
    path, res = full_run
    rows = lines(path)
    assert rows[0]["type"] == "header" and rows[0]["settings_hash"] == res.settings_hash
    assert rows[0]["settings"]["collect"]["k"] == 2
    assert [r["qid"] for r in rows[1:]] == ["q1", "q2", "q3", "q4"]
    for r, item in zip(rows[1:], ITEMS, strict=True):
        assert r["question"] == item.question and r["aliases"] == list(item.aliases)
        assert r["kind"] == "qa" and r["settings_hash"] == res.settings_hash
        assert len(r["responses"]) == len(r["finish_reasons"]) == len(r["n_tokens"]) == 2
        assert set(r["finish_reasons"]) <= {"eos", "length", "newline"}
    assert (res.n_questions, res.n_resumed, res.n_generated) == (4, 0, 4)
    assert res.stats.n == 8
    loaded = load_collected(path)
    assert list(loaded) == ["q1", "q2", "q3", "q4"]
    q = loaded["q2"]
    assert isinstance(q, CollectedQuestion) and q.item == ITEMS[1]
    assert CollectedQuestion.from_dict(q.to_dict()) == q
    json.dumps(res.to_dict())


def test_rerun_is_a_no_op(full_run, tiny, tmp_path):
    path, _ = full_run
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    res = collect(
        tiny("llama"), ITEMS, small(batch_size=3, write_every=2), copy
    )  # batching may change
    assert (res.n_resumed, res.n_generated) == (4, 0)
    assert copy.read_bytes() == path.read_bytes()


def test_resume_after_partial_run_matches_full_run(full_run, tiny, tmp_path):
    path, _ = full_run
    out = tmp_path / "part.jsonl"
    collect(tiny("llama"), ITEMS[:2], small(), out)
    res = collect(tiny("llama"), ITEMS, small(), out)
    assert (res.n_resumed, res.n_generated) == (2, 2)
    assert load_collected(out) == load_collected(path)


def test_resume_after_truncated_last_line(full_run, tiny, tmp_path, caplog):
    path, _ = full_run
    data = path.read_bytes()
    out = tmp_path / "killed.jsonl"
    # keep the header and two questions, then half of the third line (a kill mid-write)
    cut = [i for i, b in enumerate(data) if b == ord("\n")]
    out.write_bytes(data[: cut[2] + 1 + (cut[3] - cut[2]) // 2])
    with caplog.at_level(logging.WARNING, logger="hneuron_lens.collect"):
        assert list(load_collected(out)) == ["q1", "q2"]
        res = collect(tiny("llama"), ITEMS, small(), out)
    assert any("truncated last line" in r.message for r in caplog.records)
    assert (res.n_resumed, res.n_generated) == (2, 2)
    assert [r.get("qid") for r in lines(out)] == [None, "q1", "q2", "q3", "q4"]
    assert load_collected(out) == load_collected(path)


def test_truncated_header_starts_over(full_run, tiny, tmp_path):
    path, _ = full_run
    out = tmp_path / "header.jsonl"
    out.write_bytes(path.read_bytes()[:20])
    res = collect(tiny("llama"), ITEMS[:1], small(), out)
    assert res.n_generated == 1
    assert lines(out)[0]["type"] == "header"


def test_damaged_middle_line_raises(full_run, tmp_path):
    path, _ = full_run
    rows = path.read_text().splitlines()
    rows[2] = rows[2][:10]
    out = tmp_path / "bad.jsonl"
    out.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="line 3 is not valid JSON"):
        load_collected(out)


def test_settings_change_refuses_to_resume(full_run, tiny, tmp_path):
    path, _ = full_run
    out = tmp_path / "other.jsonl"
    out.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"other settings.*temperature: file has 1.0, now 0.7"):
        collect(tiny("llama"), ITEMS, small(temperature=0.7), out)
    with pytest.raises(ValueError, match="other settings"):
        collect(tiny("llama"), ITEMS, small(suffix=None), out)
    with pytest.raises(ValueError, match="weights_sha256"):
        collect(tiny("gpt2"), ITEMS, small(), out)
    assert out.read_bytes() == path.read_bytes()  # nothing was appended


def test_duplicate_qids(tiny, tmp_path):
    with pytest.raises(ValueError, match="duplicate qids"):
        collect(tiny("llama"), [ITEMS[0], ITEMS[0]], small(), tmp_path / "d.jsonl")


def test_greedy_and_single_modes(tiny, tmp_path):
    model = tiny("llama")
    a = load_collected(collect(model, ITEMS[:2], small(mode="greedy"), tmp_path / "g1.jsonl").path)
    b = load_collected(
        collect(model, ITEMS[:2], small(mode="greedy", seed=5), tmp_path / "g2.jsonl").path
    )
    assert all(len(q.responses) == 1 for q in a.values())
    assert [q.responses for q in a.values()] == [q.responses for q in b.values()]
    s = load_collected(collect(model, ITEMS[:2], small(mode="single"), tmp_path / "s.jsonl").path)
    assert all(len(q.responses) == 1 for q in s.values())


def _question(qid, responses, aliases=("Paris",), kind="qa"):
    n = len(responses)
    return CollectedQuestion(
        qid, f"Q {qid}?", tuple(aliases), kind, "t", tuple(responses), ("eos",) * n, (2,) * n, "h"
    )


def test_judge_collected():
    judge = pytest.importorskip("hneuron_lens.judge")
    collected = {
        "t": _question("t", ["Paris", "It is Paris.", "Paris"]),
        "f": _question("f", ["London", "Rome", "London"]),
        "m": _question("m", ["Paris", "London", "Paris"]),
        "r": _question("r", ["I don't know.", "Paris", "Paris"]),
    }
    samples, funnel = judge_collected(collected)
    assert {s.qid: s.label for s in samples} == {"t": FAITHFUL, "f": HALLUCINATED}
    assert {s.qid: s.response for s in samples} == {"t": "Paris", "f": "London"}
    assert (
        funnel.asked,
        funnel.consistent_true,
        funnel.consistent_false,
        funnel.mixed,
        funnel.refused,
    ) == (4, 1, 1, 1, 1)
    # a JudgeConfig or a judge object are accepted too
    samples2, _ = judge_collected(list(collected.values()), judge.JudgeConfig())
    assert [s.qid for s in samples2] == [s.qid for s in samples]
    with pytest.raises(TypeError):
        judge_collected(collected, judge=object())


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from hneuron_lens.collect import CollectConfig, collect
    from hneuron_lens.data.records import QAItem
    from hneuron_lens.testing import tiny_model
    items = [QAItem(f"q{i}", f"Question number {i}?", ("Paris",)) for i in range(200)]
    cfg = CollectConfig(k=2, max_new_tokens=4, write_every=1, progress=False)
    collect(tiny_model("llama"), items, cfg, sys.argv[1])
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resume_after_sigkill(tiny, tmp_path, seed):
    """Kill a real collection process at a seeded point (after 2-9 lines, plus a random
    fraction of the next write), resume it in this process: the file ends identical to an
    uninterrupted collection of the same questions, no question lost or repeated."""
    import numpy as np

    rng = np.random.default_rng(seed)
    after_lines, jitter = int(rng.integers(2, 10)), float(rng.uniform(0, 0.2))
    out = tmp_path / "sigkill.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(out)], env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= after_lines:
                break
            if proc.poll() is not None:
                pytest.fail("the collection subprocess exited before it could be killed")
            time.sleep(0.02)
        else:
            pytest.fail("the collection subprocess wrote nothing in time")
        time.sleep(jitter)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = load_collected(out)
    assert 1 <= len(before) < 200
    items = [QAItem(f"q{i}", f"Question number {i}?", ("Paris",)) for i in range(len(before) + 3)]
    cfg = CollectConfig(k=2, max_new_tokens=4, write_every=1, progress=False)
    res = collect(tiny("llama"), items, cfg, out)
    assert (res.n_resumed, res.n_generated) == (len(before), 3)
    after = load_collected(out)
    assert list(after) == [it.qid for it in items]  # every question once, in order
    assert all(after[q] == before[q] for q in before)
    # the whole file is what an uninterrupted run of the same questions writes
    ref = load_collected(collect(tiny("llama"), items, cfg, tmp_path / "ref.jsonl").path)
    assert {q: r.responses for q, r in after.items()} == {q: r.responses for q, r in ref.items()}


def test_chunks_fill_a_batch(tiny, tmp_path, monkeypatch, full_run):
    """write_every smaller than a batch is raised so batches are full; the file is the same."""
    col = sys.modules["hneuron_lens.collect"]  # the package attribute is the function
    sizes = []
    real = col.generate

    def spy(model, prompts, cfg, **kw):
        sizes.append(len(prompts) * cfg.num_samples)
        return real(model, prompts, cfg, **kw)

    monkeypatch.setattr(col, "generate", spy)
    path = tmp_path / "c.jsonl"
    collect(tiny("llama"), ITEMS, small(batch_size=4), path)  # write_every=1, k=2
    assert sizes == [4, 4]
    ref = [r for r in lines(full_run[0]) if r["type"] == "question"]
    got = [r for r in lines(path) if r["type"] == "question"]
    assert [r["responses"] for r in got] == [r["responses"] for r in ref]


def test_one_length_warning_per_call_not_per_group(tiny, tmp_path, caplog):
    """A tiny random model runs to max_new_tokens on (nearly) every response: collect warns
    once for the whole call, generate does not warn for each group of questions."""
    with caplog.at_level(logging.WARNING):
        res = collect(tiny("llama"), ITEMS, small(), tmp_path / "c.jsonl")  # 4 groups
    assert res.stats.frac_hit_max > 0.2
    warned = [r for r in caplog.records if "hit max_new_tokens" in r.message]
    assert len(warned) == 1 and warned[0].name == "hneuron_lens.collect"
