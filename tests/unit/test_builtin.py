"""The built-in demo QA set: size, unique ids and questions, well-formed aliases."""

from __future__ import annotations

import pytest

from hneuron_lens.data.builtin import builtin_nonexistent, builtin_qa, builtin_topics, number_words
from hneuron_lens.data.splits import normalize_question


def test_builtin_qa_size_and_uniqueness() -> None:
    qa = builtin_qa()
    ne = builtin_nonexistent()
    assert len(qa) >= 600
    assert len(ne) >= 100
    everything = qa + ne
    assert len({i.qid for i in everything}) == len(everything)
    assert len({normalize_question(i.question) for i in everything}) == len(everything)
    assert all(i.qid.startswith("builtin-") and i.source == "builtin" for i in everything)


def test_builtin_aliases() -> None:
    for item in builtin_qa():
        assert item.kind == "qa"
        assert item.aliases, item.qid
        assert all(a and a == a.strip() for a in item.aliases), item.qid
        assert len(set(item.aliases)) == len(item.aliases), item.qid
        assert "{" not in item.question and item.question.endswith("?"), item.qid
    for item in builtin_nonexistent():
        assert item.kind == "nonexistent" and item.aliases == ()


def test_builtin_known_facts_and_variants() -> None:
    by_q = {i.question: i for i in builtin_qa()}
    assert by_q["What is the capital of France?"].aliases == ("Paris",)
    assert "Washington" in by_q["What is the capital of the United States?"].aliases
    assert by_q["What is the atomic number of gold?"].aliases == ("79", "seventy-nine")
    assert by_q["Which chemical element has the symbol Al?"].aliases == ("aluminium", "aluminum")
    assert set(
        by_q[
            "Counting outward from the Sun, what is the position of Earth among the planets?"
        ].aliases
    ) == {"3", "third", "three"}


def test_builtin_topics_filter() -> None:
    topics = builtin_topics()
    assert "capitals" in topics and len(topics) >= 10
    caps = builtin_qa(["capitals"])
    assert caps and all(i.qid.startswith("builtin-capital-") for i in caps)
    assert builtin_qa(topics) == builtin_qa()
    with pytest.raises(ValueError, match="unknown built-in topics"):
        builtin_qa(["nope"])


def test_builtin_ids_stable() -> None:
    first = builtin_qa(["capitals"])[0]
    assert (
        first.qid == "builtin-capital-0000" and first.question == "What is the capital of France?"
    )


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(79) == "seventy-nine"
    assert number_words(1760) == "one thousand seven hundred sixty"
    with pytest.raises(ValueError):
        number_words(10000)


def test_builtin_easy_topics_are_opt_in() -> None:
    core, everything = builtin_qa(), builtin_qa(include_easy=True)
    assert len(core) == 935  # the default set (and seeded subsets of it) is unchanged
    assert everything[: len(core)] == core
    easy = everything[len(core) :]
    assert len(easy) >= 200
    assert set(builtin_topics(include_easy=True)) - set(builtin_topics()) == {
        "cities",
        "landmarks",
        "opposites",
        "days",
        "months",
        "colors",
        "animals",
    }
    assert len({normalize_question(i.question) for i in everything}) == len(everything)
    assert len({i.qid for i in everything}) == len(everything)
    by_q = {i.question: i for i in easy}
    assert by_q["In which country is the city of Tokyo?"].aliases == ("Japan",)
    assert by_q["In which city is the Eiffel Tower?"].aliases == ("Paris",)
    assert by_q["Which month of the year comes after December?"].aliases == ("January",)
    assert by_q["How many legs does a spider have?"].aliases == ("eight", "8")
    for item in easy:  # the answer must not be given away by the question itself
        assert not any(a.lower() in item.question.lower().split() for a in item.aliases), item
