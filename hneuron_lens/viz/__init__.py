"""Figures: one small matplotlib style (:mod:`hneuron_lens.viz.style`) and one module per stage.

- :mod:`hneuron_lens.viz.origin`: drift-rank histogram with the permutation null, per-layer
  drift, transfer ROC curves.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global state): functions
return the figure, :func:`hneuron_lens.viz.style.save_figure` writes it.
"""
