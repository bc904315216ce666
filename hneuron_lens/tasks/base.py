"""The task protocol the intervention sweep runs: prompts in, per-item compliance out.

A :class:`Task` owns a list of items, builds each item's prompt (a string or chat messages, one
per turn for multi-turn tasks such as sycophancy) and scores the model's responses into an
:class:`ItemResult`. ``compliant`` is the behaviour the H-Neurons paper (Gao et al. 2025,
arXiv:2512.01797, section 4) measures: accepting a false premise (FalseQA), following a
counterfactual context (FaithEval), caving to push-back (Sycophancy), answering a harmful request
(Jailbreak). :class:`~hneuron_lens.tasks.qa.QATask` uses the same slot for "correct" (accuracy).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

Messages = list[dict[str, str]]
"""Chat messages: ``[{"role": "user" | "assistant" | "system", "content": str}, ...]``."""

LLMJudgeFn = Callable[[Any, str], "bool | None"]
"""Optional LLM judge: ``fn(item, response) -> compliant`` (``None`` = could not tell).

Off by default everywhere; wrap e.g. :class:`hneuron_lens.judge.LLMJudge` or any callable."""

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class ItemResult:
    """The score of one item's response(s)."""

    compliant: bool | None
    """The task's behaviour occurred (see the task's docstring); ``None`` = not applicable or
    not decidable (e.g. an unparseable choice, or an initially wrong sycophancy answer)."""
    parse_ok: bool = True
    """False when the response could not be read (no letter or option found, empty text)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Why: the matched pattern, the parsed letter, the judge labels..."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemResult:
        return cls(d.get("compliant"), bool(d.get("parse_ok", True)), dict(d.get("detail") or {}))


class Task(ABC, Generic[ItemT]):
    """Base class: subclasses set :attr:`name` and :attr:`metric` and implement
    :meth:`build_prompt`, :meth:`score` and :meth:`item_id`."""

    name: str = "task"
    """Short name used in reports and file names."""
    metric: str = "compliance"
    """What ``ItemResult.compliant`` means for this task (``"compliance"``, ``"accuracy"``...)."""
    n_turns: int = 1
    """Number of model turns per item (2 for sycophancy)."""

    def __init__(self, items: Sequence[ItemT]) -> None:
        self.items: list[ItemT] = list(items)
        if not self.items:
            raise ValueError(f"{type(self).__name__} needs at least one item")
        ids = [self.item_id(i) for i in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{type(self).__name__}: item ids are not unique")

    def __len__(self) -> int:
        return len(self.items)

    def item_id(self, item: ItemT) -> str:
        """A stable id for ``item`` (its ``qid`` by default)."""
        return str(item.qid)  # type: ignore[attr-defined]

    @abstractmethod
    def build_prompt(self, item: ItemT, history: Sequence[str] = ()) -> str | Messages:
        """The prompt for the next turn; ``history`` holds the model's earlier replies."""

    @abstractmethod
    def score(self, item: ItemT, responses: str | Sequence[str]) -> ItemResult:
        """Score the model's response (or one response per turn)."""

    def settings(self) -> dict[str, Any]:
        """Task settings that change prompts or scores (part of the sweep's fingerprint)."""
        return {}

    def fingerprint(self) -> str:
        """Hash of the task's name, settings, item ids and prompts."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {"name": self.name, "settings": self.settings()}, sort_keys=True, default=str
            ).encode()
        )
        for item in self.items:
            h.update(self.item_id(item).encode())
            if self.n_turns == 1:
                h.update(json.dumps(self.build_prompt(item), default=str).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "n_items": len(self.items),
            "n_turns": self.n_turns,
            "settings": self.settings(),
            "fingerprint": self.fingerprint(),
        }


def as_responses(responses: str | Sequence[str]) -> list[str]:
    """One response or one per turn -> list of responses."""
    return [responses] if isinstance(responses, str) else list(responses)


def user(content: str) -> Messages:
    """A single user turn."""
    return [{"role": "user", "content": content}]
