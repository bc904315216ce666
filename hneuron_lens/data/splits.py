"""Train / validation / test splits that do not leak, and the checks that prove it.

Two samples leak across splits when they share a question id or the same question text after
:func:`normalize_question` (TriviaQA holds the same question under several ids). The paper's
released id lists overlap (86 train/test ids for Mistral-Small-24B, 107 for Gemma-3-27B):
:func:`check_leakage` finds such overlaps and :func:`assign_splits` refuses them unless told how
to resolve them.

Samples are any objects with ``qid`` and ``question`` attributes (``QAItem``, ``JudgedSample``,
``ConsistencySample``); stratification uses a ``label`` attribute.
"""

from __future__ import annotations

import logging
import random
import re
import string
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

S = TypeVar("S")

SPLIT_NAMES = ("train", "validation", "test")
"""Default split names, matched to ``fractions`` by position."""

DEFAULT_PRIORITY = ("test", "validation", "train")
"""Default overlap rule of :func:`assign_splits`: an item claimed by several splits stays in the
first of these (the evaluation split keeps its full released list; train loses the duplicate)."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—…¿¡"})


class LeakageError(ValueError):
    """Splits share ids or normalised questions and ``allow_leakage`` is False."""


def normalize_question(text: str) -> str:
    """Canonical form of a question for duplicate detection.

    NFKC-normalised, lower case, punctuation replaced by spaces, the articles a / an / the
    removed, whitespace collapsed.

    Example:
        >>> normalize_question("  What is  the Capital of France?")
        'what is capital of france'
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _label(sample: Any) -> int:
    try:
        return sample.label
    except AttributeError as err:
        raise TypeError(
            f"{type(sample).__name__} has no 'label' attribute; pass stratify=False"
        ) from err


def balanced_sample(samples: Sequence[S], n_per_class: int, seed: int = 0) -> list[S]:
    """``n_per_class`` samples of each label, drawn without replacement, in a shuffled order.

    Args:
        samples: objects with a ``label`` attribute.
        n_per_class: how many to draw per label.
        seed: random seed.

    Raises:
        ValueError: when a label has fewer than ``n_per_class`` samples (the message gives the counts).
    """
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    by_label: dict[int, list[S]] = defaultdict(list)
    for s in samples:
        by_label[_label(s)].append(s)
    short = {lab: len(v) for lab, v in by_label.items() if len(v) < n_per_class}
    if short or not by_label:
        counts = {lab: len(v) for lab, v in sorted(by_label.items())}
        raise ValueError(f"cannot draw {n_per_class} per class: class counts {counts}")
    rng = random.Random(seed)
    out: list[S] = []
    for lab in sorted(by_label):
        out.extend(rng.sample(by_label[lab], n_per_class))
    rng.shuffle(out)
    return out


def _groups(samples: Sequence[Any]) -> list[list[int]]:
    """Indices of samples joined (transitively) by equal qid or equal normalised question."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, s in enumerate(samples):
        for key in (("id", str(s.qid)), ("q", normalize_question(s.question))):
            j = first.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(samples)):
        groups[find(i)].append(i)
    return list(groups.values())


def _targets(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``n * fractions`` (sums to ``n``)."""
    raw = [n * f for f in fractions]
    base = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda k: (base[k] - raw[k], k))
    for k in order[: n - sum(base)]:
        base[k] += 1
    return base


def split_samples(
    samples: Sequence[S],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = True,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, list[S]]:
    """Random splits, disjoint by qid and by normalised question, stratified by label.

    Samples sharing an id or a normalised question form a group that goes whole into one split.
    Per label (a group takes the label of its first sample), groups are shuffled and each goes to
    the split furthest below its target count (``n_label * fraction``, largest-remainder rounded).
    Without duplicates every split holds its target per label exactly.

    Args:
        samples: objects with ``qid`` and ``question`` (and ``label`` when ``stratify``).
        fractions: one fraction per split, summing to 1.
        seed: random seed.
        stratify: balance labels across splits.
        names: split names, one per fraction.

    Returns:
        ``{name: samples}`` in ``names`` order.

    Raises:
        ValueError: on bad fractions or names.
    """
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} split names {tuple(names)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    if len(set(names)) != len(names):
        raise ValueError(f"split names must be unique, got {tuple(names)}")
    rng = random.Random(seed)
    groups = _groups(samples)
    strata: dict[int, list[list[int]]] = defaultdict(list)
    for g in groups:
        strata[_label(samples[g[0]]) if stratify else 0].append(g)
    assigned: dict[str, list[int]] = {n: [] for n in names}
    for key in sorted(strata):
        stratum = strata[key]
        rng.shuffle(stratum)
        targets = _targets(sum(len(g) for g in stratum), fractions)
        counts = [0] * len(names)
        for g in stratum:
            k = max(range(len(names)), key=lambda k: (targets[k] - counts[k], -k))
            counts[k] += len(g)
            assigned[names[k]].extend(g)
    return {n: [samples[i] for i in sorted(idx)] for n, idx in assigned.items()}


@dataclass
class PairLeakage:
    """Overlap between two splits."""

    ids: list[str] = field(default_factory=list)
    """Ids present in both splits (sorted)."""
    questions: list[str] = field(default_factory=list)
    """Normalised questions present in both splits (sorted)."""

    @property
    def n_ids(self) -> int:
        return len(self.ids)

    @property
    def n_questions(self) -> int:
        return len(self.questions)


@dataclass
class LeakageReport:
    """Overlapping ids and normalised questions for every pair of splits."""

    pairs: dict[tuple[str, str], PairLeakage] = field(default_factory=dict)
    """``(split_a, split_b) -> overlap``, one entry per unordered pair."""

    @property
    def n_ids(self) -> int:
        """Total overlapping ids over all pairs."""
        return sum(p.n_ids for p in self.pairs.values())

    @property
    def n_questions(self) -> int:
        """Total overlapping normalised questions over all pairs."""
        return sum(p.n_questions for p in self.pairs.values())

    @property
    def is_clean(self) -> bool:
        return self.n_ids == 0 and self.n_questions == 0

    def __str__(self) -> str:
        if self.is_clean:
            return "no leakage between splits"
        lines = []
        for (a, b), p in self.pairs.items():
            if p.n_ids or p.n_questions:
                lines.append(
                    f"{a}/{b}: {p.n_ids} shared ids (e.g. {p.ids[:3]}), {p.n_questions} shared questions (e.g. {p.questions[:2]})"
                )
        return "; ".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            f"{a}/{b}": {"ids": p.ids, "questions": p.questions} for (a, b), p in self.pairs.items()
        }


def check_leakage(splits: Mapping[str, Sequence[Any]]) -> LeakageReport:
    """Find ids and normalised questions shared by two splits.

    Args:
        splits: ``{name: samples}`` (objects with ``qid`` and ``question``).

    Returns:
        A :class:`LeakageReport` with one entry per pair of splits.
    """
    names = list(splits)
    ids = {n: {str(s.qid) for s in splits[n]} for n in names}
    qs = {n: {normalize_question(s.question) for s in splits[n]} for n in names}
    report = LeakageReport()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            report.pairs[(a, b)] = PairLeakage(
                ids=sorted(ids[a] & ids[b]), questions=sorted(qs[a] & qs[b])
            )
    return report


def assign_splits(
    samples: Sequence[S],
    given: Mapping[str, Sequence[str]],
    allow_leakage: bool = False,
    priority: Sequence[str] = DEFAULT_PRIORITY,
) -> dict[str, list[S]]:
    """Split ``samples`` by given id lists (e.g. the paper's ``*_qids.json``), refusing leakage.

    For each split, the samples whose ``qid`` is listed; when several samples share an id (the
    same question loaded from a train and a test file), the one whose ``split`` attribute equals the
    split name is used, else the first. Overlap = an id listed for two splits, or two splits
    holding the same normalised question.

    Overlap rule with ``allow_leakage=True``: an overlapping item stays only in the split that comes
    first in ``priority`` (default test, then validation, then train) and is dropped from the others,
    so the evaluation split keeps its released list and train loses the duplicates; a warning gives
    the counts. Listed ids without a sample, and samples in no list, are counted in a warning.

    Args:
        samples: objects with ``qid`` and ``question``.
        given: ``{split: ids}``.
        allow_leakage: resolve overlaps by the rule above instead of raising.
        priority: split order for the overlap rule; splits not named come last, in ``given`` order.

    Returns:
        ``{split: samples}`` in ``given`` order, leakage-free.

    Raises:
        LeakageError: on any overlap when ``allow_leakage`` is False (message gives counts per pair).
    """
    by_id: dict[str, list[S]] = defaultdict(list)
    for s in samples:
        by_id[str(s.qid)].append(s)
    out: dict[str, list[S]] = {}
    n_missing = 0
    for name, ids in given.items():
        chosen: list[S] = []
        for qid in dict.fromkeys(str(i) for i in ids):
            cands = by_id.get(qid)
            if not cands:
                n_missing += 1
                continue
            match = [c for c in cands if getattr(c, "split", None) == name]
            chosen.append(match[0] if match else cands[0])
        out[name] = chosen
    if n_missing:
        logger.warning("assign_splits: %d listed ids have no sample", n_missing)
    used = {id(s) for v in out.values() for s in v}
    n_unused = sum(1 for s in samples if id(s) not in used)
    if n_unused:
        logger.info("assign_splits: %d samples are in no split", n_unused)
    report = check_leakage(out)
    if report.is_clean:
        return out
    if not allow_leakage:
        raise LeakageError(
            f"splits overlap: {report.n_ids} shared ids, {report.n_questions} shared normalised questions ({report}); pass allow_leakage=True to keep each overlapping item only in the first split of {tuple(priority)}"
        )
    order = [n for n in priority if n in out] + [n for n in out if n not in priority]
    claimed_ids: set[str] = set()
    claimed_qs: set[str] = set()
    dropped: dict[str, int] = {}
    for name in order:
        kept = []
        for s in out[name]:
            qid, q = str(s.qid), normalize_question(s.question)
            if qid in claimed_ids or q in claimed_qs:
                continue
            kept.append(s)
        dropped[name] = len(out[name]) - len(kept)
        out[name] = kept
        claimed_ids.update(str(s.qid) for s in kept)
        claimed_qs.update(normalize_question(s.question) for s in kept)
    logger.warning(
        "assign_splits: resolved leakage (%d shared ids, %d shared questions) by priority %s; dropped per split: %s",
        report.n_ids,
        report.n_questions,
        order,
        dropped,
    )
    return out
