"""`hneuron-lens run --quick` end to end on the real default model (the README's main job, small)."""

from __future__ import annotations

import json

import pytest

from hneuron_lens.cli import main

pytestmark = pytest.mark.slow


def test_run_quick_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["run", "--quick", "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "chosen C" in text
    manifest = json.loads((out / "manifest.json").read_text())
    for name in (
        "responses.jsonl",
        "funnel.json",
        "store",
        "probe",
        "report.json",
        "probe_path.json",
    ):
        assert name in manifest["artefacts"], name
    assert manifest["funnel"]["asked"] == 136
    assert sum(manifest["splits"].values()) >= 20
