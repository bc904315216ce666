"""alpha_sweep on the real default model (SmolLM2-135M-Instruct) with real FalseQA items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHARED / "falseqa_test.csv").is_file(),
        reason=f"shared FalseQA data not found at {SHARED} (see shared/data/README.md)",
    ),
]


@pytest.fixture(scope="module")
def model():
    from hneuron_lens.models import load_model

    try:
        return load_model("default")
    except ModuleNotFoundError as err:
        pytest.skip(f"default model not installed: {err}")


def test_falseqa_sweep_complete_and_resumable(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hneuron_lens import generation
    from hneuron_lens.intervene import NeuronSet, alpha_sweep
    from hneuron_lens.tasks import FalseQATask, load_falseqa

    torch.manual_seed(0)
    task = FalseQATask(load_falseqa(SHARED / "falseqa_test.csv", limit=8))
    h = NeuronSet.random(model, k=50, seed=123, name="h_test")
    cfg = generation.GenerationConfig(
        max_new_tokens=24, do_sample=False, batch_size=8, progress=False
    )
    rep = alpha_sweep(
        model, h, task, alphas=(0, 1, 2), controls=1, gen_cfg=cfg, out_dir=tmp_path, n_resamples=200
    )

    df = rep.to_pandas()
    assert len(df) == 2 * 3 and not df["rate"].isna().any()
    assert (df["n"] == 8).all()
    assert set(rep.slopes) == {"h_test", "control-0"} and rep.h_minus_random is not None
    assert set(rep.deltas["h_test"]) == {"1->2", "0->2"}
    for name in ("h_test", "control-0"):
        assert np.array_equal(
            rep.outcomes[name][:, 1], rep.outcomes["h_test"][:, 1]
        )  # shared alpha=1
    lines = [
        json.loads(x) for x in (tmp_path / "h_test" / "alpha=0.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 8 + 2 and all(r["turns"][0]["output"] is not None for r in lines[1:-1])
    assert "<|im_start|>user" in lines[1]["turns"][0]["prompt"]
    print(rep)

    def boom(*args, **kwargs):
        raise AssertionError("a complete run was generated again")

    monkeypatch.setattr(generation, "generate", boom)
    again = alpha_sweep(
        model, h, task, alphas=(0, 1, 2), controls=1, gen_cfg=cfg, out_dir=tmp_path, n_resamples=200
    )
    assert again.to_dict() == rep.to_dict()
