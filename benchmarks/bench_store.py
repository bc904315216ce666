"""ActivationStore size, write/read throughput and float16 error at the default model's shape.

Synthetic CETT-like values (non-negative, log-normal: mostly 1e-4..1e-1, heavy tail) unless
``--real N`` is given, which extracts N real samples with the default model (SmolLM2-135M) from
``../shared/data`` and measures the float16 error on those.

    python benchmarks/bench_store.py --n 1000
    python benchmarks/bench_store.py --n 0 --real 64
    python benchmarks/bench_store.py --n 0 --verify-cost 2000   # checksum cost of reads, per GB
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hneuron_lens.features import NeuronLayout
from hneuron_lens.store import ActivationStore, file_sha256

LAYOUT = NeuronLayout.uniform(30, 1536)  # SmolLM2-135M: 46,080 features
REGIONS = ("answer", "other")


def synthetic(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.lognormal(mean=np.log(3e-3), sigma=1.6, size=(n, LAYOUT.n_features))
    return x.astype(np.float32)


def float16_error(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)].astype(np.float64)
    h = x.astype(np.float16).astype(np.float64)
    err = np.abs(h - x)
    nz = x > 0
    rel = err[nz] / x[nz]
    normal = x >= np.finfo(np.float16).tiny  # 6.1e-5: below it float16 is subnormal
    return {
        "max_abs": float(err.max()),
        "max_rel": float(rel.max()),
        "max_rel_normal_range": float((err[normal] / x[normal]).max()),
        "mean_rel": float(rel.mean()),
        "frac_below_6.1e-5": float((~normal).mean()),
        "frac_flushed_to_zero": float(((h == 0) & nz).mean()),
        "value_p1_p50_p99_max": [float(v) for v in np.percentile(x, [1, 50, 99, 100])],
    }


def bench(n: int, dtype: str, root: Path, chunk_size: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    path = root / f"store_{dtype}"
    store = ActivationStore(path, dtype=dtype, chunk_size=chunk_size)
    store.open_for({"bench": 1}, layout=LAYOUT, regions=REGIONS)
    batch = 16
    t_gen = 0.0
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        b = min(batch, n - start)
        g0 = time.perf_counter()
        feats = {r: synthetic(rng, b) for r in REGIONS}
        t_gen += time.perf_counter() - g0
        ids = [f"s{i:06d}" for i in range(start, start + b)]
        store.write_batch(ids, [i % 2 for i in range(b)], ["train"] * b, feats)
    store.close()
    t_write = time.perf_counter() - t0 - t_gen
    size = sum(p.stat().st_size for p in (path / "chunks").iterdir())
    t0 = time.perf_counter()
    opened = ActivationStore(path)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    ActivationStore(path, verify=True)
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    split = opened.split("train")
    copies = [np.array(split.region(r)) for r in REGIONS]  # bytes into RAM, no conversion
    t_read_chunked = time.perf_counter() - t0
    t0 = time.perf_counter()
    opened.compact()
    t_compact = time.perf_counter() - t0
    t0 = time.perf_counter()
    split = ActivationStore(path).split("train")
    copies2 = [np.array(split.region(r)) for r in REGIONS]
    t_read_compact = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = [c.astype(np.float32) for c in copies2]
    t_to32 = time.perf_counter() - t0
    assert all(np.array_equal(a, b) for a, b in zip(copies, copies2, strict=True))
    mb = size / 1e6
    return {
        "dtype": dtype,
        "n": n,
        "MB_total": round(mb, 1),
        "MB_per_1000_samples": round(mb / n * 1000, 1),
        "write_MB_s": round(mb / t_write, 1),
        "write_samples_s": round(n / t_write, 1),
        "open_s": round(t_open, 3),
        "open_verify_s": round(t_verify, 2),
        "read_split_chunked_MB_s": round(mb / t_read_chunked, 1),
        "compact_s": round(t_compact, 2),
        "read_split_compact_MB_s": round(mb / t_read_compact, 1),
        "to_float32_s": round(t_to32, 2),
    }


def verify_cost(n: int, root: Path, repeats: int = 3) -> dict[str, float]:
    """What checksum verification adds to reading a split (warm page cache, median of repeats).

    ``read_split_unverified_s`` reads with hashing switched off (the baseline),
    ``read_split_verified_s`` is a fresh reader that hashes every chunk file it reads (the
    default when no writer has vouched for the files), ``read_split_cached_s`` a fresh reader
    after a writer recorded the checksums (files aged past the racy window first).
    """
    import os
    import statistics

    path = root / "verify"
    store = ActivationStore(path, chunk_size=256)
    store.open_for({"bench": 1}, layout=LAYOUT, regions=REGIONS)
    rng = np.random.default_rng(0)
    for start in range(0, n, 64):
        b = min(64, n - start)
        ids = [f"s{i:06d}" for i in range(start, start + b)]
        store.write_batch(
            ids, [i % 2 for i in range(b)], ["train"] * b, {r: synthetic(rng, b) for r in REGIONS}
        )
    store.close()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["verified"] = {}  # close() vouched for the older chunks: measure hashing them all
    (path / "manifest.json").write_text(json.dumps(manifest))
    files = sorted((path / "chunks").glob("*.npy"))
    mb = sum(p.stat().st_size for p in files) / 1e6

    def timed(fn) -> float:
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    def read(reader: ActivationStore) -> None:
        split = reader.split("train")
        for r in REGIONS:
            np.asarray(split.region(r)).max()  # touch every byte, as a probe fit does

    t_hash = timed(lambda: [file_sha256(p) for p in files])

    def unverified() -> None:
        reader = ActivationStore(path)
        reader._verify_rows = lambda ids: None  # baseline: no checksum
        read(reader)

    t_plain = timed(unverified)
    t_verified = timed(lambda: read(ActivationStore(path)))
    for p in files:  # age the files past the racy window, then let a writer vouch for them
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))
    ActivationStore(path).repair()
    t_cached = timed(lambda: read(ActivationStore(path)))
    return {
        "n": n,
        "MB": round(mb, 1),
        "sha256_MB_s": round(mb / t_hash, 1),
        "read_split_unverified_s": round(t_plain, 3),
        "read_split_verified_s": round(t_verified, 3),
        "read_split_cached_s": round(t_cached, 3),
        "verify_overhead_s_per_GB": round((t_verified - t_plain) / mb * 1000, 2),
        "cached_overhead_s_per_GB": round((t_cached - t_plain) / mb * 1000, 2),
    }


def real_values(n: int) -> np.ndarray:
    """Extract ``n`` real samples with the default model; return all stored float32 values."""
    import hneuron_lens as hl
    from hneuron_lens.data.records import JudgedSample
    from hneuron_lens.extract import extract

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "triviaqa"
    src = src / "gemma3_4b_it_consistency_samples.jsonl"
    samples = []
    with open(src) as f:
        for line in f:
            for qid, d in json.loads(line).items():
                judge, resp = d["judges"][0], d["responses"][0]
                samples.append(
                    JudgedSample(
                        qid,
                        d["question"],
                        resp,
                        int(judge != "true"),
                        aliases=tuple(d["ground_truth"]),
                        split="train",
                    )
                )
            if len(samples) >= n:
                break
    model = hl.load_model("default")
    tmp = Path(tempfile.mkdtemp())
    try:
        store = ActivationStore(tmp / "real", dtype="float32")
        span_cfg = hl.SpanConfig(fallback="response")
        extract(model, samples, store, span_cfg=span_cfg, batch_size=8, progress=False)
        return np.concatenate([np.asarray(store.features(r)[0]) for r in store.regions], axis=0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000, help="synthetic samples to write")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument(
        "--real", type=int, default=0, help="also measure float16 error on N real samples"
    )
    ap.add_argument(
        "--verify-cost", type=int, default=0, help="checksum cost of reads on N samples"
    )
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        if args.n:
            for dtype in ("float16", "float32"):
                print(json.dumps(bench(args.n, dtype, root, args.chunk_size)))
            rng = np.random.default_rng(1)
            print(json.dumps({"float16_error_synthetic": float16_error(synthetic(rng, 200))}))
        if args.real:
            print(json.dumps({"float16_error_real": float16_error(real_values(args.real))}))
        if args.verify_cost:
            print(json.dumps({"verify_cost": verify_cost(args.verify_cost, root)}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
