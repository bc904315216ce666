"""HTML: rich notebook display of the library's results and one self-contained run report.

* ``*_html`` functions back the ``_repr_html_`` methods of :class:`~hneuron_lens.probe.ProbeReport`,
  :class:`~hneuron_lens.probe.ProbePath`, :class:`~hneuron_lens.probe.NeuronTable`,
  :class:`~hneuron_lens.intervene.SweepReport` and :class:`~hneuron_lens.judge.Funnel`: a table
  with every confidence interval and a small inline figure, so a notebook cell that ends with
  the object shows something a person wants to read.
* :func:`build_report` / :func:`write_report` turn a run directory (``hneuron-lens run``) into
  one HTML file that needs nothing else: figures embedded as PNG data URIs, the circuitsvis
  bundle inlined once (no CDN), neuron views with a static table for readers without JavaScript,
  the funnel, the manifest and the commands that reproduce the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "figure_to_data_uri",
    "figure_html",
    "probe_report_html",
    "probe_path_html",
    "neuron_table_html",
    "sweep_report_html",
    "funnel_html",
    "random_control_scores",
    "run_samples",
    "build_report",
    "write_report",
    "GENERATOR",
]

GENERATOR = "hneuron_lens report"
"""The ``<meta name="generator">`` of report files (how an existing report is recognised)."""

_CSS = """
.hnl { font-family: system-ui, sans-serif; font-size: 13px; }
.hnl table { border-collapse: collapse; margin: 6px 0; }
.hnl th, .hnl td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
.hnl th { background: #f4f4f4; }
.hnl caption { text-align: left; font-weight: bold; padding: 2px 0; }
.hnl figure { margin: 6px 0; }
.hnl figure img { max-width: 100%; }
.hnl .ci { color: #666; }
.hnl .note { color: #666; font-size: 12px; }
.hnl-static td { text-align: center; font-family: monospace; }
.hnl pre { background: #f7f7f7; padding: 6px; overflow-x: auto; font-size: 12px; }
"""


# ------------------------------------------------------------------------------ small pieces


def figure_to_data_uri(fig: Any, dpi: int = 110) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (drawn under the house style)."""
    import matplotlib as mpl

    from hneuron_lens.viz.style import RC

    buf = io.BytesIO()
    with mpl.rc_context(RC):
        fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_html(fig: Any, caption: str, dpi: int = 110) -> str:
    """``<figure>`` with the embedded PNG and a caption (also its ``alt`` text)."""
    cap = html.escape(caption)
    return (
        f'<figure class="hnl-figure"><img alt="{cap}" src="{figure_to_data_uri(fig, dpi)}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _iv(iv: Any) -> str:
    """An interval (object or dict) as ``est <span>[lo, hi]</span>``."""
    if iv is None:
        return "-"
    d = iv.to_dict() if hasattr(iv, "to_dict") else iv
    return f'{_f(d["estimate"])} <span class="ci">[{_f(d["low"])}, {_f(d["high"])}]</span>'


def _table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table; cells are trusted HTML (callers escape text)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _wrap(inner: str) -> str:
    return f'<div class="hnl"><style>{_CSS}</style>{inner}</div>'


# ------------------------------------------------------------------------------ rich display


def _probe_report_tables(d: dict[str, Any]) -> str:
    thr = d.get("threshold_metrics") or {}
    header = ["metric", "p &gt; 0.5 (95% CI)"] + (
        [f"Youden threshold {_f(d.get('threshold'))}"] if thr else []
    )
    rows = [
        [html.escape(k), _iv(v)] + ([_iv(thr.get(k))] if thr else [])
        for k, v in d["metrics"].items()
    ]
    methods = {v.get("method", "") for v in d["metrics"].values()}
    out = _table(
        f"{d['n_samples']} test samples ({d['n_positive']} hallucinated), "
        f"{d['n_h_neurons']} H-Neurons ({_f(d['h_per_mille'])} per mille)",
        header,
        rows,
    )
    if any("degenerate" in m for m in methods):
        out += (
            '<p class="note">Some bootstrap intervals are degenerate (a perfectly separated '
            "small test set): proportions show Wilson intervals instead.</p>"
        )
    if d.get("baselines"):
        refit = d.get("h_refit") or {}
        rows = [["H-Neurons (L2 refit)", _f(refit.get("auroc")), "", _f(refit.get("accuracy")), ""]]
        for b in d["baselines"]:
            rows.append(
                [
                    f"random, {html.escape(b['kind'])} (n={b['n_neurons']})",
                    _iv(b["auroc"]),
                    f"{b['gap_auroc']:+.3f}",
                    _iv(b["accuracy"]),
                    f"{b['gap_accuracy']:+.3f}",
                ]
            )
        out += _table(
            "random-neuron controls (mean [2.5, 97.5 percentile over sets]); gap = H minus mean",
            ["set", "AUROC", "gap", "accuracy", "gap"],
            rows,
        )
    return out


def probe_report_html(report: Any, figures: bool = True) -> str:
    """Metrics with CIs, the random-neuron controls, the top H-Neurons' single-neuron stats and
    (``figures``) the single-neuron AUROC vs weight plot."""
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    out = _probe_report_tables(d)
    ns = d.get("neuron_stats")
    if ns and ns.get("layer"):
        rows = [
            [
                str(ns["layer"][i]),
                str(ns["neuron"][i]),
                _f(ns["weight"][i], 4),
                _f(ns["auroc"][i]),
                _f(ns["cohens_d"][i]),
            ]
            for i in range(min(10, len(ns["layer"])))
        ]
        more = len(ns["layer"]) - len(rows)
        out += _table(
            "strongest H-Neurons" + (f" ({more} more)" if more > 0 else ""),
            ["layer", "neuron", "weight", "AUROC alone", "Cohen's d"],
            rows,
        )
        if figures:
            from hneuron_lens.viz.plots import plot_neuron_auroc_vs_weight

            out += figure_html(plot_neuron_auroc_vs_weight(d), "single-neuron AUROC vs weight", 80)
    return _wrap(out)


def probe_path_html(path: Any, figures: bool = True) -> str:
    """The C grid (held-out accuracy / AUROC with CIs, neuron counts, Jaccard with the previous
    C), the chosen C marked, the bootstrap stability and (``figures``) the C-path plot."""
    d = path.to_dict() if hasattr(path, "to_dict") else dict(path)
    rows = []
    for i, p in enumerate(d["points"]):
        mark = "&#9733;" if i == d["chosen_index"] else ""
        rows.append(
            [
                mark,
                f"{p['C']:g}",
                str(p["n_nonzero"]),
                str(p["n_positive"]),
                _iv(p["accuracy"]),
                _iv(p["auroc"]),
                _f(p.get("suppression_accuracy")),
                _f(p.get("jaccard_prev"), 2),
            ]
        )
    out = _table(
        f"C path (rule {html.escape(str(d.get('rule')))}, chosen C = {d['best_C']:g})",
        [
            "",
            "C",
            "non-zero",
            "H-Neurons",
            "held-out accuracy",
            "held-out AUROC",
            "suppression acc.",
            "Jaccard(prev)",
        ],
        rows,
    )
    if d.get("stability"):
        out += f"<p>bootstrap stability (Jaccard with the chosen set): {_iv(d['stability'])}</p>"
    if figures:
        from hneuron_lens.viz.plots import plot_c_path

        out += figure_html(plot_c_path(d), "C path", 80)
    return _wrap(out)


def neuron_table_html(table: Any, figures: bool = True, max_rows: int = 20) -> str:
    """The neurons (strongest first) and (``figures``) their layer distribution."""
    d = table.to_dict() if hasattr(table, "to_dict") else dict(table)
    n = len(d["layer"])
    n_features = int(sum(d["layout"]["d_mlp"]))
    rows = [
        [str(d["layer"][i]), str(d["neuron"][i]), _f(d["weight"][i], 4)]
        for i in range(min(n, max_rows))
    ]
    cap = (
        f"{n} {d.get('sign', 'positive')} neurons = {_f(1000.0 * n / n_features)} per mille of "
        f"{n_features}" + (f" (first {max_rows})" if n > max_rows else "")
    )
    out = _table(cap, ["layer", "neuron", "weight"], rows)
    if figures and n:
        from hneuron_lens.viz.plots import plot_layer_distribution

        out += figure_html(plot_layer_distribution(d), "neurons per layer", 80)
    return _wrap(out)


def sweep_report_html(report: Any, figures: bool = True) -> str:
    """Rates per alpha with Wilson CIs for the tested set and each control, the changes, slopes,
    H-minus-random and (``figures``) the alpha-sweep plot."""
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    st = d["stats"]
    names = [d["h_name"], *d["control_names"]]
    rows = [[html.escape(n)] + [_iv(r) for r in st["rates"][n]] for n in names]
    out = _table(
        f"{html.escape(d['task'])}: {html.escape(d['metric'])} rate by alpha (Wilson 95% CI), "
        f"{len(d['item_ids'])} items",
        ["set"] + [f"&alpha;={a:g}" for a in d["alphas"]],
        rows,
    )
    pairs = sorted({p for n in names for p in st["deltas_pp"].get(n, {})})
    rows = [
        [html.escape(n)]
        + [_iv(st["deltas_pp"].get(n, {}).get(p)) for p in pairs]
        + [_iv(st["slopes_pp_per_alpha"].get(n))]
        for n in names
    ]
    out += _table(
        "change in rate (percentage points, paired bootstrap CI) and slope (pp per unit alpha)",
        ["set"] + [html.escape(p) for p in pairs] + ["slope"],
        rows,
    )
    hm = st.get("h_minus_random")
    if hm:
        out += (
            f"<p>H minus random slope: {_f(hm['diff_pp_per_alpha'], 2)} pp/alpha, CI "
            f"{_iv(hm['ci'])}, p = {_f(hm['p_value'], 4)} ({html.escape(hm['p_method'])}), "
            f"rank p = {_f(hm['rank_p'], 3)}</p>"
        )
    if figures:
        from hneuron_lens.viz.plots import plot_alpha_sweep

        out += figure_html(plot_alpha_sweep(d), "alpha sweep", 80)
    return _wrap(out)


def funnel_html(funnel: Any, figures: bool = True) -> str:
    """The consistency-filter counts and (``figures``) the funnel bars."""
    from hneuron_lens.viz.plots import FUNNEL_STEPS

    d = funnel.to_dict() if hasattr(funnel, "to_dict") else dict(funnel)
    labels = {**dict(FUNNEL_STEPS), "substring_only": "substring-only alias match (a warning)"}
    rows = [[html.escape(labels.get(k, k)), str(v)] for k, v in d.items()]
    out = _table("collection funnel (questions)", ["step", "count"], rows)
    if figures:
        from hneuron_lens.viz.plots import plot_funnel

        out += figure_html(plot_funnel(d), "collection funnel", 80)
    return _wrap(out)


# ------------------------------------------------------------------------------ controls


def random_control_scores(
    probe: Any, train: Any, test: Any, *, n_random: int = 5, seed: int = 0
) -> list[np.ndarray]:
    """Test-split scores of probes refit on random layer-matched neuron sets (the ROC / PR
    controls): each set has the H-Neurons' per-layer counts, drawn from the other neurons, and
    is refit like :meth:`~hneuron_lens.probe.SparseProbe.evaluate`'s baseline (same mode and C,
    L2 penalty).

    Args:
        probe: a fitted :class:`~hneuron_lens.probe.SparseProbe`.
        train: the training :class:`~hneuron_lens.features.FeatureSplit`.
        test: the evaluation split.
        n_random: number of random sets.
        seed: seed of the draws.

    Returns:
        ``n_random`` arrays ``[n_test]`` of decision scores (empty without H-Neurons).
    """
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.probe import SparseProbe, training_matrix

    h = probe.h_neurons
    if len(h) == 0:
        return []
    layout = probe.layout_
    rng = np.random.default_rng(seed)
    pool = np.ones(layout.n_features, dtype=bool)
    pool[h.flat_index] = False
    counts = h.per_layer_counts()
    x_test = test.region("answer")
    params = {**probe.get_params(), "penalty": "l2"}
    out = []
    for _ in range(n_random):
        cols = np.sort(
            np.concatenate(
                [
                    rng.choice(
                        np.flatnonzero(pool[layout.offsets[li] : layout.offsets[li + 1]])
                        + layout.offsets[li],
                        size=int(c),
                        replace=False,
                    )
                    for li, c in enumerate(counts)
                    if c > 0
                ]
            )
        )
        xt, yt = training_matrix(train, probe.mode, columns=cols)
        sub = SparseProbe(**params)
        sub._fit_matrix(xt, yt, NeuronLayout((cols.size,)), copy=False)
        out.append(sub.decision_function(np.asarray(x_test[:, cols], dtype=np.float32)))
    return out


# ------------------------------------------------------------------------------ the report


def _read_json(path: Path) -> Any:
    from hneuron_lens.io import loads_json

    return loads_json(path.read_text(encoding="utf-8"))


def run_samples(run: str | Path) -> list[Any]:
    """The run's judged, consistent samples with answer text (as the pipeline built them)."""
    from hneuron_lens.collect import judge_collected, load_collected
    from hneuron_lens.pipeline import attach_answer_text

    samples, _ = judge_collected(load_collected(Path(run) / "responses.jsonl"))
    samples, _ = attach_answer_text(samples)
    return samples


def _sweeps(run: Path) -> list[Path]:
    """``report.json`` files of alpha sweeps saved under the run (``intervene --out RUN/x``)."""
    out = []
    for path in sorted(run.glob("*/report.json")):
        try:
            d = _read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and {"alphas", "outcomes", "stats"} <= set(d):
            out.append(path)
    return out


def _commands(run: Path, manifest: dict[str, Any]) -> str:
    cfg = manifest.get("config") or {}
    run_cmd = ["hneuron-lens", "run", "--out-dir", str(run)]
    for key, opt in (("model", "--model"), ("questions", "--questions"), ("seed", "--seed")):
        if key in cfg and cfg[key] is not None:
            run_cmd += [opt, str(cfg[key])]
    lines = [
        "# the run (settings in the manifest below; `hneuron-lens run --help` lists every option)",
        shlex.join(run_cmd),
        "# this report",
        shlex.join(["hneuron-lens", "report", str(run), "--html"]),
    ]
    return "\n".join(lines)


def build_report(
    run_dir: str | Path,
    *,
    model: Any = None,
    samples: Sequence[Any] | None = None,
    neuron_views: bool = True,
    n_neurons: int = 4,
    n_per_label: int = 3,
    n_random: int = 5,
    n_resamples: int = 200,
    seed: int = 0,
) -> str:
    """One self-contained HTML page for a run directory.

    Args:
        run_dir: a directory written by ``hneuron-lens run`` (``manifest.json``, ``funnel.json``,
            ``probe/``, ``probe_path.json``, ``report.json``, ``store/``, ``responses.jsonl``);
            alpha sweeps saved in its subdirectories (``*/report.json``) get a section each.
        model: the run's model, for the neuron views (``None``: loaded with
            :func:`hneuron_lens.load_model` from the manifest's ``config.model``).
        samples: judged samples for the neuron views (``None``: the run's own, rebuilt from
            ``responses.jsonl``); only those in the test split are shown when the store has one.
        neuron_views: include the circuitsvis views (needs the model; ``False`` skips loading it).
        n_neurons: H-Neurons with a view of their own (the strongest).
        n_per_label: responses per label in each neuron view.
        n_random: random-neuron control refits for the ROC / PR figure.
        n_resamples: bootstrap resamples for the curve bands.
        seed: seed of the controls and bands.

    Returns:
        The HTML text (write it with :func:`write_report`).

    Raises:
        DataError: ``run_dir`` has no readable manifest.
    """
    import hneuron_lens as hl
    from hneuron_lens.errors import DataError
    from hneuron_lens.viz import plots

    run = Path(run_dir)
    hint = "give a directory written by `hneuron-lens run` (it has a manifest.json)"
    try:
        manifest = _read_json(run / "manifest.json")
        model_name = manifest["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"not a run directory ({type(err).__name__}: {str(err)[:80]})", file=run, hint=hint
        ) from None

    sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
    notes: list[str] = []

    funnel = manifest.get("funnel")
    if (run / "funnel.json").is_file():
        funnel = _read_json(run / "funnel.json")
    if funnel:
        sections.append(("funnel", "Collection funnel", funnel_html(funnel)))
    if manifest.get("splits"):
        sp = manifest["splits"]
        sections.append(
            (
                "splits",
                "Splits",
                _wrap(_table("samples per split", list(sp), [[str(v) for v in sp.values()]])),
            )
        )
    if (run / "probe_path.json").is_file():
        sections.append(("path", "C path", probe_path_html(_read_json(run / "probe_path.json"))))
    report = _read_json(run / "report.json") if (run / "report.json").is_file() else None
    probe = None
    if (run / "probe").is_dir():
        probe = hl.SparseProbe.load(run / "probe")
    if report is not None:
        sections.append(("evaluation", "Evaluation on the test split", probe_report_html(report)))
    store = None
    if (run / "store").is_dir():
        store = hl.ActivationStore(run / "store")
    splits = set(store.splits) if store is not None else set()
    test = store.split("test") if store is not None and {"train", "test"} <= splits else None
    if test is not None and len(set(np.asarray(test.labels).tolist())) < 2:
        notes.append("no ROC / PR figure: the test split holds one class only")
        test = None
    if probe is not None and test is not None:
        scores = probe.decision_function(test)
        controls = random_control_scores(
            probe, store.split("train"), test, n_random=n_random, seed=seed
        )
        fig = plots.plot_roc_pr(test.labels, scores, controls, n_resamples=n_resamples, seed=seed)
        sections.append(
            (
                "roc",
                "ROC and precision-recall",
                _wrap(
                    figure_html(
                        fig,
                        f"ROC / PR on the test split, {n_resamples}-resample bootstrap bands, "
                        f"{len(controls)} layer-matched random-neuron controls",
                    )
                ),
            )
        )
    if probe is not None:
        sections.append(("neurons", "H-Neurons", neuron_table_html(probe.h_neurons)))
    for i, sweep in enumerate(_sweeps(run)):
        sections.append(
            (
                f"sweep-{i}",
                f"Alpha sweep: {sweep.parent.name}",
                sweep_report_html(_read_json(sweep)),
            )
        )

    views: list[str] = []
    if neuron_views and probe is not None and len(probe.h_neurons):
        from hneuron_lens.viz import neurons as nv

        if model is None:
            model = hl.load_model(manifest.get("config", {}).get("model", "default"))
        pool = list(samples) if samples is not None else run_samples(run)
        if test is not None:
            test_ids = set(test.ids)
            in_test = [s for s in pool if s.qid in test_ids]
            pool = in_test or pool
        hall = [s for s in pool if s.label == 1][:n_per_label]
        faith = [s for s in pool if s.label == 0][:n_per_label]
        chosen = hall + faith
        top = list(probe.h_neurons.top(n_neurons))
        acts = nv.token_cett(model, chosen, top)
        for neuron in top:
            views.append(nv.neuron_view(acts, neuron, max_samples=n_per_label).container())
        views.append(nv.topk_view(acts).container())
        for r in nv.token_risk(probe, model, [*hall[:1], *faith[:1]]):
            views.append(nv.risk_view(r).container())
    elif neuron_views:
        notes.append("no neuron views: the run has no probe with H-Neurons")
    if views:
        sections.append(
            (
                "views",
                "Neuron views",
                '<p class="note">Per-token CETT (|z| &middot; ||W_out|| / ||MLP out||) of the '
                "strongest H-Neurons on test-split responses, hallucinated then faithful; the "
                "probe's per-token log-odds. Tables are shown where JavaScript is off.</p>"
                + "".join(views),
            )
        )
    sections.append(
        (
            "manifest",
            "Manifest",
            f"<pre>{html.escape(json.dumps(manifest, indent=1, default=str))}</pre>",
        )
    )
    sections.append(
        ("reproduce", "Reproduce", f"<pre>{html.escape(_commands(run, manifest))}</pre>")
    )

    bundle = ""
    if views:
        from hneuron_lens.viz.neurons import circuitsvis_bundle

        bundle = f"<script>{circuitsvis_bundle()}</script>"
    toc = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t, _ in sections)
    body = "".join(
        f'<section id="{a}"><h2>{html.escape(t)}</h2>{h}</section>' for a, t, h in sections
    )
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    title = f"hneuron_lens run {run.name}: {model_name}"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>{html.escape(title)}</title><style>{_CSS} body {{ max-width: 1100px; "
        "margin: auto; }</style></head><body class='hnl'>"
        f"{bundle}<h1>{html.escape(title)}</h1>"
        f"<p>library {html.escape(str(manifest.get('library_version')))}, chosen C "
        f"{html.escape(str(manifest.get('chosen_C')))}, run directory "
        f"<code>{html.escape(str(run))}</code></p>{note_html}<ul>{toc}</ul>{body}</body></html>"
    )


def _is_report(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    return GENERATOR.encode() in head


def write_report(
    run_dir: str | Path, out: str | Path | None = None, *, overwrite: bool = True, **kwargs: Any
) -> Path:
    """Build the report of ``run_dir`` (see :func:`build_report` for ``kwargs``) and write it
    atomically to ``out`` (default ``RUN_DIR/report.html``).

    A file that is not a report written by this function is never replaced.
    """
    from hneuron_lens.io import atomic_write_text, check_output_file

    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    check_output_file(path, "HTML report", recognise=_is_report, overwrite=overwrite)
    text = build_report(run_dir, **kwargs)
    atomic_write_text(path, text)
    return path
