"""Batched, seeded text generation on a ``TransformerBridge``: the one primitive every stage uses.

The collection stage (k sampled answers per question, Gao et al. 2025, arXiv:2512.01797, Sec. 3.1:
T=1.0, top-k 50, top-p 0.9) and the intervention stage (answers with H-Neurons scaled) both call
:func:`generate`. It is an explicit sampling loop over the bridge's own forward pass, not a call
to ``TransformerBridge.generate``, for four reasons:

* **Hooks see what the model computes.** The prompt batch goes through one forward pass (the
  prefill) and then one position per generated token (``past_key_values``), so a TransformerLens
  hook on ``blocks.L.mlp.hook_post`` fires once for the prompt and once per step, exactly like in
  ``model.generate``. An intervention attached with :mod:`hneuron_lens.hooks` therefore changes
  what is generated.
* **Left padding is explicit.** Prompts of different lengths are left-padded and an explicit
  ``attention_mask`` is passed on every step; the bridge derives per-row position ids from it.
  Under greedy decoding a batched run gives the same tokens as one prompt at a time.
* **Sampling is reproducible per row.** Every (prompt, sample) row draws from its own
  ``torch.Generator`` seeded from ``(seed, prompt_seed, sample_index)``: the same seed gives the
  same samples whatever the batch size or the order of the prompts, and the global torch RNG is
  never touched. Collection uses this to resume a killed run with the same answers.
* **Checked against dependency drift.** Decoding runs inside
  :func:`hneuron_lens.compat.kv_cache_compat` (transformers >= 5.24 passes the cache to attention
  under a new keyword that TransformerLens 4.3 does not read), and the cache length is checked
  after the prompt pass and the first step: a cache that was not written raises
  :class:`~hneuron_lens.errors.DependencyError` instead of producing wrong text.
* **No wasted work.** The k samples of one prompt share one prompt pass (its KV cache rows are
  repeated), and rows that hit a stop token are dropped from the KV cache, so one rambling answer
  does not make fifteen finished ones keep paying for forward passes. On the default model this
  cut the time of 8 questions x 10 samples from 163 s to 113 s (2 shared CPU cores). Also
  (issue 15): the prompt pass computes logits at its last position only; without hooks, the
  prompt prefix all prompts of a batch share (a chat template's system turn) runs once; sampling
  works on the top-k logits only (:func:`top_k_probs`); and ``stop_at_sentence`` ends a
  short answer at its first sentence. Against plain ``transformers`` ``generate`` on the default
  model this gives 1.5x the responses per CPU-second (1.8x with the sentence stop; README
  "Benchmarks").

Filtering follows Hugging Face's order: temperature, then top-k, then top-p (nucleus, keeping at
least one token). Stop tokens are the tokenizer's EOS, the generation config's EOS ids and the
end-of-turn markers a chat template uses (``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``...)
when the vocabulary has them; for base-model prompts (``question + "\\nAnswer:"``) generation can
also stop at the first newline after some text (``stop_at_newline``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from hneuron_lens.compat import check_cache_length, kv_cache_compat, version_report
from hneuron_lens.spans import pad_token_id

logger = logging.getLogger(__name__)

FinishReason = Literal["eos", "length", "newline", "sentence"]

END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
"""Special tokens that end a turn in common chat formats; each is a stop token when in the vocab."""

SAMPLER = "top-k-first/2"
"""Version of the sampling procedure: how a row's generator turns logits into tokens. Saved in
collection headers, so a file sampled by an older procedure is not resumed with this one."""

BASE_PROMPT_SUFFIX = "\nAnswer:"
"""The paper's prompt for base (non-chat) models: ``question + "\\nAnswer:"``."""

Message = Mapping[str, str]


@dataclass
class GenerationConfig:
    """How :func:`generate` decodes. Defaults are the paper's sampling settings."""

    max_new_tokens: int = 50
    """Most tokens generated per response (the stop token is not counted as output)."""
    do_sample: bool = True
    """Sample from the filtered distribution; ``False`` = greedy (argmax) decoding."""
    temperature: float = 1.0
    """Softmax temperature applied before top-k / top-p (sampling only; must be > 0)."""
    top_k: int | None = 50
    """Keep the ``top_k`` most likely tokens (``None`` or 0: no top-k filter)."""
    top_p: float = 0.9
    """Nucleus filter: keep the smallest set of tokens whose probability reaches ``top_p``
    (1.0: no filter)."""
    num_samples: int = 1
    """Responses per prompt (the paper's k); each prompt is repeated this many times."""
    batch_size: int = 16
    """Sequences (prompt x sample rows) per forward pass."""
    seed: int = 0
    """Base seed; row (prompt p, sample s) samples from a generator seeded by (seed, p, s)."""
    stop_at_newline: bool = False
    """Stop at the first newline that follows some text (for base-model ``\\nAnswer:`` prompts)."""
    stop_at_sentence: bool = False
    """Stop at the end of the first sentence: a ``.``, ``!`` or ``?`` (after a word of two or more
    characters that is not a common abbreviation such as ``Dr``) followed by a token that starts
    with whitespace. That token is not kept. For short-answer prompts ("Respond with the answer
    only") the answer is the first sentence and the rest is rambling that costs forward passes."""
    share_prefix: bool = True
    """With the KV cache and no hooks attached, run the prompt prefix that every prompt of a
    batch shares (a chat template's system turn: 24 of ~45 tokens on SmolLM2) once, then only
    the rest of each prompt. With hooks attached the prompt pass is one call as documented in
    :func:`generate`, whatever this says."""
    use_cache: bool = True
    """Decode with the KV cache (one position per step). ``False`` re-runs the whole sequence
    each step: slower, for models whose cache cannot be used."""
    warn_length_fraction: float = 0.2
    """Log a warning when more than this fraction of responses hit ``max_new_tokens``."""
    progress: bool = True
    """Show a tqdm progress bar over sequences."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.warn_length_fraction <= 1.0:
            raise ValueError(
                f"warn_length_fraction must be in [0, 1], got {self.warn_length_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GenerationConfig fields: {sorted(unknown)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class Generation:
    """One generated response."""

    prompt_index: int
    """Index of the prompt in the list given to :func:`generate`."""
    sample_index: int
    """Which of the ``num_samples`` responses to that prompt (0-based)."""
    prompt_ids: tuple[int, ...]
    """The prompt's token ids (unpadded)."""
    output_ids: tuple[int, ...]
    """Generated token ids, without the stop token for ``"eos"``; for ``"newline"`` the last id
    is the token that holds the newline."""
    text: str
    """Decoded output (special tokens skipped); for ``"newline"`` cut before the newline."""
    finish_reason: FinishReason
    """``"eos"`` (a stop token), ``"newline"`` (``stop_at_newline``), ``"sentence"``
    (``stop_at_sentence``) or ``"length"``."""

    @property
    def hit_max_new_tokens(self) -> bool:
        """True when no stop came before ``max_new_tokens`` (the response may be cut short)."""
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_ids"] = list(self.prompt_ids)
        d["output_ids"] = list(self.output_ids)
        d["hit_max_new_tokens"] = self.hit_max_new_tokens
        return d


@dataclass(frozen=True)
class GenerationStats:
    """How a set of generations ended."""

    n: int
    """Number of responses."""
    n_eos: int
    """Responses that ended on a stop token."""
    n_newline: int
    """Responses that ended on a newline (``stop_at_newline``)."""
    n_length: int
    """Responses that hit ``max_new_tokens``."""
    mean_new_tokens: float
    """Mean number of generated tokens per response (stop token excluded)."""
    n_sentence: int = 0
    """Responses that ended at the end of their first sentence (``stop_at_sentence``)."""

    @property
    def frac_hit_max(self) -> float:
        """Fraction of responses that hit ``max_new_tokens`` (0.0 for no responses)."""
        return self.n_length / self.n if self.n else 0.0

    @classmethod
    def from_generations(cls, generations: Sequence[Generation]) -> GenerationStats:
        reasons = [g.finish_reason for g in generations]
        n = len(reasons)
        total = sum(len(g.output_ids) for g in generations)
        return cls(
            n=n,
            n_eos=reasons.count("eos"),
            n_newline=reasons.count("newline"),
            n_length=reasons.count("length"),
            mean_new_tokens=total / n if n else 0.0,
            n_sentence=reasons.count("sentence"),
        )

    @classmethod
    def from_reasons(cls, reasons: Sequence[str], n_tokens: Sequence[int]) -> GenerationStats:
        """Build stats from saved finish reasons and token counts (e.g. a collection file)."""
        n = len(reasons)
        return cls(
            n=n,
            n_eos=list(reasons).count("eos"),
            n_newline=list(reasons).count("newline"),
            n_length=list(reasons).count("length"),
            mean_new_tokens=sum(n_tokens) / n if n else 0.0,
            n_sentence=list(reasons).count("sentence"),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frac_hit_max"] = self.frac_hit_max
        return d


# --------------------------------------------------------------------------------------------
# prompts


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` carries a chat template (an instruction-tuned model)."""
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt_ids(
    tokenizer: Any,
    question: str | Sequence[Message],
    *,
    suffix: str | None = None,
    system: str | None = None,
    chat: bool | None = None,
) -> list[int]:
    """Token ids of the prompt for one question (or one multi-turn conversation).

    With a chat template the user turn is ``question + " " + suffix``, rendered with
    ``add_generation_prompt=True`` and tokenised with ``add_special_tokens=False`` (the template
    already holds any BOS it wants; a bridge tokenizer with ``add_bos_token=True`` would add a
    second one). Without one (a base model) the prompt is the paper's
    ``question + " " + suffix + "\\nAnswer:"``, tokenised with the tokenizer's own special
    tokens (the BOS a base model expects).

    Args:
        tokenizer: a Hugging Face tokenizer (``model.tokenizer``).
        question: the question text, or a list of ``{"role", "content"}`` messages for a
            multi-turn prompt (e.g. a sycophancy follow-up); ``suffix`` then goes on the last
            user message. Base prompts render messages as ``user\\nAnswer: assistant\\n...``.
        suffix: instruction appended to the (last) user message, e.g. the paper's
            ``"Respond with the answer only, without any explanation."``.
        system: optional system message (chat) or preamble line (base).
        chat: ``None`` = use the chat template when the tokenizer has one; ``True`` = require
            it; ``False`` = always the base format.

    Returns:
        The prompt's token ids.

    Raises:
        ValueError: ``chat=True`` without a chat template; empty or malformed messages.

    Example:
        >>> from hneuron_lens.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> ids = build_prompt_ids(tok, "Who wrote Hamlet?", suffix="Answer briefly.")
        >>> tok.decode(ids)
        '<|im_start|>user\\nWho wrote Hamlet? Answer briefly.<|im_end|>\\n<|im_start|>assistant\\n'
    """
    if isinstance(question, str):
        messages: list[dict[str, str]] = [{"role": "user", "content": question}]
    else:
        messages = [dict(m) for m in question]
        if not messages:
            raise ValueError("messages must not be empty")
        for m in messages:
            if not {"role", "content"} <= set(m) or m["role"] not in (
                "system",
                "user",
                "assistant",
            ):
                raise ValueError(
                    f"malformed message {m!r}: need role (system/user/assistant) and content"
                )
    if suffix:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise ValueError("suffix given but the messages hold no user turn")
        last = users[-1]
        messages[last] = {**messages[last], "content": messages[last]["content"] + " " + suffix}
    if system is not None:
        if any(m["role"] == "system" for m in messages):
            raise ValueError("system given twice: as an argument and as a message")
        messages = [{"role": "system", "content": system}, *messages]

    use_chat = has_chat_template(tokenizer) if chat is None else chat
    if use_chat:
        if not has_chat_template(tokenizer):
            raise ValueError("chat=True but the tokenizer has no chat_template")
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    parts: list[str] = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"] + "\n")
        elif m["role"] == "user":
            parts.append(m["content"] + BASE_PROMPT_SUFFIX)
        else:
            parts.append(" " + m["content"] + "\n")
    if messages[-1]["role"] != "user":
        raise ValueError("a base prompt must end with a user turn")
    return list(tokenizer("".join(parts))["input_ids"])


# --------------------------------------------------------------------------------------------
# stop tokens and sampling


def stop_token_ids(model: Any) -> set[int]:
    """Token ids that end a response: EOS, the generation config's EOS ids, end-of-turn markers.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> sorted(stop_token_ids(tiny_model("llama")))  # <|endoftext|>, <|im_end|>
        [0, 2]
    """
    tok = model.tokenizer
    ids: set[int] = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gen_cfg = getattr(getattr(model, "original_model", None), "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    vocab = tok.get_vocab()
    for name in END_OF_TURN_TOKENS:
        if name in vocab:
            ids.add(int(vocab[name]))
    return ids


def row_seed(seed: int, prompt_seed: int, sample_index: int) -> int:
    """The 63-bit generator seed of one (prompt, sample) row."""
    digest = hashlib.sha256(f"{seed}:{prompt_seed}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def filter_logits(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float
) -> torch.Tensor:
    """Temperature, then top-k, then top-p (Hugging Face's order); removed entries are -inf.

    Args:
        logits: ``[batch, d_vocab]`` float logits.

    Returns:
        Filtered float logits of the same shape (at least one finite entry per row).
    """
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1.0 - top_p)
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def top_k_probs(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling distribution of :func:`filter_logits` restricted to the ``top_k`` best tokens.

    Args:
        logits: ``[batch, d_vocab]`` float logits.

    Returns:
        ``(probs, index)``, both ``[batch, top_k]``: probabilities (zero where top-p removed the
        token; each row sums to 1) and the vocabulary ids they belong to, most likely first.
    """
    values, index = torch.topk(logits / temperature, top_k, dim=-1)  # descending
    if top_p < 1.0:
        # Hugging Face's rule on the ascending order: drop tokens whose cumulative probability
        # (smallest first) is <= 1 - top_p; the most likely token always stays.
        remove = values.flip(-1).softmax(dim=-1).cumsum(dim=-1) <= (1.0 - top_p)
        remove[..., -1] = False
        values = values.masked_fill(remove.flip(-1), float("-inf"))
    return values.softmax(dim=-1), index


def _next_tokens(
    logits: torch.Tensor, cfg: GenerationConfig, generators: list[torch.Generator] | None
) -> torch.Tensor:
    """Next token per row: argmax, or a draw from the filtered distribution with the row's generator.

    With a top-k filter the work is done on the ``top_k`` largest logits only (one ``topk`` per
    step instead of sorting the vocabulary, and draws over ``top_k`` entries instead of
    ``d_vocab``): the same distribution as :func:`filter_logits` (up to ties at the k-th logit,
    which :func:`filter_logits` keeps and this path breaks by index), not the same random stream.
    """
    logits = logits.float()
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    assert generators is not None and len(generators) == logits.shape[0]
    if logits.device != generators[0].device:  # the unembedding sits on another device
        logits = logits.to(generators[0].device)
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        probs, index = top_k_probs(logits, cfg.temperature, cfg.top_k, cfg.top_p)
        picks = torch.cat(
            [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]
        )
        return index.gather(-1, picks[:, None])[:, 0]
    probs = filter_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p).softmax(dim=-1)
    return torch.cat(
        [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]
    )


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    out: list[int]
    reason: FinishReason | None = None
    text: str | None = None


def _newline_cut(text: str) -> int | None:
    """Index of the first newline that follows non-whitespace text, or None."""
    lead = len(text) - len(text.lstrip())
    cut = text.find("\n", lead)
    return None if cut < 0 or lead == len(text) else cut


ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "mt",
        "ft",
        "vs",
        "no",
        "prof",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "rev",
        "hon",
        "approx",
        "ca",
        "etc",
        "inc",
        "ltd",
        "co",
        "corp",
        "e.g",
        "i.e",
        "u.s",
        "u.k",
        "a.d",
        "b.c",
    }
)
"""Words whose trailing period does not end a sentence (compared lower-cased, without the dot)."""


def ends_sentence(text: str) -> bool:
    """True when ``text`` (stripped of trailing spaces) ends a sentence: ``.``, ``!`` or ``?``
    after a word of two or more characters that is not in :data:`ABBREVIATIONS`.

    Single characters before a period (initials such as ``J.``, list numbers such as ``1.``) and
    dotted initials (``J.R.R.``, ``D.C.``) do not end a sentence.

    Example:
        >>> ends_sentence("The capital is Paris."), ends_sentence("J. R. R."), ends_sentence("Dr.")
        (True, False, False)
    """
    text = text.rstrip()
    if not text or text[-1] not in ".!?":
        return False
    if text[-1] in "!?":
        return len(text) > 1
    word = text[:-1].split()[-1] if text[:-1].split() else ""
    word = word.strip("\"'()[]")
    # "J.R.R." / "D.C." / "U.S.": a period inside the word marks initials, not a sentence end
    return len(word) >= 2 and "." not in word and word.lower() not in ABBREVIATIONS


def _piece(tok: Any, t: int, cache: dict[int, str]) -> str:
    """The text of token ``t`` alone (cached per call of :func:`generate`)."""
    if t not in cache:
        cache[t] = tok.decode([t])
    return cache[t]


def _sentence_done(tok: Any, out: list[int], t: int, cache: dict[int, str]) -> bool:
    """True when ``out`` holds a finished first sentence and ``t`` starts the text after it.

    Cheap for most steps: the response is decoded only when its last token holds ``.!?``.
    """
    last = _piece(tok, out[-1], cache)
    if not any(c in last for c in ".!?"):
        return False
    nxt = _piece(tok, t, cache)
    # SentencePiece tokenizers may drop a word's leading space when decoding it alone.
    space = nxt[:1].isspace() or str(tok.convert_ids_to_tokens(t))[:1] in ("\u2581", "\u0120")
    if not (last[-1:].isspace() or space):
        return False
    return ends_sentence(tok.decode(out, skip_special_tokens=True))


MIN_SHARED_PREFIX = 4
"""Shortest common prompt prefix worth a separate pass (see ``GenerationConfig.share_prefix``)."""

PRUNE_FRACTION = 0.125
"""Finished rows leave the batch once they are this fraction of it (at least one row). Dropping
rows copies the whole KV cache (every layer's keys and values), which costs about as much as a
decoding step's cache append; keeping a few finished rows costs only their share of the step
(they decode pad tokens, ignored). Dropping at every finish spent 6-8% of a 128-row collection's
CPU time on cache copies; dropping in groups made it 7% faster (README "Benchmarks")."""


def _prune_now(n_finished: int, n_rows: int) -> bool:
    """Whether ``n_finished`` of the batch's ``n_rows`` rows are enough to drop them now."""
    return n_finished >= max(1, math.ceil(PRUNE_FRACTION * n_rows))


def _has_hooks(model: Any) -> bool:
    """Whether any forward hook is attached to the bridge's hook points."""
    hook_dict = getattr(model, "hook_dict", None) or {}
    return any(getattr(hp, "fwd_hooks", None) for hp in hook_dict.values())


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all ``prompts`` share, leaving each at least one own token.

    Example:
        >>> common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
        2
    """
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(max(n, 0)):
        if any(p[i] != first[i] for p in prompts[1:]):
            return i
    return max(n, 0)


def _prefix_prompt_pass(
    model: Any,
    rows: list[_Row],
    distinct: list[int],
    owner: list[int],
    pad_id: int,
    device: torch.device,
    last_only: dict[str, int],
) -> tuple[torch.Tensor, Any, torch.Tensor] | None:
    """The prompt pass with the batch's shared prefix run once.

    The prefix (one row) fills a cache that is repeated for every distinct prompt; the rest of
    each prompt follows, left-padded after the prefix, so the mask is ``[prefix ones, pads,
    suffix ones]`` (position ids come from the mask, so every real token keeps its position).
    The cache is then repeated for the samples of each prompt.

    Returns:
        ``(last-position logits [rows, 1, d_vocab], cache, mask [rows, prefix + suffix width])``,
        or ``None`` when there is no prefix worth sharing or the cache cannot repeat rows.
    """
    prompts = [rows[i].prompt_ids for i in distinct]
    n_pre = common_prefix_length(prompts)
    if n_pre < MIN_SHARED_PREFIX:
        return None
    pre = torch.tensor([prompts[0][:n_pre]], dtype=torch.long, device=device)
    _, cache = model(pre, return_type="logits_and_cache", use_cache=True, **last_only)
    one_per_prompt = torch.zeros(len(prompts), dtype=torch.long, device=device)
    if cache is None or not _select_cache(cache, one_per_prompt):
        return None
    tails = [p[n_pre:] for p in prompts]
    width = max(len(t) for t in tails)
    ids = torch.full((len(tails), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tails), n_pre + width), dtype=torch.long)
    mask[:, :n_pre] = 1
    for i, t in enumerate(tails):
        ids[i, width - len(t) :] = torch.tensor(t, dtype=torch.long)
        mask[i, n_pre + width - len(t) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    logits, cache = model(
        ids, attention_mask=mask, past_key_values=cache, return_type="logits_and_cache", **last_only
    )
    expand = torch.tensor([distinct.index(o) for o in owner], dtype=torch.long, device=device)
    if len(distinct) < len(rows) and not _select_cache(cache, expand):
        return None  # pragma: no cover - the first select worked, so this one does too
    return logits[expand][:, -1:], cache, mask[expand]


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the wrapped Hugging Face model's forward takes ``logits_to_keep``."""
    import inspect

    hf = getattr(model, "original_model", None)
    try:
        return "logits_to_keep" in inspect.signature(hf.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def _select_cache(cache: Any, keep: torch.Tensor) -> bool:
    select = getattr(cache, "batch_select_indices", None)
    if select is None:
        return False
    select(keep)
    return True


@torch.no_grad()
def _generate_batch(
    model: Any,
    rows: list[_Row],
    cfg: GenerationConfig,
    stops: set[int],
    pad_id: int,
    seeds: list[int] | None,
    bar: Any,
) -> None:
    tok = model.tokenizer
    device = torch.device(model.cfg.device)
    width = max(len(r.prompt_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.prompt_ids)
        ids[i, width - n :] = torch.tensor(r.prompt_ids, dtype=torch.long)
        mask[i, width - n :] = 1
    ids, mask = ids.to(device), mask.to(device)
    generators = None
    if cfg.do_sample:
        assert seeds is not None
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    active = list(range(len(rows)))  # batch position -> row index
    # The prompt pass needs logits at the last position only (like transformers' generate);
    # the unembedding of every prompt position is ~20% of a small model's prompt pass.
    last_only = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    cache: Any = None
    can_prune = True
    if cfg.use_cache:
        # Rows that share a prompt (the k samples of one question) share one prompt pass: the
        # prompt runs once per distinct prompt, then its cache rows are repeated.
        first: dict[tuple[int, ...], int] = {}
        owner = [first.setdefault(tuple(r.prompt_ids), i) for i, r in enumerate(rows)]
        distinct = sorted(set(owner))
        shared = None
        if cfg.share_prefix and len(distinct) > 1 and not _has_hooks(model):
            shared = _prefix_prompt_pass(model, rows, distinct, owner, pad_id, device, last_only)
        if shared is not None:
            logits, cache, mask = shared
            width = mask.shape[1]
        elif len(distinct) < len(rows):
            sel = torch.tensor(distinct, dtype=torch.long, device=device)
            logits, cache = model(
                ids[sel],
                attention_mask=mask[sel],
                return_type="logits_and_cache",
                use_cache=True,
                **last_only,
            )
            expand = torch.tensor(
                [distinct.index(o) for o in owner], dtype=torch.long, device=device
            )
            if cache is not None and _select_cache(cache, expand):
                logits = logits[expand]
            else:  # the cache cannot repeat rows: run the whole batch
                logits, cache = model(
                    ids,
                    attention_mask=mask,
                    return_type="logits_and_cache",
                    use_cache=True,
                    **last_only,
                )
        else:
            logits, cache = model(
                ids,
                attention_mask=mask,
                return_type="logits_and_cache",
                use_cache=True,
                **last_only,
            )
        if cache is None:
            logger.warning(
                "the model returned no KV cache (installed: %s): decoding without it (slower)",
                version_report(),
            )
        else:
            check_cache_length(cache, width, "after the prompt pass")
    if cache is None:
        logits = model(ids, attention_mask=mask, return_type="logits")
    logits = logits[:, -1:]
    piece_text: dict[int, str] = {}
    for step in range(cfg.max_new_tokens):
        new = _next_tokens(logits[:, -1, :], cfg, generators).tolist()
        for ri, t in zip(active, new, strict=True):
            r = rows[ri]
            if r.reason is not None:  # finished earlier, kept only because it could not be pruned
                continue
            if t in stops:
                r.reason = "eos"
            elif cfg.stop_at_sentence and r.out and _sentence_done(tok, r.out, t, piece_text):
                r.reason = "sentence"  # the token after the sentence is not kept
                r.text = tok.decode(r.out, skip_special_tokens=True).rstrip()
            else:
                r.out.append(t)
                if cfg.stop_at_newline and "\n" in _piece(tok, t, piece_text):
                    text = tok.decode(r.out, skip_special_tokens=True)
                    cut = _newline_cut(text)
                    if cut is not None:
                        r.reason, r.text = "newline", text[:cut]
                if r.reason is None and len(r.out) >= cfg.max_new_tokens:
                    r.reason = "length"
            if r.reason is not None:
                bar.update(1)
        live = [p for p, ri in enumerate(active) if rows[ri].reason is None]
        if not live or step == cfg.max_new_tokens - 1:
            break
        next_ids = torch.tensor(
            [new[p] if rows[ri].reason is None else pad_id for p, ri in enumerate(active)],
            dtype=torch.long,
            device=device,
        )[:, None]
        if can_prune and _prune_now(len(active) - len(live), len(active)):
            keep = torch.tensor(live, dtype=torch.long, device=device)
            if cache is None or _select_cache(cache, keep):
                mask, ids, next_ids = mask[keep], ids[keep], next_ids[keep]
                active = [active[p] for p in live]
                if generators is not None:
                    generators = [generators[p] for p in live]
            else:  # this cache cannot drop rows: finished rows keep running on pad tokens
                can_prune = False
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if cache is not None:
            logits, cache = model(
                next_ids,
                attention_mask=mask,
                past_key_values=cache,
                return_type="logits_and_cache",
            )
            if step == 0:
                check_cache_length(cache, mask.shape[1], "after the first decode step")
        else:
            ids = torch.cat([ids, next_ids], dim=1)
            logits = model(ids, attention_mask=mask, return_type="logits")
    for r in rows:
        if r.reason is None:  # pragma: no cover - loop always assigns a reason
            r.reason = "length"
        if r.text is None:
            r.text = tok.decode(r.out, skip_special_tokens=True)


def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig | None = None,
    *,
    prompt_seeds: Sequence[int] | None = None,
    on_batch_start: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Generate ``cfg.num_samples`` responses for each tokenised prompt, in batches.

    Rows (prompt x sample) are sorted by prompt length and cut into batches of
    ``cfg.batch_size``; each batch is left-padded with an explicit attention mask. Hooks
    attached to ``model`` (e.g. with :func:`hneuron_lens.hooks.hooked` or ``model.hooks``) are
    active throughout: per batch they see one prompt pass over the batch's distinct prompts
    (left-padded), then one position per step for the rows still generating.

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        prompts: token ids per prompt (see :func:`build_prompt_ids`); no padding.
        cfg: decoding settings (default :class:`GenerationConfig`).
        prompt_seeds: one integer per prompt that, with ``cfg.seed`` and the sample index,
            seeds that row's sampler (default: the prompt's index). Pass a stable id (e.g. a
            hash of the question id) so a row's samples do not depend on which other prompts
            share the call.
        on_batch_start: called with the batch number before each batch's prompt pass (e.g. to
            reset a hook's per-prompt state).

    Returns:
        One :class:`Generation` per (prompt, sample), ordered by prompt then sample index.

    Raises:
        ValueError: an empty prompt, or ``prompt_seeds`` of the wrong length.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> ids = build_prompt_ids(model.tokenizer, "Who wrote Hamlet?")
        >>> gens = generate(model, [ids], GenerationConfig(max_new_tokens=4, progress=False))
        >>> len(gens), gens[0].finish_reason in ("eos", "length")
        (1, True)
    """
    cfg = cfg or GenerationConfig()
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if prompt_seeds is not None and len(prompt_seeds) != len(prompts):
        raise ValueError(f"got {len(prompt_seeds)} prompt_seeds for {len(prompts)} prompts")
    if model.tokenizer is None:
        raise ValueError("generate needs a model with a tokenizer")
    adapter = getattr(model, "adapter", None)
    if cfg.use_cache and not getattr(adapter, "supports_kv_cache", True):
        logger.info("this architecture has no KV cache: decoding without it")
        cfg = replace(cfg, use_cache=False)
    if cfg.batch_size > 1 and not getattr(adapter, "supports_batched_generation", True):
        logger.info("this architecture cannot mask padding: generating one sequence at a time")
        cfg = replace(cfg, batch_size=1)
    stops = stop_token_ids(model)
    pad_id = pad_token_id(model.tokenizer, fallback=min(stops) if stops else 0)
    pseeds = list(prompt_seeds) if prompt_seeds is not None else list(range(len(prompts)))

    rows = [
        _Row(p, s, [int(t) for t in prompt], [])
        for p, prompt in enumerate(prompts)
        for s in range(cfg.num_samples)
    ]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
    n_batches = math.ceil(len(rows) / cfg.batch_size)
    with (
        tqdm(total=len(rows), desc="generate", unit="seq", disable=not cfg.progress) as bar,
        kv_cache_compat(model),
    ):
        for b in range(n_batches):
            batch = [rows[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            seeds = [row_seed(cfg.seed, pseeds[r.prompt_index], r.sample_index) for r in batch]
            if on_batch_start is not None:
                on_batch_start(b)
            _generate_batch(model, batch, cfg, stops, pad_id, seeds, bar)

    out = [
        Generation(
            prompt_index=r.prompt_index,
            sample_index=r.sample_index,
            prompt_ids=tuple(r.prompt_ids),
            output_ids=tuple(r.out),
            text=r.text or "",
            finish_reason=r.reason or "length",
        )
        for r in rows
    ]
    stats = GenerationStats.from_generations(out)
    if stats.n and stats.frac_hit_max > cfg.warn_length_fraction:
        logger.warning(
            "%.0f%% of %d responses hit max_new_tokens=%d (threshold %.0f%%): answers may be "
            "cut short; raise max_new_tokens or check the prompt format",
            100 * stats.frac_hit_max,
            stats.n,
            cfg.max_new_tokens,
            100 * cfg.warn_length_fraction,
        )
    return out
