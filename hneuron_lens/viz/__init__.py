"""Figures: one small matplotlib style (:mod:`hneuron_lens.viz.style`) and one module per stage.

- :mod:`hneuron_lens.viz.origin`: drift-rank histogram with the permutation null, per-layer
  drift, transfer ROC curves.
- :mod:`hneuron_lens.viz.plots`: H-Neuron layer distribution, C path, ROC / PR with bootstrap
  bands and random-neuron controls, alpha sweeps with Wilson bands, single-neuron AUROC vs
  weight, the collection funnel.
- :mod:`hneuron_lens.viz.neurons`: per-token CETT of chosen neurons and circuitsvis views of it
  (offline: the bundle from the circuitsvis wheel is inlined; a static table without JavaScript).
- :mod:`hneuron_lens.viz.html`: ``_repr_html_`` of the result objects and the self-contained
  run report (``hneuron-lens report RUN_DIR --html``).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global state): functions
return the figure, :func:`hneuron_lens.viz.style.save_figure` writes it.
"""
