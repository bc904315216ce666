"""Hook handles we own: attach TransformerLens hooks and remove exactly those on exit.

TransformerBridge's own ``hooks()`` context manager is fine for users; library code that must
nest inside other hook blocks (a CETT pass inside an intervention, an intervention inside a
user's ``model.hooks``) keeps its own handles instead, so that leaving one block never removes
hooks another block added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

HookFn = Callable[..., Any]


def validate_hook_names(model: Any, names: Sequence[str]) -> None:
    """Raise ``KeyError`` naming every hook in ``names`` that ``model`` does not have."""
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise KeyError(f"hook names not found on this model: {missing}")


def attach(model: Any, fwd_hooks: Sequence[tuple[str, HookFn]]) -> list[tuple[Any, Any]]:
    """Add forward hooks by name; return the (hook_point, handle) pairs to pass to :func:`detach`.

    Names are validated before anything is added, so a typo adds nothing.
    """
    validate_hook_names(model, [n for n, _ in fwd_hooks])
    added: list[tuple[Any, Any]] = []
    try:
        for name, fn in fwd_hooks:
            point = model.hook_dict[name]
            added.append((point, point.add_hook(fn, dir="fwd")))
    except BaseException:
        detach(added)
        raise
    return added


def detach(added: list[tuple[Any, Any]]) -> None:
    """Remove exactly the hooks returned by :func:`attach` (idempotent)."""
    while added:
        point, handle = added.pop()
        handle.hook.remove()
        point.fwd_hooks[:] = [h for h in point.fwd_hooks if h is not handle]


@contextmanager
def hooked(model: Any, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Any]:
    """Context manager form of :func:`attach` / :func:`detach` (try/finally)."""
    added = attach(model, fwd_hooks)
    try:
        yield model
    finally:
        detach(added)
