"""Origin-analysis figures: drift ranks against the permutation null, drift per layer, and the
ROC curves of the probe transfer.

Each function takes a report from :mod:`hneuron_lens.origin` and returns a matplotlib
``Figure`` (save it with :func:`hneuron_lens.viz.style.save_figure`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hneuron_lens.viz.style import COLORS, COMPONENT_COLORS, figure

__all__ = ["plot_drift_ranks", "plot_layer_drift", "plot_transfer_roc"]


def plot_drift_ranks(report: Any, variant: str = "global", bins: int = 20) -> Any:
    """Histogram of the tested set's drift ranks, beside the permutation null of its mean.

    Left: the H-Neurons' normalised ranks (1 = least drift) as a density histogram, each one as a
    tick below the axis, over the all-neuron reference (ranks are uniform by construction,
    density 1). Right: the mean rank of random sets with the same per-layer counts (the
    permutation null), the set's observed mean with its bootstrap CI, and 0.5.

    Args:
        report: a :class:`~hneuron_lens.origin.DriftReport`.
        variant: ``"global"`` or ``"layer"`` z-scoring.
        bins: histogram bins over [0, 1].

    Returns:
        The ``Figure`` (one panel when the report tested no neuron set).
    """
    if variant not in report.ranks:
        raise ValueError(f"variant must be one of {list(report.ranks)}, got {variant!r}")
    test = report.tests.get(variant)
    if report.neuron_set is None or test is None:
        with figure("single") as (fig, ax):
            ax.hist(report.scores[variant], bins=60, color=COLORS["all"])
            ax.set_yscale("log")
            ax.set_xlabel(f"drift score (mean z, {variant} z-scoring)")
            ax.set_ylabel("neurons")
            ax.set_title(f"drift of all {report.n_features:,} neurons")
        return fig
    ranks = report.ranks[variant][report.neuron_set]
    with figure("wide", ncols=2) as (fig, (ax, ax2)):
        edges = np.linspace(0, 1, bins + 1)
        ax.hist(
            ranks,
            bins=edges,
            density=True,
            color=COLORS["h"],
            alpha=0.75,
            label=f"H-Neurons (n={ranks.size})",
        )
        ax.axhline(1.0, color=COLORS["reference"], ls="--", lw=1, label="all neurons (uniform)")
        ax.plot(ranks, np.full(ranks.size, -0.04), "|", color=COLORS["h"], ms=8, clip_on=False)
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=-0.08)
        ax.set_xlabel("normalised drift rank (1 = least drift)")
        ax.set_ylabel("density")
        ax.set_title(f"drift ranks ({variant} z-scoring)")
        ax.legend(loc="upper left")

        null = test.null_values
        if null.size:
            ax2.hist(
                null, bins=40, color=COLORS["random"], alpha=0.8, label="random layer-matched sets"
            )
        ax2.axvline(0.5, color=COLORS["reference"], ls="--", lw=1, label="0.5")
        m = test.mean_rank
        ax2.axvline(m.estimate, color=COLORS["h"], lw=2, label=f"H-Neurons {m.estimate:.3f}")
        if np.isfinite(m.low) and np.isfinite(m.high):
            ax2.axvspan(m.low, m.high, color=COLORS["h"], alpha=0.15, label="95% CI (bootstrap)")
        ax2.set_xlabel("mean normalised rank of the set")
        ax2.set_ylabel("random sets")
        ax2.set_title(
            f"permutation p = {test.perm_p_value:.3g}, t-test p = {test.t_p_value:.3g} "
            f"({test.alternative})"
        )
        ax2.legend(loc="upper left")
    return fig


def plot_layer_drift(report: Any) -> Any:
    """Drift per layer: each component's median ``1 - cos`` (dashed), the median of every
    neuron's mean over components with its interquartile band (the reference for the set), and the
    tested set's neurons (their mean over components) as points at their layer.

    Args:
        report: a :class:`~hneuron_lens.origin.DriftReport`.

    Returns:
        The ``Figure``.
    """
    off = report.layout.offsets
    layers = np.arange(report.layout.n_layers)

    def quartiles(values: np.ndarray) -> np.ndarray:
        return np.array(
            [np.percentile(values[int(off[i]) : int(off[i + 1])], [25, 50, 75]) for i in layers]
        )

    mean_drift = report.drift()
    with figure("wide") as (fig, ax):
        positive = [mean_drift[mean_drift > 0]]
        for comp, values in report.components.items():
            color = COMPONENT_COLORS.get(comp, COLORS["all"])
            median = quartiles(values)[:, 1]
            ax.plot(layers, median, color=color, lw=1, ls="--", label=f"{comp}: median")
            positive.append(values[values > 0])
        q = quartiles(mean_drift)
        ax.plot(layers, q[:, 1], color=COLORS["reference"], lw=1.5, label="mean of components")
        ax.fill_between(
            layers, q[:, 0], q[:, 2], color=COLORS["all"], alpha=0.35, label="its quartiles"
        )
        if report.neuron_set is not None:
            lay, _ = report.layout.unflatten_index(report.neuron_set)
            ax.scatter(
                lay,
                mean_drift[report.neuron_set],
                s=18,
                color=COLORS["h"],
                zorder=3,
                label=f"H-Neurons (n={report.neuron_set.size}): mean of components",
            )
        pos = np.concatenate(positive) if positive else np.zeros(0)
        if pos.size and pos.max() / max(pos.min(), 1e-300) > 100:
            ax.set_yscale("log")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel("1 - cos(base, instruct)")
        ax.set_title("parameter drift per layer")
        ax.legend(loc="best")
    return fig


def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def plot_transfer_roc(report: Any) -> Any:
    """ROC curves of the transfer: the probe on instruct and on base features, random
    layer-matched sets on base, and the ceiling (a probe trained on base features).

    Args:
        report: a :class:`~hneuron_lens.origin.TransferReport`.

    Returns:
        The ``Figure``.
    """
    y = np.asarray(report.labels)
    with figure("square") as (fig, ax):
        if report.random_base_scores is not None:
            for i, s in enumerate(report.random_base_scores):
                fpr, tpr = _roc(y, s)
                label = None
                if i == 0 and report.random is not None:
                    label = f"random sets on base ({report.random.base_auroc})"
                ax.plot(fpr, tpr, color=COLORS["random"], lw=0.6, alpha=0.5, label=label)
        if report.ceiling_scores is not None and report.ceiling is not None:
            fpr, tpr = _roc(y, report.ceiling_scores)
            ax.plot(
                fpr,
                tpr,
                color=COLORS["ceiling"],
                ls="--",
                lw=1.5,
                label=f"trained on base ({report.ceiling.auroc.estimate:.3f})",
            )
        if report.instruct_scores is not None and report.instruct is not None:
            fpr, tpr = _roc(y, report.instruct_scores)
            ax.plot(
                fpr,
                tpr,
                color=COLORS["instruct"],
                lw=2,
                label=f"probe on instruct ({report.instruct.auroc})",
            )
        if report.format_control_scores is not None and report.format_control is not None:
            fpr, tpr = _roc(y, report.format_control_scores)
            ax.plot(
                fpr,
                tpr,
                color=COLORS["instruct"],
                ls="--",
                lw=1.5,
                label=f"instruct, base prompt ({report.format_control.auroc.estimate:.3f})",
            )
        fpr, tpr = _roc(y, report.base_scores)
        ax.plot(fpr, tpr, color=COLORS["base"], lw=2, label=f"probe on base ({report.base.auroc})")
        ax.plot([0, 1], [0, 1], color=COLORS["reference"], ls=":", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"probe transfer, {report.n} samples (AUROC [95% CI])")
        ax.legend(loc="lower right")
    return fig
