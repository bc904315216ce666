"""Tests for hneuron_lens.generation: prompts, batched decoding, hooks, seeding, stop handling."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from hneuron_lens.compat import kv_cache_compat
from hneuron_lens.generation import (
    Generation,
    GenerationConfig,
    GenerationStats,
    build_prompt_ids,
    filter_logits,
    generate,
    stop_token_ids,
)
from hneuron_lens.hooks import hooked
from hneuron_lens.testing import tiny_tokenizer

QUESTIONS = [
    "Who wrote Hamlet?",
    "What is the capital of France? The year was 1969",
    "Au",
    "Which planet is largest? Answer: Jupiter. The year was 1969, 42 and 3.14.",
]


def greedy(**kw) -> GenerationConfig:
    return GenerationConfig(do_sample=False, progress=False, **kw)


def sampled(**kw) -> GenerationConfig:
    return GenerationConfig(do_sample=True, progress=False, **kw)


def prompts_for(model, questions=QUESTIONS) -> list[list[int]]:
    return [build_prompt_ids(model.tokenizer, q) for q in questions]


# ------------------------------------------------------------------------------ prompts


def test_chat_prompt_matches_template_without_extra_bos():
    tok = tiny_tokenizer()
    tok.add_bos_token = True  # what a bridge may set; the template text must not get a BOS
    ids = build_prompt_ids(tok, "Who wrote Hamlet?", suffix="Answer only.")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Who wrote Hamlet? Answer only."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids).startswith("<|im_start|>user\n")
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_chat_prompt_system_and_multi_turn():
    tok = tiny_tokenizer()
    messages = [
        {"role": "user", "content": "Who wrote Hamlet?"},
        {"role": "assistant", "content": "Shakespeare."},
        {"role": "user", "content": "Are you sure?"},
    ]
    text = tok.decode(build_prompt_ids(tok, messages, suffix="Answer only.", system="Be brief."))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "Who wrote Hamlet?<|im_end|>" in text  # suffix goes on the last user turn only
    assert "Are you sure? Answer only.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_base_prompt_format():
    tok = tiny_tokenizer()
    tok.chat_template = None
    ids = build_prompt_ids(tok, "Who wrote Hamlet?", suffix="Answer only.")
    assert tok.decode(ids) == "Who wrote Hamlet? Answer only.\nAnswer:"
    turns = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    assert tok.decode(build_prompt_ids(tok, turns)) == "Q1\nAnswer: A1\nQ2\nAnswer:"
    # chat=False forces the base format even when a template exists
    assert tok.decode(build_prompt_ids(tiny_tokenizer(), "Q", chat=False)) == "Q\nAnswer:"


def test_prompt_errors():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="empty"):
        build_prompt_ids(tok, [])
    with pytest.raises(ValueError, match="malformed"):
        build_prompt_ids(tok, [{"text": "hi"}])
    with pytest.raises(ValueError, match="system given twice"):
        build_prompt_ids(
            tok, [{"role": "system", "content": "x"}, {"role": "user", "content": "q"}], system="y"
        )
    no_template = tiny_tokenizer()
    no_template.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        build_prompt_ids(no_template, "Q", chat=True)


# ------------------------------------------------------------------------------ config


def test_config_round_trip_and_validation():
    cfg = GenerationConfig(max_new_tokens=7, top_k=None, num_samples=3)
    assert GenerationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        GenerationConfig.from_dict({"max_tokens": 3})
    for bad in (
        dict(max_new_tokens=0),
        dict(temperature=0.0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(num_samples=0),
        dict(batch_size=0),
        dict(warn_length_fraction=2.0),
    ):
        with pytest.raises(ValueError):
            GenerationConfig(**bad)
    GenerationConfig(do_sample=False, temperature=0.0)  # temperature is unused when greedy


def test_stop_token_ids(tiny):
    tok = tiny("llama").tokenizer
    ids = stop_token_ids(tiny("llama"))
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids
    assert tok.eos_token_id in ids


# ------------------------------------------------------------------------------ filtering


@pytest.mark.parametrize(
    "top_k,top_p,temperature", [(50, 0.9, 1.0), (5, 1.0, 0.7), (None, 0.5, 1.3), (0, 0.95, 2.0)]
)
def test_filter_logits_matches_transformers(top_k, top_p, temperature):
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(1)
    logits = torch.randn(6, 300) * 3
    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    ours = filter_logits(logits, temperature, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    torch.testing.assert_close(
        ours[~torch.isinf(ours)], ref[~torch.isinf(ref)], rtol=1e-6, atol=1e-6
    )
    assert (~torch.isinf(ours)).sum(-1).min() >= 1


# ------------------------------------------------------------------------------ tiny models


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_batched_equals_unbatched_greedy(tiny, family):
    model = tiny(family)
    prompts = prompts_for(model)
    assert len({len(p) for p in prompts}) == len(prompts)  # really different lengths
    batched = generate(model, prompts, greedy(max_new_tokens=12, batch_size=4))
    single = generate(model, prompts, greedy(max_new_tokens=12, batch_size=1))
    no_cache = generate(model, prompts, greedy(max_new_tokens=12, batch_size=4, use_cache=False))
    for a, b, c in zip(batched, single, no_cache, strict=True):
        assert a.output_ids == b.output_ids == c.output_ids
        assert a.finish_reason == b.finish_reason == c.finish_reason
    # and the bridge's own generate agrees on each unpadded prompt, with and without its KV
    # cache (its cached path needs the keyword shim under transformers >= 5.24)
    for p, g in zip(prompts, single, strict=True):
        for use_kv in (True, False):
            with kv_cache_compat(model):
                ref = model.generate(
                    torch.tensor([p]),
                    max_new_tokens=12,
                    do_sample=False,
                    verbose=False,
                    return_type="tokens",
                    use_past_kv_cache=use_kv,
                )[0, len(p) :].tolist()
            assert list(g.output_ids) == ref[: len(g.output_ids)]


def test_output_order_and_fields(tiny):
    model = tiny("llama")
    prompts = prompts_for(model)[:3]
    gens = generate(model, prompts, sampled(max_new_tokens=5, num_samples=2, batch_size=4))
    assert [(g.prompt_index, g.sample_index) for g in gens] == [
        (p, s) for p in range(3) for s in range(2)
    ]
    for g in gens:
        assert isinstance(g, Generation)
        assert g.prompt_ids == tuple(prompts[g.prompt_index])
        assert 0 < len(g.output_ids) <= 5 or g.finish_reason == "eos"
        assert g.hit_max_new_tokens == (g.finish_reason == "length")
        assert g.text == model.tokenizer.decode(list(g.output_ids), skip_special_tokens=True)
        assert g.to_dict()["hit_max_new_tokens"] == g.hit_max_new_tokens


def test_seeded_sampling_reproducible_and_batch_invariant(tiny):
    model = tiny("llama")
    prompts = prompts_for(model)[:3]
    cfg = sampled(max_new_tokens=6, num_samples=2, batch_size=4, seed=7)
    a = generate(model, prompts, cfg)
    b = generate(model, prompts, cfg)
    c = generate(model, prompts, sampled(max_new_tokens=6, num_samples=2, batch_size=1, seed=7))
    assert [g.output_ids for g in a] == [g.output_ids for g in b] == [g.output_ids for g in c]
    d = generate(model, prompts, sampled(max_new_tokens=6, num_samples=2, batch_size=4, seed=8))
    assert [g.output_ids for g in a] != [g.output_ids for g in d]
    # the samples of one prompt differ from each other
    assert a[0].output_ids != a[1].output_ids
    # prompt_seeds make a row's samples independent of the other prompts in the call
    seeds = [11, 22, 33]
    full = generate(model, prompts, cfg, prompt_seeds=seeds)
    part = generate(model, prompts[2:], cfg, prompt_seeds=seeds[2:])
    assert [g.output_ids for g in full[4:]] == [g.output_ids for g in part]


def test_sampling_leaves_global_rng_alone(tiny):
    model = tiny("llama")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(model, prompts_for(model)[:2], sampled(max_new_tokens=4))
    assert torch.equal(torch.rand(3), expected)


def test_hooks_fire_on_prompt_then_once_per_step(tiny):
    model = tiny("llama")
    prompts = prompts_for(model)[:2]
    shapes: list[tuple[int, ...]] = []

    def record(z, hook):
        shapes.append(tuple(z.shape))

    cfg = greedy(max_new_tokens=6, batch_size=2, warn_length_fraction=1.0)
    with hooked(model, [("blocks.0.mlp.hook_post", record)]):
        gens = generate(model, prompts, cfg)
    width = max(len(p) for p in prompts)
    assert shapes[0] == (2, width, 48)
    assert all(s[1] == 1 for s in shapes[1:])
    longest = max(len(g.output_ids) + (g.finish_reason == "eos") for g in gens)
    assert len(shapes) == longest  # the last sampled token needs no forward pass
    assert model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks == []


def test_intervention_hook_changes_generation(tiny):
    model = tiny("llama")
    prompts = prompts_for(model)
    cfg = greedy(max_new_tokens=10, batch_size=4, warn_length_fraction=1.0)
    before = generate(model, prompts, cfg)

    def scale(z, hook):
        return z * 50.0

    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(model.cfg.n_layers)]
    with hooked(model, [(n, scale) for n in names]):
        during = generate(model, prompts, cfg)
    after = generate(model, prompts, cfg)
    assert [g.output_ids for g in before] != [g.output_ids for g in during]
    assert [g.output_ids for g in before] == [g.output_ids for g in after]


# ------------------------------------------------------------------------------ scripted model


class _ScriptCache:
    """Stands in for a HF cache: remembers each row's prompt key and its step count."""

    def __init__(self, keys, steps, selectable=True):
        self.keys, self.steps = list(keys), list(steps)
        if selectable:
            self.batch_select_indices = self._select

    def _select(self, idx):
        idx = idx.tolist()
        self.keys = [self.keys[i] for i in idx]
        self.steps = [self.steps[i] for i in idx]


class ScriptedModel:
    """A fake bridge whose row i emits ``script[first prompt token]`` token by token.

    It checks that the generation loop feeds back the token it emitted (or a pad token for a
    finished row) and that the attention mask grows by one column per step.
    """

    def __init__(self, scripts, selectable=True):
        self.tokenizer = tiny_tokenizer()
        self.cfg = SimpleNamespace(device="cpu")
        self.scripts = scripts
        self.selectable = selectable
        self.vocab = len(self.tokenizer)
        self.calls: list[int] = []

    def _logits(self, keys, steps):
        out = torch.full((len(keys), 1, self.vocab), -10.0)
        for i, (k, s) in enumerate(zip(keys, steps, strict=True)):
            script = self.scripts[k]
            out[i, 0, script[min(s, len(script) - 1)]] = 10.0
        return out

    def __call__(self, ids, attention_mask, return_type, use_cache=False, past_key_values=None):
        self.calls.append(ids.shape[0])
        if past_key_values is None:
            keys, steps = [], []
            for row, m in zip(ids.tolist(), attention_mask.tolist(), strict=True):
                real = [t for t, keep in zip(row, m, strict=True) if keep]
                keys.append(real[0])
                steps.append(len(real) - self._plen[real[0]])
            logits = self._logits(keys, steps)
            if return_type == "logits_and_cache":
                return logits, _ScriptCache(keys, steps, self.selectable)
            return logits
        cache = past_key_values
        assert attention_mask.shape[0] == ids.shape[0] == len(cache.keys)
        for i, t in enumerate(ids[:, 0].tolist()):
            script = self.scripts[cache.keys[i]]
            s = cache.steps[i]
            # a finished row that could not be dropped is fed the pad token (id 0)
            assert t == (script[s] if s < len(script) else 0) or t == 0
            cache.steps[i] += 1
        return self._logits(cache.keys, cache.steps), cache


def scripted(scripts, selectable=True):
    model = ScriptedModel(scripts, selectable)
    prompts = [[k, 40, 41] for k in scripts]
    model._plen = {k: 3 for k in scripts}
    return model, prompts


def _word(tok, text):
    (tid,) = tok(text, add_special_tokens=False)["input_ids"]
    return tid


def test_finished_rows_leave_the_batch_in_groups():
    """16 rows finishing one per step: rows are dropped only once they are an eighth of the
    batch (each drop copies the whole KV cache), never one by one; the outputs are the same."""
    from hneuron_lens.generation import PRUNE_FRACTION

    tok = tiny_tokenizer()
    im_end, a = tok.convert_tokens_to_ids("<|im_end|>"), _word(tok, "a")
    scripts = {100 + k: [a] * k + [im_end] for k in range(16)}  # row k: k tokens, then eos
    model, prompts = scripted(scripts)
    gens = generate(model, prompts, greedy(max_new_tokens=20, batch_size=16))
    assert [g.output_ids for g in gens] == [(a,) * k for k in range(16)]
    assert all(g.finish_reason == "eos" for g in gens)
    sizes = model.calls[1:]  # decode steps (the first call is the prompt pass)
    drops = [(n, n - m) for n, m in zip(sizes, sizes[1:], strict=False) if m < n]
    assert drops and all(d >= max(1, math.ceil(PRUNE_FRACTION * n)) for n, d in drops)
    assert len(drops) < 15  # one row at a time would be 15 drops
    assert sizes[-1] == 1  # the last row runs alone at the end


@pytest.mark.parametrize("selectable", [True, False])
@pytest.mark.parametrize("use_cache", [True, False])
def test_stop_reasons_and_row_pruning(selectable, use_cache):
    tok = tiny_tokenizer()
    im_end, nl = tok.convert_tokens_to_ids("<|im_end|>"), _word(tok, "\n")
    a, b, c = _word(tok, "a"), _word(tok, "b"), _word(tok, "c")
    scripts = {
        100: [a, im_end],  # eos after one token
        101: [a, b, c, a, b, c, a, b],  # runs to the limit
        102: [im_end],  # empty answer
        103: [nl, a, b, nl, c, im_end],  # leading newline does not stop; the one after text does
    }
    model, prompts = scripted(scripts, selectable)
    cfg = greedy(max_new_tokens=7, batch_size=4, use_cache=use_cache, warn_length_fraction=1.0)
    gens = generate(model, prompts, cfg)
    assert [g.finish_reason for g in gens] == ["eos", "length", "eos", "eos"]
    assert gens[0].output_ids == (a,) and gens[0].text == "a"
    assert gens[1].output_ids == (a, b, c, a, b, c, a) and gens[1].hit_max_new_tokens
    assert gens[3].text == "\nab\nc"
    assert gens[2].output_ids == () and gens[2].text == ""
    if selectable or not use_cache:
        assert model.calls[-1] == 1  # finished rows were dropped from the batch

    model, prompts = scripted(scripts, selectable)
    cfg = greedy(
        max_new_tokens=6,
        batch_size=4,
        use_cache=use_cache,
        stop_at_newline=True,
        warn_length_fraction=1.0,
    )
    gens = generate(model, prompts, cfg)
    assert gens[3].finish_reason == "newline"
    assert gens[3].output_ids == (nl, a, b, nl)
    assert gens[3].text == "\nab"


@pytest.mark.parametrize("selectable", [True, False])
def test_shared_prompt_pass_for_samples_of_one_prompt(selectable):
    tok = tiny_tokenizer()
    a, b, im_end = _word(tok, "a"), _word(tok, "b"), tok.convert_tokens_to_ids("<|im_end|>")
    model, prompts = scripted({100: [a, im_end], 101: [b, b, im_end]}, selectable)
    gens = generate(model, prompts, greedy(max_new_tokens=5, num_samples=3, batch_size=6))
    assert [g.output_ids for g in gens] == [(a,)] * 3 + [(b, b)] * 3
    # one prompt pass over the 2 distinct prompts (or all 6 rows when the cache cannot repeat)
    assert model.calls == ([2, 6, 3] if selectable else [2, 6, 6, 6])


def test_stats_and_length_warning(caplog):
    tok = tiny_tokenizer()
    a, im_end = _word(tok, "a"), tok.convert_tokens_to_ids("<|im_end|>")
    model, prompts = scripted({100: [a] * 10, 101: [a, im_end], 102: [a] * 10})
    with caplog.at_level(logging.WARNING, logger="hneuron_lens.generation"):
        gens = generate(model, prompts, greedy(max_new_tokens=4, warn_length_fraction=0.5))
    stats = GenerationStats.from_generations(gens)
    assert (stats.n, stats.n_eos, stats.n_length, stats.n_newline) == (3, 1, 2, 0)
    assert stats.frac_hit_max == pytest.approx(2 / 3)
    assert stats.mean_new_tokens == pytest.approx((4 + 1 + 4) / 3)
    assert stats.to_dict()["frac_hit_max"] == pytest.approx(2 / 3)
    assert any("hit max_new_tokens" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hneuron_lens.generation"):
        generate(model, prompts, greedy(max_new_tokens=4, warn_length_fraction=0.7))
    assert not caplog.records
    assert GenerationStats.from_generations([]).frac_hit_max == 0.0


def test_generate_input_errors(tiny):
    model = tiny("llama")
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], greedy())
    with pytest.raises(ValueError, match="prompt_seeds"):
        generate(model, [[1, 2]], greedy(), prompt_seeds=[1, 2])
    no_tok = copy.copy(SimpleNamespace(tokenizer=None, cfg=model.cfg))
    with pytest.raises(ValueError, match="tokenizer"):
        generate(no_tok, [[1]], greedy())


# ------------------------------------------------------------------------------ issue 15: waste


@pytest.mark.parametrize("top_k,top_p,temperature", [(50, 0.9, 1.0), (5, 1.0, 0.7), (20, 0.5, 1.3)])
def test_top_k_probs_is_filter_logits_distribution(top_k, top_p, temperature):
    from hneuron_lens.generation import top_k_probs

    torch.manual_seed(2)
    logits = torch.randn(6, 300) * 3
    probs, index = top_k_probs(logits, temperature, top_k, top_p)
    assert probs.shape == index.shape == (6, top_k)
    dense = torch.zeros_like(logits).scatter(-1, index, probs)
    ref = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    torch.testing.assert_close(dense, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_waste_removal_keeps_outputs(tiny, family, monkeypatch):
    """Row dropping, the shared prompt pass and last-position prompt logits change no output."""
    import hneuron_lens.generation as gen

    model = tiny(family)
    prompts = prompts_for(model)
    cfgs = [greedy(max_new_tokens=10, batch_size=8, num_samples=2)]
    cfgs.append(sampled(max_new_tokens=10, batch_size=8, num_samples=3, seed=4))
    fast = [generate(model, prompts, c) for c in cfgs]
    assert gen._accepts_logits_to_keep(model)
    monkeypatch.setattr(gen, "_accepts_logits_to_keep", lambda m: False)
    monkeypatch.setattr(gen, "_select_cache", lambda cache, keep: False)  # no dropping/sharing
    slow = [generate(model, prompts, c) for c in cfgs]
    for a, b in zip(fast, slow, strict=True):
        assert [g.output_ids for g in a] == [g.output_ids for g in b]
        assert [g.finish_reason for g in a] == [g.finish_reason for g in b]


def test_ends_sentence():
    from hneuron_lens.generation import ends_sentence

    assert ends_sentence("The capital of France is Paris.")
    assert ends_sentence("It was 1969. ")
    assert ends_sentence("Really?") and ends_sentence("Yes!")
    for text in (
        "",
        "Paris",
        "J.",
        "J. R. R.",
        "Dr.",
        "It is 3.",
        "e.g.",
        "Washington, D.C",
        "by J.R.R.",
        "Washington, D.C.",
    ):
        assert not ends_sentence(text), text


def test_stop_at_sentence():
    tok = tiny_tokenizer()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    par, is_, dot = _word(tok, "Par"), _word(tok, "is"), _word(tok, ".")
    the, a = _word(tok, " The"), _word(tok, "a")
    scripts = {
        100: [par, is_, dot, the, a, im_end],  # "Paris. The a": stops after "Paris."
        101: [a, dot, the, a, im_end],  # "a. The a": one letter before the dot is an initial
        102: [par, is_, dot, im_end],  # ends on EOS, not on the sentence rule
    }
    model, prompts = scripted(scripts)
    cfg = greedy(max_new_tokens=8, batch_size=3, stop_at_sentence=True)
    gens = generate(model, prompts, cfg)
    assert [g.finish_reason for g in gens] == ["sentence", "eos", "eos"]
    assert gens[0].output_ids == (par, is_, dot) and gens[0].text == "Paris."
    assert gens[1].output_ids == (a, dot, the, a)
    assert gens[2].text == "Paris."
    stats = GenerationStats.from_generations(gens)
    assert (stats.n_sentence, stats.n_eos) == (1, 2)
    off = generate(*scripted(scripts), greedy(max_new_tokens=8, batch_size=3))
    assert off[0].output_ids == (par, is_, dot, the, a)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_shared_prefix_pass_keeps_outputs(tiny, family, monkeypatch):
    """The batch's common prefix (here a system turn) run once gives the same tokens."""
    import hneuron_lens.generation as gen

    model = tiny(family)
    prompts = [
        build_prompt_ids(model.tokenizer, q, system="You are a quiz bot. Be brief.")
        for q in QUESTIONS
    ]
    assert gen.common_prefix_length(prompts) >= gen.MIN_SHARED_PREFIX
    used = []
    real = gen._prefix_prompt_pass

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        used.append(out is not None)
        return out

    monkeypatch.setattr(gen, "_prefix_prompt_pass", spy)
    for cfg in (
        greedy(max_new_tokens=8, batch_size=8, num_samples=2),
        sampled(max_new_tokens=8, batch_size=8, num_samples=2, seed=1),
    ):
        on = generate(model, prompts, cfg)
        assert used and all(used)
        off = generate(model, prompts, replace(cfg, share_prefix=False))
        assert [g.output_ids for g in on] == [g.output_ids for g in off]
    used.clear()
    with hooked(model, [("blocks.0.mlp.hook_post", lambda x, hook: None)]):
        generate(model, prompts, greedy(max_new_tokens=2, batch_size=8))
    assert not used  # hooks see the documented single prompt pass


def test_common_prefix_length():
    from hneuron_lens.generation import common_prefix_length

    assert common_prefix_length([]) == 0
    assert common_prefix_length([[1, 2, 3]]) == 2  # one own token is always left
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2], [3, 4]]) == 0
    assert common_prefix_length([[7], [7, 8]]) == 0
