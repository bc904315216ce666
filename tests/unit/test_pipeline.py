"""Pipeline wiring on a tiny random model: it collects, judges, reports its funnel and refuses
to train a probe on too few consistent samples (a random model answers nothing right)."""

from __future__ import annotations

import json

import pytest

from hneuron_lens.data import JudgedSample
from hneuron_lens.pipeline import RunConfig, attach_answer_text, run_pipeline


def test_tiny_model_run_stops_with_a_clear_reason(tiny, tmp_path):
    cfg = RunConfig(
        out_dir=str(tmp_path / "run"), n_questions=6, nonexistent=2, k=2, max_new_tokens=4
    )
    with pytest.raises(RuntimeError, match="too few to train a probe"):
        run_pipeline(cfg, model=tiny("llama"))
    funnel = json.loads((tmp_path / "run" / "funnel.json").read_text())
    assert funnel["asked"] == 8
    assert (tmp_path / "run" / "responses.jsonl").is_file()


def test_attach_answer_text_reports_missing():
    ok = JudgedSample("a", "Capital of France?", "It is Paris.", 0, aliases=("Paris",))
    bad = JudgedSample("b", "Q?", "", 1)
    kept, missing = attach_answer_text([ok, bad])
    assert [s.qid for s in kept] == ["a"] and kept[0].answer_text == "Paris"
    assert missing == [("b", "answer phrase not found in response")]


def test_config_validation():
    with pytest.raises(ValueError):
        RunConfig(fractions=(0.5, 0.5, 0.5))
    assert RunConfig.quick().k == 2


def test_questions_from_a_file_lose_a_repeated_suffix(tiny, tmp_path):
    from hneuron_lens.collect import PAPER_SUFFIX, load_collected

    path = tmp_path / "qa.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"question": f"Question number {i}? {PAPER_SUFFIX}", "answer": [f"A{i}"]})
            for i in range(4)
        )
    )
    cfg = RunConfig(out_dir=str(tmp_path / "run"), questions=str(path), k=1, max_new_tokens=2)
    with pytest.raises(RuntimeError, match="too few"):
        run_pipeline(cfg, model=tiny("llama"))
    collected = load_collected(tmp_path / "run" / "responses.jsonl")
    assert len(collected) == 4
    assert all(not q.question.endswith(PAPER_SUFFIX) for q in collected.values())
