"""Smoke tests for benchmark paths that this project's CPU machine cannot run at full size: the
GPU benchmark of issue 15 (`bench_cett.py --random-llama-8b`) runs here end to end at a tiny
Llama shape, so a GPU session spends its minutes measuring, not debugging."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_cett_random_llama_path_runs_on_cpu(monkeypatch, tmp_path, capsys):
    from hneuron_lens.testing import tiny_tokenizer

    bench = _load("bench_cett")
    tiny = dict(
        bench.LLAMA_8B,
        vocab_size=len(tiny_tokenizer()),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in Llama-3-8B
    )
    monkeypatch.setattr(bench, "LLAMA_8B", tiny)
    rows = tmp_path / "rows.json"
    argv = ["--random-llama-8b", "--dtype", "bfloat16", "--n", "6", "--batch-size", "3"]
    bench.main([*argv, "--json", str(rows)])
    out = capsys.readouterr().out
    assert "model=random-llama-8b" in out and "speed-up over released method" in out
    got = json.loads(rows.read_text())
    assert [r["method"] for r in got] == [
        "plain forward (batched, full logits)",
        "hl.cett (batched)",
        "released method (batch 1, full acts)",
    ]
    assert all(r["tokens_per_s"] > 0 and r["cost_vs_plain"] > 0 for r in got)


def test_bench_solver_runs_the_gpu_settings_on_cpu(tmp_path, capsys):
    """`bench_solver.py` with the GPU row's settings (bf16 block cache) and with a memory map,
    small: a converged fit, the scikit-learn comparison, and the report's fields."""
    bench = _load("bench_solver")
    argv = ["--rows", "300", "--features", "2000", "--sklearn", "liblinear", "--working-set", "64"]
    assert bench.main([*argv, "--cache-dtype", "bfloat16"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert bench.main([*argv, "--memmap", str(tmp_path / "x.npy")]) == 0
    streamed = json.loads(capsys.readouterr().out)
    for got in (cached, streamed):
        assert got["converged"] and got["n_nonzero"] > 0 and got["working_set"] > 0
        assert got["sklearn"]["converged"] and abs(got["sklearn"]["objective_above_torch"]) < 1e-2
    assert streamed["X"].startswith("memmap")
