"""SparseProbe.save / load: never replace what is not a probe, one ProbeError per bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hneuron_lens.errors import OutputError, ProbeError
from hneuron_lens.features import NeuronLayout
from hneuron_lens.io import artefact_kind
from hneuron_lens.probe import NeuronTable, SparseProbe

LAYOUT = NeuronLayout.uniform(2, 8)


@pytest.fixture(scope="module")
def probe() -> SparseProbe:
    rng = np.random.default_rng(0)
    y = np.arange(80) % 2
    x = rng.gamma(2.0, 0.5, size=(80, LAYOUT.n_features)).astype(np.float32)
    x[y == 1, 3] += 2.0
    return SparseProbe(C=1.0).fit(x, y, layout=LAYOUT)


def test_save_refuses_foreign_and_existing_dirs(probe, tmp_path):
    out = probe.save(tmp_path / "p")
    assert artefact_kind(out) == "probe"
    with pytest.raises(OutputError, match="already holds a probe") as err:
        probe.save(out)  # the default never replaces
    assert "--overwrite" in str(err.value)
    probe.save(out, overwrite=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "responses.jsonl").write_text("data\n")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="did not write"):
            probe.save(run, overwrite=overwrite)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "responses.jsonl"]
    assert (run / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert SparseProbe.load(probe.save(empty)).coef_.shape == (LAYOUT.n_features,)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="existing file"):
        probe.save(tmp_path / "file")


@pytest.mark.parametrize(
    ("damage", "match", "file"),
    [
        (lambda d: (d / "probe.json").write_text("format: yaml\nC: 1\n"), "not JSON", "probe.json"),
        (lambda d: (d / "probe.json").write_bytes(b"\xff\xfe\x00binary"), "not JSON", "probe.json"),
        (
            lambda d: (d / "probe.json").write_text("[1, 2]"),
            "not a saved SparseProbe",
            "probe.json",
        ),
        (lambda d: (d / "probe.json").unlink(), "no probe.json", "probe.json"),
        (
            lambda d: np.save(open(d / "weights.safetensors", "wb"), np.zeros(16)),  # noqa: SIM115
            "not a safetensors file",
            "weights.safetensors",
        ),
        (lambda d: (d / "weights.safetensors").unlink(), "no weights", "weights.safetensors"),
        (
            lambda d: (d / "probe.json").write_text(
                json.dumps({**json.loads((d / "probe.json").read_text()), "layout": {"x": 1}})
            ),
            "lacks or mangles a field",
            "probe.json",
        ),
        (
            lambda d: (d / "probe.json").write_text(
                json.dumps({**json.loads((d / "probe.json").read_text()), "layout": {"d_mlp": [8]}})
            ),
            "16 weights but the saved layout 8",
            "weights.safetensors",
        ),
    ],
)
def test_load_errors_name_the_file(probe, tmp_path, damage, match, file):
    out = probe.save(tmp_path / "p")
    damage(out)
    with pytest.raises(ProbeError, match=match) as err:
        SparseProbe.load(out)
    assert err.value.file == str(out / file) and "\n" not in str(err.value)


def test_load_missing_dir_and_neuron_table(probe, tmp_path):
    with pytest.raises(ProbeError, match="no saved probe here"):
        SparseProbe.load(tmp_path / "nope")
    path = tmp_path / "t.json"
    probe.h_neurons.save(path)
    assert len(NeuronTable.load(path)) == len(probe.h_neurons)
    path.write_text("{}")
    with pytest.raises(ProbeError, match="not a saved neuron table"):
        NeuronTable.load(path)
