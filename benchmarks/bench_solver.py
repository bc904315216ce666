"""Fit time and peak memory of the torch L1 logistic solver (``hneuron_lens.solvers``) on
synthetic CETT-like data (non-negative, a few planted H-Neurons), optionally beside
scikit-learn on the same matrix.

Usage::

    # 4,000 rows x 46,080 features (SmolLM2-135M's 30 x 1536 neurons), in memory
    python benchmarks/bench_solver.py --rows 4000 --features 46080 --sklearn liblinear
    # 70B-class width streamed from a float16 memory map on disk (written first)
    python benchmarks/bench_solver.py --rows 500 --features 2300000 --memmap /tmp/x.npy
    # a GPU (not measured here): X cached on the device in bf16
    python benchmarks/bench_solver.py --rows 4000 --features 2300000 --device cuda --cache-dtype bfloat16

Prints one JSON object: sizes, fit seconds, iterations, passes over X, seconds per pass, the
working set's final size and outer rounds (``--working-set 0``: plain FISTA over all columns),
non-zeros, the objective and KKT violation, peak resident memory (``ru_maxrss``) and the
memory a 4,000 x 2.3M fit needs on a GPU (:func:`gpu_memory_gb`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def synthetic(
    rows: int, features: int, seed: int = 0, out: np.ndarray | None = None, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """CETT-like ``X`` (``|N(0, 1)| * column scale``, float32, written block by block into
    ``out`` when given) and labels from 20 planted positive columns plus logistic noise."""
    rng = np.random.default_rng(seed)
    x = out if out is not None else np.empty((rows, features), dtype=np.float32)
    scale = rng.uniform(0.2, 2.0, size=features).astype(np.float32)
    planted = rng.choice(features, 20, replace=False)
    score = np.zeros(rows)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        part = np.abs(rng.standard_normal((stop - start, features), dtype=np.float32)) * scale
        x[start:stop] = part
        score[start:stop] = part[:, planted].astype(np.float64) @ np.full(20, 0.5)
    y = (score - np.quantile(score, 0.75) + rng.logistic(size=rows) > 0).astype(np.int64)
    return x, y


def smallest_active_c(blocks: object, y: np.ndarray) -> float:
    """``1 / max_j |sum_i (y_i - mean(y)) x_ij|``: below this C every weight is 0 (one pass)."""
    import torch

    r = torch.as_tensor(y - y.mean(), dtype=blocks.dtype)  # type: ignore[attr-defined]
    g = None
    for start, xb in blocks:  # type: ignore[attr-defined]
        part = xb.T @ r[start : start + xb.shape[0]].to(xb.device)
        g = part if g is None else g + part
    return float(1.0 / g.abs().max())


def gpu_memory_gb(rows: int, features: int, cache_bytes: int, block_rows: int) -> float:
    """Device memory of a fit: ``X`` cached at ``cache_bytes`` per value, one block upcast to
    float32, and ~12 float32 vectors of length ``features`` (iterate, momentum point,
    gradients, prox temporaries) plus O(rows) vectors."""
    return (rows * features * cache_bytes + block_rows * features * 4 + 12 * features * 4) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--features", type=int, default=46080)
    p.add_argument(
        "--C",
        type=float,
        default=None,
        help="default: --c-factor x the smallest C with a non-zero weight",
    )
    p.add_argument("--c-factor", type=float, default=3.0)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=2000)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    p.add_argument("--block-rows", type=int, default=256)
    p.add_argument("--power-iter", type=int, default=20, help="power-iteration passes (step size)")
    p.add_argument(
        "--working-set",
        type=int,
        default=1024,
        help="first working-set size (solvers.py); 0 = plain FISTA over all columns",
    )
    p.add_argument(
        "--memmap", default=None, help="stream X from this float16 .npy (written if absent)"
    )
    p.add_argument("--sklearn", default=None, choices=[None, "liblinear", "saga"])
    p.add_argument(
        "--sklearn-tol", type=float, default=1e-4, help="scikit-learn's tol (its default 1e-4)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)

    import torch

    from hneuron_lens.solvers import RowBlocks, fit_l1_logistic, l1_logistic_objective

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.memmap:
        path = Path(args.memmap)
        if not path.exists():
            mm = np.lib.format.open_memmap(
                path, mode="w+", dtype=np.float16, shape=(args.rows, args.features)
            )
            _, y = synthetic(args.rows, args.features, out=mm)
            mm.flush()
            del mm
            np.save(path.with_suffix(".y.npy"), y)
        x = np.load(path, mmap_mode="r")
        y = np.load(path.with_suffix(".y.npy"))
        cache = False
    else:
        x, y = synthetic(args.rows, args.features)
        cache = True
    data_s = time.perf_counter() - t0
    blocks = RowBlocks(
        x, block_rows=args.block_rows, device=args.device, dtype=args.dtype, cache=cache,
        cache_dtype=args.cache_dtype,
    )  # fmt: skip
    C = args.C if args.C is not None else args.c_factor * smallest_active_c(blocks, y)
    fit = fit_l1_logistic(
        blocks, y, C, tol=args.tol, max_iter=args.max_iter, power_iter=args.power_iter,
        working_set=args.working_set or None,
    )  # fmt: skip
    result = {
        "rows": args.rows,
        "features": args.features,
        "X": f"memmap float16 {args.memmap}" if args.memmap else "in memory float32",
        "device": args.device,
        "dtype": args.dtype,
        "cache_dtype": args.cache_dtype,
        "block_rows": args.block_rows,
        "C": C,
        "tol": args.tol,
        "max_iter": args.max_iter,
        "power_iter": args.power_iter,
        "working_set_first": args.working_set,
        "torch_threads": torch.get_num_threads(),
        "data_seconds": round(data_s, 2),
        "fit_seconds": round(fit.seconds, 2),
        "n_iter": fit.n_iter,
        "n_passes": fit.n_passes,
        "seconds_per_pass": round(fit.seconds / fit.n_passes, 4),
        "working_set": fit.working_set,
        "n_rounds": fit.n_rounds,
        "converged": fit.converged,
        "kkt_violation": fit.kkt_violation,
        "n_nonzero": fit.n_nonzero,
        "n_positive": int((fit.coef > 0).sum()),
        "objective": fit.objective,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "gpu_memory_gb_4000x2.3M": {
            "float32": round(gpu_memory_gb(4000, 2_300_000, 4, args.block_rows), 1),
            "bfloat16": round(gpu_memory_gb(4000, 2_300_000, 2, args.block_rows), 1),
        },
    }
    if args.sklearn:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        xs = np.asarray(x, dtype=np.float64 if args.sklearn == "liblinear" else np.float32)
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est = LogisticRegression(
                C=C, l1_ratio=1.0, solver=args.sklearn, tol=args.sklearn_tol, max_iter=1000,
                intercept_scaling=1000.0, random_state=0,
            ).fit(xs, y)  # fmt: skip
        objective = l1_logistic_objective(xs, y, est.coef_[0], est.intercept_[0], C)
        result["sklearn"] = {
            "solver": args.sklearn,
            "tol": args.sklearn_tol,
            "fit_seconds": round(time.perf_counter() - t1, 2),
            "n_iter": int(np.max(est.n_iter_)),
            "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
            "n_nonzero": int(np.count_nonzero(est.coef_)),
            "objective": objective,
            "objective_above_torch": (objective - fit.objective) / abs(fit.objective),
            "same_support": bool(np.array_equal(est.coef_[0] != 0, fit.coef != 0)),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
