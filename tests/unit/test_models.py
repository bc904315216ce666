"""neuron_sites on every dense family, MoE refusal, cache validation, loader errors."""

from __future__ import annotations

import json

import pytest
import torch

from hneuron_lens.models import (
    UnsupportedModelError,
    cached_copy_is_valid,
    load_model,
    model_identity,
    neuron_sites,
    quick_digest,
)
from hneuron_lens.testing import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_sites_every_family(tiny, family):
    model = tiny(family)
    sites = neuron_sites(model)
    assert len(sites) == model.cfg.n_layers
    for site in sites:
        w = model.blocks[site.layer].mlp.W_out
        assert site.hook_post == f"blocks.{site.layer}.mlp.hook_post"
        assert site.hook_out == f"blocks.{site.layer}.mlp.hook_out"
        assert site.d_mlp == w.shape[0]
        assert site.w_out_norm.dtype == torch.float32
        torch.testing.assert_close(site.w_out_norm, w.detach().float().norm(dim=1))
        assert (site.b_out is not None) == (family in ("gpt2", "neox"))


def test_per_layer_d_mlp(tiny):
    assert [s.d_mlp for s in neuron_sites(tiny("llama-varied"))] == [48, 80]


def test_moe_is_refused_with_reason():
    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        neuron_sites(tiny_model("qwen2-moe"))


def test_neuron_sites_does_not_touch_weights(tiny):
    model = tiny("gpt2")
    before = model.blocks[0].mlp.W_out.detach().clone()
    neuron_sites(model)
    assert torch.equal(before, model.blocks[0].mlp.W_out.detach())


def test_model_identity_tells_checkpoints_apart():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    ia, ib = model_identity(a), model_identity(b)
    assert ia["weights_sha256"] != ib["weights_sha256"]
    assert ia["d_mlp"] == [48, 48] and ia["n_layers"] == 2
    assert model_identity(tiny_model("llama", seed=0))["weights_sha256"] == ia["weights_sha256"]


def test_cached_copy_validation(tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    weights = target / "model.safetensors"
    weights.write_bytes(b"x" * 3_000_000)
    manifest = {"format": 1, "source_size": 10, "files": {weights.name: quick_digest(weights)}}
    (target / "hneuron_cache.json").write_text(json.dumps(manifest))
    assert cached_copy_is_valid(target)
    with open(weights, "r+b") as f:  # damage the tail
        f.seek(2_999_000)
        f.write(b"y")
    assert not cached_copy_is_valid(target)
    weights.write_bytes(b"x" * 1_000)  # truncation
    assert not cached_copy_is_valid(target)
    (target / "hneuron_cache.json").write_text("{not json")
    assert not cached_copy_is_valid(target)
    assert not cached_copy_is_valid(tmp_path / "missing")


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(FileNotFoundError, match="directory"):
        load_model(str(tmp_path / "no-such-dir"))
    with pytest.raises(ValueError, match="dtype"):
        load_model("default", dtype="float8")
