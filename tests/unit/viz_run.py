"""A tiny run directory for the figure / HTML-report tests: the real pipeline stages (extract ->
store -> C path -> evaluate -> save) on a tiny random model and synthetic judged samples, laid
out like ``hneuron-lens run`` writes it. Built in a few seconds, no network, no real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hneuron_lens.data.records import JudgedSample

_PHRASES = [
    ("Capital of France?", "It is Paris.", "Paris"),
    ("Who wrote Hamlet?", "William Shakespeare wrote it.", "William Shakespeare"),
    ("Symbol for gold?", "The answer is Au.", "Au"),
    ("Largest planet?", "Answer: Jupiter.", "Jupiter"),
    ("When was it?", "The year was 1969.", "1969"),
    ("What number?", "It is 42 and 3.14.", "42"),
]


def tiny_samples(n: int = 48) -> list[JudgedSample]:
    """``n`` judged samples, labels alternating, answer text inside each response."""
    out = []
    for i in range(n):
        q, r, a = _PHRASES[i % len(_PHRASES)]
        out.append(JudgedSample(f"s{i:03d}", f"{q} ({i})", r, i % 2, answer_text=a))
    return out


def make_tiny_run(root: Path, model: Any, n: int = 48) -> tuple[Path, list[JudgedSample]]:
    """Write ``root`` as a run directory; return it and the samples used."""
    import hneuron_lens as hl
    from hneuron_lens.extract import extract
    from hneuron_lens.io import write_marker
    from hneuron_lens.judge import Funnel
    from hneuron_lens.probe import probe_path

    samples = tiny_samples(n)
    names = ["train", "train", "train", "validation", "test"]
    split_of = {s.qid: names[(i // 2) % len(names)] for i, s in enumerate(samples)}
    root.mkdir(parents=True, exist_ok=True)
    write_marker(root, "run")
    store = hl.ActivationStore(root / "store")
    extract(
        model,
        samples,
        store,
        hl.CETTConfig(regions=("answer", "other")),
        batch_size=16,
        splits=split_of,
        progress=False,
    )
    store.compact()
    train, val, test = store.split("train"), store.split("validation"), store.split("test")
    path = probe_path(train, val, Cs=(10.0, 100.0, 1000.0), seed=0, n_resamples=50)
    report = path.probe.evaluate(
        test, val_split=val, train=train, n_resamples=50, n_random=3, seed=0
    )
    path.probe.save(root / "probe", overwrite=True)
    path.save(root / "probe_path.json")
    report.save(root / "report.json")
    funnel = Funnel(asked=60, answered=56, consistent_true=24, consistent_false=24, mixed=8)
    funnel.save(root / "funnel.json")
    manifest = {
        "library_version": hl.__version__,
        "config": {"model": "tiny-llama", "questions": "synthetic", "seed": 0},
        "model": {"name": "tiny-llama"},
        "funnel": funnel.to_dict(),
        "splits": {"train": len(train), "validation": len(val), "test": len(test)},
        "chosen_C": path.best_C,
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root, samples
