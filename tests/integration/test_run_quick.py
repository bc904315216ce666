"""`hneuron-lens run --quick` end to end on the real default model (the README's main job, small),
then the README's quickstart on its output."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

import hneuron_lens as hl
from hneuron_lens.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "quick"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["run", "--quick", "--out-dir", str(out)])
    return out, code, buf.getvalue()


def test_run_quick_writes_every_artefact(quick_run):
    out, code, text = quick_run
    assert code == 0
    assert "chosen C" in text and "consistent_true" in text
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


def test_readme_quickstart_after_the_run(quick_run, default_model):
    """The README's quickstart, line for line, on the quick run directory (resumes: no recompute)."""
    out, _, _ = quick_run
    run = hl.run_pipeline(hl.RunConfig.quick(out_dir=str(out)), model=default_model)
    assert run.seconds["collect"] < 30  # everything was already collected
    store = hl.ActivationStore(out / "store")
    probe = hl.SparseProbe.load(out / "probe")
    assert len(probe.h_neurons) > 0
    report = probe.evaluate(
        store.split("test"), train=store.split("train"), n_random=3, n_resamples=100
    )
    assert "auroc" in str(report).lower()
    prompt = hl.build_prompt_ids(default_model.tokenizer, "What is the capital of Australia?")
    cfg = hl.GenerationConfig(do_sample=False, max_new_tokens=8, progress=False)
    plain = hl.generate(default_model, [prompt], cfg)[0].output_ids
    with hl.HookedIntervention(default_model, probe.h_neurons, alpha=1.0):
        same = hl.generate(default_model, [prompt], cfg)[0].output_ids
    with hl.HookedIntervention(default_model, probe.h_neurons, alpha=0.0):
        hl.generate(default_model, [prompt], cfg)
    assert same == plain
