"""Tiny random models of every supported architecture family, for tests, doctests and tutorials.

Everything here is built in memory in well under a second and touches no network: a byte-level
BPE tokenizer trained on a few sentences (with a ChatML chat template, like SmolLM2's) and a
randomly initialised Hugging Face model of the chosen family booted into a ``TransformerBridge``.

Example:
    >>> from hneuron_lens.testing import tiny_model
    >>> model = tiny_model("llama")
    >>> model.cfg.n_layers
    2
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris. Who wrote Hamlet? William Shakespeare wrote it.",
    "What is the chemical symbol for gold? The answer is Au. I don't know the answer.",
    "Question: Which planet is largest? Answer: Jupiter. The year was 1969, 42 and 3.14.",
]

FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "gpt2",
    "neox",
    "llama-varied",
)
"""Dense families :func:`tiny_model` builds. ``llama-varied`` has a different d_mlp per layer."""


@lru_cache(maxsize=1)
def _tokenizer_object() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return tok


def tiny_tokenizer() -> Any:
    """A fresh byte-level BPE ``PreTrainedTokenizerFast`` (vocab 320) with a ChatML template."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(_tokenizer_object()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _hf_config(family: str, vocab_size: int) -> Any:
    import transformers as T

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    if family in ("llama", "llama-varied"):
        return T.LlamaConfig(**common)
    if family == "mistral":
        return T.MistralConfig(**common)
    if family == "qwen2":
        return T.Qwen2Config(**common)
    if family == "qwen3":
        return T.Qwen3Config(**common, head_dim=8)
    if family == "gemma2":
        return T.Gemma2Config(**common, head_dim=8)
    if family == "gemma3":
        return T.Gemma3TextConfig(**common, head_dim=8)
    if family == "gpt2":
        return T.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    if family == "neox":
        return T.GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
        )
    if family == "qwen2-moe":
        return T.Qwen2MoeConfig(**common)
    raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES + ('qwen2-moe',)}")


def tiny_hf_model(family: str = "llama", seed: int = 0) -> Any:
    """A randomly initialised Hugging Face causal LM of ``family`` (eval mode, float32)."""
    import transformers as T

    config = _hf_config(family, vocab_size=len(tiny_tokenizer()))
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(config)
    if family == "llama-varied":
        # Layer 1 gets a wider MLP: neuron_sites and cett must read d_mlp per layer.
        from transformers.models.llama.modeling_llama import LlamaMLP

        wide = copy.deepcopy(config)
        wide.intermediate_size = 80
        model.model.layers[1].mlp = LlamaMLP(wide)
    model.config.architectures = [type(model).__name__]
    return model.eval()


def tiny_model(family: str = "llama", seed: int = 0) -> Any:
    """A tiny random ``TransformerBridge`` of ``family`` with :func:`tiny_tokenizer`.

    Args:
        family: one of :data:`FAMILIES` (or ``"qwen2-moe"`` to test the MoE refusal).
        seed: torch seed for the random weights.

    Returns:
        A ``TransformerBridge`` in eval mode with raw (unprocessed) weights.
    """
    from hneuron_lens.models import boot_bridge

    return boot_bridge(tiny_hf_model(family, seed), tiny_tokenizer(), name=f"tiny-{family}")
