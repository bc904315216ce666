"""Confound check: the probe with and without the fabricated-entity questions (issue 14).

The built-in set adds questions about invented entities (qid ``builtin-nonexist-...``); every
consistent answer to them is a hallucination, so a probe can learn "unknown entity" instead of
"hallucination". This retrains the library's default probe (``probe_path`` defaults, plus
stability selection) on a run's store twice, on all samples and with the fabricated-entity
samples left out of every split, and scores both on the test samples of *real* questions only
(AUROC / accuracy with bootstrap CIs, random-neuron controls), so the two are compared on the
same data. Read-only on the store; writes JSON to ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/compare_fabricated.py \\
        --store /work/runs/default/store --out /work/runs/i14/fabricated.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")

from hneuron_lens.features import FeatureSplit  # noqa: E402
from hneuron_lens.probe import jaccard, probe_path  # noqa: E402
from hneuron_lens.stability import stability_selection  # noqa: E402
from hneuron_lens.store import ActivationStore  # noqa: E402

FABRICATED_PREFIX = "builtin-nonexist-"


def subset(split: FeatureSplit, keep: np.ndarray) -> FeatureSplit:
    """The rows of ``split`` where ``keep`` is true (in memory)."""
    return FeatureSplit(
        features={r: np.asarray(x[keep]) for r, x in split.features.items()},
        labels=np.asarray(split.labels)[keep],
        ids=[i for i, k in zip(split.ids, keep, strict=True) if k],
        layout=split.layout,
        meta=dict(split.meta),
    )


def real(split: FeatureSplit) -> np.ndarray:
    return np.array([not i.startswith(FABRICATED_PREFIX) for i in split.ids])


def counts(split: FeatureSplit) -> dict[str, int]:
    fab = ~real(split)
    y = np.asarray(split.labels)
    return {
        "n": len(split),
        "hallucinated": int(y.sum()),
        "faithful": int((y == 0).sum()),
        "fabricated": int(fab.sum()),
        "fabricated_hallucinated": int((fab & (y == 1)).sum()),
    }


def fit_and_score(
    train: FeatureSplit, val: FeatureSplit, test: FeatureSplit, stability: int, n_random: int
) -> dict[str, Any]:
    path = probe_path(train, val)
    probe = path.probe
    if stability:
        probe.use_stability(
            stability_selection(train, probe, n_subsamples=stability, progress=False)
        )
    report = probe.evaluate(test, train=train, n_random=n_random)
    h = probe.h_neurons
    return {
        "C": path.best_C,
        "rule": path.rule,
        "edge": path.edge,
        "extensions": path.extensions,
        "n_h_neurons": len(h),
        "neurons": h.to_dict(),
        "auroc": report.metrics["auroc"].to_dict(),
        "accuracy": report.metrics["accuracy"].to_dict(),
        "random_baselines": [b.to_dict() for b in report.baselines],
        "h_refit": report.h_refit,
        "test": counts(test),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--stability", type=int, default=50)
    ap.add_argument("--n-random", type=int, default=20)
    args = ap.parse_args()
    t0 = time.perf_counter()
    store = ActivationStore(args.store)
    splits = {s: store.split(s) for s in ("train", "validation", "test")}
    no_fab = {s: subset(x, real(x)) for s, x in splits.items()}
    test_real = no_fab["test"]
    out: dict[str, Any] = {
        "store": str(args.store),
        "counts_all": {s: counts(x) for s, x in splits.items()},
        "counts_without_fabricated": {s: counts(x) for s, x in no_fab.items()},
    }
    out["all samples"] = fit_and_score(
        splits["train"], splits["validation"], test_real, args.stability, args.n_random
    )
    out["without fabricated"] = fit_and_score(
        no_fab["train"], no_fab["validation"], test_real, args.stability, args.n_random
    )
    a = {int(i) for i in out["all samples"]["neurons"]["flat_index"]}
    b = {int(i) for i in out["without fabricated"]["neurons"]["flat_index"]}
    out["jaccard_h_neurons"] = jaccard(a, b)
    out["seconds"] = time.perf_counter() - t0
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=str)
    for name in ("all samples", "without fabricated"):
        r = out[name]
        auc, acc = r["auroc"], r["accuracy"]
        print(
            f"{name:>20}: C={r['C']:.4g} {r['n_h_neurons']} H-Neurons; test (real questions, "
            f"n={r['test']['n']}) AUROC {auc['estimate']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]"
            f", accuracy {acc['estimate']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]"
        )
    print(f"Jaccard of the two H-Neuron sets: {out['jaccard_h_neurons']:.2f}")
    print(f"counts: {json.dumps(out['counts_all'])}")
    print(f"total {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
