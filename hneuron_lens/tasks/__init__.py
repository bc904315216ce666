"""Behaviour tasks for intervention sweeps (H-Neurons paper, Gao et al. 2025, section 4).

Each task turns items into prompts and scores responses into per-item compliance; see
:class:`~hneuron_lens.tasks.base.Task`.
"""

from hneuron_lens.tasks.base import ItemResult, LLMJudgeFn, Messages, Task
from hneuron_lens.tasks.faitheval import (
    FaithEvalTask,
    ParsedChoice,
    faitheval_items,
    format_mc_prompt,
    load_faitheval,
    parse_choice,
)
from hneuron_lens.tasks.falseqa import (
    PREMISE_REJECTION_PATTERNS,
    FalseQAItem,
    FalseQATask,
    load_falseqa,
    premise_rejection,
)
from hneuron_lens.tasks.jailbreak import (
    REFUSAL_PATTERNS,
    JailbreakItem,
    JailbreakTask,
    load_forbidden_questions,
    load_jailbreak_templates,
    refusal_phrase,
    with_templates,
)
from hneuron_lens.tasks.qa import QATask
from hneuron_lens.tasks.sycophancy import SycophancyTask

__all__ = [
    "ItemResult",
    "LLMJudgeFn",
    "Messages",
    "Task",
    "FalseQAItem",
    "FalseQATask",
    "PREMISE_REJECTION_PATTERNS",
    "load_falseqa",
    "premise_rejection",
    "FaithEvalTask",
    "ParsedChoice",
    "faitheval_items",
    "format_mc_prompt",
    "load_faitheval",
    "parse_choice",
    "JailbreakItem",
    "JailbreakTask",
    "REFUSAL_PATTERNS",
    "load_forbidden_questions",
    "load_jailbreak_templates",
    "refusal_phrase",
    "with_templates",
    "QATask",
    "SycophancyTask",
]
