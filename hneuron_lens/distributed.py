"""Data-parallel extraction and collection: many processes (``torchrun``, ``accelerate
launch``), one store, one collection file.

Every process (rank) runs the same command on the same samples. Ranks read ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment the launcher sets, and:

1. plan the batches exactly as a single-process :func:`~hneuron_lens.extract.extract` would
   (length buckets over *all* samples, :func:`~hneuron_lens.extract.batch_plan`), and take
   batch ``k`` when ``k % world_size == rank``. Each batch is the same padded batch the single
   process runs, so every value is the same to the bit;
2. rank 0 first opens the target store for this model/config (creates it, or refuses a store
   written for something else, exactly as ``extract`` does); the others wait for it;
3. each rank writes its batches into its own staging store,
   ``STORE/staging/rank-RRRRR-of-WWWWW/`` (an ordinary :class:`ActivationStore`: chunks,
   sidecars, checksums, its own write lock). Samples already in the target store, or in the
   rank's staging store from an earlier killed run, are not computed again: rerunning the same
   command after a rank was killed resumes it;
4. after a barrier, rank 0 copies the rows into the target store batch by batch in the
   single-process order (so the chunk files hold the same rows in the same order, with the
   same chunk boundaries, as a single-process run from an empty store), closes it, re-reads
   it hashing every chunk (:meth:`ActivationStore.verify`), checks that every planned sample
   is there, and removes the staging stores. The merge is idempotent: rows already in the
   target store are not copied again.

The target store's ``.npy`` chunk files are byte-identical to a single-process run's; the
sidecars and the manifest differ only in time stamps (``written``, ``created``, ``updated``)
and the checksum cache (``verified``: file mtimes). The control messages between ranks are a
few small Python objects (errors, "done"), sent over ``torch.distributed`` (gloo by default,
which works with CPU and GPU models alike); no tensor crosses processes.

Collection (:func:`collect_distributed`) works the same way on a JSONL collection file: the
questions are cut into the groups a single process generates together
(:func:`~hneuron_lens.collect.question_chunks`), rank ``r`` takes group ``k`` when
``k % world_size == r`` and appends to its own collection file
``OUT.staging/rank-RRRRR-of-WWWWW.jsonl`` (resumable like any collection file), and rank 0
appends the rows to ``OUT`` in question order, re-reads it and checks every row against the
rank's. Every row is sampled from its own generator seeded by the question id and each group
is the same generation call, so the merged file's question lines are byte-identical to a
single-process run's; only the header's ``created`` time stamp differs.

Multi-node: the same command on every node with ``torchrun --nnodes N --node-rank i
--rdzv-endpoint HOST:PORT``, with the store on a file system every node sees (README, "Many
processes and machines"). Rank 0 does every write to the target store; the write lock holds
across nodes only where the file system supports ``flock`` (see :mod:`hneuron_lens.lock`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hneuron_lens.errors import UsageError
from hneuron_lens.io import to_jsonable
from hneuron_lens.store import StoreCorruptError

logger = logging.getLogger(__name__)

STAGING = "staging"
"""Directory inside the target store that holds the ranks' staging stores."""

KILL_ENV = "HNEURON_LENS_TEST_KILL"
"""Test hook: ``"RANK:N"`` makes rank ``RANK`` SIGKILL itself after writing ``N`` batches to its
staging store (a crash mid-run, for the resume tests). Unset in normal use."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a data-parallel run."""

    rank: int = 0
    """Global rank, ``0 <= rank < world_size`` (``RANK``)."""
    world_size: int = 1
    """Number of processes over all nodes (``WORLD_SIZE``)."""
    local_rank: int = 0
    """Rank on this node (``LOCAL_RANK``): which GPU this process uses."""

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise UsageError(
                f"bad data-parallel environment: RANK={self.rank}, WORLD_SIZE="
                f"{self.world_size}, LOCAL_RANK={self.local_rank}",
                field="RANK",
                hint="start the command with torchrun or accelerate launch, which set these",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (defaults 0, 1, 0: one process)."""
        environ = os.environ if environ is None else environ
        values = {}
        for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
            raw = environ.get(name, "")
            try:
                values[name] = int(raw) if raw.strip() else default
            except ValueError:
                raise UsageError(
                    f"environment variable {name}={raw!r} is not a whole number",
                    field=name,
                    hint="start the command with torchrun or accelerate launch, which set it",
                ) from None
        return cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def staging_dir(store_path: str | os.PathLike[str], env: DistEnv) -> Path:
    """``STORE/staging/rank-RRRRR-of-WWWWW``: where ``env.rank`` writes its rows."""
    return Path(store_path) / STAGING / f"rank-{env.rank:05d}-of-{env.world_size:05d}"


def shard_batches(plan: list[list[str]], rank: int, world_size: int) -> list[list[str]]:
    """The batches of ``plan`` rank ``rank`` computes: those whose index is ``rank`` modulo
    ``world_size`` (round robin, so ranks get batches of every length).

    Example:
        >>> shard_batches([["a"], ["b"], ["c"]], 1, 2)
        [['b']]
    """
    return plan[rank::world_size]


# --------------------------------------------------------------------------------------------
# the process group and its few messages


@contextlib.contextmanager
def process_group(
    env: DistEnv, backend: str = "gloo", timeout_s: float = 6 * 3600
) -> Iterator[None]:
    """Join the launcher's process group for the block (``env://``: ``MASTER_ADDR``,
    ``MASTER_PORT`` from torchrun); leave it afterwards. A group already initialised by the
    caller is used and left alone. Nothing happens for one process."""
    import torch.distributed as dist

    if not env.is_distributed or dist.is_initialized():
        yield
        return
    if backend == "nccl":
        import torch

        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend=backend,
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.dumps(err)
        return err
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes its text
        return RuntimeError(f"{type(err).__name__}: {err}")


def sync_errors(env: DistEnv, err: BaseException | None) -> None:
    """Collective: every rank says whether its step failed; if any did, every rank raises.

    The rank that failed re-raises its own exception; the others raise the lowest failing
    rank's (a library error keeps its type and message, so the CLI prints one line and exits
    2 on every rank). Doubles as a barrier.
    """
    if not env.is_distributed:
        if err is not None:
            raise err
        return
    import torch.distributed as dist

    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, None if err is None else _picklable(err))
    if err is not None:
        raise err
    for rank, other in enumerate(gathered):
        if other is not None:
            logger.error("rank %d failed: %s", rank, other)
            raise other


def synced(env: DistEnv, step: Callable[[], Any], *, rank0_only: bool = False) -> Any:
    """Collective: run ``step`` on every rank (on rank 0 only with ``rank0_only``); if it
    raised on any rank, raise on every rank (:func:`sync_errors`, also a barrier).

    Returns:
        ``step()``'s result (``None`` on the ranks that did not run it).
    """
    result, err = None, None
    if env.rank == 0 or not rank0_only:
        try:
            result = step()
        except BaseException as e:  # noqa: BLE001 - every rank must hear of it
            err = e
    sync_errors(env, err)
    return result


# --------------------------------------------------------------------------------------------
# extraction


@dataclass
class DistributedExtractReport:
    """What :func:`extract_distributed` did, seen from one rank."""

    env: DistEnv
    """This process's place in the run."""
    local: Any
    """This rank's :class:`~hneuron_lens.extract.ExtractReport` (its staging store)."""
    n_planned: int = 0
    """Samples in the batch plan (all ranks)."""
    n_merged: int = 0
    """Rows rank 0 copied into the target store (0 on other ranks)."""
    store: str = ""
    """The target store."""
    merge_seconds: float = 0.0
    """Rank 0's merge and verification time."""
    verified: bool = False
    """Rank 0 re-read the merged store, hashed every chunk and found every planned sample."""
    staging_removed: list[str] = field(default_factory=list)
    """Staging stores rank 0 removed after a verified merge."""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "env": self.env.to_dict(),
                "local": self.local.to_dict(),
                "n_planned": self.n_planned,
                "n_merged": self.n_merged,
                "store": self.store,
                "merge_seconds": self.merge_seconds,
                "verified": self.verified,
                "staging_removed": self.staging_removed,
            }
        )

    def __str__(self) -> str:
        head = f"rank {self.env.rank}/{self.env.world_size}: {self.local}"
        if self.env.rank != 0:
            return head
        return (
            f"{head}\nmerged {self.n_merged} rows into {self.store} in {self.merge_seconds:.1f} s"
            f" ({self.n_planned} planned; verified: {'yes' if self.verified else 'no'})"
        )


def _kill_hook(env: DistEnv, store: Any) -> None:
    """Install the :data:`KILL_ENV` test hook on ``store.write_batch`` when it names this rank."""
    spec = os.environ.get(KILL_ENV, "")
    if not spec:
        return
    rank, n = (int(x) for x in spec.split(":"))
    if rank != env.rank:
        return
    real = store.write_batch
    calls = [0]

    def write_batch(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        calls[0] += 1
        if calls[0] >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    store.write_batch = write_batch


def extract_distributed(
    model: Any,
    samples: list[Any],
    store: Any,
    cfg: Any | None = None,
    *,
    span_cfg: Any | None = None,
    batch_size: int = 16,
    splits: dict[str, str] | None = None,
    overwrite: bool = False,
    too_long: str = "error",
    progress: bool = True,
    env: DistEnv | None = None,
    backend: str = "gloo",
    keep_staging: bool = False,
) -> DistributedExtractReport:
    """Data-parallel :func:`~hneuron_lens.extract.extract` (module docstring): each rank
    computes its shard of the batches into a staging store, rank 0 merges them into ``store``.

    Call it on every rank with the same arguments. With one process (no ``WORLD_SIZE``, or 1)
    it is :func:`~hneuron_lens.extract.extract` into ``store`` directly.

    Args:
        model: this rank's ``TransformerBridge`` (on its own device, e.g. ``cuda:LOCAL_RANK``).
        samples: the judged samples (every rank passes all of them).
        store: the target :class:`~hneuron_lens.store.ActivationStore` (its ``dtype`` and
            ``chunk_size`` apply to the merged store).
        cfg, span_cfg, batch_size, splits, overwrite, too_long: as for
            :func:`~hneuron_lens.extract.extract` (``overwrite`` replaces a target store
            written for something else, before anything is computed).
        progress: tqdm bar on rank 0.
        env: the rank's place (default: from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).
        backend: ``torch.distributed`` backend for the control messages (``"gloo"``).
        keep_staging: keep the staging stores after a verified merge.

    Returns:
        A :class:`DistributedExtractReport` (rank 0's holds the merge).

    Raises:
        StoreMismatchError, StoreBusyError, DataError: as for ``extract``, on every rank.
        StoreCorruptError: the merged store failed verification (staging stores are kept).
    """
    from hneuron_lens.cett import CETTConfig
    from hneuron_lens.extract import extract, store_fingerprint
    from hneuron_lens.features import NeuronLayout
    from hneuron_lens.models import neuron_sites
    from hneuron_lens.spans import SpanConfig
    from hneuron_lens.store import ActivationStore

    env = env if env is not None else DistEnv.from_env()
    cfg = cfg if cfg is not None else CETTConfig()
    span_cfg = span_cfg if span_cfg is not None else SpanConfig()
    common = dict(span_cfg=span_cfg, batch_size=batch_size, too_long=too_long)
    if not env.is_distributed:
        local = extract(
            model, samples, store, cfg, splits=splits, overwrite=overwrite, progress=progress,
            **common,
        )  # fmt: skip
        return DistributedExtractReport(env=env, local=local, store=str(store.path))
    with process_group(env, backend=backend):
        # 1. rank 0 creates the target store, or refuses one written for something else
        def create_target() -> None:
            layout = NeuronLayout(tuple(s.d_mlp for s in neuron_sites(model)))
            fp = store_fingerprint(model, cfg, span_cfg, too_long)
            store.open_for(fp, layout=layout, regions=list(cfg.regions), overwrite=overwrite)
            store.close()

        synced(env, create_target, rank0_only=True)

        # 2. every rank computes its shard into its own staging store
        def compute_shard() -> Any:
            target = ActivationStore(store.path)  # a reader: what is already merged
            staging = ActivationStore(
                staging_dir(store.path, env), dtype=target.dtype, chunk_size=store.chunk_size
            )
            _kill_hook(env, staging)
            return extract(
                model, samples, staging, cfg, splits=splits, overwrite=True,
                progress=progress and env.rank == 0, shard=(env.rank, env.world_size),
                exclude=set(target.ids), **common,
            )  # fmt: skip

        local = synced(env, compute_shard)
        report = DistributedExtractReport(env=env, local=local, store=str(store.path))
        # 3. rank 0 merges in the single-process order and verifies
        synced(
            env,
            lambda: _merge(
                model, samples, store, env, report, splits, keep_staging, progress, common
            ),
            rank0_only=True,
        )
    return report


def _merge(
    model: Any,
    samples: list[Any],
    store: Any,
    env: DistEnv,
    report: DistributedExtractReport,
    splits: dict[str, str] | None,
    keep_staging: bool,
    progress: bool,
    common: dict[str, Any],
) -> None:
    """Rank 0: copy every rank's rows into ``store`` in batch-plan order, verify, clean up."""
    from tqdm.auto import tqdm

    from hneuron_lens.extract import batch_plan
    from hneuron_lens.store import ActivationStore

    t0 = time.perf_counter()
    plan = batch_plan(model, samples, **common)
    report.n_planned = sum(len(b) for b in plan)
    dirs = [staging_dir(store.path, DistEnv(r, env.world_size)) for r in range(env.world_size)]
    stagings = [ActivationStore(d) for d in dirs]
    split_of = {s.qid: (splits or {}).get(s.qid, s.split) for s in samples}
    target = ActivationStore(store.path, chunk_size=store.chunk_size)
    target.open_for(
        target.fingerprint, layout=target.layout, regions=target.regions, overwrite=False
    )
    try:
        cached = [sid for batch in plan for sid in batch if sid in target]
        target.assign_splits({sid: split_of[sid] for sid in cached})
        with tqdm(
            total=report.n_planned - len(cached), desc="merge", unit="sample", disable=not progress
        ) as bar:
            for k, batch in enumerate(plan):
                new = [sid for sid in batch if sid not in target]
                if not new:
                    continue
                src = stagings[k % env.world_size]
                lost = [sid for sid in new if sid not in src]
                if lost:
                    raise StoreCorruptError(
                        f"rank {k % env.world_size} did not write {len(lost)} samples of its "
                        f"batch {k}, e.g. {lost[:3]}",
                        file=src.path,
                        hint="rerun the same command: each rank resumes what it has not written",
                    )
                rows = src.rows(new)
                target.write_batch(
                    rows.ids,
                    rows.labels,
                    [split_of[sid] for sid in rows.ids],
                    rows.features,
                    sample_hashes=rows.sample_hashes,
                )
                report.n_merged += len(new)
                bar.update(len(new))
    finally:
        target.close()
    check = ActivationStore(store.path)
    problems = check.verify()
    missing = [sid for batch in plan for sid in batch if sid not in check]
    if problems or missing:
        raise StoreCorruptError(
            f"the merged store failed verification: {len(problems)} damaged chunks "
            f"{problems[:2]}, {len(missing)} planned samples missing {missing[:3]}",
            file=store.path,
            hint=f"the staging stores in {store.path / STAGING} are kept; run `hneuron-lens "
            f"store {store.path} --repair`, then rerun the same command",
        )
    report.verified = True
    report.merge_seconds = time.perf_counter() - t0
    if not keep_staging:
        for d in dirs:
            if d.is_dir():
                shutil.rmtree(d)
                report.staging_removed.append(str(d))
        with contextlib.suppress(OSError):
            (store.path / STAGING).rmdir()  # only when no other run's staging is left


# --------------------------------------------------------------------------------------------
# collection


def collection_staging_dir(out_path: str | os.PathLike[str]) -> Path:
    """``OUT.staging``: the directory beside a collection file that holds the ranks' files."""
    out = Path(out_path)
    return out.with_name(out.name + ".staging")


def collection_staging_file(out_path: str | os.PathLike[str], env: DistEnv) -> Path:
    """``OUT.staging/rank-RRRRR-of-WWWWW.jsonl``: where ``env.rank`` appends its questions."""
    return collection_staging_dir(out_path) / (f"rank-{env.rank:05d}-of-{env.world_size:05d}.jsonl")


@dataclass
class DistributedCollectReport:
    """What :func:`collect_distributed` did, seen from one rank."""

    env: DistEnv
    """This process's place in the run."""
    local: Any
    """This rank's :class:`~hneuron_lens.collect.CollectResult` (its staging file)."""
    n_planned: int = 0
    """Questions asked for (all ranks)."""
    n_merged: int = 0
    """Question lines rank 0 appended to the target file (0 on other ranks)."""
    out: str = ""
    """The target collection file."""
    merge_seconds: float = 0.0
    """Rank 0's merge and verification time."""
    verified: bool = False
    """Rank 0 re-read the target file and found every question, equal to the rank's row."""
    staging_removed: list[str] = field(default_factory=list)
    """Staging files rank 0 removed after a verified merge."""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "env": self.env.to_dict(),
                "local": None if self.local is None else self.local.to_dict(),
                "n_planned": self.n_planned,
                "n_merged": self.n_merged,
                "out": self.out,
                "merge_seconds": self.merge_seconds,
                "verified": self.verified,
                "staging_removed": self.staging_removed,
            }
        )

    def __str__(self) -> str:
        loc = self.local
        head = f"rank {self.env.rank}/{self.env.world_size}: " + (
            "nothing generated"
            if loc is None
            else f"{loc.n_generated} questions generated, {loc.n_resumed} resumed of "
            f"{loc.n_questions} in its shard ({loc.seconds:.1f} s)"
        )
        if self.env.rank != 0 or not self.env.is_distributed:
            return head  # one process wrote the file directly: nothing was merged
        return (
            f"{head}\nmerged {self.n_merged} questions into {self.out} in "
            f"{self.merge_seconds:.1f} s ({self.n_planned} planned; verified: "
            f"{'yes' if self.verified else 'no'})"
        )


def _kill_after(env: DistEnv) -> Any:
    """The :data:`KILL_ENV` test hook for collection: an ``on_write`` callback that SIGKILLs
    this process after its N-th written group, when the hook names this rank (else None)."""
    spec = os.environ.get(KILL_ENV, "")
    if not spec:
        return None
    rank, n = (int(x) for x in spec.split(":"))
    if rank != env.rank:
        return None
    calls = [0]

    def on_write(qids: list[str]) -> None:
        calls[0] += 1
        if calls[0] >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_write


def _fresh_staging(path: Path, settings: Mapping[str, Any]) -> None:
    """Remove a staging file this library wrote for *other* settings (an earlier run of a
    different command): it can never be merged into this run's target, which was checked."""
    from hneuron_lens.collect import _read_file, settings_hash

    if not path.exists() or path.stat().st_size == 0:
        return
    header = _read_file(path).header
    if header is not None and header.get("settings_hash") != settings_hash(settings):
        logger.warning("%s: staging file from a run with other settings; starting it again", path)
        path.unlink()


def collect_distributed(
    model: Any,
    items: list[Any],
    cfg: Any | None,
    out_path: str | os.PathLike[str],
    *,
    env: DistEnv | None = None,
    backend: str = "gloo",
    keep_staging: bool = False,
) -> DistributedCollectReport:
    """Data-parallel :func:`~hneuron_lens.collect.collect` (module docstring): each rank
    generates its shard of the question groups into ``OUT.staging/``, rank 0 merges them into
    ``out_path`` in question order.

    Call it on every rank with the same arguments. With one process (no ``WORLD_SIZE``, or 1)
    it is :func:`~hneuron_lens.collect.collect` into ``out_path`` directly.

    Args:
        model: this rank's ``TransformerBridge`` (on its own device, e.g. ``cuda:LOCAL_RANK``).
        items: the questions (every rank passes all of them, in the same order).
        cfg: a :class:`~hneuron_lens.collect.CollectConfig` (default: the paper's); the
            progress bar shows on rank 0 only.
        out_path: the target JSONL collection file; questions already in it are skipped.
        env: the rank's place (default: from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).
        backend: ``torch.distributed`` backend for the control messages (``"gloo"``).
        keep_staging: keep the staging files after a verified merge.

    Returns:
        A :class:`DistributedCollectReport` (rank 0's holds the merge).

    Raises:
        DataError: ``out_path`` was written with other settings, or is not a collection file
            (on every rank); the merged file does not hold what the ranks wrote (staging
            files are kept).
    """
    from dataclasses import replace

    from hneuron_lens.collect import (
        CollectConfig,
        _read_file,
        collect,
        open_collection,
        settings_for,
    )

    env = env if env is not None else DistEnv.from_env()
    cfg = cfg if cfg is not None else CollectConfig()
    if not env.is_distributed:
        local = collect(model, items, cfg, out_path)
        return DistributedCollectReport(
            env=env, local=local, n_planned=len(items), out=str(out_path)
        )
    out = Path(out_path)
    settings = settings_for(model, cfg)
    with process_group(env, backend=backend):
        # 1. rank 0 starts the target file, or refuses one written with other settings
        synced(env, lambda: open_collection(out, settings), rank0_only=True)

        # 2. every rank generates its shard into its own staging file
        def generate_shard() -> Any:
            done = set(_read_file(out).records)  # what is already merged
            staging = collection_staging_file(out, env)
            _fresh_staging(staging, settings)
            return collect(
                model, items, replace(cfg, progress=cfg.progress and env.rank == 0), staging,
                shard=(env.rank, env.world_size), exclude=done, on_write=_kill_after(env),
            )  # fmt: skip

        local = synced(env, generate_shard)
        report = DistributedCollectReport(env=env, local=local, n_planned=len(items), out=str(out))
        # 3. rank 0 appends every rank's questions in order and verifies
        synced(
            env,
            lambda: merge_collection(items, cfg, out, env.world_size, report, keep_staging),
            rank0_only=True,
        )
    return report


def merge_collection(
    items: list[Any],
    cfg: Any,
    out_path: str | os.PathLike[str],
    world_size: int,
    report: DistributedCollectReport,
    keep_staging: bool = False,
) -> None:
    """Rank 0's step of :func:`collect_distributed`: append the ranks' question lines to
    ``out_path`` (already started by :func:`~hneuron_lens.collect.open_collection`) in the
    order of ``items``, skipping those already there; re-read it and check every planned
    question is there and equal to the rank's row; then remove the staging files.

    Idempotent: a second merge appends nothing. Fills ``report`` (``n_merged``,
    ``verified``, ``merge_seconds``, ``staging_removed``).

    Raises:
        DataError: a rank's file lacks a question of its shard, was written with other
            settings, or the re-read target differs from what the ranks wrote.
    """
    import json

    from hneuron_lens.collect import _read_file, question_chunks
    from hneuron_lens.errors import DataError

    t0 = time.perf_counter()
    out = Path(out_path)
    target = _read_file(out)
    shash = (target.header or {}).get("settings_hash")
    files = [collection_staging_file(out, DistEnv(r, world_size)) for r in range(world_size)]
    staged: list[dict[str, dict[str, Any]]] = []
    for path in files:
        if not path.exists():
            staged.append({})
            continue
        state = _read_file(path)
        if state.header is not None and state.header.get("settings_hash") != shash:
            raise DataError(
                f"this rank's staging file was collected with other settings than {out}",
                file=path,
                hint="remove it and rerun the same command",
            )
        staged.append(state.records)
    lines, merged = [], []
    for k, group in enumerate(question_chunks(items, cfg)):
        src, rank = staged[k % world_size], k % world_size
        new = [it.qid for it in group if it.qid not in target.records]
        lost = [q for q in new if q not in src]
        if lost:
            raise DataError(
                f"rank {rank} did not write {len(lost)} questions of its shard, e.g. {lost[:3]}",
                file=files[rank],
                hint="rerun the same command: each rank resumes what it has not written",
            )
        lines += [json.dumps(src[q], ensure_ascii=False) for q in new]
        merged += new
    if lines:
        with open(out, "ab") as fh:
            fh.write(("\n".join(lines) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
    report.n_merged = len(merged)
    check = _read_file(out).records
    missing = [it.qid for it in items if it.qid not in check]
    differ = [
        q for k, group in enumerate(question_chunks(items, cfg)) for q in (it.qid for it in group)
        if q in staged[k % world_size] and check.get(q) != staged[k % world_size][q]
    ]  # fmt: skip
    if missing or differ:
        raise DataError(
            f"the merged collection file failed its check: {len(missing)} questions missing "
            f"{missing[:3]}, {len(differ)} differ from the rank's row {differ[:3]}",
            file=out,
            hint=f"the staging files in {collection_staging_dir(out)} are kept",
        )
    report.verified = True
    report.merge_seconds = time.perf_counter() - t0
    if not keep_staging:
        for path in files:
            if path.exists():
                path.unlink()
                report.staging_removed.append(str(path))
        with contextlib.suppress(OSError):
            collection_staging_dir(out).rmdir()  # only when nothing else is left in it
