"""Load the real shared research files (``<repo>/../shared/data``); skipped when absent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hneuron_lens.data.loaders import load_consistency, load_qa, load_release
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED
from hneuron_lens.data.splits import LeakageError, assign_splits, check_leakage

DATA = (Path(__file__).parents[2] / ".." / "shared" / "data").resolve()

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(),
    reason=f"shared research data not found at {DATA} (expected <repo>/../shared/data)",
)

# Train/test overlaps of the released id lists (data README; verified by hand): ids, normalised questions.
EXPECTED_OVERLAP = {"Llama33": (0, 1), "Mistral24b": (86, 86), "gemma27b": (107, 107)}


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present in the shared data")
    return path


@pytest.mark.parametrize("model", sorted(EXPECTED_OVERLAP))
def test_release_files(model: str) -> None:
    base = DATA / "responses"
    loaded = {}
    for split in ("train", "test"):
        path = need(base / f"{model}_TriviaQA_answer_tokens_{split}.jsonl")
        samples, report = load_release(path)
        ids = json.loads((base / f"{model}_TriviaQA_{split}_qids.json").read_text())
        # every listed id is loaded; every other line is accounted for in the report
        assert {s.qid for s in samples} == set(ids["t"]) | set(ids["f"])
        assert report.n_loaded + report.n_skipped == report.n_lines
        n_unparseable = report.counts_by_reason.get("unparseable JSON", 0)
        assert set(report.counts_by_reason) <= {"id not in qids file", "unparseable JSON"}
        assert all(s.split == split for s in samples)
        assert sum(s.label == FAITHFUL for s in samples) == len(set(ids["t"]))
        assert sum(s.label == HALLUCINATED for s in samples) == len(set(ids["f"]))
        n_repeated = len(ids["t"]) + len(ids["f"]) - len(samples)
        assert report.notes.get("repeated id in qids file", 0) == n_repeated
        with_text = [s for s in samples if s.answer_text is not None]
        assert all(s.answer_text in s.response for s in with_text)
        assert len(with_text) >= 0.97 * len(samples)
        print(
            f"{model} {split}: {report} (unparseable lines: {n_unparseable}, answer_text found {len(with_text)}/{len(samples)})"
        )
        loaded[split] = samples
    leak = check_leakage(loaded)
    pair = leak.pairs[("train", "test")]
    assert (pair.n_ids, pair.n_questions) == EXPECTED_OVERLAP[model]
    given = {split: [s.qid for s in v] for split, v in loaded.items()}
    everything = loaded["train"] + loaded["test"]
    with pytest.raises(LeakageError):
        assign_splits(everything, given)
    resolved = assign_splits(everything, given, allow_leakage=True)
    assert check_leakage(resolved).is_clean
    assert len(resolved["test"]) == len(loaded["test"])
    assert len(resolved["train"]) == len(loaded["train"]) - max(pair.n_ids, pair.n_questions)
    print(f"{model}: train/test overlap {pair.n_ids} ids, {pair.n_questions} normalised questions")


def test_consistency_file() -> None:
    path = need(DATA / "triviaqa" / "gemma3_4b_it_consistency_samples.jsonl")
    start = time.perf_counter()
    samples, report = load_consistency(path)
    seconds = time.perf_counter() - start
    assert len(samples) == 3500 and not report.skipped
    assert all(len(s.responses) == 10 == len(s.judges) and s.aliases for s in samples)
    assert {j for s in samples for j in s.judges} <= {"true", "false"}
    print(f"consistency file: {len(samples)} questions in {seconds:.2f} s")
    items, _ = load_qa(path)
    assert [i.qid for i in items] == [s.qid for s in samples]


def test_bioasq_file() -> None:
    samples, report = load_consistency(
        need(DATA / "bioasq" / "gemma3_4b_it_bioasq13b_factoid_samples.jsonl")
    )
    assert len(samples) == 1600 and not report.skipped
    assert all(len(s.responses) == 1 for s in samples)


def test_falseqa_csv() -> None:
    path = need(DATA / "benchmarks" / "falseqa_test.csv")
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == ["question", "answer", "label"]
    items, report = load_qa(path, format="open_qa")
    assert report.n_loaded == report.n_lines == 1374
    assert all(len(i.aliases) >= 1 for i in items)
