"""weight_drift streams: a >= 1 GB sharded checkpoint pair is read with peak memory of about one
weight matrix per checkpoint, and gives the same drifts as a plain in-memory computation.

The pair is written here with numpy + safetensors (9 gated layers, d_model 1024, d_mlp 5120,
float32: 63 MB of MLP weights per layer, 566 MB per checkpoint, 3 shards each with an index).
``weight_drift`` runs in a fresh subprocess that reports its peak resident memory (VmHWM, reset
just before the call), so the test process's own arrays do not count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

N_LAYERS, D_MODEL, D_MLP, LAYERS_PER_SHARD = 9, 1024, 5120, 3
LAYER_BYTES = 3 * D_MODEL * D_MLP * 4  # gate + up + down, float32


def _tensor_names(layer: int) -> dict[str, tuple[int, int]]:
    p = f"model.layers.{layer}."
    return {
        p + "mlp.gate_proj.weight": (D_MLP, D_MODEL),
        p + "mlp.up_proj.weight": (D_MLP, D_MODEL),
        p + "mlp.down_proj.weight": (D_MODEL, D_MLP),
        p + "self_attn.q_proj.weight": (64, D_MODEL),  # not MLP: must be skipped
    }


def _write_pair(root) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    n_shards = N_LAYERS // LAYERS_PER_SHARD
    maps: dict[str, dict[str, str]] = {"base": {}, "instruct": {}}
    # one random matrix per shape, reused by every layer (cheap to make); the drift differs per
    # neuron (a rolled copy is mixed in) and per layer (by how much)
    pool = {
        shape: rng.random(shape, dtype=np.float32) - np.float32(0.5)
        for shape in set(_tensor_names(0).values())
    }
    for s in range(n_shards):
        base, inst = {}, {}
        for layer in range(s * LAYERS_PER_SHARD, (s + 1) * LAYERS_PER_SHARD):
            for name, shape in _tensor_names(layer).items():
                w = pool[shape]
                base[name] = w
                inst[name] = w + np.float32(0.02 * (layer + 1)) * np.roll(w, 1, axis=0)
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        for side, tensors in (("base", base), ("instruct", inst)):
            (root / side).mkdir(exist_ok=True)
            save_file(tensors, str(root / side / fname))
            maps[side].update({k: fname for k in tensors})
        del base, inst
    for side, weight_map in maps.items():
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (root / side / "model.safetensors.index.json").write_text(json.dumps(index))
        (root / side / "config.json").write_text(json.dumps({"model_type": "llama"}))


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from hneuron_lens.origin import weight_drift

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    try:  # reset the peak-RSS counter so imports do not count (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status("VmRSS:")
    report = weight_drift(sys.argv[1], sys.argv[2], progress=False)
    peak = status("VmHWM:")
    np.savez(sys.argv[3], **report.components)
    print(json.dumps({"before": before, "peak": peak}))
    """
)


def _reference(root) -> dict[str, np.ndarray]:
    """1 - cos per neuron, in memory with numpy (shard by shard)."""
    from safetensors.numpy import load_file

    out: dict[str, list[np.ndarray]] = {"up": [], "gate": [], "down": []}
    files = sorted((root / "base").glob("*.safetensors"))
    for f in files:
        a, b = load_file(str(f)), load_file(str(root / "instruct" / f.name))
        layers = sorted({int(k.split(".")[2]) for k in a})
        for layer in layers:
            for comp, kind, axis in (
                ("up", "up_proj", 0),
                ("gate", "gate_proj", 0),
                ("down", "down_proj", 1),
            ):
                name = f"model.layers.{layer}.mlp.{kind}.weight"
                x, y = a[name].astype(np.float64), b[name].astype(np.float64)
                if axis == 1:
                    x, y = x.T, y.T
                cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
                out[comp].append(1.0 - cos)
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
def test_streaming_peak_memory_and_equality(tmp_path):
    root = tmp_path / "pair"
    root.mkdir()
    try:
        _write_pair(root)
        total = sum(f.stat().st_size for f in root.rglob("*.safetensors"))
        assert total >= 1_000_000_000
        out = tmp_path / "components.npz"
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(root / "base"), str(root / "instruct"), str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        mem = json.loads(proc.stdout.strip().splitlines()[-1])
        extra = mem["peak"] - mem["before"]
        # one matrix of each checkpoint (2/3 of a layer) plus float64 work space: well under 3x
        assert extra < 3 * LAYER_BYTES, f"peak grew by {extra / 2**20:.0f} MiB"
        got = np.load(out)
        ref = _reference(root)
        for comp in ("up", "gate", "down"):
            assert got[comp].shape == (N_LAYERS * D_MLP,)
            np.testing.assert_allclose(got[comp], ref[comp], rtol=1e-7, atol=1e-12)
    finally:
        shutil.rmtree(root, ignore_errors=True)
