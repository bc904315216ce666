"""hneuron_lens.io: atomic writes, artefact kinds, output-directory and output-file rules."""

from __future__ import annotations

import json
import os

import pytest

from hneuron_lens.errors import OutputError
from hneuron_lens.io import (
    MARKER,
    artefact_kind,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    claim_output_dir,
    json_object_with,
    write_dir_atomically,
)


def test_atomic_write_leaves_old_or_new_never_partial(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    real_replace = os.replace

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(path, "partial")
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temp file left


def test_artefact_kinds_marker_and_legacy_layouts(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.json").write_text(json.dumps({"format": "hneuron_lens.SparseProbe"}))
    assert artefact_kind(probe) == "probe"  # written before the marker existed
    store = tmp_path / "store"
    (store / "chunks").mkdir(parents=True)
    (store / "chunks" / "00000.json").write_text("{}")
    assert artefact_kind(store) == "activation_store"
    run = tmp_path / "run"
    run.mkdir()
    (run / "responses.jsonl").write_text(json.dumps({"type": "header"}) + "\n")
    assert artefact_kind(run) == "run"
    sweep = tmp_path / "sweep"
    (sweep / "h_neurons").mkdir(parents=True)
    (sweep / "h_neurons" / "alpha=0.jsonl").write_text("")
    assert artefact_kind(sweep) == "sweep"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert artefact_kind(mine) is None and artefact_kind(tmp_path / "missing") is None
    claim_output_dir(tmp_path / "new", "origin")  # a kind other helpers add: marker only
    assert artefact_kind(tmp_path / "new") == "origin"
    assert json.loads((tmp_path / "new" / MARKER).read_text())["kind"] == "origin"


def test_check_output_dir_rules(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "missing", "probe") is False
    assert check_output_dir(tmp_path / "empty", "probe") is False
    with write_dir_atomically(tmp_path / "p", "probe") as tmp:
        (tmp / "probe.json").write_text("{}")
    with pytest.raises(OutputError, match="already holds a probe"):
        check_output_dir(tmp_path / "p", "probe")
    assert check_output_dir(tmp_path / "p", "probe", overwrite=True) is True
    with pytest.raises(OutputError, match="holds a probe") as err:
        check_output_dir(tmp_path / "p", "sweep", overwrite=True)
    assert "even with --overwrite" in str(err.value)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="existing file"):
        check_output_dir(tmp_path / "f", "probe")


def test_write_dir_atomically_keeps_the_old_artefact_on_failure(tmp_path):
    target = tmp_path / "p"
    with write_dir_atomically(target, "probe") as tmp:
        (tmp / "probe.json").write_text("old")
    with pytest.raises(RuntimeError), write_dir_atomically(target, "probe", overwrite=True) as tmp:
        (tmp / "probe.json").write_text("new")
        raise RuntimeError("crash while writing")
    assert (target / "probe.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # temp dir removed
    with write_dir_atomically(target, "probe", overwrite=True) as tmp:
        (tmp / "probe.json").write_text("new")
    assert (target / "probe.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_check_output_file_rules(tmp_path):
    report = json_object_with("metrics")
    path = tmp_path / "r.json"
    assert check_output_file(path, "report", recognise=report) is False
    path.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(OutputError, match="already exists"):
        check_output_file(path, "report", recognise=report)
    assert check_output_file(path, "report", recognise=report, overwrite=True)
    assert check_output_file(path, "report", recognise=report, regenerate=True)
    path.write_text("my own notes")
    with pytest.raises(OutputError, match="not a report written by this library"):
        check_output_file(path, "report", recognise=report, overwrite=True)
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path, "report", recognise=report)


def test_save_judged_is_atomic_and_never_replaces_a_foreign_file(tmp_path):
    from hneuron_lens.collect import save_judged
    from hneuron_lens.data.records import JudgedSample

    samples = [JudgedSample("a", "Q?", "It is Paris.", 0)]
    path = save_judged(samples, tmp_path / "r.judged.jsonl")
    assert json.loads(path.read_text())["qid"] == "a"
    save_judged(samples * 0, path)  # a judged file is regenerated
    assert path.read_text() == ""
    mine = tmp_path / "mine.judged.jsonl"
    mine.write_text("my notes\n")
    with pytest.raises(OutputError, match="not a judged-samples file"):
        save_judged(samples, mine)
    assert mine.read_text() == "my notes\n"
