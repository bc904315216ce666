"""CETT: the contribution of each MLP neuron to the MLP output, reduced over token regions.

For neuron ``j`` of layer ``L`` at token ``t`` (Gao et al., arXiv:2512.01797, Sec. 3):

    CETT[L, j, t] = |z[L, t, j]| * ||W_out[L][j, :]|| / ||mlp_out[L, t]||

where ``z`` is the neuron activation (``blocks.L.mlp.hook_post``, the input of the down
projection) and ``mlp_out`` the MLP output (``blocks.L.mlp.hook_out``, before any post-FFN
norm). ``|z| * ||W_out[j]||`` is the norm of neuron j's write ``z_j W_out[j, :]``, so CETT is the
size of one neuron's contribution relative to the whole MLP output at that token. Per sample it
is reduced (mean by default, as in the paper's code) over token *regions*:

* ``answer``: the answer tokens; ``other``: every real token except the answer tokens;
* ``input``: the prompt tokens; ``output``: the response tokens.

The reduction happens inside the hooks, one layer at a time: the engine never materialises
``[layers x tokens x d_mlp]`` for the model. The mean is one batched matmul per layer
(``weights[r, b, p] / ||mlp_out[b, p]||`` times ``|z[b, p, :]|``), pad tokens get weight 0 and
are masked before the matmul so garbage in pad positions cannot leak in. The forward pass stops
right after the last layer's MLP (the final norm and the unembedding are never computed).

Bias (GPT-2, GPT-NeoX): by default the denominator is the MLP output the model actually adds to
the residual stream, ``b_out`` included (``include_bias=True``); ``include_bias=False`` uses
``mlp_out - b_out``, i.e. the sum of the neuron writes only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hneuron_lens.models import NeuronSite, neuron_sites
from hneuron_lens.spans import TokenizedSample

REGIONS = ("answer", "other", "input", "output")
_REDUCE = ("mean", "max")


@dataclass(frozen=True)
class CETTConfig:
    """How CETT is computed and reduced."""

    abs: bool = True
    """Use ``|z|`` (the paper). ``False`` gives the signed variant ``z * ||W_out[j]|| / ||out||``."""
    weight_norm: bool = True
    """Multiply by ``||W_out[j, :]||`` (the paper). ``False`` gives ``|z| / ||mlp_out||``."""
    reduce: str = "mean"
    """Reduction over a region's tokens: ``"mean"`` (the paper's code) or ``"max"``."""
    regions: tuple[str, ...] = REGIONS
    """Regions to compute, any of ``answer``, ``other``, ``input``, ``output``."""
    include_bias: bool = True
    """Denominator includes ``b_out`` (the MLP output as the model adds it). Only matters for
    models with an output bias (GPT-2, GPT-NeoX)."""
    eps: float = 1e-8
    """Added to ``||mlp_out||`` to avoid division by zero."""
    stop_early: bool = True
    """Stop the forward pass after the last MLP (skips final norm and unembedding)."""

    def __post_init__(self) -> None:
        if self.reduce not in _REDUCE:
            raise ValueError(f"CETTConfig.reduce must be one of {_REDUCE}, got {self.reduce!r}")
        regions = tuple(self.regions)
        bad = [r for r in regions if r not in REGIONS]
        if bad or not regions:
            raise ValueError(
                f"CETTConfig.regions must be a non-empty subset of {REGIONS}, got {regions}"
            )
        if len(set(regions)) != len(regions):
            raise ValueError(f"CETTConfig.regions has duplicates: {regions}")
        object.__setattr__(self, "regions", regions)
        if not self.eps >= 0:
            raise ValueError("CETTConfig.eps must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["regions"] = list(self.regions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CETTConfig:
        d = dict(d)
        if "regions" in d:
            d["regions"] = tuple(d["regions"])
        return cls(**d)


@dataclass
class TokenBatch:
    """A padded batch of tokenised samples with one boolean position mask per region."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    region_masks: dict[str, Bool[Tensor, "batch pos"]]
    sample_ids: list[str]

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in the batch."""
        return int(self.attention_mask.sum())


def region_positions(sample: TokenizedSample, region: str) -> tuple[list[int], list[int]]:
    """Token index ranges ``(starts, ends)`` that make up ``region`` for one unpadded sample."""
    n = len(sample.input_ids)
    if region == "input":
        return [0], [sample.prompt_end]
    if region == "output":
        return [sample.prompt_end], [sample.response_end]
    if sample.answer is None:
        return ([], []) if region == "answer" else ([0], [n])
    a, b = sample.answer
    if region == "answer":
        return [a], [b]
    if region == "other":
        return [0, b], [a, n]
    raise ValueError(f"unknown region {region!r}")


def collate(
    samples: list[TokenizedSample],
    pad_id: int,
    regions: tuple[str, ...] = REGIONS,
    padding_side: str = "left",
    device: str | torch.device | None = None,
) -> TokenBatch:
    """Pad samples into one batch and build the region masks (pads are in no region)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(s) for s in samples)
    bsz = len(samples)
    ids = torch.full((bsz, width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((bsz, width), dtype=torch.long)
    region_masks = {r: torch.zeros((bsz, width), dtype=torch.bool) for r in regions}
    for i, s in enumerate(samples):
        n = len(s)
        off = width - n if padding_side == "left" else 0
        ids[i, off : off + n] = torch.tensor(s.input_ids, dtype=torch.long)
        mask[i, off : off + n] = 1
        for r in regions:
            for a, b in zip(*region_positions(s, r), strict=True):
                region_masks[r][i, off + a : off + b] = True
    batch = TokenBatch(ids, mask, region_masks, [s.sample_id for s in samples])
    if device is not None:
        batch = TokenBatch(
            ids.to(device),
            mask.to(device),
            {r: m.to(device) for r, m in region_masks.items()},
            batch.sample_ids,
        )
    return batch


def length_buckets(samples: list[TokenizedSample], batch_size: int) -> list[list[int]]:
    """Indices of ``samples`` sorted by length and cut into batches (limits padding)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _Stop(Exception):
    """Raised from the last MLP's output hook once every layer is reduced."""


def cett(
    model: Any,
    batch: TokenBatch,
    cfg: CETTConfig | None = None,
    sites: list[NeuronSite] | None = None,
) -> dict[str, Float[Tensor, "batch n_layers d_mlp"]]:
    """CETT of every neuron, reduced over each region, for one tokenised batch.

    Args:
        model: a ``TransformerBridge`` (dense or gated MLPs).
        batch: from :func:`collate`, on the model's device.
        cfg: :class:`CETTConfig` (default: the paper's settings).
        sites: precomputed :func:`~hneuron_lens.models.neuron_sites` (saves recomputing norms).

    Returns:
        ``{region: Tensor[batch, n_layers, max_d_mlp]}`` float32 on the model's device. A region
        with no tokens in a sample gives NaN for that sample; when layers differ in d_mlp the
        columns past a layer's d_mlp are NaN (``NeuronLayout.flatten`` drops them).

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> from hneuron_lens.spans import tokenize_samples
        >>> from hneuron_lens.data import JudgedSample
        >>> model = tiny_model("llama")
        >>> toks, _ = tokenize_samples(model.tokenizer, [JudgedSample("q", "Who?", "Paris.", 0, answer_text="Paris")])
        >>> out = cett(model, collate(toks, pad_id=0))
        >>> tuple(out["answer"].shape)
        (1, 2, 48)
    """
    cfg = cfg or CETTConfig()
    sites = sites if sites is not None else neuron_sites(model)
    device = batch.input_ids.device
    bsz, _ = batch.input_ids.shape
    n_layers = len(sites)
    max_d = max(s.d_mlp for s in sites)
    real = batch.attention_mask.bool()
    masks = torch.stack([batch.region_masks[r] & real for r in cfg.regions])  # [R, B, P]
    counts = masks.sum(-1)  # [R, B]
    weights: Tensor | None = None
    if cfg.reduce == "mean":
        weights = masks.float() / counts.clamp(min=1).unsqueeze(-1).float()
    out = torch.full((len(cfg.regions), bsz, n_layers, max_d), float("nan"), device=device)
    stash: dict[int, Tensor] = {}
    # Layers may live on different devices (a model spread over GPUs with a device map): each
    # layer reduces on its own activation's device, with the (small) masks copied there once, and
    # only the reduced [regions, batch, d_mlp] result moves to the output's device.
    local: dict[torch.device, tuple[Tensor, Tensor, Tensor | None]] = {
        device: (real, masks, weights)
    }

    def on(dev: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
        if dev not in local:
            r, m, w = local[device]
            local[dev] = (r.to(dev), m.to(dev), w.to(dev) if w is not None else None)
        return local[dev]

    def post_hook(z: Tensor, hook: Any, layer: int) -> None:
        stash[layer] = z

    def out_hook(y: Tensor, hook: Any, layer: int) -> None:
        site = sites[layer]
        z = stash.pop(layer)
        real_l, masks_l, weights_l = on(z.device)
        red = reduce_layer(z, y, real_l, masks_l, weights_l, site.w_out_norm, site.b_out, cfg)
        out[:, :, layer, : site.d_mlp] = red.to(out.device)
        if cfg.stop_early and layer == n_layers - 1:
            raise _Stop

    from hneuron_lens.hooks import hooked

    fwd_hooks = []
    for site in sites:
        fwd_hooks.append((site.hook_post, _bind(post_hook, site.layer)))
        fwd_hooks.append((site.hook_out, _bind(out_hook, site.layer)))
    with torch.no_grad(), hooked(model, fwd_hooks):
        try:
            model(batch.input_ids, attention_mask=batch.attention_mask, return_type=None)
        except _Stop:
            pass
    if stash:
        raise RuntimeError(f"hook_post fired without hook_out for layers {sorted(stash)}")
    empty = (counts == 0).unsqueeze(-1).unsqueeze(-1)  # [R, B, 1, 1]
    out = torch.where(empty, torch.full_like(out, float("nan")), out)
    return {r: out[i] for i, r in enumerate(cfg.regions)}


def reduce_layer(
    z: Float[Tensor, "batch pos d_mlp"],
    y: Float[Tensor, "batch pos d_model"],
    real: Bool[Tensor, "batch pos"],
    masks: Bool[Tensor, "regions batch pos"],
    weights: Float[Tensor, "regions batch pos"] | None,
    w_out_norm: Float[Tensor, " d_mlp"],
    b_out: Float[Tensor, " d_model"] | None,
    cfg: CETTConfig,
) -> Float[Tensor, "regions batch d_mlp"]:
    """One layer's CETT reduced over each region, computed on the activations' device.

    The small inputs (masks, weights, norms, bias) are moved to ``z``'s device when they are
    elsewhere (a layer on another GPU), so nothing assumes one device for the whole model.

    Args:
        z: neuron activations (``hook_post``); y: MLP output (``hook_out``), same device.
        real: True at non-pad positions. masks: region masks (already ``& real``).
        weights: ``masks / count`` per region for ``reduce="mean"``, else ``None`` (max).
        w_out_norm: float32 ``||W_out[j, :]||``. b_out: float32 output bias or ``None``.
        cfg: the CETT settings.

    Returns:
        float32 ``[regions, batch, d_mlp]`` on ``z``'s device.
    """
    dev = z.device
    real, masks = real.to(dev), masks.to(dev)
    z, y = z.float(), y.float()
    if not cfg.include_bias and b_out is not None:
        y = y - b_out.to(dev)
    inv = 1.0 / (torch.linalg.vector_norm(y, dim=-1) + cfg.eps)  # [B, P]
    inv = torch.where(real, inv, torch.zeros_like(inv))
    a = z.abs() if cfg.abs else z
    a = torch.where(real.unsqueeze(-1), a, torch.zeros_like(a))  # pads hold garbage
    wn = w_out_norm.to(dev) if cfg.weight_norm else None
    if weights is not None:
        coef = (weights.to(dev) * inv.unsqueeze(0)).transpose(0, 1)  # [B, R, P]
        red = torch.bmm(coef, a).transpose(0, 1)  # [R, B, d_mlp]
        return red * wn if wn is not None else red
    full = a * inv.unsqueeze(-1)
    if wn is not None:
        full = full * wn
    neg = torch.tensor(float("-inf"), device=dev)
    return torch.stack([torch.where(m.unsqueeze(-1), full, neg).amax(dim=1) for m in masks])


def _bind(fn: Any, layer: int) -> Any:
    def hook(x: Tensor, hook: Any) -> None:
        return fn(x, hook, layer)

    return hook
