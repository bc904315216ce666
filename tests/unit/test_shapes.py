"""Run-time checks of the jaxtyping shape annotations on the public tensor APIs (jaxtyping + beartype)."""

from __future__ import annotations

import pytest
import torch
from beartype import beartype
from jaxtyping import jaxtyped

from hneuron_lens.cett import cett, collate
from hneuron_lens.data import JudgedSample
from hneuron_lens.features import NeuronLayout
from hneuron_lens.spans import tokenize_samples

SAMPLES = [
    JudgedSample("a", "Capital of France?", "It is Paris.", 0, answer_text="Paris"),
    JudgedSample(
        "b",
        "Who wrote Hamlet?",
        "Christopher Marlowe, I think.",
        1,
        answer_text="Christopher Marlowe",
    ),
]


@pytest.mark.parametrize("family", ["llama", "gpt2", "llama-varied"])
def test_cett_shapes_checked(tiny, family):
    model = tiny(family)
    toks, _ = tokenize_samples(model.tokenizer, SAMPLES)
    checked = jaxtyped(typechecker=beartype)(cett)
    out = checked(model, collate(toks, 0))
    assert all(v.shape[:2] == (2, model.cfg.n_layers) for v in out.values())


def test_flatten_shapes_checked_and_rejects_wrong_rank():
    layout = NeuronLayout((3, 5))
    flatten = jaxtyped(typechecker=beartype)(layout.flatten)
    assert flatten(torch.zeros(4, 2, 5)).shape == (4, 8)
    with pytest.raises(Exception):  # noqa: B017 - jaxtyping raises its own TypeCheckError
        flatten(torch.zeros(4, 5))
