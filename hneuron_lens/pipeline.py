"""The whole method on one model: collect -> judge -> balance/split -> extract CETT -> probe.

``hneuron-lens run`` calls :func:`run_pipeline` with the embedded default model and the built-in
question set; every artefact goes under one output directory with a ``manifest.json`` (settings,
versions, timings, counts). Each stage is resumable, so a rerun after an interruption continues:
collection appends to its JSONL file, extraction fills its store, and the probe is refit (seconds).
"""

from __future__ import annotations

import json
import logging
import platform
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hneuron_lens.data.records import HALLUCINATED, JudgedSample
from hneuron_lens.io import atomic_write_text

logger = logging.getLogger(__name__)

MIN_PER_CLASS = 10
"""Fewer consistent samples per class than this and the run stops before training: with the
default 60/20/20 split the test set would hold fewer than two samples per class."""


@dataclass
class RunConfig:
    """Settings of :func:`run_pipeline`; the defaults finish in under 20 minutes on a 2-core CPU
    (1,175 questions x 2 samples: 17 min 48 s measured for ``make run`` on 2026-12-02, see README
    "Results on the default model")."""

    out_dir: str = "runs/default"
    """Where every artefact is written."""
    model: str = "default"
    """Model spec for :func:`hneuron_lens.load_model`."""
    device: str = "cpu"
    """Device for the model (not used with ``device_map``)."""
    dtype: str = "float32"
    """Model dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``."""
    device_map: str | dict[str, Any] | None = None
    """Spread the model over several GPUs (:func:`hneuron_lens.load_model`'s ``device_map``)."""
    allow_offload: bool = False
    """Accept a ``device_map`` that offloads layers to CPU memory or disk."""
    questions: str = "builtin"
    """``"builtin"`` (the built-in set plus fabricated entities) or an open-QA / consistency file
    (e.g. ``../shared/data/triviaqa/gemma3_4b_it_consistency_samples.jsonl``)."""
    n_questions: int | None = None
    """Questions to ask (a seeded subset; ``None``: all of them)."""
    builtin_easy: bool = True
    """With ``questions="builtin"``, add the built-in "easy" topics (cities, landmarks, opposites,
    days, months, colours, animal legs): the default model is consistently right on few of the
    other questions, and a probe needs faithful samples as much as hallucinated ones."""
    nonexistent: int = 40
    """Fabricated-entity questions added (any confident answer is a hallucination)."""
    k: int = 2
    """Sampled responses per question (the paper uses 10). 2 on the default model: it is right
    on few questions, and every extra sample costs time and turns consistent questions into
    mixed ones. Re-judging k=4 collections on their first k responses gives, for the built-in
    set incl. the easy topics, ~170 consistently right questions at k=2, ~130 at k=3 and ~110
    at k=4 (README "Benchmarks"). A weaker consistency filter than the paper's: pass ``k`` to
    trade samples for cleaner labels."""
    max_new_tokens: int = 32
    """Most tokens per response."""
    stop_at_sentence: bool = True
    """Stop each response at the end of its first sentence (the answer, for these short-answer
    prompts); the rest is rambling that costs most of the generation time. ``False`` judges and
    extracts whole responses, as the paper does."""
    batch_size: int = 64
    """Generation and extraction batch size (on a CPU a decoding step costs ~8.6 ms per row at
    64 rows vs ~15 ms at 16)."""
    Cs: tuple[float, ...] = ()
    """Grid of inverse L1 strengths (empty: the automatic grid of ``probe_path``), chosen on the
    validation split by ``probe_path``'s default rule (one-SE rule on held-out AUROC)."""
    stability: int = 50
    """Stability-selection refits at the chosen C (frequencies beside the weights; 0 skips)."""
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Train / validation / test fractions (disjoint by id and by normalised question)."""
    n_random: int = 20
    """Random-neuron control sets in the evaluation."""
    n_resamples: int = 1000
    """Bootstrap resamples for every confidence interval."""
    seed: int = 0
    """Seed for subsetting, sampling, splitting and the controls."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("k, max_new_tokens and batch_size must be >= 1")
        if abs(sum(self.fractions) - 1.0) > 1e-6 or len(self.fractions) != 3:
            raise ValueError(f"fractions must be three numbers summing to 1, got {self.fractions}")
        self.Cs = tuple(float(c) for c in self.Cs)
        self.fractions = tuple(float(f) for f in self.fractions)  # type: ignore[assignment]

    @classmethod
    def quick(cls, **overrides: Any) -> RunConfig:
        """A small run (under 3 minutes on a 2-core CPU once the model is cached) for CI/tutorials."""
        base = dict(
            n_questions=120,
            nonexistent=16,
            k=2,
            max_new_tokens=24,
            n_random=5,
            stability=10,
            n_resamples=200,
            out_dir="runs/quick",
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["Cs"] = list(self.Cs)
        d["fractions"] = list(self.fractions)
        return d


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced (paths are inside ``out_dir``)."""

    out_dir: Path
    funnel: Any
    n_train: int
    n_validation: int
    n_test: int
    chosen_C: float | None
    report: Any | None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"run directory: {self.out_dir}", str(self.funnel)]
        lines.append(
            f"split sizes: train {self.n_train}, validation {self.n_validation}, test {self.n_test}"
        )
        if self.chosen_C is not None:
            lines.append(f"chosen C: {self.chosen_C}")
        if self.report is not None:
            lines.append(str(self.report))
        lines += [f"note: {n}" for n in self.notes]
        lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def attach_answer_text(
    samples: list[JudgedSample], tagger: Any = None
) -> tuple[list[JudgedSample], list[tuple[str, str]]]:
    """Fill ``answer_text`` from the aliases (correct) or the shortest answer phrase (hallucinated).

    With ``tagger`` (an :class:`~hneuron_lens.answer.LLMSpanTagger`) the LLM's span is tried first
    and the rules are the fallback. Returns the samples that got one and ``(qid, reason)`` for
    those that did not.
    """
    from hneuron_lens.answer import locate_answer_text

    kept, missing = [], []
    for s in samples:
        if s.answer_text:
            kept.append(s)
            continue
        loc = tagger.tag(s.question, s.response) if tagger is not None else None
        if loc is None:
            loc = locate_answer_text(s.response, s.aliases, s.label)
        if loc is None:
            missing.append((s.qid, "answer phrase not found in response"))
            continue
        kept.append(replace(s, answer_text=loc.text, meta={**s.meta, "span_method": loc.method}))
    return kept, missing


def run_pipeline(cfg: RunConfig | None = None, model: Any = None) -> RunResult:
    """Run collect -> judge -> split -> extract -> probe -> evaluate and write every artefact.

    Args:
        cfg: settings (default :class:`RunConfig`).
        model: an already loaded ``TransformerBridge`` (``None``: ``load_model(cfg.model)``).

    Returns:
        A :class:`RunResult`; its ``summary()`` is what the CLI prints.
    """
    import hneuron_lens as hl
    from hneuron_lens.collect import CollectConfig, collect, judge_collected, load_collected
    from hneuron_lens.data.builtin import builtin_nonexistent, builtin_qa
    from hneuron_lens.data.splits import balanced_sample, split_samples
    from hneuron_lens.extract import extract
    from hneuron_lens.io import claim_output_dir
    from hneuron_lens.probe import probe_path
    from hneuron_lens.store import ActivationStore

    cfg = cfg or RunConfig()
    out = claim_output_dir(cfg.out_dir, "run", option="--out-dir")  # never a foreign directory
    seconds: dict[str, float] = {}
    notes: list[str] = []

    t = time.perf_counter()
    if model is None:
        model = hl.load_model(
            cfg.model,
            dtype=cfg.dtype,
            device=cfg.device if cfg.device_map is None else None,
            device_map=cfg.device_map,
            allow_offload=cfg.allow_offload,
        )
    seconds["load model"] = time.perf_counter() - t

    rng = random.Random(cfg.seed)
    if cfg.questions == "builtin":
        items = builtin_qa(include_easy=cfg.builtin_easy)
    else:
        from hneuron_lens.collect import PAPER_SUFFIX
        from hneuron_lens.data.loaders import load_qa

        items, load_report = load_qa(cfg.questions)
        notes.append(str(load_report))
        # Released question files may already carry the collection suffix: do not add it twice.
        items = [replace(i, question=i.question.removesuffix(PAPER_SUFFIX).strip()) for i in items]
    if cfg.n_questions is not None and cfg.n_questions < len(items):
        items = rng.sample(items, cfg.n_questions)
    if cfg.questions == "builtin":
        fabricated = builtin_nonexistent()
        items += rng.sample(fabricated, min(cfg.nonexistent, len(fabricated)))

    t = time.perf_counter()
    ccfg = CollectConfig(
        k=cfg.k,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        stop_at_sentence=cfg.stop_at_sentence,
    )
    collect_result = collect(model, items, ccfg, out / "responses.jsonl")
    seconds["collect"] = time.perf_counter() - t

    samples, funnel = judge_collected(load_collected(out / "responses.jsonl"))
    samples, missing = attach_answer_text(samples)
    funnel.span_not_found += len(missing)
    n_pos = sum(s.label == HALLUCINATED for s in samples)
    n_per_class = min(n_pos, len(samples) - n_pos)
    if n_per_class < MIN_PER_CLASS:
        funnel.save(out / "funnel.json")
        raise RuntimeError(
            f"only {n_per_class} consistent samples in the smaller class: too few to train a "
            f"probe (funnel: {funnel.to_dict()}); ask more questions or lower k"
        )
    balanced = balanced_sample(samples, n_per_class, seed=cfg.seed)
    splits = split_samples(balanced, fractions=cfg.fractions, seed=cfg.seed)
    split_of = {s.qid: name for name, group in splits.items() for s in group}

    t = time.perf_counter()
    store = ActivationStore(out / "store")
    ext = extract(
        model,
        balanced,
        store,
        hl.CETTConfig(regions=("answer", "other")),
        batch_size=cfg.batch_size,
        splits=split_of,
    )
    funnel.span_not_found += ext.n_skipped
    store.compact()
    seconds["extract"] = time.perf_counter() - t
    funnel.save(out / "funnel.json")

    t = time.perf_counter()
    train, val, test = store.split("train"), store.split("validation"), store.split("test")
    path = probe_path(train, val, Cs=cfg.Cs or "auto", seed=cfg.seed, n_resamples=cfg.n_resamples)
    probe = path.probe
    if cfg.stability:
        from hneuron_lens.stability import stability_selection

        probe.use_stability(
            stability_selection(train, probe, n_subsamples=cfg.stability, seed=cfg.seed)
        )
    identity = hl.model_identity(model)  # hashes every W_out: compute once
    probe.metadata_.update({"model": identity, "run": cfg.to_dict()})
    report = probe.evaluate(
        test,
        val_split=val,
        train=train,
        n_resamples=cfg.n_resamples,
        n_random=cfg.n_random,
        seed=cfg.seed,
    )
    probe.save(out / "probe", overwrite=True)  # a rerun refits the probe
    path.save(out / "probe_path.json")
    report.save(out / "report.json")
    seconds["probe"] = time.perf_counter() - t

    if len(test) < 60:
        notes.append(
            f"the test split has {len(test)} samples: confidence intervals are wide by design"
        )
    result = RunResult(
        out_dir=out,
        funnel=funnel,
        n_train=len(train),
        n_validation=len(val),
        n_test=len(test),
        chosen_C=float(path.points[path.chosen_index].C),
        report=report,
        seconds=seconds,
        notes=notes,
    )
    atomic_write_text(
        out / "manifest.json",
        json.dumps(
            {
                "library_version": hl.__version__,
                "python": platform.python_version(),
                "config": cfg.to_dict(),
                "model": identity,
                "collect": collect_result.to_dict(),
                "extract": ext.to_dict(),
                "funnel": funnel.to_dict(),
                "splits": {k: len(v) for k, v in splits.items()},
                "chosen_C": result.chosen_C,
                "seconds": seconds,
                "notes": notes,
                "artefacts": sorted(p.name for p in out.iterdir()),
            },
            indent=1,
            default=str,
        ),
    )
    return result
