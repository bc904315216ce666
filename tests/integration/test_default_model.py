"""The real embedded default model (SmolLM2-135M-Instruct): loading, sites, exact CETT."""

from __future__ import annotations

import time

import pytest
import torch

import hneuron_lens as hl
from hneuron_lens.cett import REGIONS

from ..equivalence.reference import reference_cett

pytestmark = pytest.mark.slow

SAMPLES = [
    hl.JudgedSample(
        "a",
        "What is the capital of France?",
        "The capital of France is Paris.",
        0,
        answer_text="Paris",
    ),
    hl.JudgedSample(
        "b",
        "Who wrote Hamlet?",
        "Hamlet was written by Christopher Marlowe in 1599.",
        1,
        answer_text="Christopher Marlowe",
    ),
    hl.JudgedSample("c", "What is the chemical symbol for gold?", "Au", 0, answer_text="Au"),
]


def test_default_model_shape_and_sites(default_model):
    sites = hl.neuron_sites(default_model)
    assert len(sites) == 30 and {s.d_mlp for s in sites} == {1536}
    assert default_model.cfg.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not default_model.training


def test_cached_reload_is_fast(default_model):
    t = time.perf_counter()
    again = hl.load_model("default")
    seconds = time.perf_counter() - t
    assert seconds < 20, f"cached reload took {seconds:.1f}s"
    w0 = default_model.blocks[3].mlp.W_out
    torch.testing.assert_close(again.blocks[3].mlp.W_out, w0)


def test_chatml_spans_have_no_extra_bos(default_model):
    tok = default_model.tokenizer
    toks, report = hl.tokenize_samples(tok, SAMPLES)
    assert report.n_ok == 3
    first = toks[0]
    assert tok.decode(first.input_ids[:1]) == "<|im_start|>"
    assert tok.decode(first.input_ids[first.answer[0] : first.answer[1]]).strip() == "Paris"
    assert tok.decode(first.input_ids[first.prompt_end : first.response_end]) == SAMPLES[0].response


def test_engine_matches_reference_on_real_model(default_model):
    toks, _ = hl.tokenize_samples(default_model.tokenizer, SAMPLES)
    out = hl.cett(default_model, hl.collate(toks, default_model.tokenizer.pad_token_id))
    for i, t in enumerate(toks):
        ref = reference_cett(default_model, t, REGIONS)
        for region in REGIONS:
            # float32 engine (padded batch) vs float64 reference: ~1e-7 absolute rounding on
            # values up to ~0.5 (an absolute 1e-9 failed under transformers 5.24 at 5e-7)
            scale = float(ref[region].abs().max())
            torch.testing.assert_close(
                out[region][i].double(), ref[region], rtol=1e-5, atol=2e-6 * scale
            )


def test_neuron_writes_sum_to_mlp_output_real(default_model):
    toks, _ = hl.tokenize_samples(default_model.tokenizer, SAMPLES[:1])
    ids = torch.tensor([toks[0].input_ids])
    names = {"blocks.7.mlp.hook_post", "blocks.7.mlp.hook_out", "blocks.7.hook_mlp_out"}
    with torch.no_grad():
        _, cache = default_model.run_with_cache(ids, names_filter=lambda n: n in names)
    recon = cache["blocks.7.mlp.hook_post"] @ default_model.blocks[7].mlp.W_out
    torch.testing.assert_close(recon, cache["blocks.7.mlp.hook_out"], rtol=1e-4, atol=1e-4)
