"""Causal interventions on MLP neurons: scale their activations and measure behaviour.

The H-Neurons paper (Gao et al. 2025, arXiv:2512.01797, section 4) scales the activation
``z_j`` of every H-Neuron ``j`` (the input of the MLP down projection, ``blocks.L.mlp.hook_post``)
by a factor ``alpha`` in ``[0, 3]`` at every token position, and measures how the rate of
over-compliance (accepting false premises, following misleading context, caving to a user's
push-back, answering harmful requests) moves with ``alpha``, beside random-neuron controls.

- :class:`NeuronSet`: a set of ``(layer, neuron)`` pairs (from a probe, a file, or random).
- :class:`HookedIntervention`: a context manager that scales (or sets) those activations with
  TransformerLens hooks it owns; it never edits weights.
- :func:`alpha_sweep`: generate and score a :class:`~hneuron_lens.tasks.Task` for the neuron set
  and random controls at every ``alpha``, resumably, and summarise it in a :class:`SweepReport`.
- :func:`suppression_accuracy`: QA accuracy with the neurons scaled to 0 (the probe's C rule).

Scaling ``z_j`` by ``alpha`` is exactly equivalent to scaling row ``j`` of ``W_out`` by ``alpha``
(the tests check this against edited weights on every tiny model family).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from hneuron_lens import hooks as _hooks
from hneuron_lens.errors import DataError, UsageError
from hneuron_lens.features import NeuronLayout
from hneuron_lens.io import atomic_write_text, claim_output_dir, loads_json, safe_child

if TYPE_CHECKING:
    import pandas as pd

    from hneuron_lens.tasks.base import Task

logger = logging.getLogger(__name__)

__all__ = [
    "NeuronSet",
    "HookedIntervention",
    "SweepReport",
    "alpha_sweep",
    "suppression_accuracy",
    "layout_of",
]

Scope = Literal["all", "generated"]


class NeuronIndexError(DataError, IndexError):
    """A ``(layer, neuron)`` index that is not a non-negative integer, or outside the model."""


def _index_array(values: Any, what: str, name: str) -> np.ndarray:
    """``values`` as int64 ``[k]``; refuses non-integers (``0.7`` is never read as layer 0)."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
    elif arr.dtype.kind in "iu":
        bad = np.zeros(arr.shape, dtype=bool)
    else:  # bools, strings, objects
        raise NeuronIndexError(
            f"{what} indices of neuron set {name!r} must be integers, got {arr.dtype} values "
            f"(e.g. {arr.reshape(-1)[0]!r})",
            field=what,
            hint="give (layer, neuron) pairs of whole numbers",
        )
    if bad.any():
        raise NeuronIndexError(
            f"{what} indices of neuron set {name!r} must be whole numbers, got "
            f"{arr[bad].reshape(-1)[:5].tolist()}",
            field=what,
            hint="give (layer, neuron) pairs of whole numbers",
        )
    return arr.astype(np.int64).reshape(-1)


Mode = Literal["scale", "set"]


# --------------------------------------------------------------------------------------------
# Neuron sets
# --------------------------------------------------------------------------------------------


def layout_of(obj: Any) -> NeuronLayout:
    """The :class:`NeuronLayout` of a model (via :func:`~hneuron_lens.models.neuron_sites`),
    a layout, or a sequence of per-layer ``d_mlp``."""
    if isinstance(obj, NeuronLayout):
        return obj
    if isinstance(obj, Sequence) and all(isinstance(d, (int, np.integer)) for d in obj):
        return NeuronLayout(tuple(int(d) for d in obj))
    from hneuron_lens.models import neuron_sites

    return NeuronLayout(tuple(site.d_mlp for site in neuron_sites(obj)))


@dataclass
class NeuronSet:
    """A set of MLP neurons, ``(layers[i], neurons[i])`` for ``i < len(self)``, without duplicates.

    Example:
        >>> s = NeuronSet.from_pairs([(0, 3), (1, 7)], name="demo")
        >>> len(s), list(s)
        (2, [(0, 3), (1, 7)])
    """

    layers: np.ndarray
    """Layer index of each neuron, int64 ``[k]``."""
    neurons: np.ndarray
    """Neuron index within its layer, int64 ``[k]``."""
    name: str = "neurons"
    """Label used in reports and file names (``"h_neurons"``, ``"random-0"``...)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (seed, kind, source file...). JSON-serialisable."""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or self.name.strip() in ("", ".", "..")
            or any(c in self.name for c in "/\\\x00")
        ):
            raise UsageError(
                f"neuron set name {self.name!r} cannot be used as a directory name",
                field="name",
                hint="use letters, digits, '-', '_' or '.', without path separators or '..'",
            )
        self.layers = _index_array(self.layers, "layer", self.name)
        self.neurons = _index_array(self.neurons, "neuron", self.name)
        if self.layers.shape != self.neurons.shape:
            raise NeuronIndexError(
                f"layers and neurons differ in length: {self.layers.size} vs {self.neurons.size}",
                field="layers",
            )
        if np.any(self.layers < 0) or np.any(self.neurons < 0):
            bad = [
                (int(a), int(b))
                for a, b in zip(self.layers, self.neurons, strict=True)
                if a < 0 or b < 0
            ]
            raise NeuronIndexError(f"negative (layer, neuron) indices: {bad[:5]}", field="layer")
        pairs = list(zip(self.layers.tolist(), self.neurons.tolist(), strict=True))
        if len(set(pairs)) != len(pairs):
            seen: set[tuple[int, int]] = set()
            dup = [p for p in pairs if p in seen or seen.add(p)]  # type: ignore[func-returns-value]
            raise NeuronIndexError(
                f"duplicate (layer, neuron) pairs in {self.name!r}: {dup[:5]}", field="neuron"
            )

    def __len__(self) -> int:
        return int(self.layers.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.layers.tolist(), self.neurons.tolist(), strict=True))

    def __str__(self) -> str:
        counts = self.layer_counts()
        per = ", ".join(f"L{k}:{v}" for k, v in sorted(counts.items()))
        return f"NeuronSet {self.name!r}: {len(self)} neurons ({per})"

    def layer_counts(self) -> dict[int, int]:
        """``layer -> number of neurons`` in this set."""
        vals, counts = np.unique(self.layers, return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, counts, strict=True)}

    def per_layer(self) -> dict[int, np.ndarray]:
        """``layer -> positions i`` (into this set) of its neurons, layers ascending."""
        return {int(L): np.flatnonzero(self.layers == L) for L in np.unique(self.layers)}

    def validate(self, layout_or_model: Any) -> NeuronSet:
        """Raise ``IndexError`` naming every ``(layer, neuron)`` outside the model; return self."""
        layout = layout_of(layout_or_model)
        d = np.asarray(layout.d_mlp)
        bad = []
        for layer, neuron in self:
            if layer >= layout.n_layers:
                bad.append(f"({layer}, {neuron}): layer >= n_layers={layout.n_layers}")
            elif neuron >= d[layer]:
                bad.append(f"({layer}, {neuron}): neuron >= d_mlp={int(d[layer])} of layer {layer}")
        if bad:
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise NeuronIndexError(
                f"NeuronSet {self.name!r} does not fit the model: {bad[:10]}{more}",
                hint="was the set made for another model?",
            )
        return self

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[int, int]],
        name: str = "neurons",
        meta: dict[str, Any] | None = None,
    ) -> NeuronSet:
        """Build from an iterable of ``(layer, neuron)`` (whole numbers; ``0.7`` is refused)."""
        rows = [tuple(p) for p in pairs]
        if any(len(p) != 2 for p in rows):
            raise NeuronIndexError(
                f"neuron set {name!r}: every entry must be a (layer, neuron) pair",
                field="pairs",
            )
        return cls([p[0] for p in rows], [p[1] for p in rows], name=name, meta=dict(meta or {}))

    @classmethod
    def coerce(cls, obj: Any, name: str | None = None) -> NeuronSet:
        """Turn ``obj`` into a NeuronSet.

        Accepts a NeuronSet, anything with ``.to_pandas()`` (a probe's ``h_neurons`` table), a
        DataFrame with ``layer`` and ``neuron`` columns, a dict with ``layers``/``neurons``, a
        path to a JSON/CSV file, or an iterable of ``(layer, neuron)`` pairs.
        """
        if isinstance(obj, NeuronSet):
            if name is None or name == obj.name:
                return obj
            return cls(obj.layers.copy(), obj.neurons.copy(), name=name, meta=dict(obj.meta))
        if isinstance(obj, (str, os.PathLike)):
            out = cls.load(obj)
            return out if name is None else cls.coerce(out, name)
        if isinstance(obj, dict):
            d = dict(obj)
            if name is not None:
                d["name"] = name
            return cls.from_dict(d)
        df = obj.to_pandas() if hasattr(obj, "to_pandas") else obj
        if hasattr(df, "columns"):
            missing = {"layer", "neuron"} - set(df.columns)
            if missing:
                raise ValueError(
                    f"table needs 'layer' and 'neuron' columns; missing {sorted(missing)}"
                )
            meta: dict[str, Any] = {}
            if "weight" in df.columns:
                meta["weights"] = [float(w) for w in df["weight"]]
            return cls(
                df["layer"].to_numpy(), df["neuron"].to_numpy(), name=name or "neurons", meta=meta
            )
        return cls.from_pairs(obj, name=name or "neurons")

    @classmethod
    def random(
        cls,
        layout_or_model: Any,
        k: int,
        seed: int = 0,
        layer_matched_to: NeuronSet | None = None,
        exclude: NeuronSet | None = None,
        name: str | None = None,
    ) -> NeuronSet:
        """Draw ``k`` distinct neurons uniformly at random.

        Args:
            layout_or_model: a model, a :class:`NeuronLayout` or per-layer ``d_mlp``.
            k: number of neurons (ignored when ``layer_matched_to`` is given: its size is used).
            seed: seed for ``np.random.default_rng``.
            layer_matched_to: draw the same number of neurons per layer as this set.
            exclude: never draw these neurons (e.g. the H-Neurons themselves).
            name: set name; default ``"random-{seed}"``.

        Raises:
            ValueError: more neurons requested than a layer (or the model) has left.
        """
        layout = layout_of(layout_or_model)
        rng = np.random.default_rng(seed)
        excluded: dict[int, set[int]] = {}
        for layer, neuron in exclude or ():
            excluded.setdefault(layer, set()).add(neuron)
        if layer_matched_to is not None:
            layer_matched_to.validate(layout)
            layers, neurons = [], []
            for layer, count in sorted(layer_matched_to.layer_counts().items()):
                pool = np.setdiff1d(
                    np.arange(layout.d_mlp[layer]), np.fromiter(excluded.get(layer, ()), np.int64)
                )
                if count > pool.size:
                    raise ValueError(
                        f"layer {layer}: need {count} neurons, only {pool.size} available"
                    )
                pick = np.sort(rng.choice(pool, size=count, replace=False))
                layers += [layer] * count
                neurons += pick.tolist()
            kind = "layer_matched"
        else:
            if k < 0:
                raise ValueError(f"k must be >= 0, got {k}")
            flat_excl = (
                np.asarray([layout.flat_index(a, b) for a, b in exclude], dtype=np.int64)
                if exclude is not None and len(exclude)
                else np.zeros(0, np.int64)
            )
            pool = np.setdiff1d(np.arange(layout.n_features), flat_excl)
            if k > pool.size:
                raise ValueError(f"need {k} neurons, only {pool.size} available")
            flat = np.sort(rng.choice(pool, size=k, replace=False))
            layers_a, neurons_a = layout.unflatten_index(flat) if k else (np.zeros(0), np.zeros(0))
            layers, neurons = list(np.asarray(layers_a)), list(np.asarray(neurons_a))
            kind = "random"
        return cls(
            np.asarray(layers, dtype=np.int64),
            np.asarray(neurons, dtype=np.int64),
            name=name or f"random-{seed}",
            meta={"kind": kind, "seed": int(seed)},
        )

    # -- io ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers.tolist(),
            "neurons": self.neurons.tolist(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeuronSet:
        return cls(
            np.asarray(d["layers"]),
            np.asarray(d["neurons"]),
            name=str(d.get("name", "neurons")),
            meta=dict(d.get("meta") or {}),
        )

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"layer": self.layers, "neuron": self.neurons})

    def fingerprint(self) -> str:
        """Short sha256 of the sorted pairs (names and meta excluded)."""
        pairs = sorted(self)
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON (``.json``) or CSV with ``layer,neuron`` columns (``.csv``), atomically."""
        path = Path(path)
        if path.suffix.lower() == ".csv":
            lines = ["layer,neuron"] + [f"{a},{b}" for a, b in self]
            text = "\n".join(lines) + "\n"
        else:
            text = json.dumps(self.to_dict(), indent=1)
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NeuronSet:
        """Read a file written by :meth:`save` (JSON) or any CSV with ``layer`` and ``neuron``
        columns (extra columns ignored)."""
        path = Path(path)
        hint = "a JSON file written by NeuronSet.save, or a CSV with layer,neuron columns"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError("no such neuron-set file", file=path, hint=hint) from None
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(
                f"cannot read the neuron set ({type(err).__name__})", file=path, hint=hint
            ) from None
        name = path.stem if path.stem not in ("", ".", "..") else "neurons"
        if path.suffix.lower() == ".csv":
            try:
                rows = list(csv.DictReader(text.splitlines()))
            except csv.Error as err:
                raise DataError(f"not a readable CSV ({err})", file=path, hint=hint) from None
            if not rows or not {"layer", "neuron"} <= set(rows[0]):
                have = list(rows[0]) if rows else []
                raise DataError(
                    f"CSV needs 'layer' and 'neuron' columns, has {have}",
                    file=path,
                    line=1,
                    hint=hint,
                )
            pairs = []
            for line, r in enumerate(rows, start=2):
                try:
                    pairs.append((_whole(r["layer"]), _whole(r["neuron"])))
                except ValueError:
                    raise NeuronIndexError(
                        f"not a whole-number (layer, neuron) pair: {r['layer']!r}, {r['neuron']!r}",
                        file=path,
                        line=line,
                        field="layer,neuron",
                        hint=hint,
                    ) from None
            return cls.from_pairs(pairs, name=name, meta={"source": str(path)})
        try:
            d = loads_json(text)
        except ValueError as err:
            raise DataError(
                f"not JSON ({err})", file=path, line=getattr(err, "lineno", None), hint=hint
            ) from None
        try:
            if isinstance(d, list):
                return cls.from_pairs(d, name=name, meta={"source": str(path)})
            d.setdefault("name", name)
            return cls.from_dict(d)
        except NeuronIndexError as err:
            err.file = str(path)
            raise
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(
                f"not a neuron set ({type(err).__name__}: {err})", file=path, hint=hint
            ) from None


def _whole(text: Any) -> int:
    """``"3"`` or ``"3.0"`` -> 3; ``"0.7"``, ``""`` or ``"x"`` -> ValueError."""
    value = float(text)
    if not math.isfinite(value) or value != round(value):
        raise ValueError(text)
    return int(value)


# --------------------------------------------------------------------------------------------
# The intervention context manager
# --------------------------------------------------------------------------------------------


class _LayerHook:
    """The hook for one layer: index tensor and factors built once; no per-neuron Python loop.

    ``scope="generated"`` tells prompt positions from generated ones per call, with per-hook
    state (each layer's hook fires once per forward pass):

    - the first call after entering (or after :meth:`HookedIntervention.reset`) is a prompt of
      ``P`` positions: nothing is changed;
    - a later call with 1 position, right after the prompt or after another 1-position call, is
      a KV-cache decoding step: every position is generated (rows that finished may have left
      the batch: only the position count matters);
    - a later call with exactly one more position than the previous call, when no KV-cache step
      was seen since the prompt, is a no-cache decoding step (the whole sequence recomputed):
      positions ``>= P`` are generated;
    - any other call starts a new prompt (a new batch in a batched generation loop).

    Two cases are ambiguous and would be misread: a prompt of a single token, and, without the
    KV cache, a new prompt exactly one token longer than the previous call. Call
    :meth:`HookedIntervention.reset` between prompts to make the boundary explicit (the sweep
    does before every ``generate`` call). Note the first generated token is predicted from the last *prompt*
    position, which ``"generated"`` leaves untouched.
    """

    def __init__(self, idx: Tensor, values: Tensor, mode: Mode, scope: Scope) -> None:
        self.idx = idx
        self.values = values  # float32 on the model's device: factors (scale) or targets (set)
        self.mode = mode
        self.scope = scope
        self._cast: dict[torch.dtype, Tensor] = {}
        self.prompt_len: int | None = None
        self.last_len = 0
        self.cached = False
        self.calls = 0

    def reset(self) -> None:
        self.prompt_len = None
        self.last_len = 0
        self.cached = False

    def _vals(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        v = self._cast.get(dtype)
        if v is None or v.device != device:
            v = self._cast[dtype] = self.values.to(device=device, dtype=dtype)
        return v

    def _new(self, x: Tensor) -> Tensor:
        v = self._vals(x.dtype, x.device)
        if self.mode == "scale":
            return x.index_select(-1, self.idx) * v
        return v.expand(*x.shape[:-1], v.shape[0]).contiguous()

    def __call__(self, act: Tensor, hook: Any = None) -> Tensor:
        self.calls += 1
        if self.idx.device != act.device:
            self.idx = self.idx.to(act.device)
        if self.scope == "all":
            # Out of place: a hook added before ours (e.g. a user's cache) may hold ``act``.
            return act.index_copy(-1, self.idx, self._new(act))
        n = act.shape[1]
        if (
            self.prompt_len is not None
            and n == 1
            and (self.cached or self.last_len == self.prompt_len)
        ):
            start = 0  # KV-cache decoding step
            self.cached = True
        elif self.prompt_len is not None and not self.cached and n == self.last_len + 1:
            start = self.prompt_len  # no-cache decoding step: whole sequence recomputed
        else:
            start = None  # a (new) prompt
            self.prompt_len = n
            self.cached = False
        self.last_len = n
        if start is None:
            return act
        out = act.clone()
        part = out[:, start:]
        part.index_copy_(-1, self.idx, self._new(act[:, start:]))
        return out


class HookedIntervention:
    """Scale (or set) chosen neurons' ``hook_post`` activations inside a ``with`` block.

    The hooks are TransformerLens forward hooks added with :func:`hneuron_lens.hooks.attach`
    on ``__enter__`` and removed (exactly those, also on exceptions) on ``__exit__``, so
    interventions nest with each other and inside a user's ``model.hooks(...)``. No weight is
    ever modified. Hook names come from :func:`~hneuron_lens.models.neuron_sites`; names and
    neuron indices are validated in the constructor.

    In ``"scale"`` mode a layer whose factors are all exactly 1 gets no hook, so ``alpha=1``
    leaves the model bit-for-bit unchanged.

    Args:
        model: a ``TransformerBridge``.
        neurons: anything :meth:`NeuronSet.coerce` accepts (e.g. ``probe.h_neurons``).
        alpha: scale factor for every neuron (the paper: 0 to 3).
        scope: ``"all"`` positions (the paper) or ``"generated"`` positions only (see
            :class:`_LayerHook` for how generated positions are detected).
        mode: ``"scale"`` multiplies by ``alpha``; ``"set"`` replaces the activation by ``value``.
        value: the activation value(s) for ``mode="set"``: a scalar or one per neuron.
        alphas: per-neuron factors (overrides ``alpha``), one per neuron in set order.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> with HookedIntervention(model, [(0, 1), (1, 5)], alpha=0.0) as iv:
        ...     _ = model(torch.tensor([[1, 2, 3]]))
        >>> iv.calls
        2
    """

    def __init__(
        self,
        model: Any,
        neurons: Any,
        alpha: float = 0.0,
        *,
        scope: Scope = "all",
        mode: Mode = "scale",
        value: float | Sequence[float] | None = None,
        alphas: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        from hneuron_lens.models import neuron_sites

        if scope not in ("all", "generated"):
            raise ValueError(f"scope must be 'all' or 'generated', got {scope!r}")
        if mode not in ("scale", "set"):
            raise ValueError(f"mode must be 'scale' or 'set', got {mode!r}")
        self.model = model
        self.neurons = NeuronSet.coerce(neurons)
        sites = neuron_sites(model)
        self.neurons.validate(NeuronLayout(tuple(s.d_mlp for s in sites)))
        k = len(self.neurons)
        if mode == "scale":
            if value is not None:
                raise ValueError("value is only used with mode='set'")
            vals = np.full(k, float(alpha)) if alphas is None else np.asarray(alphas, np.float64)
        else:
            if value is None:
                raise ValueError("mode='set' needs value (a scalar or one per neuron)")
            vals = np.broadcast_to(np.asarray(value, np.float64), (k,)).copy()
        if vals.shape != (k,):
            raise ValueError(f"need one factor per neuron ({k}), got shape {vals.shape}")
        if not np.all(np.isfinite(vals)):
            raise ValueError("alpha / alphas / value must be finite")
        self.alpha = float(alpha)
        self.scope: Scope = scope
        self.mode: Mode = mode
        self.values = vals
        device = _model_device(model)
        self._layer_hooks: list[tuple[str, _LayerHook]] = []
        for layer, pos in self.neurons.per_layer().items():
            v = vals[pos]
            if mode == "scale" and np.all(v == 1.0):
                continue  # exact identity: install nothing
            order = np.argsort(self.neurons.neurons[pos])
            idx = torch.as_tensor(self.neurons.neurons[pos][order], dtype=torch.long, device=device)
            fn = _LayerHook(
                idx, torch.as_tensor(v[order], dtype=torch.float32, device=device), mode, scope
            )
            self._layer_hooks.append((sites[layer].hook_post, fn))
        _hooks.validate_hook_names(model, [n for n, _ in self._layer_hooks])
        self._handles: list[tuple[Any, Any]] | None = None

    @property
    def hook_names(self) -> list[str]:
        """The hook points this intervention uses (empty when it is an exact identity)."""
        return [n for n, _ in self._layer_hooks]

    @property
    def calls(self) -> int:
        """Number of hook calls so far (all layers together)."""
        return sum(h.calls for _, h in self._layer_hooks)

    @property
    def active(self) -> bool:
        return self._handles is not None

    def reset(self) -> None:
        """Forget the prompt length (``scope="generated"``): the next call is a new prompt."""
        for _, h in self._layer_hooks:
            h.reset()

    def __enter__(self) -> HookedIntervention:
        if self._handles is not None:
            raise RuntimeError("this HookedIntervention is already active (not re-entrant)")
        self.reset()
        self._handles = _hooks.attach(self.model, self._layer_hooks)
        return self

    def __exit__(self, *exc: Any) -> None:
        handles, self._handles = self._handles, None
        if handles is not None:
            _hooks.detach(handles)

    def __repr__(self) -> str:
        what = f"alpha={self.alpha}" if self.mode == "scale" else "mode='set'"
        return (
            f"HookedIntervention({self.neurons.name!r}, {len(self.neurons)} neurons, {what}, "
            f"scope={self.scope!r}, {len(self._layer_hooks)} hooked layers)"
        )


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device(getattr(getattr(model, "cfg", None), "device", None) or "cpu")


# --------------------------------------------------------------------------------------------
# Alpha sweep
# --------------------------------------------------------------------------------------------


def _alpha_key(alpha: float) -> str:
    return f"{alpha:g}"


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, np.generic):
        return _nan_to_none(x.item())
    return x


@dataclass
class SweepReport:
    """Compliance of a task across ``alpha`` for one neuron set and its random controls.

    ``outcomes[set]`` is ``[n_items, n_alphas]`` with 1.0 (compliant), 0.0 (not) or NaN (no
    verdict: unparseable, or not applicable). Statistics (computed on construction):

    - per (set, alpha) rate with a Wilson 95% CI over items with a verdict;
    - ``deltas[set]["1->3"]`` and ``["0->3"]`` (in general baseline 1 -> largest alpha and
      smallest -> largest alpha): paired-bootstrap CI of the change in rate (pp), over items
      with a verdict at both alphas;
    - ``slopes[set]``: OLS slope of the rate per unit alpha in pp, item-bootstrap CI, over items
      with a verdict at every alpha;
    - ``spearman[set]``: Spearman rho of the rate against alpha;
    - ``h_minus_random``: the H set's slope minus the mean control slope (pp per unit alpha),
      on items with verdicts everywhere, with a paired sign-flip permutation p-value over items
      (each item's H slope minus its mean control slope is the paired difference; under the
      null the sign of each difference is exchangeable) and ``rank_p``: the fraction of
      {H, controls} whose slope is at least H's (the set-label permutation p, coarse with few
      controls: its minimum is 1 / (1 + n_controls)).
    """

    task: str
    """Task name."""
    metric: str
    """What a 1.0 outcome means (``"compliance"``, ``"accuracy"``, ``"flip_rate"``)."""
    alphas: list[float]
    """The scale factors, ascending."""
    h_name: str
    """Name of the neuron set under test."""
    control_names: list[str]
    """Names of the random control sets."""
    item_ids: list[str]
    """Item ids, the row order of every outcome matrix."""
    outcomes: dict[str, np.ndarray]
    """``set -> [n_items, n_alphas]`` outcomes (1, 0, NaN)."""
    parse_ok: dict[str, np.ndarray]
    """``set -> [n_items, n_alphas]`` bool: the response could be read."""
    hit_max: dict[str, list[float]]
    """``set -> per-alpha fraction of generations that hit max_new_tokens``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Task, generation and intervention settings, model name, neuron sets."""
    n_resamples: int = 1000
    """Bootstrap resamples / permutations for the statistics."""
    seed: int = 0
    """Seed for the statistics."""

    def __post_init__(self) -> None:
        self.outcomes = {k: np.asarray(v, dtype=np.float64) for k, v in self.outcomes.items()}
        self.parse_ok = {k: np.asarray(v, dtype=bool) for k, v in self.parse_ok.items()}
        shape = (len(self.item_ids), len(self.alphas))
        for name in self.set_names:
            if self.outcomes[name].shape != shape:
                raise ValueError(f"outcomes[{name!r}] shape {self.outcomes[name].shape} != {shape}")
        self._compute()

    @property
    def set_names(self) -> list[str]:
        return [self.h_name, *self.control_names]

    # -- statistics --------------------------------------------------------------------------

    def _compute(self) -> None:
        from hneuron_lens import stats

        a = np.asarray(self.alphas, dtype=np.float64)
        self.rates: dict[str, list[Any]] = {}
        self.deltas: dict[str, dict[str, Any]] = {}
        self.slopes: dict[str, Any] = {}
        self.spearman: dict[str, Any] = {}
        item_slopes: dict[str, np.ndarray] = {}
        for name in self.set_names:
            y = self.outcomes[name]
            valid = ~np.isnan(y)
            row = []
            for j in range(len(a)):
                n = int(valid[:, j].sum())
                k = int(np.nansum(y[:, j]))
                row.append(stats.wilson_ci(k, n) if n else None)
            self.rates[name] = row
            self.deltas[name] = {}
            pairs = [(1.0, a.max()), (a.min(), a.max())] if a.size >= 2 else []
            for lo, hi in dict.fromkeys((float(x), float(y)) for x, y in pairs if x < y):
                jl, jh = np.flatnonzero(np.isclose(a, lo)), np.flatnonzero(np.isclose(a, hi))
                if jl.size and jh.size:
                    both = valid[:, jl[0]] & valid[:, jh[0]]
                    if both.any():
                        iv = stats.paired_bootstrap_diff(
                            y[both, jl[0]],
                            y[both, jh[0]],
                            n_resamples=self.n_resamples,
                            seed=self.seed,
                        )
                        self.deltas[name][f"{lo:g}->{hi:g}"] = _scale_interval(iv, 100.0)
            complete = valid.all(axis=1)
            if len(a) >= 2 and complete.any():
                self.slopes[name] = _scale_interval(
                    stats.slope_ci(a, y[complete], n_resamples=self.n_resamples, seed=self.seed),
                    100.0,
                )
            else:
                self.slopes[name] = None
            r = [iv.estimate if iv is not None else np.nan for iv in row]
            ok = np.isfinite(r)
            if ok.sum() >= 3 and np.unique(np.asarray(r)[ok]).size > 1:
                self.spearman[name] = stats.spearman(a[ok], np.asarray(r)[ok])
            else:
                self.spearman[name] = None
            if len(a) >= 2:
                xc = a - a.mean()
                item_slopes[name] = (y - y.mean(axis=1, keepdims=True)) @ xc / float(xc @ xc)
        self.h_minus_random: dict[str, Any] | None = None
        if self.control_names and len(a) >= 2:
            complete = np.ones(len(self.item_ids), dtype=bool)
            for name in self.set_names:
                complete &= ~np.isnan(self.outcomes[name]).any(axis=1)
            if complete.any():
                s_h = item_slopes[self.h_name][complete]
                s_c = np.mean([item_slopes[c][complete] for c in self.control_names], axis=0)
                d = (s_h - s_c) * 100.0
                set_slopes = [float(item_slopes[s][complete].mean()) for s in self.set_names]
                rank_p = float(np.mean([s >= set_slopes[0] - 1e-12 for s in set_slopes]))
                self.h_minus_random = {
                    "diff_pp_per_alpha": float(d.mean()),
                    "ci": _scale_interval(
                        stats.bootstrap_ci(
                            np.mean, d / 100.0, n_resamples=self.n_resamples, seed=self.seed
                        ),
                        100.0,
                    ),
                    "p_value": stats.sign_flip_pvalue(
                        d, max(self.n_resamples, 1000) * 10, self.seed
                    ),
                    "p_method": "paired sign-flip permutation over items",
                    "rank_p": rank_p,
                    "n_items": int(complete.sum()),
                    "control_slopes_pp": [s * 100.0 for s in set_slopes[1:]],
                }

    # -- views -------------------------------------------------------------------------------

    def rate(self, set_name: str | None = None, alpha: float = 1.0) -> float:
        """The rate of ``set_name`` (default the H set) at ``alpha``."""
        j = int(np.flatnonzero(np.isclose(self.alphas, alpha))[0])
        iv = self.rates[set_name or self.h_name][j]
        return float("nan") if iv is None else iv.estimate

    def to_pandas(self) -> pd.DataFrame:
        """One row per (set, alpha): rate and Wilson CI, counts, parse failures, hit-max share."""
        import pandas as pd

        rows = []
        for name in self.set_names:
            y = self.outcomes[name]
            for j, alpha in enumerate(self.alphas):
                iv = self.rates[name][j]
                rows.append(
                    {
                        "set": name,
                        "kind": "h" if name == self.h_name else "control",
                        "alpha": alpha,
                        "n": int((~np.isnan(y[:, j])).sum()),
                        "n_compliant": int(np.nansum(y[:, j])),
                        "rate": np.nan if iv is None else iv.estimate,
                        "ci_low": np.nan if iv is None else iv.low,
                        "ci_high": np.nan if iv is None else iv.high,
                        "parse_fail_rate": float(1.0 - self.parse_ok[name][:, j].mean()),
                        "hit_max_rate": float(self.hit_max[name][j]),
                    }
                )
        return pd.DataFrame(rows)

    def swings(self, set_name: str | None = None) -> pd.DataFrame:
        """Items whose outcome changes across alpha: one row each, outcome per alpha."""
        import pandas as pd

        name = set_name or self.h_name
        y = self.outcomes[name]
        rows = []
        for i, qid in enumerate(self.item_ids):
            vals = y[i][~np.isnan(y[i])]
            if vals.size and vals.min() != vals.max():
                row: dict[str, Any] = {"set": name, "item": qid}
                row.update({f"alpha={_alpha_key(a)}": y[i, j] for j, a in enumerate(self.alphas)})
                first, last = vals[0], vals[-1]
                row["direction"] = "up" if last > first else "down" if last < first else "mixed"
                rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        def iv(x: Any) -> Any:
            return None if x is None else x.to_dict()

        d = {
            "task": self.task,
            "metric": self.metric,
            "alphas": list(self.alphas),
            "h_name": self.h_name,
            "control_names": list(self.control_names),
            "item_ids": list(self.item_ids),
            "outcomes": {k: v.tolist() for k, v in self.outcomes.items()},
            "parse_ok": {k: v.tolist() for k, v in self.parse_ok.items()},
            "hit_max": self.hit_max,
            "settings": self.settings,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "stats": {
                "rates": {k: [iv(x) for x in v] for k, v in self.rates.items()},
                "deltas_pp": {k: {p: iv(x) for p, x in v.items()} for k, v in self.deltas.items()},
                "slopes_pp_per_alpha": {k: iv(v) for k, v in self.slopes.items()},
                "spearman": {
                    k: (None if v is None else v.to_dict()) for k, v in self.spearman.items()
                },
                "h_minus_random": None
                if self.h_minus_random is None
                else {**self.h_minus_random, "ci": iv(self.h_minus_random["ci"])},
            },
        }
        return _nan_to_none(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepReport:
        """Rebuild from :meth:`to_dict` (statistics are recomputed from the outcomes)."""
        return cls(
            task=d["task"],
            metric=d["metric"],
            alphas=[float(a) for a in d["alphas"]],
            h_name=d["h_name"],
            control_names=list(d["control_names"]),
            item_ids=list(d["item_ids"]),
            outcomes={
                k: np.asarray(
                    [[np.nan if x is None else x for x in r] for r in v], dtype=np.float64
                ).reshape(len(d["item_ids"]), len(d["alphas"]))
                for k, v in d["outcomes"].items()
            },
            parse_ok={
                k: np.asarray(v, dtype=bool).reshape(len(d["item_ids"]), len(d["alphas"]))
                for k, v in d["parse_ok"].items()
            },
            hit_max={k: [float(x) for x in v] for k, v in d["hit_max"].items()},
            settings=dict(d.get("settings") or {}),
            n_resamples=int(d.get("n_resamples", 1000)),
            seed=int(d.get("seed", 0)),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomically)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __str__(self) -> str:
        lines = [
            f"SweepReport: task={self.task} ({self.metric}), {len(self.item_ids)} items, "
            f"alphas={[_alpha_key(a) for a in self.alphas]}, {len(self.control_names)} controls"
        ]
        for name in self.set_names:
            rates = " ".join(
                f"{_alpha_key(a)}:{'-' if r is None else f'{100 * r.estimate:.0f}%'}"
                for a, r in zip(self.alphas, self.rates[name], strict=True)
            )
            slope = self.slopes.get(name)
            sl = (
                "n/a"
                if slope is None
                else f"{slope.estimate:+.1f} [{slope.low:+.1f}, {slope.high:+.1f}]"
            )
            deltas = " ".join(f"{k}:{v.estimate:+.1f}pp" for k, v in self.deltas[name].items())
            lines.append(f"  {name:<14} {rates} | slope {sl} pp/alpha | {deltas}")
        if self.h_minus_random is not None:
            h = self.h_minus_random
            lines.append(
                f"  H - random slope: {h['diff_pp_per_alpha']:+.1f} pp/alpha {h['ci']}, "
                f"p={h['p_value']:.3g} (sign-flip, n={h['n_items']}), rank p={h['rank_p']:.2f}"
            )
        worst = max((max(v) for v in self.hit_max.values() if v), default=0.0)
        lines.append(f"  max share of generations hitting max_new_tokens: {100 * worst:.0f}%")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Notebook display: tables with CIs and a small figure (:mod:`hneuron_lens.viz.html`)."""
        from hneuron_lens.viz.html import sweep_report_html

        return sweep_report_html(self)


def _scale_interval(iv: Any, factor: float) -> Any:
    return dataclasses.replace(
        iv, estimate=iv.estimate * factor, low=iv.low * factor, high=iv.high * factor
    )


def _read_run(path: Path, header: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Records of a complete run file whose header matches, else ``None``."""
    if not path.is_file():
        return None
    try:
        lines = [loads_json(x) for x in path.read_text().splitlines() if x.strip()]
    except ValueError:
        logger.warning("%s is damaged: recomputing", path)
        return None
    if not lines or lines[0].get("type") != "header" or lines[-1].get("type") != "done":
        return None
    if lines[0].get("fingerprint") != header["fingerprint"]:
        logger.warning("%s was made with other settings: recomputing", path)
        return None
    return [x for x in lines if x.get("type") == "item"]


def _run_condition(
    model: Any,
    task: Task,
    neurons: NeuronSet | None,
    alpha: float,
    scope: Scope,
    gen_cfg: Any,
) -> list[dict[str, Any]]:
    """Generate every turn of every item under one intervention; return per-item records."""
    from hneuron_lens.generation import build_prompt_ids, generate

    tok = model.tokenizer
    histories: list[list[str]] = [[] for _ in task.items]
    turns: list[list[dict[str, Any]]] = [[] for _ in task.items]
    iv = (
        HookedIntervention(model, neurons, alpha=alpha, scope=scope)
        if neurons is not None
        else None
    )
    with iv if iv is not None else _null():
        for _turn in range(task.n_turns):
            prompts = [
                build_prompt_ids(tok, task.build_prompt(item, h))
                for item, h in zip(task.items, histories, strict=True)
            ]
            if iv is not None:
                iv.reset()
            gens = generate(model, prompts, gen_cfg)
            for g in gens:
                i = g.prompt_index
                histories[i].append(g.text)
                turns[i].append(
                    {
                        "prompt": tok.decode(list(g.prompt_ids)),
                        "output": g.text,
                        "finish_reason": g.finish_reason,
                        "n_new_tokens": len(g.output_ids),
                    }
                )
    return [
        {"type": "item", "index": i, "qid": task.item_id(item), "turns": turns[i]}
        for i, item in enumerate(task.items)
    ]


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def alpha_sweep(
    model: Any,
    neurons: Any,
    task: Task,
    alphas: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    controls: int = 5,
    control_kind: Literal["layer_matched", "random"] = "layer_matched",
    gen_cfg: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    scope: Scope = "all",
    n_resamples: int = 1000,
    warn_hit_max: float = 0.2,
    progress: bool = True,
) -> SweepReport:
    """Scale ``neurons`` (and ``controls`` random sets of the same size) by every alpha, generate
    the task's responses and score them.

    Every (set, alpha) run is written to ``out_dir/<set>/alpha=<a>.jsonl`` (a header line with
    the settings fingerprint, one line per item with its prompts and outputs, a ``done`` line),
    atomically; a rerun with the same ``out_dir`` and settings skips complete runs and re-scores
    their saved outputs (so a changed judge needs no generation). ``alpha=1`` is the unmodified
    model for every set: it is generated once (``out_dir/identity/``) and shared.

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        neurons: the neuron set under test (``probe.h_neurons``, a :class:`NeuronSet`...).
        task: a :class:`~hneuron_lens.tasks.Task`.
        alphas: scale factors (sorted ascending in the report).
        controls: number of random control sets.
        control_kind: ``"layer_matched"`` (same neurons per layer as ``neurons``) or
            ``"random"`` (anywhere); controls never include a neuron of ``neurons``.
        gen_cfg: a :class:`~hneuron_lens.generation.GenerationConfig`; default greedy, 64 new
            tokens, batch 16.
        out_dir: where runs are kept (``None``: nothing is written, nothing resumed).
        seed: seed of the control sets (control i uses ``seed + 1 + i``) and the statistics.
        scope: intervention scope (see :class:`HookedIntervention`).
        n_resamples: bootstrap resamples for the statistics.
        warn_hit_max: log a warning when a run's share of generations that hit
            ``max_new_tokens`` exceeds this.
        progress: tqdm bar over runs.

    Returns:
        The :class:`SweepReport` (also saved as ``out_dir/report.json``).
    """
    from tqdm.auto import tqdm

    from hneuron_lens.generation import GenerationConfig

    h = NeuronSet.coerce(neurons)
    if h.name == "neurons":
        h = NeuronSet.coerce(h, name="h_neurons")
    if control_kind not in ("layer_matched", "random"):
        raise ValueError(f"control_kind must be 'layer_matched' or 'random', got {control_kind!r}")
    if controls < 0:
        raise ValueError("controls must be >= 0")
    h.validate(model)
    alphas_sorted = sorted({float(a) for a in alphas})
    if not alphas_sorted or not all(math.isfinite(a) for a in alphas_sorted):
        raise ValueError(f"alphas must be finite and non-empty, got {alphas}")
    if gen_cfg is None:
        gen_cfg = GenerationConfig(
            max_new_tokens=64, do_sample=False, batch_size=16, progress=False
        )
    layout = layout_of(model)
    sets = [h] + [
        NeuronSet.random(
            layout,
            len(h),
            seed=seed + 1 + i,
            layer_matched_to=h if control_kind == "layer_matched" else None,
            exclude=h,
            name=f"control-{i}",
        )
        for i in range(controls)
    ]
    if h.name in {s.name for s in sets[1:]} or h.name == "identity":
        raise ValueError(f"neuron set name {h.name!r} clashes with a control name")
    gen_settings = {k: v for k, v in gen_cfg.to_dict().items() if k not in ("progress",)}
    model_name = str(getattr(model.cfg, "model_name", "unknown"))
    out = claim_output_dir(out_dir, "sweep") if out_dir is not None else None
    if out is not None:
        for s in sets:
            s.save(safe_child(out, s.name, what="neuron set name") / "neurons.json")

    outcomes = {s.name: np.full((len(task), len(alphas_sorted)), np.nan) for s in sets}
    parse_ok = {s.name: np.zeros((len(task), len(alphas_sorted)), dtype=bool) for s in sets}
    hit_max = {s.name: [0.0] * len(alphas_sorted) for s in sets}
    identity_records: list[dict[str, Any]] | None = None
    runs = [(s, j, a) for s in sets for j, a in enumerate(alphas_sorted)]
    for s, j, alpha in tqdm(runs, desc=f"alpha_sweep {task.name}", disable=not progress):
        identity = alpha == 1.0
        fp_src = {
            "task": task.fingerprint(),
            "neurons": None if identity else s.fingerprint(),
            "alpha": alpha,
            "scope": None if identity else scope,
            "generation": gen_settings,
            "model": model_name,
        }
        header = {
            "type": "header",
            "fingerprint": hashlib.sha256(json.dumps(fp_src, sort_keys=True).encode()).hexdigest()[
                :16
            ],
            "set": "identity" if identity else s.name,
            "alpha": alpha,
            "scope": scope,
            "task": task.describe(),
            "generation": gen_settings,
            "model": model_name,
        }
        path = (
            None
            if out is None
            else safe_child(
                out, "identity" if identity else s.name, f"alpha={_alpha_key(alpha)}.jsonl"
            )
        )
        records = identity_records if identity else None
        if records is None and path is not None:
            records = _read_run(path, header)
            if records is not None:
                logger.info("resuming: %s is complete", path)
        if records is None:
            records = _run_condition(model, task, None if identity else s, alpha, scope, gen_cfg)
            if path is not None:
                body = [header, *records, {"type": "done", "n_items": len(records)}]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in body))
        if identity:
            identity_records = records
        n_hit = 0
        n_gen = 0
        for rec in records:
            i = int(rec["index"])
            texts = [t["output"] for t in rec["turns"]]
            res = task.score(task.items[i], texts if task.n_turns > 1 else texts[0])
            outcomes[s.name][i, j] = np.nan if res.compliant is None else float(res.compliant)
            parse_ok[s.name][i, j] = res.parse_ok
            n_hit += sum(t["finish_reason"] == "length" for t in rec["turns"])
            n_gen += len(rec["turns"])
        hit_max[s.name][j] = n_hit / n_gen if n_gen else 0.0
        if hit_max[s.name][j] > warn_hit_max and (s is h or not identity):
            logger.warning(
                "%s alpha=%g: %.0f%% of generations hit max_new_tokens=%d (threshold %.0f%%)",
                s.name,
                alpha,
                100 * hit_max[s.name][j],
                gen_cfg.max_new_tokens,
                100 * warn_hit_max,
            )
    report = SweepReport(
        task=task.name,
        metric=task.metric,
        alphas=alphas_sorted,
        h_name=h.name,
        control_names=[s.name for s in sets[1:]],
        item_ids=[task.item_id(i) for i in task.items],
        outcomes=outcomes,
        parse_ok=parse_ok,
        hit_max=hit_max,
        settings={
            "task": task.describe(),
            "generation": gen_settings,
            "scope": scope,
            "control_kind": control_kind,
            "model": model_name,
            "neuron_sets": {s.name: s.to_dict() for s in sets},
        },
        n_resamples=n_resamples,
        seed=seed,
    )
    if out is not None:
        report.save(out / "report.json")
    return report


def suppression_accuracy(
    model: Any,
    neurons: Any,
    items: Sequence[Any],
    gen_cfg: Any = None,
    alpha: float = 0.0,
    suffix: str | None = None,
) -> float:
    """QA accuracy (rule judge) with ``neurons`` scaled by ``alpha`` (default 0: suppressed).

    The probe uses it to pick C: a good neuron set predicts hallucination *and* leaves the
    model's knowledge intact when suppressed.

    Args:
        model: a ``TransformerBridge``.
        neurons: anything :meth:`NeuronSet.coerce` accepts.
        items: :class:`~hneuron_lens.data.records.QAItem` with aliases.
        gen_cfg: default greedy, 32 new tokens, batch 16.
        alpha: the scale factor.
        suffix: answer instruction (default the paper's "answer only" instruction).

    Returns:
        The fraction of items answered correctly.
    """
    from hneuron_lens.generation import GenerationConfig
    from hneuron_lens.tasks.qa import DEFAULT_QA_SUFFIX, QATask

    task = QATask(items, suffix=DEFAULT_QA_SUFFIX if suffix is None else suffix)
    if gen_cfg is None:
        gen_cfg = GenerationConfig(
            max_new_tokens=32, do_sample=False, batch_size=16, progress=False
        )
    records = _run_condition(model, task, NeuronSet.coerce(neurons), alpha, "all", gen_cfg)
    scores = [
        task.score(task.items[r["index"]], r["turns"][0]["output"]).compliant for r in records
    ]
    return float(np.mean([bool(c) for c in scores]))
