"""Figures (viz/plots.py), neuron views (viz/neurons.py) and HTML display (viz/html.py) on tiny
random models and synthetic reports: every figure is drawn with the data it was given, per-token
CETT agrees with the engine, and the HTML needs no network."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hneuron_lens.viz import html as vh
from hneuron_lens.viz import neurons as nv
from hneuron_lens.viz import plots
from tests.unit.test_probe import make_split
from tests.unit.test_tasks import _synthetic_report
from tests.unit.viz_run import tiny_samples


@pytest.fixture(scope="module")
def path_and_report():
    from hneuron_lens.probe import probe_path

    train, val, test = make_split(200, seed=0), make_split(100, seed=1), make_split(100, seed=2)
    path = probe_path(train, val, Cs=(0.01, 0.05, 0.3), seed=0, n_resamples=50)
    report = path.probe.evaluate(test, train=train, n_resamples=50, n_random=3, seed=0)
    return path, report, train, test


def _texts(fig) -> str:
    """Every text artist of a figure (titles, labels, legends, annotations)."""
    from matplotlib.text import Text

    return " ".join(t.get_text() for t in fig.findobj(Text))


def test_layer_distribution_per_mille(path_and_report) -> None:
    path, *_ = path_and_report
    h = path.probe.h_neurons
    fig = plots.plot_layer_distribution(h)
    bars = fig.axes[0].patches
    d_mlp = np.asarray(h.layout.d_mlp)
    expected = 1000.0 * h.per_layer_counts() / d_mlp
    np.testing.assert_allclose([b.get_height() for b in bars], expected)
    assert f"{len(h)} H-Neurons" in _texts(fig)
    # the dict form (what a run directory holds) draws the same bars
    fig2 = plots.plot_layer_distribution(h.to_dict())
    np.testing.assert_allclose([b.get_height() for b in fig2.axes[0].patches], expected)


def test_c_path_marks_the_chosen_c(path_and_report) -> None:
    path, *_ = path_and_report
    fig = plots.plot_c_path(path)
    text = _texts(fig)
    assert f"chosen C={path.best_C:g}" in text
    line = fig.axes[0].get_lines()[0]  # AUROC estimates against neuron counts
    np.testing.assert_allclose(line.get_xdata(), [p.n_positive for p in path.points])
    np.testing.assert_allclose(line.get_ydata(), [p.auroc.estimate for p in path.points])


def test_roc_pr_with_bands_and_controls(path_and_report) -> None:
    path, _, train, test = path_and_report
    scores = path.probe.decision_function(test)
    controls = vh.random_control_scores(path.probe, train, test, n_random=3, seed=0)
    assert len(controls) == 3 and all(c.shape == scores.shape for c in controls)
    fig = plots.plot_roc_pr(test.labels, scores, controls, n_resamples=30)
    ax_roc, ax_pr = fig.axes
    text = _texts(fig)
    from hneuron_lens.stats import auroc

    assert f"AUROC {auroc(np.asarray(test.labels), scores):.3f}" in text
    assert "3 random-neuron controls" in text
    # probe curve + 3 controls + diagonal on the ROC panel; bands are PolyCollections
    assert len(ax_roc.get_lines()) == 5
    assert len(ax_roc.collections) == 2 and len(ax_pr.collections) == 2
    with pytest.raises(ValueError, match="both classes"):
        plots.plot_roc_pr(np.zeros(4), np.arange(4.0))


def test_alpha_sweep_wilson_band_and_controls() -> None:
    rep = _synthetic_report(n_items=40, controls=3)
    fig = plots.plot_alpha_sweep(rep)
    ax = fig.axes[0]
    h_line = [ln for ln in ax.get_lines() if ln.get_label().startswith("h ")][0]
    np.testing.assert_allclose(h_line.get_ydata(), [iv.estimate for iv in rep.rates["h"]])
    assert "3 random controls" in _texts(fig)
    plots.plot_alpha_sweep(rep.to_dict())  # the saved form too


def test_neuron_auroc_vs_weight_and_funnel(path_and_report) -> None:
    from hneuron_lens.judge import Funnel

    _, report, *_ = path_and_report
    fig = plots.plot_neuron_auroc_vs_weight(report)
    offsets = fig.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], report.neuron_stats.weight)
    np.testing.assert_allclose(offsets[:, 1], report.neuron_stats.auroc)
    f = Funnel(asked=10, answered=8, consistent_true=3, consistent_false=2, mixed=3, refused=2)
    fig = plots.plot_funnel(f)
    widths = sorted(int(b.get_width()) for b in fig.axes[0].patches)
    assert widths == sorted(f.to_dict()[k] for k, _ in plots.FUNNEL_STEPS)


# ------------------------------------------------------------------------------ neuron views


def test_token_cett_mean_over_answer_matches_engine(tiny) -> None:
    from hneuron_lens.cett import CETTConfig, cett, collate
    from hneuron_lens.spans import tokenize_samples

    model = tiny("llama")
    samples = tiny_samples(4)
    neurons = [(0, 3), (1, 7), (1, 40)]
    acts = nv.token_cett(model, samples, neurons)
    assert [a.sample_id for a in acts] == [s.qid for s in samples]
    toks, _ = tokenize_samples(model.tokenizer, samples)
    for a, tok in zip(acts, toks, strict=True):
        batch = collate([tok], pad_id=0, regions=("answer",))
        ref = cett(model, batch, CETTConfig(regions=("answer",)))["answer"][0]
        s, e = a.answer
        assert a.values.shape == (tok.response_end - tok.prompt_end, 3)
        got = torch.from_numpy(a.values[s:e].mean(0))
        want = torch.stack([ref[la, n] for la, n in neurons])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        assert "".join(a.tokens).startswith(samples[int(a.sample_id[1:])].response[:3])
    with pytest.raises(ValueError, match="not in this model"):
        nv.token_cett(model, samples, [(5, 0)])


def test_views_carry_tokens_values_and_a_static_table(tiny) -> None:
    model = tiny("llama")
    acts = nv.token_cett(model, tiny_samples(6), [(0, 3), (1, 7)])
    view = nv.neuron_view(acts, (1, 7), max_samples=2)
    assert view.component == "ColoredTokens"
    assert len(view.props["tokens"]) == len(view.props["values"])
    assert "hallucinated s001" in view.static_html and "faithful s000" in view.static_html
    page = view._repr_html_()
    assert "CircuitsVis.render" in page and "unpkg.com" not in page
    assert "sourceMappingURL" not in page
    assert re.search(r"<script>[^<]*</script>", page[-5000:])  # the render call is inline
    top = nv.topk_view(acts, k=3)
    assert np.asarray(top.props["topkVals"]).shape == (6, 1, 3, 2)
    act_view = nv.activations_view(acts)
    assert np.asarray(act_view.props["activations"][0]).shape == (len(acts[0].tokens), 1, 2)


def test_token_risk_mean_is_the_answer_log_odds(tiny) -> None:
    """The probe is linear in the answer vector, the mean of token vectors: so the mean of
    per-token risks over the answer span is the probe's answer-level decision."""
    import hneuron_lens as hl
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.probe import SparseProbe

    model = tiny("llama")
    samples = tiny_samples(12)
    layout = NeuronLayout(tuple(s.d_mlp for s in hl.neuron_sites(model)))
    rng = np.random.default_rng(0)
    x = rng.random((12, layout.n_features)).astype(np.float32)
    y = np.array([s.label for s in samples])
    probe = SparseProbe(C=10.0, standardize=True).fit(x, y, layout=layout)
    risks = nv.token_risk(probe, model, samples[:3])
    from hneuron_lens.cett import CETTConfig, cett, collate
    from hneuron_lens.spans import tokenize_samples

    toks, _ = tokenize_samples(model.tokenizer, samples[:3])
    for r, tok in zip(risks, toks, strict=True):
        ref = cett(model, collate([tok], 0, ("answer",)), CETTConfig(regions=("answer",)))
        vec = torch.cat([ref["answer"][0, la, : layout.d_mlp[la]] for la in range(2)]).numpy()
        s, e = r.answer
        np.testing.assert_allclose(
            r.values[s:e, 0].mean(), probe.decision_function(vec[None])[0], rtol=1e-4, atol=1e-4
        )
    view = nv.risk_view(risks[0])
    assert view.props["minValue"] == -view.props["maxValue"]


# ------------------------------------------------------------------------------ rich display


def test_repr_html_of_results(path_and_report) -> None:
    from hneuron_lens.judge import Funnel

    path, report, *_ = path_and_report
    rep = _synthetic_report(n_items=30, controls=2)
    cases = {
        "ProbeReport": (report, ["auroc", "random, layer-matched", "data:image/png;base64,"]),
        "ProbePath": (path, [f"chosen C = {path.best_C:g}", "&#9733;", "<img"]),
        "NeuronTable": (path.probe.h_neurons, ["per mille", "<img"]),
        "SweepReport": (rep, ["Wilson 95% CI", "&alpha;=3", "<img"]),
        "Funnel": (Funnel(asked=5, answered=4, consistent_true=2, consistent_false=1), ["asked"]),
    }
    for name, (obj, needles) in cases.items():
        text = obj._repr_html_()
        for needle in needles:
            assert needle in text, (name, needle)
        assert "http" not in text.replace("http-equiv", ""), name
    # intervals are shown with their bounds
    auroc = report.metrics["auroc"]
    assert f"[{auroc.low:.3f}, {auroc.high:.3f}]" in report._repr_html_()
