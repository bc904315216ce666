"""``hneuron-lens origin`` and ``hneuron-lens derive-sft`` on tiny saved models."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from hneuron_lens.cett import CETTConfig
from hneuron_lens.cli import main
from hneuron_lens.data.records import JudgedSample
from hneuron_lens.extract import extract
from hneuron_lens.models import load_model
from hneuron_lens.probe import SparseProbe
from hneuron_lens.store import ActivationStore
from hneuron_lens.testing import tiny_hf_model, tiny_tokenizer

WORDS = ["Paris", "Jupiter", "Shakespeare", "gold", "Au", "1969", "answer", "capital"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("origin_cli")
    hf = tiny_hf_model("llama")
    hf.save_pretrained(root / "instruct")
    tiny_tokenizer().save_pretrained(root / "instruct")
    base = copy.deepcopy(hf)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if ".mlp." in name:
                p.add_(
                    0.05
                    * p.std()
                    * torch.randn(p.shape, generator=torch.Generator().manual_seed(0))
                )
    base.save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    samples = [
        JudgedSample(
            f"q{i:03d}",
            f"Question {i}: what is {WORDS[i % 8]}?",
            f"It is {WORDS[(i * 3 + i % 2) % 8]}.",
            i % 2,
            answer_text=WORDS[(i * 3 + i % 2) % 8],
            aliases=(WORDS[i % 8],),
            split="train" if i < 36 else "test",
        )
        for i in range(52)
    ]
    with open(root / "judged.jsonl", "w") as f:
        for s in samples:
            f.write(json.dumps(s.to_dict()) + "\n")
    model = load_model(str(root / "instruct"))
    store = ActivationStore(root / "store")
    extract(model, samples, store, CETTConfig(regions=("answer", "other")), progress=False)
    SparseProbe(C=10.0).fit(store.split("train")).save(root / "probe")
    return root


def _args(root, out):
    return [
        "origin",
        "--probe", str(root / "probe"),
        "--store", str(root / "store"),
        "--samples", str(root / "judged.jsonl"),
        "--instruct", str(root / "instruct"),
        "--base", str(root / "base"),
        "--out", str(out),
        "--n-random", "3",
        "--n-resamples", "100",
        "--n-permutations", "200",
    ]  # fmt: skip


def test_origin_cli_end_to_end(setup, capsys):
    root = setup
    out = root / "out"
    assert main([*_args(root, out), "--format-control"]) == 0
    text = capsys.readouterr().out
    assert "probe transfer" in text and "parameter drift" in text
    for name in (
        "origin.json",
        "transfer.json",
        "transfer_roc.png",
        "drift_ranks.png",
        "drift_ranks_layer.png",
        "layer_drift.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "drift" / "drift.safetensors").is_file() and (out / "base_store").is_dir()
    summary = json.loads((out / "origin.json").read_text())
    assert summary["transfer"]["n"] == 16
    assert summary["transfer"]["format_control_auroc"] is not None
    assert set(summary["drift"]) == {"global", "layer"}
    assert summary["leakage_check"]["samples_checked"] == 52
    # rerunning into its own output is allowed (the base store is reused)
    assert main(_args(root, out)) == 0


def test_origin_cli_refuses_foreign_output_and_bad_samples(setup, tmp_path):
    root = setup
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    assert main(_args(root, foreign)) == 2
    assert sorted(p.name for p in foreign.iterdir()) == ["mine.txt"]
    bad = tmp_path / "bad.jsonl"
    lines = (root / "judged.jsonl").read_text().splitlines()
    first = json.loads(lines[40])
    first["response"] = first["response"] + " Changed."
    bad.write_text("\n".join([*lines[:40], json.dumps(first), *lines[41:]]) + "\n")
    args = _args(root, tmp_path / "out")
    args[args.index("--samples") + 1] = str(bad)
    assert main(args) == 2


def test_origin_cli_drift_only(setup, tmp_path):
    root = setup
    out = tmp_path / "drift_only"
    args = [
        "origin",
        "--probe", str(root / "probe"),
        "--instruct", str(root / "instruct"),
        "--base", str(root / "base"),
        "--out", str(out),
        "--no-transfer",
        "--n-permutations", "100",
    ]  # fmt: skip
    assert main(args) == 0
    assert (out / "drift" / "drift.json").is_file() and not (out / "transfer.json").exists()


def test_derive_sft_cli(setup, tmp_path, capsys):
    root = setup
    q = tmp_path / "questions.jsonl"
    args = [
        "derive-sft",
        "--base", str(root / "instruct"),
        "--n-questions", "16",
        "--epochs", "1",
        "--chat-template", "own",
        "--out", str(tmp_path / "derived"),
        "--write-questions", str(q),
    ]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "16 SFT questions" in text and "never saw" in text
    assert len(q.read_text().splitlines()) == 935 - 16
    assert main(args) == 0 and "cached" in capsys.readouterr().out
