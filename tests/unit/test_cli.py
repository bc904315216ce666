"""The command line on a synthetic store (train, evaluate, report) and argument errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hneuron_lens.cli import build_parser, main, make_task
from hneuron_lens.features import NeuronLayout
from hneuron_lens.store import ActivationStore


@pytest.fixture()
def synthetic_store(tmp_path):
    rng = np.random.default_rng(0)
    layout = NeuronLayout.uniform(2, 32)
    n = 120
    labels = np.array([i % 2 for i in range(n)])
    answer = rng.gamma(2.0, 0.01, size=(n, layout.n_features)).astype(np.float32)
    answer[labels == 1, 5] += 0.05  # a planted H-neuron at (layer 0, neuron 5)
    other = rng.gamma(2.0, 0.01, size=(n, layout.n_features)).astype(np.float32)
    splits = ["train"] * 80 + ["validation"] * 20 + ["test"] * 20
    store = ActivationStore(tmp_path / "store")
    store.open_for({"synthetic": 1}, layout=layout, regions=("answer", "other"))
    store.write_batch(
        [f"s{i}" for i in range(n)], labels, splits, {"answer": answer, "other": other}
    )
    store.close()
    return tmp_path / "store"


def test_train_evaluate_report(synthetic_store, tmp_path, capsys):
    probe_dir = tmp_path / "probe"
    assert (
        main(["train", "--store", str(synthetic_store), "--out", str(probe_dir), "--Cs", "0.3,1,3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "probe saved" in out
    assert (probe_dir / "probe.json").is_file()
    assert (
        main(
            [
                "evaluate",
                "--probe",
                str(probe_dir),
                "--store",
                str(synthetic_store),
                "--n-random",
                "3",
                "--n-resamples",
                "100",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert "auroc" in json.dumps(report).lower()
    # 'report' needs a run directory
    assert main(["report", str(tmp_path)]) == 2


def test_parser_requires_a_command():
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_intervene_needs_exactly_one_neuron_source(capsys):
    assert main(["intervene", "--task", "qa", "--out", "x"]) == 2


def test_make_task_builtin_and_errors():
    task = make_task("qa", "builtin", limit=5)
    assert len(task.items) == 5
    with pytest.raises(ValueError, match="needs --data"):
        make_task("falseqa", None)
