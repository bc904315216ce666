"""Support recovery: planted CETT-like data and how well a selection finds the planted neurons.

A probe can predict hallucination well and still report the wrong neurons (a dense fit spreads
weight over correlated or noise features). This module makes data where the true H-Neurons are
known and scores a selected set against them:

- :func:`planted_splits`: synthetic CETT-like features (non-negative, heavy-tailed log-normal,
  a per-layer and per-neuron level, the "other" region averaged over more tokens) with
  ``n_planted`` neurons raised in hallucinated answer vectors by ``effect`` standard deviations
  of the log value. ``mean`` sets the overall feature scale (real CETT means range from ~1e-1
  in small models to ~1e-3 in large ones).
- :func:`plant_into`: the semi-synthetic version: a real store split's features, with labels
  redrawn at random and a planted effect multiplied into chosen neurons of the "hallucinated"
  answer vectors, so every other neuron keeps its real distribution and correlations.
- :func:`recovery_scores`: precision / recall / F1 of a selected set against the planted set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .features import FeatureSplit, NeuronLayout

__all__ = ["PlantedConfig", "Planted", "planted_splits", "plant_into", "recovery_scores"]


@dataclass
class PlantedConfig:
    """Synthetic CETT-like data with planted H-Neurons."""

    n_layers: int = 3
    """Layers."""
    d_mlp: int = 500
    """Neurons per layer."""
    n_per_class: int = 400
    """Training samples per class (validation and test get ``n_eval_per_class``)."""
    n_eval_per_class: int = 200
    """Validation and test samples per class."""
    n_planted: int = 5
    """Planted H-Neurons (spread over the layers)."""
    effect: float = 1.0
    """Shift of a planted neuron's log value in hallucinated answers, in log-SD units."""
    mean: float = 2e-2
    """Mean feature value over all neurons (the scale of CETT)."""
    sigma: float = 0.8
    """SD of a neuron's log value across samples (heavy right tail)."""
    other_sigma: float = 0.4
    """SD of the log value of "other" vectors (averaged over more tokens: less spread)."""
    seed: int = 0
    """Seed of the draw."""

    def __post_init__(self) -> None:
        if min(self.n_layers, self.d_mlp, self.n_per_class, self.n_eval_per_class) < 1:
            raise ValueError("n_layers, d_mlp, n_per_class and n_eval_per_class must be >= 1")
        if not 0 <= self.n_planted <= self.n_layers * self.d_mlp:
            raise ValueError(f"n_planted must be in [0, {self.n_layers * self.d_mlp}]")
        if not (self.mean > 0 and self.sigma > 0 and self.other_sigma > 0):
            raise ValueError("mean, sigma and other_sigma must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Planted:
    """Train / validation / test splits with the planted neurons' flat indices."""

    train: FeatureSplit
    """Training split."""
    validation: FeatureSplit
    """Validation split (selection of C)."""
    test: FeatureSplit
    """Test split (held-out AUROC)."""
    planted: np.ndarray
    """Flat indices of the planted neurons, int64 ``[n_planted]``."""


def planted_splits(cfg: PlantedConfig) -> Planted:
    """Draw train / validation / test splits of planted CETT-like data (float32)."""
    rng = np.random.default_rng(cfg.seed)
    layout = NeuronLayout.uniform(cfg.n_layers, cfg.d_mlp)
    p = layout.n_features
    layer_level = np.repeat(rng.normal(0.0, 0.5, cfg.n_layers), cfg.d_mlp)
    neuron_level = layer_level + rng.normal(0.0, 0.7, p)  # log-scale level of each neuron
    planted = np.sort(rng.choice(p, size=cfg.n_planted, replace=False)).astype(np.int64)
    # exp(level + sigma * z) has mean exp(level + sigma^2 / 2): rescale to the requested mean
    raw_mean = float(np.mean(np.exp(neuron_level + cfg.sigma**2 / 2)))
    log_scale = np.log(cfg.mean / raw_mean)

    def split(n_per_class: int, tag: str) -> FeatureSplit:
        labels = np.repeat(np.array([0, 1], dtype=np.int8), n_per_class)
        n = labels.size
        z = rng.standard_normal((n, p), dtype=np.float32)
        log_answer = (neuron_level + log_scale).astype(np.float32) + cfg.sigma * z
        log_answer[np.ix_(labels == 1, planted)] += cfg.effect * cfg.sigma
        z_other = rng.standard_normal((n, p), dtype=np.float32)
        log_other = (neuron_level + log_scale + (cfg.sigma**2 - cfg.other_sigma**2) / 2).astype(
            np.float32
        ) + cfg.other_sigma * z_other  # same mean as a faithful answer vector
        return FeatureSplit(
            features={"answer": np.exp(log_answer), "other": np.exp(log_other)},
            labels=labels,
            ids=[f"{tag}{cfg.seed}-{i}" for i in range(n)],
            layout=layout,
        )

    return Planted(
        split(cfg.n_per_class, "tr"),
        split(cfg.n_eval_per_class, "va"),
        split(cfg.n_eval_per_class, "te"),
        planted,
    )


def plant_into(
    split: FeatureSplit,
    n_planted: int,
    effect: float,
    seed: int = 0,
    planted: np.ndarray | None = None,
) -> tuple[FeatureSplit, np.ndarray]:
    """A semi-synthetic split: real features, random labels, a planted multiplicative effect.

    Labels are redrawn (half 1, half 0, at random), so any real association is broken; then the
    answer vectors of the new positives are multiplied by ``exp(effect * sd)`` in ``n_planted``
    random neurons, where ``sd`` is the SD of that neuron's log CETT (zeros floored at its 1st
    percentile). Returns the new split (in memory, float32) and the planted flat indices.
    Pass the training split's ``planted`` when planting into its validation and test splits.
    """
    rng = np.random.default_rng(seed)
    n = len(split)
    labels = np.zeros(n, dtype=np.int8)
    labels[rng.permutation(n)[: n // 2]] = 1
    answer = np.array(split.region("answer"), dtype=np.float32)
    other = np.array(split.region("other"), dtype=np.float32)
    if planted is None:  # not a neuron that is mostly silent
        active = np.flatnonzero((answer > 0).mean(axis=0) > 0.5)
        pool = active if active.size >= n_planted else np.arange(answer.shape[1])
        planted = np.sort(rng.choice(pool, size=n_planted, replace=False)).astype(np.int64)
    planted = np.asarray(planted, dtype=np.int64)
    for j in planted:
        col = answer[:, j]
        floor = max(float(np.percentile(col[col > 0], 1)) if (col > 0).any() else 1e-6, 1e-12)
        sd = float(np.std(np.log(np.maximum(col, floor))))
        answer[labels == 1, j] *= np.float32(np.exp(effect * max(sd, 1e-3)))
    out = FeatureSplit(
        features={"answer": answer, "other": other},
        labels=labels,
        ids=list(split.ids),
        layout=split.layout,
    )
    return out, planted


def recovery_scores(selected: Any, planted: Any) -> dict[str, float]:
    """Precision, recall and F1 of a selected neuron set against the planted set.

    Args:
        selected: Flat indices of the selected neurons (any iterable of ints).
        planted: Flat indices of the planted neurons.

    Returns:
        ``{"n_selected", "precision", "recall", "f1"}``; precision is 0 for an empty selection.
    """
    sel = {int(i) for i in selected}
    true = {int(i) for i in planted}
    tp = len(sel & true)
    precision = tp / len(sel) if sel else 0.0
    recall = tp / len(true) if true else 1.0
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"n_selected": float(len(sel)), "precision": precision, "recall": recall, "f1": f1}
