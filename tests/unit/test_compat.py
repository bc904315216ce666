"""Dependency-drift guards: the KV-cache keyword shim and the checks that fail loudly."""

from __future__ import annotations

import warnings

import pytest
import torch

from hneuron_lens import compat
from hneuron_lens.errors import DependencyError, HNeuronLensError
from hneuron_lens.generation import GenerationConfig, build_prompt_ids, generate
from hneuron_lens.testing import FAMILIES, tiny_hf_model, tiny_tokenizer


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_matches_uncached_on_every_family(tiny, family):
    assert compat.check_kv_cache(tiny(family)) < 1e-4


def _break_the_cache(monkeypatch):
    """Simulate the transformers 5.24 failure on any version: attention never writes the cache."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", lambda self, k, v, **kw: (k, v))


def test_broken_cache_raises_a_clear_error_in_generate(tiny, monkeypatch):
    model = tiny("llama")
    prompt = build_prompt_ids(model.tokenizer, "Who wrote Hamlet?")
    cfg = GenerationConfig(max_new_tokens=4, do_sample=False, progress=False)
    before = generate(model, [prompt], cfg)
    _break_the_cache(monkeypatch)
    with pytest.raises(DependencyError) as err:
        generate(model, [prompt], cfg)
    msg = str(err.value)
    assert "KV cache holds 0 positions" in msg
    assert "transformers" in msg and "transformer-lens" in msg and "supported" in msg
    assert "\n" not in msg  # one line for the CLI
    assert isinstance(err.value, HNeuronLensError)
    monkeypatch.undo()
    assert generate(model, [prompt], cfg) == before  # and all is well again


def test_broken_cache_is_caught_when_a_model_is_booted(monkeypatch):
    from hneuron_lens.models import boot_bridge

    _break_the_cache(monkeypatch)
    with pytest.raises(DependencyError, match="KV cache"):
        boot_bridge(tiny_hf_model("llama"), tiny_tokenizer(), name="tiny")
    # the check can be skipped (e.g. for a model decoded without a cache)
    boot_bridge(tiny_hf_model("llama"), tiny_tokenizer(), name="tiny", check_decoding=False)


def test_wrong_logits_with_a_full_cache_are_caught(tiny, monkeypatch):
    """A cache that is filled but gives other logits (e.g. wrong positions) is caught too."""
    model = tiny("llama")
    real = compat.check_cache_length
    monkeypatch.setattr(compat, "check_cache_length", lambda *a, **k: None)
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    original = AttentionBridge._update_kv_cache

    def noisy(self, k, v, **kw):
        k_all, v_all = original(self, k, v, **kw)
        decoding = k_all.shape[-2] > k.shape[-2]  # earlier positions came from the cache
        return (k_all, v_all * 1.5) if decoding else (k_all, v_all)

    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", noisy)
    with pytest.raises(DependencyError, match="cached and uncached logits disagree"):
        compat.check_kv_cache(model)
    monkeypatch.setattr(compat, "check_cache_length", real)


def test_no_cache_returned_falls_back_to_uncached_decoding(tiny, monkeypatch, caplog):
    model = tiny("llama")
    prompt = build_prompt_ids(model.tokenizer, "Who wrote Hamlet?")
    cfg = GenerationConfig(max_new_tokens=4, do_sample=False, progress=False)
    want = generate(model, [prompt], cfg)
    real_forward = type(model).forward

    def no_cache(self, *args, return_type="logits", **kwargs):
        out = real_forward(self, *args, return_type=return_type, **kwargs)
        return (out[0], None) if return_type == "logits_and_cache" else out

    monkeypatch.setattr(type(model), "forward", no_cache)
    with caplog.at_level("WARNING"):
        got = generate(model, [prompt], cfg)
    assert [g.output_ids for g in got] == [g.output_ids for g in want]
    assert any("no KV cache" in r.message for r in caplog.records)


def test_kv_cache_compat_removes_its_hooks(tiny):
    model = tiny("llama")
    attn = compat._attention_modules(model)
    assert attn
    before = [len(m._forward_pre_hooks) for m in attn]
    with compat.kv_cache_compat(model):
        assert [len(m._forward_pre_hooks) for m in attn] == [b + 1 for b in before]
    assert [len(m._forward_pre_hooks) for m in attn] == before
    with pytest.raises(RuntimeError), compat.kv_cache_compat(model):
        raise RuntimeError("boom")
    assert [len(m._forward_pre_hooks) for m in attn] == before


def test_keyword_shim_forwards_cache_only_when_needed():
    sentinel = object()
    _, kw = compat._forward_cache_keyword(None, (), {"cache": sentinel})
    assert kw["past_key_values"] is sentinel
    assert compat._forward_cache_keyword(None, (), {"past_key_values": sentinel}) is None
    assert compat._forward_cache_keyword(None, (), {}) is None


def test_version_report_names_packages_and_ranges():
    report = compat.version_report()
    for name in ("transformer-lens", "transformers", "torch"):
        assert name in report
    assert "supported >=5.9,<6" in report
    assert compat._release("5.24.0") == (5, 24, 0)
    assert compat._release("2.13.0+cpu") == (2, 13, 0)
    assert compat._release("5.25.0.dev0") == (5, 25, 0)


def test_supported_ranges_match_pyproject():
    from pathlib import Path

    import tomllib

    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    for name, spec in compat.SUPPORTED.items():
        assert f"{name}{spec}" in deps, f"{name}{spec} not in pyproject dependencies"


def test_generate_emits_no_deprecation_noise(tiny):
    model = tiny("llama")
    prompt = build_prompt_ids(model.tokenizer, "Who?")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        generate(model, [prompt], GenerationConfig(max_new_tokens=3, progress=False))
    assert torch.is_grad_enabled()
