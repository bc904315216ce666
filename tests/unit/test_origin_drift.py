"""Per-neuron weight drift between two checkpoints (hneuron_lens.origin.weight_drift).

Tiny random pairs made here: an "instruct" copy of a tiny model with small noise on every MLP
weight, a planted *stable* set (weights copied from the base: drift 0) and a planted *unstable*
set (large perturbations). Checkpoints are written with ``save_pretrained`` in several shards.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hneuron_lens.errors import DataError, ModelError, OutputError
from hneuron_lens.origin import COMPONENTS, DriftReport, neuron_drift, weight_drift
from hneuron_lens.testing import tiny_hf_model

# family -> (parameter name template, {component: (kind, neuron axis)})
_NAMES = {
    "llama": (
        "model.layers.{L}.mlp.{k}.weight",
        {"up": ("up_proj", 0), "gate": ("gate_proj", 0), "down": ("down_proj", 1)},
    ),
    "gemma3": (
        "model.layers.{L}.mlp.{k}.weight",
        {"up": ("up_proj", 0), "gate": ("gate_proj", 0), "down": ("down_proj", 1)},
    ),
    "gpt2": ("transformer.h.{L}.mlp.{k}.weight", {"up": ("c_fc", 1), "down": ("c_proj", 0)}),
    "neox": (
        "gpt_neox.layers.{L}.mlp.{k}.weight",
        {"up": ("dense_h_to_4h", 0), "down": ("dense_4h_to_h", 1)},
    ),
}
STABLE = range(0, 6)
UNSTABLE = range(6, 12)


def _reference_drift(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """1 - cos per neuron, written independently (plain dot products in float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if axis == 1:
        a, b = a.T, b.T
    with np.errstate(invalid="ignore", divide="ignore"):  # zero vectors: NaN, checked apart
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return 1.0 - cos


def _planted_pair(family: str, seed: int = 1) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(base, instruct): noise on every MLP weight, STABLE neurons copied, UNSTABLE scrambled."""
    base = tiny_hf_model(family)
    inst = copy.deepcopy(base)
    template, comps = _NAMES[family]
    gen = torch.Generator().manual_seed(seed)
    params = dict(inst.named_parameters())
    base_params = dict(base.named_parameters())
    n_layers = base.config.num_hidden_layers if hasattr(base.config, "num_hidden_layers") else 2
    with torch.no_grad():
        for layer in range(n_layers):
            for kind, axis in comps.values():
                name = template.format(L=layer, k=kind)
                w, w0 = params[name], base_params[name]
                w.add_(1e-2 * w0.std() * torch.randn(w.shape, generator=gen))
                for j in STABLE:
                    w.select(axis, j).copy_(w0.select(axis, j))
                for j in UNSTABLE:
                    w.select(axis, j).add_(
                        w0.std() * torch.randn(w.select(axis, j).shape, generator=gen)
                    )
    return base, inst


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory):
    base, inst = _planted_pair("llama")
    root = tmp_path_factory.mktemp("pair")
    base.save_pretrained(root / "base", max_shard_size="20KB")
    inst.save_pretrained(root / "instruct", max_shard_size="20KB")
    return base, inst, root / "base", root / "instruct"


def _pairs(idx: range, n_layers: int = 2) -> list[tuple[int, int]]:
    return [(layer, j) for layer in range(n_layers) for j in idx]


def test_checkpoints_are_sharded(llama_pair):
    _, _, base_dir, _ = llama_pair
    assert (base_dir / "model.safetensors.index.json").is_file()
    assert len(list(base_dir.glob("*.safetensors"))) >= 3


def test_planted_stable_set_ranks_near_one(llama_pair):
    _, _, base_dir, inst_dir = llama_pair
    report = weight_drift(
        base_dir, inst_dir, _pairs(STABLE), n_permutations=2000, n_resamples=300, progress=False
    )
    assert report.family == "gated" and set(report.components) == {"up", "gate", "down"}
    stable = report.neuron_set
    for c in report.components.values():
        assert np.all(c[stable] == 0.0)  # copied weights: exactly no drift
    for variant in ("global", "layer"):
        t = report.tests[variant]
        assert t.mean_rank.estimate > 0.85
        assert t.t_p_value < 1e-3 and t.perm_p_value < 0.01
        assert t.null.contains(0.5) and abs(t.null.estimate - 0.5) < 0.1
        # every stable neuron sits in the least-drifting tenth, none in the most-drifting one
        assert t.n_top == 12 and t.n_bottom == 0
        assert t.top_p_value < 0.01 and t.bottom_p_value == 1.0


def test_planted_unstable_set_ranks_near_zero(llama_pair):
    _, _, base_dir, inst_dir = llama_pair
    report = weight_drift(
        base_dir,
        inst_dir,
        _pairs(UNSTABLE),
        alternative="less",
        n_permutations=2000,
        n_resamples=300,
        progress=False,
    )
    for variant in ("global", "layer"):
        t = report.tests[variant]
        assert t.mean_rank.estimate < 0.15
        assert t.mean_rank.high < 0.5
        assert t.t_p_value < 1e-3 and t.perm_p_value < 0.01
        assert t.n_bottom >= 10 and t.bottom_p_value < 0.01


def test_random_set_null_is_centred_at_one_half(llama_pair):
    _, _, base_dir, inst_dir = llama_pair
    rng = np.random.default_rng(3)
    neutral = [j for j in range(48) if j not in STABLE and j not in UNSTABLE]
    chosen = [
        (int(layer), int(j)) for layer in (0, 1) for j in rng.choice(neutral, 8, replace=False)
    ]
    report = weight_drift(
        base_dir, inst_dir, chosen, alternative="two-sided", n_permutations=2000, progress=False
    )
    for t in report.tests.values():
        assert abs(t.null.estimate - 0.5) < 0.06
        assert t.null.low < t.mean_rank.estimate < t.null.high
        assert t.mean_rank.low < 0.5 < t.mean_rank.high
        assert t.perm_p_value > 0.05


def test_streaming_equals_in_memory_and_reference(llama_pair):
    base, inst, base_dir, inst_dir = llama_pair
    streamed = weight_drift(base_dir, inst_dir, progress=False)
    in_memory = weight_drift(base, inst, progress=False)
    template, comps = _NAMES["llama"]
    sd_b, sd_i = base.state_dict(), inst.state_dict()
    for comp, (kind, axis) in comps.items():
        ref = np.concatenate(
            [
                _reference_drift(
                    sd_b[template.format(L=layer, k=kind)].numpy(),
                    sd_i[template.format(L=layer, k=kind)].numpy(),
                    axis,
                )
                for layer in range(2)
            ]
        )
        np.testing.assert_allclose(streamed.components[comp], ref, rtol=1e-6, atol=1e-12)
        np.testing.assert_array_equal(streamed.components[comp], in_memory.components[comp])
    for v in ("global", "layer"):
        np.testing.assert_array_equal(streamed.ranks[v], in_memory.ranks[v])


@pytest.mark.parametrize("family", ["gemma3", "gpt2", "neox"])
def test_other_families_gated_and_dense(family, tmp_path):
    base, inst = _planted_pair(family)
    base.save_pretrained(tmp_path / "b", max_shard_size="30KB")
    inst.save_pretrained(tmp_path / "i", max_shard_size="30KB")
    report = weight_drift(
        tmp_path / "b", tmp_path / "i", _pairs(STABLE), n_permutations=500, progress=False
    )
    expected = {"up", "gate", "down"} if family == "gemma3" else {"up", "down"}
    assert set(report.components) == expected
    assert report.family == {"gemma3": "gated", "gpt2": "gpt2", "neox": "neox"}[family]
    template, comps = _NAMES[family]
    sd_b, sd_i = base.state_dict(), inst.state_dict()
    for comp, (kind, axis) in comps.items():
        ref = _reference_drift(
            sd_b[template.format(L=1, k=kind)].numpy(),
            sd_i[template.format(L=1, k=kind)].numpy(),
            axis,
        )
        got = report.components[comp][report.layout.offsets[1] : report.layout.offsets[2]]
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)
    assert report.tests["global"].mean_rank.estimate > 0.85


def test_bridge_source_matches_files(llama_pair):
    from hneuron_lens.models import boot_bridge
    from hneuron_lens.testing import tiny_tokenizer

    base, inst, base_dir, inst_dir = llama_pair
    bb = boot_bridge(copy.deepcopy(base), tiny_tokenizer(), "b", check_decoding=False)
    bi = boot_bridge(copy.deepcopy(inst), tiny_tokenizer(), "i", check_decoding=False)
    from_bridges = weight_drift(bb, bi, progress=False)
    from_files = weight_drift(base_dir, inst_dir, progress=False)
    for c in from_files.components:
        np.testing.assert_array_equal(from_bridges.components[c], from_files.components[c])


def test_identical_weights_give_zero_drift_and_a_note(llama_pair):
    _, _, base_dir, _ = llama_pair
    report = weight_drift(base_dir, base_dir, _pairs(STABLE), n_permutations=100, progress=False)
    assert report.identical
    assert all(np.all(v == 0) for v in report.components.values())
    assert all(np.all(r == 0.5) for r in report.ranks.values())
    assert any("identical MLP weights" in n for n in report.notes)
    assert np.isnan(report.tests["global"].t_p_value)
    assert "identical MLP weights" in str(report)


def test_bf16_checkpoints(tmp_path):
    base, inst = _planted_pair("llama")
    base.to(torch.bfloat16).save_pretrained(tmp_path / "b")
    inst.to(torch.bfloat16).save_pretrained(tmp_path / "i")
    report = weight_drift(tmp_path / "b", tmp_path / "i", progress=False)
    ref = _reference_drift(
        base.model.layers[0].mlp.up_proj.weight.float().detach().numpy(),
        inst.model.layers[0].mlp.up_proj.weight.float().detach().numpy(),
        0,
    )
    np.testing.assert_allclose(report.components["up"][:48], ref, rtol=1e-5, atol=1e-9)


def test_mismatched_shapes_are_refused_naming_both(tmp_path):
    tiny_hf_model("llama").save_pretrained(tmp_path / "llama")
    tiny_hf_model("llama-varied").save_pretrained(tmp_path / "varied")
    with pytest.raises(ModelError) as err:
        weight_drift(tmp_path / "llama", tmp_path / "varied", progress=False)
    msg = str(err.value)
    assert "llama" in msg and "varied" in msg and "(48, 32)" in msg and "(80, 32)" in msg
    tiny_hf_model("gpt2").save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ModelError, match="do not pair up"):
        weight_drift(tmp_path / "llama", tmp_path / "gpt2", progress=False)


def test_unreadable_checkpoints_are_refused(tmp_path):
    tiny_hf_model("qwen2-moe").save_pretrained(tmp_path / "moe")
    with pytest.raises(ModelError, match="mixture-of-experts"):
        weight_drift(tmp_path / "moe", tmp_path / "moe", progress=False)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="no safetensors") as err:
        weight_drift(tmp_path / "bin", tmp_path / "bin", progress=False)
    assert "pickle" in str(err.value)
    tiny_hf_model("llama").save_pretrained(tmp_path / "cut", max_shard_size="20KB")
    shard = sorted((tmp_path / "cut").glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ModelError, match="missing"):
        weight_drift(tmp_path / "cut", tmp_path / "cut", progress=False)
    with pytest.raises(ModelError, match="download it first"):
        weight_drift("nobody/not-a-cached-model", tmp_path / "moe", progress=False)


def test_neuron_set_outside_the_model_is_refused(llama_pair):
    _, _, base_dir, inst_dir = llama_pair
    with pytest.raises(ModelError, match="outside this model"):
        weight_drift(base_dir, inst_dir, [(0, 48)], progress=False)
    with pytest.raises(DataError, match="twice"):
        weight_drift(base_dir, inst_dir, [(0, 1), (0, 1)], progress=False)


def test_neuron_drift_formula_and_zero_vectors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5)).astype(np.float32)
    b = a + 0.1 * rng.normal(size=(7, 5)).astype(np.float32)
    a[3] = 0.0
    b[3] = 0.0  # both zero: no drift
    b[4] = 0.0  # one zero: cos taken as 0
    got = neuron_drift(torch.from_numpy(a), torch.from_numpy(b), axis=0, chunk_bytes=80)
    ref = _reference_drift(a, b, 0)
    keep = [0, 1, 2, 5, 6]
    np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-9, atol=1e-12)
    assert got[3] == 0.0 and got[4] == 1.0
    np.testing.assert_array_equal(
        neuron_drift(torch.from_numpy(a.T.copy()), torch.from_numpy(b.T.copy()), axis=1), got
    )
    same = torch.randn(4, 6)
    assert np.all(neuron_drift(same, same.clone()) == 0.0)


def test_report_save_load_tables(llama_pair, tmp_path):
    _, _, base_dir, inst_dir = llama_pair
    report = weight_drift(base_dir, inst_dir, _pairs(STABLE), n_permutations=300, progress=False)
    report.save(tmp_path / "drift")
    back = DriftReport.load(tmp_path / "drift")
    for c in report.components:
        np.testing.assert_array_equal(back.components[c], report.components[c])
    assert back.tests["layer"].perm_p_value == report.tests["layer"].perm_p_value
    assert back.tests["global"].n_top == report.tests["global"].n_top
    assert back.tests["global"].top_p_value == report.tests["global"].top_p_value
    np.testing.assert_array_equal(
        back.tests["global"].null_values, report.tests["global"].null_values
    )
    meta = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert (
        meta["library_version"]
        and meta["base"]["files"]
        and meta["tests"]["global"]["n_neurons"] == 12
    )
    df = report.to_pandas()
    assert len(df) == 96 and df["in_set"].sum() == 12
    assert {f"drift_{c}" for c in COMPONENTS} <= set(df.columns)
    per_layer = report.per_layer()
    assert list(per_layer["n_set"]) == [6, 6]
    text = str(report)
    assert "mean rank" in text and "global" in text and "layer" in text and "rank tails" in text
    report.save(tmp_path / "drift")  # replacing its own output is fine
    (tmp_path / "drift" / "mine.txt").write_text("not yours")
    with pytest.raises(OutputError):
        report.save(tmp_path / "drift")
    assert (tmp_path / "drift" / "mine.txt").read_text() == "not yours"


def test_figures(llama_pair, tmp_path):
    from hneuron_lens.viz.origin import plot_drift_ranks, plot_layer_drift
    from hneuron_lens.viz.style import save_figure

    _, _, base_dir, inst_dir = llama_pair
    report = weight_drift(base_dir, inst_dir, _pairs(STABLE), n_permutations=300, progress=False)
    fig = plot_drift_ranks(report)
    assert len(fig.axes) == 2
    assert len(plot_drift_ranks(weight_drift(base_dir, inst_dir, progress=False)).axes) == 1
    fig2 = plot_layer_drift(report)
    assert len(fig2.axes[0].lines) == 4  # three components and their mean
    for name, f in (("ranks.png", fig), ("layers.svg", fig2)):
        path = save_figure(f, tmp_path / name)
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="variant"):
        plot_drift_ranks(report, "nope")
