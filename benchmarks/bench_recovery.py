"""Support recovery: which C-selection rule finds the planted H-Neurons? (issue 14)

Synthetic CETT-like data (:mod:`hneuron_lens.recovery`: non-negative, log-normal tails, a level per
layer and per neuron, "other" vectors averaged over more tokens) with planted neurons raised in
hallucinated answer vectors; 3-vs-1 training as the pipeline does it. For every setting one C
path is fitted (the library's defaults: standardised features, balanced class weights,
unpenalised intercept, automatic grid) and every rule chooses on the same fits; the paper's raw
fit (no standardising, no class weights, liblinear's penalised intercept, its grid 0.1..10, rule
"held-out") is run beside it. Reported per rule: precision / recall / F1 of the recovered set
against the planted set, its size, and the test AUROC of the chosen probe (mean over seeds,
with the range over seeds in the JSON).

Settings (the full grid is subsampled: one axis at a time around the reference, one seed by
default): the reference of the issue (3 x 500 neurons, 400 per class, 5 planted, effect 1
log-SD) at feature means 1e-3, 1e-2, 1e-1; effects 0.5 and 1.5; samples per class 50, 200,
1000, 4000 (3 x 500); neuron counts 10k (200 per class) and 100k (100 per class, so that the
matrices fit in memory). ``--quick`` runs the first six, cheap settings. ``--store`` runs the semi-synthetic version:
random labels and planted effects in the real CETT vectors of a store (train / validation /
test splits).

    OMP_NUM_THREADS=1 python benchmarks/bench_recovery.py --quick --tables
    OMP_NUM_THREADS=1 python benchmarks/bench_recovery.py --out /tmp/recovery.json --tables
    OMP_NUM_THREADS=1 python benchmarks/bench_recovery.py --store runs/default/store --tables
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")

from hneuron_lens.probe import RULES, probe_path  # noqa: E402
from hneuron_lens.recovery import (  # noqa: E402
    Planted,
    PlantedConfig,
    plant_into,
    planted_splits,
    recovery_scores,
)
from hneuron_lens.stability import stability_selection  # noqa: E402
from hneuron_lens.stats import auroc  # noqa: E402

REF = PlantedConfig()
PAPER_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
SYNTHETIC_RULES = [r for r in RULES if r != "held-out+suppression"]


def settings(quick: bool) -> list[tuple[str, PlantedConfig]]:
    """(label, config) pairs, cheapest and most important first (results are written after
    each setting, so a run cut short keeps what it finished); seeds are added by the caller."""
    out = [(f"mean {m:g}", replace(REF, mean=m)) for m in (1e-3, 1e-2, 1e-1)]
    effects = (0.5,) if quick else (0.5, 1.5)
    out += [(f"effect {e:g}", replace(REF, effect=e)) for e in effects]
    ns = (50, 200) if quick else (50, 200, 1000)
    out += [(f"n/class {n}", replace(REF, n_per_class=n)) for n in ns]
    if not quick:
        out.append(("neurons 10k", replace(REF, n_layers=10, d_mlp=1000, n_per_class=200)))
        out.append(("n/class 4000", replace(REF, n_per_class=4000)))
        out.append(
            (
                "neurons 100k",
                replace(REF, n_layers=20, d_mlp=5000, n_per_class=100, n_eval_per_class=100),
            )
        )
    return out


def evaluate(data: Planted, stability: int, seed: int) -> dict[str, dict[str, float]]:
    """One setting: every rule on the default path, the paper's raw fit, stability."""
    rows: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # edges are recorded, not printed
        t = time.perf_counter()
        path = probe_path(data.train, data.validation, n_resamples=500, seed=seed)
        seconds = time.perf_counter() - t
        paper = probe_path(
            data.train,
            data.validation,
            Cs=PAPER_GRID,
            rule="held-out",
            standardize=False,
            class_weight=None,
            intercept_scaling=1.0,
            n_resamples=100,
            extend=False,
            seed=seed,
        )
    for rule in SYNTHETIC_RULES:
        opt, chosen = path.choose(rule)
        probe = path.probes[chosen]
        rows[rule] = {
            **recovery_scores(probe.h_neurons.flat_index, data.planted),
            "test_auroc": auroc(data.test.labels, probe.decision_function(data.test)),
            "C": path.points[chosen].C,
            "edge": float(chosen in (0, len(path.points) - 1) or opt == len(path.points) - 1),
            "path_seconds": seconds,
        }
    rows["paper (raw fit, held-out)"] = {
        **recovery_scores(paper.probe.h_neurons.flat_index, data.planted),
        "test_auroc": auroc(data.test.labels, paper.probe.decision_function(data.test)),
        "C": paper.best_C,
        "edge": float(paper.edge is not None),
        "path_seconds": float("nan"),
    }
    if stability > 0 and data.train.layout.n_features <= 2000:
        opt, chosen = path.choose("auroc-1se")
        res = stability_selection(
            data.train, path.probes[chosen], n_subsamples=stability, progress=False, seed=seed
        )
        rows["stability >= 0.6 (at auroc-1se C)"] = {
            **recovery_scores(res.stable, data.planted),
            "test_auroc": float("nan"),
            "C": res.C,
            "edge": 0.0,
            "path_seconds": float("nan"),
        }
    return rows


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rule in per_seed[0]:
        vals = {k: np.array([s[rule][k] for s in per_seed]) for k in per_seed[0][rule]}
        out[rule] = {
            k: float(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in vals.items()
        }
        out[rule]["range"] = {
            k: [float(np.nanmin(v)), float(np.nanmax(v))]
            for k, v in vals.items()
            if np.isfinite(v).any()
        }
    return out


def store_data(path: str, n_planted: int, effect: float, seed: int) -> Planted:
    from hneuron_lens.store import ActivationStore

    store = ActivationStore(path)
    train, planted = plant_into(store.split("train"), n_planted, effect, seed=seed)
    val, _ = plant_into(store.split("validation"), n_planted, effect, seed + 1, planted)
    test, _ = plant_into(store.split("test"), n_planted, effect, seed + 2, planted)
    return Planted(train, val, test, planted)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | rule | precision | recall | F1 | neurons | test AUROC | at grid edge |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for rule, m in r["rules"].items():
            auc = "" if m["test_auroc"] is None else f"{m['test_auroc']:.3f}"
            lines.append(
                f"| {r['setting']} | {rule} | {m['precision']:.2f} | {m['recall']:.2f} | "
                f"{m['f1']:.2f} | {m['n_selected']:.1f} | {auc} | {m['edge']:.0%} |"
            )
    return "\n".join(lines)


def pivot(results: list[dict[str, Any]]) -> str:
    """One row per setting, one column per rule: ``F1 (neurons selected)``; the default's test
    AUROC last."""
    rules = list(results[0]["rules"])
    short = {r: r.split(" (")[0] if r.startswith("paper") else r.split(" (")[0] for r in rules}
    lines = [
        "| setting | " + " | ".join(short[r] for r in rules) + " | test AUROC (auroc-1se) |",
        "|---|" + "---|" * len(rules) + "---|",
    ]
    for res in results:
        cells = []
        for r in rules:
            m = res["rules"].get(r)
            cells.append("" if m is None else f"{m['f1']:.2f} ({m['n_selected']:.0f})")
        auc = res["rules"]["auroc-1se"]["test_auroc"]
        lines.append(f"| {res['setting']} | " + " | ".join(cells) + f" | {auc:.3f} |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """Mean over settings of each rule's F1, precision and recall."""
    rules = list(results[0]["rules"])
    lines = [
        "| rule | mean precision | mean recall | mean F1 | settings with F1 = 1 |",
        "|---|---|---|---|---|",
    ]
    for rule in rules:
        rows = [r["rules"][rule] for r in results if rule in r["rules"]]
        f1 = np.array([m["f1"] for m in rows])
        lines.append(
            f"| {rule} | {np.mean([m['precision'] for m in rows]):.2f} | "
            f"{np.mean([m['recall'] for m in rows]):.2f} | {f1.mean():.2f} | "
            f"{int((f1 >= 0.999).sum())} / {len(rows)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small subset of the grid")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per setting")
    ap.add_argument("--stability", type=int, default=10, help="stability refits (0 skips)")
    ap.add_argument("--store", default=None, help="semi-synthetic: plant into this store")
    ap.add_argument("--n-planted", type=int, default=5, help="planted neurons (--store)")
    ap.add_argument("--effects", default="1.0,2.0", help="planted effects in log-SD (--store)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--tables", action="store_true", help="print markdown tables")
    ap.add_argument("--from-json", default=None, help="only print the tables of a saved --out")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print(markdown(saved["results"]))
        print()
        print(pivot(saved["results"]))
        print()
        print(summary(saved["results"]))
        print(f"({saved['meta']['seconds']:.0f} s, {saved['meta']['seeds']} seed(s) per setting)")
        return
    n_seeds = args.seeds
    results = []
    start = time.perf_counter()
    if args.store:
        todo = [(f"store, effect {float(e):g}", float(e)) for e in args.effects.split(",")]
    else:
        todo = settings(args.quick)
    for label, spec in todo:
        t = time.perf_counter()
        per_seed = []
        for seed in range(n_seeds):
            if args.store:
                data = store_data(args.store, args.n_planted, float(spec), seed)
            else:
                data = planted_splits(replace(spec, seed=seed))  # type: ignore[type-var]
            per_seed.append(evaluate(data, args.stability, seed))
            del data
        cfg = {"effect": spec} if args.store else spec.to_dict()  # type: ignore[union-attr]
        results.append({"setting": label, "config": cfg, "rules": aggregate(per_seed)})
        print(f"{label}: {time.perf_counter() - t:.0f} s", flush=True)
        meta = {
            "seconds": time.perf_counter() - start,
            "seeds": n_seeds,
            "quick": args.quick,
            "store": args.store,
            "note": "timings on a shared, loaded 2-core machine (upper bounds)",
        }
        if args.out:  # after every setting: a run cut short keeps what it finished
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=1)
    if args.tables:
        print(markdown(results), flush=True)
        print()
        print(pivot(results))
        print()
        print(summary(results))
    print(f"total {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
