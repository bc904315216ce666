"""The probe's 'held-out + suppression' C rule wired to the intervention module."""

from __future__ import annotations

import numpy as np

from hneuron_lens.data.builtin import builtin_qa
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.generation import GenerationConfig
from hneuron_lens.intervene import suppression_accuracy
from hneuron_lens.probe import probe_path


def _split(rng, n, layout):
    labels = np.array([i % 2 for i in range(n)])
    answer = rng.gamma(2.0, 0.01, size=(n, layout.n_features)).astype(np.float32)
    answer[labels == 1, 3] += 0.05
    other = rng.gamma(2.0, 0.01, size=(n, layout.n_features)).astype(np.float32)
    return FeatureSplit.from_arrays({"answer": answer, "other": other}, labels, layout=layout)


def test_held_out_plus_suppression_calls_the_model(tiny):
    model = tiny("llama")
    layout = NeuronLayout((48, 48))
    rng = np.random.default_rng(0)
    train, val = _split(rng, 80, layout), _split(rng, 40, layout)
    items = builtin_qa(["capitals"])[:3]
    calls = []

    def suppression_fn(table):
        acc = suppression_accuracy(
            model,
            table,
            items,
            gen_cfg=GenerationConfig(do_sample=False, max_new_tokens=3, progress=False),
        )
        calls.append((len(table), acc))
        return acc

    path = probe_path(
        train,
        val,
        Cs=(0.3, 3.0),
        rule="held-out+suppression",
        suppression_fn=suppression_fn,
        n_resamples=50,
    )
    assert calls and all(0.0 <= acc <= 1.0 for _, acc in calls)
    assert path.rule == "held-out+suppression"
    assert (0, 3) in {
        (int(r.layer), int(r.neuron)) for r in path.probe.h_neurons.to_pandas().itertuples()
    }


def test_cli_train_with_the_suppression_rule(tiny, tmp_path, monkeypatch, capsys, caplog):
    import json

    from hneuron_lens import cli
    from hneuron_lens.store import ActivationStore

    model = tiny("llama")
    monkeypatch.setattr(cli, "_load_model", lambda args: model)
    layout = NeuronLayout((48, 48))
    rng = np.random.default_rng(1)
    train, val = _split(rng, 80, layout), _split(rng, 40, layout)
    store = ActivationStore(tmp_path / "store")
    store.open_for({"synthetic": 1}, layout=layout, regions=("answer", "other"))
    for name, sp in (("train", train), ("validation", val)):
        store.write_batch(
            [f"{name}{i}" for i in range(len(sp.labels))],
            sp.labels,
            [name] * len(sp.labels),
            {r: np.asarray(sp.features[r]) for r in ("answer", "other")},
        )
    store.close()
    argv = ["train", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "probe")]
    assert cli.main([*argv, "--rule", "held-out+suppression"]) == 2  # needs --Cs
    assert "give --Cs" in capsys.readouterr().err  # one line on stderr, exit code 2
    extra = ["--Cs", "0.3,3", "--rule", "held-out+suppression", "--suppression-limit", "4"]
    assert cli.main([*argv, *extra, "--max-new-tokens", "3"]) == 0
    assert "QA accuracy on 4 questions per C" in capsys.readouterr().out
    saved = json.loads((tmp_path / "probe_path.json").read_text())
    assert saved["rule"] == "held-out+suppression"
    assert all(p["suppression_accuracy"] is not None for p in saved["points"] if p["n_positive"])
