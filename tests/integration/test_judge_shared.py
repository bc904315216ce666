"""The rule judge and the phrase extractor against real, stored labels in ../shared/data.

* Rule judge vs the stored per-response labels of the H-Neurons replication (Gemma-3-4B-IT,
  3,500 TriviaQA questions x 10 responses). The stored judge counts an alias found anywhere in
  the response as correct, substrings of longer words included; ours reports those
  ("22" for alias "2", "John Paul II" for "John Paul I") as ``substring_only`` and counts them
  incorrect by default. Measured (35,000 responses): 99.57 % agreement by default, all 147
  disagreements on stored-"true" responses are substring-only; 15 refusals (stored "false",
  e.g. the song title "I'm Sorry I Lost..." and "You Can't Always Get What You Want": the known
  limitation of pattern refusals); 4 responses (`Dr. Leonard “Bones” McCoy`) that the stored judge
  misses because of curly quotes. With ``substring_counts_as_correct=True`` agreement is 99.99 %.
  The agreement thresholds (99 % and 99.5 %) sit about half a point below the measurements and
  only catch gross regressions (for scale: SQuAD's delete-punctuation normalisation measures
  99.33 %); the exact structural checks below catch subtle ones: every stored-"true" response we
  call incorrect is a substring-only match, and in substring mode there is none at all.
* Phrase extractor vs the paper's GPT-4o answer tokens (Gemma-3-27B-IT release, SentencePiece
  pieces): measured 97.3 % exact agreement (4,979 / 5,119) (whitespace-normalised); threshold 95 %.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hneuron_lens.answer import extract_phrase, locate_answer_text
from hneuron_lens.data.records import FAITHFUL, QAItem
from hneuron_lens.judge import CORRECT, JudgeConfig, consistency_filter, judge_item, judge_response

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CONSISTENCY = SHARED / "triviaqa" / "gemma3_4b_it_consistency_samples.jsonl"
GEMMA27B = [
    SHARED / "responses" / f"gemma27b_TriviaQA_answer_tokens_{s}.jsonl" for s in ("train", "test")
]


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(
            f"shared research data not found at {path} (expected ../shared/data beside the repo)"
        )


def _consistency_rows() -> list[tuple[str, str, list[str]]]:
    rows = []
    with CONSISTENCY.open(encoding="utf-8") as fh:
        for line in fh:
            for _qid, rec in json.loads(line).items():
                n = len(rec["responses"])
                rows.extend(
                    zip(rec["responses"], rec["judges"], [rec["ground_truth"]] * n, strict=True)
                )
    return rows


def _agreement(cfg: JudgeConfig) -> tuple[float, Counter, Counter]:
    """Agreement rate, confusion (ours, stored) and match kinds of the "ours incorrect, stored
    true" disagreements."""
    confusion: Counter = Counter()
    kinds: Counter = Counter()
    for response, stored, aliases in _consistency_rows():
        j = judge_response(response, aliases, cfg)
        confusion[(j.label, stored)] += 1
        if (j.label, stored) == ("incorrect", "true"):
            kinds[j.match_kind] += 1
    agree = sum(
        n for (ours, stored), n in confusion.items() if (ours == CORRECT) == (stored == "true")
    )
    return agree / sum(confusion.values()), confusion, kinds


def test_rule_judge_agrees_with_stored_labels() -> None:
    _need(CONSISTENCY)
    rate, confusion, kinds = _agreement(JudgeConfig())
    print(
        f"\nagreement {rate:.4%}\nconfusion (ours, stored): {dict(confusion)}\nmatch kinds: {dict(kinds)}"
    )
    assert sum(confusion.values()) == 35_000
    assert set(s for _, s in confusion) <= {"true", "false"}
    assert rate >= 0.99
    # every "stored true, ours incorrect" case is a substring-only match, reported as such
    assert set(kinds) == {"substring_only"}
    assert 50 <= kinds["substring_only"] <= 500
    assert confusion[("refusal", "true")] == 0


def test_rule_judge_substring_mode_reproduces_stored_labels() -> None:
    _need(CONSISTENCY)
    rate, confusion, _ = _agreement(JudgeConfig(substring_counts_as_correct=True))
    print(f"\nsubstring-as-correct agreement {rate:.4%}: {dict(confusion)}")
    assert rate >= 0.995
    assert confusion[("incorrect", "true")] == 0


def test_phrase_extractor_agrees_with_paper_answer_tokens() -> None:
    for path in GEMMA27B:
        _need(path)
    agree = total = 0
    for path in GEMMA27B:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the release has a few broken lines
                for value in rec.values():
                    if not value["answer_tokens"]:
                        continue
                    gold = "".join(value["answer_tokens"]).replace("\u2581", " ")
                    loc = extract_phrase(value["response"])
                    got = loc.text if loc else ""
                    total += 1
                    agree += got.split() == gold.split()
    print(f"\nphrase extractor vs GPT-4o answer tokens: {agree}/{total} = {agree / total:.2%}")
    assert total > 4000
    assert agree / total >= 0.95


def test_funnel_and_answer_location_on_stored_responses() -> None:
    """Measured: 3,500 asked, 1,421 consistently right, 1,697 consistently wrong, 379 mixed,
    3 refused, 25 with a substring-only match; the stored labels give 1,435 / 1,680 / 385.
    Every kept sample gets an answer span."""
    _need(CONSISTENCY)
    items, responses, judgements = [], {}, {}
    with CONSISTENCY.open(encoding="utf-8") as fh:
        for line in fh:
            for qid, rec in json.loads(line).items():
                item = QAItem(qid, rec["question"], tuple(rec["ground_truth"]), source="triviaqa")
                items.append(item)
                responses[qid] = rec["responses"]
                judgements[qid] = [judge_item(item, r) for r in rec["responses"]]
    result = consistency_filter(items, responses, judgements, k=10)
    funnel = result.funnel
    print(f"\n{funnel}")
    assert funnel.asked == 3500 and funnel.missing == 0
    assert funnel.answered == funnel.consistent_true + funnel.consistent_false + funnel.mixed
    assert 1350 <= funnel.consistent_true <= 1500 and 1600 <= funnel.consistent_false <= 1800
    assert funnel.refused < 20 and 10 <= funnel.substring_only <= 60
    methods: Counter = Counter()
    for sample in result.samples:
        loc = locate_answer_text(sample.response, sample.aliases, sample.label, fallback=False)
        if loc is None:
            funnel.span_not_found += 1
            continue
        assert sample.response[loc.start : loc.end] == loc.text
        methods[loc.method, sample.label] += 1
    print(dict(methods))
    assert funnel.span_not_found == 0
    assert methods["alias", FAITHFUL] == funnel.consistent_true
