"""Stability selection: would this neuron come back on other data?

Meinshausen & Buhlmann (2010, "Stability selection", JRSS-B 72(4)): refit the sparse probe on
many random halves of the training samples and record, for every neuron, the fraction of fits
that give it a positive weight (its *selection frequency*). Neurons selected by chance on one
sample rarely survive many halves; the planted / real ones do.

The half is drawn within each label (so every fit keeps the class balance), by *sample*: a
sample's answer and "other" vectors stay together, as in :func:`hneuron_lens.probe.training_matrix`.
The fits run in parallel with joblib; a store split is memory-mapped, so workers read it without
copies. With ``solver="torch"`` a fit reads its half in place, row block by row block (no
training matrix); the other solvers build the half's matrix in memory.

Error control (Meinshausen & Buhlmann, Theorem 1): with ``q`` the mean number of neurons a fit
selects, ``p`` the number of neurons and a threshold ``pi_thr`` in (0.5, 1], the expected number
of falsely selected neurons in the stable set ``{j : frequency_j >= pi_thr}`` is at most

    E[V] <= q^2 / ((2 pi_thr - 1) p)

under their exchangeability assumption (noise neurons equally likely to be selected) and a
selection procedure no worse than random guessing. It is a bound, not an estimate; here it is
reported with the fixed C of the fits (the theorem's "Lambda" is that single C).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .features import FeatureSplit, NeuronLayout
from .io import atomic_write_text

__all__ = ["StabilityResult", "stability_selection", "error_bound"]


def error_bound(q: float, p: int, threshold: float) -> float:
    """Meinshausen-Buhlmann bound on E[false selections]: ``q^2 / ((2 threshold - 1) p)``.

    Args:
        q: Mean number of neurons one subsample fit selects.
        p: Number of neurons.
        threshold: Frequency threshold, in (0.5, 1].

    Raises:
        ValueError: ``threshold`` is not in (0.5, 1] or ``p < 1``.
    """
    if not 0.5 < threshold <= 1.0:
        raise ValueError(f"the bound needs a threshold in (0.5, 1], got {threshold}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    return float(q * q / ((2.0 * threshold - 1.0) * p))


@dataclass
class StabilityResult:
    """Per-neuron selection frequencies over subsample refits."""

    frequency: np.ndarray
    """Fraction of fits giving each neuron a positive weight, float64 ``[n_features]``."""
    n_selected: np.ndarray
    """Positive-weight neurons in each fit, int64 ``[n_subsamples]``."""
    layout: NeuronLayout
    """The neuron layout."""
    C: float
    """The C of every subsample fit: the probe's C / ``fraction`` (the same penalty per sample
    as the full fit)."""
    fraction: float
    """Fraction of each label's samples in a subsample."""
    threshold: float
    """Frequency threshold of the stable set."""
    params: dict[str, Any]
    """The probe's hyper-parameters."""

    @property
    def n_subsamples(self) -> int:
        return int(self.n_selected.size)

    @property
    def q(self) -> float:
        """Mean number of neurons selected per fit."""
        return float(self.n_selected.mean())

    @property
    def stable(self) -> np.ndarray:
        """Flat indices with ``frequency >= threshold``, most frequent first, int64."""
        flat = np.flatnonzero(self.frequency >= self.threshold)
        return flat[np.argsort(-self.frequency[flat], kind="stable")]

    def expected_false(self, threshold: float | None = None) -> float:
        """The error-control bound on E[false selections] at ``threshold`` (default: own)."""
        return error_bound(self.q, self.layout.n_features, threshold or self.threshold)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able dict (kept in a probe's metadata by ``use_stability``)."""
        return {
            "C": self.C,
            "n_subsamples": self.n_subsamples,
            "fraction": self.fraction,
            "threshold": self.threshold,
            "q": self.q,
            "n_stable": int(self.stable.size),
            "expected_false_bound": self.expected_false() if self.threshold > 0.5 else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "layout": self.layout.to_dict(),
            "params": self.params,
            "n_selected": self.n_selected.tolist(),
            "frequency": self.frequency.tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), default=str))

    def __str__(self) -> str:
        bound = self.summary()["expected_false_bound"]
        b = "" if bound is None else f"; E[false] <= {bound:.2f} (Meinshausen-Buhlmann)"
        return (
            f"stability selection: {self.n_subsamples} fits on {self.fraction:.0%} subsamples at "
            f"C={self.C:.4g}, {self.q:.1f} neurons per fit; {self.stable.size} neurons with "
            f"frequency >= {self.threshold:.2f}{b}"
        )


def _fit_one(split: FeatureSplit, rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Flat indices given a positive weight by one fit on ``rows`` of ``split``."""
    from .probe import SparseProbe, _training_input

    probe = SparseProbe(**params)
    xm, ym = _training_input(probe, split, rows)  # the torch solver reads the rows in place
    probe._fit_matrix(xm, ym, split.layout, copy=False)
    return np.flatnonzero(probe.coef_ > 0)


def stability_selection(
    split: FeatureSplit,
    probe: Any,
    *,
    n_subsamples: int = 100,
    fraction: float = 0.5,
    threshold: float = 0.6,
    n_jobs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> StabilityResult:
    """Selection frequency of every neuron over refits on random halves of ``split``.

    Args:
        split: The training split (the one ``probe`` was fitted on).
        probe: A :class:`~hneuron_lens.probe.SparseProbe` (fitted or not); its hyper-parameters
            are used for every refit (e.g. ``probe_path(...).probe``), with ``C / fraction`` so
            that a fit on a fraction of the rows has the full fit's penalty per sample.
        n_subsamples: Number of refits (Meinshausen & Buhlmann use 100).
        fraction: Fraction of each label's samples per refit (0.5 in the paper).
        threshold: Frequency at or above which a neuron is "stable" (0.6-0.9 is usual; the
            error bound needs > 0.5).
        n_jobs: joblib workers (``None`` = 1, ``-1`` = all cores).
        seed: Seed of the subsamples.
        progress: Show a tqdm bar.

    Returns:
        A :class:`StabilityResult`; attach it to the probe with ``probe.use_stability(result)``
        to show frequencies beside the weights (and ``select=True`` to define the H-Neurons by
        frequency).

    Example:
        >>> from hneuron_lens.recovery import PlantedConfig, planted_splits
        >>> from hneuron_lens.probe import SparseProbe
        >>> data = planted_splits(PlantedConfig(d_mlp=50, n_per_class=100, seed=0))
        >>> res = stability_selection(data.train, SparseProbe(C=0.05), n_subsamples=10,
        ...                           progress=False)
        >>> res.frequency.shape
        (150,)
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    if n_subsamples < 1:
        raise ValueError(f"n_subsamples must be >= 1, got {n_subsamples}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    params = dict(probe.get_params())
    # liblinear's objective is ||w||_1 + C * (sum of row losses): a half-size sample at the same
    # C is regularised twice as hard. C / fraction keeps the penalty per sample (the lasso's
    # lambda = 1 / (C n)) equal to the full fit's.
    params["C"] = float(params["C"]) / fraction
    labels = np.asarray(split.labels)
    groups = [np.flatnonzero(labels == v) for v in np.unique(labels)]
    if len(groups) != 2:
        raise ValueError("stability selection needs both classes in the split")
    rng = np.random.default_rng(seed)
    subsets = [
        np.sort(
            np.concatenate(
                [
                    rng.choice(g, size=max(1, int(round(fraction * g.size))), replace=False)
                    for g in groups
                ]
            )
        )
        for _ in range(n_subsamples)
    ]
    jobs = (delayed(_fit_one)(split, rows, params) for rows in subsets)
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    counts = np.zeros(split.layout.n_features, dtype=np.int64)
    n_selected = np.zeros(n_subsamples, dtype=np.int64)
    bar = tqdm(results, total=n_subsamples, desc="stability selection", disable=not progress)
    for i, selected in enumerate(bar):
        counts[selected] += 1
        n_selected[i] = selected.size
    return StabilityResult(
        frequency=counts / n_subsamples,
        n_selected=n_selected,
        layout=split.layout,
        C=float(params["C"]),
        fraction=float(fraction),
        threshold=float(threshold),
        params=params,
    )
