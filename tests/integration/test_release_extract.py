"""Issue 3's check: extract the gemma27b release responses (teacher-forced into the default
model, re-tokenised: the two models share no tokenizer), reload them, and train/evaluate a probe."""

from __future__ import annotations

import numpy as np
import pytest

import hneuron_lens as hl
from hneuron_lens.data.loaders import load_release
from hneuron_lens.data.splits import balanced_sample

pytestmark = pytest.mark.slow

N_PER_CLASS = 60


def test_extract_release_responses_and_reload(default_model, shared_data, tmp_path):
    path = shared_data / "responses" / "gemma27b_TriviaQA_answer_tokens_train.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    samples, report = load_release(path)
    assert report.n_loaded == len(samples) > 2 * N_PER_CLASS
    chosen = balanced_sample(samples, N_PER_CLASS, seed=0)
    splits = {s.qid: ("train" if i % 4 else "test") for i, s in enumerate(chosen)}
    store = hl.ActivationStore(tmp_path / "store")
    ext = hl.extract(
        default_model,
        chosen,
        store,
        hl.CETTConfig(regions=("answer", "other")),
        batch_size=16,
        splits=splits,
    )
    # every sample is either stored or reported with its reason
    assert ext.n_extracted + ext.n_skipped == len(chosen)
    assert ext.n_skipped <= len(chosen) // 10, ext.skipped
    assert ext.samples_per_s > 0

    again = hl.ActivationStore(tmp_path / "store")
    assert len(again) == ext.n_extracted
    train = again.split("train")
    assert train.layout.n_features == 30 * 1536
    x = train.region("answer")
    assert x.dtype == np.float16 and np.isfinite(x.astype(np.float32)).all()
    # cache hit: nothing is recomputed
    assert (
        hl.extract(
            default_model,
            chosen,
            again,
            hl.CETTConfig(regions=("answer", "other")),
            batch_size=16,
            splits=splits,
        ).n_extracted
        == 0
    )

    probe = hl.SparseProbe(C=1.0).fit(train)
    proba = probe.predict_proba(again.split("test"))
    assert proba.shape == (len(again.split("test")), 2)
