"""Time one L1 probe fit and a C path at paper-like scale (4,000 rows x 46,080 features).

The probe's defaults (standardised features, balanced classes, unpenalised intercept; the
automatic C grid) are used; C values are on the standardised scale.

46,080 = 18 layers x 2,560 neurons. Synthetic CETT-like data: non-negative, about half exact
zeros, exponential tails; 2,000 samples -> 4,000 training rows in the 3-vs-1 setup
(answer + other vectors); 10 planted neurons shifted in hallucinated answer vectors.

    OMP_NUM_THREADS=1 python benchmarks/bench_probe.py --solver liblinear
    OMP_NUM_THREADS=1 python benchmarks/bench_probe.py --solver saga --tol 1e-3
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.probe import SparseProbe, probe_path


def make_split(
    n_samples: int, layout: NeuronLayout, seed: int, planted: np.ndarray
) -> FeatureSplit:
    rng = np.random.default_rng(seed)
    f = layout.n_features
    labels = (np.arange(n_samples) % 2).astype(np.int8)
    feats = {}
    for region in ("answer", "other"):
        x = rng.random((n_samples, f), dtype=np.float32)
        np.subtract(1.0, x, out=x)  # (0, 1]: no log(0)
        np.log(x, out=x)
        x *= -0.05  # exponential, mean 0.05
        x[rng.random((n_samples, f), dtype=np.float32) < 0.5] = 0.0
        if region == "answer":
            x[np.ix_(labels == 1, planted)] += 0.05
        feats[region] = x
    split = FeatureSplit.from_arrays(feats, labels, layout=layout)
    split.meta["planted"] = planted
    return split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--solver", default="liblinear", choices=["liblinear", "saga"])
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--C", type=float, default=0.01, help="on standardised features (default)")
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--cs", default="auto", help="comma-separated grid or 'auto'")
    ap.add_argument("--skip-path", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    layout = NeuronLayout.uniform(18, 2560)
    t0 = time.perf_counter()
    planted = np.random.default_rng(123).choice(layout.n_features, size=10, replace=False)
    train = make_split(2000, layout, seed=0, planted=planted)
    val = make_split(400, layout, seed=1, planted=planted)
    print(
        f"data: {time.perf_counter() - t0:.1f}s  train rows (3-vs-1) = {2 * len(train)}  features = {layout.n_features}"
    )

    t0 = time.perf_counter()
    probe = SparseProbe(C=args.C, solver=args.solver, tol=args.tol, max_iter=args.max_iter).fit(
        train
    )
    wall = time.perf_counter() - t0
    planted = set(int(i) for i in train.meta["planted"])
    found = planted & probe.h_neurons.top(len(planted)).flat_set
    print(
        f"single fit: solver={args.solver} tol={args.tol} C={args.C}: wall {wall:.1f}s "
        f"(solver {probe.fit_seconds_:.1f}s, n_iter {probe.n_iter_}, converged {probe.converged_}); "
        f"nonzero {np.count_nonzero(probe.coef_)}, H {len(probe.h_neurons)}, planted in top-10 {len(found)}/10"
    )
    if args.skip_path:
        return
    cs: str | list[float] = "auto" if args.cs == "auto" else [float(c) for c in args.cs.split(",")]
    t0 = time.perf_counter()
    path = probe_path(
        train, val, Cs=cs, solver=args.solver, tol=args.tol, max_iter=args.max_iter, n_resamples=200
    )
    print(f"path of {len(path.points)} Cs: wall {time.perf_counter() - t0:.1f}s")
    print(path)


if __name__ == "__main__":
    main()
