"""HookedIntervention and NeuronSet on tiny random models of every dense family."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hneuron_lens.features import NeuronLayout
from hneuron_lens.intervene import HookedIntervention, NeuronSet
from hneuron_lens.testing import tiny_model

FAMILIES = ["llama", "gpt2", "neox", "gemma2", "qwen3", "llama-varied"]
PAIRS = [(0, 1), (0, 5), (1, 3), (1, 10), (1, 47)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


_MODELS: dict[str, object] = {}


def model_of(family: str):
    if family not in _MODELS:
        _MODELS[family] = tiny_model(family)
    return _MODELS[family]


def tokens(batch: int = 2, pos: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 300, (batch, pos), generator=g)


def n_hooks(model) -> int:
    points = {id(hp): hp for hp in model.hook_dict.values()}  # hook_dict holds aliases
    return sum(len(hp.fwd_hooks) for hp in points.values())


def logits(model, toks):
    with torch.no_grad():
        return model(toks)


def scale_w_out(family: str, hf, pairs, alpha: float) -> None:
    """Multiply W_out[j, :] by alpha on the underlying HF module (reference for the hook)."""
    with torch.no_grad():
        for layer, j in pairs:
            if family == "gpt2":  # Conv1D weight is [d_mlp, d_model]
                hf.transformer.h[layer].mlp.c_proj.weight[j, :] *= alpha
            elif family == "neox":  # Linear weight is [d_model, d_mlp]
                hf.gpt_neox.layers[layer].mlp.dense_4h_to_h.weight[:, j] *= alpha
            else:
                hf.model.layers[layer].mlp.down_proj.weight[:, j] *= alpha


# ---------------------------------------------------------------------------------- NeuronSet


def test_neuron_set_constructors(tmp_path) -> None:
    s = NeuronSet.from_pairs(PAIRS, name="h")
    assert len(s) == 5 and list(s) == PAIRS
    assert s.layer_counts() == {0: 2, 1: 3}

    class Table:  # a probe's h_neurons table
        def to_pandas(self):
            return pd.DataFrame({"layer": [0, 1], "neuron": [2, 3], "weight": [0.5, 0.1]})

    t = NeuronSet.coerce(Table(), name="probe")
    assert list(t) == [(0, 2), (1, 3)] and t.meta["weights"] == [0.5, 0.1]
    assert NeuronSet.coerce(iter([(1, 2)])).neurons.tolist() == [2]
    for suffix in ("json", "csv"):
        path = s.save(tmp_path / f"set.{suffix}")
        back = NeuronSet.load(path)
        assert list(back) == PAIRS
        assert list(NeuronSet.coerce(str(path))) == PAIRS
    assert NeuronSet.from_dict(json.loads(json.dumps(s.to_dict()))).fingerprint() == s.fingerprint()
    assert "h" in str(s)
    with pytest.raises(ValueError, match="duplicate"):
        NeuronSet.from_pairs([(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="negative"):
        NeuronSet.from_pairs([(0, -1)])


def test_neuron_set_validation_names_bad_pairs() -> None:
    layout = NeuronLayout((48, 80))
    NeuronSet.from_pairs([(0, 47), (1, 79)]).validate(layout)
    with pytest.raises(IndexError, match=r"\(0, 48\).*d_mlp=48"):
        NeuronSet.from_pairs([(0, 48), (1, 79)]).validate(layout)
    with pytest.raises(IndexError, match=r"\(2, 0\).*n_layers=2"):
        NeuronSet.from_pairs([(2, 0)]).validate(layout)
    with pytest.raises(IndexError, match=r"\(0, 48\)"):
        HookedIntervention(model_of("llama"), [(0, 48)], alpha=0.0)


def test_random_sets() -> None:
    layout = NeuronLayout((48, 80, 16))
    ref = NeuronSet.from_pairs([(0, 1), (0, 2), (2, 5)], name="h")
    r = NeuronSet.random(layout, k=10, seed=3)
    assert len(r) == 10 and r.name == "random-3"
    r.validate(layout)
    assert list(NeuronSet.random(layout, k=10, seed=3)) == list(r)  # seeded
    assert list(NeuronSet.random(layout, k=10, seed=4)) != list(r)
    m = NeuronSet.random(layout, k=0, seed=1, layer_matched_to=ref, exclude=ref)
    assert m.layer_counts() == ref.layer_counts()
    assert not set(m) & set(ref)
    full = NeuronSet.random(
        layout, k=16, seed=0, layer_matched_to=NeuronSet.from_pairs([(2, j) for j in range(16)])
    )
    assert sorted(full.neurons.tolist()) == list(range(16))
    ex = NeuronSet.random(layout, k=144 - 3, seed=0, exclude=ref)
    assert not set(ex) & set(ref)
    with pytest.raises(ValueError, match="available"):
        NeuronSet.random(layout, k=145, seed=0)
    # from a model
    assert NeuronSet.random(model_of("llama-varied"), k=100, seed=0).layer_counts()[1] > 0


# ------------------------------------------------------------------------ HookedIntervention


@pytest.mark.parametrize("family", FAMILIES)
def test_scaling_equals_editing_w_out(family: str) -> None:
    model = model_of(family)
    toks = tokens()
    base = logits(model, toks)
    before = n_hooks(model)
    for alpha in (0.0, 0.5, 2.5):
        edited = tiny_model(family)  # same seed -> same weights
        scale_w_out(family, edited.original_model, PAIRS, alpha)
        with HookedIntervention(model, PAIRS, alpha=alpha) as iv:
            assert n_hooks(model) == before + 2
            got = logits(model, toks)
        assert iv.calls == 2
        torch.testing.assert_close(got, logits(edited, toks), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got, base)
    assert n_hooks(model) == before
    assert torch.equal(logits(model, toks), base)  # unchanged afterwards


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_alpha_one_is_bit_identical(family: str) -> None:
    model = model_of(family)
    toks = tokens()
    base = logits(model, toks)
    with HookedIntervention(model, PAIRS, alpha=1.0) as iv:
        assert iv.hook_names == []
        assert torch.equal(logits(model, toks), base)
    # per-neuron factors where one layer is all-ones: only the other layer is hooked
    with HookedIntervention(model, PAIRS, alphas=[1, 1, 0.5, 1, 1]) as iv:
        assert iv.hook_names == ["blocks.1.mlp.hook_post"]
    with HookedIntervention(model, PAIRS, alphas=[1, 1, 1, 1, 1]):
        assert torch.equal(logits(model, toks), base)


def _spy(model, name: str, store: list):
    def fn(act, hook):
        store.append(act.detach().clone())
        return act

    return model.hook_dict[name].add_hook(fn)


def test_alpha_zero_zeroes_neurons_and_set_mode() -> None:
    model = model_of("llama")
    toks = tokens()
    seen: list[torch.Tensor] = []
    with HookedIntervention(model, PAIRS, alpha=0.0):
        h = _spy(model, "blocks.1.mlp.hook_post", seen)  # added after: sees the new value
        logits(model, toks)
        model.hook_dict["blocks.1.mlp.hook_post"].fwd_hooks[-1].hook.remove()
        model.hook_dict["blocks.1.mlp.hook_post"].fwd_hooks.pop()
    del h
    z = seen[0]
    assert torch.all(z[..., [3, 10, 47]] == 0) and torch.all(z[..., [0, 1, 2]] != 0)
    seen.clear()
    with HookedIntervention(model, PAIRS, mode="set", value=[0, 0, 7.0, -1.0, 2.0]):
        _spy(model, "blocks.1.mlp.hook_post", seen)
        logits(model, toks)
    model.hook_dict["blocks.1.mlp.hook_post"].fwd_hooks.clear()
    assert torch.all(seen[0][..., 3] == 7.0) and torch.all(seen[0][..., 10] == -1.0)
    with pytest.raises(ValueError, match="value"):
        HookedIntervention(model, PAIRS, mode="set")
    with pytest.raises(ValueError, match="one factor per neuron"):
        HookedIntervention(model, PAIRS, alphas=[1.0, 2.0])
    with pytest.raises(ValueError, match="scope"):
        HookedIntervention(model, PAIRS, scope="prompt")  # type: ignore[arg-type]


def test_outer_cache_is_not_mutated() -> None:
    """An earlier hook holding the activation must not see our change (we work out of place)."""
    model = model_of("llama")
    seen: list[torch.Tensor] = []
    name = "blocks.0.mlp.hook_post"

    def keep(act, hook):
        seen.append(act)  # no clone: shares storage
        return act

    with model.hooks(fwd_hooks=[(name, keep)]):
        with HookedIntervention(model, PAIRS, alpha=0.0):
            logits(model, tokens())
    assert torch.all(seen[0][..., 1] != 0)


def test_exception_exit_removes_hooks() -> None:
    model = model_of("gpt2")
    toks = tokens()
    base = logits(model, toks)
    before = n_hooks(model)
    iv = HookedIntervention(model, PAIRS, alpha=3.0)
    with pytest.raises(RuntimeError, match="boom"):
        with iv:
            logits(model, toks)
            raise RuntimeError("boom")
    assert not iv.active and n_hooks(model) == before
    assert torch.equal(logits(model, toks), base)
    with iv:  # reusable after exit
        with pytest.raises(RuntimeError, match="already active"):
            iv.__enter__()
    assert n_hooks(model) == before


def test_nesting_leaves_outer_hooks_in_place() -> None:
    model = model_of("llama")
    toks = tokens()
    other = [(0, 2), (1, 4)]
    both_ref = tiny_model("llama")
    scale_w_out("llama", both_ref.original_model, PAIRS, 0.0)
    scale_w_out("llama", both_ref.original_model, other, 2.0)
    outer_ref = tiny_model("llama")
    scale_w_out("llama", outer_ref.original_model, PAIRS, 0.0)
    before = n_hooks(model)
    with HookedIntervention(model, PAIRS, alpha=0.0):
        with HookedIntervention(model, other, alpha=2.0):
            assert n_hooks(model) == before + 4
            torch.testing.assert_close(
                logits(model, toks), logits(both_ref, toks), rtol=1e-5, atol=1e-5
            )
        assert n_hooks(model) == before + 2
        torch.testing.assert_close(
            logits(model, toks), logits(outer_ref, toks), rtol=1e-5, atol=1e-5
        )
    assert n_hooks(model) == before

    # inside a user's model.hooks(...): leaving ours keeps the user's hook
    calls: list[int] = []

    def user(act, hook):
        calls.append(1)
        return act

    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", user)]):
        with HookedIntervention(model, PAIRS, alpha=0.0):
            logits(model, toks)
        assert len(model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks) == 1
        logits(model, toks)
        assert len(calls) == 2
    assert n_hooks(model) == before

    # a user's block (or run_with_hooks / run_with_cache) inside ours leaves ours in place
    with HookedIntervention(model, PAIRS, alpha=0.0):
        with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", user)]):
            pass
        model.run_with_hooks(toks, fwd_hooks=[("blocks.1.mlp.hook_post", user)])
        model.run_with_cache(toks)
        assert n_hooks(model) == before + 2
        torch.testing.assert_close(
            logits(model, toks), logits(outer_ref, toks), rtol=1e-5, atol=1e-5
        )
    assert n_hooks(model) == before


def test_batched_equals_unbatched() -> None:
    model = model_of("qwen2")
    toks = tokens(batch=3)
    with HookedIntervention(model, PAIRS, alpha=2.0):
        batched = logits(model, toks)
        single = torch.cat([logits(model, toks[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def _gen(model, toks, kv: bool) -> torch.Tensor:
    return model.generate(
        toks,
        max_new_tokens=6,
        do_sample=False,
        use_past_kv_cache=kv,
        verbose=False,
        stop_at_eos=False,
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("scope", ["all", "generated"])
def test_generation_kv_cache_agrees(family: str, scope: str) -> None:
    model = model_of(family)
    toks = tokens(batch=1, pos=5)
    outs = []
    for kv in (True, False):
        with HookedIntervention(model, PAIRS, alpha=0.0, scope=scope):  # type: ignore[arg-type]
            outs.append(_gen(model, toks, kv))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("kv", [True, False])
def test_generated_scope_touches_only_generated_positions(kv: bool) -> None:
    model = model_of("llama")
    toks = tokens(batch=2, pos=5)
    name = "blocks.1.mlp.hook_post"
    seen: list[torch.Tensor] = []
    with HookedIntervention(model, PAIRS, alpha=0.0, scope="generated"):
        _spy(model, name, seen)
        _gen(model, toks, kv)
        _gen(model, toks, kv)  # a second prompt: detected as a new prompt
    model.hook_dict[name].fwd_hooks.clear()
    cols = [3, 10, 47]
    assert len(seen) == 12
    for run in (seen[:6], seen[6:]):
        assert run[0].shape[1] == 5 and torch.all(run[0][..., cols] != 0)  # prompt untouched
        for step, z in enumerate(run[1:], start=1):
            if kv:
                assert z.shape[1] == 1 and torch.all(z[..., cols] == 0)
            else:
                assert z.shape[1] == 5 + step
                assert torch.all(z[:, :5][..., cols] != 0) and torch.all(z[:, 5:][..., cols] == 0)
    # a plain forward on the prompt alone is untouched by scope="generated"
    with HookedIntervention(model, PAIRS, alpha=0.0, scope="generated") as iv:
        got = logits(model, toks)
        iv.reset()
    assert torch.equal(got, logits(model, toks))


def test_non_integer_indices_and_unsafe_names_are_refused(tmp_path) -> None:
    from hneuron_lens.errors import DataError, UsageError

    with pytest.raises(DataError, match=r"whole numbers, got \[0.7\]"):
        HookedIntervention(model_of("llama"), [(0.7, 3)], alpha=0.0)  # was silently layer 0
    with pytest.raises(DataError, match="whole numbers"):
        NeuronSet.from_dict({"layers": [0], "neurons": [2.5]})
    with pytest.raises(DataError, match="integers"):
        NeuronSet.from_pairs([("0", 1)])
    assert NeuronSet.from_pairs([(1.0, 2.0)]).layers.dtype == np.int64  # integral floats are fine
    for name in ("..", ".", "", "a/b", "..\\x", "x\x00"):
        with pytest.raises(UsageError, match="cannot be used as a directory name"):
            NeuronSet.from_pairs([(0, 1)], name=name)
    from hneuron_lens.intervene import alpha_sweep

    with pytest.raises(UsageError, match="'..'"):  # used to write one level above out_dir
        alpha_sweep(
            model_of("llama"), {"layers": [0], "neurons": [1], "name": ".."}, None,
            out_dir=tmp_path / "sweep",
        )  # fmt: skip
    assert not (tmp_path / "sweep").exists() and sorted(tmp_path.iterdir()) == []
    csv = tmp_path / "set.csv"
    csv.write_text("layer,neuron\n0,1\n0.7,3\n")
    with pytest.raises(DataError, match="whole-number") as err:
        NeuronSet.load(csv)
    assert err.value.file == str(csv) and err.value.line == 3
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    with pytest.raises(DataError, match="cannot read") as err:
        NeuronSet.load(bad)
    assert err.value.file == str(bad)


def test_sweep_paths_stay_inside_out_dir(tmp_path) -> None:
    from hneuron_lens.errors import OutputError
    from hneuron_lens.io import safe_child

    assert (
        safe_child(tmp_path, "h_neurons", "alpha=0.jsonl")
        == tmp_path / "h_neurons" / "alpha=0.jsonl"
    )
    for name in ("..", "../x", "/etc", "~root"):
        with pytest.raises(OutputError):
            safe_child(tmp_path, name)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(OutputError, match="resolves outside"):
        safe_child(tmp_path, "link", "x")
