"""hneuron_lens: find, test and trace H-Neurons (Gao et al., arXiv:2512.01797) with TransformerLens."""

from hneuron_lens.cett import CETTConfig, TokenBatch, cett, collate, length_buckets
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, MCItem, QAItem
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.models import (
    NeuronSite,
    UnsupportedModelError,
    load_model,
    model_identity,
    neuron_sites,
)
from hneuron_lens.spans import SpanConfig, SpanReport, TokenizedSample, tokenize_samples

__version__ = "0.1.0"

__all__ = [
    "FAITHFUL",
    "HALLUCINATED",
    "CETTConfig",
    "FeatureSplit",
    "JudgedSample",
    "MCItem",
    "NeuronLayout",
    "NeuronSite",
    "QAItem",
    "SpanConfig",
    "SpanReport",
    "TokenBatch",
    "TokenizedSample",
    "UnsupportedModelError",
    "__version__",
    "cett",
    "collate",
    "length_buckets",
    "load_model",
    "model_identity",
    "neuron_sites",
    "tokenize_samples",
]
