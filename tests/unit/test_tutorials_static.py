"""Tutorials as files: each has an Open-in-Colab badge pointing at its own path (built from the
one repository URL in pyproject.toml), a Colab-only install cell from that URL, and no outputs
in git (executed copies are test artefacts: tests/integration/test_tutorials.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
EXPECTED = [
    "01_quickstart",
    "02_find_h_neurons",
    "03_causal_validation",
    "04_origin",
    "05_your_own_data",
]


def _badges_module():
    spec = importlib.util.spec_from_file_location(
        "make_badges", ROOT / "tutorials" / "make_badges.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tutorials_exist() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_badge_install_cell_and_no_outputs(path: Path) -> None:
    import tomllib

    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner_repo = repo.removeprefix("https://github.com/").rstrip("/")
    nb = json.loads(path.read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"])
    want = f"https://colab.research.google.com/github/{owner_repo}/blob/main/tutorials/{path.name}"
    assert f"]({want})" in first, f"{path.name}: badge must open {want}"
    install = "".join(nb["cells"][1]["source"])
    assert nb["cells"][1]["cell_type"] == "code"
    assert '"google.colab" in sys.modules' in install and "if IN_COLAB:" in install
    assert f"hneuron-lens @ git+{repo}" in install
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
    assert "HNL_TUTORIAL_SIZE" in "".join("".join(c["source"]) for c in nb["cells"])


def test_make_badges_check_passes_and_detects_a_wrong_badge(tmp_path) -> None:
    mod = _badges_module()
    assert mod.main(["--check"]) == 0
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    nb["cells"][0]["source"] = nb["cells"][0]["source"].replace(
        "01_quickstart.ipynb", "other.ipynb"
    )
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    fixed = mod.fix(nb, NOTEBOOKS[0], mod.repository_url())
    assert fixed != nb
    assert mod.colab_url(NOTEBOOKS[0]) in fixed["cells"][0]["source"]
    assert fixed["cells"][2]["outputs"] == []
