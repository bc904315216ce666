"""Shared fixtures: offline mode, seeding, tiny models per family, the real default model."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared research data not found at {SHARED_DATA} (CI provides ../shared)")
    return SHARED_DATA


_TINY: dict[str, object] = {}


@pytest.fixture(scope="session")
def tiny():
    """Factory ``tiny(family)`` returning a cached, read-only tiny random model."""
    from hneuron_lens.testing import tiny_model

    def get(family: str = "llama"):
        if family not in _TINY:
            _TINY[family] = tiny_model(family)
        return _TINY[family]

    return get


@pytest.fixture(scope="session")
def default_model():
    """The real embedded default model (SmolLM2-135M-Instruct), loaded once per session."""
    from hneuron_lens.models import load_model

    try:
        return load_model("default")
    except ModuleNotFoundError as err:
        pytest.skip(f"default model wheel not installed: {err}")
