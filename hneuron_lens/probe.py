"""Sparse logistic probe over CETT features: which neurons predict hallucination.

Method (Gao et al. 2025, "H-Neurons", arXiv:2512.01797, section 3): each sample contributes a
CETT vector averaged over its answer tokens ("answer") and one averaged over every other token
of the sequence ("other": the prompt, the chat template and the response outside the answer
span; :func:`hneuron_lens.cett.region_positions`, as in the authors' released code). An
L1-regularised logistic regression is trained in the **3-vs-1** setup:

- label 1: the "answer" vectors of hallucinated samples;
- label 0: the "answer" vectors of faithful samples **plus** the "other" vectors of *all* samples.

(**1-vs-1** uses the "answer" vectors only.) The neurons with a positive weight are the
H-Neurons. Evaluation always scores "answer" vectors.

Defaults that differ from the paper's code, chosen so that the probe reports the right neurons
and not only a good classifier (README, "Finding the right neurons";
``benchmarks/bench_recovery.py``): features are standardised per neuron on the training split
(the L1 penalty is then scale-free), classes are weighted to undo the 3:1 imbalance of 3-vs-1
training, the intercept is effectively unpenalised, and ``C`` is picked on an automatic grid
(:func:`probe_path`) by the one-standard-error rule on held-out AUROC. The paper's selection by
held-out accuracy, optionally plus the model's QA accuracy with the selected neurons suppressed
(a function supplied by :mod:`hneuron_lens.intervene`), is kept as ``rule="held-out"`` /
``"held-out+suppression"``. Per-neuron selection frequencies come from
:mod:`hneuron_lens.stability`.

:class:`SparseProbe` follows the scikit-learn estimator contract, so ``sklearn.base.clone`` and
grid tools work. The penalty is passed to scikit-learn as ``l1_ratio`` (1.0 = L1, 0.0 = L2):
``penalty=`` on ``LogisticRegression`` is deprecated from scikit-learn 1.8.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from hneuron_lens.io import atomic_write_text, library_version, loads_json

from .features import FeatureSplit, NeuronLayout
from .stats import (
    Interval,
    auroc,
    average_precision,
    bootstrap_cis,
    bootstrap_indices,
    cohens_d,
    wilson_ci,
)

if TYPE_CHECKING:  # the solvers import torch; only the torch solver needs them
    from hneuron_lens.solvers import RowBlocks

__all__ = [
    "NeuronTable",
    "SparseProbe",
    "ProbeReport",
    "RandomBaseline",
    "NeuronStatsTable",
    "PathPoint",
    "ProbePath",
    "probe_path",
    "RULES",
    "DEFAULT_RULE",
    "l1_min_C",
    "balanced_log_loss",
    "training_matrix",
    "training_parts",
    "youden_threshold",
    "jaccard",
]

logger = logging.getLogger(__name__)

SAVE_FORMAT_VERSION = 1
_CHUNK_ROWS = 2048
Mode = Literal["3-vs-1", "1-vs-1"]


# --------------------------------------------------------------------------------------------
# Neuron tables
# --------------------------------------------------------------------------------------------


@dataclass
class NeuronTable:
    """A set of neurons with probe weights, sorted by weight (descending; by |weight| for
    negative tables). Iterating yields ``(layer, neuron)`` int pairs."""

    layer: np.ndarray
    """Layer index of each neuron, int64 ``[k]``."""
    neuron: np.ndarray
    """Neuron index within its layer, int64 ``[k]``."""
    weight: np.ndarray
    """Probe weight, float64 ``[k]`` (see ``units``)."""
    flat_index: np.ndarray
    """Index into the flat feature vector, int64 ``[k]``."""
    layout: NeuronLayout
    """The model's layout (per-layer ``d_mlp``)."""
    sign: str = "positive"
    """``"positive"`` (H-Neurons) or ``"negative"``."""
    frequency: np.ndarray | None = None
    """Stability-selection frequency of each neuron in [0, 1], float64 ``[k]``, or ``None``
    (see :func:`hneuron_lens.stability.stability_selection`)."""
    units: str = "raw"
    """Units of ``weight``: ``"standardized"`` (log-odds per SD of the neuron's CETT on the
    training split, the probe's default) or ``"raw"`` (log-odds per unit of CETT)."""

    def __post_init__(self) -> None:
        self.layer = np.asarray(self.layer, dtype=np.int64).reshape(-1)
        self.neuron = np.asarray(self.neuron, dtype=np.int64).reshape(-1)
        self.weight = np.asarray(self.weight, dtype=np.float64).reshape(-1)
        self.flat_index = np.asarray(self.flat_index, dtype=np.int64).reshape(-1)
        k = self.layer.size
        if not (self.neuron.size == self.weight.size == self.flat_index.size == k):
            raise ValueError("NeuronTable columns must have equal length")
        if self.sign not in ("positive", "negative"):
            raise ValueError(f"sign must be 'positive' or 'negative', got {self.sign!r}")
        if self.frequency is not None:
            self.frequency = np.asarray(self.frequency, dtype=np.float64).reshape(-1)
            if self.frequency.size != k:
                raise ValueError("NeuronTable frequency must have one value per neuron")

    @classmethod
    def from_coef(
        cls,
        coef: np.ndarray,
        layout: NeuronLayout,
        sign: str = "positive",
        *,
        frequency: np.ndarray | None = None,
        units: str = "raw",
    ) -> NeuronTable:
        """Neurons with ``coef > 0`` (or ``< 0``), strongest first; ``frequency`` (optional,
        ``[n_features]``) is the stability-selection frequency of every neuron."""
        coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        if coef.size != layout.n_features:
            raise ValueError(
                f"coef has {coef.size} entries, layout has {layout.n_features} features"
            )
        flat = np.flatnonzero(coef > 0) if sign == "positive" else np.flatnonzero(coef < 0)
        order = np.argsort(-np.abs(coef[flat]), kind="stable")
        flat = flat[order]
        layer, neuron = layout.unflatten_index(flat) if flat.size else (np.zeros(0), np.zeros(0))
        freq = None if frequency is None else np.asarray(frequency, dtype=np.float64)[flat]
        return cls(layer, neuron, coef[flat], flat, layout, sign, freq, units)

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[int, int]],
        layout: NeuronLayout,
        weight: Sequence[float] | None = None,
    ) -> NeuronTable:
        """Build a table from ``(layer, neuron)`` pairs (weights default to 1)."""
        arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        flat = layout.flat_index(arr[:, 0], arr[:, 1]) if len(arr) else np.zeros(0, np.int64)
        w = np.ones(len(arr)) if weight is None else np.asarray(weight, dtype=np.float64)
        return cls(arr[:, 0], arr[:, 1], w, flat, layout)

    def __len__(self) -> int:
        return int(self.layer.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((int(a), int(b)) for a, b in zip(self.layer, self.neuron, strict=True))

    def _take(self, idx: np.ndarray) -> NeuronTable:
        return NeuronTable(
            self.layer[idx],
            self.neuron[idx],
            self.weight[idx],
            self.flat_index[idx],
            self.layout,
            self.sign,
            None if self.frequency is None else self.frequency[idx],
            self.units,
        )

    def top(self, k: int) -> NeuronTable:
        """The ``k`` strongest neurons."""
        return self._take(np.arange(min(int(k), len(self))))

    def per_layer_counts(self) -> np.ndarray:
        """Number of neurons in each layer, int64 ``[n_layers]``."""
        return np.bincount(self.layer, minlength=self.layout.n_layers).astype(np.int64)

    @property
    def per_mille(self) -> float:
        """Neurons in the table per thousand neurons of the model (the paper reports < 1 per mille)."""
        return 1000.0 * len(self) / self.layout.n_features

    @property
    def flat_set(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.flat_index)

    def to_pandas(self) -> Any:
        import pandas as pd

        cols = {
            "layer": self.layer,
            "neuron": self.neuron,
            "weight": self.weight,
            "flat_index": self.flat_index,
        }
        if self.frequency is not None:
            cols["frequency"] = self.frequency
        return pd.DataFrame(cols)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "sign": self.sign,
            "layout": self.layout.to_dict(),
            "layer": self.layer.tolist(),
            "neuron": self.neuron.tolist(),
            "weight": self.weight.tolist(),
            "flat_index": self.flat_index.tolist(),
            "units": self.units,
        }
        if self.frequency is not None:
            out["frequency"] = self.frequency.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeuronTable:
        return cls(
            d["layer"],
            d["neuron"],
            d["weight"],
            d["flat_index"],
            NeuronLayout.from_dict(d["layout"]),
            d.get("sign", "positive"),
            d.get("frequency"),
            d.get("units", "raw"),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON (atomically)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NeuronTable:
        """Read a table written by :meth:`save`.

        Raises:
            ProbeError: the file is missing, not JSON or not a neuron table (names the file).
        """
        from hneuron_lens.errors import ProbeError

        try:
            return cls.from_dict(loads_json(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ProbeError(
                f"not a saved neuron table ({type(err).__name__}: {str(err)[:80]})",
                file=path,
                hint="give a file written by NeuronTable.save",
            ) from None

    def __str__(self) -> str:
        head = (
            f"NeuronTable({self.sign}, {len(self)} neurons = {self.per_mille:.3f} per mille of "
            f"{self.layout.n_features}; weights {self.units})"
        )
        freq = self.frequency is not None
        rows = [f"{'layer':>6} {'neuron':>7} {'weight':>10}" + (f" {'freq':>6}" if freq else "")]
        for i in range(min(len(self), 10)):
            f = f" {self.frequency[i]:>6.2f}" if self.frequency is not None else ""
            rows.append(f"{self.layer[i]:>6d} {self.neuron[i]:>7d} {self.weight[i]:>10.4f}{f}")
        if len(self) > 10:
            rows.append(f"... {len(self) - 10} more")
        return "\n".join([head, *rows])

    def _repr_html_(self) -> str:
        """Notebook display: tables with CIs and a small figure (:mod:`hneuron_lens.viz.html`)."""
        from hneuron_lens.viz.html import neuron_table_html

        return neuron_table_html(self)


def jaccard(a: frozenset[int] | set[int], b: frozenset[int] | set[int]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


# --------------------------------------------------------------------------------------------
# Training matrix
# --------------------------------------------------------------------------------------------


def training_matrix(
    split: FeatureSplit,
    mode: Mode = "3-vs-1",
    rows: np.ndarray | None = None,
    columns: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Build the probe's float32 training matrix and labels from a split.

    3-vs-1 (the paper's code): rows are ``[answer vectors of all samples; other vectors of all
    samples]`` with labels ``[sample labels; zeros]``, i.e. positives = hallucinated answers,
    negatives = faithful answers + every sample's "other" vector. 1-vs-1: answer vectors only.

    Args:
        split: The training split.
        mode: ``"3-vs-1"`` or ``"1-vs-1"``.
        rows: Optional sample indices (e.g. a bootstrap resample); default all samples.
        columns: Optional flat feature indices to keep (e.g. random-neuron baselines).

    Returns:
        ``(X float32 [n_rows, n_features], y int8 [n_rows])``.
    """
    _check_mode(mode)
    labels = np.asarray(split.labels, dtype=np.int8)
    answer = split.region("answer")
    if rows is not None:
        labels = labels[rows]
    parts = [_select(answer, rows, columns)]
    y_parts = [labels]
    if mode == "3-vs-1":
        other = split.region("other")
        parts.append(_select(other, rows, columns))
        y_parts.append(np.zeros(labels.size, dtype=np.int8))
    if len(parts) == 1:  # always return an array the caller owns (it may be standardised in place)
        x = parts[0].astype(np.float32, copy=rows is None and columns is None)
    else:
        x = np.concatenate(parts, axis=0, dtype=np.float32)
    return x, np.concatenate(y_parts)


def training_parts(
    split: FeatureSplit, mode: Mode = "3-vs-1", rows: np.ndarray | None = None
) -> tuple[list[Any], np.ndarray]:
    """The rows of :func:`training_matrix` as they lie in the split, not concatenated:
    ``([answer] or [answer, other], y int8 [n_rows])``. The arrays are the split's own (memory
    maps of a compacted store stay maps); ``rows`` (a resample) wraps each in a
    :class:`~hneuron_lens.solvers.RowSelection`, read row block by row block.
    :class:`~hneuron_lens.solvers.RowBlocks` reads the parts as one matrix. Used by the torch
    solver, which never needs ``X`` in one piece."""
    _check_mode(mode)
    labels = np.asarray(split.labels, dtype=np.int8)
    parts: list[Any] = [split.region("answer")]
    if mode == "3-vs-1":
        parts.append(split.region("other"))
    if rows is not None:
        from hneuron_lens.solvers import RowSelection

        parts = [RowSelection(part, rows) for part in parts]
        labels = labels[rows]
    y_parts = [labels] + ([np.zeros(labels.size, dtype=np.int8)] if mode == "3-vs-1" else [])
    return parts, np.concatenate(y_parts)


def _training_input(
    probe: SparseProbe, split: FeatureSplit, rows: np.ndarray | None = None
) -> tuple[np.ndarray | RowBlocks, np.ndarray]:
    """The training rows of ``split`` (optionally a resample) as ``probe``'s solver reads them:
    the torch solver streams the split's arrays (:class:`RowBlocks`, nothing concatenated), the
    others get :func:`training_matrix` (a float32 array the caller owns)."""
    if probe.solver == "torch":
        parts, y = training_parts(split, probe.mode, rows=rows)
        return probe._make_estimator().blocks(parts), y
    return training_matrix(split, probe.mode, rows=rows)


def _mean_scale(xm: np.ndarray | RowBlocks) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (0 -> 1) of a training matrix, float64 ``[p]``."""
    if not isinstance(xm, np.ndarray):  # RowBlocks
        from hneuron_lens.solvers import column_mean_std

        mean, scale = column_mean_std(xm)
    else:
        mean = xm.mean(axis=0, dtype=np.float64)
        scale = xm.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0
    return mean, scale


def _select(x: np.ndarray, rows: np.ndarray | None, columns: np.ndarray | None) -> np.ndarray:
    if rows is not None:
        x = x[rows]
    if columns is not None:
        x = x[:, columns]
    return x


def _check_mode(mode: str) -> None:
    if mode not in ("3-vs-1", "1-vs-1"):
        raise ValueError(f"mode must be '3-vs-1' or '1-vs-1', got {mode!r}")


def _split_fingerprint(split: FeatureSplit, mode: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"mode": mode, "layout": split.layout.to_dict(), "n": len(split)}).encode())
    h.update("\x00".join(split.ids).encode())
    h.update(np.asarray(split.labels, dtype=np.int8).tobytes())
    if "fingerprint" in split.meta:
        h.update(str(split.meta["fingerprint"]).encode())
    return h.hexdigest()[:16]


def _array_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(x.shape).encode())
    h.update(np.asarray(y, dtype=np.int8).tobytes())
    step = max(1, x.shape[0] // 64)
    h.update(np.ascontiguousarray(x[::step], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------


def _record_feature_provenance(probe: Any, split: Any) -> None:
    """Keep how a store split's features were made (CETT / span config, model) in the probe's
    metadata, so ``score_on(model, samples)`` computes new features the same way."""
    store_fp = split.meta.get("fingerprint") if isinstance(split, FeatureSplit) else None
    if isinstance(store_fp, dict) and "cett_config" in store_fp:
        probe.metadata_["features"] = {
            k: store_fp.get(k) for k in ("cett_config", "span_config", "model")
        }
    else:  # a refit on other data must not keep an earlier fit's provenance
        probe.metadata_.pop("features", None)


class SparseProbe(BaseEstimator):
    """L1 (or L2) logistic-regression probe over flattened CETT features.

    Args:
        C: Inverse regularisation strength (smaller = sparser).
        penalty: ``"l1"`` (the paper) or ``"l2"``.
        mode: ``"3-vs-1"`` (the paper) or ``"1-vs-1"``; only used when fitting from a split.
        standardize: Z-score every neuron with the mean/SD of the training matrix (the
            training split only) before fitting (default). This makes the L1 penalty scale-free:
            the same ``C`` selects the same neurons when a model's CETT values are 10x smaller,
            and a neuron is not penalised for having small values. ``coef_`` is then in
            standardised units (log-odds per SD; tables say ``units="standardized"``);
            predictions use the equivalent raw-unit weights. ``False`` = the paper's raw fit.
        class_weight: Passed to scikit-learn (``None`` or ``"balanced"`` or a dict). Default
            ``"balanced"``: 3-vs-1 training has about three negatives per positive, which pushes
            p > 0.5 decisions and the fit toward the negative class; balancing undoes it.
        solver: ``"liblinear"`` (the paper's default), ``"saga"`` (float32-native, warm starts)
            or ``"torch"`` (L1 only: FISTA on a working set of columns, CPU/GPU, for very
            wide probes, intercept unpenalised; ``tol`` is its KKT tolerance, checked on every
            column: see :mod:`hneuron_lens.solvers`).
        max_iter: Maximum solver iterations.
        tol: Solver tolerance.
        random_state: Seed for the solver's coordinate order.
        intercept_scaling: liblinear only. liblinear penalises the intercept like a feature of
            value ``intercept_scaling``; with 1.0 (scikit-learn's default, hence the paper's
            code) an L1 probe on non-negative CETT features pays for the 3:1 class imbalance
            with spurious *negative* weights standing in for the intercept. The default 100
            makes the intercept's penalty negligible: on planted data the fit matches saga's
            unpenalised intercept (same support, intercept within 0.01) at liblinear's speed
            (0.2 s vs 2.7 s for 1,500 neurons x 1,600 rows, benchmarks/bench_recovery.py).

    Fitted attributes: ``coef_`` float64 ``[n_features]``, ``intercept_`` float, ``layout_``,
    ``n_iter_`` int, ``converged_`` bool, ``classes_``, ``mean_``/``scale_`` (or ``None``),
    ``train_fingerprint_``, ``n_train_rows_``, ``metadata_`` (a dict the caller may fill with the
    model's identity; it is saved), ``metrics_`` (the last :meth:`evaluate` summary).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((200, 8)).astype("float32"); y = (X[:, 3] > 0.5).astype(int)
        >>> probe = SparseProbe(C=10.0).fit(X, y)
        >>> probe.h_neurons.top(1).flat_index.tolist()
        [3]
    """

    def __init__(
        self,
        C: float = 1.0,
        penalty: str = "l1",
        mode: str = "3-vs-1",
        standardize: bool = True,
        class_weight: Any = "balanced",
        solver: str = "liblinear",
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state: int | None = 0,
        intercept_scaling: float = 100.0,
    ) -> None:
        self.C = C
        self.penalty = penalty
        self.mode = mode
        self.standardize = standardize
        self.class_weight = class_weight
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.intercept_scaling = intercept_scaling

    # ---- parameters -------------------------------------------------------------------------

    def _check_params(self) -> None:
        if not (isinstance(self.C, numbers.Real) and self.C > 0 and math.isfinite(self.C)):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        if self.penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got {self.penalty!r}")
        _check_mode(self.mode)
        if self.solver not in ("liblinear", "saga", "torch"):
            raise ValueError(f"solver must be 'liblinear', 'saga' or 'torch', got {self.solver!r}")
        if self.solver == "torch" and self.penalty != "l1":
            raise ValueError("solver='torch' fits penalty='l1' only")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not self.intercept_scaling > 0:
            raise ValueError(f"intercept_scaling must be > 0, got {self.intercept_scaling}")
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")

    def _make_estimator(self, warm_start: bool = False) -> Any:
        if self.solver == "torch":  # FISTA in torch, unpenalised intercept (solvers.py)
            from hneuron_lens.solvers import TorchL1Logistic

            return TorchL1Logistic(
                C=float(self.C),
                tol=float(self.tol),
                max_iter=int(self.max_iter),
                class_weight=self.class_weight,
                warm_start=warm_start,
            )
        return LogisticRegression(
            C=float(self.C),
            l1_ratio=1.0 if self.penalty == "l1" else 0.0,
            solver=self.solver,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            class_weight=self.class_weight,
            random_state=self.random_state,
            warm_start=warm_start,
            intercept_scaling=float(self.intercept_scaling),
        )

    # ---- fitting ----------------------------------------------------------------------------

    def fit(
        self,
        X: FeatureSplit | np.ndarray,
        y: np.ndarray | None = None,
        *,
        layout: NeuronLayout | None = None,
    ) -> SparseProbe:
        """Fit on a :class:`FeatureSplit` (builds the ``mode`` training matrix) or on arrays.

        Args:
            X: A training split, or a ``[n_rows, n_features]`` matrix.
            y: Labels (1 = hallucinated) when ``X`` is a matrix; must be ``None`` for a split.
            layout: Layout of the columns when ``X`` is a matrix (default: one layer).

        Returns:
            self.
        """
        self._check_params()
        if isinstance(X, FeatureSplit):
            if y is not None:
                raise ValueError(
                    "pass y=None when fitting from a FeatureSplit (labels come from it)"
                )
            xm, ym = _training_input(self, X)  # torch: streamed, memory maps stay maps
            self._train_ref: Any = X
            fingerprint = _split_fingerprint(X, self.mode)
            lay = X.layout
        else:
            if y is None:
                raise ValueError("y is required when fitting from an array")
            xm = np.asarray(X, dtype=np.float32)
            ym = np.asarray(y).astype(np.int8).reshape(-1)
            if xm.ndim != 2 or xm.shape[0] != ym.size:
                raise ValueError(
                    f"X must be [n, n_features] matching y; got {xm.shape} and {ym.shape}"
                )
            lay = layout or NeuronLayout((xm.shape[1],))
            if lay.n_features != xm.shape[1]:
                raise ValueError(f"layout has {lay.n_features} features, X has {xm.shape[1]}")
            self._train_ref = (X, y)
            fingerprint = _array_fingerprint(xm, ym)
        self._fit_matrix(xm, ym, lay, copy=not isinstance(X, FeatureSplit))
        self.train_fingerprint_ = fingerprint
        _record_feature_provenance(self, X)
        return self

    def _fit_matrix(
        self,
        xm: np.ndarray | RowBlocks,
        ym: np.ndarray,
        layout: NeuronLayout,
        *,
        estimator: LogisticRegression | None = None,
        copy: bool = True,
    ) -> SparseProbe:
        """Fit on a prepared float32 matrix (standardises in place unless ``copy``) or, for the
        torch solver, on :class:`RowBlocks` (standardised on the fly)."""
        if np.unique(ym).size != 2:
            raise ValueError(
                "training data must contain both classes (0 = faithful, 1 = hallucinated)"
            )
        if self.standardize and not isinstance(xm, np.ndarray):  # RowBlocks: on the fly
            mean, scale = _mean_scale(xm)
            xm = xm.transformed(shift=mean, scale=scale)
            self.mean_: np.ndarray | None = mean
            self.scale_: np.ndarray | None = scale
        elif self.standardize:
            mean, scale = _mean_scale(xm)
            xm = xm.copy() if copy else xm
            xm -= mean.astype(np.float32)
            xm /= scale.astype(np.float32)
            self.mean_ = mean
            self.scale_ = scale
        else:
            self.mean_ = None
            self.scale_ = None
        est = estimator if estimator is not None else self._make_estimator()
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(xm, ym)
        self.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:  # re-emit anything that is not a convergence notice
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not self.converged_:
            logger.warning(
                "SparseProbe(C=%g, solver=%s) did not converge in max_iter=%d; raise max_iter or tol",
                self.C,
                self.solver,
                self.max_iter,
            )
        self.fit_seconds_ = time.perf_counter() - start
        self.coef_ = np.array(est.coef_, dtype=np.float64).reshape(-1)
        self.intercept_ = float(np.asarray(est.intercept_).reshape(-1)[0])
        self.n_iter_ = int(np.max(est.n_iter_))
        self.classes_ = np.array([0, 1])
        self.layout_ = layout
        self.n_features_in_ = layout.n_features
        self.n_train_rows_ = int(ym.size)
        self.metadata_: dict[str, Any] = getattr(self, "metadata_", {})
        self.metrics_: dict[str, Any] | None = None
        self.selection_frequency_: np.ndarray | None = None
        self.stability_: dict[str, Any] | None = None
        logger.info(
            "fitted %s probe C=%g: %d non-zero (%d positive) of %d in %.1fs",
            self.penalty,
            self.C,
            int(np.count_nonzero(self.coef_)),
            int((self.coef_ > 0).sum()),
            self.coef_.size,
            self.fit_seconds_,
        )
        return self

    # ---- prediction -------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError(
                "this SparseProbe is not fitted yet: call fit() or SparseProbe.load()"
            )

    def _effective_weights(self) -> tuple[np.ndarray, float]:
        """Weights and bias on raw (unstandardised) features."""
        if self.mean_ is None or self.scale_ is None:
            return self.coef_, self.intercept_
        w = self.coef_ / self.scale_
        return w, float(self.intercept_ - w @ self.mean_)

    def _eval_matrix(self, X: FeatureSplit | np.ndarray) -> np.ndarray:
        if isinstance(X, FeatureSplit):
            self.check_compatible(X.layout)
            return X.region("answer")
        x = np.asarray(X) if not isinstance(X, np.memmap) else X
        if x.ndim != 2 or x.shape[1] != self.coef_.size:
            raise ValueError(
                f"expected [n, {self.coef_.size}] features, got shape {tuple(x.shape)}"
            )
        return x

    def decision_function(self, X: FeatureSplit | np.ndarray) -> np.ndarray:
        """Log-odds of hallucination for answer vectors (a split) or rows of a matrix."""
        self._check_fitted()
        x = self._eval_matrix(X)
        w, b = self._effective_weights()
        nz = np.flatnonzero(w)
        out = np.empty(x.shape[0], dtype=np.float64)
        for i in range(0, x.shape[0], _CHUNK_ROWS):
            block = np.asarray(x[i : i + _CHUNK_ROWS][:, nz], dtype=np.float64)
            out[i : i + _CHUNK_ROWS] = block @ w[nz] + b
        return out

    def predict_proba(self, X: FeatureSplit | np.ndarray) -> np.ndarray:
        """``[n, 2]`` probabilities of (faithful, hallucinated)."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: FeatureSplit | np.ndarray) -> np.ndarray:
        """1 = hallucinated (probability > 0.5)."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def score(self, X: FeatureSplit | np.ndarray, y: np.ndarray | None = None) -> float:
        """Accuracy on answer vectors (labels from the split, or ``y``)."""
        labels = _labels_for(X, y)
        return float(np.mean(self.predict(X) == labels))

    def score_on(
        self,
        data: Any,
        samples: Sequence[Any] | None = None,
        *,
        cett_cfg: Any | None = None,
        span_cfg: Any | None = None,
        batch_size: int = 16,
        progress: bool = True,
    ) -> np.ndarray:
        """Hallucination probabilities for new data, after checking the layout.

        Two forms:

        - ``score_on(split)``: a :class:`FeatureSplit` (e.g. from another store); returns
          ``[n_samples]`` probabilities of its answer vectors.
        - ``score_on(model, samples)``: a ``TransformerBridge`` of the same shape (this model,
          another checkpoint of it, the base model of an instruct model...) and judged samples
          (:class:`~hneuron_lens.data.JudgedSample`, labels unused). CETT features of the answer
          region are computed in memory (:func:`hneuron_lens.extract.compute_features`) with the
          CETT and span configs the probe was trained with (recorded when it was fitted from an
          :class:`~hneuron_lens.store.ActivationStore` split; else the defaults, or pass
          ``cett_cfg`` / ``span_cfg``). Returns ``[len(samples)]`` probabilities, ``NaN`` for
          samples whose answer span could not be located (counted in a warning with reasons).

        Raises:
            ValueError: the model's or split's neuron layout differs from the probe's.
        """
        self._check_fitted()
        if isinstance(data, FeatureSplit):
            if samples is not None:
                raise ValueError("score_on(split) takes no samples")
            self.check_compatible(data)
            return self.predict_proba(data)[:, 1]
        if samples is None:
            raise ValueError("score_on(model, samples): samples are required with a model")
        from hneuron_lens.cett import CETTConfig
        from hneuron_lens.extract import compute_features
        from hneuron_lens.models import neuron_sites
        from hneuron_lens.spans import SpanConfig

        self.check_compatible(NeuronLayout(tuple(s.d_mlp for s in neuron_sites(data))))
        recorded = self.metadata_.get("features") or {}
        if cett_cfg is None:
            cett_cfg = (
                CETTConfig.from_dict(recorded["cett_config"])
                if recorded.get("cett_config")
                else CETTConfig()
            )
        if span_cfg is None:
            span_cfg = (
                SpanConfig.from_dict(recorded["span_config"])
                if recorded.get("span_config")
                else SpanConfig()
            )
        cett_cfg = CETTConfig.from_dict({**cett_cfg.to_dict(), "regions": ("answer",)})
        split, report = compute_features(
            data, samples, cett_cfg, span_cfg=span_cfg, batch_size=batch_size, progress=progress
        )
        out = np.full(len(samples), np.nan)
        if split.ids:
            probs = self.predict_proba(split)[:, 1]
            row = {sid: i for i, sid in enumerate(split.ids)}
            for i, s in enumerate(samples):
                if s.qid in row:
                    out[i] = probs[row[s.qid]]
        if report.n_skipped:
            logger.warning(
                "score_on: %d of %d samples have no located answer span (NaN): %s",
                report.n_skipped,
                len(samples),
                report.skipped_by_reason,
            )
        return out

    def check_compatible(self, layout: NeuronLayout | FeatureSplit) -> None:
        """Raise ``ValueError`` (naming both shapes) when ``layout`` differs from the probe's."""
        self._check_fitted()
        other = layout.layout if isinstance(layout, FeatureSplit) else layout
        if tuple(other.d_mlp) != tuple(self.layout_.d_mlp):
            raise ValueError(
                "layout mismatch: the probe was trained on "
                f"{_describe_layout(self.layout_)} but the features/model have "
                f"{_describe_layout(other)}"
            )

    # ---- neurons ----------------------------------------------------------------------------

    @property
    def weight_units(self) -> str:
        """``"standardized"`` when ``coef_`` is per SD of each neuron, else ``"raw"``."""
        return "standardized" if getattr(self, "mean_", None) is not None else "raw"

    @property
    def h_neurons(self) -> NeuronTable:
        """The H-Neurons, strongest first: the positive-weight neurons, or, after
        :meth:`use_stability` with ``select=True``, the neurons whose stability-selection
        frequency reaches the threshold (sorted by frequency, then weight). The table carries
        each neuron's selection frequency when stability selection was run."""
        self._check_fitted()
        freq = getattr(self, "selection_frequency_", None)
        info = getattr(self, "stability_", None) or {}
        if freq is not None and info.get("select"):
            flat = np.flatnonzero(freq >= float(info["threshold"]))
            flat = flat[np.lexsort((-self.coef_[flat], -freq[flat]))]
            layer, neuron = (
                self.layout_.unflatten_index(flat) if flat.size else (np.zeros(0), np.zeros(0))
            )
            return NeuronTable(
                layer,
                neuron,
                self.coef_[flat],
                flat,
                self.layout_,
                "positive",
                freq[flat],
                self.weight_units,
            )
        return NeuronTable.from_coef(
            self.coef_, self.layout_, "positive", frequency=freq, units=self.weight_units
        )

    @property
    def negative_neurons(self) -> NeuronTable:
        """Negative-weight neurons (predict faithfulness), strongest first."""
        self._check_fitted()
        return NeuronTable.from_coef(
            self.coef_,
            self.layout_,
            "negative",
            frequency=getattr(self, "selection_frequency_", None),
            units=self.weight_units,
        )

    def use_stability(self, result: Any, *, select: bool = False) -> SparseProbe:
        """Attach a :class:`~hneuron_lens.stability.StabilityResult` of this probe's data.

        Its per-neuron selection frequencies then appear beside the weights in
        :attr:`h_neurons` / :attr:`negative_neurons` and are saved with the probe. With
        ``select=True`` the H-Neuron set is defined by frequency (``>= result.threshold``)
        instead of by the sign of the full-data weight (Meinshausen & Buhlmann's stable set).

        Returns:
            self.
        """
        self._check_fitted()
        freq = np.asarray(result.frequency, dtype=np.float64).reshape(-1)
        if freq.size != self.coef_.size:
            raise ValueError(
                f"stability result has {freq.size} frequencies, the probe {self.coef_.size} weights"
            )
        self.selection_frequency_ = freq
        self.stability_ = {**result.summary(), "select": bool(select)}
        return self

    # ---- evaluation -------------------------------------------------------------------------

    def evaluate(
        self,
        split_or_X: FeatureSplit | np.ndarray,
        y: np.ndarray | None = None,
        *,
        n_resamples: int = 1000,
        n_random: int = 20,
        seed: int = 0,
        val_split: FeatureSplit | None = None,
        train: FeatureSplit | None = None,
        level: float = 0.95,
    ) -> ProbeReport:
        """Metrics with stratified-bootstrap CIs, a random-neuron baseline and per-neuron stats.

        Args:
            split_or_X: Evaluation split (answer vectors are scored) or a matrix with ``y``.
            y: Labels when ``split_or_X`` is a matrix.
            n_resamples: Bootstrap resamples for the CIs.
            n_random: Random neuron sets per baseline kind (0 skips the baseline).
            seed: Seed for bootstraps and random neuron draws.
            val_split: When given, a Youden-J threshold is chosen on it (never on the test data)
                and the test metrics at that threshold are reported separately.
            train: Training split for the baseline refits; default the split passed to ``fit``
                (held by reference, not copied; not available after ``load``).
            level: CI coverage.

        Returns:
            A :class:`ProbeReport`.

        The random-neuron baseline: ``k = len(h_neurons)`` neurons drawn from the non-H neurons,
        ``n_random`` times, both unconstrained and layer-matched (same per-layer counts). Each set,
        and the H-Neurons themselves ("H-refit"), is refit with this probe's mode, C, solver and
        standardisation but an **L2** penalty, so no set loses neurons to sparsity and the
        comparison is like for like: the reported gap is H-refit minus the random mean.
        """
        self._check_fitted()
        labels = _labels_for(split_or_X, y)
        scores = self.decision_function(split_or_X)
        metrics = _binary_metrics(labels, scores, 0.0, False, n_resamples, seed, level)
        threshold = None
        threshold_metrics = None
        if val_split is not None:
            val_scores = self.decision_function(val_split)
            threshold = youden_threshold(np.asarray(val_split.labels), val_scores)
            threshold_metrics = _binary_metrics(
                labels, scores, threshold, True, n_resamples, seed, level
            )
            threshold = float(1.0 / (1.0 + np.exp(-threshold)))  # report as a probability
        h = self.h_neurons
        x_eval = self._eval_matrix(split_or_X)
        neuron_stats = _single_neuron_stats(h, x_eval, labels)
        baselines: list[RandomBaseline] = []
        h_refit: dict[str, float] = {}
        train_ref = train if train is not None else getattr(self, "_train_ref", None)
        if n_random > 0 and len(h) > 0:
            if train_ref is None:
                logger.warning(
                    "no training data for the random-neuron baseline (pass train=); skipped"
                )
            else:
                h_refit, baselines = self._random_baselines(
                    train_ref, x_eval, labels, h, n_random, seed, level
                )
        report = ProbeReport(
            n_samples=int(labels.size),
            n_positive=int(labels.sum()),
            n_h_neurons=len(h),
            h_per_mille=h.per_mille,
            n_nonzero=int(np.count_nonzero(self.coef_)),
            metrics=metrics,
            threshold=threshold,
            threshold_metrics=threshold_metrics,
            h_refit=h_refit,
            baselines=baselines,
            neuron_stats=neuron_stats,
            params=self.get_params(),
        )
        self.metrics_ = report.summary()
        return report

    def _random_baselines(
        self,
        train: FeatureSplit | tuple[np.ndarray, np.ndarray],
        x_eval: np.ndarray,
        labels: np.ndarray,
        h: NeuronTable,
        n_random: int,
        seed: int,
        level: float,
    ) -> tuple[dict[str, float], list[RandomBaseline]]:
        params = {**self.get_params(), "penalty": "l2"}

        def fit_eval(cols: np.ndarray) -> tuple[float, float]:
            cols = np.sort(cols)
            if isinstance(train, FeatureSplit):
                xt, yt = training_matrix(train, self.mode, columns=cols)
            else:
                xt = np.asarray(train[0][:, cols], dtype=np.float32)
                yt = np.asarray(train[1]).astype(np.int8)
            sub = SparseProbe(**params)
            sub._fit_matrix(xt, yt, NeuronLayout((cols.size,)), copy=False)
            s = sub.decision_function(np.asarray(x_eval[:, cols], dtype=np.float32))
            return auroc(labels, s), float(np.mean((s > 0) == labels))

        h_auc, h_acc = fit_eval(h.flat_index)
        h_refit = {"auroc": h_auc, "accuracy": h_acc}
        rng = np.random.default_rng(seed)
        layout = self.layout_
        pool_mask = np.ones(layout.n_features, dtype=bool)
        pool_mask[h.flat_index] = False
        counts = h.per_layer_counts()
        out = []
        for kind in ("unconstrained", "layer-matched"):
            aucs, accs = np.empty(n_random), np.empty(n_random)
            for r in tqdm(range(n_random), desc=f"random baseline ({kind})", leave=False):
                if kind == "unconstrained":
                    cols = rng.choice(np.flatnonzero(pool_mask), size=len(h), replace=False)
                else:
                    cols = np.concatenate(
                        [
                            rng.choice(
                                np.flatnonzero(
                                    pool_mask[layout.offsets[li] : layout.offsets[li + 1]]
                                )
                                + layout.offsets[li],
                                size=int(c),
                                replace=False,
                            )
                            for li, c in enumerate(counts)
                            if c > 0
                        ]
                    )
                aucs[r], accs[r] = fit_eval(cols)
            out.append(
                RandomBaseline(
                    kind=kind,
                    n_neurons=len(h),
                    auroc=_spread(aucs, level),
                    accuracy=_spread(accs, level),
                    auroc_values=aucs,
                    accuracy_values=accs,
                    gap_auroc=h_auc - float(aucs.mean()),
                    gap_accuracy=h_acc - float(accs.mean()),
                )
            )
        return h_refit, out

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``weights.safetensors``, ``neurons.json`` and ``probe.json`` to ``path``.

        The directory is written in full to a temporary sibling and then renamed into place
        (:func:`hneuron_lens.io.write_dir_atomically`). ``path`` may be missing or an empty
        directory; an existing saved probe is replaced only with ``overwrite=True``; any other
        directory is never replaced.

        Raises:
            OutputError: ``path`` holds a probe and ``overwrite`` is false, or holds something
                that is not a probe.
        """
        from safetensors.numpy import save_file

        from hneuron_lens.io import write_dir_atomically

        self._check_fitted()
        path = Path(path)
        tensors = {"coef": self.coef_.astype(np.float64), "intercept": np.array([self.intercept_])}
        if self.mean_ is not None and self.scale_ is not None:
            tensors["mean"] = self.mean_.astype(np.float64)
            tensors["scale"] = self.scale_.astype(np.float64)
        if getattr(self, "selection_frequency_", None) is not None:
            tensors["frequency"] = np.asarray(self.selection_frequency_, dtype=np.float64)
        meta = {
            "format": "hneuron_lens.SparseProbe",
            "format_version": SAVE_FORMAT_VERSION,
            "library_version": library_version(),
            "params": self.get_params(),
            "layout": self.layout_.to_dict(),
            "n_iter": self.n_iter_,
            "converged": bool(self.converged_),
            "n_train_rows": self.n_train_rows_,
            "train_fingerprint": getattr(self, "train_fingerprint_", None),
            "metadata": self.metadata_,
            "metrics": self.metrics_,
            "stability": getattr(self, "stability_", None),
        }
        neurons = {
            "h_neurons": self.h_neurons.to_dict(),
            "negative_neurons": self.negative_neurons.to_dict(),
        }
        with write_dir_atomically(path, "probe", overwrite=overwrite) as tmp:
            save_file(
                tensors,
                str(tmp / "weights.safetensors"),
                metadata={"format_version": str(SAVE_FORMAT_VERSION)},
            )
            (tmp / "probe.json").write_text(json.dumps(meta, indent=1, default=_json_default))
            (tmp / "neurons.json").write_text(json.dumps(neurons, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SparseProbe:
        """Read a probe written by :meth:`save` (JSON + safetensors; no pickle).

        Raises:
            ProbeError: the directory or one of its files is missing, unreadable, of another
                format or inconsistent; the message names the file and what to do.
        """
        from hneuron_lens.errors import ProbeError

        path = Path(path)
        meta_path = path / "probe.json"
        if not path.is_dir():
            raise ProbeError(
                "no saved probe here" + (" (a file, not a directory)" if path.exists() else ""),
                file=path,
                hint="give the directory written by `hneuron-lens train --out` / SparseProbe.save",
            )
        meta = _read_probe_json(meta_path)
        tensors = _read_probe_weights(path / "weights.safetensors")
        try:
            params = dict(meta["params"])
            if isinstance(params.get("class_weight"), dict):  # JSON made the class keys str
                params["class_weight"] = {
                    int(k): float(v) for k, v in params["class_weight"].items()
                }
            probe = cls(**params)
            probe.layout_ = NeuronLayout.from_dict(meta["layout"])
            probe.n_iter_ = int(meta["n_iter"])
            probe.converged_ = bool(meta["converged"])
            probe.n_train_rows_ = int(meta["n_train_rows"])
        except (KeyError, TypeError, ValueError) as err:
            raise ProbeError(
                f"probe.json lacks or mangles a field ({type(err).__name__}: {err})",
                file=meta_path,
                hint="save the probe again with SparseProbe.save / `hneuron-lens train`",
            ) from None
        try:
            probe.coef_ = np.asarray(tensors["coef"], dtype=np.float64).reshape(-1)
            probe.intercept_ = float(np.asarray(tensors["intercept"]).reshape(-1)[0])
        except (KeyError, IndexError, ValueError) as err:
            raise ProbeError(
                f"weights.safetensors lacks the coef/intercept tensors ({err})",
                file=path / "weights.safetensors",
                hint="save the probe again with SparseProbe.save / `hneuron-lens train`",
            ) from None
        probe.mean_ = tensors.get("mean")
        probe.scale_ = tensors.get("scale")
        probe.selection_frequency_ = tensors.get("frequency")
        probe.stability_ = meta.get("stability")
        if probe.coef_.size != probe.layout_.n_features:
            raise ProbeError(
                f"the saved coef has {probe.coef_.size} weights but the saved layout "
                f"{probe.layout_.n_features} neurons",
                file=path / "weights.safetensors",
                hint="the files come from different probes: save the probe again",
            )
        probe.train_fingerprint_ = meta.get("train_fingerprint")
        probe.metadata_ = dict(meta.get("metadata") or {})
        probe.metrics_ = meta.get("metrics")
        probe.classes_ = np.array([0, 1])
        probe.n_features_in_ = probe.layout_.n_features
        return probe


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


@dataclass
class RandomBaseline:
    """Probes refit on random neuron sets of the H-Neurons' size."""

    kind: str
    """``"unconstrained"`` or ``"layer-matched"``."""
    n_neurons: int
    """Neurons per random set (= number of H-Neurons)."""
    auroc: Interval
    """Mean AUROC over sets, with the 2.5-97.5 percentile range over sets."""
    accuracy: Interval
    """Mean accuracy over sets, with the percentile range over sets."""
    auroc_values: np.ndarray
    """Per-set AUROC."""
    accuracy_values: np.ndarray
    """Per-set accuracy."""
    gap_auroc: float
    """H-refit AUROC minus the mean random AUROC."""
    gap_accuracy: float
    """H-refit accuracy minus the mean random accuracy."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_neurons": self.n_neurons,
            "auroc": self.auroc.to_dict(),
            "accuracy": self.accuracy.to_dict(),
            "auroc_values": self.auroc_values.tolist(),
            "accuracy_values": self.accuracy_values.tolist(),
            "gap_auroc": self.gap_auroc,
            "gap_accuracy": self.gap_accuracy,
        }


@dataclass
class NeuronStatsTable:
    """Per-H-Neuron separability on the evaluation answer vectors."""

    layer: np.ndarray
    """Layer of each neuron."""
    neuron: np.ndarray
    """Neuron index within the layer."""
    weight: np.ndarray
    """Probe weight."""
    auroc: np.ndarray
    """AUROC of the neuron's CETT alone (hallucinated = positive)."""
    cohens_d: np.ndarray
    """Cohen's d, hallucinated minus faithful."""
    frequency: np.ndarray | None = None
    """Stability-selection frequency of each neuron (when the probe has one), else ``None``."""

    def __len__(self) -> int:
        return int(self.layer.size)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer.tolist(),
            "neuron": self.neuron.tolist(),
            "weight": self.weight.tolist(),
            "auroc": self.auroc.tolist(),
            "cohens_d": [None if not np.isfinite(v) else float(v) for v in self.cohens_d],
            **({} if self.frequency is None else {"frequency": self.frequency.tolist()}),
        }


@dataclass
class ProbeReport:
    """Evaluation of a probe on one split."""

    n_samples: int
    """Evaluated samples (answer vectors)."""
    n_positive: int
    """Hallucinated samples among them."""
    n_h_neurons: int
    """Positive-weight neurons."""
    h_per_mille: float
    """H-Neurons per thousand neurons."""
    n_nonzero: int
    """Non-zero probe weights."""
    metrics: dict[str, Interval]
    """accuracy, precision, recall, f1 (at probability 0.5), auroc, auprc; bootstrap CIs."""
    threshold: float | None = None
    """Youden-J probability threshold chosen on the validation split (if given)."""
    threshold_metrics: dict[str, Interval] | None = None
    """Metrics at ``threshold`` on the evaluation split."""
    h_refit: dict[str, float] = field(default_factory=dict)
    """AUROC / accuracy of an L2 probe refit on the H-Neurons only (baseline config)."""
    baselines: list[RandomBaseline] = field(default_factory=list)
    """Random-neuron baselines (unconstrained, layer-matched)."""
    neuron_stats: NeuronStatsTable | None = None
    """Single-neuron AUROC and Cohen's d of every H-Neuron."""
    params: dict[str, Any] = field(default_factory=dict)
    """The probe's hyper-parameters."""

    def summary(self) -> dict[str, Any]:
        """A small JSON-able dict (stored as ``probe.metrics_``)."""
        out: dict[str, Any] = {k: v.to_dict() for k, v in self.metrics.items()}
        out["n_samples"] = self.n_samples
        out["n_h_neurons"] = self.n_h_neurons
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out

    def to_pandas(self) -> Any:
        """One row per metric (and per thresholded metric / baseline)."""
        import pandas as pd

        rows = [{"setting": "p>0.5", "metric": k, **v.to_dict()} for k, v in self.metrics.items()]
        for k, v in (self.threshold_metrics or {}).items():
            rows.append({"setting": "youden", "metric": k, **v.to_dict()})
        for b in self.baselines:
            rows.append({"setting": f"random-{b.kind}", "metric": "auroc", **b.auroc.to_dict()})
            rows.append(
                {"setting": f"random-{b.kind}", "metric": "accuracy", **b.accuracy.to_dict()}
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "n_positive": self.n_positive,
            "n_h_neurons": self.n_h_neurons,
            "h_per_mille": self.h_per_mille,
            "n_nonzero": self.n_nonzero,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "threshold": self.threshold,
            "threshold_metrics": (
                None
                if self.threshold_metrics is None
                else {k: v.to_dict() for k, v in self.threshold_metrics.items()}
            ),
            "h_refit": self.h_refit,
            "baselines": [b.to_dict() for b in self.baselines],
            "neuron_stats": None if self.neuron_stats is None else self.neuron_stats.to_dict(),
            "params": self.params,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, default=_json_default))

    def __str__(self) -> str:
        lines = [
            f"ProbeReport: {self.n_samples} samples ({self.n_positive} hallucinated), "
            f"{self.n_h_neurons} H-Neurons ({self.h_per_mille:.3f} per mille), {self.n_nonzero} non-zero",
            f"{'metric':<10} {'p>0.5':>24}"
            + (
                f" {'youden@' + format(self.threshold, '.3f'):>24}"
                if self.threshold is not None
                else ""
            ),
        ]
        for k, v in self.metrics.items():
            extra = (
                f" {str(self.threshold_metrics[k]):>24}"
                if self.threshold_metrics and k in self.threshold_metrics
                else ""
            )
            mark = " *" if "degenerate" in v.method else ""
            lines.append(f"{k:<10} {str(v):>24}{extra}{mark}")
        if any("degenerate" in v.method for v in self.metrics.values()):
            lines.append(
                "* every bootstrap resample gave the same value (e.g. perfect separation of a "
                "small test set): proportions show a Wilson interval instead; the others have "
                "no usable interval: evaluate on more samples"
            )
        if self.baselines:
            lines.append(
                f"H-refit (L2, H-Neurons only): auroc {self.h_refit['auroc']:.3f}  accuracy {self.h_refit['accuracy']:.3f}"
            )
            lines.append(
                f"{'random':<14} {'auroc (mean [2.5,97.5])':>26} {'gap':>7} {'accuracy':>24} {'gap':>7}"
            )
            for b in self.baselines:
                lines.append(
                    f"{b.kind:<14} {str(b.auroc):>26} {b.gap_auroc:>+7.3f} {str(b.accuracy):>24} {b.gap_accuracy:>+7.3f}"
                )
        if self.neuron_stats is not None and len(self.neuron_stats):
            ns = self.neuron_stats
            freq = ns.frequency
            lines.append(
                f"{'layer':>6} {'neuron':>7} {'weight':>9} {'auroc':>7} {'d':>7}"
                + ("" if freq is None else f" {'freq':>6}")
            )
            for i in range(min(len(ns), 10)):
                f = "" if freq is None else f" {freq[i]:>6.2f}"
                lines.append(
                    f"{ns.layer[i]:>6d} {ns.neuron[i]:>7d} {ns.weight[i]:>9.4f} {ns.auroc[i]:>7.3f} {ns.cohens_d[i]:>7.3f}{f}"
                )
            if len(ns) > 10:
                lines.append(f"... {len(ns) - 10} more H-Neurons")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Notebook display: tables with CIs and a small figure (:mod:`hneuron_lens.viz.html`)."""
        from hneuron_lens.viz.html import probe_report_html

        return probe_report_html(self)


# --------------------------------------------------------------------------------------------
# Regularisation path
# --------------------------------------------------------------------------------------------


@dataclass
class PathPoint:
    """One C on the regularisation path."""

    C: float
    """Inverse regularisation strength."""
    n_nonzero: int
    """Non-zero weights."""
    n_positive: int
    """Positive weights (H-Neurons)."""
    accuracy: Interval
    """Held-out accuracy at p > 0.5 with a stratified bootstrap CI."""
    auroc: Interval
    """Held-out AUROC with a stratified bootstrap CI."""
    neurons: NeuronTable
    """The positive-weight neurons at this C."""
    log_loss: Interval | None = None
    """Held-out log-loss (nats) with classes weighted equally, with a stratified bootstrap CI."""
    se: dict[str, float] = field(default_factory=dict)
    """Bootstrap standard error of each held-out metric (``accuracy``, ``auroc``, ``log_loss``),
    used by the one-SE rules."""
    suppression_accuracy: float | None = None
    """Model QA accuracy with these neurons scaled to 0 (rule ``held-out+suppression``)."""
    score: float = float("nan")
    """The selection score under the rule."""
    jaccard_prev: float | None = None
    """Jaccard of the H-Neuron set with the previous (smaller) C."""
    converged: bool = True
    """Whether the solver converged."""
    fit_seconds: float = 0.0
    """Wall time of the fit."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "n_nonzero": self.n_nonzero,
            "n_positive": self.n_positive,
            "accuracy": self.accuracy.to_dict(),
            "auroc": self.auroc.to_dict(),
            "log_loss": None if self.log_loss is None else self.log_loss.to_dict(),
            "se": dict(self.se),
            "suppression_accuracy": self.suppression_accuracy,
            "score": None if not math.isfinite(self.score) else self.score,
            "jaccard_prev": self.jaccard_prev,
            "converged": self.converged,
            "fit_seconds": self.fit_seconds,
            "neurons": self.neurons.to_dict(),
        }


@dataclass
class ProbePath:
    """A grid of fits over C, the chosen C and the stability of its neuron set."""

    points: list[PathPoint]
    """One per C, in increasing C."""
    rule: str
    """The selection rule used."""
    chosen_index: int
    """Index into ``points`` of the chosen C."""
    probe: SparseProbe
    """The fitted probe at the chosen C."""
    stability: Interval | None = None
    """Jaccard of bootstrap refits' H-Neuron sets with the chosen set (mean, percentile range)."""
    selection_frequency: np.ndarray | None = None
    """For each chosen H-Neuron (in ``probe.h_neurons`` order), the fraction of bootstrap refits
    that also selected it."""
    probes: list[SparseProbe] = field(default_factory=list, repr=False)
    """The fitted probe at every C."""
    optimum_index: int | None = None
    """Index of the best score (differs from ``chosen_index`` under the one-SE rules)."""
    extensions: list[str] = field(default_factory=list)
    """Grid extensions made because the choice sat at an end: ``"up"`` / ``"down"`` each."""
    edge: str | None = None
    """``"upper"`` / ``"lower"`` when the final choice is still at an end of the grid (a
    warning was issued: the best C may lie outside the grid), else ``None``."""

    @property
    def chosen(self) -> PathPoint:
        return self.points[self.chosen_index]

    @property
    def best_C(self) -> float:
        return self.chosen.C

    def choose(self, rule: str) -> tuple[int, int]:
        """``(optimum, chosen)`` indices into ``points`` under another rule, on the same fits
        (no refit; ``"held-out+suppression"`` needs the points' suppression accuracies)."""
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        return _choose(self.points, rule)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "C": p.C,
                    "n_nonzero": p.n_nonzero,
                    "n_positive": p.n_positive,
                    "accuracy": p.accuracy.estimate,
                    "accuracy_low": p.accuracy.low,
                    "accuracy_high": p.accuracy.high,
                    "auroc": p.auroc.estimate,
                    "auroc_low": p.auroc.low,
                    "auroc_high": p.auroc.high,
                    "log_loss": None if p.log_loss is None else p.log_loss.estimate,
                    "suppression_accuracy": p.suppression_accuracy,
                    "score": p.score,
                    "jaccard_prev": p.jaccard_prev,
                    "chosen": i == self.chosen_index,
                }
                for i, p in enumerate(self.points)
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "chosen_index": self.chosen_index,
            "optimum_index": self.optimum_index,
            "extensions": list(self.extensions),
            "edge": self.edge,
            "best_C": self.best_C,
            "points": [p.to_dict() for p in self.points],
            "stability": None if self.stability is None else self.stability.to_dict(),
            "selection_frequency": None
            if self.selection_frequency is None
            else self.selection_frequency.tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically); save ``self.probe`` separately."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, default=_json_default))

    def __str__(self) -> str:
        lines = [f"ProbePath (rule={self.rule}, chosen C={self.best_C:g})"]
        if self.extensions:
            lines.append(f"  grid extended {len(self.extensions)}x ({', '.join(self.extensions)})")
        if self.edge:
            lines.append(f"  WARNING: the chosen C is at the {self.edge} end of the grid")
        lines.append(
            f"  {'C':>9} {'nonzero':>8} {'H':>5} {'held-out acc':>22} {'held-out auroc':>22} "
            f"{'log-loss':>8} {'supp.acc':>8} {'J(prev)':>7}"
        )
        for i, p in enumerate(self.points):
            mark = "*" if i == self.chosen_index else ("+" if i == self.optimum_index else " ")
            sup = "" if p.suppression_accuracy is None else f"{p.suppression_accuracy:.3f}"
            jac = "" if p.jaccard_prev is None else f"{p.jaccard_prev:.2f}"
            ll = "" if p.log_loss is None else f"{p.log_loss.estimate:.3f}"
            lines.append(
                f"{mark} {p.C:>9.4g} {p.n_nonzero:>8d} {p.n_positive:>5d} {str(p.accuracy):>22} "
                f"{str(p.auroc):>22} {ll:>8} {sup:>8} {jac:>7}"
            )
        if self.optimum_index is not None and self.optimum_index != self.chosen_index:
            lines.append("  * chosen (one-SE rule), + best score")
        if self.stability is not None:
            lines.append(f"bootstrap stability (Jaccard with chosen set): {self.stability}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Notebook display: tables with CIs and a small figure (:mod:`hneuron_lens.viz.html`)."""
        from hneuron_lens.viz.html import probe_path_html

        return probe_path_html(self)


RULES = ("auroc", "log-loss", "1se", "auroc-1se", "held-out", "held-out+suppression")
"""Selection rules of :func:`probe_path` (see its docstring)."""
DEFAULT_RULE = "auroc-1se"
"""The default rule, chosen by ``benchmarks/bench_recovery.py`` (README, "Finding the right
neurons"): of the rules above it recovered the planted neurons best across feature scales."""


def l1_min_C(xm: np.ndarray | RowBlocks, ym: np.ndarray, class_weight: Any = "balanced") -> float:
    """The smallest ``C`` at which an L1 logistic fit on ``(xm, ym)`` has a non-zero weight.

    At ``w = 0`` (intercept fitted) the gradient of the weighted loss for feature j is
    ``g_j = sum_i s_i (y_i - p0) x_ij`` with ``s_i`` the class weights and ``p0`` the weighted
    positive rate; liblinear's objective ``||w||_1 + C * loss`` leaves ``w = 0`` optimal while
    ``C * max_j |g_j| <= 1``. The automatic grid of :func:`probe_path` starts here, so it is
    in the right place whatever the feature scale.
    """
    y = np.asarray(ym).astype(np.float64)
    if isinstance(class_weight, str) and class_weight == "balanced":
        n1 = y.sum()
        n0 = y.size - n1
        sw = np.where(y == 1, y.size / (2 * n1), y.size / (2 * n0))
    elif isinstance(class_weight, dict):
        sw = np.where(y == 1, float(class_weight.get(1, 1.0)), float(class_weight.get(0, 1.0)))
    else:
        sw = np.ones_like(y)
    p0 = float((sw * y).sum() / sw.sum())
    r = (sw * (y - p0)).astype(np.float32)
    if not isinstance(xm, np.ndarray):  # RowBlocks (torch solver)
        grad = float(xm.xt(r.astype(np.float64)).abs().max())
    else:
        grad = np.abs(r @ xm).max()
    if not grad > 0:
        raise ValueError("no feature varies with the label: every L1 fit is empty")
    return float(1.0 / grad)


def balanced_log_loss(y_true: np.ndarray, score: np.ndarray) -> float:
    """Log-loss (nats) of log-odds ``score``, averaged within each class, then over classes."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError("balanced_log_loss needs both classes")
    return float(0.5 * (np.logaddexp(0.0, -s[y]).mean() + np.logaddexp(0.0, s[~y]).mean()))


def _resample_counts(idx: list[np.ndarray], n: int) -> np.ndarray:
    """Bootstrap index arrays as a ``[n_resamples, n]`` matrix of multiplicities."""
    if not idx:
        return np.zeros((0, n))
    return np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)


def _boot_metrics(
    labels: np.ndarray, scores: np.ndarray, counts: np.ndarray, level: float = 0.95
) -> tuple[dict[str, Interval], dict[str, np.ndarray]]:
    """Accuracy (p > 0.5), AUROC and balanced log-loss with their resample distributions.

    ``counts`` holds the multiplicity of every row in every stratified resample, so each
    metric is a weighted mean and all resamples are scored at once (AUROC as
    ``c_pos @ H @ c_neg / (n_pos n_neg)`` with ``H`` the pairwise win matrix, ties 1/2).
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    cp, cn = counts[:, y], counts[:, ~y]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    diff = s[y][:, None] - s[~y][None, :]
    wins = (diff > 0) + 0.5 * (diff == 0)
    loss_pos, loss_neg = np.logaddexp(0.0, -s[y]), np.logaddexp(0.0, s[~y])
    correct = ((s > 0) == y).astype(np.float64)
    boots = {
        "accuracy": counts @ correct / y.size,
        "auroc": np.einsum("bi,ij,bj->b", cp, wins, cn) / (n_pos * n_neg),
        "log_loss": 0.5 * (cp @ loss_pos / n_pos + cn @ loss_neg / n_neg),
    }
    estimates = {
        "accuracy": float(correct.mean()),
        "auroc": float(wins.mean()),
        "log_loss": float(0.5 * (loss_pos.mean() + loss_neg.mean())),
    }
    tail = (1.0 - level) / 2.0 * 100.0
    cis = {}
    for k, est in estimates.items():
        low, high = np.percentile(boots[k], [tail, 100.0 - tail]) if counts.size else (np.nan,) * 2
        cis[k] = Interval(est, float(low), float(high), level, "bootstrap-percentile-stratified")
    return cis, boots


def _rule_score(point: PathPoint, rule: str) -> float:
    if rule in ("auroc", "auroc-1se"):
        return point.auroc.estimate
    if rule in ("log-loss", "1se"):
        return -point.log_loss.estimate if point.log_loss is not None else float("nan")
    sup = point.suppression_accuracy
    return point.accuracy.estimate + (sup if sup is not None else 0.0)


def _choose(points: list[PathPoint], rule: str) -> tuple[int, int]:
    """``(optimum, chosen)`` indices into ``points`` (sorted by C) under ``rule``."""
    eligible = [i for i, p in enumerate(points) if p.n_positive > 0]
    if not eligible:
        raise ValueError("no point of the path has a positive-weight neuron")
    score = [_rule_score(p, rule) for p in points]
    opt = min(eligible, key=lambda i: (-score[i], points[i].n_nonzero, points[i].C))
    if not rule.endswith("1se"):
        return opt, opt
    se = points[opt].se.get("auroc" if rule == "auroc-1se" else "log_loss", 0.0)
    return opt, min(i for i in eligible if score[i] >= score[opt] - se - 1e-12)


def probe_path(
    train_split: FeatureSplit,
    val_split: FeatureSplit,
    Cs: Sequence[float] | str = "auto",
    penalty: str = "l1",
    mode: str = "3-vs-1",
    rule: str = DEFAULT_RULE,
    n_bootstrap_stability: int = 0,
    suppression_fn: Callable[[NeuronTable], float] | None = None,
    seed: int = 0,
    *,
    solver: str = "liblinear",
    standardize: bool = True,
    class_weight: Any = "balanced",
    max_iter: int = 1000,
    tol: float = 1e-4,
    intercept_scaling: float = 100.0,
    n_resamples: int = 1000,
    n_Cs: int = 13,
    extend: bool = True,
    max_extensions: int = 3,
) -> ProbePath:
    """Fit the probe over a grid of C and choose one.

    The training matrix is built (and standardised) once; the torch solver builds none (it
    reads the split's arrays as they lie, standardised on the fly). With ``solver="saga"`` or
    ``"torch"`` the fits are warm-started from the previous C's solution (the torch solver also
    reuses its norm bound); liblinear has no warm start and refits from zero.

    Every point gets held-out accuracy (p > 0.5), AUROC and log-loss (classes weighted equally)
    on the validation split's answer vectors, each with a stratified bootstrap CI. Rules (fits
    with no positive weight are never chosen; ties go to fewer non-zeros, then smaller C):

    - ``"auroc"``: maximise held-out AUROC (a proper ranking score, free of any threshold).
    - ``"log-loss"``: minimise the held-out balanced log-loss (a proper scoring rule).
    - ``"auroc-1se"`` (default) / ``"1se"``: the one-standard-error rule toward sparsity (as in
      lasso practice, Hastie, Tibshirani & Friedman, ESL 7.10): find the best AUROC
      (``"auroc-1se"``) or log-loss (``"1se"``), then take the *smallest* C whose score is within
      one bootstrap SE of it. Scores near the optimum are statistically tied; the sparser fit
      carries fewer noise neurons. The default was chosen by ``benchmarks/bench_recovery.py``.
    - ``"held-out"`` (the paper's code): maximise held-out accuracy at p > 0.5. Kept for
      comparison: accuracy at a fixed threshold rewards denser fits (README, "Finding the right
      neurons").
    - ``"held-out+suppression"``: maximise ``held-out accuracy + suppression_fn(neurons)``, where
      ``suppression_fn`` returns the model's QA accuracy in [0, 1] with the C's H-Neurons scaled
      to 0 (from :mod:`hneuron_lens.intervene`), as the paper's selection does.

    Grid edges: a choice (or, for the one-SE rules, the optimum) at an end of the grid means the
    best C may lie outside it. With ``extend`` the grid grows by three points at its own ratio
    (at least 100^(1/12), the automatic grid's) in that direction, up to ``max_extensions``
    times (``ProbePath.extensions``); a choice still at an end afterwards (or with
    ``extend=False``) issues a ``UserWarning`` and sets ``ProbePath.edge``. The sparse end is not an edge once a smaller C selects nothing.

    Args:
        train_split: Training split.
        val_split: Held-out split for selection.
        Cs: The grid, or ``"auto"``: ``n_Cs`` values from :func:`l1_min_C` (the first C
            with a non-zero weight) to 100 times it, evenly on a log scale.
        penalty: ``"l1"`` or ``"l2"``.
        mode: ``"3-vs-1"`` or ``"1-vs-1"``.
        rule: One of :data:`RULES`.
        n_bootstrap_stability: Bootstrap refits (samples resampled within label) at the chosen C
            used to measure neuron-set stability; 0 skips. For per-neuron selection
            frequencies use :func:`hneuron_lens.stability.stability_selection`.
        suppression_fn: ``fn(NeuronTable) -> accuracy`` for the suppression rule.
        seed: Seed for bootstraps.
        solver: Solver (see :class:`SparseProbe`).
        standardize: See :class:`SparseProbe` (default on: scale-free L1).
        class_weight: See :class:`SparseProbe` (default ``"balanced"``).
        max_iter: See :class:`SparseProbe`.
        tol: See :class:`SparseProbe`.
        intercept_scaling: See :class:`SparseProbe` (default 100: unpenalised intercept).
        n_resamples: Bootstrap resamples for the held-out CIs and the one-SE rules.
        n_Cs: Points of the automatic grid.
        extend: Extend the grid when the choice sits at an end.
        max_extensions: Most extensions.

    Returns:
        A :class:`ProbePath`.

    Raises:
        NotImplementedError: For ``rule="held-out+suppression"`` without ``suppression_fn``.
        ValueError: An unknown rule, a bad grid, or no C with a positive weight.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "held-out+suppression" and suppression_fn is None:
        raise NotImplementedError(
            "rule='held-out+suppression' needs suppression_fn from hneuron_lens.intervene "
            "(a function NeuronTable -> model QA accuracy with those neurons scaled to 0)"
        )
    template = SparseProbe(
        penalty=penalty,
        mode=mode,
        standardize=standardize,
        class_weight=class_weight,
        solver=solver,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
        intercept_scaling=intercept_scaling,
    )
    template._check_params()
    warm = solver in ("saga", "torch")  # liblinear has no warm start
    shared_est = template._make_estimator(warm_start=True) if warm else None
    xm, ym = _training_input(template, train_split)  # torch: streamed, no matrix
    if standardize:  # standardise once, then fit every C on the standardised rows
        mean, scale = _mean_scale(xm)
        if isinstance(xm, np.ndarray):
            xm -= mean.astype(np.float32)
            xm /= scale.astype(np.float32)
        else:  # RowBlocks: on the fly
            xm = xm.transformed(shift=mean, scale=scale)
    if isinstance(Cs, str):
        if Cs != "auto":
            raise ValueError(f"Cs must be a list of positive values or 'auto', got {Cs!r}")
        if n_Cs < 2:
            raise ValueError(f"n_Cs must be >= 2, got {n_Cs}")
        grid = list(l1_min_C(xm, ym, class_weight) * np.geomspace(1.0, 100.0, n_Cs))
    else:
        grid = sorted(float(c) for c in Cs)
        if not grid or any(not (c > 0 and math.isfinite(c)) for c in grid):
            raise ValueError(f"Cs must be a non-empty list of positive values, got {grid}")
    # extensions step by the grid's own ratio, at least the automatic grid's (100 ** (1 / 12))
    ratio = grid[-1] / grid[-2] if len(grid) > 1 and grid[-1] > grid[-2] else 10 ** (1 / 3)
    ratio = max(ratio, 100.0 ** (1 / 12))
    fingerprint = _split_fingerprint(train_split, mode)
    val_labels = np.asarray(val_split.labels).astype(np.int64)
    boot_counts = _resample_counts(
        list(bootstrap_indices(len(val_split), n_resamples, seed=seed, stratify=val_labels)),
        len(val_split),
    )
    fits: dict[float, tuple[PathPoint, SparseProbe]] = {}

    def fit_at(C: float) -> None:
        probe = SparseProbe(**{**template.get_params(), "C": C, "standardize": False})
        if shared_est is not None:
            shared_est.set_params(C=C)
        probe._fit_matrix(xm, ym, train_split.layout, estimator=shared_est, copy=False)
        if standardize:
            probe.standardize = True
            probe.mean_, probe.scale_ = mean, scale
        probe.train_fingerprint_ = fingerprint
        probe._train_ref = train_split
        _record_feature_provenance(probe, train_split)
        cis, boots = _boot_metrics(val_labels, probe.decision_function(val_split), boot_counts)
        h = probe.h_neurons
        sup = (
            float(suppression_fn(h))
            if (suppression_fn is not None and rule == "held-out+suppression" and len(h))
            else None
        )
        point = PathPoint(
            C=C,
            n_nonzero=int(np.count_nonzero(probe.coef_)),
            n_positive=len(h),
            accuracy=cis["accuracy"],
            auroc=cis["auroc"],
            neurons=h,
            log_loss=cis["log_loss"],
            se={k: float(np.std(v, ddof=1)) if v.size > 1 else 0.0 for k, v in boots.items()},
            suppression_accuracy=sup,
            converged=probe.converged_,
            fit_seconds=probe.fit_seconds_,
        )
        point.score = _rule_score(point, rule) if len(h) else float("-inf")
        fits[C] = (point, probe)

    extensions: list[str] = []
    while True:
        for C in tqdm([c for c in grid if c not in fits], desc="C path", leave=False):
            fit_at(C)
        grid = sorted(fits)
        points = [fits[c][0] for c in grid]
        if all(p.n_positive == 0 for p in points):
            if extend and len(extensions) < max_extensions:
                extensions.append("up")
                grid += [grid[-1] * ratio**k for k in (1, 2, 3)]
                continue
            raise ValueError(f"no C in {grid} gave a positive-weight neuron; try larger Cs")
        opt, chosen = _choose(points, rule)
        edge = None
        if len(points) == 1 or chosen == len(points) - 1 or opt == len(points) - 1:
            edge = "upper"
        elif chosen == 0:
            edge = "lower"
        if edge is None or not extend or len(extensions) >= max_extensions:
            break
        extensions.append("up" if edge == "upper" else "down")
        step = [ratio**k for k in (1, 2, 3)]
        grid += [grid[-1] * r for r in step] if edge == "upper" else [grid[0] / r for r in step]
    prev: frozenset[int] | None = None
    for p in points:
        p.jaccard_prev = None if prev is None else jaccard(prev, p.neurons.flat_set)
        prev = p.neurons.flat_set
    if edge is not None:
        warnings.warn(
            f"probe_path: the chosen C={points[chosen].C:.4g} (rule {rule}) is at the {edge} end "
            f"of the grid {points[0].C:.4g}..{points[-1].C:.4g} after {len(extensions)} "
            "extension(s): the best C may lie outside it; give a wider Cs",
            UserWarning,
            stacklevel=2,
        )
    best = fits[grid[chosen]][1]
    stability = None
    freq = None
    if n_bootstrap_stability > 0:
        stability, freq = _bootstrap_stability(train_split, best, n_bootstrap_stability, seed)
    return ProbePath(
        points,
        rule,
        chosen,
        best,
        stability,
        freq,
        [fits[c][1] for c in grid],
        optimum_index=opt,
        extensions=extensions,
        edge=edge,
    )


def _bootstrap_stability(
    split: FeatureSplit, best: SparseProbe, n_boot: int, seed: int
) -> tuple[Interval, np.ndarray]:
    chosen = best.h_neurons
    ref = chosen.flat_set
    labels = np.asarray(split.labels)
    jac = np.empty(n_boot)
    hits = np.zeros(len(chosen))
    params = best.get_params()
    idx_iter = bootstrap_indices(len(split), n_boot, seed=seed + 1, stratify=labels)
    for b, rows in enumerate(tqdm(idx_iter, total=n_boot, desc="bootstrap stability", leave=False)):
        refit = SparseProbe(**params)
        xm, ym = _training_input(refit, split, rows)
        refit._fit_matrix(xm, ym, split.layout, copy=False)
        s = refit.h_neurons.flat_set
        jac[b] = jaccard(ref, s)
        hits += np.array([int(i) in s for i in chosen.flat_index], dtype=float)
    tail = 2.5
    low, high = np.percentile(jac, [tail, 100 - tail])
    return Interval(
        float(jac.mean()), float(low), float(high), 0.95, "bootstrap-refit-jaccard"
    ), hits / n_boot


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def youden_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The score threshold maximising Youden's J = TPR - FPR (predict positive when score >= t)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError("youden_threshold needs both classes")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s.size - 1]  # end of each tie block
    tpr = np.cumsum(y_sorted)[last] / y.sum()
    fpr = np.cumsum(~y_sorted)[last] / (~y).sum()
    return float(s_sorted[last][int(np.argmax(tpr - fpr))])


def _binary_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    inclusive: bool,
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, Interval]:
    """Stratified-bootstrap CIs of the standard metrics; ``threshold`` is on the log-odds scale
    (0.0 = probability 0.5). Positive prediction: ``score >= t`` if ``inclusive`` else ``> t``."""

    def pred(s: np.ndarray) -> np.ndarray:
        return s >= threshold if inclusive else s > threshold

    def precision(y: np.ndarray, s: np.ndarray) -> float:
        p = pred(s)
        return float((p & (y == 1)).sum() / p.sum()) if p.any() else 0.0

    def recall(y: np.ndarray, s: np.ndarray) -> float:
        return float(pred(s)[y == 1].mean())

    def f1(y: np.ndarray, s: np.ndarray) -> float:
        pr, rc = precision(y, s), recall(y, s)
        return 0.0 if pr + rc == 0 else 2 * pr * rc / (pr + rc)

    fns = {
        "accuracy": lambda y, s: float(np.mean(pred(s) == (y == 1))),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc,
        "auprc": average_precision,
    }
    y = np.asarray(labels).astype(np.int64)
    cis = bootstrap_cis(fns, y, scores, n_resamples=n_resamples, seed=seed, stratify=y, level=level)
    # A percentile bootstrap cannot show any uncertainty when every resample scores the same
    # (e.g. perfect separation on a small test set gives [1, 1]). Proportions then get the
    # Wilson interval of their counts, which stays honest at 0 and 1; the others are marked.
    p, pos = pred(np.asarray(scores)), y == 1
    counts = {
        "accuracy": (int((p == pos).sum()), y.size),
        "precision": (int((p & pos).sum()), int(p.sum())),
        "recall": (int((p & pos).sum()), int(pos.sum())),
    }
    for name, iv in list(cis.items()):
        if not (iv.width == 0.0 and iv.estimate in (0.0, 1.0)):
            continue
        k, n = counts.get(name, (0, 0))
        if n > 0:
            w = wilson_ci(k, n, level)
            cis[name] = Interval(iv.estimate, w.low, w.high, level, "wilson (bootstrap degenerate)")
        else:
            cis[name] = Interval(iv.estimate, iv.low, iv.high, level, iv.method + " (degenerate)")
    return cis


def _single_neuron_stats(
    h: NeuronTable, x_eval: np.ndarray, labels: np.ndarray
) -> NeuronStatsTable:
    cols = (
        np.asarray(x_eval[:, h.flat_index], dtype=np.float64)
        if len(h)
        else np.zeros((labels.size, 0))
    )
    y = labels.astype(bool)
    aucs = np.array([auroc(y, cols[:, j]) for j in range(cols.shape[1])])
    if len(h) and min(int(y.sum()), int((~y).sum())) >= 2:
        d = cohens_d(cols[y], cols[~y])
    else:  # Cohen's d needs two values per class: undefined on a tiny evaluation set
        d = np.full(len(h), np.nan)
    return NeuronStatsTable(
        h.layer,
        h.neuron,
        h.weight,
        aucs,
        np.atleast_1d(np.asarray(d, dtype=np.float64)),
        h.frequency,
    )


def _spread(values: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high), level, "random-sets-percentile")


def _labels_for(X: FeatureSplit | np.ndarray, y: np.ndarray | None) -> np.ndarray:
    if isinstance(X, FeatureSplit):
        if y is not None:
            raise ValueError("pass y=None with a FeatureSplit (labels come from it)")
        return np.asarray(X.labels).astype(np.int64)
    if y is None:
        raise ValueError("y is required with an array")
    return np.asarray(y).astype(np.int64).reshape(-1)


def _describe_layout(layout: NeuronLayout) -> str:
    d = layout.d_mlp
    per = f"d_mlp={d[0]}" if len(set(d)) == 1 else f"d_mlp={list(d)}"
    return f"{layout.n_layers} layers x {per} ({layout.n_features} neurons)"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_probe_json(path: Path) -> dict[str, Any]:
    """``probe.json`` of a saved probe, or a ProbeError naming the file and what is wrong."""
    from hneuron_lens.errors import ProbeError

    hint = "give the directory written by `hneuron-lens train --out` / SparseProbe.save"
    try:
        meta = loads_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbeError("no probe.json: not a saved probe", file=path, hint=hint) from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
        line = getattr(err, "lineno", None)
        raise ProbeError(
            f"probe.json is not JSON ({type(err).__name__})", file=path, line=line, hint=hint
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != "hneuron_lens.SparseProbe":
        raise ProbeError("not a saved SparseProbe (no 'format' field)", file=path, hint=hint)
    version = meta.get("format_version")
    if not isinstance(version, int) or version > SAVE_FORMAT_VERSION:
        raise ProbeError(
            f"saved with format_version {version!r}; this library reads <= {SAVE_FORMAT_VERSION}",
            file=path,
            field="format_version",
            hint="upgrade hneuron_lens",
        )
    return meta


def _read_probe_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of ``weights.safetensors``, or a ProbeError naming the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from hneuron_lens.errors import ProbeError

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ProbeError(
            "no weights.safetensors beside probe.json",
            file=path,
            hint="copy the whole probe directory, or save the probe again",
        ) from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ProbeError(
            f"weights.safetensors is not a safetensors file ({str(err)[:80]})",
            file=path,
            hint="it was replaced or damaged (an .npy renamed?): save the probe again",
        ) from None
