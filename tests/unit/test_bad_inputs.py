"""A corpus of bad inputs through the command line: one line, exit code 2, nothing changed.

Two tiers (issue 11):

* **In process** (``hneuron_lens.cli.main``, the same code path as the console script): a
  hypothesis-generated family of bad files (empty, binary, non-UTF-8, wrong schema, truncated,
  CSV in a ``.jsonl``, huge lines) for every loader and every subcommand that reads a file. Each
  run must exit with code 2, print exactly one ``error:`` line naming the file and no traceback,
  load no model, and change no byte of the directory it ran in.
* **Subprocesses** (``python -m hneuron_lens.cli``): a representative set, every row of the
  issue's table and every subcommand at least once, as a user would meet them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hneuron_lens import cli
from hneuron_lens.collect import _LINE_HEADS

# --------------------------------------------------------------------------------------------
# helpers


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its size and sha256."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _no_model(args):  # a bad input must stop before any model is loaded
    raise AssertionError("a model was loaded for a bad input")


def run_main(argv: list[str]) -> tuple[int, str]:
    """``cli.main(argv)`` in this process; returns (exit code, stderr)."""
    err = io.StringIO()
    with (
        mock.patch.object(cli, "_load_model", _no_model),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        code = cli.main(argv)
    return code, err.getvalue()


def assert_one_line_error(code: int, stderr: str, names: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 2, stderr
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0]  # the error is the last line
    assert names in errors[0], (names, errors[0])
    assert ": " in errors[0].split(")", 1)[-1], errors[0]  # "...(<file>...): <what to do>"


# --------------------------------------------------------------------------------------------
# the generated family: file contents with no usable record

KNOWN_KEYS = {
    "qid",
    "id",
    "question_id",
    "q_id",
    "original_index",
    "question",
    "query",
    "problem",
    "prompt",
    "aliases",
    "ground_truth",
    "answers",
    "answer",
    "gold",
    "normalized_aliases",
    "response",
    "output",
    "completion",
    "generation",
    "label",
    "hallucinated",
    "correct",
    "responses",
    "judges",
    "answer_tokens",
    "tokenized_response",
    "answer_text",
    "split",
    "options",
    "choices",
    "data",
    "type",
    "t",
    "f",
    "layers",
    "neurons",
    "layer",
    "neuron",
    "name",
    "meta",
    "format",
    "params",
    "fingerprint",
    "layout",
    "regions",
    "dtype",
}

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12)
_scalar = st.one_of(st.integers(-5, 5), st.text(max_size=20), st.booleans(), st.none())


class Blob(bytes):
    """File content whose repr stays short in hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"Blob({len(self)} bytes: {bytes(self[:40])!r}...)"


FAMILIES = ("empty", "binary", "non_utf8", "wrong_schema", "truncated", "csv_text", "huge")
"""Kinds of bad file: each holds no usable record for any loader."""


def bad_content(family: str) -> st.SearchStrategy[bytes]:
    """File contents of one family (see :data:`FAMILIES`)."""
    if family == "empty":
        return st.sampled_from([b"", b"\n", b"   \n\n", b"\t\r\n"])
    if family == "binary":  # every line holds bytes that are not UTF-8
        return st.lists(st.binary(max_size=60), min_size=1, max_size=8).map(
            lambda lines: b"\n".join(b"\xff" + x.replace(b"\n", b"") + b"\x80" for x in lines)
        )
    if family == "non_utf8":  # a plausible record in another encoding
        text = st.text(alphabet='éàüßøñ€abc "{}:', min_size=1, max_size=40)
        codec = st.sampled_from(["latin-1", "utf-16", "cp1252"])
        return st.tuples(text, codec).map(
            lambda tc: json.dumps(
                {"question": "Où est " + tc[0], "response": "à Paris", "label": 0},
                ensure_ascii=False,
            ).encode(tc[1], errors="replace")
        )
    if family == "wrong_schema":  # JSON objects with none of the expected fields
        keys = st.lists(_word.filter(lambda k: k not in KNOWN_KEYS), min_size=1, max_size=4)
        return keys.flatmap(
            lambda ks: st.lists(
                st.fixed_dictionaries({k: _scalar for k in ks}), min_size=1, max_size=5
            )
        ).map(lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode())
    if family == "truncated":  # a valid record cut before its end (a copy interrupted)
        record = json.dumps(
            {
                "qid": "q1",
                "question": "Capital of France?",
                "response": "Paris",
                "label": 0,
                "aliases": ["Paris"],
                "answer": "Paris",
            }
        )
        return st.integers(1, len(record) - 1).map(lambda cut: record[:cut].encode())
    if family == "csv_text":  # a CSV file given where JSON is expected (and vice versa)
        header = st.sampled_from(["question,response,label", "a,b,c", "question;answer"])
        return header.map(lambda h: (h + "\nWhat?,Paris,0\nWho?,Me,1\n").encode())
    assert family == "huge"  # one line of 1-2 MB that is not JSON (or nested past the limit)
    return st.tuples(
        st.integers(1_000_000, 2_000_000), st.sampled_from([b"x", b"[", b"{", b"1,", b'{"a":'])
    ).map(lambda sc: Blob(sc[1] * sc[0]))


FAST = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Per (target, family): 4 generated files (``derandomize``: the same ones on every run)."""


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hl-bad-"))


NEURONS = {"set.json": json.dumps({"layers": [0], "neurons": [1]}).encode()}
QIDS = {"m_train_qids.json": json.dumps({"t": ["q1"], "f": ["q2"]}).encode()}


def _check(
    argv_for,
    content: bytes,
    file_name: str,
    expect_in_error: str | None = None,
    extra: dict[str, bytes] | None = None,
) -> None:
    """Write ``content`` to ``file_name`` (and ``extra`` good files) in a fresh directory, run
    the command, check the one-line error and that no byte changed."""
    root = _workdir()
    for name, data in (extra or {}).items():
        (root / name).write_bytes(data)
    path = root / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    before = tree_digest(root)
    code, stderr = run_main(argv_for(root, path))
    assert_one_line_error(code, stderr, expect_in_error or path.name)
    assert tree_digest(root) == before  # no byte changed, nothing created


def _store(root: Path) -> list[str]:
    return ["--store", str(root / "store")]


TARGETS = {
    # name: (argv builder, bad file name, extra good files, families that are not bad for it)
    "extract judged .jsonl": (
        lambda root, path: ["extract", "--data", str(path), *_store(root)],
        "judged.jsonl",
        None,
        (),
    ),
    "extract judged .json": (
        lambda root, path: ["extract", "--data", str(path), *_store(root)],
        "judged.json",
        None,
        (),
    ),
    "extract judged .csv": (
        lambda root, path: ["extract", "--data", str(path), *_store(root)],
        "judged.csv",
        None,
        ("csv_text",),  # question,response,label rows are a valid judged CSV
    ),
    "extract release": (
        lambda root, path: ["extract", "--format", "release", "--data", str(path), *_store(root)],
        "m_answer_tokens_train.jsonl",
        QIDS,
        (),
    ),
    "collect --data .jsonl": (
        lambda root, path: ["collect", "--data", str(path), "--out", str(root / "o.jsonl")],
        "questions.jsonl",
        None,
        (),
    ),
    "collect --data .csv": (
        lambda root, path: ["collect", "--data", str(path), "--out", str(root / "o.jsonl")],
        "questions.csv",
        None,
        (),
    ),
    "collect --data .parquet": (
        lambda root, path: ["collect", "--data", str(path), "--out", str(root / "o.jsonl")],
        "questions.parquet",
        None,
        (),
    ),
    "collect --out (existing)": (
        lambda root, path: ["collect", "--out", str(path)],
        "responses.jsonl",
        None,
        ("empty",),  # an empty file is a new collection
    ),
    "run --questions": (
        lambda root, path: ["run", "--questions", str(path), "--out-dir", str(root / "run")],
        "questions.jsonl",
        None,
        (),
    ),
    "intervene --data qa": (
        lambda root, path: [
            "intervene",
            "--neurons",
            str(root / "set.json"),
            "--task",
            "qa",
            "--data",
            str(path),
            "--out",
            str(root / "sweep"),
        ],
        "qa.jsonl",
        NEURONS,
        (),
    ),
    "intervene --data falseqa": (
        lambda root, path: [
            "intervene",
            "--neurons",
            str(root / "set.json"),
            "--task",
            "falseqa",
            "--data",
            str(path),
            "--out",
            str(root / "sweep"),
        ],
        "falseqa.csv",
        NEURONS,
        ("csv_text",),  # question,...,label rows are a valid FalseQA file
    ),
    "intervene --neurons .json": (
        lambda root, path: [
            "intervene",
            "--neurons",
            str(path),
            "--task",
            "qa",
            "--out",
            str(root / "sweep"),
        ],
        "neurons.json",
        None,
        (),
    ),
    "intervene --neurons .csv": (
        lambda root, path: [
            "intervene",
            "--neurons",
            str(path),
            "--task",
            "qa",
            "--out",
            str(root / "sweep"),
        ],
        "neurons.csv",
        None,
        (),
    ),
    "report": (
        lambda root, path: ["report", str(path.parent)],
        "run/manifest.json",
        None,
        (),
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", sorted(TARGETS))
@FAST
@given(data=st.data())
def test_bad_file(target, family, data):
    """Every loader and file-reading subcommand x every family of bad file."""
    argv_for, name, extra, not_bad = TARGETS[target]
    if family in not_bad:
        return
    content = data.draw(bad_content(family), label="content")
    if target == "collect --out (existing)":  # '{' or '{"' may be collect's own cut-off line
        assume(not any(head.startswith(content.strip()) for head in _LINE_HEADS))
    expect = "run" if target == "report" else None
    _check(argv_for, content, name, expect_in_error=expect, extra=extra)


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.store import ActivationStore

    root = tmp_path_factory.mktemp("good") / "store"
    rng = np.random.default_rng(0)
    layout = NeuronLayout.uniform(2, 8)
    n = 40
    store = ActivationStore(root)
    store.open_for({"synthetic": 1}, layout=layout, regions=("answer", "other"))
    store.write_batch(
        [f"s{i}" for i in range(n)],
        [i % 2 for i in range(n)],
        ["train"] * 30 + ["test"] * 10,
        {r: rng.random((n, layout.n_features)).astype(np.float32) for r in ("answer", "other")},
    )
    store.close()
    return root


def _copy_store(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("family", FAMILIES)
@FAST
@given(data=st.data())
def test_bad_store_manifest(good_store, family, data):
    """train, evaluate and store on a store whose manifest.json is a bad file."""
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.probe import SparseProbe

    root = _workdir()
    store = _copy_store(good_store, root / "store")
    (store / "manifest.json").write_bytes(data.draw(bad_content(family), label="content"))
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 16)).astype(np.float32), np.arange(40) % 2
    probe = SparseProbe(C=1.0).fit(x, y, layout=NeuronLayout.uniform(2, 8)).save(root / "p")
    before = tree_digest(root)
    for argv in (
        ["train", "--store", str(store), "--out", str(root / "probe")],
        ["evaluate", "--probe", str(probe), "--store", str(store)],
        ["store", str(store)],
    ):
        code, stderr = run_main(argv)
        assert_one_line_error(code, stderr, "manifest.json")
    assert tree_digest(root) == before


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["probe.json", "weights.safetensors"])
@FAST
@given(data=st.data())
def test_bad_probe_file(good_store, family, name, data):
    """evaluate and intervene on a saved probe with one bad file."""
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.probe import SparseProbe

    root = _workdir()
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 16)).astype(np.float32), np.arange(40) % 2
    probe_dir = SparseProbe(C=1.0).fit(x, y, layout=NeuronLayout.uniform(2, 8)).save(root / "p")
    (probe_dir / name).write_bytes(data.draw(bad_content(family), label="content"))
    before = tree_digest(root)
    for argv in (
        ["evaluate", "--probe", str(probe_dir), "--store", str(good_store)],
        ["intervene", "--probe", str(probe_dir), "--task", "qa", "--out", str(root / "sweep")],
    ):
        code, stderr = run_main(argv)
        assert_one_line_error(code, stderr, name)
    assert tree_digest(root) == before


# --------------------------------------------------------------------------------------------
# subprocesses: every row of the table, every subcommand at least once

TINY_CLI = textwrap.dedent(
    """
    import sys
    import hneuron_lens.cli as cli
    from hneuron_lens.testing import tiny_model

    cli._load_model = lambda args: tiny_model("llama")  # the CLI on a tiny model (n_ctx=128)
    raise SystemExit(cli.main(sys.argv[1:]))
    """
)


def cli_proc(
    *args: str, tiny: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    head = ["-c", TINY_CLI] if tiny else ["-m", "hneuron_lens.cli"]
    return subprocess.run(
        [sys.executable, *head, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def assert_refused(proc: subprocess.CompletedProcess, names: str) -> None:
    assert_one_line_error(proc.returncode, proc.stderr, names)
    assert "Loading weights" not in proc.stderr


def _judged(path: Path, n: int = 6, big: int = 0) -> Path:
    rows = [
        {
            "qid": f"q{i}",
            "question": f"Question {i}: capital of France?",
            "response": f"It is Paris, I think ({i}).",
            "label": i % 2,
            "answer_text": "Paris",
        }
        for i in range(n)
    ]
    if big:
        rows[0]["response"] = "Paris. " + "blah " * (big // 5)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_subprocess_rows_without_a_model(tmp_path, good_store):
    """Table rows 1, 3, 7, 8, 11 and the subcommands that need no model, as a user meets them."""
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.probe import SparseProbe

    store = _copy_store(good_store, tmp_path / "store")
    run = tmp_path / "run"  # a run directory with the user's own notes
    run.mkdir()
    (run / "responses.jsonl").write_text(json.dumps({"type": "header"}) + "\n")
    (run / "notes.md").write_text("my notes")
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 16)).astype(np.float32), np.arange(40) % 2
    probe = SparseProbe(C=1.0).fit(x, y, layout=NeuronLayout.uniform(2, 8))
    yaml_probe = probe.save(tmp_path / "yaml_probe")
    (yaml_probe / "probe.json").write_text("format: hneuron_lens.SparseProbe\nC: 1.0\n")
    npy_probe = probe.save(tmp_path / "npy_probe")
    with open(npy_probe / "weights.safetensors", "wb") as f:
        np.save(f, np.zeros(16))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "fields.jsonl").write_text('{"q": "a", "r": "b", "y": 0}\n' * 6)
    (tmp_path / "table.jsonl").write_text("question,response,label\nQ?,A,0\n" * 3)
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "r.judged.jsonl").write_text("my own file, not judged samples\n")
    (tmp_path / "r.jsonl").write_text("")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.txt").write_text("x")
    chunk = store / "chunks" / "00000.answer.npy"
    raw = bytearray(chunk.read_bytes())
    raw[-3] ^= 0x01
    chunk.write_bytes(bytes(raw))  # row 3: one flipped byte
    rows = [
        (["train", "--store", str(store), "--out", str(run)], "run"),  # row 1
        (["train", "--store", str(store), "--out", str(tmp_path / "p")], "00000.answer.npy"),
        (["evaluate", "--probe", str(yaml_probe), "--store", str(store)], "probe.json"),  # row 8
        (["evaluate", "--probe", str(npy_probe), "--store", str(store)], "weights.safetensors"),
        (["train", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "p")], "none"),
        (["store", str(store), "--verify"], "store"),
        *[
            (["extract", "--data", str(tmp_path / f), "--store", str(tmp_path / "s")], f)
            for f in ("empty.jsonl", "fields.jsonl", "table.jsonl", "binary.jsonl")  # row 7, 8
        ],
        (["collect", "--out", str(tmp_path / "r.jsonl")], "r.judged.jsonl"),  # row 11
        (["run", "--quick", "--out-dir", str(tmp_path / "mine")], "mine"),
        (
            [
                "intervene",
                "--neurons",
                str(tmp_path / "binary.jsonl"),
                "--task",
                "qa",
                "--out",
                str(tmp_path / "sw"),
            ],
            "binary.jsonl",
        ),
        (["report", str(tmp_path / "mine")], "mine"),
    ]
    before = tree_digest(tmp_path)
    for argv, names in rows:
        assert_refused(cli_proc(*argv), names)
    assert tree_digest(tmp_path) == before, "a refused command changed a file"
    assert (run / "notes.md").read_text() == "my notes"


@pytest.mark.slow
def test_subprocess_rows_with_a_tiny_model(tmp_path):
    """Rows 2 (lost manifest: train reads, extract rebuilds) and 9 (a 50 MB line)."""
    from hneuron_lens.store import ActivationStore

    data = _judged(tmp_path / "judged.jsonl", n=8)
    store = tmp_path / "store"
    assert (
        cli_proc("extract", "--data", str(data), "--store", str(store), tiny=True).returncode == 0
    )
    ids = ActivationStore(store).ids
    (store / "manifest.json").unlink()
    before = tree_digest(store)
    proc = cli_proc("store", str(store))  # a read-only open: rebuilt in memory, nothing written
    assert proc.returncode == 0 and "no manifest.json" in proc.stderr, proc.stderr
    assert tree_digest(store) == before
    proc = cli_proc("extract", "--data", str(data), "--store", str(store), tiny=True)
    assert proc.returncode == 0, proc.stderr
    assert "8 cached, 0 extracted" in proc.stdout  # nothing lost, nothing recomputed
    assert ActivationStore(store).ids == ids and (store / "manifest.json").is_file()

    big = _judged(tmp_path / "big.jsonl", n=4, big=50_000_000)
    assert big.stat().st_size > 50_000_000
    proc = cli_proc("extract", "--data", str(big), "--store", str(tmp_path / "s2"), tiny=True)
    assert_one_line_error(proc.returncode, proc.stderr, "1 of 4 samples are longer than")
    assert "50,000,0" in proc.stderr and not (tmp_path / "s2").exists()
    proc = cli_proc(
        "extract",
        "--data",
        str(big),
        "--store",
        str(tmp_path / "s3"),
        "--too-long",
        "skip",
        tiny=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "left out 1 samples" in proc.stdout and "3 extracted" in proc.stdout
