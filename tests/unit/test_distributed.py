"""Data-parallel extraction: rank shards, the merge, and a real 2-process gloo run (torchrun)
with a rank SIGKILLed mid-way; the merged store equals a single-process store bit for bit."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hneuron_lens.distributed import (
    DistEnv,
    DistributedExtractReport,
    _merge,
    extract_distributed,
    shard_batches,
    staging_dir,
)
from hneuron_lens.errors import UsageError
from hneuron_lens.extract import batch_plan, extract
from hneuron_lens.store import ActivationStore
from tests.unit.test_extract import SAMPLES_CODE, make_samples

N, BATCH, CHUNK = 40, 3, 5  # 14 batches, 8 chunks


@contextlib.contextmanager
def _one_thread():
    """Run like the torchrun ranks do (one thread), so float sums happen in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _store_files(path: Path) -> dict[str, object]:
    """Every chunk file's bytes, every sidecar and the manifest, minus time stamps and the
    checksum cache (file mtimes): what must be equal between two stores of the same rows."""
    out: dict[str, object] = {}
    for p in sorted((path / "chunks").iterdir()):
        if p.suffix == ".npy":
            out[p.name] = p.read_bytes()
        elif p.suffix == ".json":
            sc = json.loads(p.read_text())
            sc.pop("written")
            sc["manifest"].pop("created")
            out[p.name] = sc
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("created", "updated", "verified"):
        manifest.pop(key, None)
    out["manifest.json"] = manifest
    return out


def _assert_same_store(a: Path, b: Path) -> None:
    fa, fb = _store_files(a), _store_files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], name
    sa, sb = ActivationStore(a, verify=True), ActivationStore(b, verify=True)
    assert sa.ids == sb.ids and len(sa) == N
    for split in ("train", "test"):
        xa, xb = sa.split(split), sb.split(split)
        assert xa.ids == xb.ids and (xa.labels == xb.labels).all()
        for region in sa.regions:
            assert xa.features[region].tobytes() == xb.features[region].tobytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny) -> Path:
    """A single-process store of the samples (extract, one thread)."""
    path = tmp_path_factory.mktemp("single") / "store"
    with _one_thread():
        extract(
            tiny("llama"),
            make_samples(N),
            ActivationStore(path, chunk_size=CHUNK),
            batch_size=BATCH,
            progress=False,
        )
    return path


def test_dist_env_from_environment():
    assert DistEnv.from_env({}) == DistEnv(0, 1, 0)
    env = DistEnv.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert env == DistEnv(3, 4, 1) and env.is_distributed
    assert staging_dir("/s", env) == Path("/s/staging/rank-00003-of-00004")
    with pytest.raises(UsageError, match="RANK=4, WORLD_SIZE=4"):
        DistEnv.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UsageError, match="WORLD_SIZE='two'"):
        DistEnv.from_env({"WORLD_SIZE": "two"})


def test_cli_rank_device(monkeypatch):
    """Under a launcher `--device cuda` becomes the rank's GPU; with `--device-map` (one
    process per machine, the model over all its GPUs) the device is left alone."""
    import argparse

    from hneuron_lens.cli import _dist_env

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    args = argparse.Namespace(device="cuda", device_map=None)
    assert _dist_env(args).rank == 3 and args.device == "cuda:1"
    args = argparse.Namespace(device="cuda", device_map="auto")
    _dist_env(args)
    assert args.device == "cuda"


def test_shards_cover_the_plan_once(tiny):
    plan = batch_plan(tiny("llama"), make_samples(N), batch_size=BATCH)
    assert sum(len(b) for b in plan) == N
    for world in (1, 2, 3, 5):
        ids = [sid for r in range(world) for b in shard_batches(plan, r, world) for sid in b]
        assert sorted(ids) == sorted(sid for b in plan for sid in b)


def test_one_process_is_plain_extract(tiny, tmp_path, reference):
    store = ActivationStore(tmp_path / "store", chunk_size=CHUNK)
    with _one_thread():
        report = extract_distributed(
            tiny("llama"), make_samples(N), store, batch_size=BATCH, progress=False,
            env=DistEnv(0, 1, 0),
        )  # fmt: skip
    assert report.local.n_extracted == N and not (tmp_path / "store" / "staging").exists()
    _assert_same_store(tmp_path / "store", reference)


def test_merge_of_shards_equals_single_process(tiny, tmp_path, reference):
    """The ranks' steps run one after the other in this process (no process group): shards
    into staging stores (rank 1 'killed' after 2 batches, then resumed), then rank 0's merge,
    twice (idempotent)."""
    model, samples, world = tiny("llama"), make_samples(N), 2
    target = ActivationStore(tmp_path / "store", chunk_size=CHUNK)
    # rank 0 creates the target store first (what extract_distributed's step 1 does)
    from hneuron_lens.cett import CETTConfig
    from hneuron_lens.extract import store_fingerprint
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.models import neuron_sites
    from hneuron_lens.spans import SpanConfig

    fp = store_fingerprint(model, CETTConfig(), SpanConfig())
    layout = NeuronLayout(tuple(s.d_mlp for s in neuron_sites(model)))
    target.open_for(fp, layout=layout, regions=list(CETTConfig().regions))
    target.close()
    plan = batch_plan(model, samples, batch_size=BATCH)
    with _one_thread():
        for rank in range(world):
            staging = ActivationStore(
                staging_dir(target.path, DistEnv(rank, world)), chunk_size=CHUNK
            )
            if rank == 1:  # an earlier run of rank 1 that wrote only its first 2 batches
                first = {sid for b in shard_batches(plan, 1, world)[:2] for sid in b}
                others = {s.qid for s in samples} - first
                extract(model, samples, staging, batch_size=BATCH, progress=False,
                        shard=(1, world), exclude=others)  # fmt: skip
                assert len(ActivationStore(staging.path)) == 2 * BATCH
            rep = extract(model, samples, staging, batch_size=BATCH, progress=False,
                          shard=(rank, world))  # fmt: skip
            mine = sum(len(b) for b in shard_batches(plan, rank, world))
            assert rep.n_extracted == mine - (2 * BATCH if rank == 1 else 0)
    common = dict(span_cfg=SpanConfig(), batch_size=BATCH, too_long="error")
    report = DistributedExtractReport(env=DistEnv(0, world), local=None)
    _merge(model, samples, target, DistEnv(0, world), report, None, False, False, common)
    assert report.verified and report.n_merged == N and len(report.staging_removed) == world
    assert not (target.path / "staging").exists()
    _assert_same_store(target.path, reference)
    # idempotent: a second merge (after a rerun found everything merged) copies nothing
    for rank in range(world):
        extract(model, samples, ActivationStore(staging_dir(target.path, DistEnv(rank, world))),
                batch_size=BATCH, progress=False, shard=(rank, world),
                exclude=set(ActivationStore(target.path).ids))  # fmt: skip
    again = DistributedExtractReport(env=DistEnv(0, world), local=None)
    _merge(model, samples, target, DistEnv(0, world), again, None, False, False, common)
    assert again.n_merged == 0 and again.verified
    _assert_same_store(target.path, reference)


SCRIPT = SAMPLES_CODE + textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from hneuron_lens.distributed import extract_distributed
    from hneuron_lens.store import ActivationStore
    from hneuron_lens.testing import tiny_model

    if sys.argv[2] == "api":
        store = ActivationStore(sys.argv[1], chunk_size=5)
        report = extract_distributed(
            tiny_model("llama"), make_samples(40), store, batch_size=3, progress=False
        )
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


def _torchrun(script: Path, *args: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HNEURON_LENS_TEST_KILL", None)
    if kill is not None:
        env["HNEURON_LENS_TEST_KILL"] = kill
    # `python -m torch.distributed.run` is `torchrun`, with this interpreter (a venv's torchrun
    # script may name another interpreter in its #! line)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # four torchrun launches of 2 processes: ~90-130 s on the shared 2-core machine
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_two_ranks_killed_rank_resumes_to_the_single_process_store(tmp_path, reference):
    """2 processes, gloo: rank 1 SIGKILLs itself after 2 batches (torchrun stops the run);
    the same command again resumes and merges; the store equals the single-process one bit
    for bit. A third run through the command line merges nothing and changes nothing; a fourth
    with other options fails on every rank with rank 0's error (no hang)."""
    script, store = tmp_path / "run.py", tmp_path / "store"
    script.write_text(SCRIPT)
    killed = _torchrun(script, str(store), "api", kill="1:2")
    assert killed.returncode != 0, killed.stdout + killed.stderr
    staged = ActivationStore(store / "staging" / "rank-00001-of-00002")
    assert len(staged) == CHUNK  # 2 batches of 3 written, one chunk of 5 flushed
    assert len(ActivationStore(store)) == 0  # nothing merged before every rank finished
    resumed = _torchrun(script, str(store), "api")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "REPORT 0 40 True" in resumed.stdout
    assert not (store / "staging").exists()
    _assert_same_store(store, reference)
    data = tmp_path / "judged.jsonl"
    keys = ("qid", "question", "response", "label", "answer_text", "split")
    rows = [{k: getattr(s, k) for k in keys} for s in make_samples(N)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = _store_files(store)
    cli = _torchrun(script, str(store), "cli", "extract", "--data", str(data), "--store",
                    str(store), "--batch-size", "3", "--regions", "answer,other,input,output")  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "merged 0 rows" in cli.stdout
    assert _store_files(store) == before
    # an error on rank 0 (a store written for other regions) reaches every rank: no hang,
    # each prints one `error:` line and exits 2, nothing changes
    bad = _torchrun(script, str(store), "cli", "extract", "--data", str(data), "--store",
                    str(store), "--batch-size", "3", "--regions", "answer,other")  # fmt: skip
    assert bad.returncode != 0
    errors = [x for x in bad.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 2 and all("store was written for different inputs" in e for e in errors)
    assert _store_files(store) == before


def test_cli_distributed_flag_on_one_process(tiny, tmp_path, reference, monkeypatch, capsys):
    """`extract --distributed` without a launcher (WORLD_SIZE unset) is a plain extract."""
    import hneuron_lens.cli as cli

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "_load_model", lambda args: tiny("llama"))
    data = tmp_path / "judged.jsonl"
    keys = ("qid", "question", "response", "label", "answer_text", "split")
    rows = [{k: getattr(s, k) for k in keys} for s in make_samples(N)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "store"
    argv = ["extract", "--data", str(data), "--store", str(store), "--batch-size", "3"]
    with _one_thread():
        assert cli.main([*argv, "--distributed", "--regions", "answer,other,input,output"]) == 0
    assert "rank 0/1" in capsys.readouterr().out
    a, b = ActivationStore(store, verify=True), ActivationStore(reference)
    assert a.ids == b.ids
    for region in b.regions:
        assert a.features(region)[0].tobytes() == b.features(region)[0].tobytes()
