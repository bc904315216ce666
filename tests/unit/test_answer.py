"""Tests for answer-phrase location (exact character offsets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hneuron_lens.answer import (
    AnswerLocation,
    PhraseConfig,
    extract_phrase,
    find_alias,
    locate_answer_text,
)
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED


def _check(response: str, loc: AnswerLocation | None) -> None:
    if loc is not None:
        assert 0 <= loc.start < loc.end <= len(response)
        assert response[loc.start : loc.end] == loc.text != ""


# --- correct responses: alias occurrences --------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "aliases", "text", "start"),
    [
        ("Paris", ["Paris"], "Paris", 0),
        ("It's PARIS, France.", ["paris"], "PARIS", 5),
        ("The Beatles!", ["The Beatles"], "The Beatles", 0),
        ("The Beatles!", ["Beatles"], "Beatles", 4),
        ("I'd say the Kwik-E-Mart.", ["kwik e mart"], "Kwik-E-Mart", 12),
        ("Sinclair Lewis won.", ["Lewis", "Sinclair Lewis"], "Sinclair Lewis", 0),  # longest
        ("Lewis, then Sinclair Lewis", ["Lewis"], "Lewis", 0),  # earliest
        ("Dr. Leonard “Bones” McCoy", ["dr leonard bones mccoy"], "Dr. Leonard “Bones” McCoy", 0),
        ("São Paulo", ["são paulo"], "São Paulo", 0),
    ],
)
def test_find_alias_examples(response: str, aliases: list[str], text: str, start: int) -> None:
    loc = locate_answer_text(response, aliases, FAITHFUL)
    assert (loc.text, loc.start, loc.method) == (text, start, "alias")
    _check(response, loc)


def test_alias_substring_is_widened_to_the_word() -> None:
    loc = find_alias("He was Parisian.", ["Paris"])
    assert (loc.text, loc.method, loc.matched_alias) == ("Parisian", "alias_substring", "Paris")
    assert find_alias("It was 1945", ["94"]).text == "1945"


def test_correct_without_alias_falls_back_to_phrase_or_none() -> None:
    loc = locate_answer_text("The answer is Lutetia.", ["Paris"], "correct")
    assert (loc.text, loc.method) == ("Lutetia", "phrase")
    assert locate_answer_text("Lutetia", ["Paris"], "correct", fallback=False) is None


def test_labels() -> None:
    assert locate_answer_text("Paris", ["Paris"], "faithful").method == "alias"
    assert locate_answer_text("It is Paris.", ["Paris"], HALLUCINATED).text == "Paris"
    with pytest.raises(ValueError):
        locate_answer_text("Paris", ["Paris"], "refusal")
    with pytest.raises(ValueError):
        locate_answer_text("Paris", ["Paris"], 2)


# --- hallucinated responses: answer phrase -------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Lyon", "Lyon"),
        ("Lyon.", "Lyon"),
        ("  Lyon.\n\n\n", "Lyon"),
        ("The answer is Lyon.", "Lyon"),
        ("Answer: Lyon", "Lyon"),
        ("**Answer:** Lyon", "Lyon"),
        ("Final answer - Lyon", "Lyon"),
        ("It is Lyon.", "Lyon"),
        ("It's Lyon", "Lyon"),
        ("I think it's Lyon.", "Lyon"),
        ("I believe the answer is Lyon.", "Lyon"),
        ('"Hey Jude"', "Hey Jude"),
        ("“Hey Jude”.", "Hey Jude"),
        ("Lyon. It is the second city of France.", "Lyon"),
        ("Lyon\nIt is the second city of France.", "Lyon"),
        ("Lyon (France)", "Lyon"),
        ("Lyon - the second city", "Lyon"),
        ("Lyon, which is in France.", "Lyon"),
        ("Lyon because of the silk.", "Lyon"),
        ("J. R. R. Tolkien", "J. R. R. Tolkien"),
        ("St. Louis, Missouri.", "St. Louis, Missouri"),
        ("Washington, D.C.", "Washington, D.C."),
        ("The U.S. Navy", "The U.S. Navy"),
        ("The Naked Civil Servant", "The Naked Civil Servant"),
        ("(Harry) Sinclair Lewis", "(Harry) Sinclair Lewis"),
        ("3.14", "3.14"),
        ("Lyon Respond with the answer only, without any explanation.", "Lyon"),
        ("Respond with the answer only, without any explanation. Lyon", "Lyon"),
        ("It is", "It is"),  # a bare lead-in is kept
        ("It is .", "It is"),
        ("...\nLyon", "Lyon"),
        ("**\n\n- Lyon", "Lyon"),
    ],
)
def test_extract_phrase_examples(response: str, expected: str) -> None:
    loc = locate_answer_text(response, ["Paris"], "incorrect")
    assert loc is not None and loc.text == expected and loc.method == "phrase"
    _check(response, loc)


@pytest.mark.parametrize("response", ["", "   ", "...", "\n\n", '""', "**"])
def test_extract_phrase_returns_none_when_nothing_is_left(response: str) -> None:
    assert locate_answer_text(response, ["Paris"], HALLUCINATED) is None


def test_phrase_config() -> None:
    text = "Lyon (France). Second city."
    cfg = PhraseConfig(first_sentence_only=False, cut_explanations=False)
    assert extract_phrase(text, cfg).text == "Lyon (France). Second city"
    cfg = PhraseConfig(lead_patterns=(r"city\s*:\s*",))
    assert extract_phrase("City: Lyon", cfg).text == "Lyon"
    assert extract_phrase("The answer is Lyon", cfg).text == "The answer is Lyon"
    assert PhraseConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError):
        PhraseConfig(lead_patterns=("[",))
    with pytest.raises(ValueError, match="unknown keys"):
        PhraseConfig.from_dict({"nope": 1})


def test_answer_location_validation_and_roundtrip() -> None:
    loc = AnswerLocation(2, 5, "abc", "phrase")
    assert loc.span == (2, 5)
    assert AnswerLocation.from_dict(json.loads(json.dumps(loc.to_dict()))) == loc
    with pytest.raises(ValueError):
        AnswerLocation(3, 3, "", "phrase")
    with pytest.raises(ValueError):
        AnswerLocation(0, 2, "abc", "phrase")
    with pytest.raises(ValueError):
        AnswerLocation(0, 3, "abc", "guess")


# --- properties ----------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.sampled_from(list("abcxyz XYZ.,;:!?\"'()-*\n\t“”é0123") + ["\u0301"]), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(response=_TEXT, aliases=st.lists(_TEXT, max_size=4), label=st.sampled_from([0, 1]))
def test_span_is_always_exact_and_non_empty(response: str, aliases: list[str], label: int) -> None:
    _check(response, locate_answer_text(response, aliases, label))


@settings(max_examples=300, deadline=None)
@given(response=st.text(max_size=120))
def test_phrase_span_property_on_arbitrary_unicode(response: str) -> None:
    loc = extract_phrase(response)
    _check(response, loc)
    if "respond" not in response.lower() and any(ch.isalnum() for ch in response):
        assert loc is not None  # a letter or digit always survives


_FILLER_WORD = st.text(alphabet="xyzXYZ", min_size=1, max_size=7)
_ALIAS_WORD = st.text(alphabet="bcdkBCDK", min_size=1, max_size=7)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(_FILLER_WORD, max_size=8),
    after=st.lists(_FILLER_WORD, max_size=8),
    alias_words=st.lists(_ALIAS_WORD, min_size=1, max_size=3),
    seps=st.sampled_from([" ", ", ", " - ", ". ", "\n", " (", "; "]),
    swap_case=st.booleans(),
)
def test_planted_alias_is_found_at_its_position(
    before: list[str],
    after: list[str],
    alias_words: list[str],
    seps: str,
    swap_case: bool,
) -> None:
    alias = " ".join(alias_words)
    planted = alias.swapcase() if swap_case else alias
    prefix = seps.join(before) + (seps if before else "")
    response = prefix + planted + (seps if after else "") + seps.join(after)
    loc = locate_answer_text(response, ["zzzzzzzzzz", alias], FAITHFUL)
    assert loc is not None and loc.method == "alias" and loc.matched_alias == alias
    assert (loc.start, loc.end) == (len(prefix), len(prefix) + len(alias))
    assert loc.text.lower() == alias.lower()
