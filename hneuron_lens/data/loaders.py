"""Load local files (``.jsonl``, ``.json``, ``.parquet``, ``.csv``) or Hub datasets into typed records.

Each loader returns ``(records, LoadReport)``. Malformed records are skipped and listed in the
report with line, field and reason (a warning logs the counts); with ``strict=True`` the first
one raises :class:`~hneuron_lens.data.formats.DataFormatError` instead.

JSON lines are parsed here, line by line, so that a bad line is reported with its number and
the ``{"<qid>": {...}}`` per-line layout (dynamic top-level keys, which ``datasets`` cannot
express) is supported. Parquet and CSV files are read with ``pyarrow`` (nothing is written to a
cache), Hub ids through Hugging Face ``datasets``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hneuron_lens.data.formats import (
    FORMATS,
    MC_LAYOUTS,
    ConsistencySample,
    DataFormatError,
    FieldError,
    LoadReport,
    detect_format,
    detect_mc_layout,
    parse_consistency,
    parse_judged,
    parse_multiple_choice,
    parse_open_qa,
    parse_release,
    record_qid,
    unwrap_record,
)
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, MCItem, QAItem
from hneuron_lens.errors import DataError, UsageError
from hneuron_lens.io import loads_json

logger = logging.getLogger(__name__)

T = TypeVar("T")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SPLIT_IN_NAME = re.compile(r"(?:^|[_.-])(train|test|validation|valid|dev)(?:[_.-]|$)")


@dataclass(frozen=True)
class RawRecord:
    """One record read from a source, before parsing."""

    line: int
    """1-based line (JSONL) or record number."""
    qid: str | None
    """The wrapping key of a ``{"<qid>": {...}}`` record, else ``None``."""
    data: dict[str, Any]
    """The (unwrapped) record."""


def looks_like_hub_id(source: str | Path) -> bool:
    """True for ``"name"`` or ``"owner/name"`` strings that are not existing paths and have no file suffix."""
    text = str(source)
    if Path(text).exists() or Path(text).suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"):
        return False
    return bool(_HUB_ID.match(text)) and not text.startswith(".")


def _fail(report: LoadReport, strict: bool, line: int, field: str, reason: str) -> None:
    if strict:
        raise DataFormatError(report.file, line, field, reason)
    report.skip(line, field, reason)


def iter_raw(
    source: str | Path,
    report: LoadReport,
    strict: bool,
    hub_split: str = "train",
    hub_config: str | None = None,
) -> Iterator[RawRecord]:
    """Yield the records of a file or Hub dataset; unreadable ones go to ``report`` (or raise).

    Raises:
        DataError: when ``source`` is neither a file nor a Hub-id-like string, is a directory,
            has an unsupported suffix, or cannot be read as its suffix says.
        DataFormatError: with ``strict=True``, on an unparseable line or a non-object record.
    """
    path = Path(source)
    if not path.exists():
        if looks_like_hub_id(source):
            yield from _iter_rows(_hub_rows(str(source), hub_split, hub_config), report, strict)
            return
        raise DataError(
            "no such file (and not a Hugging Face Hub id)",
            file=source,
            hint="check the path",
        )
    if path.is_dir():
        raise DataError("a directory, not a data file", file=path, hint=f"give one of {SUFFIXES}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path, report, strict)
    elif suffix == ".json":
        yield from _iter_json(path, report, strict)
    elif suffix in (".parquet", ".csv"):
        yield from _iter_rows(_table_rows(path), report, strict)
    else:
        raise DataError(
            f"unsupported file type {suffix!r}",
            file=path,
            hint=f"give a {', '.join(SUFFIXES)} file (the suffix says how it is read)",
        )


SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
"""File types the loaders read (chosen by suffix)."""


def _iter_jsonl(path: Path, report: LoadReport, strict: bool) -> Iterator[RawRecord]:
    with path.open("rb") as fh:
        for lineno, raw_line in enumerate(fh, start=1):
            if not raw_line.strip():
                continue
            report.n_lines += 1
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as err:
                _fail(
                    report,
                    strict,
                    lineno,
                    "<text>",
                    f"not UTF-8 text (byte 0x{raw_line[err.start]:02x} at column {err.start + 1})",
                )
                continue
            try:
                raw = loads_json(line)
            except json.JSONDecodeError as err:
                _fail(report, strict, lineno, "<json>", f"unparseable JSON ({err.msg})")
                continue
            yield from _wrap(raw, lineno, report, strict)


def _iter_json(path: Path, report: LoadReport, strict: bool) -> Iterator[RawRecord]:
    try:
        doc = loads_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataFormatError(
            str(path),
            None,
            "<text>",
            f"not UTF-8 text (byte offset {err.start})",
            hint="give a UTF-8 JSON file (is this a binary file?)",
        ) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(
            str(path), err.lineno, "<json>", f"unparseable JSON ({err.msg})"
        ) from err
    if isinstance(doc, Mapping) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if isinstance(doc, list):
        for i, raw in enumerate(doc, start=1):
            report.n_lines += 1
            yield from _wrap(raw, i, report, strict)
    elif isinstance(doc, Mapping) and doc and all(isinstance(v, Mapping) for v in doc.values()):
        for i, (qid, raw) in enumerate(doc.items(), start=1):
            report.n_lines += 1
            yield RawRecord(line=i, qid=str(qid), data=dict(raw))
    else:
        raise DataFormatError(
            str(path), 1, "<json>", "expected a list of records, {'data': [...]} or {qid: record}"
        )


def _wrap(raw: Any, line: int, report: LoadReport, strict: bool) -> Iterator[RawRecord]:
    try:
        qid, data = unwrap_record(raw)
    except FieldError as err:
        _fail(report, strict, line, err.field, err.reason)
        return
    yield RawRecord(line=line, qid=qid, data=data)


def _iter_rows(
    rows: Iterator[dict[str, Any]], report: LoadReport, strict: bool
) -> Iterator[RawRecord]:
    for i, row in enumerate(rows, start=1):
        report.n_lines += 1
        yield RawRecord(line=i, qid=None, data=row)


def _table_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a local CSV / Parquet file, read with pyarrow (no cache directory, no lock)."""
    import pyarrow as pa  # deferred: heavy import

    kind = "Parquet" if path.suffix.lower() == ".parquet" else "CSV"
    if path.stat().st_size == 0:
        raise DataFormatError(
            str(path), None, "<file>", f"empty {kind} file", hint="check the file"
        )
    try:
        if kind == "Parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(
                path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
            )
        rows = table.to_pylist()  # column names are decoded here
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataFormatError(
            str(path),
            None,
            "<file>",
            f"cannot be read as {kind} ({type(err).__name__}: {_first_line(err)})",
            hint=f"check that it is a {kind} file (the suffix decides how it is read)",
        ) from None
    yield from rows


def _first_line(err: BaseException, n: int = 120) -> str:
    text = str(err).strip().splitlines()
    return text[0][:n] if text else ""


def _hub_rows(name: str, split: str, config: str | None) -> Iterator[dict[str, Any]]:
    import datasets  # deferred: heavy import

    logger.info("loading %s (config %s, split %s) from the Hugging Face Hub", name, config, split)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown id, gated, bad config...
        raise DataError(
            f"not a local file, and loading it as a Hugging Face Hub dataset failed "
            f"({type(err).__name__}: {_first_line(err)})",
            file=name,
            hint="check the path (a local file needs a .jsonl/.json/.csv/.parquet suffix) or "
            "the Hub id and your network",
        ) from None
    yield from ds


def _finish(report: LoadReport, records: list[Any]) -> None:
    report.n_loaded = len(records)
    report.skipped.sort(key=lambda s: s.line)
    if report.skipped or report.notes:
        logger.warning("%s", report)
    else:
        logger.info("%s", report)


def _parse_all(
    raws: list[RawRecord],
    report: LoadReport,
    strict: bool,
    parse: Callable[[RawRecord, str], T],
) -> list[T]:
    """Apply ``parse(raw, qid)`` to every record, checking for duplicate ids."""
    out: list[T] = []
    seen: dict[str, int] = {}
    stem = Path(report.file).stem
    for raw in raws:
        try:
            qid = record_qid(raw.data, raw.qid, fallback=f"{stem}-{raw.line}")
            if qid in seen:
                raise FieldError("<qid>", f"duplicate id {qid!r} (first at line {seen[qid]})")
            item = parse(raw, qid)
        except FieldError as err:
            _fail(report, strict, raw.line, err.field, err.reason)
            continue
        seen[qid] = raw.line
        out.append(item)
    return out


def _read(
    source: str | Path, fmt: str | None, strict: bool, hub_split: str, hub_config: str | None
) -> tuple[list[RawRecord], LoadReport, str]:
    """Read all records and resolve the format (given, or detected from the first valid record)."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; expected one of {FORMATS}", field="format")
    report = LoadReport(file=str(source))
    raws = list(iter_raw(source, report, strict, hub_split=hub_split, hub_config=hub_config))
    if fmt is None:
        for raw in raws:
            try:
                fmt = detect_format(raw.data)
                break
            except FieldError:
                continue
        if fmt is None:
            raise DataFormatError(
                str(source),
                raws[0].line if raws else 1,
                "<record>",
                "cannot detect the format of any record; pass format=",
            )
    report.format = fmt
    return raws, report, fmt


def require_records(report: LoadReport, expected: str = "") -> None:
    """Stop when a loader returned nothing: name the file, what was wrong and what to do.

    Args:
        report: the loader's report.
        expected: the record layout the caller needs, for the hint (e.g. ``"question,
            response, label"``).

    Raises:
        DataError: ``report.n_loaded == 0`` (an empty file, every record malformed...).
    """
    if report.n_loaded:
        return
    what = f"{expected} records" if expected else "records"
    if not report.n_lines:
        raise DataError(
            "no records: the file is empty", file=report.file, hint=f"give a file of {what}"
        )
    first = report.skipped[0] if report.skipped else None
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(report.counts_by_reason.items()))
    raise DataError(
        f"none of its {report.n_lines} records could be used ({reasons or 'all skipped'})",
        file=report.file,
        line=first.line if first else None,
        field=first.field if first else None,
        hint=f"expected {what}" + (f"; the first problem: {first.reason}" if first else ""),
    )


def source_name(source: str | Path) -> str:
    """A short dataset name for ``QAItem.source`` etc.: the file stem or the Hub id."""
    path = Path(source)
    return path.stem if path.exists() else str(source)


# --------------------------------------------------------------------------- public loaders


def load_qa(
    source: str | Path,
    format: str | None = None,
    question_key: str | None = None,
    answer_key: str | None = None,
    qid_key: str | None = None,
    strict: bool = False,
    split: str = "train",
    config: str | None = None,
) -> tuple[list[QAItem], LoadReport]:
    """Load open-domain questions with gold aliases.

    Args:
        source: a ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file, or a Hub id (online only).
        format: ``"open_qa"`` (default when detected) or ``"consistency"`` (questions and aliases of
            a consistency-samples file); ``None`` detects it from the first valid record.
        question_key: column holding the question (default: question / query / problem / prompt).
        answer_key: column holding the answer(s) (default: aliases / ground_truth / answers / answer).
        qid_key: column holding the id (default: qid / id / question_id; else ``<stem>-<line>``).
        strict: raise :class:`DataFormatError` on the first malformed record instead of skipping it.
        split: Hub split (Hub ids only).
        config: Hub configuration name (Hub ids only).

    Returns:
        ``(items, report)``.

    Raises:
        DataFormatError: malformed input with ``strict=True``, or an undetectable format.
        ValueError: for a format that does not hold open-domain questions.

    Example:
        >>> items, report = load_qa("triviaqa.jsonl")  # doctest: +SKIP
    """
    raws, report, fmt = _read(source, format, strict, split, config)
    name = source_name(source)
    if fmt == "consistency":
        samples = _parse_all(raws, report, strict, lambda r, q: parse_consistency(r.data, q, name))
        items = [s.to_qa_item() for s in samples]
    elif fmt == "open_qa":

        def parse(raw: RawRecord, qid: str) -> QAItem:
            if qid_key is not None:
                qid = record_qid(raw.data, raw.qid, qid, qid_key=qid_key)
            return parse_open_qa(
                raw.data, qid, name, question_key=question_key, answer_key=answer_key
            )

        items = _parse_all(raws, report, strict, parse)
    else:
        raise DataError(
            f"format {fmt!r} holds no open-domain questions",
            file=source,
            hint="give an open-QA or consistency-samples file (question + gold answers)",
        )
    _finish(report, items)
    return items, report


def load_consistency(
    source: str | Path, strict: bool = False
) -> tuple[list[ConsistencySample], LoadReport]:
    """Load a consistency-samples file (k responses + judge verdicts per question).

    Lines are ``{"<qid>": {"question", "responses", "judges", "ground_truth"}}`` (the TriviaQA
    file has 10 responses per question, the BioASQ file one).

    Returns:
        ``(samples, report)``.

    Raises:
        DataFormatError: malformed input with ``strict=True``.
    """
    raws, report, _ = _read(source, "consistency", strict, "train", None)
    name = source_name(source)
    samples = _parse_all(raws, report, strict, lambda r, q: parse_consistency(r.data, q, name))
    _finish(report, samples)
    return samples, report


def load_judged(
    source: str | Path,
    label_key: str | None = None,
    split: str | None = None,
    strict: bool = False,
) -> tuple[list[JudgedSample], LoadReport]:
    """Load judged responses: question + response + hallucination label (1 = hallucinated).

    Labels: ``label`` (0/1 or hallucinated/faithful), ``hallucinated`` (bool) or ``correct``
    (bool, inverted); optional ``answer_text`` (must be a substring of the response),
    ``answer_tokens``, ``aliases`` and ``split`` are kept.

    Args:
        source: a local file or Hub id.
        label_key: the label column when it is not one of the above.
        split: set ``JudgedSample.split`` on every sample (else a ``split`` column, else ``None``).
        strict: raise on the first malformed record.

    Returns:
        ``(samples, report)``.
    """
    raws, report, _ = _read(source, "judged", strict, split or "train", None)
    name = source_name(source)

    def parse(raw: RawRecord, qid: str) -> JudgedSample:
        return parse_judged(
            raw.data,
            qid,
            name,
            split=split,
            label_key=label_key,
            meta={"file": report.file, "line": raw.line},
        )

    samples = _parse_all(raws, report, strict, parse)
    _finish(report, samples)
    return samples, report


def split_from_name(path: str | Path) -> str | None:
    """``"train"`` / ``"validation"`` / ``"test"`` when the file name says so, else ``None``."""
    m = _SPLIT_IN_NAME.search(Path(path).stem.lower())
    if not m:
        return None
    word = m.group(1)
    return {"valid": "validation", "dev": "validation"}.get(word, word)


def release_qids_path(responses_path: str | Path) -> Path:
    """The id file that goes with a release responses file.

    ``X_answer_tokens_<split>.jsonl`` -> ``X_<split>_qids.json`` (the paper's naming).

    Raises:
        DataError: when the name does not follow that pattern.
    """
    path = Path(responses_path)
    m = re.match(r"^(?P<stem>.+)_answer_tokens_(?P<split>[A-Za-z]+)$", path.stem)
    if not m:
        raise DataError(
            "cannot infer the qids file (expected *_answer_tokens_<split>.jsonl)",
            file=path,
            hint="pass qids_path, or name the file as the release does",
        )
    return path.with_name(f"{m['stem']}_{m['split']}_qids.json")


def read_qids(path: str | Path) -> tuple[dict[str, int], int]:
    """Read a ``{"t": [...], "f": [...]}`` id file into ``{qid: label}`` (t -> 0, f -> 1).

    Returns:
        ``(labels, n_repeated)``: the labels and how many list entries repeat an id already
        listed with the same label (the released Mistral-24B train list repeats 23 "f" ids).

    Raises:
        DataFormatError: on a bad layout or an id listed under both ``t`` and ``f``.
    """
    path = Path(path)
    try:
        doc = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            "no qids file beside the responses file",
            file=path,
            hint='give the {"t": [...], "f": [...]} id file of the release (qids_path)',
        ) from None
    except UnicodeDecodeError:
        raise DataFormatError(str(path), None, "<text>", "not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise DataFormatError(
            str(path), err.lineno, "<json>", f"unparseable JSON ({err.msg})"
        ) from err
    if not isinstance(doc, Mapping) or not {"t", "f"} <= set(doc):
        raise DataFormatError(str(path), 1, "<json>", 'expected {"t": [...], "f": [...]}')
    labels: dict[str, int] = {}
    n_repeated = 0
    for key, label in (("t", FAITHFUL), ("f", HALLUCINATED)):
        if not isinstance(doc[key], list):
            raise DataFormatError(str(path), 1, key, "expected a list of ids")
        for qid in doc[key]:
            qid = str(qid)
            if labels.get(qid, label) != label:
                raise DataFormatError(
                    str(path), 1, key, f"id {qid!r} is listed under both 't' and 'f'"
                )
            n_repeated += qid in labels
            labels[qid] = label
    return labels, n_repeated


def load_release(
    responses_path: str | Path,
    qids_path: str | Path | None = None,
    split: str | None = None,
    strict: bool = False,
) -> tuple[list[JudgedSample], LoadReport]:
    """Load the H-Neurons release: responses with answer tokens, labelled by an id file.

    Every id in ``qids_path`` (``{"t": [...], "f": [...]}``) is present in its responses file in
    the released data; responses files also hold records that the id file does not list (not part
    of the balanced set): those are reported as ``"id not in qids file"``. Ids listed but absent
    from the responses file, and ids repeated within the id file, are counted in ``report.notes``. ``answer_text`` is reconstructed from
    the pieces and verified (``report.notes`` counts failures). Train/test overlaps across files are
    not resolved here: see :func:`hneuron_lens.data.splits.check_leakage` / ``assign_splits``.

    Args:
        responses_path: ``*_answer_tokens_<split>.jsonl``.
        qids_path: the id file; default: inferred by :func:`release_qids_path`.
        split: ``JudgedSample.split``; default: from the file name.
        strict: raise on the first malformed record (unlisted ids are never an error).

    Returns:
        ``(samples, report)`` in file order.
    """
    qpath = Path(qids_path) if qids_path is not None else release_qids_path(responses_path)
    labels, n_repeated = read_qids(qpath)
    split = split or split_from_name(responses_path)
    raws, report, _ = _read(responses_path, "release", strict, "train", None)
    name = source_name(responses_path)
    unlisted: list[int] = []

    def parse(raw: RawRecord, qid: str) -> JudgedSample | None:
        if qid not in labels:
            unlisted.append(raw.line)
            return None
        meta = {"file": report.file, "line": raw.line}
        return parse_release(raw.data, qid, labels[qid], name, split, meta=meta)

    parsed = _parse_all(raws, report, strict, parse)
    samples = [s for s in parsed if s is not None]
    for line in unlisted:
        report.skip(line, "<qid>", "id not in qids file")
    missing = set(labels) - {s.qid for s in samples} - _skipped_ids(raws, report)
    if missing:
        report.notes["qids file id not in responses"] = len(missing)
    if n_repeated:
        report.notes["repeated id in qids file"] = n_repeated
    for s in samples:
        if "answer_text" in s.meta:
            report.notes[f"answer_text None: {s.meta['answer_text']}"] += 1
    _finish(report, samples)
    return samples, report


def _skipped_ids(raws: list[RawRecord], report: LoadReport) -> set[str]:
    lines = {s.line for s in report.skipped}
    return {r.qid for r in raws if r.line in lines and r.qid is not None}


def _medmcqa_base(raws: list[RawRecord], answer_key: str) -> int:
    """Index base of MedMCQA ``cop``: 0 if any value is 0, 1 if any is 4, else ambiguous.

    The Hub copy (``openlifescienceai/medmcqa``) stores 0..3; the original release JSON 1..4.

    Raises:
        ValueError: when only values 1..3 occur (pass ``answer_base``).
    """
    values = set()
    for raw in raws:
        v = raw.data.get(answer_key)
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, int | float) and not isinstance(v, bool):
            values.add(int(v))
    if 0 in values:
        return 0
    if 4 in values:
        return 1
    raise ValueError(
        f"MedMCQA {answer_key!r} values {sorted(values)} do not show whether it is 0- or 1-based; pass answer_base=0 (Hub copy) or 1 (original release)"
    )


def load_multiple_choice(
    source: str | Path,
    layout: str | None = None,
    question_key: str | None = None,
    options_key: str | None = None,
    answer_key: str | None = None,
    answer_base: int | None = None,
    strict: bool = False,
    split: str = "test",
    config: str | None = None,
) -> tuple[list[MCItem], LoadReport]:
    """Load multiple-choice questions (MMLU, MedQA, MedMCQA or explicit keys).

    Args:
        source: a local file or Hub id.
        layout: ``"mmlu"``, ``"medqa"``, ``"medmcqa"`` or ``"keys"``; ``None`` detects it from the
            first record (``"keys"`` when ``options_key`` is given).
        question_key: question column (layout ``"keys"``, or to override a layout's default).
        options_key: options column: a list, a letter -> text mapping, or a list of ``{key, value}``.
        answer_key: answer column: an index (``answer_base``-based), a letter, or the option text.
        answer_base: index base of integer answers. Default 0, except MedMCQA where it is detected
            per file (0 if any ``cop`` is 0, 1 if any is 4; ambiguous files raise).
        strict: raise on the first malformed record.
        split: Hub split (Hub ids only).
        config: Hub configuration (Hub ids only; e.g. the MMLU subject).

    Returns:
        ``(items, report)``.
    """
    if layout is not None and layout not in MC_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {MC_LAYOUTS}")
    if answer_base not in (None, 0, 1):
        raise ValueError(f"answer_base must be 0 or 1, got {answer_base!r}")
    raws, report, _ = _read(source, "multiple_choice", strict, split, config)
    if layout is None:
        if options_key is not None:
            layout = "keys"
        else:
            for raw in raws:
                try:
                    layout = detect_mc_layout(raw.data)
                    break
                except FieldError:
                    continue
            if layout is None:
                raise DataFormatError(
                    report.file,
                    raws[0].line if raws else 1,
                    "<record>",
                    "unknown multiple-choice layout; pass layout= or question_key/options_key/answer_key",
                )
    if answer_base is None:
        answer_base = _medmcqa_base(raws, answer_key or "cop") if layout == "medmcqa" else 0
    report.format = f"multiple_choice/{layout}"
    name = source_name(source)

    def parse(raw: RawRecord, qid: str) -> MCItem:
        return parse_multiple_choice(
            raw.data,
            qid,
            name,
            layout,
            question_key=question_key,
            options_key=options_key,
            answer_key=answer_key,
            answer_base=answer_base,
        )

    items = _parse_all(raws, report, strict, parse)
    _finish(report, items)
    return items, report
