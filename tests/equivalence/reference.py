"""Slow, obvious reference CETT: full per-token tensors, one unpadded sample at a time.

Independent of ``hneuron_lens.cett``: it caches ``hook_post`` and ``hook_out`` with the bridge's
own ``run_with_cache``, computes the paper's formula per token, then averages over region tokens.
"""

from __future__ import annotations

import torch

from hneuron_lens.cett import region_positions
from hneuron_lens.spans import TokenizedSample


def reference_cett(
    model,
    sample: TokenizedSample,
    regions,
    *,
    abs_=True,
    weight_norm=True,
    include_bias=True,
    reduce="mean",
    eps=1e-8,
) -> dict[str, torch.Tensor]:
    ids = torch.tensor([sample.input_ids])
    names = []
    for layer in range(model.cfg.n_layers):
        names += [f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.mlp.hook_out"]
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    per_layer = []
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.mlp.hook_post"][0].double()  # [P, d_mlp]
        out = cache[f"blocks.{layer}.mlp.hook_out"][0].double()  # [P, d_model]
        mlp = model.blocks[layer].mlp
        w = mlp.W_out.detach().double()  # [d_mlp, d_model]
        if not include_bias and getattr(mlp, "b_out", None) is not None:
            out = out - mlp.b_out.detach().double()
        num = z.abs() if abs_ else z
        if weight_norm:
            num = num * w.norm(dim=1)
        per_layer.append(num / (out.norm(dim=-1, keepdim=True) + eps))  # [P, d_mlp]
    d_max = max(t.shape[1] for t in per_layer)
    result = {}
    for region in regions:
        starts, ends = region_positions(sample, region)
        pos = [p for a, b in zip(starts, ends, strict=True) for p in range(a, b)]
        rows = []
        for t in per_layer:
            if not pos:
                v = torch.full((t.shape[1],), float("nan"), dtype=torch.float64)
            elif reduce == "mean":
                v = t[pos].mean(0)
            else:
                v = t[pos].max(0).values
            rows.append(torch.nn.functional.pad(v, (0, d_max - v.shape[0]), value=float("nan")))
        result[region] = torch.stack(rows)  # [n_layers, d_max]
    return result
