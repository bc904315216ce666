"""Locate the answer phrase inside a response, as exact character offsets.

H-Neurons (Gao et al., arXiv:2512.01797) computes CETT over the *answer tokens* of a response,
which the paper marks with GPT-4o. This module does it with rules, on text; the span module
turns the character span into token positions of the model being analysed.

* Correct (faithful) responses: the occurrence of a gold alias. Matching is word-based and
  case/punctuation-insensitive (the words of :func:`hneuron_lens.judge.word_spans`), then mapped
  back to exact offsets in the original response. The longest matching alias wins, then the
  earliest occurrence; a match with articles kept ("The Beatles") beats one without. When an
  alias only occurs inside a longer word ("Paris" in "Parisian"), the span is widened to the
  enclosing word(s) (method ``"alias_substring"``).
* Hallucinated responses (and correct ones without any alias, when ``fallback=True``): the
  shortest answer phrase (method ``"phrase"``): drop an echo of the prompt suffix, keep the
  first non-empty line and the first sentence, cut explanations ("- because...", "(...)",
  ", which..."), strip lead-ins ("The answer is", "Answer:", "It is", "I think it's"),
  quotes, markdown emphasis and trailing punctuation.

Every returned :class:`AnswerLocation` satisfies ``response[start:end] == text`` and is non-empty.

Known limitations: answers that begin like a lead-in lose it ("It Is Well with My Soul" ->
"Well with My Soul"), and answers that contain a sentence break after a non-initial word
("Yes. No.") are cut at the first sentence.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from hneuron_lens.data.records import FAITHFUL, HALLUCINATED
from hneuron_lens.judge import _ARTICLES, normalize_words, word_spans

logger = logging.getLogger(__name__)

METHODS = ("alias", "alias_substring", "phrase", "llm")

DEFAULT_LEAD_PATTERNS: tuple[str, ...] = (
    r"[-+*\u2022]\s+",
    r"(?:so|well|okay|ok)\s*,?\s+",
    r"(?:i think|i believe|i guess|i'd say|i would say|i'm fairly sure|probably|perhaps|maybe)"
    r"\s*,?\s*(?:that\s+)?",
    r"(?:the\s+|my\s+)?(?:final\s+|correct\s+|short\s+|best\s+)?answer(?:\s+(?:is|would be))?"
    r"\s*(?:[:\-\u2013\u2014]\s*|\s+)",
    r"(?:it|that|this|that one)\s*(?:'s|\u2019s|\s+is|\s+was|\s+would be|\s+might be)\s+",
)
"""Lead-ins stripped from the start of a hallucinated answer, repeatedly, case-insensitively.
Each must be followed by a non-empty remainder, so a bare "It is" is kept."""

DEFAULT_ECHO_PATTERNS: tuple[str, ...] = (
    r"respond with the answer only,?\s*without any explanation\.?",
    r"answer only\s*:",
)
"""Echoes of the prompt suffix (the TriviaQA collection prompt) removed from the response."""

_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb`"
_LEAD_STRIP = _QUOTES + "*_#>\u2022 \t\r\n"
_TRAIL_STRIP = _QUOTES + "*_.,;:!?\u2026 \t\r\n"
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mt ft jr sr vs etc no co inc ltd prof gen col capt lt sgt rev hon sen gov "
    "ave blvd dept est fig approx".split()
)
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)]*(?=\s)")
_EXPLANATION = re.compile(
    r"\s+[-\u2013\u2014]\s+|\s*;\s|\s*\(|,\s+(?:which|who|where|because|since|as|but)\b"
    r"|\s+because\b|\s+since\b",
    re.IGNORECASE,
)
_INITIALISM_END = re.compile(r"(?:(?<![^\W\d_])[^\W\d_]\.){2,}$")


@dataclass
class PhraseConfig:
    """How the answer phrase of a hallucinated response is cut out."""

    lead_patterns: tuple[str, ...] = DEFAULT_LEAD_PATTERNS
    """Regexes stripped from the start of the phrase (case-insensitive, repeated)."""
    echo_patterns: tuple[str, ...] = DEFAULT_ECHO_PATTERNS
    """Regexes for an echo of the prompt suffix: removed at the start, cut from where they occur
    elsewhere."""
    first_sentence_only: bool = True
    """Keep only the first non-empty line and its first sentence."""
    cut_explanations: bool = True
    """Cut at a parenthesis, a spaced dash, a semicolon or ", which/because/..."."""

    def __post_init__(self) -> None:
        self.lead_patterns = tuple(self.lead_patterns)
        self.echo_patterns = tuple(self.echo_patterns)
        for p in self.lead_patterns + self.echo_patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"PhraseConfig: invalid regex {p!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhraseConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"PhraseConfig: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class AnswerLocation:
    """Where the answer phrase lies in a response."""

    start: int
    """Start character offset in the response."""
    end: int
    """End character offset (exclusive)."""
    text: str
    """``response[start:end]``."""
    method: str
    """``"alias"``, ``"alias_substring"``, ``"phrase"`` or ``"llm"`` (:class:`LLMSpanTagger`)."""
    matched_alias: str | None = None
    """The alias found (alias methods only)."""

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"AnswerLocation: need 0 <= start < end, got {self.start}, {self.end}")
        if len(self.text) != self.end - self.start:
            raise ValueError("AnswerLocation: text length does not match the span")
        if self.method not in METHODS:
            raise ValueError(f"AnswerLocation.method must be one of {METHODS}")

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnswerLocation:
        return cls(**dict(d))


# ---------------------------------------------------------------------------------------------
# Alias occurrences
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WordIndex:
    """Normalised words of a text joined by spaces, with each word's place in the original."""

    norm: str
    norm_starts: list[int]
    spans: list[tuple[int, int]]


def _word_index(text: str, *, drop_articles: bool) -> _WordIndex:
    norm_parts: list[str] = []
    norm_starts: list[int] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for s, e in word_spans(text):
        w = text[s:e].lower()
        if drop_articles and w in _ARTICLES:
            continue
        norm_starts.append(pos)
        norm_parts.append(w)
        spans.append((s, e))
        pos += len(w) + 1
    return _WordIndex(" ".join(norm_parts), norm_starts, spans)


def _find_in_index(idx: _WordIndex, needle: str, *, whole_words: bool) -> tuple[int, int] | None:
    """First occurrence of ``needle`` in ``idx.norm``, widened to whole words, as original offsets."""
    if not needle or not idx.norm:
        return None
    if whole_words:
        # " needle " found at padded position q means the needle starts at norm position q.
        q = f" {idx.norm} ".find(f" {needle} ")
    else:
        q = idx.norm.find(needle)
    if q < 0:
        return None
    first = bisect.bisect_right(idx.norm_starts, q) - 1
    last = bisect.bisect_right(idx.norm_starts, q + len(needle) - 1) - 1
    return idx.spans[first][0], idx.spans[last][1]


def find_alias(response: str, aliases: Sequence[str]) -> AnswerLocation | None:
    """Best occurrence of a gold alias in ``response`` (see the module docstring for the order).

    Example:
        >>> find_alias("I'd say the EIFFEL tower.", ["Eiffel Tower", "tower"]).text
        'EIFFEL tower'
    """
    with_articles = _word_index(response, drop_articles=False)
    without_articles = _word_index(response, drop_articles=True)
    prepared = []
    for i, alias in enumerate(aliases):
        full = " ".join(normalize_words(alias, drop_articles=False))
        bare = " ".join(normalize_words(alias, drop_articles=True))
        if bare:
            prepared.append((-len(bare), i, alias, full, bare))
    prepared.sort()
    for whole_words, method in ((True, "alias"), (False, "alias_substring")):
        best: tuple[tuple[int, int, int], tuple[int, int], str] | None = None
        for neg_len, _i, alias, full, bare in prepared:
            if best is not None and -neg_len < -best[0][0]:
                break  # aliases are sorted longest first: no longer match can follow
            for rank, idx, needle in ((0, with_articles, full), (1, without_articles, bare)):
                span = _find_in_index(idx, needle, whole_words=whole_words)
                if span is not None:
                    key = (neg_len, rank, span[0])
                    if best is None or key < best[0]:
                        best = (key, span, alias)
                    break
        if best is not None:
            (start, end), alias = best[1], best[2]
            return AnswerLocation(start, end, response[start:end], method, alias)
    return None


# ---------------------------------------------------------------------------------------------
# Answer phrase of a free-form response
# ---------------------------------------------------------------------------------------------


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` past leading quotes/markup and trailing punctuation."""
    while start < end and text[start] in _LEAD_STRIP:
        start += 1
    while start < end and text[end - 1] in _TRAIL_STRIP:
        if text[end - 1] == "." and _INITIALISM_END.search(text[start:end]):
            break  # keep the period of "D.C." / "U.S."
        end -= 1
    if (
        start < end
        and text[end - 1] == ")"
        and text.count("(", start, end) < text.count(")", start, end)
    ):
        end -= 1
    return start, end


def _has_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _first_line(text: str, start: int, end: int) -> tuple[int, int]:
    """The first line that holds a letter or digit (or the whole span if none does)."""
    pos = start
    while pos < end:
        newline = text.find("\n", pos, end)
        line_end = newline if newline >= 0 else end
        if _has_word(text[pos:line_end]):
            return pos, line_end
        pos = line_end + 1
    return start, end


def _first_sentence(text: str, start: int, end: int) -> tuple[int, int]:
    for m in _SENTENCE_END.finditer(text, start, end):
        before = text[start : m.start()]
        words = re.findall(r"[^\W_]+", before)
        if not words:
            continue
        last = words[-1]
        if (len(last) == 1 and last.isalpha()) or last.lower() in _ABBREVIATIONS:
            continue  # an initial ("J. R. R. Tolkien") or an abbreviation ("St. Louis")
        nxt = text[m.end() : end].lstrip()
        if nxt and nxt[0].islower():
            continue  # not a sentence start
        return start, m.end()
    return start, end


def _cut_explanation(text: str, start: int, end: int) -> tuple[int, int]:
    for m in _EXPLANATION.finditer(text, start, end):
        if _has_word(text[start : m.start()]):
            return start, m.start()
    return start, end


def _strip_lead(text: str, start: int, end: int, patterns: tuple[str, ...]) -> tuple[int, int]:
    changed = True
    while changed:
        changed = False
        for p in patterns:
            m = re.compile(p, re.IGNORECASE).match(text, start, end)
            if m and m.end() > start and _has_word(text[m.end() : end]):
                start = m.end()
                changed = True
    return start, end


def _strip_echo(text: str, start: int, end: int, patterns: tuple[str, ...]) -> tuple[int, int]:
    for p in patterns:
        rx = re.compile(p, re.IGNORECASE)
        m = rx.match(text, start, end)
        while m and m.end() > start:
            start = m.end()
            while start < end and text[start].isspace():
                start += 1
            m = rx.match(text, start, end)
        m = rx.search(text, start, end)
        if m and _has_word(text[start : m.start()]):
            end = m.start()
    return start, end


def extract_phrase(response: str, cfg: PhraseConfig | None = None) -> AnswerLocation | None:
    """The shortest answer phrase of a free-form response, with exact offsets.

    Returns:
        An :class:`AnswerLocation` with ``method="phrase"``, or ``None`` when nothing but
        whitespace, punctuation and lead-ins remains.

    Example:
        >>> extract_phrase('The answer is: "Lyon". It is in France.').text
        'Lyon'
    """
    cfg = cfg or PhraseConfig()
    start, end = _strip_echo(response, 0, len(response), cfg.echo_patterns)
    if cfg.first_sentence_only:
        start, end = _first_line(response, start, end)
    for _ in range(8):  # each pass only shrinks the span; stop when it no longer changes
        before = (start, end)
        start, end = _strip(response, start, end)
        start, end = _strip_lead(response, start, end, cfg.lead_patterns)
        start, end = _strip(response, start, end)
        if cfg.first_sentence_only:
            start, end = _first_sentence(response, start, end)
        if cfg.cut_explanations:
            start, end = _cut_explanation(response, start, end)
        start, end = _strip(response, start, end)
        if (start, end) == before:
            break
    if start >= end:
        return None
    return AnswerLocation(start, end, response[start:end], "phrase")


def _is_correct_label(label: int | str) -> bool:
    if isinstance(label, str):
        key = label.strip().lower()
        if key in ("correct", "faithful", "true", "t"):
            return True
        if key in ("incorrect", "hallucinated", "false", "f"):
            return False
        raise ValueError(f"locate_answer_text: unknown label {label!r}")
    if label == FAITHFUL:
        return True
    if label == HALLUCINATED:
        return False
    raise ValueError(
        f"locate_answer_text: label must be FAITHFUL (0) or HALLUCINATED (1), got {label!r}"
    )


def locate_answer_text(
    response: str,
    aliases: Sequence[str],
    label: int | str,
    cfg: PhraseConfig | None = None,
    *,
    fallback: bool = True,
) -> AnswerLocation | None:
    """Find the answer phrase in ``response`` as a character span.

    Args:
        response: The model's response.
        aliases: Gold aliases (used for correct responses).
        label: ``FAITHFUL``/``"correct"`` or ``HALLUCINATED``/``"incorrect"``.
        cfg: Phrase-cutting settings for hallucinated responses.
        fallback: For a correct response with no alias in it (an LLM judge's verdict), return the
            answer phrase instead of ``None``.

    Returns:
        An :class:`AnswerLocation` (``response[loc.start:loc.end] == loc.text``, non-empty) or
        ``None`` when no answer could be located.

    Example:
        >>> locate_answer_text("It's Paris, France.", ["Paris"], "correct").span
        (5, 10)
        >>> locate_answer_text("I think it's Lyon.", ["Paris"], "incorrect").text
        'Lyon'
    """
    if _is_correct_label(label):
        found = find_alias(response, aliases)
        if found is not None or not fallback:
            return found
    return extract_phrase(response, cfg)


# --------------------------------------------------------------------------------------------
# Optional LLM span tagger (the paper located answer tokens with GPT-4o)
# --------------------------------------------------------------------------------------------

SPAN_PROMPTS: dict[str, str] = {
    "v1": (
        "Below are a QUESTION and a model's RESPONSE. Copy, character for character, the shortest "
        "contiguous part of the RESPONSE that states the answer to the QUESTION. Reply with that "
        "text only, without quotes or comments, or with NONE if the response states no answer.\n"
        "QUESTION: {question}\nRESPONSE: {response}"
    ),
}
"""Versioned span-tagging prompts; the version is part of every tagger's settings."""

_QUOTES = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’"}


class UnparseableSpan(ValueError):
    """The tagger's reply is not one contiguous substring of the response (nor NONE)."""


def parse_span_reply(reply: str, response: str) -> tuple[int, int] | None:
    """Strict parser: the reply must be NONE or an exact, contiguous substring of ``response``.

    One pair of surrounding quotes and surrounding whitespace are removed; nothing else is
    forgiven (no case folding, no partial matches, no multi-line replies). The first occurrence
    is used.

    Raises:
        UnparseableSpan: empty, multi-line, or not found verbatim in the response.

    Example:
        >>> parse_span_reply('"Paris"', "It is Paris.")
        (6, 11)
        >>> parse_span_reply("NONE", "I don't know.") is None
        True
    """
    text = reply.strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    if text.upper().rstrip(".") == "NONE":
        return None
    if not text or "\n" in text:
        raise UnparseableSpan(f"reply is empty or spans several lines: {reply!r}")
    i = response.find(text)
    if i < 0:
        raise UnparseableSpan(f"reply is not a contiguous substring of the response: {reply!r}")
    return i, i + len(text)


class LLMSpanTagger:
    """Locate the answer phrase with an LLM behind an OpenAI-compatible endpoint (off by default).

    Transport, retries and API-key handling are :class:`hneuron_lens.llm.ChatClient`'s, as for
    :class:`~hneuron_lens.judge.LLMJudge` (the key is read from ``api_key_env`` at call time, never
    stored, never sent to another host). Replies go through :func:`parse_span_reply`;
    ``n_unparseable`` counts the replies it refused.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        prompt_version: str = "v1",
        max_retries: int = 3,
        timeout: float = 30.0,
    ) -> None:
        from hneuron_lens.llm import ChatClient

        if prompt_version not in SPAN_PROMPTS:
            raise ValueError(
                f"unknown span prompt version {prompt_version!r}; have {sorted(SPAN_PROMPTS)}"
            )
        self.prompt_version = prompt_version
        self.n_unparseable = 0
        self._client = ChatClient(
            base_url, model, api_key_env=api_key_env, max_retries=max_retries, timeout=timeout
        )

    def tag(self, question: str, response: str) -> AnswerLocation | None:
        """The answer's location in ``response``; ``None`` for NONE or an unparseable reply."""
        prompt = SPAN_PROMPTS[self.prompt_version].format(question=question, response=response)
        reply = self._client.complete([{"role": "user", "content": prompt}])
        try:
            span = parse_span_reply(reply, response)
        except UnparseableSpan as err:
            self.n_unparseable += 1
            logger.warning("LLM span tagger: %s", err)
            return None
        if span is None:
            return None
        return AnswerLocation(span[0], span[1], response[span[0] : span[1]], "llm")
