"""Fast start: the package and the CLI's --help import nothing heavy; the public API is unchanged."""

from __future__ import annotations

import subprocess
import sys
import time
import types

import pytest

import hneuron_lens as hl

HEAVY = ("torch", "transformers", "transformer_lens", "sklearn", "scipy", "datasets", "pandas")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_loads_no_heavy_package():
    loaded = _modules_after("import hneuron_lens")
    assert not [m for m in HEAVY if m in loaded]


def test_cli_help_loads_no_heavy_package_and_is_fast():
    loaded = _modules_after(
        "from hneuron_lens.cli import build_parser\n"
        "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not [m for m in HEAVY if m in loaded]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hneuron_lens.cli", "--help"], capture_output=True, check=True
    )
    # measured 0.04 s on the 2-core machine (README); 1 s is the promise, with room for a busy CI
    assert time.perf_counter() - start < 1.0 * 3


def test_all_lists_exactly_the_lazy_names():
    assert hl.__all__ == sorted([*hl._LAZY, *hl._SUBMODULES, "__version__"])


def test_every_public_name_resolves():
    for name in hl.__all__:
        assert getattr(hl, name) is not None, name
    assert set(hl.__all__) <= set(dir(hl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hl.nope  # noqa: B018


def test_functions_named_like_their_module_stay_functions():
    """``hl.cett`` / ``hl.collect`` / ``hl.extract`` are the functions even after their modules load."""
    import hneuron_lens.cett
    import hneuron_lens.collect  # noqa: F401

    for name in ("cett", "collect", "extract"):
        value = getattr(hl, name)
        assert callable(value) and not isinstance(value, types.ModuleType), name
    from hneuron_lens import cett

    assert callable(cett) and cett.__module__ == "hneuron_lens.cett"
    assert isinstance(hl.stats, types.ModuleType)
