"""The house style for figures: colours, sizes, fonts and one way to save.

Every plotting function in :mod:`hneuron_lens.viz` draws inside :func:`figure`, which applies
:data:`RC` for the duration of the call only (``matplotlib.rc_context``) and builds a
``matplotlib.figure.Figure`` directly, so nothing global changes and no GUI backend is needed.

Colours name roles, not hues, so that every figure of the library reads the same way: the
H-Neurons are always :data:`COLORS` ``["h"]``, random-neuron controls ``["random"]``, and so on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COLORS: dict[str, str] = {
    "h": "#c0392b",  # H-Neurons
    "random": "#7f8c8d",  # random-neuron controls / permutation nulls
    "all": "#95a5a6",  # every neuron (background distributions)
    "base": "#2471a3",  # base (pre-trained) checkpoint
    "instruct": "#d68910",  # instruction-tuned checkpoint
    "ceiling": "#1e8449",  # a probe trained on the evaluated features themselves
    "reference": "#000000",  # chance lines, 0.5 marks
}
"""Colour per role (colour-blind-safe enough to tell red, blue, orange and green apart)."""

COMPONENT_COLORS: dict[str, str] = {"up": "#2471a3", "gate": "#8e44ad", "down": "#d68910"}
"""Colour per MLP weight component (input / gate / output vectors)."""

SIZES: dict[str, tuple[float, float]] = {
    "single": (5.0, 3.6),
    "wide": (9.0, 3.6),
    "square": (4.4, 4.2),
}
"""Figure sizes in inches."""

RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "savefig.bbox": "tight",
}
"""matplotlib rc settings applied while a figure is drawn."""


@contextlib.contextmanager
def figure(size: str | tuple[float, float] = "single", ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    """A new ``(Figure, axes)`` drawn under :data:`RC`.

    Args:
        size: a key of :data:`SIZES` or ``(width, height)`` in inches.
        ncols: axes side by side (``axes`` is a list when ``ncols > 1``).
    """
    import matplotlib as mpl
    from matplotlib.figure import Figure

    with mpl.rc_context(RC):
        fig = Figure(figsize=SIZES[size] if isinstance(size, str) else size, layout="constrained")
        axes = fig.subplots(1, ncols)
        yield fig, (list(axes) if ncols > 1 else axes)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write ``fig`` (format from the suffix: .png, .svg, .pdf) atomically; return the path."""
    import matplotlib as mpl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        with mpl.rc_context(RC):
            fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
