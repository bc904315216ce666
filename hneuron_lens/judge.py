"""Judging sampled answers: rule judge, refusal detection, optional LLM judge, consistency filter.

Stage 1 of H-Neurons (Gao et al., arXiv:2512.01797, section 3.1): sample k answers per question,
judge each against the gold aliases, keep questions answered correctly k/k (faithful) or wrongly
k/k (hallucinated), drop refusals and mixed questions, and keep the modal response.

Rule judge, in words: normalise the response and every alias (lower case, punctuation and symbols
to spaces, articles removed, whitespace collapsed: the TriviaQA flavour of SQuAD's
``normalize_answer``) and look for the alias in the response:

* ``"exact"``: the normalised response equals a normalised alias;
* ``"contains"``: a normalised alias occurs in the normalised response on word boundaries
  ("paris" in "it is paris");
* ``"substring_only"``: an alias occurs only inside a longer word ("paris" in "parisian",
  "1" in "1945"). Reported separately; it counts as correct only when
  :attr:`JudgeConfig.substring_counts_as_correct` is set (default: not correct, but counted).

A response that matches a refusal pattern (:class:`RefusalConfig`) gets its own label,
``"refusal"``. Questions of ``kind="nonexistent"`` (invented entities, no aliases) count any
non-refusal answer as a hallucination.

The LLM judge (:class:`LLMJudge`) is optional and off by default: it talks to any
OpenAI-compatible ``/v1/chat/completions`` endpoint with the standard library only, caches every
verdict in an append-only JSONL file and accepts a reply only if it is exactly one verdict token.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, QAItem
from hneuron_lens.io import atomic_write_text, loads_json
from hneuron_lens.llm import ChatClient, LLMError

logger = logging.getLogger(__name__)

CORRECT = "correct"
INCORRECT = "incorrect"
REFUSAL = "refusal"
UNPARSEABLE = "unparseable"
"""Only the LLM judge produces this label: its reply was not exactly one verdict token."""
LABELS = (CORRECT, INCORRECT, REFUSAL, UNPARSEABLE)
MATCH_KINDS = ("exact", "contains", "substring_only")

_ARTICLES = frozenset({"a", "an", "the"})

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def _is_word_char(ch: str) -> bool:
    """Letters, digits and combining marks are word characters; everything else separates."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text``.

    A word is a maximal run of letters, digits and combining marks; punctuation, symbols,
    underscores and whitespace separate words. This is the tokenisation under
    :func:`normalize_answer`, so offsets found on words map back to the original text.

    Example:
        >>> word_spans("Kwik-E-Mart!")
        [(0, 4), (5, 6), (7, 11)]
    """
    spans: list[tuple[int, int]] = []
    start = -1
    for i, ch in enumerate(text):
        if _is_word_char(ch):
            if start < 0:
                start = i
        elif start >= 0:
            spans.append((start, i))
            start = -1
    if start >= 0:
        spans.append((start, len(text)))
    return spans


def normalize_words(text: str, *, drop_articles: bool = True) -> list[str]:
    """Lower-cased words of ``text`` (see :func:`word_spans`), articles a/an/the removed."""
    words = [text[s:e].lower() for s, e in word_spans(text)]
    if drop_articles:
        words = [w for w in words if w not in _ARTICLES]
    return words


def normalize_answer(text: str) -> str:
    """SQuAD/TriviaQA answer normalisation.

    Lower case, punctuation and symbols replaced by spaces (TriviaQA's official variant: SQuAD
    deletes punctuation instead, which would turn "Kwik-E-Mart" into "kwikemart" while the
    TriviaQA alias reads "kwik e mart"), articles ``a``/``an``/``the`` removed, whitespace collapsed.

    Example:
        >>> normalize_answer("  The Kwik-E-Mart, (Springfield)! ")
        'kwik e mart springfield'
    """
    return _normalize_cached(text)


@functools.lru_cache(maxsize=1 << 16)
def _normalize_cached(text: str) -> str:
    return " ".join(normalize_words(text))


# ---------------------------------------------------------------------------------------------
# Refusal detection
# ---------------------------------------------------------------------------------------------

DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"i (?:do not|don't|dont) know",
    r"(?:i'm|i am|i was) not (?:sure|certain|aware|familiar)",
    r"not (?:sure|certain)",
    r"can ?not",
    r"can't",
    r"(?:unable|not able) to",
    r"no (?:information|record|records|data|evidence|reliable information)",
    r"not aware",
    r"i (?:do not|don't|did not|didn't) have",
    r"i (?:could not|couldn't|can't|cannot) find",
    r"there (?:is|are|was|were) no",
    r"(?:does not|doesn't|did not|didn't|do not|don't) (?:appear to |seem to )?exist",
    r"no such",
    r"not a real",
    r"as an ai",
    r"as a language model",
    r"(?:i'm|i am) sorry",
    r"i apologi[sz]e",
)
"""Default refusal / uncertainty patterns (regexes, matched case-insensitively on word boundaries
after curly apostrophes are straightened).

Known limitation: a pattern anywhere in the response makes it a refusal, so hedges and idioms
are refusals too: "I can't believe it's Paris", "I'm not sure, but Paris", "There is no doubt:
Paris". With ``JudgeConfig.refusal_wins=False`` an alias match overrides the refusal instead."""


@dataclass
class RefusalConfig:
    """Which responses count as refusals / expressions of uncertainty."""

    patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS
    """Regexes (Python ``re`` syntax), each wrapped in word boundaries and matched
    case-insensitively anywhere in the response."""
    extra_patterns: tuple[str, ...] = ()
    """Patterns added to ``patterns`` (handy to extend the defaults from a config file)."""
    empty_is_refusal: bool = True
    """An empty or whitespace-only response gives no answer: count it as a refusal (dropped by
    the consistency filter) rather than as a hallucination."""

    def __post_init__(self) -> None:
        self.patterns = tuple(self.patterns)
        self.extra_patterns = tuple(self.extra_patterns)
        for p in self.all_patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"RefusalConfig: invalid regex {p!r}: {exc}") from exc

    @property
    def all_patterns(self) -> tuple[str, ...]:
        return self.patterns + self.extra_patterns

    def compiled(self) -> re.Pattern[str] | None:
        """One compiled alternation of all patterns, or ``None`` when there are none."""
        return _compile_refusal(self.all_patterns)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RefusalConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


_REFUSAL_CACHE: dict[tuple[str, ...], re.Pattern[str] | None] = {}


def _compile_refusal(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if patterns not in _REFUSAL_CACHE:
        if not patterns:
            _REFUSAL_CACHE[patterns] = None
        else:
            body = "|".join(f"(?:{p})" for p in patterns)
            _REFUSAL_CACHE[patterns] = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
    return _REFUSAL_CACHE[patterns]


def _straighten(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")


def find_refusal(text: str, cfg: RefusalConfig | None = None) -> str | None:
    """The first refusal phrase found in ``text`` (as written there), or ``None``."""
    cfg = cfg or RefusalConfig()
    if cfg.empty_is_refusal and not text.strip():
        return ""
    rx = cfg.compiled()
    if rx is None:
        return None
    m = rx.search(_straighten(text))
    return m.group(0) if m else None


def is_refusal(text: str, cfg: RefusalConfig | None = None) -> bool:
    """Whether ``text`` refuses or expresses uncertainty (see :data:`DEFAULT_REFUSAL_PATTERNS`).

    Example:
        >>> is_refusal("I'm not sure."), is_refusal("Paris")
        (True, False)
    """
    return find_refusal(text, cfg) is not None


# ---------------------------------------------------------------------------------------------
# Rule judge
# ---------------------------------------------------------------------------------------------


@dataclass
class JudgeConfig:
    """Settings of the rule judge."""

    substring_counts_as_correct: bool = False
    """Count an alias found only inside a longer word ("Paris" in "Parisian", "1" in "1945") as
    correct. Off by default: such matches are labelled incorrect but reported with
    ``match_kind="substring_only"`` so that the funnel can count them."""
    refusal_wins: bool = True
    """When a response both matches a refusal pattern and contains an alias ("I'm not sure, maybe
    Paris"), label it a refusal (default, conservative: hedged answers are dropped). When False
    the alias match wins and the response is judged correct."""
    refusal: RefusalConfig = field(default_factory=RefusalConfig)
    """Refusal / uncertainty patterns."""

    def __post_init__(self) -> None:
        if isinstance(self.refusal, Mapping):
            self.refusal = RefusalConfig.from_dict(self.refusal)
        if not isinstance(self.refusal, RefusalConfig):
            raise TypeError(f"JudgeConfig.refusal must be a RefusalConfig, got {self.refusal!r}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["refusal"] = self.refusal.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JudgeConfig:
        return cls(**dict(d))


@dataclass(frozen=True)
class Judgement:
    """The verdict on one response."""

    label: str
    """``"correct"``, ``"incorrect"``, ``"refusal"`` (or ``"unparseable"``, LLM judge only)."""
    matched_alias: str | None = None
    """The gold alias that matched (as written in the alias list), if any."""
    match_kind: str | None = None
    """``"exact"``, ``"contains"``, ``"substring_only"`` or ``None`` (no alias found)."""
    judge: str = "rule"
    """Which judge decided: ``"rule"`` or ``"llm:<model>:<prompt_version>"``."""
    reply: str | None = None
    """LLM judge only: the raw reply (kept for audit, also when unparseable)."""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"Judgement.label must be one of {LABELS}, got {self.label!r}")
        if self.match_kind is not None and self.match_kind not in MATCH_KINDS:
            raise ValueError(f"Judgement.match_kind must be one of {MATCH_KINDS} or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Judgement:
        return cls(**dict(d))


@dataclass(frozen=True)
class AliasMatch:
    """The best alias match of a response (see :func:`match_aliases`)."""

    alias: str
    """The alias as written in the alias list."""
    kind: str
    """``"exact"``, ``"contains"`` or ``"substring_only"``."""


_KIND_RANK = {"exact": 0, "contains": 1, "substring_only": 2}


def _standalone_case_sensitive(response: str, alias: str) -> bool:
    """``alias`` occurs in ``response`` exactly as written, not touching a word char or apostrophe.

    A capital "I" at the start of a sentence followed by a space is the pronoun, not the answer.
    """
    a = alias.strip()
    pattern = r"(?<![\w'’])" + re.escape(a) + r"(?![\w'’])"
    for m in re.finditer(pattern, response):
        if a == "I" and response[m.end() : m.end() + 1] == " ":
            continue
        return True
    return False


def match_aliases(response: str, aliases: Iterable[str]) -> AliasMatch | None:
    """Best match of any alias in ``response`` after :func:`normalize_answer`.

    Exact beats contains beats substring-only; within a kind the longest normalised alias wins,
    then the first in list order. Aliases that normalise to nothing ("The", "!") are ignored.
    """
    norm_response = normalize_answer(response)
    padded = f" {norm_response} "
    best: tuple[int, int, int] | None = None
    best_alias: AliasMatch | None = None
    for i, alias in enumerate(aliases):
        na = normalize_answer(alias)
        if not na:
            continue
        if na == norm_response:
            kind = "exact"
        elif (
            len(na) == 1 and f" {na} " in padded and not _standalone_case_sensitive(response, alias)
        ):
            # One-character aliases (chemical symbols "S", "I", numbers "1") would otherwise match
            # the "s" of "it's" or the pronoun "I": require the alias as written, standing alone.
            kind = "substring_only"
        elif f" {na} " in padded:
            kind = "contains"
        elif na in norm_response:
            kind = "substring_only"
        else:
            continue
        key = (_KIND_RANK[kind], -len(na), i)
        if best is None or key < best:
            best, best_alias = key, AliasMatch(alias=alias, kind=kind)
    return best_alias


def judge_response(
    response: str,
    aliases: Sequence[str],
    cfg: JudgeConfig | None = None,
    *,
    kind: str = "qa",
) -> Judgement:
    """Judge one response against the gold aliases with the rule judge.

    Args:
        response: The model's answer.
        aliases: Gold answers; any alias counts. Must be empty for ``kind="nonexistent"``.
        cfg: Judge settings (defaults: :class:`JudgeConfig`).
        kind: ``"qa"`` (answerable) or ``"nonexistent"`` (invented entity: anything but a
            refusal is a hallucination).

    Returns:
        A :class:`Judgement` with ``judge="rule"``.

    Raises:
        ValueError: ``kind="qa"`` with no aliases, or an unknown ``kind``.

    Example:
        >>> judge_response("It's Paris.", ["Paris"]).match_kind
        'contains'
        >>> judge_response("Parisian", ["Paris"]).label
        'incorrect'
    """
    cfg = cfg or JudgeConfig()
    if kind not in ("qa", "nonexistent"):
        raise ValueError(f"judge_response: kind must be 'qa' or 'nonexistent', got {kind!r}")
    if kind == "qa" and not any(normalize_answer(a) for a in aliases):
        raise ValueError("judge_response: a 'qa' question needs at least one non-empty alias")
    refused = is_refusal(response, cfg.refusal)
    match = match_aliases(response, aliases) if kind == "qa" else None
    alias = match.alias if match else None
    match_kind = match.kind if match else None
    if refused and (cfg.refusal_wins or match is None or match.kind == "substring_only"):
        return Judgement(REFUSAL, alias, match_kind)
    if match is not None and (match.kind != "substring_only" or cfg.substring_counts_as_correct):
        return Judgement(CORRECT, alias, match_kind)
    return Judgement(INCORRECT, alias, match_kind)


def judge_item(item: QAItem, response: str, cfg: JudgeConfig | None = None) -> Judgement:
    """:func:`judge_response` with the aliases and kind of a :class:`QAItem`."""
    return judge_response(response, item.aliases, cfg, kind=item.kind)


# ---------------------------------------------------------------------------------------------
# LLM judge
# ---------------------------------------------------------------------------------------------

PROMPTS: dict[str, dict[str, str]] = {
    "v1": {
        "system": (
            "You grade answers to trivia questions. You reply with exactly one word: "
            "CORRECT, INCORRECT or REFUSAL. No explanation, no other text."
        ),
        "user": (
            "Question: {question}\n"
            "Gold answers (any one is right): {aliases}\n"
            "Model response: {response}\n\n"
            "Reply CORRECT if the response gives an answer that means the same as one of the gold "
            "answers, INCORRECT if it gives a different answer, REFUSAL if it declines to answer "
            "or says it does not know. Reply with exactly one word."
        ),
        "no_aliases": (
            "none: the question asks about something that does not exist, so any answer that "
            "treats it as real is INCORRECT"
        ),
    },
}
"""Versioned prompt templates of the LLM judge. Never edit a released version: add a new key.
The version is part of the cache key and is stored with every cached verdict."""

_VERDICT_RX = re.compile(r"^\s*(CORRECT|INCORRECT|REFUSAL)\s*\.?\s*$", re.IGNORECASE)


class UnparseableVerdict(ValueError):
    """The LLM judge's reply is not exactly one of CORRECT / INCORRECT / REFUSAL."""


LLMJudgeError = LLMError
"""The LLM endpoint failed (after retries), refused the request, redirected elsewhere or returned a
malformed payload (:class:`hneuron_lens.llm.LLMError`, a :class:`~hneuron_lens.errors.RemoteError`)."""


def parse_verdict(reply: str) -> str:
    """Strict verdict parser: the whole reply must be one verdict token.

    Accepts ``CORRECT``, ``INCORRECT`` or ``REFUSAL`` in any case, with optional surrounding
    whitespace and one trailing period. Anything else ("Correct, because...", "The answer is
    CORRECT", "**CORRECT**") is rejected: containment tests would read "INCORRECT" as correct.

    Returns:
        ``"correct"``, ``"incorrect"`` or ``"refusal"``.

    Raises:
        UnparseableVerdict: When the reply is not exactly one verdict token.
    """
    m = _VERDICT_RX.match(reply)
    if m is None:
        raise UnparseableVerdict(f"unparseable judge reply: {reply[:200]!r}")
    return m.group(1).lower()


def render_prompt(
    prompt_version: str, question: str, response: str, aliases: Sequence[str]
) -> list[dict[str, str]]:
    """Chat messages for one judging request with the template ``PROMPTS[prompt_version]``."""
    if prompt_version not in PROMPTS:
        raise KeyError(f"unknown prompt_version {prompt_version!r}; known: {sorted(PROMPTS)}")
    tpl = PROMPTS[prompt_version]
    alias_text = "; ".join(aliases) if aliases else tpl["no_aliases"]
    user = tpl["user"].format(question=question, aliases=alias_text, response=response)
    return [{"role": "system", "content": tpl["system"]}, {"role": "user", "content": user}]


def cache_key(
    prompt_version: str, model: str, question: str, response: str, aliases: Sequence[str]
) -> str:
    """sha256 over (prompt_version, model, question, response, aliases) as canonical JSON.

    The model is part of the key so that a cache shared by two judge models never returns one
    model's verdict for the other.
    """
    payload = json.dumps(
        [prompt_version, model, question, response, list(aliases)],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class LLMJudge:
    """Judge responses with an LLM behind an OpenAI-compatible chat-completions endpoint.

    Off by default: nothing in the library calls it unless asked. The transport is
    :class:`hneuron_lens.llm.ChatClient` (``httpx``: timeouts, retries with backoff, redirects
    followed only within the endpoint's origin, a warning for plain ``http://`` to another host).
    The API key is read from the environment variable ``api_key_env`` at each call and is never
    stored on the object, sent to another host, written to the cache or logged; when the variable
    is unset no ``Authorization`` header is sent (local servers such as vLLM or llama.cpp need
    none).

    Args:
        base_url: Endpoint root as for the OpenAI SDK, e.g. ``"https://api.openai.com/v1"`` or
            ``"http://127.0.0.1:8000/v1"``; ``/chat/completions`` is appended.
        model: Model name sent in the request.
        api_key_env: Name of the environment variable that holds the API key.
        prompt_version: Key into :data:`PROMPTS`.
        cache_path: Append-only JSONL cache of verdicts (``None``: in-memory only). Safe to resume:
            existing lines are loaded, a truncated last line is skipped with a warning.
        max_retries: Retries after the first attempt on HTTP 5xx/429, timeouts and connection
            errors, with exponential backoff (``backoff_s * 2**attempt``).
        timeout: Seconds per HTTP request.
        backoff_s: First backoff delay in seconds.
        temperature: Sampling temperature sent to the endpoint.

    Example:
        >>> judge = LLMJudge("http://127.0.0.1:8000/v1", "gpt-4o-mini")  # doctest: +SKIP
        >>> judge.judge("Capital of France?", "Paris", ["Paris"]).label  # doctest: +SKIP
        'correct'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        prompt_version: str = "v1",
        cache_path: str | os.PathLike[str] | None = None,
        max_retries: int = 3,
        timeout: float = 30,
        backoff_s: float = 1.0,
        temperature: float = 0.0,
    ) -> None:
        if prompt_version not in PROMPTS:
            raise KeyError(f"unknown prompt_version {prompt_version!r}; known: {sorted(PROMPTS)}")
        self._client = ChatClient(
            base_url,
            model,
            api_key_env=api_key_env,
            timeout=timeout,
            max_retries=max_retries,
            backoff_s=backoff_s,
        )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.prompt_version = prompt_version
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff_s = float(backoff_s)
        self.temperature = float(temperature)
        self._cache: dict[str, dict[str, Any]] = {}
        if self.cache_path is not None:
            self._cache = _load_jsonl_cache(self.cache_path)

    @property
    def n_requests(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self._client.n_requests

    @property
    def name(self) -> str:
        """Judge kind recorded in each :class:`Judgement`: ``llm:<model>:<prompt_version>``."""
        return f"llm:{self.model}:{self.prompt_version}"

    def to_dict(self) -> dict[str, Any]:
        """Settings for provenance (never the key itself, only the variable's name)."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "prompt_version": self.prompt_version,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "temperature": self.temperature,
        }

    def judge(
        self, question: str, response: str, aliases: Sequence[str], *, kind: str = "qa"
    ) -> Judgement:
        """Judge one response, from the cache when possible.

        An unparseable reply is not an error: it is cached and returned with
        ``label="unparseable"`` and the raw ``reply`` (the consistency filter drops the question).

        Raises:
            LLMJudgeError: The endpoint failed after all retries.
        """
        if kind == "qa" and not aliases:
            raise ValueError("LLMJudge.judge: a 'qa' question needs aliases")
        aliases = list(aliases)
        key = cache_key(self.prompt_version, self.model, question, response, aliases)
        record = self._cache.get(key)
        if record is None:
            messages = render_prompt(self.prompt_version, question, response, aliases)
            reply = self._complete(messages)
            try:
                label = parse_verdict(reply)
            except UnparseableVerdict:
                logger.warning("LLM judge %s: unparseable reply %r", self.name, reply[:200])
                label = UNPARSEABLE
            record = {
                "key": key,
                "label": label,
                "reply": reply,
                "model": self.model,
                "prompt_version": self.prompt_version,
                "prompt_template": PROMPTS[self.prompt_version],
                "question": question,
                "response": response,
                "aliases": aliases,
                "time": time.time(),
            }
            self._cache[key] = record
            if self.cache_path is not None:
                _append_jsonl(self.cache_path, record)
        else:
            logger.debug("LLM judge cache hit %s", key[:12])
        match = match_aliases(response, aliases) if aliases else None
        return Judgement(
            label=record["label"],
            matched_alias=match.alias if match else None,
            match_kind=match.kind if match else None,
            judge=self.name,
            reply=record["reply"],
        )

    def judge_item(self, item: QAItem, response: str) -> Judgement:
        """:meth:`judge` with the question, aliases and kind of a :class:`QAItem`."""
        return self.judge(item.question, response, item.aliases, kind=item.kind)

    def _complete(self, messages: list[dict[str, str]]) -> str:
        return self._client.complete(messages, temperature=self.temperature)


def _load_jsonl_cache(path: Path) -> dict[str, dict[str, Any]]:
    cache: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return cache
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = loads_json(line)
                cache[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("LLM judge cache %s: skipping malformed line %d", path, lineno)
    return cache


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single write, then flush and fsync (crash-safe resume)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        # A previous crash may have left a line without its newline: start on a fresh line.
        if fh.tell() > 0 and not _ends_with_newline(path):
            line = "\n" + line
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


# ---------------------------------------------------------------------------------------------
# Consistency filter and funnel
# ---------------------------------------------------------------------------------------------


@dataclass
class Funnel:
    """How many questions survive each step of the consistency filter (question counts)."""

    asked: int = 0
    """Questions given to the filter."""
    answered: int = 0
    """Questions with all their responses judged and none a refusal (= true + false + mixed)."""
    consistent_true: int = 0
    """Questions answered correctly every time: kept as FAITHFUL."""
    consistent_false: int = 0
    """Questions answered incorrectly every time: kept as HALLUCINATED."""
    mixed: int = 0
    """Questions with both correct and incorrect answers: dropped."""
    refused: int = 0
    """Questions with at least one refusal (or unparseable LLM verdict): dropped."""
    substring_only: int = 0
    """Questions with at least one substring-only alias match (a warning count: these responses
    are incorrect unless ``JudgeConfig.substring_counts_as_correct``)."""
    missing: int = 0
    """Questions without responses or judgements: dropped."""
    span_not_found: int = 0
    """Kept samples whose answer span could not be located (filled later by the caller)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if int(getattr(self, f.name)) < 0:
                raise ValueError(f"Funnel.{f.name} must be >= 0")

    def to_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Funnel:
        return cls(**{k: int(v) for k, v in d.items()})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the counts as JSON (atomically: temp file then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Funnel:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __str__(self) -> str:
        d = self.to_dict()
        width = max(len(k) for k in d)
        num = max(len(str(v)) for v in d.values())
        return "\n".join(f"{k:<{width}}  {v:>{num}}" for k, v in d.items())

    def _repr_html_(self) -> str:
        """Notebook display: tables with CIs and a small figure (:mod:`hneuron_lens.viz.html`)."""
        from hneuron_lens.viz.html import funnel_html

        return funnel_html(self)


@dataclass
class ConsistencyResult:
    """Output of :func:`consistency_filter`."""

    samples: list[JudgedSample]
    """Kept questions, one modal response each, labelled FAITHFUL / HALLUCINATED."""
    funnel: Funnel
    """Counts per step."""
    dropped: dict[str, str] = field(default_factory=dict)
    """qid -> reason (``"mixed"``, ``"refused"``, ``"missing"``) for every dropped question."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": [s.to_dict() for s in self.samples],
            "funnel": self.funnel.to_dict(),
            "dropped": dict(self.dropped),
        }


def modal_response(responses: Sequence[str]) -> tuple[int, int]:
    """Index of the modal response and its count.

    The mode is taken over normalised responses (:func:`normalize_answer`); ties go to the
    normalised form seen first; the returned index is that form's first occurrence.
    """
    if not responses:
        raise ValueError("modal_response: no responses")
    norms = [normalize_answer(r) for r in responses]
    counts = Counter(norms)
    best = max(counts.values())
    for i, n in enumerate(norms):
        if counts[n] == best:
            return i, best
    raise AssertionError("unreachable")


def consistency_filter(
    items: Sequence[QAItem],
    responses: Mapping[str, Sequence[str]],
    judgements: Mapping[str, Sequence[Judgement]],
    *,
    k: int | None = None,
) -> ConsistencyResult:
    """Keep questions judged the same way every time; return their modal response.

    A question is kept as FAITHFUL when all its responses are ``"correct"`` and as HALLUCINATED
    when all are ``"incorrect"``; any refusal (or unparseable LLM verdict) drops it, and so does a
    mix of correct and incorrect. The kept response is the modal one (:func:`modal_response`).

    Args:
        items: The questions, in the order the samples should come out.
        responses: qid -> the k sampled responses.
        judgements: qid -> one :class:`Judgement` per response, same order.
        k: When given, every question present must have exactly ``k`` responses.

    Returns:
        A :class:`ConsistencyResult`. Each sample's ``meta`` holds ``votes`` (label -> count),
        ``k``, ``judge``, ``match_kind`` and ``matched_alias`` of the kept response and
        ``modal_count``.

    Raises:
        ValueError: Responses and judgements of a question differ in length, or not ``k`` of them.
    """
    funnel = Funnel(asked=len(items))
    samples: list[JudgedSample] = []
    dropped: dict[str, str] = {}
    for item in items:
        resp = list(responses.get(item.qid, ()))
        judg = list(judgements.get(item.qid, ()))
        if not resp or not judg:
            funnel.missing += 1
            dropped[item.qid] = "missing"
            continue
        if len(resp) != len(judg):
            raise ValueError(
                f"question {item.qid!r}: {len(resp)} responses but {len(judg)} judgements"
            )
        if k is not None and len(resp) != k:
            raise ValueError(f"question {item.qid!r}: expected {k} responses, got {len(resp)}")
        if any(j.match_kind == "substring_only" for j in judg):
            funnel.substring_only += 1
        votes = Counter(j.label for j in judg)
        if votes[REFUSAL] or votes[UNPARSEABLE]:
            funnel.refused += 1
            dropped[item.qid] = "refused"
            continue
        funnel.answered += 1
        if votes[CORRECT] == len(judg):
            label = FAITHFUL
            funnel.consistent_true += 1
        elif votes[INCORRECT] == len(judg):
            label = HALLUCINATED
            funnel.consistent_false += 1
        else:
            funnel.mixed += 1
            dropped[item.qid] = "mixed"
            continue
        idx, count = modal_response(resp)
        chosen = judg[idx]
        samples.append(
            JudgedSample(
                qid=item.qid,
                question=item.question,
                response=resp[idx],
                label=label,
                aliases=tuple(item.aliases),
                source=item.source,
                meta={
                    "votes": dict(votes),
                    "k": len(judg),
                    "judge": chosen.judge,
                    "match_kind": chosen.match_kind,
                    "matched_alias": chosen.matched_alias,
                    "modal_count": count,
                    "kind": item.kind,
                },
            )
        )
    logger.info("consistency filter: %s", funnel.to_dict())
    return ConsistencyResult(samples=samples, funnel=funnel, dropped=dropped)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
