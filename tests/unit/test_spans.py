"""Span location by character offsets: examples and hypothesis properties on random strings."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hneuron_lens.data import JudgedSample
from hneuron_lens.spans import SpanConfig, join_pieces, render, tokenize_sample, tokenize_samples
from hneuron_lens.testing import tiny_tokenizer


@cache
def _tokenizer(kind: str):
    """Three differently segmenting tokenizers: BPE-320 (chat), BPE-320 (base), char-level."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind in ("bpe-chat", "bpe-base"):
        tok = tiny_tokenizer()
        if kind == "bpe-base":
            tok.chat_template = None
        return tok
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=257,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<pad>"],
        show_progress=False,
    )
    raw.train_from_iterator(["a"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>")


TOKENIZERS = ["bpe-chat", "bpe-base", "char"]


def _decode_span(tok, ids):
    return tok.decode(ids)


def test_example_answer_text():
    tok = _tokenizer("bpe-chat")
    s = JudgedSample(
        "q",
        "Who wrote Hamlet?",
        "It was William Shakespeare.",
        0,
        answer_text="William Shakespeare",
    )
    t = tokenize_sample(tok, s, SpanConfig())
    assert t.span_method == "answer_text"
    assert "William Shakespeare" in tok.decode(t.input_ids[t.answer[0] : t.answer[1]])
    assert t.prompt_end <= t.answer[0] < t.answer[1] <= t.response_end <= len(t.input_ids)
    assert tok.decode(t.input_ids[t.prompt_end : t.response_end]).strip() == s.response


def test_aliases_and_tokens_and_fallback():
    tok = _tokenizer("bpe-chat")
    by_alias = JudgedSample("a", "Capital?", "I think paris, France.", 0, aliases=("Paris",))
    by_tokens = JudgedSample(
        "b", "Q?", "The answer is Mount Everest.", 1, answer_tokens=("▁Mount", "▁Everest")
    )
    missing = JudgedSample("c", "Q?", "No idea at all.", 1, answer_text="Jupiter")
    toks, rep = tokenize_samples(tok, [by_alias, by_tokens, missing])
    assert [t.span_method for t in toks] == ["alias", "answer_tokens"]
    assert rep.n_in == 3 and rep.n_ok == 2
    assert rep.skipped == [("c", "answer not found in response")]
    assert rep.skipped_by_reason == {"answer not found in response": 1}
    toks, rep = tokenize_samples(tok, [missing], SpanConfig(fallback="response"))
    assert toks[0].span_method == "response" and toks[0].answer == (
        toks[0].prompt_end,
        toks[0].response_end,
    )


def test_alias_needs_word_boundary():
    tok = _tokenizer("bpe-chat")
    s = JudgedSample("a", "Q?", "A Parisian café.", 0, aliases=("Paris",))
    _, rep = tokenize_samples(tok, [s])
    assert rep.n_ok == 0


def test_empty_response_reported():
    _, rep = tokenize_samples(_tokenizer("bpe-chat"), [JudgedSample("e", "Q?", "  ", 0)])
    assert rep.skipped == [("e", "empty response")]


def test_join_pieces():
    assert join_pieces(["▁William", "▁Shake", "speare"]) == "William Shakespeare"
    assert join_pieces(["ĠMount", "ĠEverest"]) == "Mount Everest"


def test_suffix_and_base_prompt():
    base = _tokenizer("bpe-base")
    text, a, b = render(base, "Q?", "resp", SpanConfig(suffix="Be brief."))
    assert text == "Q? Be brief.\nAnswer: resp" and text[a:b] == "resp"
    with pytest.raises(ValueError):
        SpanConfig(fallback="nope")


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=30
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(TOKENIZERS),
    question=st.text(min_size=1, max_size=20),
    before=_text,
    answer=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")),
        min_size=1,
        max_size=12,
    ),
    after=_text,
)
def test_answer_span_covers_exactly_the_answer_characters(kind, question, before, answer, after):
    tok = _tokenizer(kind)
    response = before + answer + after
    if not response.strip():
        return
    sample = JudgedSample("x", question, response, 1, answer_text=answer)
    t = tokenize_sample(tok, sample, SpanConfig())
    text, r_start, _ = render(tok, question, response, SpanConfig())
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == t.input_ids
    offsets = enc["offset_mapping"]
    a0 = r_start + response.find(answer)  # span module searches exact text first
    a1 = a0 + len(answer)
    s, e = t.answer
    # every token in the span overlaps the answer; the span covers all answer characters
    assert all(
        offsets[i][0] < a1 and offsets[i][1] > a0
        for i in range(s, e)
        if offsets[i][1] > offsets[i][0]
    )
    assert offsets[s][0] <= a0 and offsets[e - 1][1] >= a1
    # no token outside the span overlaps the answer
    outside = [i for i in range(len(offsets)) if not s <= i < e]
    assert not any(
        offsets[i][0] < a1 and offsets[i][1] > a0 and offsets[i][1] > offsets[i][0] for i in outside
    )
    assert t.prompt_end <= s < e <= t.response_end


@pytest.mark.parametrize(
    ("response", "aliases", "want"),
    [
        ("I think it's The Eiffel Tower, in Paris.", ("Eiffel Tower",), "Eiffel Tower"),
        ("I think it's The Eiffel Tower, in Paris.", ("The Eiffel Tower",), "The Eiffel Tower"),
        ("It is Eiffel Tower.", ("the Eiffel Tower", "tower"), "Eiffel Tower"),  # article optional
        ("A Parisian landmark.", ("Paris",), None),  # whole words only
    ],
)
def test_alias_spans_use_the_judges_alias_finder(response, aliases, want):
    from hneuron_lens.spans import locate_answer_chars

    s = JudgedSample("a", "Q?", response, 0, aliases=aliases)
    got = locate_answer_chars(s, SpanConfig())
    assert (got if got is None else response[got[0] : got[1]]) == want
