"""Leakage-free splits: grouping by id and normalised question, stratification, leakage checks."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hneuron_lens.data.records import JudgedSample
from hneuron_lens.data.splits import (
    LeakageError,
    assign_splits,
    balanced_sample,
    check_leakage,
    normalize_question,
    split_samples,
)


def sample(
    qid: str,
    question: str | None = None,
    label: int = 0,
    split: str | None = None,
    response: str = "r",
) -> JudgedSample:
    return JudgedSample(
        qid=qid, question=question or f"question {qid}", response=response, label=label, split=split
    )


def test_normalize_question() -> None:
    assert normalize_question("  What is THE capital of France?! ") == "what is capital of france"
    assert normalize_question("Who wrote 'A Tale of Two Cities'?") == normalize_question(
        "who wrote a tale of two cities"
    )
    assert normalize_question("theatre") == "theatre"


def test_balanced_sample() -> None:
    samples = [sample(str(i), label=i % 3 == 0) for i in range(30)]
    out = balanced_sample(samples, 10, seed=1)
    assert Counter(s.label for s in out) == {0: 10, 1: 10}
    assert len({s.qid for s in out}) == 20
    assert out == balanced_sample(samples, 10, seed=1)
    with pytest.raises(ValueError, match="class counts"):
        balanced_sample(samples, 11)


def test_split_groups_duplicates() -> None:
    samples = [sample(str(i), label=i % 2) for i in range(40)]
    samples.append(sample("dup-text", question="Question 3!", label=1))
    samples.append(sample("5", question="another text, same id", label=1))
    splits = split_samples(samples, seed=3)
    assert check_leakage(splits).is_clean
    where = {s.qid: name for name, v in splits.items() for s in v}
    assert where["dup-text"] == where["3"]
    assert sum(len(v) for v in splits.values()) == len(samples)


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_samples([], fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="split names"):
        split_samples([], fractions=(0.5, 0.5))


@st.composite
def sample_lists(draw: st.DrawFn) -> list[JudgedSample]:
    n = draw(st.integers(0, 60))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    dup_q = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    with_dups = draw(st.booleans())
    return [
        sample(f"q{i}", question=f"question {dup_q[i] if with_dups else i}", label=lab)
        for i, lab in enumerate(labels)
    ]


@given(
    sample_lists(),
    st.integers(0, 1000),
    st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1 / 3, 1 / 3, 1 / 3), (1.0, 0.0, 0.0)]),
)
@settings(max_examples=150, deadline=None)
def test_split_properties(
    samples: list[JudgedSample], seed: int, fractions: tuple[float, float, float]
) -> None:
    splits = split_samples(samples, fractions=fractions, seed=seed)
    ids = [s.qid for v in splits.values() for s in v]
    assert sorted(ids) == sorted(s.qid for s in samples)  # covers everything, no duplicates
    assert check_leakage(splits).is_clean  # disjoint by id and normalised question
    if len({s.question for s in samples}) == len(
        samples
    ):  # no duplicate groups: exact stratification
        for label in (0, 1):
            n = sum(s.label == label for s in samples)
            for frac, part in zip(fractions, splits.values(), strict=True):
                assert abs(sum(s.label == label for s in part) - n * frac) <= 1


def test_check_leakage_counts() -> None:
    splits = {
        "train": [sample("a"), sample("b"), sample("c", question="The shared question?")],
        "test": [sample("a", question="other"), sample("d", question="shared question")],
        "validation": [sample("e")],
    }
    report = check_leakage(splits)
    pair = report.pairs[("train", "test")]
    assert pair.ids == ["a"] and pair.questions == ["shared question"]
    assert report.n_ids == 1 and report.n_questions == 1 and not report.is_clean
    assert report.pairs[("train", "validation")].n_ids == 0
    assert "train/test: 1 shared ids" in str(report)


def test_assign_splits_refuses_then_resolves(caplog: pytest.LogCaptureFixture) -> None:
    samples = [
        sample("k1", split="train", response="train copy"),
        sample("k1", split="test", response="test copy"),
        sample("k2"),
        sample("k3"),
        sample("k4", question="question k3"),
    ]
    given_ids = {"train": ["k1", "k2", "k3"], "test": ["k1", "k4", "missing"]}
    with pytest.raises(LeakageError, match="1 shared ids, 2 shared normalised questions"):
        assign_splits(samples, given_ids)
    with caplog.at_level(logging.WARNING):
        out = assign_splits(samples, given_ids, allow_leakage=True)
    assert [s.qid for s in out["test"]] == ["k1", "k4"]
    assert out["test"][0].response == "test copy"
    assert [s.qid for s in out["train"]] == ["k2"]
    assert check_leakage(out).is_clean
    assert "dropped per split" in caplog.text and "1 listed ids have no sample" in caplog.text
    out = assign_splits(samples, given_ids, allow_leakage=True, priority=("train", "test"))
    assert [s.qid for s in out["train"]] == ["k1", "k2", "k3"] and out["train"][
        0
    ].response == "train copy"
    assert out["test"] == []


def test_assign_splits_clean() -> None:
    samples = [sample(str(i)) for i in range(6)]
    out = assign_splits(samples, {"train": ["0", "1", "2", "3"], "test": ["4", "5"]})
    assert [len(v) for v in out.values()] == [4, 2]
