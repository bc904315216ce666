"""Extraction: judged samples -> answer spans -> CETT -> an :class:`ActivationStore`.

The only orchestration of the engine (:mod:`hneuron_lens.spans`, :mod:`hneuron_lens.cett`,
:mod:`hneuron_lens.models`): :func:`extract` writes every sample's CETT vectors into a store
(resumable: a killed run continues where it stopped and ends identical to an uninterrupted one),
:func:`compute_features` returns the same vectors in memory for a few samples (a saved probe
scoring new data). :func:`build_fingerprint` records everything the stored values depend on
(model identity, tokenizer, chat template, CETT and span configs, library version), which the
store compares on every open.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from hneuron_lens.cett import CETTConfig, cett, collate, length_buckets
from hneuron_lens.data.records import JudgedSample
from hneuron_lens.errors import DataError, UsageError
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.io import library_version, sha256_json, to_jsonable
from hneuron_lens.models import context_length, model_identity, neuron_sites
from hneuron_lens.spans import (
    SpanConfig,
    chat_template_fingerprint,
    pad_token_id,
    tokenize_samples,
)
from hneuron_lens.store import ActivationStore, StoreMismatchError

logger = logging.getLogger(__name__)

TooLong = Literal["error", "skip", "truncate"]
TOO_LONG = ("error", "skip", "truncate")
"""What to do with a sample longer than the model's context: refuse the whole call (naming
how many and which), leave it out (counted in the report), or keep its first ``n_ctx`` tokens
(left out if its answer lies beyond them)."""


def sample_sha256(sample: JudgedSample) -> str:
    """sha256 over the fields of a sample that CETT features depend on."""
    return sha256_json(
        {
            "qid": sample.qid,
            "question": sample.question,
            "response": sample.response,
            "label": int(sample.label),
            "answer_text": sample.answer_text,
            "answer_tokens": list(sample.answer_tokens) if sample.answer_tokens else None,
            "aliases": list(sample.aliases),
        }
    )


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """Class, name, vocabulary size and a sha256 of the vocabulary and special tokens."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    special = {
        k: getattr(tokenizer, k, None) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
    }
    return {
        "class": type(tokenizer).__name__,
        "name": str(getattr(tokenizer, "name_or_path", "") or ""),
        "vocab_size": len(vocab) if vocab else int(getattr(tokenizer, "vocab_size", 0) or 0),
        "vocab_sha256": sha256_json({"vocab": sorted(vocab.items()), "special": special}),
    }


def _config_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if hasattr(cfg, "to_dict"):
        return to_jsonable(cfg.to_dict())
    return to_jsonable(asdict(cfg))


def build_fingerprint(
    model: Any,
    cfg: Any,
    span_cfg: Any,
    tokenizer: Any | None = None,
) -> dict[str, Any]:
    """Everything the stored feature values depend on, as a JSON-able dict.

    Args:
        model: the ``TransformerBridge`` features are computed on.
        cfg: the :class:`~hneuron_lens.cett.CETTConfig`.
        span_cfg: the :class:`~hneuron_lens.spans.SpanConfig`.
        tokenizer: defaults to ``model.tokenizer``.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    return to_jsonable(
        {
            "model": model_identity(model),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "chat_template": chat_template_fingerprint(tokenizer),
            "cett_config": _config_dict(cfg),
            "span_config": _config_dict(span_cfg),
            "library_version": library_version(),
        }
    )


def store_fingerprint(
    model: Any, cfg: Any, span_cfg: Any, too_long: str = "error"
) -> dict[str, Any]:
    """The fingerprint :func:`extract` binds a store to: :func:`build_fingerprint`, plus
    ``truncate_to_context`` (the model's context) when ``too_long="truncate"``."""
    fingerprint = build_fingerprint(model, cfg, span_cfg, model.tokenizer)
    if too_long == "truncate":
        fingerprint["truncate_to_context"] = context_length(model)
    return fingerprint


@dataclass
class ExtractReport:
    """What :func:`extract` did."""

    n_requested: int
    """Samples passed in."""
    n_cached: int
    """Samples already in the store (nothing computed for them)."""
    n_extracted: int
    """Samples computed and written by this call."""
    n_skipped: int
    """Samples the span step could not use (see ``skipped``)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(sample_id, reason)`` for every skipped sample."""
    seconds: float = 0.0
    """Wall time of the call."""
    samples_per_s: float = 0.0
    """``n_extracted / seconds`` (0 when nothing was extracted)."""
    store: str = ""
    """The store directory."""
    span_methods: dict[str, int] = field(default_factory=dict)
    """How many extracted samples' answer spans each method found."""
    n_truncated: int = 0
    """Samples cut to the model's context (``too_long="truncate"``) and kept."""

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """How many samples were skipped for each reason."""
        return dict(Counter(reason for _, reason in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    def __str__(self) -> str:
        lines = [
            f"extract -> {self.store}: {self.n_requested} requested, {self.n_cached} cached, "
            f"{self.n_extracted} extracted, {self.n_skipped} skipped "
            f"in {self.seconds:.1f} s ({self.samples_per_s:.1f} samples/s)"
        ]
        if self.n_truncated:
            lines.append(f"  truncated to the model's context: {self.n_truncated}")
        if self.span_methods:
            lines.append(
                "  span methods: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.span_methods.items()))
            )
        for reason, count in sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {count}: {reason}")
        return "\n".join(lines)


def _configs(
    cfg: Any | None, span_cfg: Any | None, batch_size: int, too_long: str = "error"
) -> tuple[Any, Any]:
    """The CETT and span configs (defaults for ``None``), after checking the other options."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    if too_long not in TOO_LONG:
        raise UsageError(f"too_long must be one of {TOO_LONG}, got {too_long!r}", field="too_long")
    return (
        cfg if cfg is not None else CETTConfig(),
        span_cfg if span_cfg is not None else SpanConfig(),
    )


def max_chars_per_token(tokenizer: Any) -> int:
    """The most characters of text one token of ``tokenizer`` can stand for (its longest
    vocabulary entry, at least 1): a text longer than ``n_ctx`` times this cannot fit."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return max((len(piece) for piece in vocab), default=64) or 1


def fit_to_context(
    model: Any, samples: Sequence[JudgedSample], too_long: str = "error"
) -> tuple[list[JudgedSample], list[tuple[str, str]]]:
    """Cheap first check of sample lengths against the model's context, before tokenising.

    A sample whose question and response hold more characters than ``n_ctx`` tokens can cover
    (:func:`max_chars_per_token`) is certainly too long: refused (``"error"``), left out
    (``"skip"``) or, for ``"truncate"``, its response is cut to that many characters (the token
    cut to exactly ``n_ctx`` follows after tokenising). A 50 MB line is refused in milliseconds
    instead of being tokenised and run. Exact token counts are checked by :func:`extract`.

    Returns:
        ``(samples, skipped)``: the samples to tokenise and ``(qid, reason)`` for those left out.

    Raises:
        DataError: ``too_long="error"`` and some sample is too long (the message counts them).
    """
    if too_long not in TOO_LONG:
        raise UsageError(f"too_long must be one of {TOO_LONG}, got {too_long!r}", field="too_long")
    n_ctx = context_length(model)
    if n_ctx is None:
        return list(samples), []
    limit = n_ctx * max_chars_per_token(model.tokenizer)
    over = [s for s in samples if len(s.question) + len(s.response) > limit]
    if not over:
        return list(samples), []
    reason = f"longer than the model's context ({n_ctx} tokens)"
    if too_long == "error":
        _refuse_too_long(
            [(s.qid, f"{len(s.question) + len(s.response):,} characters") for s in over],
            len(samples),
            n_ctx,
        )
    if too_long == "skip":
        bad = {s.qid for s in over}
        return [s for s in samples if s.qid not in bad], [(s.qid, reason) for s in over]
    cut = {s.qid: replace(s, response=s.response[: max(0, limit - len(s.question))]) for s in over}
    return [cut.get(s.qid, s) for s in samples], []


def _refuse_too_long(examples: list[tuple[str, str]], n: int, n_ctx: int) -> None:
    shown = ", ".join(f"{qid} ({size})" for qid, size in examples[:3])
    raise DataError(
        f"{len(examples)} of {n} samples are longer than the model's context of {n_ctx} "
        f"tokens, e.g. {shown}",
        field="response",
        hint="shorten them, leave them out (--too-long skip; too_long='skip') or keep their first "
        f"{n_ctx} tokens (--too-long truncate; too_long='truncate')",
    )


def _apply_context(
    tokenized: list[Any], n_ctx: int | None, too_long: str, n_samples: int
) -> tuple[list[Any], list[tuple[str, str]], list[str]]:
    """Exact token-count check after tokenising: ``(kept, skipped, truncated ids)``."""
    if n_ctx is None:
        return tokenized, [], []
    over = [t for t in tokenized if len(t.input_ids) > n_ctx]
    if not over:
        return tokenized, [], []
    if too_long == "error":
        _refuse_too_long(
            [(t.sample_id, f"{len(t.input_ids):,} tokens") for t in over], n_samples, n_ctx
        )
    reason = f"longer than the model's context ({n_ctx} tokens)"
    skipped: list[tuple[str, str]] = []
    kept: list[Any] = []
    truncated: list[str] = []
    for t in tokenized:
        if len(t.input_ids) <= n_ctx:
            kept.append(t)
        elif too_long == "skip":
            skipped.append((t.sample_id, reason))
        elif t.answer is None or t.answer[1] > n_ctx or t.prompt_end >= n_ctx:
            skipped.append((t.sample_id, f"answer beyond the model's context ({n_ctx} tokens)"))
        else:
            kept.append(
                replace(
                    t,
                    input_ids=list(t.input_ids[:n_ctx]),
                    response_end=min(t.response_end, n_ctx),
                )
            )
            truncated.append(t.sample_id)
    return kept, skipped, truncated


def extract(
    model: Any,
    samples: list[JudgedSample],
    store: ActivationStore,
    cfg: Any | None = None,
    *,
    span_cfg: Any | None = None,
    batch_size: int = 16,
    splits: dict[str, str] | None = None,
    chunk_size: int | None = None,
    overwrite: bool = False,
    too_long: TooLong = "error",
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    exclude: Container[str] = (),
) -> ExtractReport:
    """Compute CETT features for ``samples`` and write them to ``store``; resumable.

    Samples are tokenised with ``model.tokenizer`` (:func:`hneuron_lens.spans.tokenize_samples`),
    grouped into length buckets over *all* samples (so batches, and hence values, are the same
    whether or not an earlier run was interrupted), and every batch with at least one sample
    missing from the store is run through :func:`hneuron_lens.cett.cett` under
    ``torch.no_grad()``. Chunks are written as they fill; the last partial chunk at the end.
    Killed at any moment, a rerun continues where it stopped and the store ends identical to an
    uninterrupted run's. The whole call is one write session: the store's lock is held from the
    fingerprint check to the last chunk, so two extractions into one store never write the same
    sample (the second gets :class:`~hneuron_lens.store.StoreBusyError`).

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        samples: judged samples with unique ``qid`` (the sample id).
        store: where to write; bound to this model/config fingerprint on first use.
        cfg: CETT config (default ``CETTConfig()``).
        span_cfg: span config (default ``SpanConfig()``).
        batch_size: samples per forward pass.
        splits: ``{qid: split}``; overrides ``JudgedSample.split``.
        chunk_size: rows per chunk file (default: the store's ``chunk_size``).
        overwrite: discard a store written for a different fingerprint instead of raising.
        too_long: a sample longer than the model's context (``model.cfg.n_ctx``): ``"error"``
            refuses the call before anything is computed, ``"skip"`` leaves it out (reported),
            ``"truncate"`` keeps its first ``n_ctx`` tokens (recorded in the store's
            fingerprint as ``truncate_to_context``; left out when its answer lies beyond).
        progress: show a tqdm bar (samples/s).
        shard: ``(rank, world_size)``: compute only the batches whose index in
            :func:`batch_plan` is ``rank`` modulo ``world_size`` (data-parallel extraction,
            :mod:`hneuron_lens.distributed`). Batches are planned over *all* samples, so every
            value equals the single-process run's. ``None``: every batch.
        exclude: sample ids not to compute (already stored elsewhere, e.g. the merged store
            of a data-parallel run).

    Returns:
        An :class:`ExtractReport`.

    Raises:
        StoreMismatchError: the store was written for another model/tokenizer/config, or a
            stored sample id now has different content.
        StoreBusyError: another process is writing to the store.
        DataError: no samples, duplicate qids, or samples longer than the context
            (``too_long="error"``).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    cfg, span_cfg = _configs(cfg, span_cfg, batch_size, too_long)
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise UsageError(
            f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}",
            field="shard",
        )
    if chunk_size is not None:
        if chunk_size < 1:
            raise UsageError(f"chunk_size must be >= 1, got {chunk_size}", field="chunk_size")
        store.chunk_size = int(chunk_size)
    if not samples:
        raise DataError("no samples to extract", hint="check the input file and its format")
    by_id = {s.qid: s for s in samples}
    if len(by_id) != len(samples):
        seen: set[str] = set()
        dups = sorted({s.qid for s in samples if s.qid in seen or seen.add(s.qid)})  # type: ignore[func-returns-value]
        raise DataError(
            f"duplicate sample ids (qid): {dups[:10]}",
            field="qid",
            hint="every sample needs its own id",
        )
    split_of = {s.qid: (splits or {}).get(s.qid, s.split) for s in samples}
    hashes = {s.qid: sample_sha256(s) for s in samples}
    fitted, too_long_skipped = fit_to_context(model, samples, too_long)

    tokenizer = model.tokenizer
    fingerprint = store_fingerprint(model, cfg, span_cfg, too_long)
    n_ctx = context_length(model)
    sites = neuron_sites(model)
    layout = NeuronLayout(tuple(s.d_mlp for s in sites))
    regions = list(cfg.regions)
    # Every sample is tokenised and bucketed (cached ones are skipped in the batch loop), so the
    # batches, and hence the values, do not depend on what an earlier run stored. Too-long
    # samples are refused here, before the store is touched.
    tokenized, span_report = tokenize_samples(tokenizer, fitted, span_cfg)
    tokenized, ctx_skipped, truncated = _apply_context(tokenized, n_ctx, too_long, len(samples))
    for t in tokenized:
        if t.sample_id not in by_id:
            raise RuntimeError(f"tokenize_samples returned an unknown sample id {t.sample_id!r}")
    # one write session: the lock is held from here to store.close() in the finally below
    store.open_for(fingerprint, layout=layout, regions=regions, overwrite=overwrite)
    bar = None
    try:
        cached = [sid for sid in by_id if sid in store]
        changed = [
            sid
            for sid in cached
            if store.sample_hash(sid) is not None and store.sample_hash(sid) != hashes[sid]
        ]
        if changed:
            raise StoreMismatchError(
                f"{len(changed)} samples have the same id as a stored sample but different "
                f"content (question/response/label/answer), e.g. {changed[:5]}",
                file=store.path,
                hint="use another store, or --overwrite (overwrite=True) to replace it",
            )
        n_resplit = store.assign_splits({sid: split_of[sid] for sid in cached})
        if n_resplit:
            logger.info("updated the split of %d cached samples", n_resplit)

        report = ExtractReport(
            n_requested=len(samples),
            n_cached=len(cached),
            n_extracted=0,
            n_skipped=0,
            store=str(store.path),
        )
        report.n_truncated = len([sid for sid in truncated if sid not in store])
        report.skipped = [
            (str(a), str(b))
            for a, b in [*too_long_skipped, *span_report.skipped, *ctx_skipped]
            if a not in store
        ]
        report.n_skipped = len(report.skipped)

        def skip(sample_id: str) -> bool:
            return sample_id in store or sample_id in exclude

        mine = _shard_ids(tokenized, batch_size, shard)
        todo_total = sum(1 for t in tokenized if not skip(t.sample_id) and t.sample_id in mine)
        bar = tqdm(total=todo_total, disable=not progress, unit="sample", desc="extract CETT")
        batches = _cett_batches(model, tokenized, cfg, sites, batch_size, skip=skip, shard=shard)
        for batch_samples, feats in batches:
            ids = [t.sample_id for t in batch_samples]
            store.write_batch(
                ids,
                [int(by_id[i].label) for i in ids],
                [split_of[i] for i in ids],
                feats,
                sample_hashes=[hashes[i] for i in ids],
            )
            for t in batch_samples:
                report.span_methods[t.span_method] = report.span_methods.get(t.span_method, 0) + 1
            report.n_extracted += len(ids)
            bar.update(len(ids))
    finally:
        if bar is not None:
            bar.close()
        store.close()  # flushes the partial chunk and drops the lock, also on an exception
    report.seconds = time.perf_counter() - t0
    report.samples_per_s = report.n_extracted / report.seconds if report.seconds > 0 else 0.0
    logger.info("%s", report)
    return report


def _cett_batches(
    model: Any,
    tokenized: list[Any],
    cfg: Any,
    sites: list[Any],
    batch_size: int,
    skip: Any = None,
    shard: tuple[int, int] | None = None,
) -> Iterable[tuple[list[Any], dict[str, np.ndarray]]]:
    """Run the CETT engine over length buckets of ``tokenized`` samples.

    Yields ``(samples, {region: float32 [n, n_features]})`` per batch, leaving out samples for
    which ``skip(sample_id)`` is true (a batch whose samples are all skipped is not run) and,
    with ``shard=(rank, world_size)``, every batch whose index is not ``rank`` modulo
    ``world_size``. Buckets are formed over *all* samples, so the values do not depend on what
    was skipped.
    """
    layout = NeuronLayout(tuple(s.d_mlp for s in sites))
    regions = tuple(cfg.regions)
    pad_id = pad_token_id(model.tokenizer)
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = None
    for k, bucket in enumerate(length_buckets(tokenized, batch_size)):
        if shard is not None and k % shard[1] != shard[0]:
            continue
        batch_samples = [tokenized[i] for i in bucket]
        keep = [k for k, t in enumerate(batch_samples) if skip is None or not skip(t.sample_id)]
        if not keep:
            continue
        batch = collate(batch_samples, pad_id, regions, padding_side="left", device=device)
        with torch.no_grad():
            out = cett(model, batch, cfg, sites=sites)
        keep_t = torch.as_tensor(keep, dtype=torch.long)
        feats = {
            r: layout.flatten(out[r].detach().to("cpu", torch.float32)[keep_t]).numpy()
            for r in regions
        }
        yield [batch_samples[k] for k in keep], feats


def _shard_ids(tokenized: list[Any], batch_size: int, shard: tuple[int, int] | None) -> set[str]:
    """Ids of the samples in the batches ``shard`` computes (all of them for ``None``)."""
    buckets = length_buckets(tokenized, batch_size)
    return {
        tokenized[i].sample_id
        for k, bucket in enumerate(buckets)
        if shard is None or k % shard[1] == shard[0]
        for i in bucket
    }


def batch_plan(
    model: Any,
    samples: Sequence[JudgedSample],
    *,
    span_cfg: Any | None = None,
    batch_size: int = 16,
    too_long: TooLong = "error",
) -> list[list[str]]:
    """The sample ids of every batch :func:`extract` runs, in the order it runs them.

    Samples whose answer span cannot be located (or that are too long, with
    ``too_long="skip"``) are left out, as :func:`extract` leaves them out. Batch ``k`` belongs
    to shard ``k % world_size`` of a data-parallel run; a store filled by writing these batches
    in this order has the chunk layout of a single-process run.
    """
    _, span_cfg = _configs(None, span_cfg, batch_size, too_long)
    fitted, _ = fit_to_context(model, samples, too_long)
    tokenized, _ = tokenize_samples(model.tokenizer, fitted, span_cfg)
    tokenized, _, _ = _apply_context(tokenized, context_length(model), too_long, len(samples))
    return [[tokenized[i].sample_id for i in b] for b in length_buckets(tokenized, batch_size)]


def compute_features(
    model: Any,
    samples: Sequence[JudgedSample],
    cfg: Any | None = None,
    *,
    span_cfg: Any | None = None,
    batch_size: int = 16,
    too_long: TooLong = "error",
    progress: bool = True,
) -> tuple[FeatureSplit, ExtractReport]:
    """CETT features of ``samples`` in memory (no store): what :func:`extract` would write.

    For scoring a few hundred samples with a saved probe; use :func:`extract` and an
    :class:`ActivationStore` for anything larger or worth keeping.

    Returns:
        A :class:`~hneuron_lens.features.FeatureSplit` (``features[region]`` float32
        ``[n_located, n_features]``, rows in the order of ``samples``, samples whose answer span
        could not be located left out) and an :class:`ExtractReport` listing those skipped, with
        the reason. ``too_long`` is as for :func:`extract` (truncation is not recorded anywhere:
        the report counts it).

    Raises:
        DataError: samples longer than the model's context with ``too_long="error"``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    cfg, span_cfg = _configs(cfg, span_cfg, batch_size, too_long)
    sites = neuron_sites(model)
    layout = NeuronLayout(tuple(s.d_mlp for s in sites))
    fitted, too_long_skipped = fit_to_context(model, samples, too_long)
    tokenized, span_report = tokenize_samples(model.tokenizer, fitted, span_cfg)
    tokenized, ctx_skipped, truncated = _apply_context(
        tokenized, context_length(model), too_long, len(samples)
    )
    report = ExtractReport(
        n_requested=len(samples), n_cached=0, n_extracted=0, n_skipped=0, store=""
    )
    report.skipped = [
        (str(a), str(b)) for a, b in [*too_long_skipped, *span_report.skipped, *ctx_skipped]
    ]
    report.n_skipped = len(report.skipped)
    report.n_truncated = len(truncated)
    rows: dict[str, dict[str, np.ndarray]] = {}
    with tqdm(total=len(tokenized), disable=not progress, unit="sample", desc="CETT") as bar:
        for batch_samples, feats in _cett_batches(model, tokenized, cfg, sites, batch_size):
            for k, t in enumerate(batch_samples):
                rows[t.sample_id] = {r: feats[r][k] for r in feats}
                report.span_methods[t.span_method] = report.span_methods.get(t.span_method, 0) + 1
            bar.update(len(batch_samples))
    located = [s for s in samples if s.qid in rows]
    report.n_extracted = len(located)
    n_features = layout.n_features
    features = {
        r: np.stack([rows[s.qid][r] for s in located])
        if located
        else np.zeros((0, n_features), np.float32)
        for r in cfg.regions
    }
    split = FeatureSplit(
        features,
        np.asarray([int(s.label) for s in located], dtype=np.int64),
        [s.qid for s in located],
        layout,
    )
    report.seconds = time.perf_counter() - t0
    report.samples_per_s = report.n_extracted / report.seconds if report.seconds > 0 else 0.0
    return split, report
