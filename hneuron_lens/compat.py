"""The one place that knows which TransformerLens / transformers behaviour the library relies on.

hneuron_lens drives a ``TransformerBridge`` through three internals that have changed under us
before: the hook names of an MLP (``blocks.L.mlp.hook_post`` / ``hook_out``, built only in
:mod:`hneuron_lens.models`), the Hugging Face KV-cache object that the bridge hands back from
``return_type="logits_and_cache"``, and the keyword under which a Hugging Face decoder layer
passes that cache to its attention module. This module checks the last two and explains.

**The KV-cache keyword.** transformers 5.24 renamed the cache keyword of every decoder layer
from ``past_key_values`` to ``cache`` (the old name is deprecated until 5.40). TransformerLens
4.3's attention bridges read only ``past_key_values`` (or ``layer_past``), so under 5.24 they
never write the prompt's keys and values into the cache: every decode step then attends to
itself alone and generation returns fluent garbage without raising. :func:`kv_cache_compat`
forwards ``cache`` to ``past_key_values`` on every attention bridge for the duration of a
generation (forward pre-hooks that we add and remove ourselves); on versions that still pass
``past_key_values`` it changes nothing.

**Checks that fail loudly.** :func:`check_cache_length` verifies, after every cached forward
pass, that the cache holds exactly the positions fed so far (free: it reads one integer), and
:func:`check_kv_cache` compares cached with uncached logits on a short prompt (run once by
:func:`hneuron_lens.load_model`, and by the test suite). Either raises :class:`DependencyError`
naming the installed versions and the supported ranges, never a silent wrong answer.

Example:
    >>> from hneuron_lens.testing import tiny_model
    >>> check_kv_cache(tiny_model("llama"))  # raises DependencyError when decoding is broken
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from hneuron_lens.errors import DependencyError

logger = logging.getLogger(__name__)

SUPPORTED: dict[str, str] = {
    "transformer-lens": ">=4.3,<5",
    "transformers": ">=5.9,<6",
    "torch": ">=2.6",
}
"""Supported ranges (as in ``pyproject.toml``): the lower bounds are tested (``make test-oldest``),
the upper bounds are the next major release."""

TESTED: dict[str, tuple[str, str]] = {
    "transformer-lens": ("4.3.0", "4.3.0"),
    "transformers": ("5.9.0", "5.24.0"),
    "torch": ("2.13.0", "2.13.0"),
}
"""Oldest and newest release of each package that the full test suite passed on."""


def installed_versions() -> dict[str, str]:
    """Installed versions of the packages in :data:`SUPPORTED` (``"missing"`` when absent).

    Reads package metadata only: nothing is imported.
    """
    out: dict[str, str] = {}
    for name in SUPPORTED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _release(version: str) -> tuple[int, ...]:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release
    except InvalidVersion:
        return ()


def version_report() -> str:
    """One line: each package's installed version beside its supported range and tested span."""
    inst = installed_versions()
    return "; ".join(
        f"{name} {inst[name]} (supported {SUPPORTED[name]}, tested {lo}..{hi})"
        for name, (lo, hi) in TESTED.items()
    )


def untested_versions() -> list[str]:
    """Packages installed at a release outside the tested span, as readable lines."""
    lines = []
    for name, (lo, hi) in TESTED.items():
        version = installed_versions()[name]
        if version == "missing":
            continue
        rel = _release(version)
        if rel < _release(lo) or rel[:2] > _release(hi)[:2]:
            lines.append(f"{name} {version} is outside the tested span {lo}..{hi}")
    return lines


def dependency_error(what: str) -> DependencyError:
    """A :class:`DependencyError` that names the installed versions and the supported ranges."""
    return DependencyError(
        what,
        hint=(
            f"installed: {version_report()}. Install the tested versions with "
            "`pip install -r requirements.lock` (this repository) or pin the package named "
            "above into its supported range, and report the new release as an issue"
        ),
    )


# --------------------------------------------------------------------------------------------
# the KV-cache keyword


def _attention_modules(model: Any) -> list[Any]:
    modules = getattr(model, "modules", None)
    if modules is None:  # a fake model in the tests
        return []
    try:
        from transformer_lens.model_bridge.generalized_components.attention import (
            AttentionBridge,
        )
    except ImportError:  # pragma: no cover - TransformerLens without this class
        return []
    return [m for m in modules() if isinstance(m, AttentionBridge)]


def _forward_cache_keyword(module: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs
    return None


def patch_kv_cache(model: Any) -> list[Any]:
    """Make every attention bridge of ``model`` read the KV cache under either keyword, for good.

    Adds a forward pre-hook (a plain PyTorch hook, not a TransformerLens hook: ``reset_hooks``
    leaves it alone) to every attention bridge that copies a ``cache`` keyword argument
    (transformers >= 5.24) into ``past_key_values`` (what TransformerLens 4.3 reads) when the
    latter is absent. A no-op on versions that pass ``past_key_values``; adding it twice is
    harmless. :func:`hneuron_lens.load_model` applies it to every model it loads, so the
    bridge's own ``model.generate`` decodes correctly too.

    Returns:
        The hook handles (``handle.remove()`` undoes the patch).
    """
    return [
        m.register_forward_pre_hook(_forward_cache_keyword, with_kwargs=True)
        for m in _attention_modules(model)
    ]


@contextmanager
def kv_cache_compat(model: Any) -> Iterator[None]:
    """:func:`patch_kv_cache` for the duration of a block (for bridges the user booted).

    Removes exactly the hooks it added on exit (try/finally), and hides the deprecation warning
    transformers >= 5.24 gives for the ``past_key_values`` keyword that TransformerLens passes.
    Nesting is safe.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> with kv_cache_compat(model):
        ...     tokens = model.generate("Who", max_new_tokens=2, verbose=False)
    """
    handles = patch_kv_cache(model)
    try:
        with warnings.catch_warnings():
            # TransformerLens hands the cache to transformers as `past_key_values`, which
            # transformers >= 5.24 deprecates: a warning the user cannot act on.
            warnings.filterwarnings(
                "ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning
            )
            yield
    finally:
        for h in handles:
            h.remove()


def cache_length(cache: Any) -> int | None:
    """Positions held by a Hugging Face cache object (``None`` when it cannot tell)."""
    get = getattr(cache, "get_seq_length", None)
    if get is None:
        return None
    try:
        return int(get())
    except Exception:  # noqa: BLE001 - a cache type we do not know: no check
        return None


def check_cache_length(cache: Any, expected: int, where: str) -> None:
    """Raise :class:`DependencyError` when ``cache`` does not hold ``expected`` positions.

    Args:
        cache: the cache returned by ``model(..., return_type="logits_and_cache")``.
        expected: positions fed so far (padded prompt width + decode steps).
        where: which pass this is, for the message (e.g. ``"after the prompt pass"``).
    """
    held = cache_length(cache)
    if held is None or held == expected:
        return
    raise dependency_error(
        f"the KV cache holds {held} positions {where}, expected {expected}: the attention "
        "layers did not write to the cache, so cached decoding would return wrong text"
    )


def check_kv_cache(model: Any, atol: float | None = None) -> float:
    """Compare cached with uncached decoding on a short prompt; raise when they disagree.

    Runs a 6-token prompt through ``model`` three ways: the full sequence without a cache, and
    the first 5 tokens with a cache followed by the 6th as one cached decode step. The last
    position's logits must agree. Hooks attached to ``model`` are active, so call it before
    attaching stateful hooks.

    Args:
        model: a ``TransformerBridge``.
        atol: tolerance on the largest absolute logit difference, relative to the largest
            absolute logit (default 1e-3 for float32, 5e-2 for half precision).

    Returns:
        The largest relative difference found.

    Raises:
        DependencyError: the cache is not filled, or the logits disagree.
    """
    import torch

    dtype = next(model.parameters()).dtype
    if atol is None:
        atol = 1e-3 if dtype == torch.float32 else 5e-2
    device = torch.device(model.cfg.device)
    vocab = int(model.cfg.d_vocab)
    ids = (torch.arange(6, device=device) * 7 + 3).remainder(vocab)[None, :]
    mask = torch.ones_like(ids)
    with torch.no_grad(), kv_cache_compat(model):
        full = model(ids, attention_mask=mask, return_type="logits")[0, -1].float()
        _, cache = model(
            ids[:, :-1], attention_mask=mask[:, :-1], return_type="logits_and_cache", use_cache=True
        )
        if cache is None:
            raise dependency_error(
                "the model returned no KV cache for return_type='logits_and_cache'"
            )
        check_cache_length(cache, 5, "after a 5-token prompt")
        step, cache = model(
            ids[:, -1:], attention_mask=mask, past_key_values=cache, return_type="logits_and_cache"
        )
    diff = float((step[0, -1].float() - full).abs().max() / full.abs().max().clamp_min(1e-6))
    if not diff <= atol:
        raise dependency_error(
            f"cached and uncached logits disagree (max relative difference {diff:.3g} > "
            f"{atol:g}): KV-cache decoding through this TransformerBridge is broken"
        )
    return diff
