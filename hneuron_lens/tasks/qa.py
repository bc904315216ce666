"""QA accuracy under intervention: the capability cost of scaling neurons.

The H-Neurons paper (Gao et al. 2025, arXiv:2512.01797) checks that suppressing H-Neurons does
not destroy the model's knowledge, and uses accuracy with the neurons suppressed to pick the
probe's regularisation C. ``compliant`` here means *correct* (rule judge
:func:`hneuron_lens.judge.judge_response`; refusals and hedges are not correct).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hneuron_lens.data.records import QAItem
from hneuron_lens.tasks.base import ItemResult, Messages, Task, as_responses, user

DEFAULT_QA_SUFFIX = "Respond with the answer only, without any explanation."
"""The paper's answer instruction."""


class QATask(Task[QAItem]):
    """Accuracy on answerable QA items (greedy decoding recommended).

    Args:
        items: QA items with aliases (``kind="nonexistent"`` items are dropped).
        suffix: instruction appended to each question.
    """

    name = "qa"
    metric = "accuracy"

    def __init__(self, items: Sequence[QAItem], suffix: str = DEFAULT_QA_SUFFIX) -> None:
        super().__init__([i for i in items if i.kind == "qa" and i.aliases])
        self.suffix = suffix

    def build_prompt(self, item: QAItem, history: Sequence[str] = ()) -> Messages:
        return user(f"{item.question} {self.suffix}".strip())

    def score(self, item: QAItem, responses: str | Sequence[str]) -> ItemResult:
        from hneuron_lens.judge import judge_response

        text = as_responses(responses)[-1]
        j = judge_response(text, item.aliases)
        return ItemResult(
            j.label == "correct", bool(text.strip()), {"label": j.label, "alias": j.matched_alias}
        )

    def settings(self) -> dict[str, Any]:
        return {"suffix": self.suffix}
