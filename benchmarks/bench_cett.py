"""Time ``hl.cett`` against the plain forward pass and the released method's extraction loop.

Rows (tokens/s = real, non-pad tokens processed per second):

* ``plain forward``: the model's batched forward pass, no hooks, full logits (length-bucketed
  batches, the same batches ``hl.cett`` gets);
* ``hl.cett``: the engine (in-hook reduction, stops after the last MLP);
* ``released method``: batch 1, forward hooks that keep the full ``hook_post`` / ``hook_out``
  activations of every layer, stack them, compute CETT per token, reduce, save one file per sample
  (the loop of the H-Neurons release, re-implemented here as a reference point).

Usage:
    python benchmarks/bench_cett.py                      # default model, CPU, 256 samples
    python benchmarks/bench_cett.py --device cuda --model default --n 256
    python benchmarks/bench_cett.py --random-llama-8b --device cuda --dtype bfloat16 --n 512  # GPU only
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import hneuron_lens as hl
from hneuron_lens.cett import collate, length_buckets

WORDS = (
    "the of and a to in is was for on that by with as at from his her it an were which are "
    "this be or had not but first one their its new after who they have two been has more time "
    "capital river city king war year born known called named during world united state north"
).split()


def make_samples(n: int, seed: int = 0) -> list[hl.JudgedSample]:
    """``n`` chat samples with questions of 6-30 words and responses of 1-60 words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))).capitalize() + "?"
        resp_words = [rng.choice(WORDS) for _ in range(rng.randint(1, 60))]
        answer = "Paris"
        resp_words.insert(rng.randint(0, len(resp_words)), answer)
        out.append(
            hl.JudgedSample(f"s{i}", q, " ".join(resp_words) + ".", i % 2, answer_text=answer)
        )
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_plain(model, toks, batch_size: int, device: str) -> float:
    pad = model.tokenizer.pad_token_id or 0
    _sync(device)
    t = time.perf_counter()
    with torch.no_grad():
        for idx in length_buckets(toks, batch_size):
            b = collate([toks[i] for i in idx], pad, device=device)
            model(b.input_ids, attention_mask=b.attention_mask)
    _sync(device)
    return time.perf_counter() - t


def time_cett(model, toks, batch_size: int, device: str) -> float:
    pad = model.tokenizer.pad_token_id or 0
    sites = hl.neuron_sites(model)
    cfg = hl.CETTConfig(regions=("answer", "other"))
    _sync(device)
    t = time.perf_counter()
    for idx in length_buckets(toks, batch_size):
        b = collate([toks[i] for i in idx], pad, regions=cfg.regions, device=device)
        out = hl.cett(model, b, cfg, sites=sites)
        {r: v.cpu() for r, v in out.items()}
    _sync(device)
    return time.perf_counter() - t


def time_released(model, toks, device: str, out_dir: Path) -> float:
    """Batch 1, keep full activations of every layer, stack, reduce, one file per sample."""
    n_layers = model.cfg.n_layers
    w_norms = [b.mlp.W_out.detach().float().norm(dim=1) for b in model.blocks]
    _sync(device)
    t = time.perf_counter()
    for tok in toks:
        acts: dict[str, torch.Tensor] = {}

        def keeper(name, acts=acts):
            def keep(x, hook):
                acts[name] = x.detach()

            return keep

        names = [
            f"blocks.{layer}.mlp.{h}"
            for layer in range(n_layers)
            for h in ("hook_post", "hook_out")
        ]
        hooks = [(n, keeper(n)) for n in names]
        ids = torch.tensor([tok.input_ids], device=device)
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            model(ids)
        z = torch.stack(
            [acts[f"blocks.{layer}.mlp.hook_post"][0].float() for layer in range(n_layers)]
        )
        y = torch.stack(
            [acts[f"blocks.{layer}.mlp.hook_out"][0].float() for layer in range(n_layers)]
        )
        full = (
            z.abs() * torch.stack(w_norms)[:, None, :] / y.norm(dim=-1, keepdim=True)
        )  # [L, P, d]
        a, b = tok.answer
        mask = torch.zeros(full.shape[1], dtype=torch.bool, device=full.device)
        mask[a:b] = True
        answer = full[:, mask].mean(1)
        other = full[:, ~mask].mean(1)
        np.save(out_dir / f"{tok.sample_id}.npy", torch.stack([answer, other]).cpu().numpy())
    _sync(device)
    return time.perf_counter() - t


LLAMA_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
}
"""Llama-3-8B's shape, for ``--random-llama-8b`` (a test runs the same path at a tiny shape)."""


def random_llama_8b(device: str, dtype: torch.dtype, shape: dict[str, int] | None = None):
    """A random-weight Llama-shaped model (default :data:`LLAMA_8B`) built directly on the
    device (no download)."""
    import transformers as T

    from hneuron_lens.models import boot_bridge
    from hneuron_lens.testing import tiny_tokenizer

    cfg = T.LlamaConfig(**(LLAMA_8B if shape is None else shape))
    with torch.device(device):
        hf = T.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    hf.config.architectures = ["LlamaForCausalLM"]
    return boot_bridge(hf.eval(), tiny_tokenizer(), name="random-llama-8b", device=device)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--released-n", type=int, default=None, help="samples for the slow reference (default: n)"
    )
    p.add_argument("--random-llama-8b", action="store_true")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)

    if args.random_llama_8b:
        model = random_llama_8b(args.device, hl.models._dtype(args.dtype))
    else:
        model = hl.load_model(args.model, dtype=args.dtype, device=args.device)
    samples = make_samples(args.n)
    toks, report = hl.tokenize_samples(model.tokenizer, samples)
    assert report.n_ok == len(samples), report
    n_tokens = sum(len(t) for t in toks)
    # warm-up (allocator, kernels)
    time_plain(model, toks[: args.batch_size], args.batch_size, args.device)
    time_cett(model, toks[: args.batch_size], args.batch_size, args.device)

    rows = []
    t_plain = time_plain(model, toks, args.batch_size, args.device)
    rows.append(("plain forward (batched, full logits)", n_tokens / t_plain, 1.0))
    t_cett = time_cett(model, toks, args.batch_size, args.device)
    rows.append(("hl.cett (batched)", n_tokens / t_cett, t_cett / t_plain))
    rel = toks[: args.released_n] if args.released_n else toks
    rel_tokens = sum(len(t) for t in rel)
    with tempfile.TemporaryDirectory() as d:
        t_rel = time_released(model, rel, args.device, Path(d))
    rel_tps = rel_tokens / t_rel
    rows.append(("released method (batch 1, full acts)", rel_tps, (n_tokens / t_plain) / rel_tps))

    name = "random-llama-8b" if args.random_llama_8b else args.model
    print(
        f"model={name} device={args.device} dtype={args.dtype} samples={len(toks)} tokens={n_tokens} "
        f"batch={args.batch_size} torch_threads={torch.get_num_threads()}"
    )
    print(f"{'method':<40} {'tokens/s':>10} {'cost vs plain':>14}")
    for label, tps, ratio in rows:
        print(f"{label:<40} {tps:>10.0f} {ratio:>13.2f}x")
    print(f"hl.cett speed-up over released method: {(n_tokens / t_cett) / rel_tps:.2f}x")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [dict(method=r[0], tokens_per_s=r[1], cost_vs_plain=r[2]) for r in rows], indent=1
            )
        )


if __name__ == "__main__":
    main()
