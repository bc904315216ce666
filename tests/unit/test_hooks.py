"""Hook handles we own: exact removal, nesting, validation before anything is added."""

from __future__ import annotations

import pytest
import torch

from hneuron_lens.hooks import attach, detach, hooked


def _n(model, name):
    return len(model.hook_dict[name].fwd_hooks)


def test_attach_detach_exact(tiny):
    model = tiny("llama")
    name = "blocks.0.mlp.hook_post"
    outer = attach(model, [(name, lambda x, hook: None)])
    with hooked(model, [(name, lambda x, hook: None)]):
        assert _n(model, name) == 2
    assert _n(model, name) == 1  # leaving the inner block keeps the outer hook
    with model.hooks(fwd_hooks=[(name, lambda x, hook: None)]):
        with hooked(model, [(name, lambda x, hook: None)]):
            assert _n(model, name) == 3
        assert _n(model, name) == 2
    detach(outer)
    assert _n(model, name) == 0


def test_hooks_removed_on_exception(tiny):
    model = tiny("llama")
    name = "blocks.1.mlp.hook_out"
    with pytest.raises(RuntimeError):
        with hooked(model, [(name, lambda x, hook: None)]):
            raise RuntimeError("boom")
    assert _n(model, name) == 0


def test_bad_name_adds_nothing(tiny):
    model = tiny("llama")
    with pytest.raises(KeyError, match="blocks.9.mlp.hook_post"):
        attach(
            model,
            [
                ("blocks.0.mlp.hook_post", lambda x, hook: None),
                ("blocks.9.mlp.hook_post", lambda x, hook: None),
            ],
        )
    assert _n(model, "blocks.0.mlp.hook_post") == 0


def test_outputs_unchanged_after_exit(tiny):
    model = tiny("gpt2")
    ids = torch.tensor([[1, 2, 3, 4]])
    before = model(ids)
    with hooked(model, [("blocks.0.mlp.hook_post", lambda x, hook: x * 0)]):
        during = model(ids)
    assert not torch.equal(before, during)
    assert torch.equal(before, model(ids))
