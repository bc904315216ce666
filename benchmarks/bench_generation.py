"""Time ``hneuron_lens.generation.generate``: batched vs one prompt at a time, and the bridge's own
``model.generate`` one prompt at a time, on trivia prompts in the paper's ChatML format.

tokens/s = generated tokens (stop tokens excluded) per second of wall time, prompt pass included.

``--intervene K`` adds the cost of :class:`hneuron_lens.HookedIntervention` on K random neurons
(seeded, spread over the layers): each batch size is timed without hooks, with the hooks installed
at a factor of 1 + 1e-6 (every hooked activation is rewritten, yet greedy decoding emits the same
tokens, so the two timings compare like with like; the script checks the tokens agree), and at
alpha = 3 (a real intervention; tokens/s only, since the outputs differ). Conditions are
interleaved over ``--repeats`` rounds and the median is reported, so load drift hits all alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py                 # default model, CPU
    python benchmarks/bench_generation.py --intervene 30 --repeats 3      # hook overhead
    python benchmarks/bench_generation.py --device cuda --n 64 --batch-sizes 1 16 64

``--compare-hf`` times collection-style sampling instead: :func:`hneuron_lens.generate` (what
``hl.collect`` runs) against plain ``transformers`` ``AutoModelForCausalLM.generate`` on the same
weights (loaded from the same directory), the same prompts and the same sampling settings (T=1.0,
top-k 50, top-p 0.9, ``--k`` samples per prompt, ``--max-new-tokens``, stop at the chat template's
end-of-turn token), each at every batch size of ``--batch-sizes`` (rows = prompt x sample per
forward pass); the best of each (by responses per CPU-second) is compared. It reports
responses/s (what collection needs) and generated tokens/s (stop tokens excluded; the two methods draw different random samples, so
their token counts differ a little), and responses per CPU-second of this process
(``time.process_time``), which a machine shared with other jobs disturbs much less than wall time.

    OMP_NUM_THREADS=2 python benchmarks/bench_generation.py --compare-hf --n 16 --k 4 --batch-sizes 16 32 64

``--prune-fraction F`` sets ``hneuron_lens.generation.PRUNE_FRACTION`` first (``0``: finished rows
leave the batch one by one, as before 2026-12-03), to compare row-dropping policies:
    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --compare-hf --n 32 --k 4 --batch-sizes 64 128 --stop-at-sentence --prune-fraction 0
``--profile`` prints the operators' share of CPU time in one sampled ``generate`` call:
    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --profile --n 32 --k 4 --batch-sizes 128 --prune-fraction 0
``--step-cost`` prints the CPU cost of a prompt token and of a decoding step per row at each
``--batch-sizes``: whether decoding is compute- or overhead-bound on this machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --step-cost --batch-sizes 16 64 128 256
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from typing import Any

import torch

from hneuron_lens.generation import GenerationConfig, build_prompt_ids, generate
from hneuron_lens.intervene import HookedIntervention, NeuronSet
from hneuron_lens.models import EMBEDDED, embedded_checkpoint, load_model

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the play Romeo and Juliet?",
    "What is the chemical symbol for gold?",
    "Which planet is the largest in the solar system?",
    "In which year did the first man land on the Moon?",
    "Who painted the Mona Lisa?",
    "What is the longest river in Africa?",
    "Which element has the atomic number 1?",
    "What is the name of the fictional detective created by Arthur Conan Doyle?",
    "Which country hosted the 2008 Summer Olympic Games?",
    "Who composed the opera The Magic Flute?",
    "What is the smallest prime number?",
    "Which ocean lies between Africa and Australia?",
    "What is the currency of Japan?",
    "Who was the first President of the United States?",
    "Which instrument has 88 keys?",
    "What is the hardest natural substance?",
    "In which city is the Colosseum?",
    "Which gas do plants absorb from the atmosphere for photosynthesis?",
    "Who developed the theory of general relativity?",
    "What is the largest mammal?",
    "Which language has the most native speakers?",
    "What is the boiling point of water at sea level in degrees Celsius?",
    "Who wrote the novel Nineteen Eighty-Four?",
    "What is the capital city of Australia?",
    "Which planet is known as the Red Planet?",
    "What is the main ingredient of guacamole?",
    "Which famous ship sank on its maiden voyage in 1912?",
    "How many sides does a hexagon have?",
    "Who discovered penicillin?",
    "What is the tallest mountain on Earth?",
    "Which metal is liquid at room temperature?",
]
SUFFIX = "Respond with the answer only, without any explanation."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 1])
    ap.add_argument("--bridge", action="store_true", help="also time model.generate, batch 1")
    ap.add_argument(
        "--intervene", type=int, default=0, help="also time HookedIntervention on K neurons"
    )
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds (median)")
    ap.add_argument(
        "--compare-hf",
        action="store_true",
        help="sampled collection: hl.generate vs transformers generate, best batch size each",
    )
    ap.add_argument("--k", type=int, default=4, help="samples per prompt (--compare-hf)")
    ap.add_argument(
        "--stop-at-sentence",
        action="store_true",
        help="--compare-hf: also time hl.generate stopping at the first sentence (hneuron-lens run)",
    )
    ap.add_argument(
        "--prune-fraction",
        type=float,
        default=None,
        help="set hneuron_lens.generation.PRUNE_FRACTION (0: drop every finished row at once, "
        "the behaviour before 2026-12-03) to compare row-dropping policies",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler over one sampled hl.generate call (--n prompts x --k, the first "
        "--batch-sizes): the CPU share of each operator",
    )
    ap.add_argument(
        "--step-cost",
        action="store_true",
        help="CPU cost of a 40-token prompt pass and of a KV-cache decoding step per batch size",
    )
    args = ap.parse_args()
    if args.prune_fraction is not None:
        import hneuron_lens.generation as generation

        generation.PRUNE_FRACTION = args.prune_fraction
        print(f"PRUNE_FRACTION = {args.prune_fraction}")
    if args.profile:
        profile(args)
        return
    if args.step_cost:
        step_cost(args)
        return
    if args.compare_hf:
        compare_hf(args)
        return

    model = load_model(args.model, device=args.device)
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
    prompts = [build_prompt_ids(model.tokenizer, q, suffix=SUFFIX) for q in qs]
    rows = []
    outputs = {}
    neurons = NeuronSet.random(model, args.intervene, seed=0) if args.intervene else None
    conditions: dict[str, Any] = {"no hooks": None}
    if neurons is not None:
        k = len(neurons)
        conditions["hooks, factor 1+1e-6"] = lambda: HookedIntervention(
            model, neurons, alphas=[1.0 + 1e-6] * k
        )
        conditions["hooks, alpha 3"] = lambda: HookedIntervention(model, neurons, alpha=3.0)
        print(f"intervention: {k} random neurons over {len(neurons.layer_counts())} layers")
    for bs in args.batch_sizes:
        cfg = GenerationConfig(
            max_new_tokens=args.max_new_tokens, do_sample=False, batch_size=bs, progress=False
        )
        generate(model, prompts[:2], cfg)  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in conditions}
        tokens: dict[str, list[int]] = {name: [] for name in conditions}
        for _ in range(args.repeats):
            for name, make in conditions.items():
                with make() if make is not None else contextlib.nullcontext():
                    t0 = time.perf_counter()
                    gens = generate(model, prompts, cfg)
                    seconds[name].append(time.perf_counter() - t0)
                tokens[name].append(sum(len(g.output_ids) for g in gens))
                if name != "hooks, alpha 3":  # its outputs differ by design
                    outputs[(bs, name)] = [g.output_ids for g in gens]
        base = statistics.median(seconds["no hooks"]) / statistics.median(tokens["no hooks"])
        for name in conditions:
            dt, n_tok = statistics.median(seconds[name]), int(statistics.median(tokens[name]))
            rows.append(
                {
                    "method": f"generate batch {bs}" + ("" if name == "no hooks" else f", {name}"),
                    "seconds": dt,
                    "tokens": n_tok,
                    "tok_per_s": n_tok / dt,
                    # time per generated token relative to no hooks at this batch size
                    "overhead": (dt / n_tok) / base - 1.0,
                }
            )
    if args.bridge:
        stop = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
        t0 = time.perf_counter()
        n_tok = 0
        for p in prompts:
            out = model.generate(
                torch.tensor([p]),
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                verbose=False,
                return_type="tokens",
                eos_token_id=stop,
            )[0, len(p) :].tolist()
            n_tok += len([t for t in out if t != stop])
        dt = time.perf_counter() - t0
        rows.append(
            {
                "method": "model.generate batch 1",
                "seconds": dt,
                "tokens": n_tok,
                "tok_per_s": n_tok / dt,
            }
        )
    same = len({tuple(map(tuple, v)) for v in outputs.values()}) == 1
    for r in rows:
        over = f"  {100 * r['overhead']:+5.1f}% s/token" if "overhead" in r else ""
        print(
            f"{r['method']:<46} {r['seconds']:8.2f} s {r['tokens']:6d} tok "
            f"{r['tok_per_s']:8.1f} tok/s{over}"
        )
    print(f"identical greedy outputs across batch sizes (and with the 1+1e-6 hooks): {same}")
    print(json.dumps({"rows": rows, "identical": same, "threads": torch.get_num_threads()}))


def _hf_generate_rows(
    hf: Any,
    prompts: list[list[int]],
    k: int,
    rows_per_batch: int,
    stops: list[int],
    pad: int,
    max_new_tokens: int,
    device: str,
) -> tuple[int, int]:
    """Plain ``transformers`` sampling of ``k`` responses per prompt; returns (responses, tokens)."""
    per_batch = max(1, rows_per_batch // k)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # same bucketing as hl
    n_resp = n_tok = 0
    for b in range(0, len(order), per_batch):
        group = [prompts[i] for i in order[b : b + per_batch]]
        width = max(len(p) for p in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, p in enumerate(group):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=True,
                temperature=1.0,
                top_k=50,
                top_p=0.9,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                eos_token_id=stops,
                pad_token_id=pad,
            )
        for row in out[:, width:].tolist():
            n_resp += 1
            for t in row:
                if t in stops:
                    break
                n_tok += 1
    return n_resp, n_tok


def compare_hf(args: argparse.Namespace) -> None:
    """``hl.generate`` (collection's sampler) vs ``transformers`` generate, best batch size each."""
    from transformers import AutoModelForCausalLM

    from hneuron_lens.generation import stop_token_ids
    from hneuron_lens.spans import pad_token_id

    model = load_model(args.model, device=args.device)
    source = str(embedded_checkpoint(args.model)) if args.model in EMBEDDED else args.model
    hf = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(args.device).eval()
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
    prompts = [build_prompt_ids(model.tokenizer, q, suffix=SUFFIX) for q in qs]
    stops = sorted(stop_token_ids(model))
    pad = pad_token_id(model.tokenizer, fallback=stops[0])
    print(
        f"{args.n} prompts x k={args.k}, {args.max_new_tokens} new tokens, T=1.0 top-k 50 "
        f"top-p 0.9, stops {stops}, {torch.get_num_threads()} threads, device {args.device}"
    )
    rows: list[dict[str, Any]] = []
    methods = ["hl.generate", "transformers generate"]
    if args.stop_at_sentence:
        methods.insert(1, "hl.generate, stop at sentence")
    for bs in args.batch_sizes:
        cfg = GenerationConfig(
            max_new_tokens=args.max_new_tokens,
            num_samples=args.k,
            batch_size=bs,
            seed=0,
            progress=False,
        )
        generate(model, prompts[:1], replace_cfg(cfg, num_samples=1, max_new_tokens=2))  # warm-up
        _hf_generate_rows(hf, prompts[:1], 1, 1, stops, pad, 2, args.device)
        for name in methods:
            torch.manual_seed(0)
            t0, c0 = time.perf_counter(), time.process_time()
            if name.startswith("hl.generate"):
                sentence = {"stop_at_sentence": True} if "sentence" in name else {}
                gens = generate(model, prompts, replace_cfg(cfg, **sentence))
                n_resp, n_tok = len(gens), sum(len(g.output_ids) for g in gens)
            else:
                n_resp, n_tok = _hf_generate_rows(
                    hf, prompts, args.k, bs, stops, pad, args.max_new_tokens, args.device
                )
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = {
                "method": name,
                "batch": bs,
                "seconds": dt,
                "cpu_seconds": cpu,
                "resp_per_cpu_s": n_resp / cpu,
                "responses": n_resp,
                "tokens": n_tok,
                "resp_per_s": n_resp / dt,
                "tok_per_s": n_tok / dt,
            }
            rows.append(row)
            print(
                f"{name:<22} batch {bs:4d} {dt:8.1f} s wall {cpu:8.1f} s cpu {n_resp:5d} resp "
                f"{n_tok:6d} tok {row['resp_per_s']:7.2f} resp/s {row['tok_per_s']:8.1f} tok/s "
                f"{row['resp_per_cpu_s']:7.2f} resp/cpu-s",
                flush=True,
            )
    best = {
        name: max((r for r in rows if r["method"] == name), key=lambda r: r["resp_per_cpu_s"])
        for name in methods
    }
    hf_b = best["transformers generate"]
    ratio: dict[str, dict[str, float]] = {}
    for name in methods[:-1]:
        hl_b = best[name]
        ratio[name] = {
            key: hl_b[key] / hf_b[key] for key in ("resp_per_s", "tok_per_s", "resp_per_cpu_s")
        }
        print(
            f"best: {name} batch {hl_b['batch']} {hl_b['resp_per_s']:.2f} resp/s vs "
            f"transformers batch {hf_b['batch']} {hf_b['resp_per_s']:.2f} resp/s: "
            f"{ratio[name]['resp_per_s']:.2f}x responses/s, {ratio[name]['tok_per_s']:.2f}x "
            f"tokens/s, {ratio[name]['resp_per_cpu_s']:.2f}x responses per CPU-second"
        )
    print(
        json.dumps({"rows": rows, "best": best, "ratio": ratio, "threads": torch.get_num_threads()})
    )


def profile(args: argparse.Namespace) -> None:
    """Operator table of one sampled ``generate`` call (whole responses), by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = load_model(args.model, device=args.device)
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
    prompts = [build_prompt_ids(model.tokenizer, q, suffix=SUFFIX) for q in qs]
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        num_samples=args.k,
        batch_size=args.batch_sizes[0],
        progress=False,
        warn_length_fraction=1.0,
    )
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        generate(model, prompts, cfg)
    print(f"{args.n} prompts x k={args.k} at {cfg.batch_size} rows, {args.max_new_tokens} tokens")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    copies = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::copy_"]
    total = sum(e.self_cpu_time_total for e in copies)
    print("aten::copy_ by input shape (5-D [batch, kv heads, groups, positions, head dim] is the")
    print("attention's repeat_kv of the cached keys and values):")
    for e in sorted(copies, key=lambda e: -e.self_cpu_time_total)[:5]:
        share = e.self_cpu_time_total / max(total, 1)
        print(f"  {share:6.1%} of copy_  {e.count:5d} calls  {str(e.input_shapes)[:90]}")
    five_d = sum(e.self_cpu_time_total for e in copies if len(e.input_shapes[0]) == 5)
    print(f"5-D copies: {five_d / max(total, 1):.1%} of copy_")


def step_cost(args: argparse.Namespace) -> None:
    """CPU seconds of a prompt pass (40 random tokens per row) and of one decoding step, by rows."""
    from hneuron_lens.compat import kv_cache_compat

    model = load_model(args.model, device=args.device)
    torch.manual_seed(0)
    with torch.no_grad(), kv_cache_compat(model):
        for rows in args.batch_sizes:
            ids = torch.randint(100, 1000, (rows, 40), device=args.device)
            c0 = time.process_time()
            _, cache = model(ids, return_type="logits_and_cache", use_cache=True, logits_to_keep=1)
            prompt = time.process_time() - c0
            mask = torch.ones(rows, 40, dtype=torch.long, device=args.device)
            nxt = ids[:, -1:]
            c0 = time.process_time()
            for _ in range(4):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                _, cache = model(
                    nxt, attention_mask=mask, past_key_values=cache, return_type="logits_and_cache"
                )
            step = (time.process_time() - c0) / 4
            print(
                f"rows {rows:4d}: prompt pass {1000 * prompt / (rows * 40):.2f} CPU-ms per token, "
                f"decoding step {1000 * step / rows:.2f} CPU-ms per row",
                flush=True,
            )


def replace_cfg(cfg: GenerationConfig, **changes: Any) -> GenerationConfig:
    return dataclasses.replace(cfg, **changes)


if __name__ == "__main__":
    main()
