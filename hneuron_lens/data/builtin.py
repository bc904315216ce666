"""The project's own built-in demo QA set, generated from fact tables in ``data/builtin/``.

Fact tables (one CSV per topic: capitals, chemical elements, books, paintings, music, inventions,
historical years, SI units, measures, planets, currencies, languages, continents) hold one fact
per row; ``topics.json`` turns each row into questions with templates. A cell may hold several
``|``-separated variants: the first is used in question text, all of them are gold aliases;
numeric answers also get their English number words ("79" -> "seventy-nine").
``nonexistent.json`` lists invented people, places and works for the NonExist-style set (empty
aliases, ``kind="nonexistent"``). Written for this project and released under its MIT licence.
"""

from __future__ import annotations

import csv
import functools
import json
from importlib import resources
from typing import Any

from hneuron_lens.data.records import QAItem

_SOURCE = "builtin"

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words for ``0 <= n < 10000`` ("seventy-nine", "one thousand seven hundred sixty").

    Raises:
        ValueError: outside that range.
    """
    if not 0 <= n < 10000:
        raise ValueError(f"number_words supports 0..9999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{_ONES[thousands]} thousand" + (f" {number_words(rest)}" if rest else "")


def _read_text(name: str) -> str:
    return (
        resources.files("hneuron_lens.data").joinpath("builtin", name).read_text(encoding="utf-8")
    )


@functools.cache
def _topics() -> dict[str, Any]:
    return {k: v for k, v in json.loads(_read_text("topics.json")).items() if not k.startswith("_")}


def _variants(cell: str) -> list[str]:
    return [v.strip() for v in cell.split("|") if v.strip()]


def _aliases(row: dict[str, str], template: dict[str, Any]) -> tuple[str, ...]:
    out = _variants(row[template["answer"]])
    for col in template.get("extra_aliases", []):
        out += _variants(row[col])
    if template.get("number_words"):
        out += [number_words(int(v)) for v in list(out) if v.isdigit()]
    return tuple(dict.fromkeys(out))


def builtin_topics(include_easy: bool = False) -> list[str]:
    """Names of the built-in topics, in file order.

    Args:
        include_easy: also list the ``"easy"`` topics (cities, landmarks, opposites, days,
            months, colours, animal legs: facts small models get right, added so a default run
            finds enough faithful samples). Off by default, so the default set, and every seeded
            subset drawn from it, stays what it was before they were added.
    """
    return [k for k, v in _topics().items() if include_easy or v.get("group") != "easy"]


@functools.cache
def _topic_items(topic: str) -> tuple[QAItem, ...]:
    spec = _topics()[topic]
    rows = list(csv.DictReader(_read_text(spec["file"]).splitlines()))
    items = []
    for template in spec["templates"]:
        for i, row in enumerate(rows):
            fields = {k: _variants(v)[0] if _variants(v) else "" for k, v in row.items()}
            items.append(
                QAItem(
                    qid=f"builtin-{template['id']}-{i:04d}",
                    question=template["question"].format(**fields),
                    aliases=_aliases(row, template),
                    source=_SOURCE,
                )
            )
    return tuple(items)


def builtin_qa(topics: list[str] | None = None, *, include_easy: bool = False) -> list[QAItem]:
    """The built-in answerable questions (935, each with gold aliases; 1,135 with the easy topics).

    Args:
        topics: topic names (see :func:`builtin_topics`); ``None`` = every topic of the default
            set (plus the easy ones with ``include_easy``).
        include_easy: with ``topics=None``, add the ``"easy"`` topics.

    Returns:
        ``QAItem`` list, topics in file order, with stable ids ``builtin-<template>-<row>``.

    Raises:
        ValueError: for an unknown topic.

    Example:
        >>> items = builtin_qa(["capitals"])
        >>> items[0].question, items[0].aliases
        ('What is the capital of France?', ('Paris',))
    """
    names = builtin_topics(include_easy) if topics is None else list(topics)
    unknown = [t for t in names if t not in _topics()]
    if unknown:
        raise ValueError(
            f"unknown built-in topics {unknown}; available: {builtin_topics(include_easy=True)}"
        )
    return [item for t in names for item in _topic_items(t)]


@functools.cache
def _nonexistent() -> tuple[QAItem, ...]:
    doc = json.loads(_read_text("nonexistent.json"))
    items = []
    for category, spec in doc.items():
        if category.startswith("_"):
            continue
        templates = spec["templates"]
        for i, name in enumerate(spec["names"]):
            items.append(
                QAItem(
                    qid=f"builtin-nonexist-{category}-{i:04d}",
                    question=templates[i % len(templates)].format(name=name),
                    aliases=(),
                    source=_SOURCE,
                    kind="nonexistent",
                )
            )
    return tuple(items)


def builtin_nonexistent() -> list[QAItem]:
    """Questions about invented people, places and works (``kind="nonexistent"``, no aliases).

    Any confident answer to these is a hallucination (the paper's NonExist set); a refusal or
    "I don't know" is the faithful behaviour.

    Example:
        >>> items = builtin_nonexistent()
        >>> items[0].kind, items[0].aliases
        ('nonexistent', ())
    """
    return list(_nonexistent())
