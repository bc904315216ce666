"""Origin analysis: trace H-Neurons from an instruction-tuned model back to its base checkpoint.

The H-Neurons paper (Gao et al. 2025, arXiv:2512.01797, Sec. 6) asks whether H-Neurons are made
by alignment or inherited from pre-training, with two measurements. This module implements both
and adds the controls the paper does not report.

**Probe transfer** (:func:`transfer`). The probe trained on the instruct model's CETT features
is applied *unchanged* to the CETT features of the same judged (question, response) pairs
teacher-forced through the base checkpoint: the base model sees the paper's base prompt
``question + "\\nAnswer: " + response`` (its own BOS first), and the answer span is located again
on the base tokenizer. A transfer AUROC well above chance says the H-Neurons' signal already
exists in the base model. Beside it: the instruct model's own AUROC on the same samples (how
much is lost), probes refit on random layer-matched neuron sets of the same size, trained on the
instruct features and transferred the same way (how much any neurons of those layers carry),
and a probe trained on the base features themselves (the ceiling). Every metric has a stratified
bootstrap 95% CI.

**Parameter drift** (:func:`weight_drift`). For every neuron j the drift of each of its weight
vectors between the two checkpoints is ``1 - cos(w_base, w_instruct)``: its input vectors (the
up-projection row, and the gate row of gated MLPs) and its output vector (the down-projection
column). Each component is z-scored, the z-scores are averaged into one drift score, and the
neurons are ranked by it: the normalised rank is 1 for the neuron that moved least and 0 for the
one that moved most. The paper does not say over which neurons it z-scores, so both readings are
reported: ``"global"`` (z-scores and ranks over all neurons) and ``"layer"`` (z-scores and ranks
within each layer, which removes any difference in drift between layers). For a neuron set (the H-Neurons): its mean rank with a
bootstrap CI, the paper's one-sided t-test of the mean rank against 0.5, and a permutation null
over random neuron sets with the same size and the same per-layer counts (the paper has no null
model; layers drift by different amounts, so 0.5 alone is the wrong reference).

Drift **streams**: it reads both checkpoints tensor by tensor from their safetensors files
(``model.safetensors`` or shards with ``model.safetensors.index.json``), without building a
model or a ``TransformerBridge``; at any moment it holds one weight matrix of each checkpoint
plus a few MiB of work space, so a 70B pair fits in a few GiB. It reads Hugging Face
directories (hub snapshots, ``save_pretrained`` output) and this library's cached copies, and
also works on models already in memory (a ``TransformerBridge`` or a ``transformers`` model).

Parameter names per family (the neuron axis is what differs):

============================  ==========================  =====================  =================
family                        input (up) / gate           output (down)          layout
============================  ==========================  =====================  =================
Llama, Mistral, Qwen, Gemma   ``mlp.up_proj`` / gate_proj ``mlp.down_proj``      Linear [out, in]
GPT-2                         ``mlp.c_fc``                ``mlp.c_proj``         Conv1D [in, out]
GPT-NeoX                      ``mlp.dense_h_to_4h``       ``mlp.dense_4h_to_h``  Linear [out, in]
============================  ==========================  =====================  =================

Biases are left out: a neuron's direction lives in its weight vectors. Mixture-of-experts and
fused ``gate_up_proj`` checkpoints are refused with an error that says why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from hneuron_lens.errors import DataError, ModelError, OutputError, ProbeError
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.io import fsync_dir, library_version
from hneuron_lens.stats import Interval, auroc, average_precision, bootstrap_cis

logger = logging.getLogger(__name__)

__all__ = [
    "COMPONENTS",
    "DriftReport",
    "DriftSetTest",
    "RandomTransfer",
    "TransferMetrics",
    "TransferReport",
    "VARIANTS",
    "neuron_drift",
    "transfer",
    "weight_drift",
]

COMPONENTS = ("up", "gate", "down")
"""Drift components: input vector (up / ``c_fc`` / ``dense_h_to_4h``), gate vector (gated MLPs
only) and output vector (down / ``c_proj`` / ``dense_4h_to_h``)."""

VARIANTS = ("global", "layer")
"""How components are z-scored and the score ranked: over all neurons (``"global"``), or within
each layer (``"layer"``: z-scores and ranks per layer, so no layer drifts more than another)."""

DRIFT_FORMAT = 1
TRANSFER_FORMAT = 1
_CHUNK_BYTES = 8 << 20  # float64 work space per operand while computing cosines
TAIL = 0.1
"""Rank tails counted by :class:`DriftSetTest` (``n_top``: rank >= 1 - TAIL, ``n_bottom``: <= TAIL)."""


# ============================================================================================
# Checkpoints: weight sources read tensor by tensor
# ============================================================================================

# (family, key pattern, {parameter name: component}, {component: neuron axis of the tensor})
_FAMILIES: tuple[tuple[str, re.Pattern[str], dict[str, str], dict[str, int]], ...] = (
    (
        "gated",
        re.compile(
            r"^(?P<prefix>.*?)layers\.(?P<layer>\d+)\.mlp\.(?P<kind>gate_proj|up_proj|down_proj)\.weight$"
        ),
        {"up_proj": "up", "gate_proj": "gate", "down_proj": "down"},
        {"up": 0, "gate": 0, "down": 1},
    ),
    (
        "gpt2",
        re.compile(r"^(?P<prefix>.*?)h\.(?P<layer>\d+)\.mlp\.(?P<kind>c_fc|c_proj)\.weight$"),
        {"c_fc": "up", "c_proj": "down"},
        {"up": 1, "down": 0},
    ),
    (
        "neox",
        re.compile(
            r"^(?P<prefix>.*?)layers\.(?P<layer>\d+)\.mlp\.(?P<kind>dense_h_to_4h|dense_4h_to_h)\.weight$"
        ),
        {"dense_h_to_4h": "up", "dense_4h_to_h": "down"},
        {"up": 0, "down": 1},
    ),
)
_MOE = re.compile(r"\.(mlp\.experts|block_sparse_moe|mlp\.router|mlp\.gate\.weight$)")
_FUSED = re.compile(r"\.mlp\.gate_up_proj\.")


@dataclass(frozen=True)
class _Tensor:
    """Where one component of one layer lives: tensor name and the axis that indexes neurons."""

    key: str
    axis: int


class _Checkpoint:
    """A set of named weights read one tensor at a time (safetensors files or a live model)."""

    name: str
    family: str
    layers: list[dict[str, _Tensor]]

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def read(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def _discover(self, prefix: str | None) -> None:
        """Find the MLP tensors of every layer from the parameter names."""
        keys = self.keys()
        if any(_MOE.search(k) for k in keys):
            raise ModelError(
                f"{self.name} is a mixture-of-experts checkpoint: each expert has its own MLP, "
                "so 'neuron j of layer L' is not one neuron",
                hint="origin analysis supports dense and gated MLPs only",
            )
        if any(_FUSED.search(k) for k in keys):
            raise ModelError(
                f"{self.name} stores fused 'gate_up_proj' weights (Phi-3 style)",
                hint="split them into gate_proj / up_proj first; fused layouts are not supported",
            )
        for family, pattern, kinds, axes in _FAMILIES:
            found: dict[str, dict[int, dict[str, _Tensor]]] = {}
            for k in keys:
                m = pattern.match(k)
                if m is None:
                    continue
                comp = kinds[m["kind"]]
                found.setdefault(m["prefix"], {}).setdefault(int(m["layer"]), {})[comp] = _Tensor(
                    k, axes[comp]
                )
            if not found:
                continue
            if prefix is not None:
                if prefix not in found:
                    raise ModelError(
                        f"{self.name}: no MLP weights under prefix {prefix!r}",
                        field="prefix",
                        hint=f"prefixes found: {sorted(found)}",
                    )
                chosen = prefix
            else:
                ranked = sorted(found, key=lambda p: (-len(found[p]), p))
                if len(ranked) > 1 and len(found[ranked[0]]) == len(found[ranked[1]]):
                    raise ModelError(
                        f"{self.name} holds MLP weights under several prefixes {ranked}",
                        field="prefix",
                        hint="pass prefix= naming the language model's prefix",
                    )
                chosen = ranked[0]
            by_layer = found[chosen]
            n = max(by_layer) + 1
            missing = [layer for layer in range(n) if layer not in by_layer]
            need = set(axes)
            partial = [layer for layer, comps in by_layer.items() if set(comps) != need]
            if missing or partial:
                raise ModelError(
                    f"{self.name}: incomplete MLP weights (layers missing {missing[:5]}, "
                    f"layers without all of {sorted(need)}: {sorted(partial)[:5]})",
                    hint="is the checkpoint complete (every shard present)?",
                )
            self.family = family
            self.prefix = chosen
            self.layers = [by_layer[layer] for layer in range(n)]
            return
        raise ModelError(
            f"{self.name}: no MLP weights found (looked for *.mlp.up_proj/gate_proj/down_proj, "
            "*.mlp.c_fc/c_proj, *.mlp.dense_h_to_4h/dense_4h_to_h)",
            hint="origin analysis supports Llama/Mistral/Qwen/Gemma, GPT-2 and GPT-NeoX layouts",
        )

    def d_mlp(self) -> tuple[int, ...]:
        return tuple(int(self.shape(t["down"].key)[t["down"].axis]) for t in self.layers)


class _SafetensorsCheckpoint(_Checkpoint):
    """Safetensors files of a Hugging Face directory (sharded or not), read tensor by tensor."""

    def __init__(self, path: Path, prefix: str | None = None) -> None:
        self.path = path
        self.name = str(path)
        self._file_of: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        files = self._files(path)
        from safetensors import safe_open

        for f in files:
            try:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        self._file_of[k] = f
                        self._shapes[k] = tuple(h.get_slice(k).get_shape())
            except Exception as err:  # safetensors raises its own error types
                raise ModelError(
                    f"cannot read the safetensors header of {f}: {err}",
                    file=f,
                    hint="the file is damaged or incomplete; download / convert it again",
                ) from err
        self._discover(prefix)

    @staticmethod
    def _files(path: Path) -> list[Path]:
        if path.is_file():
            if path.suffix != ".safetensors":
                raise ModelError(f"{path} is not a .safetensors file", file=path)
            return [path]
        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as err:
                raise ModelError(
                    f"unreadable shard index: {err}", file=index, field="weight_map"
                ) from err
            files = sorted({path / name for name in weight_map.values()})
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise ModelError(
                    f"{len(absent)} shards named in the index are missing: {absent[:5]}",
                    file=index,
                    hint="download the complete checkpoint",
                )
            return files
        files = sorted(path.glob("*.safetensors"))
        if files:
            return files
        hint = "save it with save_pretrained(..., safe_serialization=True)"
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            hint = "it holds only pickle (.bin/.pt) weights; " + hint
        raise ModelError(f"no safetensors weights in {path}", file=path, hint=hint)

    def keys(self) -> list[str]:
        return list(self._file_of)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def read(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        # The tensor is backed by the file mapping: its pages are freed with the tensor.
        with safe_open(str(self._file_of[key]), framework="pt") as h:
            return h.get_tensor(key)

    def identity(self) -> dict[str, Any]:
        from hneuron_lens.models import quick_digest

        files = sorted(set(self._file_of.values()))
        return {
            "source": str(self.path),
            "family": self.family,
            "files": {f.name: quick_digest(f) for f in files},
        }


class _ModuleCheckpoint(_Checkpoint):
    """A ``transformers`` model in memory (parameter names as in its safetensors files)."""

    def __init__(self, module: Any, prefix: str | None = None) -> None:
        self.module = module
        self.name = str(
            getattr(getattr(module, "config", None), "_name_or_path", "") or type(module).__name__
        )
        self._params = dict(module.state_dict())
        self._discover(prefix)

    def keys(self) -> list[str]:
        return list(self._params)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._params[key].shape)

    def read(self, key: str) -> torch.Tensor:
        return self._params[key].detach()

    def identity(self) -> dict[str, Any]:
        return {"source": self.name, "family": self.family, "in_memory": True}


class _BridgeCheckpoint(_Checkpoint):
    """A ``TransformerBridge``: ``W_in`` / ``W_gate`` ``[d_model, d_mlp]``, ``W_out`` ``[d_mlp, d_model]``."""

    def __init__(self, model: Any) -> None:
        from hneuron_lens.models import _is_moe

        self.model = model
        self.name = str(getattr(model.cfg, "model_name", "TransformerBridge"))
        self.layers = []
        gated = []
        for layer, block in enumerate(model.blocks):
            mlp = block.mlp
            if _is_moe(mlp):
                raise ModelError(
                    f"{self.name} layer {layer} is a mixture-of-experts block",
                    hint="origin analysis supports dense and gated MLPs only",
                )
            comps = {
                "up": _Tensor(f"blocks.{layer}.mlp.W_in", 1),
                "down": _Tensor(f"blocks.{layer}.mlp.W_out", 0),
            }
            if getattr(mlp, "W_gate", None) is not None:
                comps["gate"] = _Tensor(f"blocks.{layer}.mlp.W_gate", 1)
            gated.append("gate" in comps)
            self.layers.append(comps)
        self.family = "gated" if all(gated) else "dense"

    def _get(self, key: str) -> torch.Tensor:
        _, layer, _, attr = key.split(".")
        return getattr(self.model.blocks[int(layer)].mlp, attr).detach()

    def keys(self) -> list[str]:
        return [t.key for comps in self.layers for t in comps.values()]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._get(key).shape)

    def read(self, key: str) -> torch.Tensor:
        return self._get(key)

    def identity(self) -> dict[str, Any]:
        from hneuron_lens.models import model_identity

        return {"source": self.name, "family": self.family, "model": model_identity(self.model)}


def _resolve_path(spec: str) -> Path:
    """An embedded key, a local path, or a hub id already in the local Hugging Face cache."""
    from hneuron_lens.models import EMBEDDED, embedded_checkpoint

    if spec in EMBEDDED:
        return embedded_checkpoint(spec)
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"checkpoint not found: {spec}", file=spec)
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                spec, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]
            )
        )
    except Exception as err:
        raise ModelError(
            f"{spec!r} is neither a local directory nor in the local Hugging Face cache",
            hint=f"download it first: huggingface-cli download {spec} --include '*.safetensors' "
            "'*.json' (weight_drift never downloads behind your back)",
        ) from err


def _open(source: Any, prefix: str | None) -> _Checkpoint:
    if isinstance(source, _Checkpoint):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _SafetensorsCheckpoint(_resolve_path(str(source)), prefix)
    if hasattr(source, "blocks") and hasattr(source, "hook_dict"):
        return _BridgeCheckpoint(source)
    if isinstance(source, torch.nn.Module):
        return _ModuleCheckpoint(source, prefix)
    raise TypeError(
        f"cannot read weights from a {type(source).__name__}: pass a directory / .safetensors "
        "file, an embedded model key, a hub id in the local cache, a TransformerBridge or a "
        "transformers model"
    )


# ============================================================================================
# Drift
# ============================================================================================


def neuron_drift(
    a: torch.Tensor, b: torch.Tensor, axis: int = 0, chunk_bytes: int = _CHUNK_BYTES
) -> Float[np.ndarray, " n"]:
    """``1 - cos(a_j, b_j)`` for every slice j along ``axis`` of two same-shape 2-D tensors.

    Computed as ``||a_j/|a_j| - b_j/|b_j|||^2 / 2`` in float64 (exact 0 for identical vectors,
    accurate for the tiny drifts of a short fine-tune), in chunks of at most ``chunk_bytes`` of
    float64 per operand, so the work space stays small whatever the tensor size. A zero vector
    against a zero vector has drift 0; against a non-zero one, 1 (cos taken as 0).

    Args:
        a: ``[n, d]`` (``axis=0``) or ``[d, n]`` (``axis=1``) weights of one checkpoint.
        b: the same tensor of the other checkpoint.
        axis: the axis that indexes neurons.
        chunk_bytes: float64 work space per operand.

    Returns:
        float64 ``[n]`` drifts in ``[0, 2]``.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"need two 2-D tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    n, d = a.shape[axis], a.shape[1 - axis]
    step = max(1, int(chunk_bytes) // (8 * max(d, 1)))
    out = np.empty(n, dtype=np.float64)
    with torch.no_grad():
        for j0 in range(0, n, step):
            k = min(step, n - j0)
            # two float64 copies of the chunk, then everything in place
            xa = a.narrow(axis, j0, k).to(torch.float64, copy=True)
            xb = b.narrow(axis, j0, k).to(torch.float64, copy=True)
            if axis == 1:
                xa, xb = xa.T, xb.T
            na = torch.linalg.vector_norm(xa, dim=1)
            nb = torch.linalg.vector_norm(xb, dim=1)
            xa.div_(torch.where(na > 0, na, 1.0)[:, None])
            xb.div_(torch.where(nb > 0, nb, 1.0)[:, None])
            drift = xa.sub_(xb).square_().sum(dim=1).mul_(0.5)
            del xa, xb
            drift = torch.where((na == 0) & (nb == 0), 0.0, drift)
            drift = torch.where((na == 0) ^ (nb == 0), 1.0, drift)
            out[j0 : j0 + k] = drift.numpy()
    return out


def _zscore(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / sd``; all zeros when ``x`` is constant."""
    sd = float(x.std())
    if not np.isfinite(sd) or sd == 0.0:
        return np.zeros_like(x)
    return (x - x.mean()) / sd


def _normalised_rank(score: np.ndarray) -> np.ndarray:
    """1 for the least drift, 0 for the most; ties share their average rank."""
    from scipy.stats import rankdata

    n = score.size
    if n < 2:
        return np.full(n, 0.5)
    return (rankdata(-score, method="average") - 1.0) / (n - 1.0)


@dataclass
class DriftSetTest:
    """How far a neuron set (the H-Neurons) drifted, against 0.5 and against random sets."""

    variant: str
    """``"global"`` or ``"layer"`` z-scoring (see :data:`VARIANTS`)."""
    n_neurons: int
    """Neurons in the set."""
    mean_rank: Interval
    """Mean normalised rank (1 = least drift) with a bootstrap CI over the set's neurons."""
    t_statistic: float
    """One-sample t statistic of the ranks against 0.5 (the paper's test)."""
    t_p_value: float
    """Its p-value for ``alternative``."""
    alternative: str
    """``"greater"`` (the set drifted less than the median neuron: the paper's claim),
    ``"less"`` or ``"two-sided"``."""
    null: Interval
    """Mean rank of random sets with the same per-layer counts: mean and 2.5-97.5 percentiles."""
    perm_p_value: float
    """``(1 + #{null >= observed}) / (1 + n_permutations)`` (``<=`` for ``"less"``, both tails
    around the null mean for ``"two-sided"``)."""
    n_permutations: int
    """Random sets drawn."""
    n_top: int = 0
    """Neurons of the set among the least-drifting tenth (rank >= 0.9)."""
    n_bottom: int = 0
    """Neurons of the set among the most-drifting tenth (rank <= 0.1). The mean rank hides a
    set that sits at both extremes; these counts show it."""
    top_p_value: float = float("nan")
    """Permutation p-value of at least ``n_top`` such neurons in a random layer-matched set."""
    bottom_p_value: float = float("nan")
    """Permutation p-value of at least ``n_bottom`` such neurons in a random layer-matched set."""
    null_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    """Every random set's mean rank (for plots)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "n_neurons": self.n_neurons,
            "mean_rank": self.mean_rank.to_dict(),
            "t_statistic": _nan_none(self.t_statistic),
            "t_p_value": _nan_none(self.t_p_value),
            "alternative": self.alternative,
            "null": self.null.to_dict(),
            "perm_p_value": _nan_none(self.perm_p_value),
            "n_permutations": self.n_permutations,
            "n_top": self.n_top,
            "n_bottom": self.n_bottom,
            "top_p_value": _nan_none(self.top_p_value),
            "bottom_p_value": _nan_none(self.bottom_p_value),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], null_values: np.ndarray | None = None) -> DriftSetTest:
        return cls(
            variant=d["variant"],
            n_neurons=int(d["n_neurons"]),
            mean_rank=Interval.from_dict(d["mean_rank"]),
            t_statistic=_none_nan(d["t_statistic"]),
            t_p_value=_none_nan(d["t_p_value"]),
            alternative=d["alternative"],
            null=Interval.from_dict(d["null"]),
            perm_p_value=_none_nan(d["perm_p_value"]),
            n_permutations=int(d["n_permutations"]),
            n_top=int(d.get("n_top", 0)),
            n_bottom=int(d.get("n_bottom", 0)),
            top_p_value=_none_nan(d.get("top_p_value")),
            bottom_p_value=_none_nan(d.get("bottom_p_value")),
            null_values=np.zeros(0) if null_values is None else np.asarray(null_values),
        )


def _nan_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _none_nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _flat_indices(neurons: Any, layout: NeuronLayout) -> np.ndarray:
    """Flat indices of a neuron set: a NeuronTable / NeuronSet, or ``(layer, neuron)`` pairs."""
    pairs = list(neurons)
    if not pairs:
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray([(int(a), int(b)) for a, b in pairs], dtype=np.int64)
    try:
        flat = np.asarray(layout.flat_index(arr[:, 0], arr[:, 1]), dtype=np.int64).reshape(-1)
    except (IndexError, ValueError) as err:
        raise ModelError(
            f"a neuron of the set lies outside this model ({layout.n_layers} layers, d_mlp "
            f"{sorted(set(layout.d_mlp))}): {err}",
            field="neurons",
        ) from err
    if len(np.unique(flat)) != flat.size:
        raise DataError("the neuron set lists a neuron twice", field="neurons")
    return flat


def _draw_subsets(rng: np.random.Generator, n: int, k: int, times: int) -> np.ndarray:
    """``[times, k]`` indices into ``range(n)``, each row a uniform k-subset (no repeats).

    Rows are drawn with replacement and every row holding a repeat is drawn again whole
    (rejection sampling keeps each row uniform over k-subsets); for large ``k / n`` the
    rows come from ``Generator.choice`` instead.
    """
    if k > n:
        raise ValueError(f"cannot draw {k} of {n} without replacement")
    if 4 * k > n:
        return np.stack([rng.choice(n, size=k, replace=False) for _ in range(times)])
    out = rng.integers(0, n, size=(times, k))
    while True:
        srt = np.sort(out, axis=1)
        bad = np.flatnonzero((np.diff(srt, axis=1) == 0).any(axis=1))
        if bad.size == 0:
            return out
        out[bad] = rng.integers(0, n, size=(bad.size, k))


def _set_test(
    rank: np.ndarray,
    layout: NeuronLayout,
    flat: np.ndarray,
    variant: str,
    n_permutations: int,
    n_resamples: int,
    alternative: str,
    seed: int,
    level: float = 0.95,
) -> DriftSetTest:
    from scipy.stats import ttest_1samp

    from hneuron_lens.stats import bootstrap_ci

    ranks = rank[flat]
    k = ranks.size
    observed = float(ranks.mean())
    if k >= 2 and np.ptp(ranks) > 0:
        t = ttest_1samp(ranks, 0.5, alternative=alternative)
        t_stat, t_p = float(t.statistic), float(t.pvalue)
        ci = bootstrap_ci(np.mean, ranks, n_resamples=n_resamples, seed=seed, level=level)
    elif k >= 2 and observed != 0.5:  # every rank equal: the t statistic is infinite
        t_stat = float(np.sign(observed - 0.5) * np.inf)
        agrees = {"greater": observed > 0.5, "less": observed < 0.5, "two-sided": True}
        t_p = 0.0 if agrees[alternative] else 1.0
        ci = Interval(observed, observed, observed, level, "constant (every rank equal)")
    else:
        t_stat = t_p = float("nan")
        ci = Interval(observed, float("nan"), float("nan"), level, "undefined (n < 2 or constant)")
    rng = np.random.default_rng(seed)
    layers = np.searchsorted(layout.offsets, flat, side="right") - 1
    in_set = np.zeros(layout.n_features, dtype=bool)
    in_set[flat] = True
    null = np.zeros(n_permutations)
    null_top = np.zeros(n_permutations, dtype=np.int64)
    null_bottom = np.zeros(n_permutations, dtype=np.int64)
    for layer, count in zip(*np.unique(layers, return_counts=True), strict=True):
        lo, hi = int(layout.offsets[layer]), int(layout.offsets[layer + 1])
        pool = np.flatnonzero(~in_set[lo:hi]) + lo
        if pool.size < count:  # the set fills the layer: draw from the whole layer
            pool = np.arange(lo, hi)
        drawn = rank[pool][_draw_subsets(rng, pool.size, int(count), n_permutations)]
        null += drawn.sum(axis=1)
        null_top += (drawn >= 1 - TAIL).sum(axis=1)
        null_bottom += (drawn <= TAIL).sum(axis=1)
    null /= k
    n_top, n_bottom = int(np.sum(ranks >= 1 - TAIL)), int(np.sum(ranks <= TAIL))
    tail = (1 - level) / 2 * 100
    lo_q, hi_q = np.percentile(null, [tail, 100 - tail]) if n_permutations else (np.nan, np.nan)
    if alternative == "greater":
        extreme = int(np.sum(null >= observed - 1e-12))
    elif alternative == "less":
        extreme = int(np.sum(null <= observed + 1e-12))
    else:
        centre = float(null.mean())
        extreme = int(np.sum(np.abs(null - centre) >= abs(observed - centre) - 1e-12))
    return DriftSetTest(
        variant=variant,
        n_neurons=k,
        mean_rank=ci,
        t_statistic=t_stat,
        t_p_value=t_p,
        alternative=alternative,
        null=Interval(
            float(null.mean()), float(lo_q), float(hi_q), level, "layer-matched permutation"
        ),
        perm_p_value=(1 + extreme) / (1 + n_permutations),
        n_permutations=int(n_permutations),
        n_top=n_top,
        n_bottom=n_bottom,
        top_p_value=(1 + int(np.sum(null_top >= n_top))) / (1 + n_permutations),
        bottom_p_value=(1 + int(np.sum(null_bottom >= n_bottom))) / (1 + n_permutations),
        null_values=null,
    )


@dataclass
class DriftReport:
    """Per-neuron parameter drift between a base and an instruct checkpoint, and set tests.

    Arrays are flat over (layer, neuron) in :class:`~hneuron_lens.features.NeuronLayout` order.
    """

    layout: NeuronLayout
    """Neurons per layer."""
    components: dict[str, Float[np.ndarray, " n_features"]]
    """``1 - cos`` per component (``"up"``, ``"gate"`` for gated MLPs, ``"down"``)."""
    scores: dict[str, Float[np.ndarray, " n_features"]]
    """Drift score per variant: mean of the z-scored components (higher = moved more)."""
    ranks: dict[str, Float[np.ndarray, " n_features"]]
    """Normalised rank per variant in [0, 1]: 1 = least drift, 0 = most (over all neurons for
    ``"global"``, within the neuron's layer for ``"layer"``)."""
    base: dict[str, Any]
    """Identity of the base checkpoint (path, family, file digests)."""
    instruct: dict[str, Any]
    """Identity of the instruct checkpoint."""
    family: str
    """``"gated"``, ``"gpt2"``, ``"neox"`` (files) or ``"gated"`` / ``"dense"`` (a bridge)."""
    neuron_set: np.ndarray | None = None
    """Flat indices of the tested set (the H-Neurons), or ``None``."""
    tests: dict[str, DriftSetTest] = field(default_factory=dict)
    """Set test per variant."""
    notes: list[str] = field(default_factory=list)
    """Things to know when reading the numbers (identical weights, constant components...)."""
    seconds: float = 0.0
    """Wall time of :func:`weight_drift`."""

    @property
    def n_features(self) -> int:
        return self.layout.n_features

    @property
    def identical(self) -> bool:
        """True when every component's drift is exactly 0 (the MLP weights are identical)."""
        return all(not np.any(v) for v in self.components.values())

    def drift(self) -> Float[np.ndarray, " n_features"]:
        """Mean ``1 - cos`` over the components (unscaled; for plots and per-layer summaries)."""
        return np.mean(np.stack(list(self.components.values())), axis=0)

    def test_set(
        self,
        neurons: Any,
        *,
        n_permutations: int = 10_000,
        n_resamples: int = 1000,
        alternative: str = "greater",
        seed: int = 0,
    ) -> dict[str, DriftSetTest]:
        """Test any neuron set against this report's ranks (both variants); no weights re-read."""
        _check_alternative(alternative)
        flat = _flat_indices(neurons, self.layout)
        if flat.size == 0:
            raise DataError("the neuron set is empty", field="neurons")
        return {
            v: _set_test(
                self.ranks[v], self.layout, flat, v, n_permutations, n_resamples, alternative, seed
            )
            for v in self.ranks
        }

    def per_layer(self) -> Any:
        """One row per layer: mean / median drift per component, mean ranks, set size and rank."""
        import pandas as pd

        rows = []
        off = self.layout.offsets
        in_set = np.zeros(self.n_features, dtype=bool)
        if self.neuron_set is not None:
            in_set[self.neuron_set] = True
        for layer in range(self.layout.n_layers):
            sl = slice(int(off[layer]), int(off[layer + 1]))
            row: dict[str, Any] = {"layer": layer, "n_neurons": int(self.layout.d_mlp[layer])}
            for c, v in self.components.items():
                row[f"{c}_mean"] = float(v[sl].mean())
                row[f"{c}_median"] = float(np.median(v[sl]))
            for var, r in self.ranks.items():
                row[f"rank_{var}_mean"] = float(r[sl].mean())
            k = int(in_set[sl].sum())
            row["n_set"] = k
            for var, r in self.ranks.items():
                row[f"set_rank_{var}"] = float(r[sl][in_set[sl]].mean()) if k else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)

    def to_pandas(self) -> Any:
        """One row per neuron: layer, neuron, components, scores, ranks, ``in_set``."""
        import pandas as pd

        layer, neuron = self.layout.unflatten_index(np.arange(self.n_features))
        data: dict[str, Any] = {"layer": layer, "neuron": neuron}
        data.update({f"drift_{c}": v for c, v in self.components.items()})
        data.update({f"score_{v}": s for v, s in self.scores.items()})
        data.update({f"rank_{v}": r for v, r in self.ranks.items()})
        in_set = np.zeros(self.n_features, dtype=bool)
        if self.neuron_set is not None:
            in_set[self.neuron_set] = True
        data["in_set"] = in_set
        return pd.DataFrame(data)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no per-neuron arrays)."""
        return {
            "format": "hneuron_lens.DriftReport",
            "format_version": DRIFT_FORMAT,
            "library_version": library_version(),
            "layout": self.layout.to_dict(),
            "family": self.family,
            "components": sorted(self.components, key=COMPONENTS.index),
            "variants": list(self.ranks),
            "base": self.base,
            "instruct": self.instruct,
            "component_stats": {
                c: {
                    "mean": float(v.mean()),
                    "median": float(np.median(v)),
                    "max": float(v.max()),
                    "n_zero": int(np.sum(v == 0)),
                }
                for c, v in self.components.items()
            },
            "n_set": None if self.neuron_set is None else int(self.neuron_set.size),
            "tests": {v: t.to_dict() for v, t in self.tests.items()},
            "notes": list(self.notes),
            "seconds": self.seconds,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``drift.json`` (summary, tests) and ``drift.safetensors`` (per-neuron arrays).

        The directory is written to a temporary sibling and renamed into place.
        """
        from safetensors.numpy import save_file

        path = Path(path)
        tensors = {f"component.{c}": v.astype(np.float64) for c, v in self.components.items()}
        tensors.update({f"score.{v}": s.astype(np.float64) for v, s in self.scores.items()})
        tensors.update({f"rank.{v}": r.astype(np.float64) for v, r in self.ranks.items()})
        if self.neuron_set is not None:
            tensors["neuron_set"] = self.neuron_set.astype(np.int64)
        for v, t in self.tests.items():
            if t.null_values.size:
                tensors[f"null.{v}"] = t.null_values.astype(np.float64)
        return _write_dir(
            path,
            {
                "drift.json": json.dumps(self.summary(), indent=1),
            },
            lambda d: save_file(tensors, str(d / "drift.safetensors")),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DriftReport:
        """Read a report written by :meth:`save`."""
        from safetensors.numpy import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "drift.json").read_text())
            arrays = load_file(str(path / "drift.safetensors"))
        except (OSError, ValueError) as err:
            raise DataError(f"not a saved DriftReport: {err}", file=path) from err
        if (
            meta.get("format") != "hneuron_lens.DriftReport"
            or int(meta["format_version"]) > DRIFT_FORMAT
        ):
            raise DataError("not a DriftReport this version can read", file=path / "drift.json")
        return cls(
            layout=NeuronLayout.from_dict(meta["layout"]),
            components={c: arrays[f"component.{c}"] for c in meta["components"]},
            scores={v: arrays[f"score.{v}"] for v in meta["variants"]},
            ranks={v: arrays[f"rank.{v}"] for v in meta["variants"]},
            base=meta["base"],
            instruct=meta["instruct"],
            family=meta["family"],
            neuron_set=arrays.get("neuron_set"),
            tests={
                v: DriftSetTest.from_dict(t, arrays.get(f"null.{v}"))
                for v, t in meta["tests"].items()
            },
            notes=list(meta["notes"]),
            seconds=float(meta["seconds"]),
        )

    def __str__(self) -> str:
        lines = [
            f"parameter drift: {self.layout.n_layers} layers, {self.n_features:,} neurons "
            f"({self.family}); base {self.base.get('source')} -> instruct {self.instruct.get('source')}",
            f"{'component':<10} {'mean 1-cos':>12} {'median':>12} {'max':>12}",
        ]
        for c in COMPONENTS:
            if c in self.components:
                v = self.components[c]
                lines.append(f"{c:<10} {v.mean():>12.3e} {np.median(v):>12.3e} {v.max():>12.3e}")
        if self.tests:
            n = next(iter(self.tests.values())).n_neurons
            alt = next(iter(self.tests.values())).alternative
            lines.append(
                f"neuron set ({n} neurons); rank 1 = least drift; tests of mean rank vs 0.5 "
                f"({alt}) and vs layer-matched random sets"
            )
            lines.append(
                f"{'z-score':<8} {'mean rank [95% CI]':<26} {'t':>7} {'p (t)':>9} "
                f"{'random sets [95%]':<24} {'p (perm)':>9}"
            )
            for v, t in self.tests.items():
                lines.append(
                    f"{v:<8} {str(t.mean_rank):<26} {t.t_statistic:>7.2f} {t.t_p_value:>9.3g} "
                    f"{str(t.null):<24} {t.perm_p_value:>9.3g}"
                )
            expected = n * TAIL
            lines.append(
                f"rank tails (random sets expect ~{expected:.1f} each): least-drifting tenth / "
                "most-drifting tenth, permutation p"
            )
            for v, t in self.tests.items():
                lines.append(
                    f"{v:<8} {t.n_top:>3} (p {t.top_p_value:.3g}) / {t.n_bottom:>3} "
                    f"(p {t.bottom_p_value:.3g})"
                )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _scores_and_ranks(
    components: dict[str, np.ndarray], layout: NeuronLayout
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mean z-score of the components and its normalised rank, per variant (see VARIANTS)."""
    layers = [
        slice(int(a), int(b)) for a, b in zip(layout.offsets[:-1], layout.offsets[1:], strict=True)
    ]

    def per_layer(x: np.ndarray, fn: Any) -> np.ndarray:
        out = np.zeros_like(x, dtype=np.float64)
        for sl in layers:
            out[sl] = fn(x[sl])
        return out

    stacked = list(components.values())
    scores = {
        "global": np.mean([_zscore(v) for v in stacked], axis=0),
        "layer": np.mean([per_layer(v, _zscore) for v in stacked], axis=0),
    }
    ranks = {
        "global": _normalised_rank(scores["global"]),
        "layer": per_layer(scores["layer"], _normalised_rank),
    }
    return scores, ranks


def _check_alternative(alternative: str) -> None:
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(
            f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}"
        )


def _describe(ck: _Checkpoint) -> str:
    d = ck.d_mlp()
    per = f"d_mlp={d[0]}" if len(set(d)) == 1 else f"d_mlp={list(d)}"
    return f"{ck.name} ({ck.family}, {len(d)} layers x {per})"


def _check_pair(base: _Checkpoint, inst: _Checkpoint) -> None:
    """Same family, same layers, same tensor shapes; otherwise name both checkpoints."""
    if base.family != inst.family or len(base.layers) != len(inst.layers):
        raise ModelError(
            f"the checkpoints do not pair up: base {_describe(base)} vs instruct {_describe(inst)}",
            hint="origin analysis compares two checkpoints of one architecture",
        )
    for layer, (cb, ci) in enumerate(zip(base.layers, inst.layers, strict=True)):
        if set(cb) != set(ci):
            raise ModelError(
                f"layer {layer}: base has MLP parts {sorted(cb)}, instruct {sorted(ci)} "
                f"(base {base.name}, instruct {inst.name})"
            )
        for comp in (c for c in COMPONENTS if c in cb):
            sb, si = base.shape(cb[comp].key), inst.shape(ci[comp].key)
            if sb != si:
                raise ModelError(
                    f"layer {layer} {comp}: base {base.name} has {cb[comp].key} of shape {sb}, "
                    f"instruct {inst.name} has {ci[comp].key} of shape {si}",
                    hint="the two checkpoints must share one architecture and size",
                )


def weight_drift(
    base: Any,
    instruct: Any,
    neurons: Any = None,
    *,
    n_permutations: int = 10_000,
    n_resamples: int = 1000,
    alternative: str = "greater",
    seed: int = 0,
    prefix: str | None = None,
    chunk_bytes: int = _CHUNK_BYTES,
    progress: bool = True,
) -> DriftReport:
    """Per-neuron parameter drift between two checkpoints, streamed tensor by tensor.

    Args:
        base: the base (pre-trained) checkpoint: a Hugging Face directory or ``.safetensors``
            file, an embedded model key (``"gemma-3-270m"``: its cached copy), a hub id already
            in the local Hugging Face cache, a ``TransformerBridge`` or a ``transformers`` model.
        instruct: the instruction-tuned checkpoint, in any of the same forms.
        neurons: optional neuron set to test (``probe.h_neurons``, a ``NeuronSet``, or
            ``(layer, neuron)`` pairs).
        n_permutations: random layer-matched sets for the permutation null.
        n_resamples: bootstrap resamples for the CI of the set's mean rank.
        alternative: ``"greater"`` (the paper: H-Neurons drift less, mean rank > 0.5),
            ``"less"`` or ``"two-sided"``.
        seed: seed for the permutation null and the bootstrap.
        prefix: parameter-name prefix of the language model when a checkpoint holds several
            (multimodal checkpoints); default: found from the names.
        chunk_bytes: float64 work space per operand while computing cosines.
        progress: show a tqdm bar over layers.

    Returns:
        A :class:`DriftReport` (``tests`` filled when ``neurons`` is given).

    Raises:
        ModelError: a checkpoint cannot be read, is a mixture of experts, or the two do not
            pair up (the message names both checkpoints and the first differing tensor).

    Example:
        >>> report = weight_drift("gemma-3-270m", derived_dir, probe.h_neurons)  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    _check_alternative(alternative)
    t0 = time.perf_counter()
    ck_base, ck_inst = _open(base, prefix), _open(instruct, prefix)
    _check_pair(ck_base, ck_inst)
    layout = NeuronLayout(ck_base.d_mlp())
    comps = [c for c in COMPONENTS if c in ck_base.layers[0]]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in comps}
    for layer in tqdm(
        range(layout.n_layers), disable=not progress, desc="weight drift", unit="layer"
    ):
        for c in comps:
            tb, ti = ck_base.layers[layer][c], ck_inst.layers[layer][c]
            wb = ck_base.read(tb.key)
            wi = ck_inst.read(ti.key)
            parts[c].append(neuron_drift(wb, wi, tb.axis, chunk_bytes))
            del wb, wi
    components = {c: np.concatenate(v) for c, v in parts.items()}

    scores, ranks = _scores_and_ranks(components, layout)
    notes: list[str] = []
    if all(not np.any(v) for v in components.values()):
        notes.append(
            "the two checkpoints have identical MLP weights: every drift is 0, all neurons tie "
            "at rank 0.5 and the tests are undefined"
        )
    else:
        for c, v in components.items():
            if np.ptp(v) == 0:
                notes.append(
                    f"component {c!r} drifts the same for every neuron: its z-scores are 0"
                )
    report = DriftReport(
        layout=layout,
        components=components,
        scores=scores,
        ranks=ranks,
        base=ck_base.identity(),
        instruct=ck_inst.identity(),
        family=ck_base.family,
        notes=notes,
    )
    if neurons is not None:
        flat = _flat_indices(neurons, layout)
        if flat.size == 0:
            report.notes.append("the neuron set is empty: no set test")
        else:
            report.neuron_set = np.sort(flat)
            report.tests = report.test_set(
                neurons,
                n_permutations=n_permutations,
                n_resamples=n_resamples,
                alternative=alternative,
                seed=seed,
            )
    report.seconds = time.perf_counter() - t0
    logger.info("%s", report)
    return report


# ============================================================================================
# Probe transfer
# ============================================================================================


@dataclass
class TransferMetrics:
    """One scorer's metrics on one set of features, with stratified bootstrap 95% CIs."""

    name: str
    """What was scored (e.g. ``"probe on base"``)."""
    n: int
    """Samples scored."""
    auroc: Interval
    accuracy: Interval
    """Accuracy at the probe's own threshold (log-odds 0, probability 0.5)."""
    auprc: Interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "auroc": self.auroc.to_dict(),
            "accuracy": self.accuracy.to_dict(),
            "auprc": self.auprc.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferMetrics:
        return cls(
            d["name"],
            int(d["n"]),
            Interval.from_dict(d["auroc"]),
            Interval.from_dict(d["accuracy"]),
            Interval.from_dict(d["auprc"]),
        )


@dataclass
class RandomTransfer:
    """Probes on random layer-matched neuron sets, trained on instruct features, transferred."""

    n_sets: int
    """Random sets (seeds)."""
    n_neurons: int
    """Neurons per set (= H-Neurons, with the H-Neurons' per-layer counts)."""
    base_auroc: Interval
    """Mean AUROC on the base features, with the 2.5-97.5 percentile range over sets."""
    instruct_auroc: Interval
    """Mean AUROC on the instruct features (same range)."""
    h_refit_base_auroc: float
    """The H-Neurons refit the same way (L2, same C and mode), on the base features."""
    h_refit_instruct_auroc: float
    """... on the instruct features."""
    p_value: float
    """``(1 + #{random base AUROC >= H-refit base AUROC}) / (1 + n_sets)``."""
    base_auroc_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    instruct_auroc_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_sets": self.n_sets,
            "n_neurons": self.n_neurons,
            "base_auroc": self.base_auroc.to_dict(),
            "instruct_auroc": self.instruct_auroc.to_dict(),
            "h_refit_base_auroc": self.h_refit_base_auroc,
            "h_refit_instruct_auroc": self.h_refit_instruct_auroc,
            "p_value": self.p_value,
            "base_auroc_values": [_nan_none(x) for x in self.base_auroc_values],
            "instruct_auroc_values": [_nan_none(x) for x in self.instruct_auroc_values],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RandomTransfer:
        return cls(
            int(d["n_sets"]),
            int(d["n_neurons"]),
            Interval.from_dict(d["base_auroc"]),
            Interval.from_dict(d["instruct_auroc"]),
            float(d["h_refit_base_auroc"]),
            float(d["h_refit_instruct_auroc"]),
            float(d["p_value"]),
            np.asarray([_none_nan(x) for x in d["base_auroc_values"]], dtype=np.float64),
            np.asarray([_none_nan(x) for x in d["instruct_auroc_values"]], dtype=np.float64),
        )


@dataclass
class TransferReport:
    """The instruct-trained probe applied unchanged to the base model's CETT, with controls."""

    ids: list[str]
    """Samples scored on both sides, in the order of the input samples."""
    labels: np.ndarray
    """1 = hallucinated, 0 = faithful."""
    base_scores: np.ndarray
    """The probe's log-odds on the base features."""
    base: TransferMetrics
    """The probe on the base features: the transfer."""
    n_h_neurons: int
    """H-Neurons of the probe (positive weights)."""
    instruct_scores: np.ndarray | None = None
    """The probe's log-odds on the instruct features of the same samples."""
    instruct: TransferMetrics | None = None
    """The probe on the instruct features (its own model)."""
    auroc_drop: Interval | None = None
    """Instruct AUROC minus base AUROC (paired stratified bootstrap)."""
    format_control: TransferMetrics | None = None
    """The probe on the *instruct* model's CETT under the base prompt: what the prompt format
    alone costs, with no weight changed (``transfer(..., format_control=instruct_model)``)."""
    format_control_scores: np.ndarray | None = None
    """Its log-odds."""
    random: RandomTransfer | None = None
    """Random layer-matched neuron sets, trained on instruct, scored on both."""
    random_base_scores: np.ndarray | None = field(default=None, repr=False)
    """``[n_sets, n]`` log-odds of the random-set probes on the base features (ROC plots)."""
    ceiling: TransferMetrics | None = None
    """A probe with the same settings trained on the base features (see ``ceiling_method``)."""
    ceiling_scores: np.ndarray | None = None
    """Its (out-of-fold) log-odds."""
    ceiling_method: str = ""
    """``"k-fold CV on the transfer samples"`` or ``"trained on base features of the training split"``."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(sample_id, reason)`` for samples not scored on both sides."""
    params: dict[str, Any] = field(default_factory=dict)
    """Models, span / CETT configs, seeds and counts used."""
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ids)

    def rows(self) -> list[tuple[str, str, TransferMetrics | None]]:
        """``(scorer, features, metrics)`` for the instruct row, the transfer and the ceiling."""
        method = "train split"
        if "CV" in self.ceiling_method:
            method = self.ceiling_method.split(" on ")[0]
        return [
            ("probe (unchanged)", "instruct", self.instruct),
            ("probe, base prompt (format control)", "instruct", self.format_control),
            ("probe (unchanged)", "base", self.base),
            (f"ceiling: trained on base ({method})", "base", self.ceiling),
        ]

    def to_pandas(self) -> Any:
        """One row per scorer: AUROC / accuracy / AUPRC with their CIs (random sets as a row)."""
        import pandas as pd

        records = []
        for name, feats, m in self.rows():
            if m is None:
                continue
            rec: dict[str, Any] = {"scorer": name, "features": feats, "n": m.n}
            for metric in ("auroc", "accuracy", "auprc"):
                iv = getattr(m, metric)
                rec.update(
                    {metric: iv.estimate, f"{metric}_low": iv.low, f"{metric}_high": iv.high}
                )
            records.append(rec)
        if self.random is not None:
            for feats, iv in (
                ("instruct", self.random.instruct_auroc),
                ("base", self.random.base_auroc),
            ):
                records.append(
                    {
                        "scorer": f"random layer-matched sets ({self.random.n_sets}, L2 refit)",
                        "features": feats,
                        "n": self.n,
                        "auroc": iv.estimate,
                        "auroc_low": iv.low,
                        "auroc_high": iv.high,
                    }
                )
            for feats, v in (
                ("instruct", self.random.h_refit_instruct_auroc),
                ("base", self.random.h_refit_base_auroc),
            ):
                records.append(
                    {"scorer": "H-Neurons (L2 refit)", "features": feats, "n": self.n, "auroc": v}
                )
        return pd.DataFrame(records)

    def to_dict(self) -> dict[str, Any]:
        def arr(x: np.ndarray | None) -> Any:
            return None if x is None else np.asarray(x, dtype=np.float64).tolist()

        return {
            "format": "hneuron_lens.TransferReport",
            "format_version": TRANSFER_FORMAT,
            "library_version": library_version(),
            "ids": list(self.ids),
            "labels": np.asarray(self.labels).astype(int).tolist(),
            "n_h_neurons": self.n_h_neurons,
            "base": self.base.to_dict(),
            "base_scores": arr(self.base_scores),
            "instruct": None if self.instruct is None else self.instruct.to_dict(),
            "instruct_scores": arr(self.instruct_scores),
            "auroc_drop": None if self.auroc_drop is None else self.auroc_drop.to_dict(),
            "format_control": None
            if self.format_control is None
            else self.format_control.to_dict(),
            "format_control_scores": arr(self.format_control_scores),
            "random": None if self.random is None else self.random.to_dict(),
            "random_base_scores": arr(self.random_base_scores),
            "ceiling": None if self.ceiling is None else self.ceiling.to_dict(),
            "ceiling_scores": arr(self.ceiling_scores),
            "ceiling_method": self.ceiling_method,
            "skipped": [list(s) for s in self.skipped],
            "params": self.params,
            "notes": list(self.notes),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferReport:
        def arr(x: Any) -> np.ndarray | None:
            return None if x is None else np.asarray(x, dtype=np.float64)

        if (
            d.get("format") != "hneuron_lens.TransferReport"
            or int(d["format_version"]) > TRANSFER_FORMAT
        ):
            raise DataError("not a TransferReport this version can read", field="format")
        return cls(
            ids=list(d["ids"]),
            labels=np.asarray(d["labels"], dtype=np.int64),
            base_scores=np.asarray(d["base_scores"], dtype=np.float64),
            base=TransferMetrics.from_dict(d["base"]),
            n_h_neurons=int(d["n_h_neurons"]),
            instruct_scores=arr(d["instruct_scores"]),
            instruct=None if d["instruct"] is None else TransferMetrics.from_dict(d["instruct"]),
            auroc_drop=None if d["auroc_drop"] is None else Interval.from_dict(d["auroc_drop"]),
            format_control=None
            if d.get("format_control") is None
            else TransferMetrics.from_dict(d["format_control"]),
            format_control_scores=arr(d.get("format_control_scores")),
            random=None if d["random"] is None else RandomTransfer.from_dict(d["random"]),
            random_base_scores=arr(d["random_base_scores"]),
            ceiling=None if d["ceiling"] is None else TransferMetrics.from_dict(d["ceiling"]),
            ceiling_scores=arr(d["ceiling_scores"]),
            ceiling_method=d["ceiling_method"],
            skipped=[(str(a), str(b)) for a, b in d["skipped"]],
            params=d["params"],
            notes=list(d["notes"]),
            seconds=dict(d["seconds"]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the report as one JSON file (atomically)."""
        from hneuron_lens.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TransferReport:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"not a saved TransferReport: {err}", file=path) from err

    def __str__(self) -> str:
        n_pos = int(np.sum(self.labels))
        lines = [
            f"probe transfer: {self.n} samples ({n_pos} hallucinated, {self.n - n_pos} faithful), "
            f"{self.n_h_neurons} H-Neurons; base {self.params.get('base_model')} <- instruct "
            f"{self.params.get('instruct_model')}",
            f"{'scorer':<38} {'features':<9} {'AUROC [95% CI]':<24} {'accuracy [95% CI]':<24}",
        ]
        for name, feats, m in self.rows():
            if m is not None:
                lines.append(f"{name:<38} {feats:<9} {str(m.auroc):<24} {str(m.accuracy):<24}")
        if self.random is not None:
            r = self.random
            lines.append(
                f"{'H-Neurons, L2 refit':<38} {'instruct':<9} {r.h_refit_instruct_auroc:<24.3f}"
            )
            lines.append(f"{'H-Neurons, L2 refit':<38} {'base':<9} {r.h_refit_base_auroc:<24.3f}")
            lines.append(
                f"{f'random layer-matched x{r.n_sets}, L2 refit':<38} {'instruct':<9} {str(r.instruct_auroc):<24}"
            )
            lines.append(
                f"{f'random layer-matched x{r.n_sets}, L2 refit':<38} {'base':<9} {str(r.base_auroc):<24}"
            )
            lines.append(
                f"H-refit vs random sets on base: p = {r.p_value:.3g} (rank of {r.n_sets} sets)"
            )
        if self.auroc_drop is not None:
            lines.append(f"AUROC lost in transfer (instruct - base): {self.auroc_drop}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} samples (see .skipped)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _metrics(
    name: str, labels: np.ndarray, scores: np.ndarray, n_resamples: int, seed: int
) -> TransferMetrics:
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    cis = bootstrap_cis(
        {
            "auroc": auroc,
            "accuracy": lambda yy, ss: float(np.mean((ss > 0) == yy)),
            "auprc": average_precision,
        },
        y,
        s,
        n_resamples=n_resamples,
        seed=seed,
        stratify=y,
    )
    return TransferMetrics(name, int(y.size), cis["auroc"], cis["accuracy"], cis["auprc"])


def _probe_layout_name(probe: Any) -> str:
    meta = getattr(probe, "metadata_", {}) or {}
    model = meta.get("model") or (meta.get("features") or {}).get("model") or {}
    return str(model.get("name", "the probe's model"))


def _check_layout(probe: Any, base_model: Any) -> NeuronLayout:
    from hneuron_lens.models import neuron_sites

    layout = NeuronLayout(tuple(s.d_mlp for s in neuron_sites(base_model)))
    if tuple(layout.d_mlp) != tuple(probe.layout_.d_mlp):

        def desc(lay: NeuronLayout) -> str:
            d = lay.d_mlp
            per = f"d_mlp={d[0]}" if len(set(d)) == 1 else f"d_mlp={list(d)}"
            return f"{lay.n_layers} layers x {per}"

        raise ModelError(
            f"the pair does not share one layout: the probe's instruct model "
            f"{_probe_layout_name(probe)} has {desc(probe.layout_)}, the base model "
            f"{getattr(base_model.cfg, 'model_name', 'base')} has {desc(layout)}",
            hint="transfer compares two checkpoints of one architecture",
        )
    return layout


def _span_config(probe: Any) -> Any:
    from hneuron_lens.spans import SpanConfig

    recorded = ((getattr(probe, "metadata_", {}) or {}).get("features") or {}).get("span_config")
    return SpanConfig.from_dict(recorded) if recorded else SpanConfig()


def _cett_config(probe: Any) -> Any:
    from hneuron_lens.cett import CETTConfig

    recorded = ((getattr(probe, "metadata_", {}) or {}).get("features") or {}).get("cett_config")
    cfg = CETTConfig.from_dict(recorded) if recorded else CETTConfig()
    regions = ("answer", "other") if probe.mode == "3-vs-1" else ("answer",)
    return CETTConfig.from_dict({**cfg.to_dict(), "regions": regions})


def _base_features(
    base_model: Any,
    samples: Sequence[Any],
    cett_cfg: Any,
    span_cfg: Any,
    base_store: Any,
    batch_size: int,
    progress: bool,
) -> tuple[FeatureSplit, list[tuple[str, str]]]:
    """Base CETT of ``samples``: in memory, or through an activation store (resumable)."""
    from hneuron_lens.extract import compute_features, extract

    if base_store is None:
        split, report = compute_features(
            base_model,
            samples,
            cett_cfg,
            span_cfg=span_cfg,
            batch_size=batch_size,
            progress=progress,
        )
        return split, list(report.skipped)
    report = extract(
        base_model,
        list(samples),
        base_store,
        cett_cfg,
        span_cfg=span_cfg,
        batch_size=batch_size,
        progress=progress,
    )
    feats, ids = {}, None
    for region in cett_cfg.regions:
        x, _, all_ids = base_store.features(region)
        row = {sid: i for i, sid in enumerate(all_ids)}
        ids = [s.qid for s in samples if s.qid in row]
        feats[region] = np.asarray(x[[row[i] for i in ids]], dtype=np.float32)
    by_id = {s.qid: s for s in samples}
    labels = np.asarray([int(by_id[i].label) for i in ids or []], dtype=np.int64)
    split = FeatureSplit(feats, labels, list(ids or []), base_store.layout)
    return split, list(report.skipped)


def _rows(split: FeatureSplit, ids: list[str], region: str = "answer") -> np.ndarray:
    row = {sid: i for i, sid in enumerate(split.ids)}
    return np.asarray(split.region(region)[[row[i] for i in ids]], dtype=np.float32)


def _layer_matched(
    rng: np.random.Generator, layout: NeuronLayout, h_flat: np.ndarray
) -> np.ndarray:
    """Random neurons with the H-Neurons' per-layer counts, drawn from the non-H neurons."""
    in_set = np.zeros(layout.n_features, dtype=bool)
    in_set[h_flat] = True
    counts = np.bincount(
        np.searchsorted(layout.offsets, h_flat, side="right") - 1, minlength=layout.n_layers
    )
    cols = []
    for layer, c in enumerate(counts):
        if c:
            lo, hi = int(layout.offsets[layer]), int(layout.offsets[layer + 1])
            pool = np.flatnonzero(~in_set[lo:hi]) + lo
            cols.append(rng.choice(pool, size=int(c), replace=False))
    return np.sort(np.concatenate(cols))


def transfer(
    probe: Any,
    base_model: Any,
    samples: Sequence[Any],
    *,
    instruct: Any = None,
    train: FeatureSplit | None = None,
    base_train: FeatureSplit | Sequence[Any] | None = None,
    format_control: Any = None,
    base_span_cfg: Any = None,
    base_store: Any = None,
    batch_size: int = 16,
    n_random: int = 20,
    n_resamples: int = 1000,
    cv_folds: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> TransferReport:
    """Apply an instruct-trained probe unchanged to the base model's CETT of the same samples.

    Args:
        probe: a fitted :class:`~hneuron_lens.probe.SparseProbe` trained on the instruct model.
        base_model: the base checkpoint as a ``TransformerBridge`` (same layout as the probe).
        samples: judged samples (the probe's evaluation samples, never its training ones).
        instruct: the instruct side for the same samples: a ``TransformerBridge`` (features
            computed with the probe's recorded CETT / span configs) or a
            :class:`~hneuron_lens.features.FeatureSplit` holding them (e.g.
            ``store.split("test")``); ``None`` skips the instruct row and the drop.
        train: the instruct features the probe was trained on, for the random layer-matched
            refits (default: the split the probe was fitted on, when it still holds it).
        base_train: the training samples for the ceiling, as judged samples (their base
            features are computed like those of ``samples``, through ``base_store`` when given)
            or as a FeatureSplit of base features; the ceiling probe is trained on them. ``None``:
            a ``cv_folds``-fold cross-validation on ``samples`` (fewer training samples than the
            transferred probe had, so a weaker ceiling).
        format_control: the instruct model (a ``TransformerBridge``): when given, the probe is
            also applied to its CETT under the *base* prompt, which separates what the prompt
            format costs from what the weight changes cost.
        base_span_cfg: how the base sees a sample (default: the probe's span config with
            ``chat=False``, i.e. the paper's ``question + "\\nAnswer: " + response``).
        base_store: an :class:`~hneuron_lens.store.ActivationStore` for the base features
            (resumable, kept); ``None`` computes them in memory.
        batch_size: samples per forward pass.
        n_random: random layer-matched sets (0 skips them).
        n_resamples: bootstrap resamples for every CI.
        cv_folds: folds of the ceiling's cross-validation.
        seed: seed for bootstraps, random sets and folds.
        progress: show progress bars.

    Returns:
        A :class:`TransferReport`.

    Raises:
        ModelError: the base model's layout differs from the probe's (names both models).
        ProbeError: the probe is not fitted, or no sample is left to score.
    """
    from hneuron_lens.probe import SparseProbe, training_matrix

    t0 = time.perf_counter()
    if not hasattr(probe, "coef_"):
        raise ProbeError("the probe is not fitted", hint="fit it or load a saved one")
    layout = _check_layout(probe, base_model)
    cett_cfg = _cett_config(probe)
    inst_span = _span_config(probe)
    if base_span_cfg is None:
        from hneuron_lens.spans import SpanConfig

        base_span_cfg = SpanConfig.from_dict({**inst_span.to_dict(), "chat": False, "system": None})
    samples = list(samples)
    if not samples:
        raise ProbeError("no samples to score", field="samples")
    seconds: dict[str, float] = {}
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []

    t = time.perf_counter()
    base_split, base_skipped = _base_features(
        base_model, samples, cett_cfg, base_span_cfg, base_store, batch_size, progress
    )
    skipped += [(i, f"base: {r}") for i, r in base_skipped]
    seconds["base features"] = time.perf_counter() - t

    inst_split: FeatureSplit | None = None
    if isinstance(instruct, FeatureSplit):
        inst_split = instruct
    elif instruct is not None:
        from hneuron_lens.extract import compute_features

        t = time.perf_counter()
        _check_layout(probe, instruct)
        inst_split, rep = compute_features(
            instruct,
            samples,
            cett_cfg,
            span_cfg=inst_span,
            batch_size=batch_size,
            progress=progress,
        )
        skipped += [(i, f"instruct: {r}") for i, r in rep.skipped]
        seconds["instruct features"] = time.perf_counter() - t
    if inst_split is not None:
        probe.check_compatible(inst_split)

    have_base = set(base_split.ids)
    have_inst = set(inst_split.ids) if inst_split is not None else have_base
    for s in samples:
        if s.qid in have_base and s.qid not in have_inst:
            skipped.append((s.qid, "instruct: no features for this sample"))
    ids = [s.qid for s in samples if s.qid in have_base and s.qid in have_inst]
    if not ids:
        raise ProbeError("no sample has features on both models", hint=f"skipped: {skipped[:5]}")
    by_id = {s.qid: s for s in samples}
    labels = np.asarray([int(by_id[i].label) for i in ids], dtype=np.int64)
    if inst_split is not None:
        inst_labels = dict(zip(inst_split.ids, np.asarray(inst_split.labels).tolist(), strict=True))
        bad = [i for i in ids if int(inst_labels[i]) != int(by_id[i].label)]
        if bad:
            raise DataError(
                f"{len(bad)} samples have another label in the instruct features (e.g. {bad[:3]})",
                field="label",
            )
    if np.unique(labels).size < 2:
        raise ProbeError(
            "the scored samples hold one class only: AUROC is undefined", field="label"
        )

    x_base = _rows(base_split, ids)
    base_scores = probe.decision_function(x_base)
    report = TransferReport(
        ids=ids,
        labels=labels,
        base_scores=base_scores,
        base=_metrics("probe on base", labels, base_scores, n_resamples, seed),
        n_h_neurons=len(probe.h_neurons),
        skipped=skipped,
        notes=notes,
        seconds=seconds,
    )
    x_inst = None
    if inst_split is not None:
        x_inst = _rows(inst_split, ids)
        report.instruct_scores = probe.decision_function(x_inst)
        report.instruct = _metrics(
            "probe on instruct", labels, report.instruct_scores, n_resamples, seed
        )
        from hneuron_lens.stats import bootstrap_ci

        report.auroc_drop = bootstrap_ci(
            lambda y, a, b: auroc(y, a) - auroc(y, b),
            labels,
            report.instruct_scores,
            base_scores,
            n_resamples=n_resamples,
            seed=seed,
            stratify=labels,
        )

    if format_control is not None:
        t = time.perf_counter()
        _check_layout(probe, format_control)
        fc_split, fc_skipped = _base_features(
            format_control, samples, cett_cfg, base_span_cfg, None, batch_size, progress
        )
        missing = [i for i in ids if i not in set(fc_split.ids)]
        if missing:
            notes.append(
                f"format control: {len(missing)} samples have no answer span under the base "
                "prompt on the instruct tokenizer; control skipped"
            )
        else:
            report.format_control_scores = probe.decision_function(_rows(fc_split, ids))
            report.format_control = _metrics(
                "probe on instruct, base prompt",
                labels,
                report.format_control_scores,
                n_resamples,
                seed,
            )
        seconds["format control"] = time.perf_counter() - t

    # Random layer-matched sets: the H-Neurons' like-for-like control.
    h = probe.h_neurons
    train_ref = train if train is not None else getattr(probe, "_train_ref", None)
    if n_random > 0 and len(h) == 0:
        notes.append("the probe has no H-Neurons: no random-set control")
    elif n_random > 0 and not isinstance(train_ref, FeatureSplit):
        notes.append("no instruct training split (pass train=): random-set control skipped")
    elif n_random > 0:
        t = time.perf_counter()
        params = {**probe.get_params(), "penalty": "l2"}

        def refit(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            xt, yt = training_matrix(train_ref, probe.mode, columns=cols)
            sub = SparseProbe(**params).fit(xt, yt, layout=NeuronLayout((cols.size,)))
            sb = sub.decision_function(x_base[:, cols])
            si = sub.decision_function(x_inst[:, cols]) if x_inst is not None else None
            return sb, si

        from tqdm.auto import tqdm

        h_flat = np.sort(h.flat_index)
        hb, hi = refit(h_flat)
        rng = np.random.default_rng(seed)
        rb, ri, rs = [], [], []
        for _ in tqdm(range(n_random), disable=not progress, desc="random sets", leave=False):
            sb, si = refit(_layer_matched(rng, layout, h_flat))
            rs.append(sb)
            rb.append(auroc(labels, sb))
            ri.append(auroc(labels, si) if si is not None else float("nan"))
        rb_arr, ri_arr = np.asarray(rb), np.asarray(ri)
        h_base = auroc(labels, hb)
        report.random = RandomTransfer(
            n_sets=n_random,
            n_neurons=len(h),
            base_auroc=_spread(rb_arr),
            instruct_auroc=_spread(ri_arr),
            h_refit_base_auroc=h_base,
            h_refit_instruct_auroc=auroc(labels, hi) if hi is not None else float("nan"),
            p_value=(1 + int(np.sum(rb_arr >= h_base - 1e-12))) / (1 + n_random),
            base_auroc_values=rb_arr,
            instruct_auroc_values=ri_arr,
        )
        report.random_base_scores = np.stack(rs)
        seconds["random sets"] = time.perf_counter() - t

    # Ceiling: the same probe settings trained on the base features themselves.
    t = time.perf_counter()
    if base_train is not None and not isinstance(base_train, FeatureSplit):
        train_samples = list(base_train)
        overlap = {s.qid for s in train_samples} & set(ids)
        if overlap:
            raise DataError(
                f"{len(overlap)} ceiling training samples are also scored (e.g. {sorted(overlap)[:3]})",
                field="base_train",
            )
        base_train, train_skipped = _base_features(
            base_model, train_samples, cett_cfg, base_span_cfg, base_store, batch_size, progress
        )
        if train_skipped:
            notes.append(f"ceiling: {len(train_skipped)} training samples have no base answer span")
    report.ceiling_scores, report.ceiling_method = _ceiling(
        probe, base_split, ids, labels, base_train, cv_folds, seed, notes
    )
    if report.ceiling_scores is not None:
        report.ceiling = _metrics(
            "probe trained on base", labels, report.ceiling_scores, n_resamples, seed
        )
    seconds["ceiling"] = time.perf_counter() - t

    if report.n < 60:
        notes.append(f"{report.n} samples: confidence intervals are wide by design")
    report.params = {
        "base_model": str(getattr(base_model.cfg, "model_name", "")),
        "instruct_model": _probe_layout_name(probe),
        "base_span_config": base_span_cfg.to_dict(),
        "instruct_span_config": inst_span.to_dict(),
        "cett_config": cett_cfg.to_dict(),
        "probe_params": probe.get_params(),
        "n_random": n_random,
        "n_resamples": n_resamples,
        "cv_folds": cv_folds,
        "seed": seed,
        "base_store": None if base_store is None else str(base_store.path),
    }
    seconds["total"] = time.perf_counter() - t0
    return report


def _spread(values: np.ndarray, level: float = 0.95) -> Interval:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level, "random-sets-percentile")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return Interval(float(v.mean()), float(lo), float(hi), level, "random-sets-percentile")


def _ceiling(
    probe: Any,
    base_split: FeatureSplit,
    ids: list[str],
    labels: np.ndarray,
    base_train: FeatureSplit | None,
    cv_folds: int,
    seed: int,
    notes: list[str],
) -> tuple[np.ndarray | None, str]:
    """Scores of a probe with the transferred probe's settings, trained on base features."""
    from hneuron_lens.probe import SparseProbe

    x_eval = _rows(base_split, ids)
    if base_train is not None:
        fitted = SparseProbe(**probe.get_params()).fit(base_train)
        return fitted.decision_function(x_eval), "trained on base features of the training split"
    from sklearn.model_selection import StratifiedKFold

    k = min(cv_folds, int(np.bincount(labels).min()))
    if k < 2:
        notes.append("too few samples per class for a cross-validated ceiling: skipped")
        return None, ""
    regions = [r for r in ("answer", "other") if r in base_split.features]
    feats = {r: _rows(base_split, ids, r) for r in regions}
    out = np.full(len(ids), np.nan)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in folds.split(np.zeros(len(ids)), labels):
        if np.unique(labels[tr]).size < 2:
            continue
        fold = FeatureSplit(
            {r: v[tr] for r, v in feats.items()},
            labels[tr],
            [ids[i] for i in tr],
            base_split.layout,
        )
        fitted = SparseProbe(**probe.get_params()).fit(fold)
        out[te] = fitted.decision_function(feats["answer"][te])
    if np.isnan(out).any():
        notes.append("the cross-validated ceiling left some samples unscored")
        return None, ""
    return out, f"{k}-fold CV on the transfer samples"


def _write_dir(path: Path, texts: dict[str, str], write_more: Any = None) -> Path:
    """Write files into a temporary sibling of ``path`` and rename it into place.

    An existing ``path`` is replaced only when it holds nothing but files this function writes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        known = set(texts) | {"drift.safetensors"}
        extra = [p.name for p in path.iterdir() if p.name not in known]
        if extra:
            raise OutputError(
                f"{path} exists and holds files this library did not write: {extra[:5]}",
                file=path,
                hint="choose another output directory; nothing was changed",
            )
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name, text in texts.items():
            (tmp / name).write_text(text)
        if write_more is not None:
            write_more(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
