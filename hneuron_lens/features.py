"""Feature matrices for the probe: per-sample CETT vectors flattened over (layer, neuron).

A :class:`NeuronLayout` maps a flat feature index to ``(layer, neuron)`` and back; it allows a
different ``d_mlp`` per layer. A :class:`FeatureSplit` holds one split's matrices (one per region,
``[n_samples, n_features]``, possibly memory-mapped), labels and sample ids. The activation store
produces them; the probe consumes them; tests build them from arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class NeuronLayout:
    """How (layer, neuron) pairs are laid out in a flat feature vector (layer-major)."""

    d_mlp: tuple[int, ...]
    """Neurons per layer."""

    def __post_init__(self) -> None:
        if not self.d_mlp or any(int(d) <= 0 for d in self.d_mlp):
            raise ValueError(f"NeuronLayout needs positive d_mlp per layer, got {self.d_mlp}")

    @classmethod
    def uniform(cls, n_layers: int, d_mlp: int) -> NeuronLayout:
        return cls(tuple([int(d_mlp)] * int(n_layers)))

    @property
    def n_layers(self) -> int:
        return len(self.d_mlp)

    @property
    def n_features(self) -> int:
        return int(sum(self.d_mlp))

    @property
    def max_d_mlp(self) -> int:
        return int(max(self.d_mlp))

    @property
    def offsets(self) -> np.ndarray:
        """``offsets[L]`` = flat index of (L, 0); length n_layers + 1."""
        return np.concatenate([[0], np.cumsum(self.d_mlp)]).astype(np.int64)

    def flat_index(self, layer: int | np.ndarray, neuron: int | np.ndarray) -> Any:
        layer_arr = np.asarray(layer)
        neuron_arr = np.asarray(neuron)
        if np.any(neuron_arr >= np.asarray(self.d_mlp)[layer_arr]) or np.any(neuron_arr < 0):
            raise IndexError("neuron index out of range for its layer")
        out = self.offsets[layer_arr] + neuron_arr
        return int(out) if out.ndim == 0 else out

    def unflatten_index(self, flat: int | np.ndarray) -> tuple[Any, Any]:
        """Flat index (or array of them) -> ``(layer, neuron)``."""
        flat_arr = np.asarray(flat)
        if np.any(flat_arr < 0) or np.any(flat_arr >= self.n_features):
            raise IndexError(f"flat index out of range [0, {self.n_features})")
        layer = np.searchsorted(self.offsets, flat_arr, side="right") - 1
        neuron = flat_arr - self.offsets[layer]
        if layer.ndim == 0:
            return int(layer), int(neuron)
        return layer, neuron

    def flatten(
        self, x: Float[Tensor, "batch n_layers max_d_mlp"]
    ) -> Float[Tensor, "batch n_features"]:
        """Drop per-layer padding and concatenate layers: ``[B, L, max_d] -> [B, n_features]``."""
        if x.shape[1] != self.n_layers:
            raise ValueError(f"expected {self.n_layers} layers, got shape {tuple(x.shape)}")
        if len(set(self.d_mlp)) == 1:
            return x[:, :, : self.d_mlp[0]].reshape(x.shape[0], -1)
        return torch.cat([x[:, layer, :d] for layer, d in enumerate(self.d_mlp)], dim=1)

    def to_dict(self) -> dict[str, Any]:
        return {"d_mlp": list(self.d_mlp)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeuronLayout:
        return cls(tuple(int(v) for v in d["d_mlp"]))


@dataclass
class FeatureSplit:
    """One split's CETT features: ``features[region]`` is ``[n_samples, n_features]``.

    Arrays may be numpy memmaps (read-only) from an :class:`~hneuron_lens.store.ActivationStore`.
    ``labels[i]`` is 1 for hallucinated, 0 for faithful; ``ids[i]`` is the sample id.
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]
    layout: NeuronLayout
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.labels.shape != (n,):
            raise ValueError(f"labels shape {self.labels.shape} != ({n},)")
        for region, x in self.features.items():
            if x.shape != (n, self.layout.n_features):
                raise ValueError(
                    f"region {region!r}: shape {x.shape} != ({n}, {self.layout.n_features})"
                )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def regions(self) -> list[str]:
        return sorted(self.features)

    def region(self, name: str) -> np.ndarray:
        if name not in self.features:
            raise KeyError(f"region {name!r} not in this split; have {self.regions}")
        return self.features[name]

    @classmethod
    def from_arrays(
        cls,
        features: dict[str, np.ndarray],
        labels: np.ndarray,
        ids: list[str] | None = None,
        layout: NeuronLayout | None = None,
    ) -> FeatureSplit:
        """Build a split from in-memory arrays (``[N, n_features]`` or ``[N, L, d_mlp]``)."""
        feats: dict[str, np.ndarray] = {}
        for region, x in features.items():
            x = np.asarray(x)
            if x.ndim == 3:
                layout = layout or NeuronLayout.uniform(x.shape[1], x.shape[2])
                x = x.reshape(x.shape[0], -1)
            feats[region] = x
        first = next(iter(feats.values()))
        layout = layout or NeuronLayout((first.shape[1],))
        labels = np.asarray(labels).astype(np.int8)
        ids = ids if ids is not None else [str(i) for i in range(len(labels))]
        return cls(features=feats, labels=labels, ids=list(ids), layout=layout)
