"""Record formats of the data files the pipeline reads, and the per-record parsers.

Every parser takes one raw record (a ``dict`` read from a JSON line, a JSON array item, a CSV or
Parquet row, or a Hub dataset row) and returns a typed record from :mod:`hneuron_lens.data.records`
(or a :class:`ConsistencySample`). A parser that meets a bad field raises :class:`FieldError`
naming the field; the loaders add the file and line and turn it into :class:`DataFormatError`
(``strict=True``) or a :class:`SkippedLine` in the :class:`LoadReport` (default).

Formats (names accepted by ``format=``):

- ``"open_qa"``: question + gold aliases (TriviaQA / NQ-Open / SimpleQA style) -> ``QAItem``.
- ``"consistency"``: ``{question, responses, judges, ground_truth}`` (k sampled answers with a
  judge verdict each, the H-Neurons replication files) -> :class:`ConsistencySample`.
- ``"judged"``: question + response + hallucination label -> ``JudgedSample``.
- ``"release"``: ``{question, response, tokenized_response, answer_tokens}`` (the H-Neurons paper
  release; labels come from a separate ``*_qids.json``) -> ``JudgedSample``.
- ``"multiple_choice"``: MMLU / MedQA / MedMCQA layouts or explicit keys -> ``MCItem``.

Any of them may be wrapped as ``{"<qid>": {...record...}}`` (one record per line, the id as the
only top-level key), which is how the paper's release and replication files are written.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, MCItem, QAItem
from hneuron_lens.errors import DataError

FORMATS = ("open_qa", "consistency", "judged", "release", "multiple_choice")
"""Format names accepted by the loaders' ``format=`` argument."""

MC_LAYOUTS = ("mmlu", "medqa", "medmcqa", "keys")
"""Multiple-choice column layouts (``"keys"`` = explicit question/options/answer keys)."""

QID_KEYS = ("qid", "id", "question_id", "q_id", "original_index")
QUESTION_KEYS = ("question", "query", "problem", "prompt")
ALIAS_KEYS = ("aliases", "ground_truth", "answers", "answer", "gold", "normalized_aliases")
RESPONSE_KEYS = ("response", "output", "completion", "generation")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class FieldError(ValueError):
    """A bad field in one record (the loader adds file and line)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field = field
        self.reason = reason


class DataFormatError(DataError):
    """Malformed input, located: the message names the file, the line and the field.

    Rendered as ``<reason> (<file>:<line> <field>): <hint>`` (a :class:`~hneuron_lens.errors.
    DataError`, so the CLI prints it as one line and exits with code 2).
    """

    def __init__(
        self, file: str, line: int | None, field: str, reason: str, hint: str | None = None
    ) -> None:
        super().__init__(
            reason,
            file=file,
            line=line,
            field=field,
            hint=hint or "fix that record, or check that the file has the expected format",
        )
        self.reason = reason


@dataclass(frozen=True)
class SkippedLine:
    """One input record the loader did not turn into a record, and why."""

    line: int
    """1-based line (JSONL) or record number (JSON array, CSV / Parquet / Hub row)."""
    field: str
    """The offending field (``"<json>"`` for an unparseable line, ``"<qid>"`` for the id)."""
    reason: str
    """Short reason; :attr:`LoadReport.counts_by_reason` groups by the text before any
    parenthesised detail (``"unparseable JSON (Expecting value)"`` counts as ``"unparseable JSON"``)."""


@dataclass
class LoadReport:
    """What a loader read, loaded and skipped. Nothing is dropped without an entry here."""

    file: str
    """The file (or Hub id) read."""
    format: str = ""
    """The format used (detected or given)."""
    n_lines: int = 0
    """Records seen (non-blank lines for JSONL, items / rows otherwise)."""
    n_loaded: int = 0
    """Records returned."""
    skipped: list[SkippedLine] = field(default_factory=list)
    """Records not returned, each with line, field and reason."""
    notes: Counter[str] = field(default_factory=Counter)
    """Counts of non-fatal findings on loaded records (e.g. answer text not reconstructed)."""

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def counts_by_reason(self) -> dict[str, int]:
        """Number of skipped records per reason."""
        return dict(Counter(s.reason.split(" (")[0] for s in self.skipped))

    def skip(self, line: int, field: str, reason: str) -> None:
        """Record one skipped input record."""
        self.skipped.append(SkippedLine(line=line, field=field, reason=reason))

    def __str__(self) -> str:
        head = f"{self.file} [{self.format}]: {self.n_loaded}/{self.n_lines} loaded"
        parts = [head]
        if self.skipped:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.counts_by_reason.items()))
            parts.append(f"skipped {self.n_skipped} ({reasons})")
        if self.notes:
            parts.append(
                "notes (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.notes.items())) + ")"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "n_lines": self.n_lines,
            "n_loaded": self.n_loaded,
            "skipped": [asdict(s) for s in self.skipped],
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadReport:
        return cls(
            file=d["file"],
            format=d.get("format", ""),
            n_lines=d.get("n_lines", 0),
            n_loaded=d.get("n_loaded", 0),
            skipped=[SkippedLine(**s) for s in d.get("skipped", [])],
            notes=Counter(d.get("notes", {})),
        )


@dataclass(frozen=True)
class ConsistencySample:
    """One question with k sampled responses and a judge verdict per response.

    The collection stage keeps questions judged correct k/k (faithful) or wrong 0/k
    (hallucinated); :attr:`n_true` and :attr:`n_false` are the counts it needs.
    """

    qid: str
    """Question id (the top-level key of the line)."""
    question: str
    """The prompt as sent to the model."""
    aliases: tuple[str, ...]
    """Gold answer aliases (``ground_truth``)."""
    responses: tuple[str, ...]
    """The k sampled responses."""
    judges: tuple[str, ...]
    """Judge verdict per response, lower-cased: ``"true"``, ``"false"`` or another tag
    (e.g. a refusal); same length as ``responses``."""
    source: str = ""
    """Dataset / file name."""

    @property
    def n_true(self) -> int:
        """Responses judged correct."""
        return sum(j == "true" for j in self.judges)

    @property
    def n_false(self) -> int:
        """Responses judged wrong."""
        return sum(j == "false" for j in self.judges)

    def to_qa_item(self) -> QAItem:
        """The question and its aliases, without the responses."""
        return QAItem(
            qid=self.qid, question=self.question, aliases=self.aliases, source=self.source
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsistencySample:
        return cls(
            qid=d["qid"],
            question=d["question"],
            aliases=tuple(d["aliases"]),
            responses=tuple(d["responses"]),
            judges=tuple(d["judges"]),
            source=d.get("source", ""),
        )


# --------------------------------------------------------------------------- helpers


def unwrap_record(raw: Any) -> tuple[str | None, dict[str, Any]]:
    """Split a ``{"<qid>": {...}}`` record into ``(qid, inner)``; flat records give ``(None, raw)``.

    Raises:
        FieldError: when ``raw`` is not a JSON object.
    """
    if not isinstance(raw, Mapping):
        raise FieldError("<record>", f"expected a JSON object, got {type(raw).__name__}")
    if len(raw) == 1:
        ((key, value),) = raw.items()
        if isinstance(value, Mapping):
            return str(key), dict(value)
    return None, dict(raw)


def find_key(record: Mapping[str, Any], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` present in ``record`` with a non-null value."""
    for key in candidates:
        if record.get(key) is not None:
            return key
    return None


def detect_format(record: Mapping[str, Any]) -> str:
    """Guess the format of one (unwrapped) record from its keys.

    Raises:
        FieldError: when no format matches.
    """
    keys = set(record)
    if {"responses", "judges"} <= keys:
        return "consistency"
    if "answer_tokens" in keys or "tokenized_response" in keys:
        return "release"
    if keys & {"choices", "options", "opa", "cop", "answer_idx"}:
        return "multiple_choice"
    if keys & set(RESPONSE_KEYS) and keys & {"label", "hallucinated", "correct"}:
        return "judged"
    if keys & set(QUESTION_KEYS) and keys & set(ALIAS_KEYS):
        return "open_qa"
    raise FieldError("<record>", f"cannot detect the format from keys {sorted(keys)}")


def _parse_listish(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return text


def as_str_list(value: Any, field: str) -> list[str]:
    """Aliases as a list of non-empty strings.

    Accepts a string, a list of strings, a TriviaQA answer dict (``value`` + ``aliases``), a
    number, or (CSV cells) a string holding a JSON / Python list literal.

    Raises:
        FieldError: for other types or when nothing non-empty remains.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        value = _parse_listish(value.strip())
    if isinstance(value, Mapping):
        items = [value.get("value")] + list(value.get("aliases") or [])
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = list(value)
    else:
        raise FieldError(
            field, f"expected a string or a list of strings, got {type(value).__name__}"
        )
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        if type(item) is str:  # fast path: alias lists can hold hundreds of strings
            text = item.strip()
        elif item is None:
            continue
        elif isinstance(item, int | float) and not isinstance(item, bool):
            text = str(item)
        else:
            raise FieldError(field, f"alias of type {type(item).__name__} is not a string")
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    if not out:
        raise FieldError(field, "no non-empty answer")
    return out


def require_str(record: Mapping[str, Any], key: str) -> str:
    """``record[key]`` as a non-empty string.

    Raises:
        FieldError: when missing, not a string, or blank.
    """
    if key not in record or record[key] is None:
        raise FieldError(key, "missing")
    value = record[key]
    if not isinstance(value, str):
        raise FieldError(key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise FieldError(key, "empty")
    return value


def record_qid(
    record: Mapping[str, Any], wrapped_qid: str | None, fallback: str, qid_key: str | None = None
) -> str:
    """The record's id: the wrapping key, then ``qid_key`` / a known id column, then ``fallback``."""
    if wrapped_qid is not None:
        return wrapped_qid
    key = qid_key or find_key(record, QID_KEYS)
    if key is not None and record.get(key) is not None:
        value = record[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)
    return fallback


# --------------------------------------------------------------------------- open QA


def parse_open_qa(
    record: Mapping[str, Any],
    qid: str,
    source: str,
    question_key: str | None = None,
    answer_key: str | None = None,
) -> QAItem:
    """One open-domain question with aliases -> ``QAItem``.

    Raises:
        FieldError: on a missing / empty question or answer field.
    """
    qkey = question_key or find_key(record, QUESTION_KEYS) or "question"
    akey = answer_key or find_key(record, ALIAS_KEYS) or "answer"
    question = require_str(record, qkey)
    if akey not in record or record[akey] is None:
        raise FieldError(akey, "missing")
    aliases = as_str_list(record[akey], akey)
    if answer_key is None and akey != "aliases" and isinstance(record.get("aliases"), list):
        aliases += [a for a in as_str_list(record["aliases"], "aliases") if a not in aliases]
    return QAItem(qid=qid, question=question.strip(), aliases=tuple(aliases), source=source)


# --------------------------------------------------------------------------- consistency


def parse_consistency(record: Mapping[str, Any], qid: str, source: str) -> ConsistencySample:
    """``{question, responses, judges, ground_truth}`` -> :class:`ConsistencySample`.

    Raises:
        FieldError: on missing fields, non-string responses, or ``judges`` and ``responses``
            of different lengths.
    """
    question = require_str(record, "question")
    responses = record.get("responses")
    if not isinstance(responses, list) or not responses:
        raise FieldError("responses", "expected a non-empty list")
    if not all(isinstance(r, str) for r in responses):
        raise FieldError("responses", "every response must be a string")
    judges = record.get("judges")
    if not isinstance(judges, list):
        raise FieldError("judges", "expected a list")
    if len(judges) != len(responses):
        raise FieldError("judges", f"{len(judges)} judges for {len(responses)} responses")
    if not all(isinstance(j, str | bool) for j in judges):
        raise FieldError("judges", "every judge must be a string or a boolean")
    judges_norm = tuple(str(j).strip().lower() for j in judges)
    akey = find_key(record, ("ground_truth", "aliases", "answers", "answer")) or "ground_truth"
    if akey not in record:
        raise FieldError("ground_truth", "missing")
    aliases = as_str_list(record[akey], akey)
    return ConsistencySample(
        qid=qid,
        question=question,
        aliases=tuple(aliases),
        responses=tuple(responses),
        judges=judges_norm,
        source=source,
    )


# --------------------------------------------------------------------------- judged

_LABEL_WORDS = {
    "hallucinated": HALLUCINATED,
    "hallucination": HALLUCINATED,
    "incorrect": HALLUCINATED,
    "wrong": HALLUCINATED,
    "f": HALLUCINATED,
    "faithful": FAITHFUL,
    "correct": FAITHFUL,
    "t": FAITHFUL,
}


def parse_label(record: Mapping[str, Any], label_key: str | None = None) -> int:
    """The hallucination label (1 = hallucinated) of a judged record.

    Accepted fields, in order: ``label_key`` or ``label`` (0/1, ``"0"``/``"1"``, or the words
    hallucinated / faithful / incorrect / correct / f / t), ``hallucinated`` (bool, true -> 1),
    ``correct`` (bool, true -> 0). A bare boolean ``label`` is refused: its meaning is ambiguous.

    Raises:
        FieldError: when no label field is present or its value is not understood.
    """
    key = label_key or find_key(record, ("label", "hallucinated", "correct"))
    if key is None or record.get(key) is None:
        raise FieldError(label_key or "label", "missing (expected label, hallucinated or correct)")
    value = record[key]
    if key in ("hallucinated", "correct") and key != label_key or isinstance(value, bool):
        if not isinstance(value, bool):
            raise FieldError(key, f"expected a boolean, got {value!r}")
        if key == "label":
            raise FieldError(key, "a boolean label is ambiguous; use 0/1 or hallucinated/faithful")
        truthy = value if key == "hallucinated" else not value
        return HALLUCINATED if truthy else FAITHFUL
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value in (FAITHFUL, HALLUCINATED):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("0", "1"):
            return int(text)
        if text in _LABEL_WORDS:
            return _LABEL_WORDS[text]
    raise FieldError(key, f"label {value!r} is not 0/1 or hallucinated/faithful")


def parse_judged(
    record: Mapping[str, Any],
    qid: str,
    source: str,
    split: str | None = None,
    label_key: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> JudgedSample:
    """Question + response + label (+ optional ``answer_text`` / ``answer_tokens`` / aliases).

    ``answer_text`` must be a substring of the response.

    Raises:
        FieldError: on a missing field, a bad label or an answer text not in the response.
    """
    question = require_str(record, find_key(record, QUESTION_KEYS) or "question")
    rkey = find_key(record, RESPONSE_KEYS) or "response"
    if not isinstance(record.get(rkey), str):
        raise FieldError(rkey, "missing or not a string")
    response = record[rkey]
    label = parse_label(record, label_key)
    answer_text = record.get("answer_text")
    if answer_text is not None:
        if not isinstance(answer_text, str) or answer_text not in response:
            raise FieldError("answer_text", "not a substring of the response")
    tokens = record.get("answer_tokens")
    if tokens is not None:
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise FieldError("answer_tokens", "expected a list of strings")
        tokens = tuple(tokens) or None
    akey = find_key(record, ("aliases", "ground_truth", "answers", "gold"))
    aliases = tuple(as_str_list(record[akey], akey)) if akey else ()
    rec_split = record.get("split") if isinstance(record.get("split"), str) else None
    return JudgedSample(
        qid=qid,
        question=question,
        response=response,
        label=label,
        answer_text=answer_text,
        answer_tokens=tokens,
        aliases=aliases,
        source=source,
        split=split or rec_split,
        meta=dict(meta or {}),
    )


# --------------------------------------------------------------------------- release


def _bytes_to_unicode() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-character table (byte-level BPE pieces)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = _bytes_to_unicode()
_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def decode_byte_level(pieces: Sequence[str]) -> str | None:
    """Join byte-level BPE pieces (GPT-2 / Llama-3 / Tekken, ``'Ġ'`` = space) into text.

    Returns ``None`` when a character is outside the byte table or the bytes are not UTF-8.
    """
    try:
        data = bytes(_BYTE_DECODER[ch] for piece in pieces for ch in piece)
        return data.decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def decode_sentencepiece(pieces: Sequence[str]) -> str | None:
    """Join SentencePiece pieces (``'▁'`` = space, ``<0xNN>`` byte fallback) into text."""
    buf = bytearray()
    for piece in pieces:
        m = _SP_BYTE.match(piece)
        if m:
            buf.append(int(m.group(1), 16))
        else:
            buf.extend(piece.replace("▁", " ").encode("utf-8"))
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError:
        return None


def reconstruct_answer_text(pieces: Sequence[str], response: str) -> str | None:
    """The answer phrase spelled by tokenizer ``pieces``, if it occurs in ``response``.

    Tries SentencePiece decoding when a piece holds ``'▁'`` or a ``<0xNN>`` byte, byte-level BPE
    decoding otherwise (then the other, then the raw join), with surrounding whitespace stripped.
    Returns the first candidate that is an exact substring of the response, or ``None`` (e.g. answer pieces that skip punctuation between list items).
    """
    if not pieces:
        return None
    sentencepiece_first = any("▁" in p or _SP_BYTE.match(p) for p in pieces)
    decoders = (
        (decode_sentencepiece, decode_byte_level)
        if sentencepiece_first
        else (decode_byte_level, decode_sentencepiece)
    )
    candidates = [d(pieces) for d in decoders] + ["".join(pieces)]
    for cand in candidates:
        text = cand.strip() if cand is not None else ""
        if text and text in response:
            return text
    return None


def parse_release(
    record: Mapping[str, Any],
    qid: str,
    label: int,
    source: str,
    split: str | None,
    meta: Mapping[str, Any] | None = None,
) -> JudgedSample:
    """One release record (``question, response, tokenized_response, answer_tokens``) -> sample.

    The label comes from the ``*_qids.json`` file (the caller passes it). ``answer_tokens`` is kept
    (``None`` when the list is empty) and ``answer_text`` is reconstructed and verified to be a
    substring of the response (``None`` when it cannot be; ``meta["answer_text"]`` says why).

    Raises:
        FieldError: on a missing question / response or non-list answer tokens.
    """
    question = require_str(record, "question")
    response = record.get("response")
    if not isinstance(response, str):
        raise FieldError("response", "missing or not a string")
    tokens = record.get("answer_tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise FieldError("answer_tokens", "expected a list of strings")
    info = dict(meta or {})
    answer_text = reconstruct_answer_text(tokens, response)
    if not tokens:
        info["answer_text"] = "empty answer_tokens"
    elif answer_text is None:
        info["answer_text"] = "not a substring of the response"
    return JudgedSample(
        qid=qid,
        question=question,
        response=response,
        label=label,
        answer_text=answer_text,
        answer_tokens=tuple(tokens) or None,
        source=source,
        split=split,
        meta=info,
    )


# --------------------------------------------------------------------------- multiple choice


def detect_mc_layout(record: Mapping[str, Any]) -> str:
    """``"mmlu"`` (choices + answer), ``"medqa"`` (options + answer_idx) or ``"medmcqa"`` (opa..opd + cop).

    Raises:
        FieldError: when none fits (pass explicit keys instead).
    """
    if "opa" in record and "cop" in record:
        return "medmcqa"
    if "options" in record and "answer_idx" in record:
        return "medqa"
    if "choices" in record and "answer" in record:
        return "mmlu"
    raise FieldError(
        "<record>",
        f"unknown multiple-choice layout, keys {sorted(record)}; pass question_key/options_key/answer_key",
    )


def _options_list(value: Any, field: str) -> tuple[list[str], list[str] | None]:
    """Option texts and, for letter-keyed options, their letters."""
    if isinstance(value, str) and value.strip()[:1] in "[{":
        value = _parse_listish(value.strip())
    if isinstance(value, Mapping):
        letters = sorted(value)
        texts = [value[k] for k in letters]
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(o, Mapping) and "key" in o and "value" in o for o in value)
    ):
        letters = [str(o["key"]) for o in value]
        texts = [o["value"] for o in value]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        letters, texts = None, list(value)
    else:
        raise FieldError(
            field, f"expected a list or a letter -> text mapping, got {type(value).__name__}"
        )
    if len(texts) < 2:
        raise FieldError(field, f"need at least 2 options, got {len(texts)}")
    if not all(isinstance(t, str | int | float) and not isinstance(t, bool) for t in texts):
        raise FieldError(field, "every option must be a string")
    return [str(t) for t in texts], letters


def _answer_index(
    value: Any, field: str, texts: list[str], letters: list[str] | None, answer_base: int
) -> int:
    """Gold index from an int (``answer_base``-based), a letter, or the option text itself."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        idx = value - answer_base
    elif isinstance(value, str):
        text = value.strip()
        if letters is not None and text in letters:
            idx = letters.index(text)
        elif len(text) == 1 and text.upper() in LETTERS:
            idx = LETTERS.index(text.upper())
        elif text in texts:
            idx = texts.index(text)
        else:
            raise FieldError(field, f"answer {value!r} is not an index, a letter or an option text")
    else:
        raise FieldError(field, f"answer of type {type(value).__name__} not understood")
    if not 0 <= idx < len(texts):
        raise FieldError(
            field,
            f"answer {value!r} out of range for {len(texts)} options (index base {answer_base})",
        )
    return idx


def parse_multiple_choice(
    record: Mapping[str, Any],
    qid: str,
    source: str,
    layout: str,
    question_key: str | None = None,
    options_key: str | None = None,
    answer_key: str | None = None,
    answer_base: int = 0,
) -> MCItem:
    """One multiple-choice record -> ``MCItem``.

    Layouts: ``mmlu`` (``question``, ``choices`` list, ``answer`` 0-based int or letter),
    ``medqa`` (``question``, ``options`` letter -> text dict or list of ``{key, value}``,
    ``answer_idx`` letter), ``medmcqa`` (``question``, ``opa``..``opd``, ``cop`` with
    ``answer_base`` 0 or 1, see :func:`hneuron_lens.data.loaders.load_multiple_choice`),
    ``keys`` (explicit ``question_key`` / ``options_key`` / ``answer_key``).

    Raises:
        FieldError: on a missing field or an answer that does not name an option.
    """
    if layout == "medmcqa":
        question = require_str(record, question_key or "question")
        texts = []
        for key in ("opa", "opb", "opc", "opd", "ope"):
            if key in record and record[key] is not None:
                texts.append(str(record[key]))
            elif key != "ope":
                raise FieldError(key, "missing")
        letters = None
        akey = answer_key or "cop"
    else:
        defaults = {
            "mmlu": ("question", "choices", "answer"),
            "medqa": ("question", "options", "answer_idx"),
        }
        dq, do, da = defaults.get(layout, ("question", "options", "answer"))
        qkey, okey, akey = question_key or dq, options_key or do, answer_key or da
        question = require_str(record, qkey)
        if okey not in record or record[okey] is None:
            raise FieldError(okey, "missing")
        texts, letters = _options_list(record[okey], okey)
    if akey not in record or record[akey] is None:
        raise FieldError(akey, "missing")
    idx = _answer_index(record[akey], akey, texts, letters, answer_base)
    context = record.get("context") if isinstance(record.get("context"), str) else ""
    return MCItem(
        qid=qid,
        question=question.strip(),
        options=tuple(texts),
        answer_index=idx,
        source=source,
        context=context,
    )
