"""The Colab install path: the package builds as a wheel and installs from a git URL, leaving an
already installed torch (Colab's GPU build) alone.

Slow (builds in a fresh venv, resolves against the package index): ~1-2 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, ROOT)
    (whl,) = out.glob("hneuron_lens-*.whl")
    return whl


def test_wheel_holds_the_builtin_data_and_type_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hneuron_lens/py.typed" in names
    assert "hneuron_lens/data/builtin/capitals.csv" in names
    assert "hneuron_lens/data/builtin/nonexistent.json" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]


def test_wheel_install_keeps_the_installed_torch(wheel, tmp_path):
    """Like a Colab runtime: torch is there already; installing the wheel must not replace it."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    pip = venv / "bin" / "pip"
    _run(pip, "install", "-q", "torch==2.13.0")  # the CPU build on this disk stands in for Colab's
    report = tmp_path / "report.json"
    _run(pip, "install", "-q", "--dry-run", "--report", report, wheel)
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "hneuron-lens" in planned
    assert "torch" not in planned, "installing hneuron-lens would replace the installed torch"
    assert {"transformer-lens", "transformers"} <= planned


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_installs_from_a_git_url(tmp_path):
    """``pip install git+URL`` (the tutorials' Colab cell, with the https URL) builds the package.

    (pip rejects the ``name @ git+file://`` form for local paths, so the bare URL is used here.)
    """
    report = tmp_path / "report.json"
    _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--dry-run",
        "--no-deps",
        "--ignore-installed",
        "--report",
        report,
        f"git+file://{ROOT}",
    )
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["name"] == "hneuron-lens"
