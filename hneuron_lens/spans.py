"""Token spans: turn a judged (question, response) pair into token ids and region positions.

The model sees the conversation rendered by its own chat template (base models without a
template get the paper's base prompt, ``question + "\\nAnswer: " + response``, after the BOS
token the tokenizer adds by itself, as in generation). Regions are found by **character
offsets** of the tokenised text, never by comparing decoded strings:

* ``input``: every token that ends before the response starts (the prompt);
* ``output``: the tokens that overlap the response's characters;
* ``answer``: the tokens that overlap the answer phrase's characters inside the response.

The answer phrase comes, in order of preference, from ``JudgedSample.answer_text`` (an exact
substring of the response), from ``answer_tokens`` (the release format: tokenizer pieces of the
model that wrote the response, re-joined into text), or from the gold ``aliases`` (correct
responses). If none is found the sample is reported (count and reason), and only with
``SpanConfig(fallback="response")`` does the whole response stand in for the answer.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from hneuron_lens.data.records import JudgedSample

logger = logging.getLogger(__name__)

_FALLBACKS = ("none", "response")


@dataclass(frozen=True)
class SpanConfig:
    """How samples are rendered and how their answer span is found."""

    fallback: str = "none"
    """``"none"``: samples whose answer is not found are skipped and reported;
    ``"response"``: the whole response becomes the answer span (recorded as such)."""
    suffix: str | None = None
    """Text appended (after a space) to the question in the user turn, e.g. the collection
    suffix "Respond with the answer only, without any explanation."."""
    system: str | None = None
    """System message for chat templates (``None``: none is added; the template may add its own)."""
    chat: bool | None = None
    """Use the chat template (``None``: when the tokenizer has one; else the base prompt)."""
    use_aliases: bool = True
    """Look for gold aliases in the response when no answer text/tokens are given."""

    def __post_init__(self) -> None:
        if self.fallback not in _FALLBACKS:
            raise ValueError(
                f"SpanConfig.fallback must be one of {_FALLBACKS}, got {self.fallback!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpanConfig:
        return cls(**d)


@dataclass(frozen=True)
class TokenizedSample:
    """One sample as token ids with its region boundaries (token indices, end exclusive)."""

    sample_id: str
    input_ids: list[int]
    prompt_end: int
    """Index of the first response token (tokens ``[0, prompt_end)`` are the ``input`` region)."""
    response_end: int
    """One past the last response token (``[prompt_end, response_end)`` is ``output``)."""
    answer: tuple[int, int] | None
    """``(start, end)`` token indices of the answer span, or ``None``."""
    span_method: str
    """How the answer was found: ``answer_text``, ``answer_tokens``, ``alias``, ``response``."""
    label: int

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class SpanReport:
    """What :func:`tokenize_samples` did: counts per method and every skipped sample with why."""

    n_in: int = 0
    n_ok: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_in": self.n_in,
            "n_ok": self.n_ok,
            "by_method": dict(self.by_method),
            "skipped_by_reason": self.skipped_by_reason,
            "skipped": [list(s) for s in self.skipped],
        }

    def __str__(self) -> str:
        lines = [f"spans: {self.n_ok}/{self.n_in} samples located"]
        for method, n in sorted(self.by_method.items()):
            lines.append(f"  by {method:<14} {n}")
        for reason, n in sorted(self.skipped_by_reason.items()):
            lines.append(f"  skipped ({reason}): {n}")
        return "\n".join(lines)


class SpanError(ValueError):
    """A sample cannot be rendered or its answer span cannot be located."""


def pad_token_id(tokenizer: Any, fallback: int = 0) -> int:
    """The id to pad batches with: the tokenizer's pad, else eos, else bos, else ``fallback``.

    Padded positions are masked everywhere, so the choice never changes a result (tested); it
    only has to be a valid id.
    """
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return int(fallback)


def chat_template_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's chat template (``"none"`` when it has none)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return "none"
    if isinstance(template, dict):
        template = repr(sorted(template.items()))
    return hashlib.sha256(str(template).encode()).hexdigest()


def _user_content(question: str, cfg: SpanConfig) -> str:
    return question if not cfg.suffix else f"{question} {cfg.suffix}"


def _uses_chat(tokenizer: Any, cfg: SpanConfig) -> bool:
    return cfg.chat if cfg.chat is not None else bool(getattr(tokenizer, "chat_template", None))


def base_bos_ids(tokenizer: Any) -> list[int]:
    """The BOS id a base prompt starts with: ``[bos]`` when the tokenizer adds one by itself.

    Chat templates write their own BOS; a base prompt gets the one the tokenizer would add with
    its special tokens (Gemma, Llama), as :func:`hneuron_lens.generation.build_prompt_ids` does
    when it generates, so teacher-forced CETT sees the prompt the model answered.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if not isinstance(bos, int):
        return []
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    return [bos] if ids[:1] == [bos] else []


def render(tokenizer: Any, question: str, response: str, cfg: SpanConfig) -> tuple[str, int, int]:
    """Render a (question, response) pair to text.

    Returns:
        ``(text, response_start, response_end)`` with character offsets of the response in text.
    """
    use_chat = _uses_chat(tokenizer, cfg)
    if not use_chat:
        prompt = f"{_user_content(question, cfg)}\nAnswer: "
        return prompt + response, len(prompt), len(prompt) + len(response)
    messages = []
    if cfg.system is not None:
        messages.append({"role": "system", "content": cfg.system})
    messages.append({"role": "user", "content": _user_content(question, cfg)})
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], tokenize=False
    )
    if full.startswith(prompt) and full[len(prompt) :].startswith(response):
        start = len(prompt)
    else:
        # Templates that re-render earlier turns (or trim the response) : find the last occurrence.
        start = full.rfind(response)
        if start < len(prompt) - len(response) or start < 0:
            raise SpanError("response text not found in the rendered chat template")
    return full, start, start + len(response)


def join_pieces(pieces: tuple[str, ...] | list[str]) -> str:
    """Re-join tokenizer pieces (SentencePiece ``▁`` / byte-level ``Ġ``, ``Ċ`` markers) into text."""
    text = "".join(pieces).replace("▁", " ").replace("Ġ", " ").replace("Ċ", "\n")
    return text.strip()


def _find_ci(haystack: str, needle: str) -> int:
    """Index of ``needle`` in ``haystack``: exact first, then case-insensitive; -1 if absent."""
    if not needle:
        return -1
    i = haystack.find(needle)
    if i >= 0:
        return i
    m = re.search(re.escape(needle), haystack, flags=re.IGNORECASE)
    return m.start() if m else -1


def locate_answer_chars(sample: JudgedSample, cfg: SpanConfig) -> tuple[int, int, str] | None:
    """Character span ``(start, end, method)`` of the answer inside ``sample.response``, or None."""
    response = sample.response
    if sample.answer_text:
        i = _find_ci(response, sample.answer_text)
        if i >= 0:
            return i, i + len(sample.answer_text), "answer_text"
    if sample.answer_tokens:
        text = join_pieces(sample.answer_tokens)
        i = _find_ci(response, text)
        if i >= 0:
            return i, i + len(text), "answer_tokens"
    if cfg.use_aliases and sample.aliases:
        from hneuron_lens.answer import find_alias

        found = find_alias(response, [a.strip() for a in sample.aliases])
        if found is not None and found.method == "alias":  # whole words only
            return found.start, found.end, "alias"
    return None


def _tokens_overlapping(
    offsets: list[tuple[int, int]], start: int, end: int
) -> tuple[int, int] | None:
    """First and one-past-last token whose character span overlaps ``[start, end)``."""
    idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    if not idx:
        return None
    return idx[0], idx[-1] + 1


def tokenize_sample(tokenizer: Any, sample: JudgedSample, cfg: SpanConfig) -> TokenizedSample:
    """Tokenise one sample and locate its regions by character offsets.

    Raises:
        SpanError: the response is empty, the tokenizer gives no offsets, or the answer is not
            found and ``cfg.fallback == "none"``.
    """
    if not sample.response.strip():
        raise SpanError("empty response")
    text, r_start, r_end = render(tokenizer, sample.question, sample.response, cfg)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as err:
        raise SpanError("tokenizer gives no offset mapping (use a fast tokenizer)") from err
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if not _uses_chat(tokenizer, cfg):
        bos = base_bos_ids(tokenizer)
        ids, offsets = bos + ids, [(0, 0)] * len(bos) + offsets
    response_tokens = _tokens_overlapping(offsets, r_start, r_end)
    if response_tokens is None:
        raise SpanError("response has no tokens")
    found = locate_answer_chars(sample, cfg)
    if found is not None:
        a_start, a_end, method = found
        answer = _tokens_overlapping(offsets, r_start + a_start, r_start + a_end)
        if answer is None:
            raise SpanError("answer has no tokens")
    elif cfg.fallback == "response":
        answer, method = response_tokens, "response"
    else:
        raise SpanError("answer not found in response")
    return TokenizedSample(
        sample_id=sample.qid,
        input_ids=ids,
        prompt_end=response_tokens[0],
        response_end=response_tokens[1],
        answer=answer,
        span_method=method,
        label=sample.label,
    )


def tokenize_samples(
    tokenizer: Any, samples: list[JudgedSample], cfg: SpanConfig | None = None
) -> tuple[list[TokenizedSample], SpanReport]:
    """Tokenise many samples; samples that fail are skipped and listed in the report with why.

    Example:
        >>> from hneuron_lens.testing import tiny_tokenizer
        >>> from hneuron_lens.data import JudgedSample
        >>> s = JudgedSample("q1", "Capital of France?", "It is Paris.", 0, answer_text="Paris")
        >>> toks, report = tokenize_samples(tiny_tokenizer(), [s])
        >>> report.n_ok, toks[0].span_method
        (1, 'answer_text')
    """
    cfg = cfg or SpanConfig()
    report = SpanReport(n_in=len(samples))
    out: list[TokenizedSample] = []
    for sample in samples:
        try:
            tok = tokenize_sample(tokenizer, sample, cfg)
        except SpanError as err:
            report.skipped.append((sample.qid, str(err)))
            continue
        out.append(tok)
        report.by_method[tok.span_method] = report.by_method.get(tok.span_method, 0) + 1
    report.n_ok = len(out)
    if report.skipped:
        logger.warning(
            "span location skipped %d of %d samples: %s",
            len(report.skipped),
            report.n_in,
            report.skipped_by_reason,
        )
    return out, report
