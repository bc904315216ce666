"""Generation and collection on the real default model (SmolLM2-135M-Instruct, ChatML)."""

from __future__ import annotations

import pytest
import torch

from hneuron_lens.collect import CollectConfig, collect, load_collected
from hneuron_lens.data.records import QAItem
from hneuron_lens.generation import GenerationConfig, build_prompt_ids, generate

# drift: also run by `make test-latest` / `make test-oldest` (real-model decoding under other releases)
pytestmark = [pytest.mark.slow, pytest.mark.drift]

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the play Romeo and Juliet, the tragedy about two young lovers from Verona?",
    "Gold?",
    "Which planet of the solar system is the largest one?",
]
SUFFIX = "Respond with the answer only, without any explanation."


def test_batched_equals_unbatched_greedy(default_model):
    model = default_model
    tok = model.tokenizer
    prompts = [build_prompt_ids(tok, q, suffix=SUFFIX) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == 4
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert all(p[0] == im_start for p in prompts)  # ChatML, no extra BOS in front
    cfg = dict(max_new_tokens=10, do_sample=False, progress=False, warn_length_fraction=1.0)
    batched = generate(model, prompts, GenerationConfig(batch_size=4, **cfg))
    single = generate(model, prompts, GenerationConfig(batch_size=1, **cfg))
    assert [g.output_ids for g in batched] == [g.output_ids for g in single]
    for p, g in zip(prompts, single, strict=True):
        ref = model.generate(
            torch.tensor([p]),
            max_new_tokens=10,
            do_sample=False,
            verbose=False,
            return_type="tokens",
        )[0, len(p) :].tolist()
        assert list(g.output_ids) == ref[: len(g.output_ids)]


def test_chatml_answer_stops_at_im_end(default_model):
    tok = default_model.tokenizer
    prompt = build_prompt_ids(tok, QUESTIONS[0], suffix=SUFFIX)
    (g,) = generate(default_model, [prompt], GenerationConfig(max_new_tokens=32, do_sample=False))
    assert g.finish_reason == "eos"
    assert "Paris" in g.text
    assert "<|im_end|>" not in g.text


def test_collect_small(default_model, tmp_path):
    items = [
        QAItem("france", QUESTIONS[0], ("Paris",)),
        QAItem("gold", "What is the chemical symbol for gold?", ("Au",)),
    ]
    cfg = CollectConfig(k=3, max_new_tokens=24, progress=False)
    res = collect(default_model, items, cfg, tmp_path / "c.jsonl")
    got = load_collected(res.path)
    assert [len(q.responses) for q in got.values()] == [3, 3]
    # Sampled at T=1.0, so assert only what a correct sampler makes near-certain. Measured over
    # 40 samples (seeds 0 and 1, k=20): "Au" in 39/40 answers to the gold question, "Paris" in
    # 19/40 with the top-k-first sampler and 20/40 with the full-vocabulary one (same
    # distribution): P(>=2 of 3 Paris) is ~0.5, a coin flip on the random stream, while
    # P(>=2 of 3 Au) is > 0.99.
    assert sum("Au" in r for r in got["gold"].responses) >= 2
    assert res.stats.frac_hit_max < 0.5
