"""The CETT engine against the slow reference, on every family, padding side and option."""

from __future__ import annotations

import pytest
import torch

from hneuron_lens.cett import REGIONS, CETTConfig, cett, collate, length_buckets
from hneuron_lens.data import JudgedSample
from hneuron_lens.spans import tokenize_samples
from hneuron_lens.testing import FAMILIES

from .reference import reference_cett

SAMPLES = [
    JudgedSample(
        "a", "What is the capital of France?", "The capital is Paris.", 0, answer_text="Paris"
    ),
    JudgedSample(
        "b",
        "Who wrote Hamlet?",
        "William Shakespeare wrote Hamlet in 1600, I believe, and more.",
        1,
        answer_text="William Shakespeare",
    ),
    JudgedSample("c", "Symbol for gold?", "Au", 0, answer_text="Au"),
    JudgedSample(
        "d", "Largest planet?", "Jupiter is the largest planet.", 0, answer_text="Jupiter"
    ),
]


def _assert_matches(out, ref, rtol=1e-5, atol=1e-9):
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    ok = ~torch.isnan(ref)
    torch.testing.assert_close(out.double()[ok], ref[ok], rtol=rtol, atol=atol)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_engine_matches_reference(tiny, family, padding_side):
    model = tiny(family)
    toks, report = tokenize_samples(model.tokenizer, SAMPLES)
    assert report.n_ok == len(SAMPLES)
    assert len({len(t) for t in toks}) > 1  # mixed lengths: real padding
    out = cett(model, collate(toks, model.tokenizer.pad_token_id, padding_side=padding_side))
    for i, t in enumerate(toks):
        ref = reference_cett(model, t, REGIONS)
        for region in REGIONS:
            assert out[region].dtype == torch.float32
            _assert_matches(out[region][i], ref[region])


@pytest.mark.parametrize(
    "kw",
    [
        dict(reduce="max"),
        dict(abs=False),
        dict(weight_norm=False),
        dict(include_bias=False),
        dict(abs=False, reduce="max", include_bias=False),
    ],
)
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_engine_options_match_reference(tiny, family, kw):
    model = tiny(family)
    toks, _ = tokenize_samples(model.tokenizer, SAMPLES)
    cfg = CETTConfig(**kw)
    out = cett(model, collate(toks, 0), cfg)
    for i, t in enumerate(toks):
        ref = reference_cett(
            model,
            t,
            REGIONS,
            abs_=cfg.abs,
            weight_norm=cfg.weight_norm,
            include_bias=cfg.include_bias,
            reduce=cfg.reduce,
        )
        for region in REGIONS:
            # signed means can cancel to ~0, where a relative bound is meaningless: use float32's
            # absolute resolution at the scale of the values (~1e-1) instead
            _assert_matches(out[region][i], ref[region], atol=1e-9 if cfg.abs else 1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_writes_sum_to_mlp_output(tiny, family):
    """sum_j z_j W_out[j] (+ b_out) == hook_out: hook_post and hook_out are the right hooks."""
    model = tiny(family)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    names = [
        f"blocks.{layer}.mlp.{h}"
        for layer in range(model.cfg.n_layers)
        for h in ("hook_post", "hook_out")
    ]
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    for layer, block in enumerate(model.blocks):
        z = cache[f"blocks.{layer}.mlp.hook_post"]
        y = cache[f"blocks.{layer}.mlp.hook_out"]
        recon = z @ block.mlp.W_out
        if getattr(block.mlp, "b_out", None) is not None:
            recon = recon + block.mlp.b_out
        torch.testing.assert_close(recon, y, rtol=1e-4, atol=1e-5)


def test_batched_equals_unbatched_and_pad_ids_do_not_matter(tiny):
    model = tiny("llama")
    toks, _ = tokenize_samples(model.tokenizer, SAMPLES)
    full = cett(model, collate(toks, 0))
    other_pad = cett(model, collate(toks, 123))
    for r in REGIONS:
        torch.testing.assert_close(full[r], other_pad[r], rtol=1e-5, atol=1e-7, equal_nan=True)
    for i, t in enumerate(toks):
        single = cett(model, collate([t], 0))
        for r in REGIONS:
            torch.testing.assert_close(
                full[r][i], single[r][0], rtol=1e-5, atol=1e-7, equal_nan=True
            )


def test_stops_after_last_mlp_and_removes_hooks(tiny):
    model = tiny("gemma3")
    toks, _ = tokenize_samples(model.tokenizer, SAMPLES[:2])
    fired = []
    final = [n for n in model.hook_dict if n.startswith(("ln_final", "unembed"))]
    assert final
    with model.hooks(fwd_hooks=[(n, lambda x, hook: fired.append(hook.name)) for n in final]):
        cett(model, collate(toks, 0))
        assert fired == []
        cett(model, collate(toks, 0), CETTConfig(stop_early=False))
        assert fired
    assert all(len(model.hook_dict[n].fwd_hooks) == 0 for n in model.hook_dict)


def test_empty_region_is_nan_and_regions_subset(tiny):
    model = tiny("llama")
    toks, _ = tokenize_samples(model.tokenizer, SAMPLES[:1])
    from dataclasses import replace

    no_answer = replace(toks[0], answer=None)
    out = cett(model, collate([no_answer], 0), CETTConfig(regions=("answer", "other")))
    assert set(out) == {"answer", "other"}
    assert torch.isnan(out["answer"]).all() and not torch.isnan(out["other"]).any()


def test_varied_d_mlp_is_nan_padded(tiny):
    model = tiny("llama-varied")
    toks, _ = tokenize_samples(model.tokenizer, SAMPLES[:1])
    out = cett(model, collate(toks, 0))["answer"]
    assert out.shape == (1, 2, 80)
    assert torch.isnan(out[0, 0, 48:]).all() and not torch.isnan(out[0, 0, :48]).any()
    assert not torch.isnan(out[0, 1]).any()


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="reduce"):
        CETTConfig(reduce="median")
    with pytest.raises(ValueError, match="regions"):
        CETTConfig(regions=("answer", "bogus"))
    cfg = CETTConfig(reduce="max", regions=("answer",))
    assert CETTConfig.from_dict(cfg.to_dict()) == cfg


def test_length_buckets_sort_by_length(tiny):
    toks, _ = tokenize_samples(tiny("llama").tokenizer, SAMPLES)
    buckets = length_buckets(toks, 2)
    assert sorted(i for b in buckets for i in b) == list(range(len(toks)))
    lengths = [len(toks[i]) for b in buckets for i in b]
    assert lengths == sorted(lengths)
