"""Neuron views: per-token CETT of chosen neurons over real responses, shown with circuitsvis.

:func:`token_cett` runs a model over judged samples (one at a time, no padding) and returns, for
each sample, every token's CETT for the chosen neurons (the same formula as
:mod:`hneuron_lens.cett`, not reduced: ``|z_jt| * ||W_out[j]|| / ||mlp_out_t||``). The views
built from it:

* :func:`neuron_view`: one neuron's CETT over hallucinated and faithful responses side by side
  (circuitsvis ``ColoredTokens``), the answer span underlined;
* :func:`activations_view`: every chosen neuron over every sample with a neuron selector
  (circuitsvis ``TextNeuronActivations``);
* :func:`topk_view`: the tokens where each neuron fires most (circuitsvis ``TopkTokens``);
* :func:`risk_view`: a response coloured by the probe's per-token risk, the probe's linear score
  applied to each token's CETT vector (its mean over the answer tokens is the answer-level log-odds).

Offline by construction: the circuitsvis JavaScript bundle shipped inside the circuitsvis wheel
(``circuitsvis/dist/cdn/iife.js``) is inlined into the HTML (no CDN request), and every view's
container starts with a static HTML table of the same tokens and values, which React replaces
when scripts run: with JavaScript off, a reader still sees the numbers.
"""

from __future__ import annotations

import functools
import html
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TokenActivations",
    "NeuronView",
    "token_cett",
    "neuron_view",
    "activations_view",
    "topk_view",
    "token_risk",
    "risk_view",
    "circuitsvis_bundle",
]


@dataclass
class TokenActivations:
    """Per-token CETT of some neurons over one sample's tokens."""

    sample_id: str
    """The sample's id."""
    label: int
    """1 = hallucinated, 0 = faithful."""
    tokens: list[str]
    """Decoded tokens of the response (``response_only``) or of the whole chat, ``[pos]``."""
    values: np.ndarray
    """float32 ``[pos, k]`` CETT of each chosen neuron at each token (unitless ratio)."""
    neurons: list[tuple[int, int]]
    """The ``k`` neurons as ``(layer, neuron)``, the column order of ``values``."""
    answer: tuple[int, int] | None
    """``(start, end)`` of the answer span in ``tokens`` (end exclusive), if located."""


def token_cett(
    model: Any,
    samples: Sequence[Any],
    neurons: Sequence[tuple[int, int]],
    *,
    response_only: bool = True,
    span_cfg: Any = None,
    eps: float = 1e-8,
) -> list[TokenActivations]:
    """Per-token CETT of ``neurons`` on each judged sample (samples that cannot be tokenised
    with an answer span are skipped, as in extraction).

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        samples: :class:`~hneuron_lens.data.records.JudgedSample` records.
        neurons: ``(layer, neuron)`` pairs, e.g. ``list(probe.h_neurons.top(8))``.
        response_only: keep only the response tokens (default) instead of the whole chat.
        span_cfg: a :class:`~hneuron_lens.spans.SpanConfig` (default settings when ``None``).
        eps: added to ``||mlp_out||`` as in :class:`~hneuron_lens.cett.CETTConfig`.

    Returns:
        One :class:`TokenActivations` per tokenised sample.
    """
    import torch

    from hneuron_lens.hooks import hooked
    from hneuron_lens.models import neuron_sites
    from hneuron_lens.spans import tokenize_samples

    neurons = [(int(a), int(b)) for a, b in neurons]
    sites = {s.layer: s for s in neuron_sites(model)}
    for layer, n in neurons:
        if layer not in sites or not 0 <= n < sites[layer].d_mlp:
            raise ValueError(f"neuron ({layer}, {n}) is not in this model")
    layers = sorted({layer for layer, _ in neurons})
    by_layer = {la: [i for i, (l2, _) in enumerate(neurons) if l2 == la] for la in layers}
    toks, _ = tokenize_samples(model.tokenizer, list(samples), span_cfg)
    labels = {s.qid: int(s.label) for s in samples}
    out: list[TokenActivations] = []

    class _Stop(Exception):
        pass

    state: dict[str, Any] = {}  # this sample's [pos, k] output and the layers' |z| in flight

    def post(z: Any, hook: Any, layer: int) -> None:
        idx = torch.tensor([neurons[i][1] for i in by_layer[layer]], device=z.device)
        state[f"z{layer}"] = z[0, :, idx].float().abs()

    def out_hook(y: Any, hook: Any, layer: int) -> None:
        idx = torch.tensor([neurons[i][1] for i in by_layer[layer]], device=y.device)
        norm = y[0].float().norm(dim=-1, keepdim=True) + eps
        v = state.pop(f"z{layer}") * sites[layer].w_out_norm[idx].float() / norm
        state["values"][:, by_layer[layer]] = v.cpu()
        if layer == layers[-1]:
            raise _Stop  # nothing after the last needed MLP is used

    hooks = []
    for la in layers:
        hooks.append((sites[la].hook_post, functools.partial(post, layer=la)))
        hooks.append((sites[la].hook_out, functools.partial(out_hook, layer=la)))
    device = sites[layers[0]].w_out_norm.device
    for tok in toks:
        state["values"] = torch.zeros(len(tok.input_ids), len(neurons), dtype=torch.float32)
        with torch.no_grad(), hooked(model, hooks):
            try:
                model(torch.tensor([tok.input_ids], device=device))
            except _Stop:
                pass
        values = state.pop("values")
        start, end = (tok.prompt_end, tok.response_end) if response_only else (0, len(tok))
        pieces = [model.tokenizer.decode([i]) for i in tok.input_ids[start:end]]
        answer = None
        if tok.answer is not None:
            answer = (tok.answer[0] - start, tok.answer[1] - start)
        out.append(
            TokenActivations(
                sample_id=tok.sample_id,
                label=labels.get(tok.sample_id, tok.label),
                tokens=pieces,
                values=values[start:end].numpy(),
                neurons=neurons,
                answer=answer,
            )
        )
    return out


# ------------------------------------------------------------------------------ rendering


@functools.lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """The circuitsvis browser bundle shipped in its wheel, safe to inline in a ``<script>``.

    Raises:
        DependencyError: circuitsvis is missing or its wheel has no ``dist/cdn/iife.js``.
    """
    from hneuron_lens.errors import DependencyError

    try:
        import circuitsvis
    except ImportError:
        raise DependencyError(
            "circuitsvis is not installed", hint="pip install 'circuitsvis>=1.43.3'"
        ) from None
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise DependencyError(
            "circuitsvis has no offline bundle (dist/cdn/iife.js)",
            file=path,
            hint="reinstall circuitsvis from its PyPI wheel (>=1.43.3)",
        )
    js = path.read_text(encoding="utf-8")
    # inline-safe: no closing tag inside, no source-map fetch
    js = js.replace("</script>", "<\\/script>").replace("//# sourceMappingURL=iife.js.map", "")
    return js


def _json_props(props: dict[str, Any]) -> str:
    text = json.dumps(props, allow_nan=False, default=_to_list)
    return text.replace("</", "<\\/")


def _to_list(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _static_table(title: str, rows: list[tuple[str, list[str], list[float]]]) -> str:
    """The no-JavaScript form of a view: one row of tokens with values per labelled sample."""
    parts = [f'<table class="hnl-static"><caption>{html.escape(title)}</caption>']
    for label, tokens, values in rows:
        vmax = max([abs(v) for v in values] + [1e-12])
        cells = "".join(
            f'<td title="{v:.4g}" style="background: rgba(192,57,43,{min(1.0, abs(v) / vmax):.2f})">'
            f"{html.escape(t)}<br><small>{v:.3g}</small></td>"
            for t, v in zip(tokens, values, strict=True)
        )
        parts.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    parts.append("</table>")
    return "".join(parts)


@dataclass
class NeuronView:
    """One circuitsvis component with its props and its static fallback.

    ``_repr_html_`` (notebooks) inlines the circuitsvis bundle; :func:`hneuron_lens.viz.html`
    pages inline it once and embed many views with :meth:`container`.
    """

    component: str
    """circuitsvis React component (``ColoredTokens``, ``TextNeuronActivations``, ``TopkTokens``)."""
    props: dict[str, Any]
    """Its props (JSON-able)."""
    title: str
    """A heading shown above the view."""
    static_html: str
    """The same data as a plain HTML table (shown until / unless the script runs)."""

    def container(self, element_id: str | None = None) -> str:
        """A ``<div>`` holding the static table plus the script that renders the component into
        it (needs the bundle loaded before it on the page)."""
        eid = element_id or f"hnl-view-{uuid.uuid4().hex[:12]}"
        return (
            f'<div class="hnl-view" data-component="{self.component}">'
            f"<h4>{html.escape(self.title)}</h4>"
            f'<div id="{eid}" class="hnl-view-body">{self.static_html}</div>'
            f"<script>CircuitsVis.render({json.dumps(eid)}, CircuitsVis.{self.component}, "
            f"{_json_props(self.props)});</script></div>"
        )

    def _repr_html_(self) -> str:
        return f"<script>{circuitsvis_bundle()}</script>{self.container()}"

    def to_html(self) -> str:
        """A standalone HTML page (bundle inlined, works offline)."""
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title></head><body>"
            f"{self._repr_html_()}</body></html>"
        )


def _column(acts: TokenActivations, neuron: tuple[int, int]) -> np.ndarray:
    try:
        j = acts.neurons.index((int(neuron[0]), int(neuron[1])))
    except ValueError:
        raise ValueError(f"neuron {tuple(neuron)} was not computed for {acts.sample_id}") from None
    return acts.values[:, j]


def _label(acts: TokenActivations) -> str:
    return f"{'hallucinated' if acts.label == 1 else 'faithful'} {acts.sample_id}"


def neuron_view(
    acts: Sequence[TokenActivations], neuron: tuple[int, int], *, max_samples: int = 3
) -> NeuronView:
    """One neuron's per-token CETT on hallucinated and faithful responses, side by side.

    Args:
        acts: output of :func:`token_cett` (both labels, ideally).
        neuron: the ``(layer, neuron)`` to show.
        max_samples: responses per label.

    Returns:
        A :class:`NeuronView` (circuitsvis ``ColoredTokens`` over the concatenated responses,
        a ``|`` token between responses; the static table has one row per response).
    """
    hall = [a for a in acts if a.label == 1][:max_samples]
    faith = [a for a in acts if a.label == 0][:max_samples]
    chosen = hall + faith
    if not chosen:
        raise ValueError("no samples to show")
    tokens: list[str] = []
    values: list[float] = []
    rows = []
    for a in chosen:
        v = _column(a, neuron).astype(float)
        prefix = [f"[{_label(a)}] "]
        tokens += prefix + list(a.tokens) + [" | "]
        values += [0.0] + v.tolist() + [0.0]
        rows.append((_label(a), list(a.tokens), v.tolist()))
    vmax = float(max(abs(x) for x in values)) or 1.0
    layer, n = neuron
    title = f"L{layer} N{n}: per-token CETT, {len(hall)} hallucinated | {len(faith)} faithful"
    return NeuronView(
        component="ColoredTokens",
        props={"tokens": tokens, "values": values, "minValue": 0.0, "maxValue": vmax},
        title=title,
        static_html=_static_table(title, rows),
    )


def activations_view(acts: Sequence[TokenActivations], max_samples: int = 8) -> NeuronView:
    """Every computed neuron over up to ``max_samples`` responses, a neuron selector on top
    (circuitsvis ``TextNeuronActivations``; the "layer" axis is the response's label)."""
    chosen = list(acts)[:max_samples]
    if not chosen:
        raise ValueError("no samples to show")
    neurons = chosen[0].neurons
    names = [f"L{la}.N{n}" for la, n in neurons]
    title = f"{len(neurons)} neurons over {len(chosen)} responses (per-token CETT)"
    rows = [(f"{_label(a)} / {names[0]}", list(a.tokens), a.values[:, 0].tolist()) for a in chosen]
    return NeuronView(
        component="TextNeuronActivations",
        props={
            "tokens": [list(a.tokens) for a in chosen],
            "activations": [a.values[:, None, :].astype(float).tolist() for a in chosen],
            "firstDimensionName": "Response",
            "secondDimensionName": "Neuron",
            "firstDimensionLabels": ["all"],
            "secondDimensionLabels": names,
        },
        title=title,
        static_html=_static_table(title, rows),
    )


def topk_view(acts: Sequence[TokenActivations], k: int = 8) -> NeuronView:
    """The tokens where each neuron's CETT is highest (and lowest) in each response
    (circuitsvis ``TopkTokens``; static form: each neuron's top-k tokens over all responses)."""
    chosen = list(acts)
    if not chosen:
        raise ValueError("no samples to show")
    neurons = chosen[0].neurons
    top_vals, top_idx, bot_vals, bot_idx = [], [], [], []
    for a in chosen:
        v = a.values.astype(float)[
            None
        ]  # [1, pos, neurons]: circuitsvis's [layers, tokens, neurons]
        kk = min(k, v.shape[1])
        top = np.argsort(-v, axis=1, kind="stable")[:, :kk, :]
        bot = np.argsort(v, axis=1, kind="stable")[:, :kk, :][:, ::-1, :]
        top_idx.append(top.tolist())
        bot_idx.append(bot.tolist())
        top_vals.append(np.take_along_axis(v, top, axis=1).tolist())
        bot_vals.append(np.take_along_axis(v, bot, axis=1).tolist())
    names = [f"L{la}.N{n}" for la, n in neurons]
    rows = []
    for j, name in enumerate(names):
        pool = [(float(a.values[t, j]), a.tokens[t]) for a in chosen for t in range(len(a.tokens))]
        pool.sort(key=lambda x: -x[0])
        rows.append((name, [t for _, t in pool[:k]], [v for v, _ in pool[:k]]))
    title = f"top-{k} tokens of {len(neurons)} neurons over {len(chosen)} responses"
    return NeuronView(
        component="TopkTokens",
        props={
            "tokens": [list(a.tokens) for a in chosen],
            "topkVals": top_vals,
            "topkIdxs": top_idx,
            "bottomkVals": bot_vals,
            "bottomkIdxs": bot_idx,
            "firstDimensionName": "Set",
            "thirdDimensionName": "Neuron",
            "sampleLabels": [_label(a) for a in chosen],
            "firstDimensionLabels": ["H-Neurons"],
        },
        title=title,
        static_html=_static_table(title, rows),
    )


def token_risk(
    probe: Any, model: Any, samples: Sequence[Any], *, span_cfg: Any = None
) -> list[TokenActivations]:
    """The probe's log-odds applied to each token's CETT vector (all non-zero weights).

    Returns one :class:`TokenActivations` per sample whose single column is the per-token
    log-odds ``w . CETT_t + b``; its mean over the answer tokens equals the probe's answer-level
    decision (the answer vector is the mean of the token vectors and the score is linear).
    """
    w, b = probe._effective_weights()
    nz = np.flatnonzero(w)
    layer, neuron = probe.layout_.unflatten_index(nz)
    pairs = list(zip(layer.tolist(), neuron.tolist(), strict=True))
    acts = token_cett(model, samples, pairs, span_cfg=span_cfg)
    out = []
    for a in acts:
        risk = a.values.astype(np.float64) @ w[nz] + b
        out.append(
            TokenActivations(
                a.sample_id,
                a.label,
                a.tokens,
                risk[:, None].astype(np.float32),
                [(-1, -1)],
                a.answer,
            )
        )
    return out


def risk_view(risk: TokenActivations) -> NeuronView:
    """A response coloured by the probe's per-token risk (log-odds of hallucination: red above
    0, blue below), from :func:`token_risk`."""
    v = risk.values[:, 0].astype(float)
    vmax = float(np.max(np.abs(v))) or 1.0
    ans = ""
    if risk.answer is not None:
        s, e = risk.answer
        ans = f", answer span mean {v[s:e].mean():+.2f}" if e > s else ""
    title = f"probe risk per token (log-odds), {_label(risk)}{ans}"
    return NeuronView(
        component="ColoredTokens",
        props={
            "tokens": list(risk.tokens),
            "values": v.tolist(),
            "minValue": -vmax,
            "maxValue": vmax,
            "negativeColor": "#2471a3",
            "positiveColor": "#c0392b",
        },
        title=title,
        static_html=_static_table(title, [(_label(risk), list(risk.tokens), v.tolist())]),
    )
