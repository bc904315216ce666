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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from hneuron_lens.cett import CETTConfig, cett, collate, length_buckets
from hneuron_lens.data.records import JudgedSample
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.io import library_version, sha256_json, to_jsonable
from hneuron_lens.models import model_identity, neuron_sites
from hneuron_lens.spans import (
    SpanConfig,
    chat_template_fingerprint,
    pad_token_id,
    tokenize_samples,
)
from hneuron_lens.store import ActivationStore, StoreMismatchError

logger = logging.getLogger(__name__)


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
        if self.span_methods:
            lines.append(
                "  span methods: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.span_methods.items()))
            )
        for reason, count in sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {count}: {reason}")
        return "\n".join(lines)


def _configs(cfg: Any | None, span_cfg: Any | None, batch_size: int) -> tuple[Any, Any]:
    """The CETT and span configs (defaults for ``None``), after checking ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return (
        cfg if cfg is not None else CETTConfig(),
        span_cfg if span_cfg is not None else SpanConfig(),
    )


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
    progress: bool = True,
) -> ExtractReport:
    """Compute CETT features for ``samples`` and write them to ``store``; resumable.

    Samples are tokenised with ``model.tokenizer`` (:func:`hneuron_lens.spans.tokenize_samples`),
    grouped into length buckets over *all* samples (so batches, and hence values, are the same
    whether or not an earlier run was interrupted), and every batch with at least one sample
    missing from the store is run through :func:`hneuron_lens.cett.cett` under
    ``torch.no_grad()``. Chunks are written as they fill; the last partial chunk at the end.
    Killed at any moment, a rerun continues where it stopped and the store ends identical to an
    uninterrupted run's.

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
        progress: show a tqdm bar (samples/s).

    Returns:
        An :class:`ExtractReport`.

    Raises:
        StoreMismatchError: the store was written for another model/tokenizer/config, or a
            stored sample id now has different content.
        ValueError: duplicate qids.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    cfg, span_cfg = _configs(cfg, span_cfg, batch_size)
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        store.chunk_size = int(chunk_size)
    by_id = {s.qid: s for s in samples}
    if len(by_id) != len(samples):
        seen: set[str] = set()
        dups = sorted({s.qid for s in samples if s.qid in seen or seen.add(s.qid)})  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate sample ids (qid): {dups[:10]}")
    split_of = {s.qid: (splits or {}).get(s.qid, s.split) for s in samples}
    hashes = {s.qid: sample_sha256(s) for s in samples}

    tokenizer = model.tokenizer
    fingerprint = build_fingerprint(model, cfg, span_cfg, tokenizer)
    sites = neuron_sites(model)
    layout = NeuronLayout(tuple(s.d_mlp for s in sites))
    regions = list(cfg.regions)
    store.open_for(fingerprint, layout=layout, regions=regions, overwrite=overwrite)

    cached = [sid for sid in by_id if sid in store]
    changed = [
        sid
        for sid in cached
        if store.sample_hash(sid) is not None and store.sample_hash(sid) != hashes[sid]
    ]
    if changed:
        raise StoreMismatchError(
            f"{len(changed)} samples in {store.path} have the same id but different content "
            f"(question/response/label/answer), e.g. {changed[:5]}; use another store or "
            "overwrite=True"
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
    missing = [s for s in samples if s.qid not in store]
    if not missing:
        report.seconds = time.perf_counter() - t0
        return report

    tokenized, span_report = tokenize_samples(tokenizer, samples, span_cfg)
    report.skipped = [(str(a), str(b)) for a, b in span_report.skipped if a not in store]
    report.n_skipped = len(report.skipped)
    for t in tokenized:
        if t.sample_id not in by_id:
            raise RuntimeError(f"tokenize_samples returned an unknown sample id {t.sample_id!r}")
    todo_total = sum(1 for t in tokenized if t.sample_id not in store)
    bar = tqdm(total=todo_total, disable=not progress, unit="sample", desc="extract CETT")
    try:
        batches = _cett_batches(model, tokenized, cfg, sites, batch_size, skip=store.__contains__)
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
        bar.close()
        store.close()  # flushes the partial chunk, also when interrupted by an exception
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
) -> Iterable[tuple[list[Any], dict[str, np.ndarray]]]:
    """Run the CETT engine over length buckets of ``tokenized`` samples.

    Yields ``(samples, {region: float32 [n, n_features]})`` per batch, leaving out samples for
    which ``skip(sample_id)`` is true (a batch whose samples are all skipped is not run). Buckets
    are formed over *all* samples, so the values do not depend on what was skipped.
    """
    layout = NeuronLayout(tuple(s.d_mlp for s in sites))
    regions = tuple(cfg.regions)
    pad_id = pad_token_id(model.tokenizer)
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = None
    for bucket in length_buckets(tokenized, batch_size):
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


def compute_features(
    model: Any,
    samples: Sequence[JudgedSample],
    cfg: Any | None = None,
    *,
    span_cfg: Any | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[FeatureSplit, ExtractReport]:
    """CETT features of ``samples`` in memory (no store): what :func:`extract` would write.

    For scoring a few hundred samples with a saved probe; use :func:`extract` and an
    :class:`ActivationStore` for anything larger or worth keeping.

    Returns:
        A :class:`~hneuron_lens.features.FeatureSplit` (``features[region]`` float32
        ``[n_located, n_features]``, rows in the order of ``samples``, samples whose answer span
        could not be located left out) and an :class:`ExtractReport` listing those skipped, with
        the reason.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    cfg, span_cfg = _configs(cfg, span_cfg, batch_size)
    sites = neuron_sites(model)
    layout = NeuronLayout(tuple(s.d_mlp for s in sites))
    tokenized, span_report = tokenize_samples(model.tokenizer, list(samples), span_cfg)
    report = ExtractReport(
        n_requested=len(samples), n_cached=0, n_extracted=0, n_skipped=0, store=""
    )
    report.skipped = [(str(a), str(b)) for a, b in span_report.skipped]
    report.n_skipped = len(report.skipped)
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
