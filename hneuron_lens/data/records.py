"""Typed records that flow through the pipeline: questions -> responses -> judged samples.

Labels follow the probe's convention: ``HALLUCINATED = 1`` (the positive class, the paper's
"f" = consistently wrong) and ``FAITHFUL = 0`` (the paper's "t" = consistently right).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FAITHFUL = 0
HALLUCINATED = 1


@dataclass(frozen=True)
class QAItem:
    """One open-domain question with its gold answer aliases (TriviaQA / NQ-Open style)."""

    qid: str
    """Stable question id, unique within its dataset."""
    question: str
    """The question text as it is shown to the model."""
    aliases: tuple[str, ...] = ()
    """Gold answers; any alias counts as correct. Empty for fabricated-entity questions."""
    source: str = ""
    """Dataset name (``"builtin"``, ``"triviaqa"``, a file name...)."""
    kind: str = "qa"
    """``"qa"`` for answerable questions; ``"nonexistent"`` for questions about invented
    entities, where any confident answer is a hallucination (the paper's NonExist)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question (MMLU, MedQA, MedMCQA, FaithEval...)."""

    qid: str
    question: str
    options: tuple[str, ...]
    """Option texts in display order (letters A, B, C... are assigned by position)."""
    answer_index: int
    """Index into ``options`` of the gold option."""
    source: str = ""
    context: str = ""
    """Optional passage shown before the question (FaithEval-style counterfactual context)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JudgedSample:
    """A question with one model response and its hallucination label: the unit CETT is computed on.

    ``answer_text`` (a substring of ``response``) or ``answer_tokens`` (tokenizer pieces of the
    model that wrote the response, the paper's release format) say where the answer is; the
    span module turns either into token positions for the model being analysed.
    """

    qid: str
    question: str
    response: str
    label: int
    """``HALLUCINATED`` (1) or ``FAITHFUL`` (0)."""
    answer_text: str | None = None
    """The answer phrase as it appears in ``response`` (exact substring), when known."""
    answer_tokens: tuple[str, ...] | None = None
    """Answer pieces in the writer model's tokenizer (release files), when known."""
    aliases: tuple[str, ...] = ()
    """Gold aliases, when known (used to find the answer in correct responses)."""
    source: str = ""
    split: str | None = None
    """``"train"`` / ``"validation"`` / ``"test"`` when the split is fixed by the data."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Free-form provenance (judge votes, span method, file and line...)."""

    def __post_init__(self) -> None:
        if self.label not in (FAITHFUL, HALLUCINATED):
            raise ValueError(f"JudgedSample {self.qid!r}: label must be 0 or 1, got {self.label!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
