"""Keep every tutorial's Colab badge, install cell and outputs right; run after editing one.

    python tutorials/make_badges.py          # rewrite badges / install URL, strip outputs
    python tutorials/make_badges.py --check  # exit 1 if a notebook needs it (what the tests check)

The repository's address is written once, in ``pyproject.toml`` ``[project.urls] Repository``;
each notebook's badge is built from it and the notebook's own path
(``https://colab.research.google.com/github/<owner>/<repo>/blob/main/tutorials/<name>.ipynb``),
and its first code cell installs ``hneuron-lens @ git+<Repository>`` on Colab only. Outputs and
execution counts are stripped: executed copies are test artefacts, never committed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
INSTALL_RE = re.compile(r"hneuron-lens @ git\+[^\"' ]+")


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` of pyproject.toml (without a trailing slash or .git)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the one line we need
        m = re.search(r'^Repository\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        url = m.group(1) if m else ""
    else:
        with open(pyproject, "rb") as f:
            url = tomllib.load(f)["project"]["urls"]["Repository"]
    return url.rstrip("/").removesuffix(".git")


def colab_url(notebook: Path, repo: str | None = None) -> str:
    """The Open-in-Colab address of ``notebook`` (a path inside this repository), branch main."""
    repo = repo or repository_url()
    owner_repo = repo.split("github.com/", 1)[1]
    rel = notebook.resolve().relative_to(ROOT).as_posix()
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/{rel}"


def badge(notebook: Path, repo: str | None = None) -> str:
    return f"[![Open In Colab]({BADGE_IMG})]({colab_url(notebook, repo)})"


def fix(nb: dict, notebook: Path, repo: str) -> dict:
    """The notebook with its badge and install URL set and its outputs stripped."""
    out = json.loads(json.dumps(nb))
    for cell in out["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown":
            src = BADGE_RE.sub(lambda _: badge(notebook, repo), src)
        if cell["cell_type"] == "code":
            src = INSTALL_RE.sub(f"hneuron-lens @ git+{repo}", src)
            cell["outputs"] = []
            cell["execution_count"] = None
            cell.get("metadata", {}).pop("execution", None)
        cell["source"] = src
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report notebooks that need fixing")
    args = ap.parse_args(argv)
    repo = repository_url()
    bad = []
    for path in sorted(TUTORIALS.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        fixed = fix(nb, path, repo)
        if fixed != nb:
            bad.append(path.name)
            if not args.check:
                path.write_text(json.dumps(fixed, indent=1, ensure_ascii=False) + "\n")
    if args.check and bad:
        print("need `python tutorials/make_badges.py`: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
