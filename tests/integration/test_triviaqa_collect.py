"""Issue 4's check: collect answers to real TriviaQA questions with the default model, judge them
and report the funnel (shared data; skipped when absent)."""

from __future__ import annotations

import json

import pytest

import hneuron_lens as hl
from hneuron_lens.data.loaders import load_consistency

pytestmark = pytest.mark.slow

N_QUESTIONS = 100


def test_collect_judge_funnel_on_triviaqa(default_model, shared_data, tmp_path):
    path = shared_data / "triviaqa" / "gemma3_4b_it_consistency_samples.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    records, _ = load_consistency(path)
    items = [r.to_qa_item() for r in records[:N_QUESTIONS]]
    cfg = hl.CollectConfig(k=2, max_new_tokens=24, batch_size=32, progress=False)
    out = tmp_path / "responses.jsonl"
    result = hl.collect(default_model, items, cfg, out)
    assert result.n_generated == N_QUESTIONS
    assert all(len(q.responses) == 2 for q in hl.load_collected(out).values())
    samples, funnel = hl.judge_collected(hl.load_collected(out))
    assert funnel.asked == N_QUESTIONS
    assert funnel.answered + funnel.refused + funnel.missing == funnel.asked
    assert funnel.consistent_true + funnel.consistent_false == len(samples)
    (tmp_path / "funnel.json").write_text(json.dumps(funnel.to_dict()))
    print("TriviaQA funnel (default model, k=2):", json.dumps(funnel.to_dict()))
