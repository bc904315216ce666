"""hneuron_lens: find, test and trace H-Neurons (Gao et al., arXiv:2512.01797) with TransformerLens.

Data flows one way: samples -> spans -> CETT -> store -> probe -> neurons -> intervention.
Importing the package has no side effects (no logging set-up, no torch flags, no downloads).
"""

__version__ = "0.1.0"

from hneuron_lens import stats
from hneuron_lens.cett import CETTConfig, TokenBatch, cett, collate, length_buckets
from hneuron_lens.collect import CollectConfig, collect, judge_collected, load_collected
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, MCItem, QAItem
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.generation import Generation, GenerationConfig, build_prompt_ids, generate
from hneuron_lens.intervene import (
    HookedIntervention,
    NeuronSet,
    SweepReport,
    alpha_sweep,
    suppression_accuracy,
)
from hneuron_lens.judge import Funnel, JudgeConfig, LLMJudge, consistency_filter, judge_response
from hneuron_lens.models import (
    NeuronSite,
    UnsupportedModelError,
    load_model,
    model_identity,
    neuron_sites,
)
from hneuron_lens.pipeline import RunConfig, run_pipeline
from hneuron_lens.probe import NeuronTable, ProbePath, ProbeReport, SparseProbe, probe_path
from hneuron_lens.spans import SpanConfig, SpanReport, TokenizedSample, tokenize_samples
from hneuron_lens.store import (
    ActivationStore,
    ExtractReport,
    StoreMismatchError,
    compute_features,
    extract,
)

__all__ = [
    "FAITHFUL",
    "HALLUCINATED",
    "ActivationStore",
    "CETTConfig",
    "CollectConfig",
    "ExtractReport",
    "FeatureSplit",
    "Funnel",
    "Generation",
    "GenerationConfig",
    "HookedIntervention",
    "JudgeConfig",
    "JudgedSample",
    "LLMJudge",
    "MCItem",
    "NeuronLayout",
    "NeuronSet",
    "NeuronSite",
    "NeuronTable",
    "ProbePath",
    "ProbeReport",
    "QAItem",
    "RunConfig",
    "SparseProbe",
    "SpanConfig",
    "SpanReport",
    "StoreMismatchError",
    "SweepReport",
    "TokenBatch",
    "TokenizedSample",
    "UnsupportedModelError",
    "__version__",
    "alpha_sweep",
    "build_prompt_ids",
    "cett",
    "collate",
    "collect",
    "consistency_filter",
    "extract",
    "compute_features",
    "generate",
    "judge_collected",
    "judge_response",
    "length_buckets",
    "load_collected",
    "load_model",
    "model_identity",
    "neuron_sites",
    "probe_path",
    "run_pipeline",
    "stats",
    "suppression_accuracy",
    "tokenize_samples",
]
