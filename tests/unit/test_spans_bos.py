"""Base prompts start with the BOS token the tokenizer adds by itself (as in generation)."""

from __future__ import annotations

import copy

from tokenizers import processors

from hneuron_lens.data.records import JudgedSample
from hneuron_lens.spans import SpanConfig, base_bos_ids, tokenize_samples
from hneuron_lens.testing import tiny_tokenizer


def _tokenizer_with_bos():
    """The tiny tokenizer with a BOS post-processor, like Gemma's or Llama's."""
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer()
    obj = copy.deepcopy(base.backend_tokenizer)
    bos = "<|endoftext|>"
    bos_id = obj.token_to_id(bos)
    obj.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=obj, bos_token=bos, eos_token="<|im_end|>")
    return tok, bos_id


def test_base_prompt_gets_the_tokenizers_bos():
    tok, bos_id = _tokenizer_with_bos()
    assert base_bos_ids(tok) == [bos_id]
    sample = JudgedSample("q", "Capital of France?", "It is Paris.", 0, answer_text="Paris")
    (t,), report = tokenize_samples(tok, [sample], SpanConfig(chat=False))
    assert report.n_ok == 1 and t.input_ids[0] == bos_id
    plain = tok("Capital of France?\nAnswer: It is Paris.", add_special_tokens=False)["input_ids"]
    assert t.input_ids[1:] == plain
    answer = tok.decode(t.input_ids[t.answer[0] : t.answer[1]])
    assert "Paris" in answer and t.prompt_end > 1


def test_no_bos_without_one_or_with_a_chat_template():
    tok = tiny_tokenizer()  # no BOS: nothing is added
    assert base_bos_ids(tok) == []
    sample = JudgedSample("q", "Capital of France?", "It is Paris.", 0, answer_text="Paris")
    (t,), _ = tokenize_samples(tok, [sample], SpanConfig(chat=False))
    assert t.input_ids == tok("Capital of France?\nAnswer: It is Paris.")["input_ids"]
    # a chat template writes its own BOS (if any): the ids are the template's text, unchanged
    (c,), _ = tokenize_samples(tok, [sample], SpanConfig())
    text = tok.apply_chat_template(
        [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "It is Paris."},
        ],
        tokenize=False,
    )
    assert c.input_ids == tok(text, add_special_tokens=False)["input_ids"]
