"""The collection stage: sample k answers per question and save them, resumably.

Gao et al. 2025 (H-Neurons, arXiv:2512.01797, Sec. 3.1) sample k=10 answers per TriviaQA question
at T=1.0, top-k 50, top-p 0.9 with the instruction "Respond with the answer only, without any
explanation.", judge each answer against the gold aliases and keep the questions answered
correctly 10/10 (faithful) or wrongly 0/10 (hallucinated). :func:`collect` does the sampling;
:func:`judge_collected` the judging and the consistency filter.

The output is an append-only JSONL file: a header line with the settings and their hash, then
one line per question (qid, question, aliases, kind, responses, finish reasons, settings hash),
flushed after every ``write_every`` questions. Running :func:`collect` again on the same file
skips the questions already there, so a killed run resumes where it stopped; a truncated last
line (the kill came mid-write) is reported and cut off. A file written with different settings
(or another model) is refused rather than mixed. Every (question, sample) row samples from its own
generator seeded by the question id, so a resumed run writes what an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from hneuron_lens.data.records import JudgedSample, QAItem
from hneuron_lens.errors import DataError
from hneuron_lens.generation import (
    SAMPLER,
    GenerationConfig,
    GenerationStats,
    build_prompt_ids,
    generate,
    has_chat_template,
)
from hneuron_lens.io import atomic_write_text, check_output_file, library_version, loads_json

logger = logging.getLogger(__name__)

FORMAT = "hneuron_lens.collect"
FORMAT_VERSION = 1
PAPER_SUFFIX = "Respond with the answer only, without any explanation."
"""The paper's answer instruction, appended to every question."""

Mode = Literal["sample", "greedy", "single"]


@dataclass
class CollectConfig:
    """Settings of :func:`collect`. Defaults are the paper's."""

    k: int = 10
    """Responses per question in ``mode="sample"``."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_k: int | None = 50
    """Top-k filter (``None`` or 0: off)."""
    top_p: float = 0.9
    """Nucleus (top-p) filter (1.0: off)."""
    max_new_tokens: int = 50
    """Most tokens per response."""
    suffix: str | None = PAPER_SUFFIX
    """Instruction appended to each question (``None``: the bare question)."""
    mode: Mode = "sample"
    """``"sample"``: k sampled responses (collection); ``"single"``: one sampled response
    (evaluation sets); ``"greedy"``: one greedy response."""
    batch_size: int = 16
    """Sequences per forward pass (does not change the outputs)."""
    seed: int = 0
    """Base seed; each (question, sample) row is seeded from it and the question id."""
    system: str | None = None
    """Optional system message (chat) or preamble line (base prompts)."""
    chat: bool | None = None
    """Use the chat template: ``None`` = when the tokenizer has one."""
    stop_at_newline: bool | None = None
    """Stop at the first newline after some text: ``None`` = for base (non-chat) prompts only."""
    stop_at_sentence: bool = False
    """Stop each response at the end of its first sentence (see
    :attr:`hneuron_lens.generation.GenerationConfig.stop_at_sentence`): for short-answer prompts
    the answer is the first sentence, and the rambling after it costs most of the forward
    passes. Off by default (the paper judges whole responses); ``hneuron-lens run`` turns it on."""
    write_every: int = 16
    """Questions generated and appended to the file together (does not change the outputs);
    raised to ``ceil(batch_size / n_samples)`` when smaller, so every batch can be full."""
    progress: bool = True
    """Show a tqdm progress bar over questions."""

    def __post_init__(self) -> None:
        if self.mode not in ("sample", "greedy", "single"):
            raise ValueError(f"mode must be 'sample', 'greedy' or 'single', got {self.mode!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.write_every < 1:
            raise ValueError(f"write_every must be >= 1, got {self.write_every}")
        self.generation_config(chat=True)  # validates the sampling fields

    @property
    def n_samples(self) -> int:
        """Responses per question: ``k`` in ``"sample"`` mode, else 1."""
        return self.k if self.mode == "sample" else 1

    def generation_config(self, chat: bool) -> GenerationConfig:
        """The :class:`GenerationConfig` for prompts in chat (or base) format."""
        newline = (not chat) if self.stop_at_newline is None else self.stop_at_newline
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.mode != "greedy",
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            num_samples=self.n_samples,
            batch_size=self.batch_size,
            seed=self.seed,
            stop_at_newline=newline,
            stop_at_sentence=self.stop_at_sentence,
            progress=False,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CollectConfig fields: {sorted(unknown)}")
        return cls(**dict(data))


_NOT_HASHED = ("batch_size", "write_every", "progress")
"""CollectConfig fields that do not change the outputs, so a run may resume with other values."""


@dataclass(frozen=True)
class CollectedQuestion:
    """One question's line of a collection file."""

    qid: str
    question: str
    aliases: tuple[str, ...]
    kind: str
    source: str
    responses: tuple[str, ...]
    """The generated responses (decoded, special tokens skipped)."""
    finish_reasons: tuple[str, ...]
    """``"eos"``, ``"newline"`` or ``"length"`` per response."""
    n_tokens: tuple[int, ...]
    """Generated tokens per response."""
    settings_hash: str
    """Hash of the settings (and model) that produced the responses."""

    @property
    def item(self) -> QAItem:
        """The question as a :class:`QAItem`."""
        return QAItem(self.qid, self.question, self.aliases, self.source, self.kind)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("aliases", "responses", "finish_reasons", "n_tokens"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CollectedQuestion:
        return cls(
            qid=str(d["qid"]),
            question=str(d["question"]),
            aliases=tuple(d.get("aliases", ())),
            kind=str(d.get("kind", "qa")),
            source=str(d.get("source", "")),
            responses=tuple(d["responses"]),
            finish_reasons=tuple(d.get("finish_reasons", ())),
            n_tokens=tuple(int(n) for n in d.get("n_tokens", ())),
            settings_hash=str(d.get("settings_hash", "")),
        )


@dataclass
class CollectResult:
    """What one :func:`collect` call did."""

    path: Path
    """The JSONL file."""
    settings_hash: str
    """Hash of the settings and model."""
    n_questions: int
    """Questions asked for."""
    n_resumed: int
    """Of those, already in the file (skipped)."""
    n_generated: int
    """Questions generated and written by this call."""
    stats: GenerationStats
    """How this call's responses ended (length = hit ``max_new_tokens``)."""
    seconds: float
    """Wall time of this call."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The hashed settings (see the file's header line)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["stats"] = self.stats.to_dict()
        return d


def settings_for(model: Any, cfg: CollectConfig) -> dict[str, Any]:
    """The settings a collection file depends on: config (minus batching), prompt format, model."""
    from hneuron_lens.models import model_identity

    chat = has_chat_template(model.tokenizer) if cfg.chat is None else cfg.chat
    ident = model_identity(model)
    hashed = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_HASHED}
    hashed["chat"] = chat
    hashed["stop_at_newline"] = cfg.generation_config(chat).stop_at_newline
    hashed["n_samples"] = cfg.n_samples
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sampler": SAMPLER,
        "collect": hashed,
        "model": {"name": ident["name"], "weights_sha256": ident["weights_sha256"]},
    }


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Short sha256 of the canonical JSON of ``settings``."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def qid_seed(qid: str) -> int:
    """A stable 63-bit integer for a question id (the row seeds derive from it)."""
    return int.from_bytes(hashlib.sha256(qid.encode()).digest()[:8], "little") >> 1


_LINE_HEADS = (b'{"type": "header"', b'{"type": "question"')
"""How every line :func:`collect` writes begins: only a cut-off line that starts like one of
these (or is a prefix of one) is taken for an interrupted write and cut away on resume."""


@dataclass
class _FileState:
    header: dict[str, Any] | None
    records: dict[str, dict[str, Any]]
    good_bytes: int
    """Length of the complete-lines prefix (the truncated tail starts here)."""
    truncated: bool


def _read_file(path: Path) -> _FileState:
    """Parse a collection file, tolerating only a truncated (newline-less) last line.

    Raises:
        DataError: a damaged line before the last, or lines that are not a collection's.
    """
    hint = (
        "this is not (or no longer) a collection file written by `hneuron-lens collect`: "
        "give a new --out path, or repair the line"
    )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the collection file ({err.strerror})", file=path) from None
    header: dict[str, Any] | None = None
    records: dict[str, dict[str, Any]] = {}
    end = data.rfind(b"\n") + 1  # complete lines end here
    tail = data[end:]
    for lineno, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            obj = loads_json(raw)
        except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for binary data
            raise DataError(
                f"line {lineno} is not valid JSON ({type(err).__name__}); the file is damaged "
                "in the middle, not just truncated at the end",
                file=path,
                line=lineno,
                hint=hint,
            ) from None
        if not isinstance(obj, dict):
            raise DataError("not a JSON object", file=path, line=lineno, hint=hint)
        if obj.get("type") == "header":
            if header is not None:
                raise DataError("a second header", file=path, line=lineno, hint=hint)
            header = obj
        elif "qid" in obj:
            records[str(obj["qid"])] = obj
        else:
            raise DataError(
                "neither a header nor a question record", file=path, line=lineno, hint=hint
            )
    truncated = bool(tail.strip())
    if truncated and not any(
        tail.startswith(head) or head.startswith(tail) for head in _LINE_HEADS
    ):
        raise DataError(
            "the last line is incomplete and is not one that collect writes",
            file=path,
            line=data[:end].count(b"\n") + 1,
            hint=hint,
        )
    if truncated:
        logger.warning(
            "%s: ignoring a truncated last line (%d bytes, an interrupted write)", path, len(tail)
        )
    return _FileState(header, records, end, truncated)


def load_collected(path: str | os.PathLike[str]) -> dict[str, CollectedQuestion]:
    """Read a collection file: qid -> :class:`CollectedQuestion`, in file order.

    A truncated last line is ignored with a warning; any other bad line raises ``ValueError``.
    """
    state = _read_file(Path(path))
    return {qid: CollectedQuestion.from_dict(d) for qid, d in state.records.items()}


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: file has {a!r}, now {b!r}"]


def question_chunks(items: Sequence[QAItem], cfg: CollectConfig) -> list[list[QAItem]]:
    """``items`` in the groups :func:`collect` generates and appends together: runs of
    ``max(cfg.write_every, ceil(cfg.batch_size / cfg.n_samples))`` questions, in order.

    A data-parallel run (:func:`hneuron_lens.distributed.collect_distributed`) gives group
    ``k`` to rank ``k % world_size``: each group is the same generation call a single process
    makes, so every response is the same.

    Example:
        >>> cfg = CollectConfig(k=2, batch_size=4, write_every=1)
        >>> [[it.qid for it in c] for c in question_chunks([QAItem(q, "?", ()) for q in "abcde"], cfg)]
        [['a', 'b'], ['c', 'd'], ['e']]
    """
    per_call = max(cfg.write_every, -(-cfg.batch_size // cfg.n_samples))
    return [list(items[i : i + per_call]) for i in range(0, len(items), per_call)]


def open_collection(
    path: str | os.PathLike[str], settings: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Make ``path`` ready to append to: write the header when the file is new (or empty),
    else check it was written with these ``settings`` and cut off a truncated last line.

    Returns:
        The question records already in the file (qid -> parsed line), in file order.

    Raises:
        DataError: written with other settings or another model; not a collection file;
            damaged before its last line.
    """
    path = Path(path)
    shash = settings_hash(settings)
    if path.exists() and path.stat().st_size > 0:
        state = _read_file(path)
        if state.header is None and state.records:
            raise DataError(
                "has question lines but no header: not a collection file",
                file=path,
                hint="give a new --out path",
            )
        if state.header is not None:
            if state.header.get("settings_hash") != shash:
                changes = _diff(state.header.get("settings", {}), settings)
                raise DataError(
                    f"collected with other settings (hash {state.header.get('settings_hash')} "
                    f"!= {shash}); refusing to mix them. Differences: "
                    f"{'; '.join(changes) or 'unknown'}",
                    file=path,
                    hint="use a new output path",
                )
            if state.truncated:
                with open(path, "r+b") as fh:
                    fh.truncate(state.good_bytes)
            return state.records
    # new, empty, or only a cut-off header line: start the file (again)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "type": "header",
        "settings_hash": shash,
        "settings": dict(settings),
        "library_version": library_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with open(path, "wb") as fh:
        fh.write((json.dumps(header) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())
    return {}


def collect(
    model: Any,
    items: Sequence[QAItem],
    cfg: CollectConfig | None,
    out_path: str | os.PathLike[str],
    *,
    shard: tuple[int, int] | None = None,
    exclude: Collection[str] = (),
    on_write: Callable[[list[str]], None] | None = None,
) -> CollectResult:
    """Generate ``cfg.n_samples`` responses per question and append them to ``out_path``.

    Args:
        model: a ``TransformerBridge`` with a tokenizer (loaded by the caller).
        items: the questions; qids must be unique.
        cfg: settings (default :class:`CollectConfig`, the paper's).
        out_path: JSONL output. If it exists, its questions are skipped (resume).
        shard: ``(rank, world_size)``: generate only the groups of
            :func:`question_chunks` (over all ``items``) whose index is ``rank`` modulo
            ``world_size`` (data-parallel collection; see
            :func:`hneuron_lens.distributed.collect_distributed`).
        exclude: qids not to generate (e.g. already in a data-parallel run's target file).
        on_write: called with the qids of every group once it is appended and synced to disk.

    Returns:
        A :class:`CollectResult` (counts, generation stats, settings hash).

    Raises:
        ValueError: duplicate qids; ``out_path`` was written with other settings or another
            model; ``out_path`` is damaged before its last line.

    Example:
        >>> import tempfile, os
        >>> from hneuron_lens.testing import tiny_model
        >>> from hneuron_lens.data.records import QAItem
        >>> items = [QAItem("q1", "Who wrote Hamlet?", ("Shakespeare",))]
        >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
        >>> cfg = CollectConfig(k=2, max_new_tokens=4, progress=False)
        >>> res = collect(tiny_model("llama"), items, cfg, path)
        >>> res.n_generated, len(load_collected(path)["q1"].responses)
        (1, 2)
    """
    cfg = cfg or CollectConfig()
    t0 = time.perf_counter()
    path = Path(out_path)
    qids = [it.qid for it in items]
    if len(set(qids)) != len(qids):
        dup = sorted({q for q in qids if qids.count(q) > 1})[:5]
        raise ValueError(f"duplicate qids in items, e.g. {dup}")

    settings = settings_for(model, cfg)
    shash = settings_hash(settings)
    done = open_collection(path, settings)
    skip = set(done) | set(exclude)
    if shard is None:
        todo = [it for it in items if it.qid not in skip]
        mine = list(items)
        chunks = question_chunks(todo, cfg)
    else:
        rank, world = shard
        if world < 1 or not 0 <= rank < world:
            raise ValueError(
                f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}"
            )
        groups = question_chunks(items, cfg)[rank::world]
        mine = [it for g in groups for it in g]
        chunks = [c for c in ([it for it in g if it.qid not in skip] for g in groups) if c]
        todo = [it for c in chunks for it in c]
    n_resumed = len(mine) - len(todo)
    if n_resumed:
        logger.info("%s: resuming, %d of %d questions already done", path, n_resumed, len(mine))

    chat = bool(settings["collect"]["chat"])
    gen_cfg = cfg.generation_config(chat)
    # one length warning for the whole call (below), not one per group of questions
    quiet_cfg = replace(gen_cfg, warn_length_fraction=1.0)
    tok = model.tokenizer
    reasons: list[str] = []
    n_tokens: list[int] = []
    with (
        open(path, "ab") as fh,
        tqdm(
            total=len(mine), initial=n_resumed, desc="collect", unit="q", disable=not cfg.progress
        ) as bar,
    ):
        for chunk in chunks:
            prompts = [
                build_prompt_ids(tok, it.question, suffix=cfg.suffix, system=cfg.system, chat=chat)
                for it in chunk
            ]
            gens = generate(
                model, prompts, quiet_cfg, prompt_seeds=[qid_seed(it.qid) for it in chunk]
            )
            by_prompt: list[list[Any]] = [[] for _ in chunk]
            for g in gens:
                by_prompt[g.prompt_index].append(g)
            lines = []
            for it, gs in zip(chunk, by_prompt, strict=True):
                rec = CollectedQuestion(
                    qid=it.qid,
                    question=it.question,
                    aliases=tuple(it.aliases),
                    kind=it.kind,
                    source=it.source,
                    responses=tuple(g.text for g in gs),
                    finish_reasons=tuple(g.finish_reason for g in gs),
                    n_tokens=tuple(len(g.output_ids) for g in gs),
                    settings_hash=shash,
                )
                reasons += rec.finish_reasons
                n_tokens += rec.n_tokens
                lines.append(json.dumps({"type": "question", **rec.to_dict()}, ensure_ascii=False))
            fh.write(("\n".join(lines) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(chunk))
            if on_write is not None:
                on_write([it.qid for it in chunk])

    stats = GenerationStats.from_reasons(reasons, n_tokens)
    if stats.n and stats.frac_hit_max > gen_cfg.warn_length_fraction:
        logger.warning(
            "collect: %.0f%% of %d responses hit max_new_tokens=%d",
            100 * stats.frac_hit_max,
            stats.n,
            cfg.max_new_tokens,
        )
    return CollectResult(
        path=path,
        settings_hash=shash,
        n_questions=len(mine),
        n_resumed=n_resumed,
        n_generated=len(todo),
        stats=stats,
        seconds=time.perf_counter() - t0,
        settings=settings,
    )


def is_judged_file(path: Path) -> bool:
    """A JSONL file whose first record has the fields of a :class:`JudgedSample`."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    first = loads_json(raw)
                except ValueError:
                    return False
                return isinstance(first, dict) and {"qid", "question", "response", "label"} <= set(
                    first
                )
    return True


def save_judged(
    samples: Sequence[JudgedSample], path: str | os.PathLike[str], *, overwrite: bool = True
) -> Path:
    """Write judged samples as JSONL (one :meth:`JudgedSample.to_dict` per line), atomically.

    An existing file is replaced only when it is a judged-samples file (``overwrite=True``, the
    default: it is derived from a collection and rewritten on every run); any other file is
    never replaced.

    Raises:
        OutputError: ``path`` exists and is not a judged-samples file (or ``overwrite`` is off).
    """
    path = Path(path)
    check_output_file(path, "judged-samples file", recognise=is_judged_file, regenerate=overwrite)
    atomic_write_text(path, "".join(json.dumps(s.to_dict()) + "\n" for s in samples))
    return path


def judge_collected(
    collected: Mapping[str, CollectedQuestion] | Sequence[CollectedQuestion],
    judge: Any = None,
) -> tuple[list[JudgedSample], Any]:
    """Judge every response and keep the consistent questions (the paper's 10/10 and 0/10).

    Args:
        collected: from :func:`load_collected` (or a list of :class:`CollectedQuestion`).
        judge: ``None`` (the rule judge with default settings), a ``JudgeConfig`` (the rule
            judge with those settings), or an object with ``judge_item(item, response)``
            returning a ``Judgement`` (e.g. an ``LLMJudge``).

    Returns:
        ``(samples, funnel)``: the kept questions with their modal response, labelled
        FAITHFUL / HALLUCINATED, and the ``Funnel`` of counts.
    """
    from hneuron_lens import judge as judge_mod

    questions = list(collected.values()) if isinstance(collected, Mapping) else list(collected)
    if judge is None or isinstance(judge, judge_mod.JudgeConfig):
        cfg = judge

        def one(item: QAItem, response: str) -> Any:
            return judge_mod.judge_response(response, item.aliases, cfg, kind=item.kind)

    elif hasattr(judge, "judge_item"):
        one = judge.judge_item
    else:
        raise TypeError(f"judge must be None, a JudgeConfig or have judge_item(); got {judge!r}")

    items = [q.item for q in questions]
    responses = {q.qid: list(q.responses) for q in questions}
    judgements = {
        q.qid: [one(item, r) for r in q.responses] for q, item in zip(questions, items, strict=True)
    }
    result = judge_mod.consistency_filter(items, responses, judgements)
    return result.samples, result.funnel
