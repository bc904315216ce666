"""Figures of the probe, the C path, the evaluation, the alpha sweep and the collection funnel.

Every function returns a matplotlib ``Figure`` drawn in the house style
(:mod:`hneuron_lens.viz.style`): save it with :func:`~hneuron_lens.viz.style.save_figure`,
show it in a notebook by ending a cell with it, or embed it with
:func:`hneuron_lens.viz.html.figure_to_data_uri`. Each takes the library's report objects *or*
their ``to_dict()`` form (what a run directory holds as JSON), so a saved run can be plotted
without refitting anything.

Every curve or rate comes with its interval: stratified-bootstrap bands for ROC / PR curves,
Wilson bands for alpha-sweep rates, bootstrap CIs for the C path; and with the random-neuron
controls beside it wherever the report has them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hneuron_lens.viz.style import COLORS, figure

__all__ = [
    "plot_layer_distribution",
    "plot_c_path",
    "plot_roc_pr",
    "plot_alpha_sweep",
    "plot_neuron_auroc_vs_weight",
    "plot_funnel",
]


def _as_dict(obj: Any) -> dict[str, Any]:
    """A report object or its ``to_dict()`` form, as a dict."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"expected a report object or its to_dict() form, got {type(obj).__name__}")


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def plot_layer_distribution(neurons: Any, title: str | None = None) -> Any:
    """H-Neurons per thousand neurons of each layer (bars) with the count written on each bar.

    Args:
        neurons: a :class:`~hneuron_lens.probe.NeuronTable` or its ``to_dict()``.
        title: axes title (default: the total count and per mille).

    Returns:
        The ``Figure``.
    """
    d = _as_dict(neurons)
    d_mlp = np.asarray(d["layout"]["d_mlp"], dtype=np.int64)
    counts = np.bincount(np.asarray(d["layer"], dtype=np.int64), minlength=d_mlp.size)
    per_mille = 1000.0 * counts / d_mlp
    total = 1000.0 * counts.sum() / d_mlp.sum()
    with figure("wide") as (fig, ax):
        layers = np.arange(d_mlp.size)
        ax.bar(layers, per_mille, color=COLORS["h"], width=0.8)
        for x, c, y in zip(layers, counts, per_mille, strict=True):
            if c:
                ax.annotate(
                    str(int(c)),
                    (x, y),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 1),
                    textcoords="offset points",
                )
        ax.axhline(total, color=COLORS["reference"], ls="--", lw=1, label=f"all layers {total:.3f}")
        ax.set_xlabel("layer")
        ax.set_ylabel("H-Neurons per mille of the layer")
        ax.set_xticks(layers if d_mlp.size <= 32 else layers[:: max(1, d_mlp.size // 16)])
        ax.set_title(title or f"{int(counts.sum())} H-Neurons ({total:.3f} per mille) by layer")
        ax.legend(loc="upper left")
    return fig


def plot_c_path(path: Any) -> Any:
    """The regularisation path: held-out AUROC and accuracy (bootstrap CI bands) against the
    number of H-Neurons at each C, the chosen C marked.

    Args:
        path: a :class:`~hneuron_lens.probe.ProbePath` or its ``to_dict()`` (``probe_path.json``).

    Returns:
        The ``Figure``.
    """
    d = _as_dict(path)
    pts = d["points"]
    n = np.array([p["n_positive"] for p in pts], dtype=float)
    cs = [float(p["C"]) for p in pts]
    chosen = int(d["chosen_index"])
    with figure("single") as (fig, ax):
        for key, color, label in (
            ("auroc", COLORS["h"], "held-out AUROC"),
            ("accuracy", COLORS["base"], "held-out accuracy"),
        ):
            est = np.array([_nan(p[key]["estimate"]) for p in pts])
            lo = np.array([_nan(p[key]["low"]) for p in pts])
            hi = np.array([_nan(p[key]["high"]) for p in pts])
            ax.plot(n, est, "o-", color=color, lw=1.5, ms=4, label=f"{label} (95% CI band)")
            ax.fill_between(n, lo, hi, color=color, alpha=0.2, lw=0)
        ax.axvline(n[chosen], color=COLORS["reference"], ls="--", lw=1)
        last = n[chosen] >= n.max()  # label on the left of the line when it is the right edge
        ax.annotate(
            f"chosen C={cs[chosen]:g}\n{int(n[chosen])} H-Neurons",
            (n[chosen], 0.02),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if last else 4, 0),
            textcoords="offset points",
            ha="right" if last else "left",
            fontsize=8,
        )
        for x, c in zip(n, cs, strict=True):
            ax.annotate(
                f"C={c:g}",
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=6,
                ha="center",
                va="bottom",
                color=COLORS["random"],
            )
        if n.min() > 0 and n.max() / n.min() > 10:
            ax.set_xscale("log")
        ax.axhline(0.5, color=COLORS["random"], ls=":", lw=1)
        ax.set_xlabel("H-Neurons (positive weights)")
        ax.set_ylabel("held-out score")
        ax.set_ylim(min(0.4, float(np.nanmin([p["accuracy"]["low"] or 0.4 for p in pts]))), 1.02)
        ax.set_title(f"C path (rule {d.get('rule', '?')})", pad=12)
        ax.legend(loc="center left")
    return fig


def _roc_grid(y: np.ndarray, s: np.ndarray, grid: np.ndarray) -> np.ndarray:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return np.interp(grid, fpr, tpr)


def _pr_grid(y: np.ndarray, s: np.ndarray, grid: np.ndarray) -> np.ndarray:
    from sklearn.metrics import precision_recall_curve

    prec, rec, _ = precision_recall_curve(y, s)
    # recall decreases along the arrays; interpolated precision at recall r is the best
    # precision at any recall >= r (a running max), then reversed so recall increases for interp
    prec = np.maximum.accumulate(prec)
    return np.interp(grid, rec[::-1], prec[::-1])


def _curve_band(
    y: np.ndarray, s: np.ndarray, fn: Any, grid: np.ndarray, n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """2.5 / 97.5 percentile of the curve over stratified bootstrap resamples."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    curves = []
    for _ in range(n_resamples):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        curves.append(fn(y[idx], s[idx], grid))
    arr = np.asarray(curves)
    return np.percentile(arr, 2.5, axis=0), np.percentile(arr, 97.5, axis=0)


def plot_roc_pr(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    control_scores: Sequence[np.ndarray] | None = None,
    *,
    n_resamples: int = 200,
    seed: int = 0,
    label: str = "H-Neuron probe",
) -> Any:
    """ROC and precision-recall curves of a probe with stratified-bootstrap 95% bands, beside
    random-neuron controls (one thin grey curve each, their envelope shaded).

    Args:
        labels: ``[n]`` 1 = hallucinated, 0 = faithful.
        scores: ``[n]`` the probe's decision scores (higher = more likely hallucinated).
        control_scores: scores of probes refit on random neuron sets of the same size, each
            ``[n]`` (see :func:`hneuron_lens.viz.html.random_control_scores`).
        n_resamples: bootstrap resamples for the bands.
        seed: bootstrap seed.
        label: legend name of the probe.

    Returns:
        The ``Figure`` (two panels).
    """
    from hneuron_lens.stats import auroc, average_precision

    y = np.asarray(labels).astype(np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size != s.size or y.min() == y.max():
        raise ValueError("labels and scores need the same length and both classes")
    grid = np.linspace(0, 1, 101)
    controls = [np.asarray(c, dtype=np.float64).reshape(-1) for c in (control_scores or [])]
    with figure("wide", ncols=2) as (fig, (ax_roc, ax_pr)):
        for ax, fn, metric, name in (
            (ax_roc, _roc_grid, auroc, "AUROC"),
            (ax_pr, _pr_grid, average_precision, "AP"),
        ):
            if controls:
                curves = np.array([fn(y, c, grid) for c in controls])
                ax.fill_between(
                    grid, curves.min(0), curves.max(0), color=COLORS["random"], alpha=0.2, lw=0
                )
                vals = [metric(y, c) for c in controls]
                for i, cv in enumerate(curves):
                    ax.plot(
                        grid,
                        cv,
                        color=COLORS["random"],
                        lw=0.6,
                        label=(
                            f"{len(controls)} random-neuron controls ({name} "
                            f"{np.mean(vals):.3f}, range {min(vals):.3f}-{max(vals):.3f})"
                            if i == 0
                            else None
                        ),
                    )
            lo, hi = _curve_band(y, s, fn, grid, n_resamples, seed)
            ax.fill_between(grid, lo, hi, color=COLORS["h"], alpha=0.25, lw=0)
            ax.plot(
                grid,
                fn(y, s, grid),
                color=COLORS["h"],
                lw=2,
                label=f"{label} ({name} {metric(y, s):.3f}; 95% band)",
            )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
        ax_roc.plot([0, 1], [0, 1], color=COLORS["reference"], ls=":", lw=1)
        ax_pr.axhline(
            y.mean(), color=COLORS["reference"], ls=":", lw=1, label=f"chance ({y.mean():.2f})"
        )
        ax_roc.set_xlabel("false positive rate")
        ax_roc.set_ylabel("true positive rate")
        ax_roc.set_title(f"ROC, {y.size} samples ({int(y.sum())} hallucinated)")
        ax_pr.set_xlabel("recall")
        ax_pr.set_ylabel("precision")
        ax_pr.set_title("precision-recall")
        ax_roc.legend(loc="lower right")
        ax_pr.legend(loc="lower left")
    return fig


def plot_alpha_sweep(report: Any) -> Any:
    """Rate against alpha for the neuron set under test (Wilson 95% band) and its random
    controls (thin lines, their envelope shaded).

    Args:
        report: a :class:`~hneuron_lens.intervene.SweepReport` (or ``to_dict()``).

    Returns:
        The ``Figure``.
    """
    d = _as_dict(report)
    a = np.asarray(d["alphas"], dtype=float)
    rates = d["stats"]["rates"]

    def band(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = rates[name]
        est = np.array([_nan(r["estimate"]) if r else np.nan for r in rows])
        lo = np.array([_nan(r["low"]) if r else np.nan for r in rows])
        hi = np.array([_nan(r["high"]) if r else np.nan for r in rows])
        return est, lo, hi

    h = d["h_name"]
    controls = list(d.get("control_names") or [])
    with figure("single") as (fig, ax):
        if controls:
            c_est = np.array([band(c)[0] for c in controls])
            ax.fill_between(
                a,
                np.nanmin(c_est, 0),
                np.nanmax(c_est, 0),
                color=COLORS["random"],
                alpha=0.25,
                lw=0,
                label=f"{len(controls)} random controls (envelope)",
            )
            for row in c_est:
                ax.plot(a, row, color=COLORS["random"], lw=0.6)
        est, lo, hi = band(h)
        ax.fill_between(a, lo, hi, color=COLORS["h"], alpha=0.2, lw=0)
        ax.plot(a, est, "o-", color=COLORS["h"], lw=2, ms=4, label=f"{h} (Wilson 95% band)")
        ax.axvline(1.0, color=COLORS["reference"], ls=":", lw=1)
        ax.set_xlabel("alpha (neuron activation scale)")
        ax.set_ylabel(f"{d.get('metric', 'rate')} rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{d.get('task', 'task')}: alpha sweep")
        ax.legend(loc="best")
    return fig


def plot_neuron_auroc_vs_weight(report: Any) -> Any:
    """Each H-Neuron's single-neuron AUROC (its CETT alone) against its L1 probe weight.

    Args:
        report: a :class:`~hneuron_lens.probe.ProbeReport` (or ``to_dict()``) with neuron stats.

    Returns:
        The ``Figure``.
    """
    d = _as_dict(report)
    ns = d.get("neuron_stats") or {"weight": [], "auroc": [], "layer": [], "neuron": []}
    w = np.asarray(ns["weight"], dtype=float)
    auc = np.asarray(ns["auroc"], dtype=float)
    with figure("single") as (fig, ax):
        ax.scatter(w, auc, s=16, color=COLORS["h"], zorder=3, label=f"H-Neurons (n={w.size})")
        order = np.argsort(-w)[:5]
        for i in order:
            ax.annotate(
                f"L{ns['layer'][i]}.{ns['neuron'][i]}",
                (w[i], auc[i]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axhline(0.5, color=COLORS["reference"], ls=":", lw=1, label="chance")
        if w.size and w.min() > 0 and w.max() / w.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel("L1 probe weight")
        ax.set_ylabel("single-neuron AUROC (test)")
        ax.set_title("one neuron alone vs its weight in the probe")
        ax.legend(loc="lower right")
    return fig


FUNNEL_STEPS = (
    ("asked", "asked"),
    ("answered", "answered (no refusal)"),
    ("consistent_true", "consistently correct"),
    ("consistent_false", "consistently wrong"),
    ("mixed", "mixed (dropped)"),
    ("refused", "refused (dropped)"),
    ("missing", "missing (dropped)"),
    ("span_not_found", "answer span not found"),
)
"""Funnel fields in display order with their labels."""


def plot_funnel(funnel: Any) -> Any:
    """How many questions survive each step of the consistency filter (horizontal bars).

    Args:
        funnel: a :class:`~hneuron_lens.judge.Funnel` or its ``to_dict()`` (``funnel.json``).

    Returns:
        The ``Figure``.
    """
    d = _as_dict(funnel)
    steps = [(k, lbl) for k, lbl in FUNNEL_STEPS if k in d]
    vals = np.array([int(d[k]) for k, _ in steps])
    colors = [
        COLORS["base"]
        if k in ("asked", "answered")
        else COLORS["ceiling"]
        if k == "consistent_true"
        else COLORS["h"]
        if k == "consistent_false"
        else COLORS["random"]
        for k, _ in steps
    ]
    with figure("single") as (fig, ax):
        yy = np.arange(len(steps))[::-1]
        ax.barh(yy, vals, color=colors)
        for y, v in zip(yy, vals, strict=True):
            ax.annotate(
                str(int(v)),
                (v, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.set_yticks(yy, [lbl for _, lbl in steps])
        ax.set_xlabel("questions")
        ax.set_xlim(0, max(1, vals.max()) * 1.15)
        ax.set_title("collection funnel")
        ax.grid(axis="y", visible=False)
    return fig
