"""Derive an instruction-tuned checkpoint from a base model: a real (base, instruct) pair offline.

Origin analysis (:mod:`hneuron_lens.origin`) compares a base checkpoint with its instruction-tuned
descendant. No such pair of one model installs offline here, so :func:`derive_sft` makes one
honestly: a short, seeded supervised fine-tune (SFT) of the Gemma-3-270M base model on
chat-formatted built-in QA, cached in the user cache with a manifest like the converted models.

**Recipe** (the defaults of :class:`DeriveConfig`; every number is recorded in the manifest):

- data: a seeded subset of the built-in answerable questions (:func:`sft_questions`, 300 of 935),
  each as one chat turn, ``user: question + " " + PAPER_SUFFIX`` (the collection prompt) and
  ``model: first alias + "."``; the other built-in questions (:func:`analysis_questions`) and
  the fabricated-entity ones are left for the probe and the transfer, and
  :func:`check_sft_leakage` proves they do not meet (by id and by normalised question text);
- format: Gemma's turn format (``<start_of_turn>user ... <end_of_turn>``) written into the
  tokenizer as its chat template, so the derived model is prompted like Gemma-3-IT while the
  base keeps the paper's ``question + "\\nAnswer:"``;
- what trains: **the MLP weights only** (gate, up and down projections of every layer, plus MLP
  biases where an architecture has them), full rank; attention, norms and embeddings stay
  frozen. Origin analysis measures neuron-level drift of exactly these weights, and a full-rank
  update lets every neuron move as far as its gradient takes it (a merged LoRA would impose a
  rank-r structure on the drift of all neurons at once, which a real instruction tune does not);
- optimisation: AdamW (lr 5e-5, no weight decay, betas 0.9/0.999), linear warm-up over 10 steps
  then linear decay to 0, gradient norm clipped at 1.0, batches of 8 in a seeded order, 2 epochs;
  the loss is the mean cross-entropy over the answer tokens and the closing ``<end_of_turn>``
  (prompt tokens are masked), with the unembedding applied to those positions only;
- float32 on the CPU, seeded (``torch.manual_seed``), no dropout: the same recipe on the same
  machine gives the same weights.

A few hundred SFT steps on one task are **not** an instruction-tuning run: the derived model
differs from its base by a small, narrow update. See the README's origin section for what such a
pair can and cannot show about the paper's claim that H-Neurons emerge in pre-training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hneuron_lens.data.records import QAItem
from hneuron_lens.errors import DataError, ModelError
from hneuron_lens.io import library_version, sha256_json

logger = logging.getLogger(__name__)

PAPER_SUFFIX = "Respond with the answer only, without any explanation."
"""The collection suffix (``hneuron_lens.collect.PAPER_SUFFIX``), repeated here so that this
module stays below the collection stage."""

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '')"
    " + message['content'] + '<end_of_turn>\n' }}"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
"""Gemma's turn format (as Gemma-3-IT): BOS, ``<start_of_turn>user\\n...<end_of_turn>\\n``,
``<start_of_turn>model\\n...``; a system message is prepended to the first user turn."""

MANIFEST = "hneuron_cache.json"
"""Manifest file of a derived copy (same format as the converted model cache, plus ``derive``)."""

_CACHE_FORMAT = 1
_MLP_MARKERS = (".mlp.",)


@dataclass
class DeriveConfig:
    """The SFT recipe of :func:`derive_sft` (see the module docstring for why each choice)."""

    base: str = "gemma-3-270m"
    """Base model: an embedded key (``"gemma-3-270m"``) or a local Hugging Face directory."""
    n_questions: int = 300
    """Built-in answerable questions used for the SFT (a seeded subset); the rest are left for
    the probe and the transfer."""
    epochs: int = 2
    """Passes over the SFT questions."""
    batch_size: int = 8
    """Examples per optimiser step."""
    lr: float = 5e-5
    """Peak AdamW learning rate."""
    warmup_steps: int = 10
    """Linear warm-up steps; then linear decay to 0 at the last step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient norm clip."""
    suffix: str | None = PAPER_SUFFIX
    """Appended (after a space) to every question in the user turn: the collection prompt."""
    chat_template: str | None = "gemma"
    """``"gemma"``: write :data:`GEMMA_CHAT_TEMPLATE` into the tokenizer (needs the
    ``<start_of_turn>`` / ``<end_of_turn>`` tokens); ``None``: keep the tokenizer's own template
    (it must have one)."""
    seed: int = 0
    """Seed for the question subset, the batch order and torch."""

    def __post_init__(self) -> None:
        for name in ("n_questions", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DeriveConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"DeriveConfig.lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("warmup_steps and weight_decay must be >= 0, max_grad_norm > 0")
        if self.chat_template not in (None, "gemma"):
            raise ValueError(f"chat_template must be 'gemma' or None, got {self.chat_template!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeriveConfig:
        return cls(**d)

    def recipe_hash(self) -> str:
        """sha256 of the recipe and the library version (names the cached copy)."""
        return sha256_json({"recipe": self.to_dict(), "library": library_version()})


@dataclass
class SFTLog:
    """What one SFT run did."""

    n_examples: int
    """Training examples (one per question)."""
    n_steps: int
    """Optimiser steps."""
    n_trainable: int
    """Trainable parameters (the MLP weights)."""
    step_loss: list[float] = field(default_factory=list)
    """Mean answer-token cross-entropy of every step (nats)."""
    epoch_loss: list[float] = field(default_factory=list)
    """Mean of the step losses of each epoch."""
    seconds: float = 0.0
    """Wall time of the training loop."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DerivedModel:
    """A derived checkpoint on disk (a Hugging Face directory) and its manifest."""

    path: Path
    """The directory: ``hl.load_model(str(path))`` loads it; origin streams its weights."""
    manifest: dict[str, Any]
    """The manifest (``hneuron_cache.json``): recipe, SFT question ids, losses, timings."""
    cached: bool = False
    """True when an existing valid copy was returned without training."""

    @property
    def sft_question_ids(self) -> list[str]:
        return list(self.manifest["derive"]["sft_question_ids"])

    def __str__(self) -> str:
        d = self.manifest["derive"]
        log = d["log"]
        return (
            f"derived model {self.path} ({'cached' if self.cached else 'trained now'})\n"
            f"  base {d['base']}; {log['n_examples']} SFT questions, {log['n_steps']} steps, "
            f"{log['n_trainable']:,} trainable MLP parameters\n"
            f"  loss per epoch: {', '.join(f'{x:.3f}' for x in log['epoch_loss'])}; "
            f"training {log['seconds']:.0f} s, total {d['seconds_total']:.0f} s"
        )


# --------------------------------------------------------------------------------------------
# data


def sft_questions(cfg: DeriveConfig | None = None) -> list[QAItem]:
    """The built-in answerable questions the SFT trains on (seeded subset, id order)."""
    from hneuron_lens.data.builtin import builtin_qa

    cfg = cfg or DeriveConfig()
    items = builtin_qa()
    if cfg.n_questions >= len(items):
        raise ValueError(
            f"n_questions={cfg.n_questions} would leave none of the {len(items)} built-in "
            "questions for the analysis"
        )
    chosen = set(random.Random(cfg.seed).sample(range(len(items)), cfg.n_questions))
    return [it for i, it in enumerate(items) if i in chosen]


def analysis_questions(
    cfg: DeriveConfig | None = None, *, nonexistent: bool = True
) -> list[QAItem]:
    """Built-in questions the SFT never saw (plus the fabricated-entity ones), for the probe.

    Leakage-checked against :func:`sft_questions` by id and by normalised question text.
    """
    from hneuron_lens.data.builtin import builtin_nonexistent, builtin_qa

    cfg = cfg or DeriveConfig()
    sft = sft_questions(cfg)
    sft_ids = {s.qid for s in sft}
    rest = [it for it in builtin_qa() if it.qid not in sft_ids]
    if nonexistent:
        rest += builtin_nonexistent()
    report = check_sft_leakage(sft, rest)
    # The built-in set holds a few questions twice under two ids (same text, other fact table):
    # drop them from the analysis side rather than fail.
    leaked = set(report.pairs[("sft", "analysis")].questions)
    if leaked:
        from hneuron_lens.data.splits import normalize_question

        before = len(rest)
        rest = [it for it in rest if normalize_question(it.question) not in leaked]
        logger.info(
            "dropped %d analysis questions whose text an SFT question shares", before - len(rest)
        )
    return rest


def write_questions(items: Sequence[QAItem], path: str | os.PathLike[str]) -> Path:
    """Write questions as an open-QA JSONL file (``qid``, ``question``, ``aliases``) atomically.

    ``hneuron-lens run --questions FILE`` reads it, so a run on the derived model can be limited
    to :func:`analysis_questions` (the fabricated-entity questions have no aliases and are left
    out: the open-QA format cannot mark them).
    """
    from hneuron_lens.io import atomic_write_text

    lines = [
        json.dumps({"qid": it.qid, "question": it.question, "aliases": list(it.aliases)})
        for it in items
        if it.aliases
    ]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def check_sft_leakage(sft: Sequence[Any], samples: Sequence[Any]) -> Any:
    """Ids and normalised questions shared by the SFT questions and analysis samples.

    Args:
        sft: the SFT questions (objects with ``qid`` and ``question``).
        samples: questions or judged samples used for the probe / transfer.

    Returns:
        A :class:`~hneuron_lens.data.splits.LeakageReport` with the pair ``("sft", "analysis")``.
    """
    from hneuron_lens.data.splits import check_leakage

    return check_leakage({"sft": list(sft), "analysis": list(samples)})


def assert_no_sft_leakage(model_dir: str | os.PathLike[str], samples: Sequence[Any]) -> int:
    """Raise :class:`DataError` when ``samples`` share a question with a derived model's SFT.

    ``model_dir`` without a derive manifest (any other model) passes: returns 0. Otherwise
    returns the number of SFT questions checked against.
    """
    from hneuron_lens.data.splits import normalize_question

    manifest = read_manifest(model_dir)
    if manifest is None or "derive" not in manifest:
        return 0
    d = manifest["derive"]
    ids = set(d["sft_question_ids"])
    texts = {normalize_question(q) for q in d["sft_questions"]}
    bad = [s.qid for s in samples if s.qid in ids or normalize_question(s.question) in texts]
    if bad:
        raise DataError(
            f"{len(bad)} samples were SFT questions of the derived model (e.g. {bad[:5]})",
            file=Path(model_dir) / MANIFEST,
            field="sft_question_ids",
            hint="leave the SFT questions out (derive.analysis_questions gives the others)",
        )
    return len(ids)


def format_example(
    tokenizer: Any, item: QAItem, suffix: str | None = PAPER_SUFFIX
) -> tuple[list[int], list[int]]:
    """Token ids of one chat-formatted SFT example and its labels (-100 on the prompt).

    The answer is the first alias followed by a full stop; the turn's closing token(s) after
    the answer are trained too, so the model learns to stop.
    """
    if not item.aliases:
        raise DataError(f"SFT question {item.qid!r} has no gold alias", field="aliases")
    content = item.question if not suffix else f"{item.question} {suffix}"
    messages = [{"role": "user", "content": content}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    answer = item.aliases[0].strip() + "."
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ModelError("the chat template does not render the prompt as a prefix of the turn")
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ModelError("prompt tokens change when the answer is appended (tokenizer merge)")
    # train up to and including the first token of the closing marker after the answer
    tail = full[len(prompt) + len(answer) :]
    n_tail = len(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else 0
    keep_end = len(ids) - max(n_tail - 1, 0) if n_tail else len(ids)
    labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) : keep_end]
    labels += [-100] * (len(ids) - len(labels))
    return ids, labels


def _set_chat_template(tokenizer: Any, cfg: DeriveConfig) -> None:
    if cfg.chat_template is None:
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(
                "the base tokenizer has no chat template and chat_template=None",
                field="chat_template",
                hint="use chat_template='gemma' for Gemma models",
            )
        return
    vocab = tokenizer.get_vocab()
    missing = [t for t in ("<start_of_turn>", "<end_of_turn>") if t not in vocab]
    if missing:
        raise ModelError(
            f"the tokenizer has no {missing} tokens: Gemma's turn format needs them",
            field="chat_template",
            hint="pass chat_template=None for a tokenizer that has its own template",
        )
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE


# --------------------------------------------------------------------------------------------
# training


def mlp_parameters(hf_model: Any) -> list[tuple[str, torch.nn.Parameter]]:
    """The MLP parameters of a Hugging Face causal LM (names containing ``.mlp.``)."""
    params = [(n, p) for n, p in hf_model.named_parameters() if any(m in n for m in _MLP_MARKERS)]
    if not params:
        raise ModelError(f"{type(hf_model).__name__} has no parameters named '*.mlp.*'")
    return params


def _answer_loss(hf_model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> Any:
    """Mean cross-entropy over labelled positions; the unembedding sees only those rows."""
    decoder = getattr(hf_model, hf_model.base_model_prefix)
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, d_model]
    target = labels[:, 1:]
    sel = target != -100
    h = hidden[:, :-1][sel]  # [n, d_model]
    logits = hf_model.get_output_embeddings()(h).float()
    cap = getattr(hf_model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, target[sel])


def _collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(examples):  # right padding: positions stay 0..n-1
        ids[i, : len(x)] = torch.as_tensor(x)
        mask[i, : len(x)] = 1
        labels[i, : len(y)] = torch.as_tensor(y)
    return ids, mask, labels


def sft_mlp(
    hf_model: Any,
    tokenizer: Any,
    items: Sequence[QAItem],
    cfg: DeriveConfig | None = None,
    *,
    progress: bool = True,
) -> SFTLog:
    """Fine-tune the MLP weights of ``hf_model`` in place on chat-formatted QA (the recipe above).

    Args:
        hf_model: a Hugging Face causal LM (float32); left in eval mode afterwards.
        tokenizer: its tokenizer, with a chat template.
        items: SFT questions with gold aliases.
        cfg: the recipe (``epochs``, ``batch_size``, ``lr``, ``seed``...).
        progress: show a tqdm bar over steps with the running loss.

    Returns:
        An :class:`SFTLog` (losses per step and epoch, step count, time).
    """
    from tqdm.auto import tqdm

    cfg = cfg or DeriveConfig()
    if not items:
        raise DataError("no SFT questions")
    examples = [format_example(tokenizer, it, cfg.suffix) for it in items]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    for p in hf_model.parameters():
        p.requires_grad_(False)
    trainable = [p for _, p in mlp_parameters(hf_model)]
    for p in trainable:
        p.requires_grad_(True)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    n_steps = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
        rest = max(n_steps - cfg.warmup_steps, 1)
        return cfg.lr * max(0.0, 1.0 - (step - cfg.warmup_steps) / rest)

    log = SFTLog(
        n_examples=len(examples), n_steps=n_steps, n_trainable=sum(p.numel() for p in trainable)
    )
    t0 = time.perf_counter()
    hf_model.train()
    step = 0
    try:
        with tqdm(total=n_steps, disable=not progress, desc="SFT (MLP)", unit="step") as bar:
            for _ in range(cfg.epochs):
                order = rng.permutation(len(examples))
                losses = []
                for b in range(steps_per_epoch):
                    batch = [
                        examples[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    ]
                    ids, mask, labels = _collate(batch, pad_id)
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step)
                    loss = _answer_loss(hf_model, ids, mask, labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                    opt.step()
                    losses.append(float(loss.detach()))
                    log.step_loss.append(losses[-1])
                    step += 1
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    bar.update(1)
                log.epoch_loss.append(float(np.mean(losses)))
    finally:
        hf_model.eval()
        for p in trainable:
            p.requires_grad_(False)
            p.grad = None
    log.seconds = time.perf_counter() - t0
    return log


# --------------------------------------------------------------------------------------------
# cache


def read_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``hneuron_cache.json`` manifest of a cached / derived model directory, or ``None``."""
    path = Path(model_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _base_dir(base: str) -> Path:
    from hneuron_lens.models import EMBEDDED, embedded_checkpoint

    if base in EMBEDDED:
        return embedded_checkpoint(base)
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(
            f"base model {base!r} is neither an embedded model nor a local Hugging Face directory",
            field="base",
            hint=f"use one of {sorted(EMBEDDED)} or a directory with config.json",
        )
    return path


def derived_dir(cfg: DeriveConfig | None = None) -> Path:
    """Where :func:`derive_sft` caches the model of ``cfg``: ``<cache>/models/<base>-sft-<hash>``."""
    from hneuron_lens.models import cache_dir

    cfg = cfg or DeriveConfig()
    stem = Path(cfg.base).name if os.sep in cfg.base or cfg.base.startswith(".") else cfg.base
    return cache_dir() / "models" / f"{stem}-sft-{cfg.recipe_hash()[:12]}"


def derive_sft(
    cfg: DeriveConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> DerivedModel:
    """Fine-tune the base model's MLPs on chat-formatted built-in QA and cache the result.

    A valid cached copy of the same recipe is returned at once (``cached=True``); a damaged or
    incomplete one (a weight file whose size or digest no longer matches the manifest) is
    rebuilt. The copy is written to a temporary sibling directory and renamed into place, so
    an interrupted run leaves nothing half-written under the final name.

    Args:
        cfg: the recipe (default :class:`DeriveConfig`).
        out_dir: where to write (default :func:`derived_dir`, in the user cache).
        force: retrain even when a valid copy exists (replaces only that copy).
        progress: show progress bars.

    Returns:
        A :class:`DerivedModel` (path + manifest). Load it with ``hl.load_model(str(path))``.

    Example:
        >>> derived = derive_sft()  # doctest: +SKIP
        >>> model = hl.load_model(str(derived.path))  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hneuron_lens.models import cached_copy_is_valid, quick_digest

    cfg = cfg or DeriveConfig()
    target = Path(out_dir) if out_dir is not None else derived_dir(cfg)
    if not force and cached_copy_is_valid(target):
        manifest = read_manifest(target)
        if manifest and manifest.get("derive", {}).get("recipe") == cfg.to_dict():
            return DerivedModel(target, manifest, cached=True)
    if target.exists():
        manifest = read_manifest(target)
        if manifest is None or "derive" not in manifest:
            from hneuron_lens.errors import OutputError

            raise OutputError(
                f"{target} exists and is not a derived model this library wrote",
                file=target,
                hint="choose another out_dir; nothing was changed",
            )
        logger.warning("derived copy %s is damaged or of another recipe: rebuilding it", target)

    t0 = time.perf_counter()
    base = _base_dir(cfg.base)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    hf_model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    _set_chat_template(tokenizer, cfg)
    items = sft_questions(cfg)
    log = sft_mlp(hf_model, tokenizer, items, cfg, progress=progress)

    end_ids = [
        int(i)
        for i in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
        if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id
    ]
    if getattr(hf_model, "generation_config", None) is not None and end_ids:
        hf_model.generation_config.eos_token_id = sorted(end_ids)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
    try:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        weights = sorted(tmp.glob("*.safetensors"))
        base_manifest = read_manifest(base) or {}
        manifest = {
            "format": _CACHE_FORMAT,
            "source": str(base),
            "files": {w.name: quick_digest(w) for w in weights},
            "derive": {
                "recipe": cfg.to_dict(),
                "recipe_sha256": cfg.recipe_hash(),
                "base": cfg.base,
                "base_dir": str(base),
                "base_files": base_manifest.get("files"),
                "sft_question_ids": [it.qid for it in items],
                "sft_questions": [it.question for it in items],
                "log": log.to_dict(),
                "seconds_total": time.perf_counter() - t0,
                "library_version": library_version(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
            },
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("derived model written to %s", target)
    return DerivedModel(target, manifest, cached=False)
