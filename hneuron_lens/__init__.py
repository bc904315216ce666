"""hneuron_lens: find, test and trace H-Neurons (Gao et al., arXiv:2512.01797) with TransformerLens.

Data flows one way: samples -> spans -> CETT -> store -> probe -> neurons -> intervention.
Importing the package has no side effects (no logging set-up, no torch flags, no downloads) and
imports nothing heavy: every public name below is loaded from its module on first use (PEP 562
module ``__getattr__``), so ``import hneuron_lens`` and ``hneuron-lens --help`` start fast while
``hl.SparseProbe``, ``from hneuron_lens import cett`` and friends work as before.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    "CETTConfig": "cett",
    "TokenBatch": "cett",
    "cett": "cett",
    "collate": "cett",
    "length_buckets": "cett",
    "CollectConfig": "collect",
    "collect": "collect",
    "judge_collected": "collect",
    "load_collected": "collect",
    "check_kv_cache": "compat",
    "FAITHFUL": "data.records",
    "HALLUCINATED": "data.records",
    "JudgedSample": "data.records",
    "MCItem": "data.records",
    "QAItem": "data.records",
    "DeriveConfig": "derive",
    "DataError": "errors",
    "DependencyError": "errors",
    "HNeuronLensError": "errors",
    "ModelError": "errors",
    "OutputError": "errors",
    "ProbeError": "errors",
    "StoreError": "errors",
    "RemoteError": "errors",
    "UsageError": "errors",
    "FeatureSplit": "features",
    "NeuronLayout": "features",
    "Generation": "generation",
    "GenerationConfig": "generation",
    "build_prompt_ids": "generation",
    "generate": "generation",
    "HookedIntervention": "intervene",
    "NeuronSet": "intervene",
    "SweepReport": "intervene",
    "alpha_sweep": "intervene",
    "suppression_accuracy": "intervene",
    "Funnel": "judge",
    "JudgeConfig": "judge",
    "LLMJudge": "judge",
    "consistency_filter": "judge",
    "judge_response": "judge",
    "NeuronSite": "models",
    "UnsupportedModelError": "models",
    "check_device_map": "models",
    "load_model": "models",
    "model_identity": "models",
    "neuron_sites": "models",
    "DriftReport": "origin",
    "TransferReport": "origin",
    "RunConfig": "pipeline",
    "run_pipeline": "pipeline",
    "NeuronTable": "probe",
    "ProbePath": "probe",
    "ProbeReport": "probe",
    "SparseProbe": "probe",
    "probe_path": "probe",
    "StabilityResult": "stability",
    "stability_selection": "stability",
    "SpanConfig": "spans",
    "SpanReport": "spans",
    "TokenizedSample": "spans",
    "tokenize_samples": "spans",
    "ActivationStore": "store",
    "ExtractReport": "extract",
    "StoreMismatchError": "store",
    "StoreBusyError": "store",
    "StoreCorruptError": "store",
    "compute_features": "extract",
    "extract": "extract",
    "DistEnv": "distributed",
    "extract_distributed": "distributed",
    "collect_distributed": "distributed",
    "fit_l1_logistic": "solvers",
    "l1_logistic_path": "solvers",
}

# public submodules reachable as attributes (``hl.stats.wilson_interval``)
_SUBMODULES = ("compat", "derive", "errors", "origin", "stats", "viz")

# explicit, so tools see the re-exports; a test checks it matches _LAZY and _SUBMODULES
__all__ = [
    "ActivationStore",
    "CETTConfig",
    "CollectConfig",
    "DataError",
    "DependencyError",
    "DeriveConfig",
    "DistEnv",
    "DriftReport",
    "ExtractReport",
    "FAITHFUL",
    "FeatureSplit",
    "Funnel",
    "Generation",
    "GenerationConfig",
    "HALLUCINATED",
    "HNeuronLensError",
    "HookedIntervention",
    "JudgeConfig",
    "JudgedSample",
    "LLMJudge",
    "MCItem",
    "ModelError",
    "NeuronLayout",
    "NeuronSet",
    "NeuronSite",
    "NeuronTable",
    "OutputError",
    "ProbeError",
    "ProbePath",
    "ProbeReport",
    "QAItem",
    "RemoteError",
    "RunConfig",
    "SpanConfig",
    "SpanReport",
    "SparseProbe",
    "StabilityResult",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "SweepReport",
    "TokenBatch",
    "TokenizedSample",
    "TransferReport",
    "UnsupportedModelError",
    "UsageError",
    "__version__",
    "alpha_sweep",
    "build_prompt_ids",
    "cett",
    "check_device_map",
    "check_kv_cache",
    "collate",
    "collect",
    "collect_distributed",
    "compat",
    "compute_features",
    "consistency_filter",
    "derive",
    "errors",
    "extract",
    "extract_distributed",
    "fit_l1_logistic",
    "generate",
    "judge_collected",
    "judge_response",
    "l1_logistic_path",
    "length_buckets",
    "load_collected",
    "load_model",
    "model_identity",
    "neuron_sites",
    "origin",
    "probe_path",
    "run_pipeline",
    "stability_selection",
    "stats",
    "suppression_accuracy",
    "tokenize_samples",
    "viz",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type: keeps ``hl.cett`` / ``hl.collect`` the public *functions*.

    After loading a submodule, the import system binds it to the parent package's attribute of
    the same name (``hneuron_lens.cett`` = the module). Three public functions share their
    module's name (``cett``, ``collect``, ``extract``); eagerly imported, the ``from ... import``
    in this file rebound them afterwards. Imported lazily, that binding would win, so this
    ``__setattr__`` binds the public function instead of the module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from hneuron_lens import compat, derive, errors, origin, stats, viz
    from hneuron_lens.cett import CETTConfig, TokenBatch, cett, collate, length_buckets
    from hneuron_lens.collect import CollectConfig, collect, judge_collected, load_collected
    from hneuron_lens.compat import check_kv_cache
    from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, MCItem, QAItem
    from hneuron_lens.derive import DeriveConfig
    from hneuron_lens.distributed import DistEnv, collect_distributed, extract_distributed
    from hneuron_lens.errors import (
        DataError,
        DependencyError,
        HNeuronLensError,
        ModelError,
        OutputError,
        ProbeError,
        RemoteError,
        StoreError,
        UsageError,
    )
    from hneuron_lens.extract import ExtractReport, compute_features, extract
    from hneuron_lens.features import FeatureSplit, NeuronLayout
    from hneuron_lens.generation import Generation, GenerationConfig, build_prompt_ids, generate
    from hneuron_lens.intervene import (
        HookedIntervention,
        NeuronSet,
        SweepReport,
        alpha_sweep,
        suppression_accuracy,
    )
    from hneuron_lens.judge import (
        Funnel,
        JudgeConfig,
        LLMJudge,
        consistency_filter,
        judge_response,
    )
    from hneuron_lens.models import (
        NeuronSite,
        UnsupportedModelError,
        check_device_map,
        load_model,
        model_identity,
        neuron_sites,
    )
    from hneuron_lens.origin import DriftReport, TransferReport
    from hneuron_lens.pipeline import RunConfig, run_pipeline
    from hneuron_lens.probe import NeuronTable, ProbePath, ProbeReport, SparseProbe, probe_path
    from hneuron_lens.solvers import fit_l1_logistic, l1_logistic_path
    from hneuron_lens.spans import SpanConfig, SpanReport, TokenizedSample, tokenize_samples
    from hneuron_lens.stability import StabilityResult, stability_selection
    from hneuron_lens.store import (
        ActivationStore,
        StoreBusyError,
        StoreCorruptError,
        StoreMismatchError,
    )
