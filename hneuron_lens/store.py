"""On-disk, fingerprinted, resumable store of per-sample CETT feature vectors (persistence only).

:func:`hneuron_lens.extract.extract` writes, for every sample and region (``"answer"``,
``"other"``...), the CETT vector flattened over (layer, neuron) with
:class:`~hneuron_lens.features.NeuronLayout` into an :class:`ActivationStore`. The probe reads it
back as :class:`~hneuron_lens.features.FeatureSplit` objects backed by memory maps.

Directory layout::

    STORE/.hneuron_lens.json       says "this directory is an activation store"
    STORE/manifest.json            fingerprint, layout, regions, dtype, library version, counts,
                                   the chunk list and the checksum cache (below)
    STORE/chunks/00000.answer.npy  [rows, n_features] float16 (or float32), one file per region
    STORE/chunks/00000.json        sidecar: rows, ids, labels, splits, sample hashes, sha256 and
                                   size of every data file, and a copy of the manifest's
                                   fingerprint/layout/regions/dtype. Written LAST: no sidecar,
                                   no chunk.
    STORE/quarantine/              damaged chunks moved aside by a writer (never read, never
                                   deleted by the library)
    STORE/.lock                    the write lock; records the holder's pid, host and start time

**Readers never change a file.** Opening a store (``ActivationStore(path)``) only reads. Every
repair (moving a damaged chunk to ``quarantine/``, moving away the data files of a write that was
killed before its sidecar, finishing an interrupted :meth:`~ActivationStore.compact`, writing a
lost manifest back) is made by a *writer*: a process holding the lock (:meth:`open_for`,
:meth:`repair`). Nothing is ever deleted by a repair: damaged or orphaned files are moved to
``quarantine/`` under a unique name.

**Integrity on every read.** Each chunk's sidecar records the sha256 of its data files. A reader
checks sizes and ``.npy`` headers of every chunk on open, and the full sha256 of every chunk file it
reads (:meth:`split`, :meth:`features`, compaction) before returning any value from it; a mismatch
raises :class:`StoreCorruptError` naming the file and the fix. Hashing runs at disk/page-cache speed
(README, "Reliability"), and each file is hashed at most once per open. To skip even that, a writer
records in the manifest, under the lock, ``verified[file] = (bytes, mtime_ns, sha256)`` for files it
hashed at least :data:`RACY_SECONDS` after their last modification (git's "racily clean" rule: a
file changed within the same timestamp tick as its hash would otherwise look unchanged). A reader
trusts an entry only when the file's size and mtime are still those recorded and the sha256 is
the sidecar's. ``verify=True`` ignores the cache and hashes everything.

**One writer at a time.** The lock (:class:`hneuron_lens.lock.WriteLock`: ``flock(2)`` on
``STORE/.lock``, which records the holder's pid, host and start time) is held from :meth:`open_for`
to :meth:`close`: the whole write session (open, id checks, writes, manifest). The kernel releases
it when the holder exits in any way (SIGKILL included), so on a local disk a lock never outlives its
writer; a second writer gets :class:`StoreBusyError` naming the holder. Without ``flock`` (some
network mounts) the stale-lock rule of :mod:`hneuron_lens.lock` applies: a record from this host
whose pid is gone is taken over, one from another host is honoured until removed by hand.

**A lost manifest is rebuilt, never emptied.** Sidecars carry the manifest's fingerprint, layout,
regions and dtype, so a store whose ``manifest.json`` was deleted is read as before (rebuilt in
memory, with a warning) and written back by the next writer or by ``hneuron-lens store STORE
--repair``. Sidecars written by 0.1.0 carry only the fingerprint's hash: such a store is refused
with the recovery command (rerun the same ``extract``: when its fingerprint hashes to the chunks'
value the manifest is rebuilt from it).

Fingerprint. ``manifest["fingerprint"]`` records everything the feature values depend on: model
identity (name, shapes, dtype, sha256 of the MLP and embedding weights), tokenizer (class, name,
vocab size, sha256 of the vocabulary and special tokens), chat template fingerprint, the CETT
and span configs, the store dtype and the library version. Opening a store for a different
fingerprint raises :class:`StoreMismatchError` naming every differing field unless
``overwrite=True``. The *dataset* is fingerprinted per sample instead (sha256 of qid, question,
response, label, answer text/tokens and aliases, kept in the sidecars), so one store can grow
by new samples (a test set after a train set) while a sample whose content changed under the
same id is refused. ``info()["dataset_sha256"]`` hashes the stored samples' hashes.

Row order. Reads return rows sorted by sample id, whatever order extraction wrote them in, so
a resumed extraction and an uninterrupted one read back identically. :meth:`ActivationStore.compact`
rewrites the store as one chunk per split in that order, after which :meth:`ActivationStore.split`
returns memory maps without copying.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneuron_lens.errors import StoreError
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.io import (
    atomic_write_text,
    check_output_dir,
    fsync_dir,
    library_version,
    loads_json,
    sha256_json,
    to_jsonable,
    write_marker,
)
from hneuron_lens.lock import WriteLock

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
"""Version of the on-disk layout; stamped into the manifest and every sidecar."""

KIND = "activation_store"
"""The artefact kind written into the store's ``.hneuron_lens.json``."""

DTYPES = ("float16", "float32")
RACY_SECONDS = 2.0
"""A checksum is cached only for a file last modified at least this long before it was hashed."""

_ALL = object()  # "every split" sentinel (``None`` means "samples without a split")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_CORE = ("fingerprint", "layout", "regions", "dtype")  # what sidecars copy from the manifest


class StoreMismatchError(StoreError, ValueError):
    """The store was written for different inputs (model, tokenizer, configs, samples...)."""


class StoreBusyError(StoreError):
    """Another process holds the store's write lock."""


class StoreCorruptError(StoreError):
    """A chunk's bytes differ from its recorded checksum, or chunks are missing or unreadable."""


class MissingSplitError(StoreError, KeyError):
    """The store holds no sample of the requested split."""


# --------------------------------------------------------------------------------------------
# small helpers


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            buf = f.read(block)
            if not buf:
                break
            h.update(buf)
    return h.hexdigest()


def _write_npy(path: Path, array: np.ndarray) -> tuple[int, str]:
    """Write ``array`` as ``.npy`` atomically (temp + fsync + rename); return (bytes, sha256)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(Path(tmp))  # read back from the page cache: cheap
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size, digest


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a ``.npy`` file, read from its header only."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return tuple(shape), np.dtype(dtype), f.tell()


def _flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten_dict(value, name + "."))
        else:
            out[name] = value
    return out


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints, one per leaf field.

    Example:
        >>> fingerprint_diff({"cett_config": {"reduce": "mean"}}, {"cett_config": {"reduce": "max"}})
        ["cett_config.reduce: 'mean' != 'max'"]
    """
    a, b = _flatten_dict(old), _flatten_dict(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        va = a.get(key, "<missing>")
        vb = b.get(key, "<missing>")
        if to_jsonable(va) != to_jsonable(vb):
            lines.append(f"{key}: {va!r} != {vb!r}")
    return lines


def _to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast to the store dtype; finite values beyond float16's range are clipped, with a warning."""
    with np.errstate(over="ignore"):
        out = x.astype(dtype)
    if dtype == np.float16:
        inf = np.isinf(out)
        if inf.any():
            big = inf & np.isfinite(x)
            if big.any():
                logger.warning(
                    "%d values exceed the float16 range (max %.3g) and are clipped; use "
                    "dtype='float32' to keep them",
                    int(big.sum()),
                    float(np.abs(x[big]).max()),
                )
                out[big] = np.sign(x[big]) * _FLOAT16_MAX
    return out


# --------------------------------------------------------------------------------------------
# the store


@dataclass
class StoredRows:
    """Some stored samples, in the order asked for (:meth:`ActivationStore.rows`)."""

    ids: list[str]
    """Sample ids."""
    features: dict[str, np.ndarray]
    """``{region: [n, n_features]}`` in the store's dtype, checksum-verified."""
    labels: list[int]
    """0 (faithful) / 1 (hallucinated) per sample."""
    splits: list[str | None]
    """Split name per sample."""
    sample_hashes: list[str | None]
    """Content hash per sample (``None`` when written without one)."""


@dataclass
class _Chunk:
    """One validated chunk as recorded by its sidecar."""

    index: int
    sidecar: dict[str, Any]
    files: dict[str, Path]

    @property
    def rows(self) -> int:
        return int(self.sidecar["rows"])


class ActivationStore:
    """On-disk store of per-sample CETT vectors (see the module docstring for the rules).

    Args:
        path: the store directory (created on first write).
        dtype: value dtype for a new store, ``"float16"`` (default) or ``"float32"``. ``None``
            means "whatever the existing store has, else float16". An explicit dtype that differs
            from an existing store's is a fingerprint mismatch (see :meth:`open_for`).
        chunk_size: rows per chunk file when writing.
        verify: hash every chunk file now, ignoring the checksum cache (reads always hash the
            files they read unless the cache vouches for them).

    Raises:
        StoreError: ``path`` is a file, or its ``manifest.json`` is unreadable or of another
            format.

    Example:
        >>> import numpy as np, tempfile
        >>> from hneuron_lens.features import NeuronLayout
        >>> store = ActivationStore(tempfile.mkdtemp())
        >>> store.open_for({"demo": 1}, layout=NeuronLayout.uniform(2, 3), regions=("answer",))
        >>> store.write_batch(["q1", "q0"], [1, 0], ["train", "train"],
        ...                   {"answer": np.ones((2, 6), dtype=np.float32)})
        >>> store.close()
        >>> X, y, ids = store.features("answer", split="train")
        >>> X.shape, y.tolist(), ids
        ((2, 6), [0, 1], ['q0', 'q1'])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dtype: str | None = None,
        chunk_size: int = 256,
        verify: bool = False,
    ) -> None:
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                "not an activation store: a file", file=self.path, hint="give a store directory"
            )
        self.chunk_size = int(chunk_size)
        self._requested_dtype = dtype
        self._lock = WriteLock(self.path / ".lock")
        self._buffer: list[dict[str, Any]] = []
        self._session_marker = False
        self.manifest: dict[str, Any] | None = None
        self.manifest_rebuilt = False
        """True when ``manifest.json`` was missing and the manifest was rebuilt from sidecars."""
        self.problems: list[str] = []
        """Damaged chunks found by the last scan (reads refuse while there are any)."""
        self._orphaned: str | None = None  # why chunks without a usable manifest cannot be read
        self._data_dir = self.chunk_dir
        self._chunks: list[_Chunk] = []
        self._rows: dict[str, tuple[int, int]] = {}  # id -> (position in _chunks, row)
        # file name -> (bytes, mtime_ns, sha256, hashed_at_ns): what this object has hashed
        self._verified: dict[str, tuple[int, int, str, int]] = {}
        self._manifest_error: StoreError | None = None
        self._dirty = False
        self.refresh(verify=verify)

    # ---------------------------------------------------------------- properties

    @property
    def chunk_dir(self) -> Path:
        return self.path / "chunks"

    @property
    def dtype(self) -> str:
        if self.manifest is not None:
            return str(self.manifest["dtype"])
        return self._requested_dtype or "float16"

    @property
    def layout(self) -> NeuronLayout:
        return NeuronLayout.from_dict(self._require_manifest()["layout"])

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self._require_manifest()["regions"])

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._require_manifest()["fingerprint"])

    @property
    def ids(self) -> list[str]:
        """All stored sample ids, sorted."""
        return sorted(self._rows)

    @property
    def labels(self) -> np.ndarray:
        """Labels in the order of :attr:`ids` (int8; 1 = hallucinated)."""
        return np.asarray([self._meta(i)["label"] for i in self.ids], dtype=np.int8)

    @property
    def splits(self) -> list[str | None]:
        """Split names in the order of :attr:`ids` (``None`` for samples without a split)."""
        return [self._meta(i)["split"] for i in self.ids]

    @property
    def is_writer(self) -> bool:
        """True while this object holds the store's write lock."""
        return self._lock.held

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._rows

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, n={len(self)}, dtype={self.dtype!r})"

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _require_manifest(self) -> dict[str, Any]:
        if self.manifest is None:
            if self._manifest_error is not None:
                raise self._manifest_error
            if self._orphaned:
                raise StoreError(self._orphaned, file=self.path, hint=self._recovery_hint())
            raise StoreError(
                "no activation store here (no manifest.json, no chunks)",
                file=self.path,
                hint="create one with `hneuron-lens extract --store "
                f"{self.path}` (or call open_for() / extract() first)",
            )
        return self.manifest

    def _recovery_hint(self) -> str:
        return (
            "rerun the `hneuron-lens extract --store "
            f"{self.path} ...` that wrote it, with the same model, data and options: when its "
            "fingerprint hashes to the chunks' value the manifest is rebuilt from it (nothing is "
            "deleted)"
        )

    def _meta(self, sample_id: str) -> dict[str, Any]:
        pos, row = self._rows[sample_id]
        sc = self._chunks[pos].sidecar
        return {
            "label": int(sc["labels"][row]),
            "split": sc["splits"][row],
            "sha256": sc["sample_sha256"][row],
        }

    def sample_hash(self, sample_id: str) -> str | None:
        """The stored content hash of ``sample_id`` (``None`` when written without one)."""
        return self._meta(sample_id)["sha256"]

    # ---------------------------------------------------------------- locking

    def _try_lock(self) -> dict[str, Any] | None:
        """Take the write lock (:class:`~hneuron_lens.lock.WriteLock` on ``STORE/.lock``).
        Returns ``None`` on success, else the holder's record."""
        return self._lock.try_acquire()

    def _unlock(self) -> None:
        self._lock.release()

    def _acquire_writer(self) -> None:
        holder = self._try_lock()
        if holder is not None:
            raise StoreBusyError(
                f"another process is writing to this store (pid {holder.get('pid')} on host "
                f"{holder.get('host')}, since {holder.get('started', '?')})",
                file=self.path,
                hint="wait until it finishes: a store has one writer at a time. If no such "
                f"process runs (a lock left on a network disk), delete {self.path / '.lock'}",
            )

    @contextlib.contextmanager
    def _writing(self) -> Any:
        """Hold the write lock for a block (re-reading the store when newly taken)."""
        had_lock = self._lock.held
        self._acquire_writer()
        try:
            if not had_lock:
                self.refresh()
            yield
        finally:
            if not had_lock:
                self._unlock()

    # ---------------------------------------------------------------- opening / validation

    def refresh(self, verify: bool = False) -> None:
        """Re-read the manifest and re-validate every chunk.

        A reader only reads; a writer (this object holds the lock) also repairs: damaged and
        orphaned chunk files are moved to ``quarantine/``, an interrupted compaction is finished,
        a lost manifest is written back.

        Args:
            verify: hash every chunk file now (ignoring the checksum cache).
        """
        repair = self._lock.held
        if repair:
            self._finish_interrupted_compact()
        self._data_dir = self._pick_data_dir()
        self._read_manifest(repair=repair)
        self._scan(verify=verify, repair=repair)
        if repair and self.manifest is not None and (self.manifest_rebuilt or self._dirty):
            self.manifest["counts"] = self._counts()
            self.manifest["chunks"] = self._chunk_list()
            self._write_manifest()
            if self.manifest_rebuilt:
                logger.warning("wrote the rebuilt manifest of %s", self.path)
                self.manifest_rebuilt = False

    def _pick_data_dir(self) -> Path:
        """``chunks/``, or ``chunks.new/`` while a compaction is between its two renames."""
        new = self.path / "chunks.new"
        if not self.chunk_dir.exists() and new.is_dir() and (new / "COMPLETE").is_file():
            return new
        return self.chunk_dir

    def _read_manifest(self, repair: bool) -> None:
        """Read manifest.json. Unreadable: a reader records the error (reads raise it), a writer
        moves the file to quarantine/ and rebuilds the manifest from the sidecars."""
        manifest_path = self.path / "manifest.json"
        self.manifest = None
        self.manifest_rebuilt = False
        self._orphaned = None
        self._manifest_error = None
        if manifest_path.is_file():
            try:
                manifest = loads_json(manifest_path.read_text(encoding="utf-8"))
                if not isinstance(manifest, dict) or not set(_CORE) <= set(manifest):
                    raise ValueError("not a store manifest")
            except (OSError, ValueError) as err:
                if repair:
                    self._quarantine([manifest_path], f"unreadable manifest ({err})")
                    self._rebuild_manifest_from_sidecars()
                    return
                self._manifest_error = StoreError(
                    f"manifest.json is unreadable ({type(err).__name__}: {str(err)[:80]})",
                    file=manifest_path,
                    hint=f"run `hneuron-lens store {self.path} --repair`: it moves the file to "
                    "quarantine/ and rebuilds the manifest from the chunk sidecars",
                )
                return
            if manifest.get("format") != STORE_FORMAT:
                self._manifest_error = StoreError(
                    f"store format {manifest.get('format')!r}; this library reads format "
                    f"{STORE_FORMAT}",
                    file=manifest_path,
                    hint="open it with the hneuron_lens version that wrote it "
                    f"({manifest.get('library_version', '?')})",
                )
                return
            self.manifest = manifest
            return
        self._rebuild_manifest_from_sidecars()

    def _sidecar_paths(self) -> list[Path]:
        if not self._data_dir.is_dir():
            return []
        return sorted(
            p for p in self._data_dir.glob("*.json") if p.name[:5].isdigit() and p.stem.isdigit()
        )

    def _rebuild_manifest_from_sidecars(self) -> None:
        """No manifest.json: rebuild it in memory from the sidecars' copies, if they agree."""
        sidecars = []
        for p in self._sidecar_paths():
            with contextlib.suppress(OSError, ValueError):
                sc = loads_json(p.read_text(encoding="utf-8"))
                if isinstance(sc, dict):
                    sidecars.append(sc)
        if not sidecars:
            return
        cores = {sha256_json(sc["manifest"]): sc["manifest"] for sc in sidecars if "manifest" in sc}
        n_old = sum("manifest" not in sc for sc in sidecars)
        if len(cores) == 1 and not n_old:
            core = next(iter(cores.values()))
            self.manifest = {
                "format": STORE_FORMAT,
                **{k: core[k] for k in _CORE},
                "library_version": core.get("library_version", library_version()),
                "created": core.get("created"),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "counts": {},
            }
            self.manifest_rebuilt = True
            logger.warning(
                "%s has no manifest.json: rebuilt it from %d chunk sidecars%s",
                self.path,
                len(sidecars),
                ""
                if self._lock.held
                else " (in memory; the next writer, or "
                f"`hneuron-lens store {self.path} --repair`, writes it back)",
            )
            return
        if len(cores) > 1:
            self._orphaned = (
                f"manifest.json is missing and the {len(sidecars)} chunk sidecars disagree on the "
                f"fingerprint ({len(cores)} different ones)"
            )
        else:
            self._orphaned = (
                f"manifest.json is missing and {n_old} of {len(sidecars)} chunk sidecars "
                "(written by hneuron_lens 0.1.0) carry only the fingerprint's hash"
            )

    def _finish_interrupted_compact(self) -> None:
        """Writers only: finish (or roll back) a compaction that was interrupted."""
        new, old = self.path / "chunks.new", self.path / "chunks.old"
        if new.is_dir() and (new / "COMPLETE").is_file() and not self.chunk_dir.exists():
            os.replace(new, self.chunk_dir)
            logger.warning("%s: finished an interrupted compaction", self.path)
        if old.is_dir() and self.chunk_dir.is_dir():
            shutil.rmtree(old)  # the pre-compaction chunks, superseded by a complete new set
        if new.is_dir() and not (new / "COMPLETE").is_file():
            shutil.rmtree(new)  # a compaction's own partial output
        with contextlib.suppress(OSError):
            (self.chunk_dir / "COMPLETE").unlink()

    def _quarantine(self, paths: Iterable[Path], reason: str) -> None:
        """Move ``paths`` to ``quarantine/`` under names that never replace an earlier file."""
        paths = [p for p in paths if p.exists()]
        if not paths:
            return
        qdir = self.path / "quarantine"
        qdir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for p in paths:
            target = qdir / f"{stamp}.{p.name}"
            k = 1
            while target.exists():
                target = qdir / f"{stamp}-{k}.{p.name}"
                k += 1
            os.replace(p, target)
        fsync_dir(qdir)
        self._dirty = True
        logger.warning("moved %s to %s (%s)", [p.name for p in paths], qdir, reason)

    def _scan(self, verify: bool, repair: bool) -> None:
        self._chunks, self._rows, self.problems = [], {}, []
        self._verified = {}
        if not self._data_dir.is_dir() or self.manifest is None:
            no_reason = self._orphaned is None and self._manifest_error is None
            if no_reason and self._data_dir.is_dir() and self._sidecar_paths():
                self._orphaned = "manifest.json is missing and no chunk sidecar is readable"
            return
        fp_hash = sha256_json(self.manifest["fingerprint"])
        marker = self.path / "writing.json"
        full_from: int | None = 0 if verify else None
        if repair and marker.is_file() and not self._session_marker:
            try:
                first = int(json.loads(marker.read_text())["first_chunk"])
            except (OSError, ValueError, KeyError, TypeError):
                first = 0
            logger.warning(
                "store %s was not closed cleanly: checking chunks >= %d in full", self.path, first
            )
            full_from = first if full_from is None else min(full_from, first)
        by_index: dict[int, list[Path]] = {}
        for p in self._data_dir.iterdir():
            if p.name.endswith(".tmp"):
                if repair:  # this library's own unfinished temp file (mkstemp name)
                    p.unlink(missing_ok=True)
                continue
            head = p.name.split(".", 1)[0]
            if head.isdigit():
                by_index.setdefault(int(head), []).append(p)
        for index in sorted(by_index):
            paths = by_index[index]
            sidecar_path = self._data_dir / f"{index:05d}.json"
            if sidecar_path not in paths:
                if repair:
                    self._quarantine(paths, "data files without a sidecar: an interrupted write")
                continue  # a reader: a write in progress, or one killed before its sidecar
            # readers hash what they read (later); a writer hashes every chunk the checksum
            # cache does not vouch for, so it never builds on (or keeps) damaged bytes
            if full_from is not None and index >= full_from:
                hash_mode = "all"
            else:
                hash_mode = "unvouched" if repair else "none"
            problem, chunk = self._check_chunk(index, sidecar_path, fp_hash, hash_mode)
            if problem is None and chunk is not None:
                dup = [i for i in chunk.sidecar["ids"] if i in self._rows]
                if dup:
                    problem = f"{len(dup)} ids already stored in an earlier chunk (e.g. {dup[0]!r})"
            if problem is not None:
                logger.warning("chunk %s is invalid: %s", sidecar_path, problem)
                if repair:
                    self._quarantine(paths, problem)
                else:
                    self.problems.append(f"{sidecar_path.name}: {problem}")
                continue
            assert chunk is not None
            pos = len(self._chunks)
            self._chunks.append(chunk)
            for row, sid in enumerate(chunk.sidecar["ids"]):
                self._rows[sid] = (pos, row)
        if not self.problems and not repair:
            self._check_chunk_list()
        if marker.is_file() and repair and not self._session_marker:
            marker.unlink(missing_ok=True)

    def _check_chunk_list(self) -> None:
        """Chunks the manifest lists but that are gone are a problem (never silently fewer rows)."""
        assert self.manifest is not None
        have = {c.index: c.rows for c in self._chunks}
        for index, rows in self.manifest.get("chunks") or []:
            if have.get(int(index)) != int(rows):
                self.problems.append(
                    f"{int(index):05d}.json: listed in manifest.json with {rows} rows, "
                    + ("missing" if int(index) not in have else f"found {have[int(index)]} rows")
                )

    def _check_chunk(
        self, index: int, sidecar_path: Path, fp_hash: str | None, hash_mode: str
    ) -> tuple[str | None, _Chunk | None]:
        """Validate one chunk: sidecar, sizes, ``.npy`` headers, and its data files' sha256
        (``hash_mode``: ``"none"``, ``"unvouched"`` (unless the checksum cache vouches), ``"all"``).
        Returns ``(problem, None)`` or ``(None, chunk)``."""
        try:
            sc = loads_json(sidecar_path.read_text(encoding="utf-8"))
            rows = int(sc["rows"])
            n_features = int(sc["n_features"])
            files = sc["files"]
            if sc.get("format") != STORE_FORMAT:
                return f"format {sc.get('format')!r} != {STORE_FORMAT}", None
            for key in ("ids", "labels", "splits", "sample_sha256"):
                if len(sc[key]) != rows:
                    return f"sidecar field {key!r} has {len(sc[key])} entries, rows={rows}", None
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"unreadable sidecar ({type(err).__name__}: {str(err)[:80]})", None
        assert self.manifest is not None
        if fp_hash is not None and sc.get("fingerprint_sha256") != fp_hash:
            return "written for a different fingerprint", None
        if sorted(files) != sorted(self.manifest["regions"]):
            return f"regions {sorted(files)} != manifest {self.manifest['regions']}", None
        if n_features != NeuronLayout.from_dict(self.manifest["layout"]).n_features:
            return f"n_features {n_features} != layout", None
        paths: dict[str, Path] = {}
        for region, meta in files.items():
            p = sidecar_path.parent / meta["name"]
            if not p.is_file():
                return f"missing data file {p.name}", None
            size = p.stat().st_size
            if size != int(meta["bytes"]):
                return f"{p.name}: {size} bytes, sidecar says {meta['bytes']}", None
            try:
                shape, dtype, offset = _npy_header(p)
            except (OSError, ValueError) as err:
                return f"{p.name}: bad .npy header ({err})", None
            if shape != (rows, n_features) or dtype != np.dtype(self.manifest["dtype"]):
                return f"{p.name}: shape {shape} {dtype}, expected ({rows}, {n_features})", None
            if offset + rows * n_features * dtype.itemsize != size:
                return f"{p.name}: size does not match its header", None
            vouched = hash_mode == "unvouched" and self._cache_vouches(
                p.name, p.stat(), meta["sha256"]
            )
            if hash_mode == "all" or (hash_mode == "unvouched" and not vouched):
                hashed_at = time.time_ns()
                if file_sha256(p) != meta["sha256"]:
                    return (
                        f"{p.name}: sha256 mismatch (the bytes changed after they were written)",
                        None,
                    )
                st = p.stat()
                self._verified[p.name] = (st.st_size, st.st_mtime_ns, meta["sha256"], hashed_at)
            paths[region] = p
        return None, _Chunk(index=index, sidecar=sc, files=paths)

    # ---------------------------------------------------------------- integrity of reads

    def check(self) -> None:
        """Raise what a read would raise now: no store here, a lost or unreadable manifest, or
        damaged chunks (:class:`StoreCorruptError`). Checksums are checked by the reads."""
        self._check_readable()

    def _check_readable(self) -> None:
        self._require_manifest()
        if self.problems:
            more = f" and {len(self.problems) - 1} more" if len(self.problems) > 1 else ""
            raise StoreCorruptError(
                f"damaged chunk {self.problems[0]}{more}",
                file=self.path,
                hint=f"run `hneuron-lens store {self.path} --repair` to move damaged chunks to "
                "quarantine/, then rerun `hneuron-lens extract` with the same data to recompute "
                "their samples",
            )

    def _cache_vouches(self, name: str, st: os.stat_result, sha: str) -> bool:
        """The manifest's checksum cache, or this object's own hashing, vouches for a file."""
        entry = ((self.manifest or {}).get("verified") or {}).get(name)
        if entry and list(entry) == [st.st_size, st.st_mtime_ns, sha]:
            return True
        mine = self._verified.get(name)
        return (
            mine is not None
            and mine[:3] == (st.st_size, st.st_mtime_ns, sha)
            and mine[3] - st.st_mtime_ns >= RACY_SECONDS * 1e9
        )

    def _verify_chunk(self, chunk: _Chunk) -> None:
        """Check every data file of ``chunk`` against its sha256 (at most once per open)."""
        for region, path in chunk.files.items():
            sha = chunk.sidecar["files"][region]["sha256"]
            try:
                st = path.stat()
            except OSError as err:
                raise StoreCorruptError(
                    f"chunk file {path.name} disappeared ({err.strerror})",
                    file=path,
                    hint="another process changed the store: open it again",
                ) from None
            if self._cache_vouches(path.name, st, sha):
                continue
            hashed_at = time.time_ns()
            if file_sha256(path) != sha:
                raise StoreCorruptError(
                    f"chunk file {path.name} does not match the sha256 recorded when it was "
                    f"written: its {chunk.rows} samples cannot be trusted",
                    file=path,
                    hint=f"run `hneuron-lens store {self.path} --repair` to move it to "
                    "quarantine/, then rerun `hneuron-lens extract` with the same data to "
                    f"recompute those samples (ids in {chunk.index:05d}.json)",
                )
            self._verified[path.name] = (st.st_size, st.st_mtime_ns, sha, hashed_at)

    def _verify_rows(self, ids: Sequence[str]) -> None:
        for pos in sorted({self._rows[i][0] for i in ids}):
            self._verify_chunk(self._chunks[pos])

    def verify(self) -> list[str]:
        """Hash every chunk file now (ignoring the cache); return the problems found.

        Read-only: damaged chunks are reported, not moved (:meth:`repair` moves them).
        """
        self.refresh(verify=True)
        return list(self.problems) + ([self._orphaned] if self._orphaned else [])

    def repair(self) -> list[str]:
        """Take the lock, hash every chunk, move damaged ones to ``quarantine/``, and write the
        manifest back (rebuilt from the sidecars when it was lost). Returns what was done.

        Raises:
            StoreBusyError: another process is writing.
            StoreError: the manifest is lost and cannot be rebuilt (see the message).
        """
        if self.manifest is None and self._manifest_error is None and not self._orphaned:
            self._require_manifest()  # raises: nothing here to repair
        qdir = self.path / "quarantine"
        before = set(qdir.iterdir()) if qdir.is_dir() else set()
        had_lock = self._lock.held
        self._acquire_writer()
        try:
            rebuilt = self.manifest_rebuilt or self._manifest_error is not None
            self.refresh(verify=True)
            if self._orphaned:
                raise StoreError(self._orphaned, file=self.path, hint=self._recovery_hint())
            if self.manifest is not None:
                self._record_verified()
                self.manifest["counts"] = self._counts()
                self.manifest["chunks"] = self._chunk_list()
                self._write_manifest()
        finally:
            if not had_lock:
                self._unlock()
        after = set(qdir.iterdir()) if qdir.is_dir() else set()
        done = [f"moved {p.name} to quarantine/" for p in sorted(after - before)]
        if rebuilt and self.manifest is not None:
            done.append("rebuilt manifest.json from the chunk sidecars")
        return done

    # ---------------------------------------------------------------- manifest

    def open_for(
        self,
        fingerprint: dict[str, Any],
        *,
        layout: NeuronLayout,
        regions: Sequence[str],
        overwrite: bool = False,
    ) -> None:
        """Start a write session: take the lock, then create, accept or refuse the store.

        The lock is held until :meth:`close` (also when this raises, it is released).

        Args:
            fingerprint: what the features depend on (see
                :func:`~hneuron_lens.extract.build_fingerprint`).
            layout: the model's neuron layout.
            regions: the region names every sample will have.
            overwrite: replace an existing store written for a different fingerprint, layout,
                regions or dtype instead of raising (its chunks and manifest are deleted; other
                files in the directory, ``quarantine/`` included, are left alone).

        Raises:
            StoreBusyError: another process is writing to the store.
            StoreMismatchError: the store holds data for something else; the message names
                every field that differs.
            OutputError: the directory holds something other than an activation store.
        """
        regions = list(regions)
        if not check_output_dir(self.path, KIND, resume=True, option="store"):
            self.path.mkdir(parents=True, exist_ok=True)  # missing or empty: mark it first
            write_marker(self.path, KIND)
        self._acquire_writer()
        try:
            self.refresh()
            self._open_for(fingerprint, layout, regions, overwrite)
        except BaseException:
            self._unlock()
            raise

    def _open_for(
        self, fingerprint: dict[str, Any], layout: NeuronLayout, regions: list[str], overwrite: bool
    ) -> None:
        dtype = self._requested_dtype or (self.manifest or {}).get("dtype") or "float16"
        wanted = {
            "fingerprint": to_jsonable(fingerprint),
            "layout": layout.to_dict(),
            "regions": regions,
            "dtype": dtype,
        }
        if self._manifest_error is not None and not overwrite:
            raise self._manifest_error  # e.g. a store of a newer format: never replaced silently
        if self.manifest is None and self._orphaned and not overwrite:
            self._adopt_orphaned_chunks(wanted)
        if self.manifest is not None:
            have = {k: self.manifest.get(k) for k in wanted}
            diff = fingerprint_diff(have, wanted)
            if not diff:
                if not (self.path / "manifest.json").is_file():
                    self._write_manifest()
                self._ensure_marker()
                return
            if not overwrite:
                raise StoreMismatchError(
                    "store was written for different inputs: " + "; ".join(diff),
                    file=self.path,
                    hint="use another store directory, or --overwrite (overwrite=True) to "
                    "replace it",
                )
            logger.warning("overwriting store %s: %s", self.path, "; ".join(diff))
        self._buffer.clear()
        if overwrite:  # the user asked to replace a store: its chunks and manifest go
            for name in ("chunks", "chunks.new", "chunks.old"):
                if (self.path / name).exists():
                    shutil.rmtree(self.path / name)
            (self.path / "manifest.json").unlink(missing_ok=True)
        elif self.chunk_dir.is_dir():  # no manifest, no sidecar: leftovers are moved, not deleted
            self._quarantine(sorted(self.chunk_dir.iterdir()), "files of a store without manifest")
        (self.path / "writing.json").unlink(missing_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest = {
            "format": STORE_FORMAT,
            **wanted,
            "library_version": library_version(),
            "created": now,
            "updated": now,
            "counts": {},
            "chunks": [],
        }
        self._orphaned = None
        self._ensure_marker()
        self._write_manifest()
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        self._data_dir = self.chunk_dir
        self._chunks, self._rows, self.problems = [], {}, []

    def _adopt_orphaned_chunks(self, wanted: dict[str, Any]) -> None:
        """Manifest lost, old sidecars: rebuild it from ``wanted`` when the chunks match it."""
        fp_hash = sha256_json(wanted["fingerprint"])
        n_features = NeuronLayout.from_dict(wanted["layout"]).n_features
        bad = []
        for p in self._sidecar_paths():
            try:
                sc = loads_json(p.read_text(encoding="utf-8"))
                ok = (
                    sc.get("fingerprint_sha256") == fp_hash
                    and sc.get("dtype") == wanted["dtype"]
                    and sorted(sc.get("files", {})) == sorted(wanted["regions"])
                    and int(sc.get("n_features", -1)) == n_features
                )
            except (OSError, ValueError, TypeError):
                ok = False
            if not ok:
                bad.append(p.name)
        if bad:
            raise StoreMismatchError(
                f"{self._orphaned}, and {len(bad)} of them (e.g. {bad[0]}) were not written for "
                "this model / configuration / dtype",
                file=self.path,
                hint="rerun extract with the model, options and --store-dtype that wrote them, "
                "or use another store directory (nothing was changed)",
            )
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest = {
            "format": STORE_FORMAT,
            **wanted,
            "library_version": library_version(),
            "created": now,
            "updated": now,
            "counts": {},
            "chunks": [],
        }
        self._orphaned = None
        logger.warning("%s: rebuilt the lost manifest.json from this run's fingerprint", self.path)
        self._write_manifest()
        self.refresh()

    def _ensure_marker(self) -> None:
        from hneuron_lens.io import MARKER

        if not (self.path / MARKER).is_file():
            write_marker(self.path, KIND)

    def _write_manifest(self) -> None:
        assert self.manifest is not None
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "manifest.json", json.dumps(self.manifest, indent=1))

    def _counts(self) -> dict[str, Any]:
        by_split: dict[str, int] = {}
        by_label: dict[str, int] = {}
        for sid in self._rows:
            m = self._meta(sid)
            key = str(m["split"])
            by_split[key] = by_split.get(key, 0) + 1
            by_label[str(m["label"])] = by_label.get(str(m["label"]), 0) + 1
        return {
            "n_samples": len(self._rows),
            "n_chunks": len(self._chunks),
            "by_split": by_split,
            "by_label": by_label,
        }

    def _chunk_list(self) -> list[list[int]]:
        return [[c.index, c.rows] for c in self._chunks]

    def _record_verified(self) -> None:
        """Writers: cache the checksums of chunk files that are old enough (module docstring).

        Files the cache or this object's hashing already vouch for are not hashed again.
        """
        assert self.manifest is not None and self._lock.held
        cache: dict[str, list[Any]] = {}
        for chunk in self._chunks:
            for region, path in chunk.files.items():
                sha = chunk.sidecar["files"][region]["sha256"]
                st = path.stat()
                entry = [st.st_size, st.st_mtime_ns, sha]
                if self._cache_vouches(path.name, st, sha):
                    cache[path.name] = entry
                    continue
                hashed_at = time.time_ns()
                if hashed_at - st.st_mtime_ns < RACY_SECONDS * 1e9:
                    continue  # racy: too new to vouch for; a reader hashes it
                if file_sha256(path) == sha and path.stat().st_mtime_ns == st.st_mtime_ns:
                    cache[path.name] = entry
                    self._verified[path.name] = (*entry, hashed_at)  # type: ignore[assignment]
        self.manifest["verified"] = cache

    # ---------------------------------------------------------------- writing

    def write_batch(
        self,
        ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        splits: Sequence[str | None] | None,
        features: dict[str, Any],
        sample_hashes: Sequence[str | None] | None = None,
    ) -> None:
        """Buffer rows and write a chunk each time ``chunk_size`` rows are buffered.

        Takes the write lock if this object does not hold it yet (and then re-reads the store,
        so the id check below sees every sample another writer added).

        Args:
            ids: sample ids, new to this store and unique.
            labels: 0 (faithful) / 1 (hallucinated) per sample.
            splits: split name per sample (``None`` entries or ``None``: no split).
            features: ``{region: [n, n_features]}`` for every region of the store; a
                ``[n, n_layers, max_d_mlp]`` array or tensor is flattened with the layout.
            sample_hashes: content hash per sample (:func:`~hneuron_lens.extract.sample_sha256`),
                if known.

        Call :meth:`flush` or :meth:`close` to write the last partial chunk.
        """
        manifest = self._require_manifest()
        if not self._lock.held:
            self._acquire_writer()
            self.refresh()
            manifest = self._require_manifest()
        n = len(ids)
        ids = [str(i) for i in ids]
        labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
        split_list = list(splits) if splits is not None else [None] * n
        hashes = list(sample_hashes) if sample_hashes is not None else [None] * n
        if len(labels_arr) != n or len(split_list) != n or len(hashes) != n:
            raise ValueError("ids, labels, splits and sample_hashes must have the same length")
        if not set(labels_arr.tolist()) <= {0, 1}:
            raise ValueError(f"labels must be 0 or 1, got {sorted(set(labels_arr.tolist()))}")
        buffered = {r["id"] for r in self._buffer}
        seen: set[str] = set()
        for sid in ids:
            if sid in self._rows or sid in buffered or sid in seen:
                raise ValueError(f"sample id {sid!r} is already in the store (or repeated)")
            seen.add(sid)
        if sorted(features) != sorted(manifest["regions"]):
            raise ValueError(
                f"features have regions {sorted(features)}, store has {manifest['regions']}"
            )
        layout = self.layout
        arrays: dict[str, np.ndarray] = {}
        for region, x in features.items():
            if hasattr(x, "detach"):  # a torch tensor
                x = x.detach().to("cpu").float().numpy()
            x = np.asarray(x)
            if x.ndim == 3:
                x = np.concatenate([x[:, layer, :d] for layer, d in enumerate(layout.d_mlp)], 1)
            if x.shape != (n, layout.n_features):
                raise ValueError(
                    f"region {region!r}: shape {x.shape} != ({n}, {layout.n_features})"
                )
            arrays[region] = _to_dtype(x, np.dtype(manifest["dtype"]))
        for i, sid in enumerate(ids):
            self._buffer.append(
                {
                    "id": sid,
                    "label": int(labels_arr[i]),
                    "split": None if split_list[i] is None else str(split_list[i]),
                    "sha256": hashes[i],
                    "x": {r: arrays[r][i] for r in arrays},
                }
            )
        while len(self._buffer) >= self.chunk_size:
            self._write_chunk(self._buffer[: self.chunk_size])
            del self._buffer[: self.chunk_size]

    def flush(self) -> None:
        """Write whatever rows are buffered as a (partial) chunk."""
        if self._buffer:
            self._write_chunk(self._buffer)
            self._buffer = []

    def close(self) -> None:
        """End the write session: flush, write the manifest (counts, chunk list, checksum
        cache), drop the lock. Reads keep working; a reader's close does nothing."""
        try:
            self.flush()
            if self._lock.held and self.manifest is not None:
                self._record_verified()
                self.manifest["counts"] = self._counts()
                self.manifest["chunks"] = self._chunk_list()
                self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                self._write_manifest()
            if self._session_marker:
                (self.path / "writing.json").unlink(missing_ok=True)
                self._session_marker = False
        finally:
            self._unlock()

    def _next_index(self) -> int:
        top = -1
        if self.chunk_dir.is_dir():
            for p in self.chunk_dir.iterdir():
                head = p.name.split(".", 1)[0]
                if head.isdigit():
                    top = max(top, int(head))
        return top + 1

    def _write_chunk(self, rows: list[dict[str, Any]], directory: Path | None = None) -> None:
        manifest = self._require_manifest()
        assert self._lock.held, "chunks are written under the lock"
        directory = directory or self.chunk_dir
        directory.mkdir(parents=True, exist_ok=True)
        index = self._next_index()
        if not self._session_marker:
            atomic_write_text(
                self.path / "writing.json",
                json.dumps({"pid": os.getpid(), "first_chunk": index, "started": time.time()}),
            )
            self._session_marker = True
        dtype = np.dtype(manifest["dtype"])
        files: dict[str, dict[str, Any]] = {}
        for region in manifest["regions"]:
            x = np.stack([r["x"][region] for r in rows])
            files[region] = self._store_array(directory / f"{index:05d}.{region}.npy", x, dtype)
        self._write_sidecar(directory, index, rows, files)

    def _store_array(self, path: Path, x: np.ndarray, dtype: np.dtype) -> dict[str, Any]:
        size, digest = _write_npy(path, x.astype(dtype, copy=False))
        return {"name": path.name, "bytes": size, "sha256": digest}

    def _write_sidecar(
        self,
        directory: Path,
        index: int,
        rows: list[dict[str, Any]],
        files: dict[str, dict[str, Any]],
    ) -> None:
        manifest = self._require_manifest()
        fsync_dir(directory)
        core = {k: manifest[k] for k in _CORE}
        core.update(
            library_version=manifest.get("library_version"), created=manifest.get("created")
        )
        sidecar = {
            "format": STORE_FORMAT,
            "chunk": index,
            "rows": len(rows),
            "n_features": NeuronLayout.from_dict(manifest["layout"]).n_features,
            "dtype": manifest["dtype"],
            "fingerprint_sha256": sha256_json(manifest["fingerprint"]),
            "files": files,
            "ids": [r["id"] for r in rows],
            "labels": [r["label"] for r in rows],
            "splits": [r["split"] for r in rows],
            "sample_sha256": [r["sha256"] for r in rows],
            "written": time.time(),
            "manifest": core,
        }
        sidecar_path = directory / f"{index:05d}.json"
        atomic_write_text(sidecar_path, json.dumps(sidecar))
        if directory == self.chunk_dir:
            chunk = _Chunk(
                index=index,
                sidecar=sidecar,
                files={r: directory / m["name"] for r, m in files.items()},
            )
            pos = len(self._chunks)
            self._chunks.append(chunk)
            for row, r in enumerate(rows):
                self._rows[r["id"]] = (pos, row)
            for m in files.values():  # hashed from the bytes written (racy until 2 s later)
                st = (directory / m["name"]).stat()
                self._verified[m["name"]] = (
                    st.st_size,
                    st.st_mtime_ns,
                    m["sha256"],
                    st.st_mtime_ns,
                )

    # ---------------------------------------------------------------- reading

    def _memmap(self, chunk: _Chunk, region: str) -> np.ndarray:
        return np.load(chunk.files[region], mmap_mode="r")

    def _select(self, split: Any = _ALL) -> list[str]:
        if split is _ALL:
            return self.ids
        return [i for i in self.ids if self._meta(i)["split"] == split]

    def _gather(self, region: str, ids: list[str], columns: slice | np.ndarray) -> np.ndarray:
        """Rows ``ids`` (in that order) of ``region``, checksum-verified: a memmap view when
        they are one chunk's consecutive rows and ``columns`` is a slice, else a copy in RAM."""
        if region not in self.regions:
            raise KeyError(f"region {region!r} not in this store; have {list(self.regions)}")
        n_cols = (
            len(range(*columns.indices(self.layout.n_features)))
            if isinstance(columns, slice)
            else len(columns)
        )
        if not ids:
            return np.empty((0, n_cols), dtype=self.dtype)
        self._verify_rows(ids)
        locs = [self._rows[i] for i in ids]
        pos0, row0 = locs[0]
        if all(p == pos0 for p, _ in locs) and all(r == row0 + k for k, (_, r) in enumerate(locs)):
            mm = self._memmap(self._chunks[pos0], region)
            view = mm[row0 : row0 + len(ids)]
            return view[:, columns] if isinstance(columns, slice) else view[:, columns]
        logger.info(
            "reading %d rows from %d chunks into memory; ActivationStore.compact() makes "
            "split reads zero-copy memory maps",
            len(ids),
            len({p for p, _ in locs}),
        )
        out = np.empty((len(ids), n_cols), dtype=self.dtype)
        by_chunk: dict[int, list[tuple[int, int]]] = {}
        for k, (p, r) in enumerate(locs):
            by_chunk.setdefault(p, []).append((k, r))
        for p, pairs in by_chunk.items():
            mm = self._memmap(self._chunks[p], region)
            dest = np.fromiter((k for k, _ in pairs), dtype=np.int64, count=len(pairs))
            src = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            # runs of consecutive rows on both sides are copied as slices (the common case)
            breaks = np.flatnonzero((np.diff(dest) != 1) | (np.diff(src) != 1)) + 1
            for d, s in zip(np.split(dest, breaks), np.split(src, breaks), strict=True):
                out[d[0] : d[-1] + 1] = mm[s[0] : s[-1] + 1, columns]
        return out

    def _columns(self, layers: Sequence[int] | None) -> slice | np.ndarray:
        layout = self.layout
        if layers is None:
            return slice(0, layout.n_features)
        layers = [int(layer) for layer in layers]
        if not layers:
            raise ValueError("layers must name at least one layer")
        if any(not 0 <= layer < layout.n_layers for layer in layers):
            raise IndexError(f"layers {layers} out of range [0, {layout.n_layers})")
        off = layout.offsets
        if layers == list(range(layers[0], layers[-1] + 1)):
            return slice(int(off[layers[0]]), int(off[layers[-1] + 1]))
        return np.concatenate([np.arange(off[layer], off[layer + 1]) for layer in layers])

    def features(
        self,
        region: str,
        layers: Sequence[int] | None = None,
        split: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Feature matrix of one region, with labels and ids, rows sorted by id.

        Args:
            region: ``"answer"``, ``"other"``...
            layers: keep only these layers' neurons (columns in layer order); ``None``: all.
            split: keep only this split; ``None``: every sample.

        Returns:
            ``(X [n, n_selected_features], y [n] int8, ids)``. ``X`` is a read-only memory map
            when the rows are one chunk's (after :meth:`compact`) and ``layers`` is ``None`` or
            a contiguous range; otherwise an in-memory copy.

        Raises:
            StoreCorruptError: a chunk read is damaged (see the message for the fix).
        """
        self._check_readable()
        ids = self._select(_ALL if split is None else split)
        x = self._gather(region, ids, self._columns(layers))
        y = np.asarray([self._meta(i)["label"] for i in ids], dtype=np.int8)
        return x, y, ids

    def rows(self, ids: Sequence[str]) -> StoredRows:
        """The stored rows and metadata of ``ids``, in that order (what :meth:`write_batch`
        needs to copy them into another store bit for bit).

        Raises:
            KeyError: an id is not stored.
            StoreCorruptError: a chunk read is damaged (see the message for the fix).
        """
        self._check_readable()
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in self._rows]
        if missing:
            raise KeyError(f"{len(missing)} ids are not in {self.path}, e.g. {missing[:3]}")
        metas = [self._meta(i) for i in ids]
        return StoredRows(
            ids=ids,
            features={r: self._gather(r, ids, slice(None)) for r in self.regions},
            labels=[m["label"] for m in metas],
            splits=[m["split"] for m in metas],
            sample_hashes=[m["sha256"] for m in metas],
        )

    def split(self, name: str | None) -> FeatureSplit:
        """All regions of one split (``None``: samples without a split) as a FeatureSplit.

        Rows are sorted by id and checksum-verified. After :meth:`compact` every region is a
        read-only memory map.

        Raises:
            MissingSplitError: no sample has this split.
            StoreCorruptError: a chunk read is damaged (see the message for the fix).
        """
        self._check_readable()
        ids = self._select(name)
        if not ids:
            have = sorted({str(s) for s in self.splits})
            raise MissingSplitError(
                f"split {name!r} has no samples (splits here: {', '.join(have) or 'none'})",
                file=self.path,
                hint="check the split name, or extract samples with that split",
            )
        cols = self._columns(None)
        feats = {r: self._gather(r, ids, cols) for r in self.regions}
        labels = np.asarray([self._meta(i)["label"] for i in ids], dtype=np.int8)
        return FeatureSplit(
            features=feats,
            labels=labels,
            ids=ids,
            layout=self.layout,
            meta={
                "store": str(self.path),
                "split": name,
                "dtype": self.dtype,
                "fingerprint": self.fingerprint,
            },
        )

    def info(self) -> dict[str, Any]:
        """Counts, sizes and provenance: a JSON-able summary."""
        size = 0
        if self._data_dir.is_dir():
            size = sum(p.stat().st_size for p in self._data_dir.iterdir() if p.is_file())
        out: dict[str, Any] = {
            "path": str(self.path),
            "dtype": self.dtype,
            "bytes": size,
            **self._counts(),
            "dataset_sha256": sha256_json(sorted(self._meta(i)["sha256"] or i for i in self._rows)),
            "compacted": self._is_compacted(),
            "problems": list(self.problems),
        }
        if self.manifest is not None:
            fp = self.manifest["fingerprint"]
            out.update(
                regions=self.manifest["regions"],
                n_layers=len(self.manifest["layout"]["d_mlp"]),
                n_features=sum(self.manifest["layout"]["d_mlp"]),
                model=(fp.get("model") or {}).get("name") if isinstance(fp, dict) else None,
                library_version=self.manifest.get("library_version"),
                created=self.manifest.get("created"),
            )
        return out

    def _is_compacted(self) -> bool:
        splits_seen: set[Any] = set()
        for c in self._chunks:
            s = set(c.sidecar["splits"])
            if len(s) != 1 or (s & splits_seen) or c.sidecar["ids"] != sorted(c.sidecar["ids"]):
                return False
            splits_seen |= s
        return True

    # ---------------------------------------------------------------- compaction

    def compact(self) -> None:
        """Rewrite the store as one chunk per split, rows sorted by id (crash-safe).

        Afterwards :meth:`split` and :meth:`features` return memory maps without copying. Every
        row is checksum-verified before it is copied (a damaged chunk stops the compaction, it
        is never laundered into a new checksum). The new chunks are built in ``chunks.new/`` row
        block by row block (never a whole split in RAM), then swapped in with two renames; an
        interrupted compaction is finished or rolled back by the next writer.
        """
        self.flush()
        with self._writing():
            self._check_readable()
            if not self._is_compacted():
                self._compact()

    def _compact(self) -> None:
        manifest = self._require_manifest()
        new_dir = self.path / "chunks.new"
        if new_dir.exists():
            shutil.rmtree(new_dir)
        new_dir.mkdir(parents=True)
        dtype = np.dtype(manifest["dtype"])
        n_features = self.layout.n_features
        groups: dict[Any, list[str]] = {}
        for sid in self.ids:
            groups.setdefault(self._meta(sid)["split"], []).append(sid)
        order = sorted(groups, key=lambda s: (s is None, str(s)))
        for index, split in enumerate(order):
            ids = groups[split]
            files: dict[str, dict[str, Any]] = {}
            for region in manifest["regions"]:
                path = new_dir / f"{index:05d}.{region}.npy"
                tmp = new_dir / f"{index:05d}.{region}.npy.part"
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=dtype, shape=(len(ids), n_features)
                )
                for start in range(0, len(ids), 1024):
                    block = ids[start : start + 1024]
                    out[start : start + len(block)] = self._gather(region, block, slice(None))
                out.flush()
                del out
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                files[region] = {
                    "name": path.name,
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                }
            rows = [{"id": sid, **self._meta(sid)} for sid in ids]
            self._write_sidecar(new_dir, index, rows, files)
        atomic_write_text(new_dir / "COMPLETE", "ok")
        fsync_dir(new_dir)
        os.replace(self.chunk_dir, self.path / "chunks.old")
        os.replace(new_dir, self.chunk_dir)
        fsync_dir(self.path)
        shutil.rmtree(self.path / "chunks.old")
        (self.chunk_dir / "COMPLETE").unlink(missing_ok=True)
        self.refresh()
        self.manifest["counts"] = self._counts()  # type: ignore[index]
        self.manifest["chunks"] = self._chunk_list()  # type: ignore[index]
        self._write_manifest()

    def assign_splits(self, splits: dict[str, str | None]) -> int:
        """Change the split of stored samples (rewrites the affected sidecars atomically).

        Returns:
            The number of samples whose split changed.
        """
        self.flush()
        with self._writing():
            changed_chunks: dict[int, dict[str, Any]] = {}
            n = 0
            for sid, split in splits.items():
                if sid not in self._rows:
                    continue
                pos, row = self._rows[sid]
                sc = self._chunks[pos].sidecar
                if sc["splits"][row] != split:
                    sc["splits"][row] = split
                    changed_chunks[pos] = sc
                    n += 1
            for pos, sc in changed_chunks.items():
                path = self.chunk_dir / f"{self._chunks[pos].index:05d}.json"
                atomic_write_text(path, json.dumps(sc))
        return n
