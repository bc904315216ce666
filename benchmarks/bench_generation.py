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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Any

import torch

from hneuron_lens.generation import GenerationConfig, build_prompt_ids, generate
from hneuron_lens.intervene import HookedIntervention, NeuronSet
from hneuron_lens.models import load_model

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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
