"""Models over several devices (issue 15): device maps, offload refusal, device-agnostic hooks.

This machine has one device (the CPU), so no test here runs layers on two real devices. What the
tests do prove:

* the device-map rules (:func:`check_device_map`) and that :func:`load_model` applies them both
  to the map asked for and to the placement ``transformers`` realised;
* ``load_model(..., device_map="auto")`` goes through the accelerate loading path and gives the
  same CETT numbers as a plain single-device load;
* the per-layer code that runs inside hooks (CETT's reduction, the intervention hook) computes
  on the device of the activation it receives and moves its own small tensors there: the
  ``meta`` device stands in for "another GPU" (torch refuses to mix ``meta`` and ``cpu``
  tensors, exactly as it refuses ``cuda:0`` and ``cuda:1``), so any leftover same-device
  assumption would raise. A real two-GPU run is still to be done where GPUs are lent.
"""

from __future__ import annotations

import pytest
import torch

from hneuron_lens.cett import CETTConfig, cett, collate, reduce_layer
from hneuron_lens.data.records import JudgedSample
from hneuron_lens.errors import ModelError
from hneuron_lens.intervene import HookedIntervention, NeuronSet, _LayerHook
from hneuron_lens.models import check_device_map, load_model
from hneuron_lens.spans import tokenize_samples
from hneuron_lens.testing import tiny_hf_model, tiny_tokenizer


def test_check_device_map_rules():
    check_device_map({"model.layers.0": 0, "model.layers.1": 1, "lm_head": "cuda:1"})
    check_device_map({"model.layers.0": "cpu", "lm_head": "cpu"})  # plain CPU, not offload
    for bad in (
        {"model.layers.0": 0, "model.layers.1": "cpu"},
        {"model.layers.0": "cuda:0", "lm_head": "disk"},
        {"model.layers.0": "cpu", "model.layers.1": "disk"},
    ):
        with pytest.raises(ModelError, match="offloads") as err:
            check_device_map(bad)
        assert "allow_offload=True" in str(err.value)
        check_device_map(bad, allow_offload=True)


def test_load_model_device_map_argument_errors(tmp_path):
    with pytest.raises(ModelError, match="both device"):
        load_model(str(tmp_path), device="cpu", device_map="auto")
    with pytest.raises(ModelError, match="embedded"):
        load_model("default", device_map="auto")
    # an offloading map is refused before any weight is read
    with pytest.raises(ModelError, match="offloads"):
        load_model(str(tmp_path), device_map={"model.layers.0": 0, "lm_head": "disk"})


@pytest.fixture()
def tiny_dir(tmp_path):
    hf = tiny_hf_model("llama")
    hf.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_load_model_refuses_realised_offload(tiny_dir, monkeypatch):
    """device_map="auto" may spill to CPU/disk when GPUs are full: the realised map is checked."""
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def spilled(*args, **kwargs):
        model = real(*args, **{k: v for k, v in kwargs.items() if k != "device_map"})
        model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": "cpu"}
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spilled)
    with pytest.raises(ModelError, match="hf_device_map offloads 1 module"):
        load_model(str(tiny_dir), device_map="auto")


def _batch(model):
    samples = [
        JudgedSample(
            "a",
            "Who wrote Hamlet?",
            "William Shakespeare wrote it.",
            0,
            answer_text="William Shakespeare",
        ),
        JudgedSample("b", "Capital of France?", "Paris.", 1, answer_text="Paris"),
    ]
    toks, _ = tokenize_samples(model.tokenizer, samples)
    return collate(toks, pad_id=0)


def test_device_map_load_matches_single_device(tiny_dir):
    one = load_model(str(tiny_dir), device="cpu")
    mapped = load_model(str(tiny_dir), device_map="auto")  # accelerate path; all CPU here
    assert str(mapped.cfg.device) == "cpu"
    cfg = CETTConfig(regions=("answer", "other"))
    a, b = cett(one, _batch(one), cfg), cett(mapped, _batch(mapped), cfg)
    for region in cfg.regions:
        torch.testing.assert_close(a[region], b[region], rtol=0, atol=0, equal_nan=True)
    neurons = NeuronSet.random(one, 6, seed=0)
    ids = _batch(one).input_ids
    with HookedIntervention(one, neurons, alpha=0.0):
        la = one(ids, return_type="logits")
    with HookedIntervention(mapped, neurons, alpha=0.0):
        lb = mapped(ids, return_type="logits")
    torch.testing.assert_close(la, lb, rtol=0, atol=0)


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_cett_reduction_runs_on_the_activation_device(reduce):
    """Activations on another device (``meta``) with masks and norms on the CPU: no mixing."""
    torch.manual_seed(0)
    b, p, d_mlp, d_model = 2, 5, 8, 4
    real = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    masks = torch.stack([real & (torch.arange(p) >= 3), real & (torch.arange(p) < 3)])
    weights = None
    if reduce == "mean":
        weights = masks.float() / masks.sum(-1, keepdim=True).clamp(min=1).float()
    cfg = CETTConfig(regions=("answer", "other"), reduce=reduce)
    z, y = torch.randn(b, p, d_mlp), torch.randn(b, p, d_model)
    w, bias = torch.rand(d_mlp), torch.randn(d_model)
    on_cpu = reduce_layer(z, y, real, masks, weights, w, bias, cfg)
    assert on_cpu.shape == (2, b, d_mlp) and on_cpu.device.type == "cpu"
    with pytest.raises(RuntimeError):  # mixing the two devices really fails
        torch.where(real, z.to("meta")[..., 0], torch.zeros(()))
    on_meta = reduce_layer(z.to("meta"), y.to("meta"), real, masks, weights, w, bias, cfg)
    assert on_meta.shape == on_cpu.shape and on_meta.device.type == "meta"


@pytest.mark.parametrize("scope", ["all", "generated"])
def test_intervention_hook_follows_the_activation_device(scope):
    hook = _LayerHook(torch.tensor([1, 3]), torch.tensor([0.0, 2.0]), "scale", scope)
    act = torch.randn(2, 4, 6)
    ref = hook(act)
    hook.reset()
    out = hook(act.to("meta"))
    assert out.device.type == "meta" and out.shape == ref.shape
