"""Unit tests for the rule judge, refusal detection and the consistency filter."""

from __future__ import annotations

import json
import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, QAItem
from hneuron_lens.judge import (
    DEFAULT_REFUSAL_PATTERNS,
    Funnel,
    JudgeConfig,
    Judgement,
    RefusalConfig,
    consistency_filter,
    find_refusal,
    is_refusal,
    judge_item,
    judge_response,
    match_aliases,
    modal_response,
    normalize_answer,
    word_spans,
)

# --- normalize_answer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),
        ("  A  cat  ", "cat"),
        ("Kwik-E-Mart!", "kwik e mart"),
        ("O'Neill", "o neill"),
        ("Lewis, (Harry) Sinclair", "lewis harry sinclair"),
        ("30’s", "30 s"),
        ("Theatre and Anne", "theatre and anne"),  # articles only as whole words
        ("snake_case", "snake case"),
        ("Dr. Leonard “Bones” McCoy", "dr leonard bones mccoy"),
        ("", ""),
        ("!!!", ""),
        ("Portúgal", "portúgal"),
    ],
)
def test_normalize_answer_examples(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@given(st.text(max_size=60))
def test_normalize_answer_is_idempotent_and_clean(text: str) -> None:
    out = normalize_answer(text)
    assert normalize_answer(out) == out
    assert out == out.strip()
    assert "  " not in out
    assert not any(ch in string.punctuation for ch in out)
    assert not ({"a", "an", "the"} & set(out.split()))


def _is_word(ch: str) -> bool:
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


@given(st.text(max_size=60))
def test_word_spans_are_maximal_runs_of_word_characters(text: str) -> None:
    spans = word_spans(text)
    covered = set()
    for i, (s, e) in enumerate(spans):
        assert 0 <= s < e <= len(text)
        if i:
            assert spans[i - 1][1] < s  # separated by at least one non-word character
        assert all(_is_word(ch) for ch in text[s:e])
        covered.update(range(s, e))
    assert all(not _is_word(ch) for i, ch in enumerate(text) if i not in covered)


@given(
    words=st.lists(st.text(alphabet="bcdkxyz", min_size=1, max_size=6), min_size=1, max_size=6),
    punct=st.sampled_from([" ", ", ", " - ", "; ", "  "]),
)
def test_normalize_ignores_case_and_punctuation_between_words(words: list[str], punct: str) -> None:
    assert normalize_answer(punct.join(w.upper() for w in words)) == " ".join(words)


# --- rule judge ---------------------------------------------------------------------------------


def test_exact_match() -> None:
    j = judge_response("  the PARIS. ", ["Paris"])
    assert (j.label, j.match_kind, j.matched_alias, j.judge) == (
        "correct",
        "exact",
        "Paris",
        "rule",
    )


def test_contains_match_on_word_boundaries() -> None:
    j = judge_response("I believe it is Paris, France", ["Paris"])
    assert (j.label, j.match_kind) == ("correct", "contains")


def test_substring_only_is_reported_and_not_correct_by_default() -> None:
    j = judge_response("Parisian", ["Paris"])
    assert (j.label, j.match_kind, j.matched_alias) == ("incorrect", "substring_only", "Paris")
    j = judge_response("1945", ["1"])
    assert (j.label, j.match_kind) == ("incorrect", "substring_only")


def test_substring_only_can_count_as_correct() -> None:
    j = judge_response("Parisian", ["Paris"], JudgeConfig(substring_counts_as_correct=True))
    assert (j.label, j.match_kind) == ("correct", "substring_only")


def test_no_match_is_incorrect() -> None:
    j = judge_response("Lyon", ["Paris", "City of Light"])
    assert (j.label, j.matched_alias, j.match_kind) == ("incorrect", None, None)


def test_best_match_prefers_exact_then_longest() -> None:
    assert match_aliases("Sinclair Lewis", ["Lewis", "sinclair lewis"]).kind == "exact"
    m = match_aliases("It was Harry Sinclair Lewis", ["Lewis", "Harry Sinclair Lewis", "Sinclair"])
    assert (m.alias, m.kind) == ("Harry Sinclair Lewis", "contains")
    m = match_aliases("Lewisham and Parisian", ["Lewis", "Paris"])
    assert m.kind == "substring_only"


def test_aliases_that_normalise_to_nothing_are_ignored() -> None:
    assert match_aliases("the", ["The", "!"]) is None
    with pytest.raises(ValueError, match="at least one non-empty alias"):
        judge_response("Paris", ["The"])


def test_refusal_label_and_precedence() -> None:
    assert judge_response("I don't know.", ["Paris"]).label == "refusal"
    hedged = "I'm not sure, maybe Paris"
    assert judge_response(hedged, ["Paris"]).label == "refusal"
    j = judge_response(hedged, ["Paris"], JudgeConfig(refusal_wins=False))
    assert (j.label, j.match_kind) == ("correct", "contains")
    # a substring-only match never overrides a refusal
    j = judge_response("I'm not sure, Parisian?", ["Paris"], JudgeConfig(refusal_wins=False))
    assert j.label == "refusal"


def test_nonexistent_questions() -> None:
    item = QAItem("n1", "Who founded the city of Zorbablat?", (), kind="nonexistent")
    assert judge_item(item, "John Zorb").label == "incorrect"
    assert judge_item(item, "There is no city called Zorbablat.").label == "refusal"
    with pytest.raises(ValueError, match="kind"):
        judge_response("x", ["x"], kind="other")


def test_empty_response_is_a_refusal_unless_configured() -> None:
    assert judge_response("  \n", ["Paris"]).label == "refusal"
    cfg = JudgeConfig(refusal=RefusalConfig(empty_is_refusal=False))
    assert judge_response("  \n", ["Paris"], cfg).label == "incorrect"


def test_judgement_validation_and_roundtrip() -> None:
    with pytest.raises(ValueError):
        Judgement("maybe")
    with pytest.raises(ValueError):
        Judgement("correct", "x", "fuzzy")
    j = Judgement("correct", "Paris", "exact")
    assert Judgement.from_dict(json.loads(json.dumps(j.to_dict()))) == j


def test_judge_config_roundtrip() -> None:
    cfg = JudgeConfig(
        substring_counts_as_correct=True, refusal=RefusalConfig(extra_patterns=("x+",))
    )
    back = JudgeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match="invalid regex"):
        RefusalConfig(patterns=("(",))


# --- refusal detection ------------------------------------------------------------------------

REFUSALS = [
    "I don't know.",
    "I do not know the answer.",
    "I DONT KNOW",
    "I’m not sure.",
    "I am not certain about this.",
    "I cannot answer that.",
    "I can't answer that.",
    "I can not say.",
    "I am unable to determine that.",
    "There is no information about this person.",
    "I'm not aware of such a film.",
    "I do not have access to that data.",
    "There is no such place.",
    "This book doesn't exist.",
    "The company does not appear to exist.",
    "As an AI, I have no opinions.",
    "I couldn't find anything on that.",
    "I'm sorry, but I can't help.",
    "Zorbablat is not a real city.",
]
ANSWERS = [
    "Paris",
    "Sinclair Lewis",
    "The Cannes Film Festival",
    "Canterbury",  # contains "can" but not on a word boundary
    "Cannot Buy My Soul",  # a real answer that the default patterns treat as a refusal: see below
    "Unknown Pleasures",
    "Noah",
    "Knowledge is power",
    "Theresa May",
    "No Country for Old Men",
    "Existentialism",
    "Donkey Kong",
    "Sure Thing",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusal_positives(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", [a for a in ANSWERS if a != "Cannot Buy My Soul"])
def test_refusal_negatives(text: str) -> None:
    assert not is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "I can't believe it's Paris",
        "Cannot Buy My Soul",
        "You Can’t Always Get What You Want",
        "I'm Sorry I Haven't a Clue",
        "There is no doubt: Paris",
    ],
)
def test_known_limitation_pattern_anywhere_is_a_refusal(text: str) -> None:
    """Documented limitation: patterns match anywhere, so titles and idioms are refusals too."""
    assert is_refusal(text)


def test_refusal_config_is_configurable() -> None:
    cfg = RefusalConfig(patterns=(r"no idea",))
    assert is_refusal("No idea, sorry", cfg)
    assert not is_refusal("I don't know", cfg)
    cfg = RefusalConfig(extra_patterns=(r"pass",))
    assert is_refusal("Pass.", cfg) and is_refusal("I don't know", cfg)
    assert not is_refusal("passport", cfg)
    assert find_refusal("Well, I Don't Know!") == "I Don't Know"
    assert is_refusal("", RefusalConfig(patterns=()))
    assert not is_refusal("I don't know", RefusalConfig(patterns=()))
    assert len(DEFAULT_REFUSAL_PATTERNS) >= 10


# --- consistency filter and funnel ------------------------------------------------------------


def _judge_all(items: list[QAItem], responses: dict[str, list[str]]) -> dict[str, list[Judgement]]:
    by_id = {it.qid: it for it in items}
    return {q: [judge_item(by_id[q], r) for r in rs] for q, rs in responses.items()}


def test_consistency_filter_end_to_end() -> None:
    items = [
        QAItem("t", "Capital of France?", ("Paris",), source="demo"),
        QAItem("f", "Capital of Australia?", ("Canberra",)),
        QAItem("mixed", "Capital of Turkey?", ("Ankara",)),
        QAItem("refused", "Capital of Peru?", ("Lima",)),
        QAItem("missing", "Capital of Chad?", ("N'Djamena",)),
        QAItem("sub", "A number?", ("1",)),
    ]
    responses = {
        "t": ["Paris.", "It is Paris", "paris", "Paris"],
        "f": ["Sydney", "Melbourne", "Melbourne", "sydney."],
        "mixed": ["Ankara", "Istanbul", "Ankara", "Ankara"],
        "refused": ["Lima", "Lima", "I don't know", "Lima"],
        "sub": ["1945", "1945", "1945", "1945"],
    }
    result = consistency_filter(items, responses, _judge_all(items, responses), k=4)
    f = result.funnel
    assert f.to_dict() == {
        "asked": 6,
        "answered": 4,
        "consistent_true": 1,
        "consistent_false": 2,
        "mixed": 1,
        "refused": 1,
        "substring_only": 1,
        "missing": 1,
        "span_not_found": 0,
    }
    assert f.answered == f.consistent_true + f.consistent_false + f.mixed
    assert result.dropped == {"mixed": "mixed", "refused": "refused", "missing": "missing"}
    by_id = {s.qid: s for s in result.samples}
    assert [s.qid for s in result.samples] == ["t", "f", "sub"]
    t = by_id["t"]
    # "Paris." / "paris" / "Paris" normalise alike (3 votes) and beat "It is Paris"
    assert (t.label, t.response, t.source, t.aliases) == (FAITHFUL, "Paris.", "demo", ("Paris",))
    assert t.meta["votes"] == {"correct": 4} and t.meta["modal_count"] == 3
    assert (t.meta["judge"], t.meta["match_kind"], t.meta["k"]) == ("rule", "exact", 4)
    # tie 2-2 between sydney and melbourne: the first seen wins, with its original spelling
    assert (by_id["f"].label, by_id["f"].response) == (HALLUCINATED, "Sydney")
    assert by_id["sub"].meta["match_kind"] == "substring_only"


def test_consistency_filter_validates_lengths() -> None:
    items = [QAItem("q", "?", ("a b",))]
    judg = {"q": [Judgement("correct")]}
    with pytest.raises(ValueError, match="1 judgements"):
        consistency_filter(items, {"q": ["a b", "a b"]}, judg)
    with pytest.raises(ValueError, match="expected 3"):
        consistency_filter(items, {"q": ["a b"]}, judg, k=3)


def test_unparseable_llm_verdicts_drop_the_question() -> None:
    items = [QAItem("q", "?", ("x",))]
    judg = {"q": [Judgement("correct"), Judgement("unparseable", judge="llm:m:v1")]}
    result = consistency_filter(items, {"q": ["x", "x"]}, judg)
    assert result.samples == [] and result.funnel.refused == 1


def test_modal_response() -> None:
    assert modal_response(["B", "a", "A.", "b"]) == (0, 2)
    assert modal_response(["x", "y", "y"]) == (1, 2)
    with pytest.raises(ValueError):
        modal_response([])


def test_funnel_save_load_and_table(tmp_path) -> None:
    f = Funnel(asked=2000, answered=1500, consistent_true=700, consistent_false=600, mixed=200)
    f.span_not_found = 3
    path = tmp_path / "sub" / "funnel.json"
    f.save(path)
    assert json.loads(path.read_text())["span_not_found"] == 3
    assert Funnel.load(path) == f
    assert [p.name for p in path.parent.iterdir()] == ["funnel.json"]  # no temp file left
    lines = str(f).splitlines()
    assert len(lines) == 9 and lines[0].split() == ["asked", "2000"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    with pytest.raises(ValueError):
        Funnel(asked=-1)


@pytest.mark.parametrize(
    "response,alias,label",
    [
        ("I think it's Fe.", "S", "incorrect"),
        ("Sulfur's symbol is Su.", "S", "incorrect"),
        ("I believe it is Iodine", "I", "incorrect"),
        ("The symbol is S.", "S", "correct"),
        ("Its symbol is I.", "I", "correct"),
        ("S", "S", "correct"),
    ],
)
def test_one_character_aliases_need_a_standalone_match(response, alias, label):
    assert judge_response(response, [alias]).label == label
