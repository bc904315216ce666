"""Data-parallel collection: question groups per rank, the merge into one collection file, and
a real 2-process gloo run (torchrun) with a rank SIGKILLed mid-way; the merged file's question
lines equal a single-process run's byte for byte."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from hneuron_lens.collect import CollectConfig, collect, open_collection, question_chunks
from hneuron_lens.collect import settings_for as collect_settings
from hneuron_lens.data.builtin import builtin_qa
from hneuron_lens.distributed import (
    DistEnv,
    DistributedCollectReport,
    collect_distributed,
    collection_staging_dir,
    collection_staging_file,
    merge_collection,
)
from hneuron_lens.errors import DataError
from tests.unit.test_distributed import _one_thread, _torchrun

N = 9  # questions: 5 groups of 2 at batch 4 / k 2 (the last group has one)


def small(**kw) -> CollectConfig:
    base = dict(k=2, max_new_tokens=4, batch_size=4, write_every=1, progress=False)
    base.update(kw)
    return CollectConfig(**base)


def _split(path: Path) -> tuple[dict, list[bytes]]:
    """The header (without its time stamp) and the question lines' bytes."""
    head, *rest = path.read_bytes().splitlines()
    header = json.loads(head)
    header.pop("created")
    return header, rest


@pytest.fixture(scope="module")
def items():
    return builtin_qa()[:N]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny, items) -> Path:
    """A single-process collection of the questions (one thread)."""
    path = tmp_path_factory.mktemp("single") / "collected.jsonl"
    with _one_thread():
        collect(tiny("llama"), items, small(), path)
    return path


def test_groups_cover_the_questions_once(items):
    groups = question_chunks(items, small())
    assert [len(g) for g in groups] == [2, 2, 2, 2, 1]
    assert question_chunks(items, small(write_every=4))[0] == list(items[:4])
    for world in (1, 2, 3, 7):
        qids = [it.qid for r in range(world) for g in groups[r::world] for it in g]
        assert sorted(qids) == sorted(it.qid for it in items)


def test_one_process_is_plain_collect(tiny, tmp_path, items, reference):
    out = tmp_path / "c.jsonl"
    with _one_thread():
        report = collect_distributed(tiny("llama"), items, small(), out, env=DistEnv(0, 1))
    assert report.local.n_generated == N and not collection_staging_dir(out).exists()
    assert _split(out) == _split(reference)


def test_shard_argument_is_checked(tiny, tmp_path, items):
    with pytest.raises(ValueError, match="rank, world_size"):
        collect(tiny("llama"), items, small(), tmp_path / "c.jsonl", shard=(2, 2))


def test_merge_of_shards_equals_single_process(tiny, tmp_path, items, reference):
    """The ranks' steps one after the other in this process (no process group): rank 1 is
    'killed' after its first group and resumed, then rank 0 merges, twice (idempotent)."""
    model, cfg, world = tiny("llama"), small(), 2
    out = tmp_path / "c.jsonl"
    open_collection(out, collect_settings(model, cfg))  # rank 0's first step

    class Killed(Exception):
        pass

    def kill(qids):
        raise Killed(qids)

    with _one_thread():
        with pytest.raises(Killed):
            collect(model, items, cfg, collection_staging_file(out, DistEnv(1, world)),
                    shard=(1, world), on_write=kill)  # fmt: skip
        reports = [
            collect(
                model, items, cfg, collection_staging_file(out, DistEnv(r, world)), shard=(r, world)
            )  # fmt: skip
            for r in range(world)
        ]
    assert [r.n_questions for r in reports] == [5, 4]
    assert [r.n_resumed for r in reports] == [0, 2]  # rank 1's first group was written
    report = DistributedCollectReport(env=DistEnv(0, world), local=reports[0])
    merge_collection(items, cfg, out, world, report)
    assert report.verified and report.n_merged == N and len(report.staging_removed) == world
    assert not collection_staging_dir(out).exists()
    assert _split(out) == _split(reference)
    before = out.read_bytes()
    again = DistributedCollectReport(env=DistEnv(0, world), local=None)
    merge_collection(items, cfg, out, world, again)
    assert again.n_merged == 0 and again.verified and out.read_bytes() == before


def test_merge_refuses_a_missing_question_and_keeps_staging(tiny, tmp_path, items):
    model, cfg, world = tiny("llama"), small(), 2
    out = tmp_path / "c.jsonl"
    open_collection(out, collect_settings(model, cfg))
    staging = collection_staging_file(out, DistEnv(0, world))
    collect(model, items, cfg, staging, shard=(0, world))  # rank 1 never ran
    report = DistributedCollectReport(env=DistEnv(0, world), local=None)
    with pytest.raises(DataError, match="rank 1 did not write 2 questions") as err:
        merge_collection(items, cfg, out, world, report)
    assert "rank-00001-of-00002.jsonl" in str(err.value)
    assert staging.exists() and not report.verified
    header, rest = _split(out)
    assert rest == []  # nothing appended before the whole plan was found


SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from hneuron_lens.collect import CollectConfig
    from hneuron_lens.data.builtin import builtin_qa
    from hneuron_lens.distributed import collect_distributed
    from hneuron_lens.testing import tiny_model

    if sys.argv[2] == "api":
        cfg = CollectConfig(k=2, max_new_tokens=4, batch_size=4, write_every=1, progress=False)
        report = collect_distributed(tiny_model("llama"), builtin_qa()[:9], cfg, sys.argv[1])
        # one write() per line: the two ranks share a pipe, and print() writes each argument
        # separately, so their words could interleave
        sys.stdout.write(f"REPORT {report.env.rank} {report.n_merged} {report.verified}\\n")
        sys.stdout.flush()
    else:  # the command line, with the tiny model in place of a loaded one
        import hneuron_lens.cli as cli
        cli._load_model = lambda args: tiny_model("llama")
        raise SystemExit(cli.main(sys.argv[3:]))
    """
)


@pytest.mark.slow  # four torchrun launches of 2 processes
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_two_ranks_killed_rank_resumes_to_the_single_process_file(tmp_path, reference):
    """2 processes, gloo: rank 1 SIGKILLs itself after its first group (torchrun stops the
    run); the same command again resumes and merges; the question lines equal the
    single-process run's byte for byte. The command line then merges nothing and judges on
    rank 0; with other settings it fails on every rank with rank 0's error (no hang)."""
    script, out = tmp_path / "run.py", tmp_path / "collected.jsonl"
    script.write_text(SCRIPT)
    killed = _torchrun(script, str(out), "api", kill="1:1")
    assert killed.returncode != 0, killed.stdout + killed.stderr
    staged = collection_staging_file(out, DistEnv(1, 2)).read_text().splitlines()
    assert len(staged) == 1 + 2  # header + rank 1's first group of 2 questions
    assert _split(out)[1] == []  # nothing merged before every rank finished
    resumed = _torchrun(script, str(out), "api")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"REPORT 0 {N} True" in resumed.stdout
    assert not collection_staging_dir(out).exists()
    assert _split(out) == _split(reference)
    before = out.read_bytes()
    argv = ["collect", "--data", "builtin", "--limit", str(N), "--out", str(out), "--k", "2",
            "--max-new-tokens", "4", "--batch-size", "4"]  # fmt: skip
    cli = _torchrun(script, str(out), "cli", *argv)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "merged 0 questions" in cli.stdout and out.read_bytes() == before
    assert out.with_suffix(".judged.jsonl").exists() and out.with_suffix(".funnel.json").exists()
    bad = _torchrun(script, str(out), "cli", *argv[:-4], "--k", "3", "--batch-size", "4")
    assert bad.returncode != 0
    errors = [x for x in bad.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 2 and all("collected with other settings" in e for e in errors)
    assert out.read_bytes() == before


def test_cli_distributed_flag_on_one_process(tiny, tmp_path, reference, monkeypatch, capsys):
    """`collect --distributed` without a launcher (WORLD_SIZE unset) is a plain collect."""
    import hneuron_lens.cli as cli

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "_load_model", lambda args: tiny("llama"))
    out = tmp_path / "collected.jsonl"
    argv = ["collect", "--data", "builtin", "--limit", str(N), "--out", str(out), "--k", "2",
            "--max-new-tokens", "4", "--batch-size", "4", "--distributed"]  # fmt: skip
    with _one_thread():
        assert cli.main(argv) == 0
    assert "rank 0/1" in capsys.readouterr().out
    # the CLI writes 16 questions per group (write_every): other batches, same settings hash
    assert _split(out)[0] == _split(reference)[0]
