"""Data records, dataset loaders, splits and the built-in demo set."""

from hneuron_lens.data.records import FAITHFUL, HALLUCINATED, JudgedSample, MCItem, QAItem

__all__ = ["FAITHFUL", "HALLUCINATED", "JudgedSample", "MCItem", "QAItem"]
