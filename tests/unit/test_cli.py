"""The command line on a synthetic store (train, evaluate, report) and argument errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hneuron_lens.cli import build_parser, main, make_task
from hneuron_lens.errors import DataError
from hneuron_lens.features import NeuronLayout
from hneuron_lens.store import ActivationStore


@pytest.fixture()
def synthetic_store(tmp_path):
    rng = np.random.default_rng(0)
    layout = NeuronLayout.uniform(2, 32)
    n = 120
    labels = np.array([i % 2 for i in range(n)])
    answer = rng.gamma(2.0, 0.01, size=(n, layout.n_features)).astype(np.float32)
    answer[labels == 1, 5] += 0.05  # a planted H-neuron at (layer 0, neuron 5)
    other = rng.gamma(2.0, 0.01, size=(n, layout.n_features)).astype(np.float32)
    splits = ["train"] * 80 + ["validation"] * 20 + ["test"] * 20
    store = ActivationStore(tmp_path / "store")
    store.open_for({"synthetic": 1}, layout=layout, regions=("answer", "other"))
    store.write_batch(
        [f"s{i}" for i in range(n)], labels, splits, {"answer": answer, "other": other}
    )
    store.close()
    return tmp_path / "store"


def test_train_evaluate_report(synthetic_store, tmp_path, capsys):
    probe_dir = tmp_path / "probe"
    assert (
        main(["train", "--store", str(synthetic_store), "--out", str(probe_dir), "--Cs", "0.3,1,3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "probe saved" in out
    assert (probe_dir / "probe.json").is_file()
    assert (
        main(
            [
                "evaluate",
                "--probe",
                str(probe_dir),
                "--store",
                str(synthetic_store),
                "--n-random",
                "3",
                "--n-resamples",
                "100",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert "auroc" in json.dumps(report).lower()
    # 'report' needs a run directory
    assert main(["report", str(tmp_path)]) == 2


def test_train_with_the_torch_solver(synthetic_store, tmp_path, capsys):
    """`train --solver torch` fits from the store's arrays and finds the planted neuron; it
    refuses an L2 penalty with a one-line usage error."""
    out_dir = tmp_path / "probe"
    args = ["train", "--store", str(synthetic_store), "--out", str(out_dir), "--solver", "torch"]
    assert main([*args, "--Cs", "0.3,1,3"]) == 0
    from hneuron_lens.probe import SparseProbe

    probe = SparseProbe.load(out_dir)
    assert probe.solver == "torch" and probe.converged_
    assert 5 in set(probe.h_neurons.flat_index.tolist())  # (layer 0, neuron 5)
    capsys.readouterr()
    assert main([*args, "--penalty", "l2", "--C", "1", "--overwrite"]) == 2
    assert "--solver" in capsys.readouterr().err


def test_parser_requires_a_command():
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_intervene_needs_exactly_one_neuron_source(capsys):
    assert main(["intervene", "--task", "qa", "--out", "x"]) == 2


def test_make_task_builtin_and_errors():
    task = make_task("qa", "builtin", limit=5)
    assert len(task.items) == 5
    with pytest.raises(ValueError, match="needs --data"):
        make_task("falseqa", None)


def test_make_task_exclude_drops_trained_questions(tmp_path, capsys):
    from hneuron_lens.data.builtin import builtin_qa

    items = builtin_qa()
    trained = items[:3]
    same_text = items[3]
    lines = [{"type": "header", "settings": {}}]
    lines += [
        {"type": "question", "qid": it.qid, "question": it.question, "responses": ["x"]}
        for it in trained
    ]
    # a question under another id with the same normalised text is dropped too
    lines.append(
        {
            "type": "question",
            "qid": "other-id",
            "question": "  " + same_text.question.upper(),
            "responses": ["x"],
        }
    )
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    task = make_task("qa", "builtin", exclude=path)
    kept = {it.qid for it in task.items}
    assert not kept & {it.qid for it in trained} and same_text.qid not in kept
    assert len(task.items) == len([i for i in items if i.kind == "qa" and i.aliases]) - 4
    assert "dropped 4 of" in capsys.readouterr().out

    ids = tmp_path / "ids.txt"
    ids.write_text(f"{items[10].qid}\n\n{items[11].qid}\n")
    task = make_task("qa", "builtin", exclude=ids)
    assert {items[10].qid, items[11].qid}.isdisjoint(it.qid for it in task.items)

    with pytest.raises(ValueError, match="--exclude works with the qa"):
        make_task("falseqa", "x.csv", exclude=ids)
    with pytest.raises(DataError, match="--exclude"):
        make_task("qa", "builtin", exclude=tmp_path / "missing.jsonl")


def test_make_task_builtin_limit_is_a_seeded_sample_across_topics():
    a = make_task("qa", "builtin", limit=40, seed=1)
    b = make_task("qa", "builtin", limit=40, seed=1)
    c = make_task("qa", "builtin", limit=40, seed=2)
    assert [i.qid for i in a.items] == [i.qid for i in b.items]
    assert [i.qid for i in a.items] != [i.qid for i in c.items]
    topics = {i.qid.rsplit("-", 1)[0] for i in a.items}
    assert len(topics) > 3


def test_user_errors_are_one_line_exit_2_and_bugs_exit_1(tmp_path, capsys, monkeypatch):
    from hneuron_lens import cli

    def missing(spec, **kw):
        raise FileNotFoundError(f"model directory not found: {spec}")

    monkeypatch.setattr("hneuron_lens.models.load_model", missing)
    data = tmp_path / "j.jsonl"
    data.write_text(
        json.dumps({"qid": "a", "question": "Q?", "response": "It is Paris.", "label": 0,
                    "answer_text": "Paris"}) + "\n"
    )  # fmt: skip
    argv = ["extract", "--data", str(data), "--store", str(tmp_path / "s"), "--model", "/nope"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot load model '/nope'") and "(--model)" in err[-1]

    def bug(args):
        raise TypeError("unexpected None")

    monkeypatch.setattr(cli, "build_parser", _parser_with(cli.build_parser, "report", bug))
    assert main(["report", str(tmp_path)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "internal error (TypeError: unexpected None)" in line and "bug" in line
    assert main(["-v", "report", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err


def _parser_with(build, command, func):
    def build_parser():
        parser = build()
        for action in parser._subparsers._group_actions:
            action.choices[command].set_defaults(func=func)
        return parser

    return build_parser


def test_report_error_tells_library_value_errors_from_dependency_ones(capsys):
    """Transitional rule: a ValueError raised by this package's own code (older validation not
    yet moved to the hierarchy) is a user error; one raised inside numpy is a bug."""
    import numpy as np

    from hneuron_lens.cett import CETTConfig
    from hneuron_lens.cli import report_error

    try:
        CETTConfig(reduce="bogus")
    except ValueError as err:
        assert report_error(err) == 2
    assert capsys.readouterr().err.startswith("error: CETTConfig.reduce must be one of")
    try:
        np.zeros(-1)
    except ValueError as err:
        assert report_error(err) == 1
    assert "this is a bug" in capsys.readouterr().err
    assert report_error(PermissionError(13, "Permission denied", "/root/x")) == 2
    assert capsys.readouterr().err.strip() == (
        "error: Permission denied (/root/x): check the path, its permissions and free space"
    )


def test_train_default_selection_stability_and_report(synthetic_store, tmp_path, capsys):
    from hneuron_lens.cli import TRAIN_RULES
    from hneuron_lens.probe import DEFAULT_RULE, RULES, SparseProbe

    assert TRAIN_RULES[0] == DEFAULT_RULE and sorted(TRAIN_RULES) == sorted(RULES)
    out = tmp_path / "p"
    argv = ["train", "--store", str(synthetic_store), "--out", str(out), "--stability", "5"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"rule={DEFAULT_RULE}" in text and "stability selection: 5 fits" in text
    assert "freq" in text  # frequencies beside the weights in the printed table
    probe = SparseProbe.load(out)
    assert probe.standardize and probe.class_weight == "balanced"
    assert (0, 5) in set(probe.h_neurons) and probe.h_neurons.frequency is not None
    assert json.loads((tmp_path / "p_path.json").read_text())["rule"] == DEFAULT_RULE
    # the report of a run directory shows the stability line of its probe
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(
        json.dumps({"model": {"name": "m"}, "funnel": {}, "splits": {}, "chosen_C": 0.1})
    )
    probe.save(run / "probe")
    assert main(["report", str(run)]) == 0
    assert "stability selection: 5 refits" in capsys.readouterr().out
    # one C without selection, the paper's raw fit; --select-by frequency needs --stability
    raw = ["--C", "1", "--no-standardize", "--class-weight", "none", "--intercept-scaling", "1"]
    assert main(["train", "--store", str(synthetic_store), "--out", str(tmp_path / "q"), *raw]) == 0
    assert not SparseProbe.load(tmp_path / "q").standardize
    bad = ["train", "--store", str(synthetic_store), "--out", str(tmp_path / "r")]
    assert main([*bad, "--select-by", "frequency"]) == 2
    assert main([*bad, "--C", "1", "--Cs", "0.1,1"]) == 2
