"""Models over several devices (issue 15): device maps, offload refusal, device-agnostic hooks.

This machine has one device (the CPU), so no test here runs layers on two real devices. What the
tests do prove:

* the device-map rules (:func:`check_device_map`) and that :func:`load_model` applies them both
  to the map asked for and to the placement ``transformers`` realised;
* ``load_model(..., device_map="auto")`` goes through the accelerate loading path and gives the
  same CETT numbers as a plain single-device load;
* a model whose layers sit in two places (half in memory, half offloaded to disk through
  accelerate's dispatch hooks, ``allow_offload=True``) gives the same weights' norms, identity
  hash, CETT values, intervened logits, generations and (through the CLI's ``--device-map``)
  store as a single-device load, to the bit;
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


def _assert_same_numbers(one, other, alphas=(0.0,)):
    """CETT values and intervened logits of ``other`` equal ``one``'s to the bit."""
    cfg = CETTConfig(regions=("answer", "other"))
    a, b = cett(one, _batch(one), cfg), cett(other, _batch(other), cfg)
    for region in cfg.regions:
        torch.testing.assert_close(a[region], b[region], rtol=0, atol=0, equal_nan=True)
    neurons = NeuronSet.random(one, 6, seed=0)
    ids = _batch(one).input_ids
    for alpha in alphas:
        with torch.no_grad(), HookedIntervention(one, neurons, alpha=alpha):
            la = one(ids, return_type="logits")
        with torch.no_grad(), HookedIntervention(other, neurons, alpha=alpha):
            lb = other(ids, return_type="logits")
        torch.testing.assert_close(la, lb, rtol=0, atol=0)


def test_device_map_load_matches_single_device(tiny_dir):
    one = load_model(str(tiny_dir), device="cpu")
    mapped = load_model(str(tiny_dir), device_map="auto")  # accelerate path; all CPU here
    assert str(mapped.cfg.device) == "cpu"
    _assert_same_numbers(one, mapped)


def test_offloaded_layers_give_the_single_device_numbers(tiny_dir, tmp_path):
    """Layers in two places (the first half in memory, the second offloaded to disk through
    accelerate's dispatch hooks, which move each layer's weights to the execution device for its
    forward, as a multi-GPU map moves activations): CETT, an intervention, greedy generation and
    the model's identity hash equal a plain single-device load's. Offloaded weights are ``meta``
    outside a forward; reading ``W_out`` there once failed (``models.readable_weights``)."""
    from hneuron_lens.generation import GenerationConfig, generate
    from hneuron_lens.models import model_identity, neuron_sites

    one = load_model(str(tiny_dir), device="cpu")
    n = one.cfg.n_layers
    device_map = _offload_map(n)
    with pytest.raises(ModelError, match="offloads"):  # asked for, or refused
        load_model(str(tiny_dir), device_map=device_map)
    split = load_model(
        str(tiny_dir), device_map=device_map, allow_offload=True, offload_folder=tmp_path / "off"
    )
    hf_map = split.original_model.hf_device_map
    assert "disk" in hf_map.values() and "cpu" in hf_map.values()
    last_mlp = split.original_model.model.layers[n - 1].mlp
    assert last_mlp.down_proj.weight.device.type == "meta"  # really offloaded
    for a, b in zip(neuron_sites(one), neuron_sites(split), strict=True):
        torch.testing.assert_close(a.w_out_norm, b.w_out_norm, rtol=0, atol=0)
    assert last_mlp.down_proj.weight.device.type == "meta"  # put back after the read
    assert model_identity(one) == model_identity(split)
    _assert_same_numbers(one, split, alphas=(0.0, 3.0))
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    gcfg = GenerationConfig(max_new_tokens=6, do_sample=False, batch_size=2)
    ga, gb = generate(one, prompts, gcfg), generate(split, prompts, gcfg)
    assert [g.output_ids for g in ga] == [g.output_ids for g in gb]


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


def _offload_map(n_layers: int) -> dict[str, str]:
    """Embedding, head and the first half of the layers in memory, the rest on disk."""
    device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map["model.rotary_emb"] = "cpu"
    for i in range(n_layers):
        device_map[f"model.layers.{i}"] = "cpu" if i < n_layers // 2 else "disk"
    return device_map


def test_cli_device_map_file_extracts_the_single_device_store(tiny_dir, tmp_path, capsys):
    """`extract --device-map FILE --allow-offload`: the store equals `--device cpu`'s value for
    value; without --allow-offload the same map is a one-line usage error before any weight."""
    import json

    from hneuron_lens.cli import main
    from hneuron_lens.store import ActivationStore
    from tests.unit.test_extract import make_samples

    data = tmp_path / "judged.jsonl"
    keys = ("qid", "question", "response", "label", "answer_text", "split")
    data.write_text("".join(json.dumps({k: getattr(s, k) for k in keys}) + "\n"
                            for s in make_samples(6)))  # fmt: skip
    n_layers = load_model(str(tiny_dir), device="cpu").cfg.n_layers
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(_offload_map(n_layers)))
    base = ["extract", "--data", str(data), "--model", str(tiny_dir), "--batch-size", "3"]
    assert main([*base, "--store", str(tmp_path / "one")]) == 0
    split = [*base, "--store", str(tmp_path / "split"), "--device-map", str(map_file)]
    capsys.readouterr()
    assert main(split) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offloads" in err[0] and "allow_offload" in err[0]
    assert not (tmp_path / "split").exists()
    assert main([*split, "--allow-offload"]) == 0
    a, b = ActivationStore(tmp_path / "split", verify=True), ActivationStore(tmp_path / "one")
    assert a.ids == b.ids
    for region in b.regions:
        assert a.features(region)[0].tobytes() == b.features(region)[0].tobytes()


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("nowhere.json", "no such file"),
        ("{bad", "unreadable JSON"),
        ('["model.layers.0"]', "not a JSON object"),
        ('{"model.layers.0": [0]}', "not a JSON object"),
    ],
)
def test_cli_bad_device_map_is_one_line_exit_2(tiny_dir, tmp_path, capsys, value, expect):
    from hneuron_lens.cli import main

    arg = value
    if value != "nowhere.json":
        (tmp_path / "map.json").write_text(value)
        arg = str(tmp_path / "map.json")
    argv = ["intervene", "--task", "qa", "--neurons", "x.json", "--out", str(tmp_path / "o")]
    assert main([*argv, "--model", str(tiny_dir), "--device-map", arg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0]
    assert "--device-map" in err[0]


def test_run_config_carries_dtype_and_device_map(tmp_path, monkeypatch):
    """`hneuron-lens run --dtype/--device-map/--allow-offload` reach load_model (run ignored
    --dtype before)."""
    import hneuron_lens as hl
    from hneuron_lens.cli import main

    seen = {}

    def fake_load(spec, **kwargs):
        seen.update(kwargs, spec=spec)
        raise ModelError("stop here")

    monkeypatch.setattr(hl, "load_model", fake_load)
    argv = ["run", "--quick", "--out-dir", str(tmp_path / "r"), "--dtype", "bfloat16"]
    assert main([*argv, "--device-map", "auto", "--allow-offload"]) == 2
    assert seen == {"spec": "default", "dtype": "bfloat16", "device": None,
                    "device_map": "auto", "allow_offload": True}  # fmt: skip
    assert main(argv) == 2
    assert seen["device"] == "cpu" and seen["device_map"] is None
