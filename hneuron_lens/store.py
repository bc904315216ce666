"""On-disk, fingerprinted, resumable store of per-sample CETT feature vectors.

:func:`extract` runs :func:`hneuron_lens.cett.cett` over judged samples and writes, for every
sample and region (``"answer"``, ``"other"``...), the CETT vector flattened over (layer, neuron)
with :class:`~hneuron_lens.features.NeuronLayout` into an :class:`ActivationStore`. The probe
reads it back as :class:`~hneuron_lens.features.FeatureSplit` objects backed by memory maps.

Directory layout::

    STORE/manifest.json            fingerprint, layout, regions, dtype, library version, counts
    STORE/chunks/00000.answer.npy  [rows, n_features] float16 (or float32), one file per region
    STORE/chunks/00000.json        sidecar: rows, ids, labels, splits, sample hashes, sha256 and
                                   size of every data file. Written LAST: no sidecar, no chunk.
    STORE/quarantine/              damaged chunks moved aside on open (never read)
    STORE/.lock                    advisory lock held by the one process that writes

Integrity. A chunk's data files are written to temporary names, fsynced and renamed; then its
sidecar is written the same way. On open every chunk is checked cheaply (sidecar parses, every
data file exists with the exact byte size and ``.npy`` header shape/dtype the sidecar records);
the full sha256 is checked for chunks written by a run that did not close cleanly (a
``writing.json`` marker survives it) and for every chunk when ``verify=True``. A chunk that fails
is logged, moved to ``quarantine/`` and left out, so :func:`extract` re-computes its samples.
Data files without a sidecar (a run killed between the two renames) are deleted. Repairs are
made only by a process that can take the store's lock; a reader that runs beside a writer just
ignores what it cannot validate.

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
import torch

from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.io import atomic_write_text, fsync_dir, library_version, sha256_json, to_jsonable

try:  # POSIX advisory locks; on other platforms the store does no locking.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
"""Version of the on-disk layout; stamped into the manifest and every sidecar."""

DTYPES = ("float16", "float32")
_ALL = object()  # "every split" sentinel (``None`` means "samples without a split")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class StoreMismatchError(ValueError):
    """The store was written for different inputs (model, tokenizer, configs, samples...)."""


class StoreBusyError(RuntimeError):
    """Another process holds the store's write lock."""


# --------------------------------------------------------------------------------------------
# small helpers


def _file_sha256(path: Path, block: int = 1 << 22) -> str:
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
        digest = _file_sha256(Path(tmp))  # read back from the page cache: cheap
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
class _Chunk:
    """One validated chunk as recorded by its sidecar."""

    index: int
    sidecar: dict[str, Any]
    files: dict[str, Path]

    @property
    def rows(self) -> int:
        return int(self.sidecar["rows"])


class ActivationStore:
    """On-disk store of per-sample CETT vectors (see the module docstring for the layout).

    Args:
        path: the store directory (created on first write).
        dtype: value dtype for a new store, ``"float16"`` (default) or ``"float32"``. ``None``
            means "whatever the existing store has, else float16". An explicit dtype that differs
            from an existing store's is a fingerprint mismatch (see :meth:`open_for`).
        chunk_size: rows per chunk file when writing.
        verify: check the full sha256 of every chunk on open (default: only chunks from a run
            that did not close cleanly; sizes and headers are always checked).

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
        self.chunk_size = int(chunk_size)
        self._requested_dtype = dtype
        self._lock_fd: int | None = None
        self._buffer: list[dict[str, Any]] = []
        self._session_marker = False
        self.manifest: dict[str, Any] | None = None
        self._chunks: list[_Chunk] = []
        self._rows: dict[str, tuple[int, int]] = {}  # id -> (position in _chunks, row)
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
            raise RuntimeError(
                f"store {self.path} has no manifest yet: call open_for() or extract() first"
            )
        return self.manifest

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

    def _try_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        if fcntl is None:  # pragma: no cover
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _acquire_writer(self) -> None:
        if not self._try_lock():
            raise StoreBusyError(f"another process is writing to {self.path} (lock held)")

    @contextlib.contextmanager
    def _writing(self) -> Any:
        """Hold the write lock for a block; release it after unless it was held before."""
        had_lock = self._lock_fd is not None
        self._acquire_writer()
        try:
            yield
        finally:
            if not had_lock:
                self._unlock()

    # ---------------------------------------------------------------- opening / validation

    def refresh(self, verify: bool = False) -> None:
        """Re-read the manifest and re-validate every chunk (see the module docstring)."""
        manifest_path = self.path / "manifest.json"
        self.manifest = None
        if manifest_path.is_file():
            self.manifest = json.loads(manifest_path.read_text())
            if self.manifest.get("format") != STORE_FORMAT:
                raise StoreMismatchError(
                    f"{manifest_path}: store format {self.manifest.get('format')!r}, this "
                    f"library reads format {STORE_FORMAT}"
                )
        self._finish_interrupted_compact()
        had_lock = self._lock_fd is not None
        can_repair = self.path.is_dir() and self._try_lock()
        try:
            self._scan(verify=verify, repair=can_repair)
        finally:
            if can_repair and not had_lock:
                self._unlock()

    def _finish_interrupted_compact(self) -> None:
        new, old = self.path / "chunks.new", self.path / "chunks.old"
        if new.is_dir() and (new / "COMPLETE").is_file() and not self.chunk_dir.exists():
            os.replace(new, self.chunk_dir)
        if old.is_dir() and self.chunk_dir.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        if new.is_dir() and not (new / "COMPLETE").is_file():
            shutil.rmtree(new, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.chunk_dir / "COMPLETE").unlink()

    def _quarantine(self, paths: Iterable[Path], reason: str, repair: bool) -> None:
        paths = [p for p in paths if p.exists()]
        if not repair or not paths:
            return
        qdir = self.path / "quarantine"
        qdir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for p in paths:
            os.replace(p, qdir / f"{stamp}.{p.name}")
        logger.warning("moved %s to %s (%s)", [p.name for p in paths], qdir, reason)

    def _scan(self, verify: bool, repair: bool) -> None:
        self._chunks, self._rows = [], {}
        if not self.chunk_dir.is_dir():
            return
        fp_hash = sha256_json(self.manifest["fingerprint"]) if self.manifest else None
        marker = self.path / "writing.json"
        full_from: int | None = 0 if verify else None
        if marker.is_file():
            try:
                first = int(json.loads(marker.read_text())["first_chunk"])
            except (OSError, ValueError, KeyError):
                first = 0
            if repair:  # the writer that left it is gone (we hold the lock)
                logger.warning(
                    "store %s was not closed cleanly: checking chunks >= %d in full",
                    self.path,
                    first,
                )
                full_from = first if full_from is None else min(full_from, first)
        by_index: dict[int, list[Path]] = {}
        for p in self.chunk_dir.iterdir():
            if p.name.endswith(".tmp"):
                if repair:
                    p.unlink(missing_ok=True)
                continue
            head = p.name.split(".", 1)[0]
            if head.isdigit():
                by_index.setdefault(int(head), []).append(p)
        for index in sorted(by_index):
            paths = by_index[index]
            sidecar_path = self.chunk_dir / f"{index:05d}.json"
            if sidecar_path not in paths:
                if repair:
                    logger.warning(
                        "chunk %05d in %s has no sidecar (interrupted write): deleting %s",
                        index,
                        self.chunk_dir,
                        [p.name for p in paths],
                    )
                    for p in paths:
                        p.unlink(missing_ok=True)
                continue
            check_hash = full_from is not None and index >= full_from
            problem, chunk = self._check_chunk(index, sidecar_path, fp_hash, check_hash)
            if problem is not None:
                logger.warning("chunk %s is invalid: %s", sidecar_path, problem)
                self._quarantine(paths, problem, repair)
                continue
            assert chunk is not None
            dup = [i for i in chunk.sidecar["ids"] if i in self._rows]
            if dup:
                problem = f"{len(dup)} ids already stored in an earlier chunk (e.g. {dup[0]!r})"
                logger.warning("chunk %s is invalid: %s", sidecar_path, problem)
                self._quarantine(paths, problem, repair)
                continue
            pos = len(self._chunks)
            self._chunks.append(chunk)
            for row, sid in enumerate(chunk.sidecar["ids"]):
                self._rows[sid] = (pos, row)
        if marker.is_file() and repair and self._lock_fd is not None and not self._session_marker:
            marker.unlink(missing_ok=True)

    def _check_chunk(
        self, index: int, sidecar_path: Path, fp_hash: str | None, check_hash: bool
    ) -> tuple[str | None, _Chunk | None]:
        try:
            sc = json.loads(sidecar_path.read_text())
            rows = int(sc["rows"])
            n_features = int(sc["n_features"])
            files = sc["files"]
            if sc.get("format") != STORE_FORMAT:
                return f"format {sc.get('format')!r} != {STORE_FORMAT}", None
            for key in ("ids", "labels", "splits", "sample_sha256"):
                if len(sc[key]) != rows:
                    return f"sidecar field {key!r} has {len(sc[key])} entries, rows={rows}", None
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"unreadable sidecar ({err})", None
        if self.manifest is None:
            return "store has no manifest", None
        if fp_hash is not None and sc.get("fingerprint_sha256") != fp_hash:
            return "written for a different fingerprint", None
        if sorted(files) != sorted(self.manifest["regions"]):
            return f"regions {sorted(files)} != manifest {self.manifest['regions']}", None
        if n_features != NeuronLayout.from_dict(self.manifest["layout"]).n_features:
            return f"n_features {n_features} != layout", None
        paths: dict[str, Path] = {}
        for region, meta in files.items():
            p = self.chunk_dir / meta["name"]
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
            if check_hash and _file_sha256(p) != meta["sha256"]:
                return f"{p.name}: sha256 mismatch", None
            paths[region] = p
        return None, _Chunk(index=index, sidecar=sc, files=paths)

    def verify(self) -> list[str]:
        """Check every chunk's full sha256 now; return the problems found (and quarantine them)."""
        before = {c.index for c in self._chunks}
        self.refresh(verify=True)
        after = {c.index for c in self._chunks}
        return [f"chunk {i:05d} failed verification" for i in sorted(before - after)]

    # ---------------------------------------------------------------- manifest

    def open_for(
        self,
        fingerprint: dict[str, Any],
        *,
        layout: NeuronLayout,
        regions: Sequence[str],
        overwrite: bool = False,
    ) -> None:
        """Bind the store to ``fingerprint``: create it, accept it, or refuse it.

        Args:
            fingerprint: what the features depend on (see :func:`build_fingerprint`).
            layout: the model's neuron layout.
            regions: the region names every sample will have.
            overwrite: delete an existing store written for a different fingerprint, layout,
                regions or dtype instead of raising.

        Raises:
            StoreMismatchError: the store holds data for something else; the message names
                every field that differs.
        """
        regions = list(regions)
        dtype = self._requested_dtype or (self.manifest or {}).get("dtype") or "float16"
        wanted = {
            "fingerprint": to_jsonable(fingerprint),
            "layout": layout.to_dict(),
            "regions": regions,
            "dtype": dtype,
        }
        if self.manifest is not None:
            have = {k: self.manifest.get(k) for k in wanted}
            diff = fingerprint_diff(have, wanted)
            if not diff:
                return
            if not overwrite:
                raise StoreMismatchError(
                    f"store {self.path} was written for different inputs:\n  "
                    + "\n  ".join(diff)
                    + "\nUse another store directory, or overwrite=True to discard it."
                )
            logger.warning("overwriting store %s: %s", self.path, "; ".join(diff))
        self._acquire_writer()
        if self.manifest is not None or self.chunk_dir.exists():
            self._buffer.clear()
            for name in ("chunks", "chunks.new", "chunks.old", "quarantine"):
                shutil.rmtree(self.path / name, ignore_errors=True)
            (self.path / "writing.json").unlink(missing_ok=True)
            (self.path / "manifest.json").unlink(missing_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest = {
            "format": STORE_FORMAT,
            **wanted,
            "library_version": library_version(),
            "created": now,
            "updated": now,
            "counts": {},
        }
        self._write_manifest()
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        self._chunks, self._rows = [], {}

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

    # ---------------------------------------------------------------- writing

    def write_batch(
        self,
        ids: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        splits: Sequence[str | None] | None,
        features: dict[str, np.ndarray | torch.Tensor],
        sample_hashes: Sequence[str | None] | None = None,
    ) -> None:
        """Buffer rows and write a chunk each time ``chunk_size`` rows are buffered.

        Args:
            ids: sample ids, new to this store and unique.
            labels: 0 (faithful) / 1 (hallucinated) per sample.
            splits: split name per sample (``None`` entries or ``None``: no split).
            features: ``{region: [n, n_features]}`` for every region of the store; a
                ``[n, n_layers, max_d_mlp]`` tensor is flattened with the layout.
            sample_hashes: content hash per sample (:func:`sample_sha256`), if known.

        Call :meth:`flush` or :meth:`close` to write the last partial chunk.
        """
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
            if isinstance(x, torch.Tensor):
                if x.ndim == 3:
                    x = layout.flatten(x)
                x = x.detach().to("cpu", torch.float32).numpy()
            x = np.asarray(x)
            if x.ndim == 3:
                x = layout.flatten(torch.from_numpy(np.ascontiguousarray(x))).numpy()
            if x.shape != (n, layout.n_features):
                raise ValueError(
                    f"region {region!r}: shape {x.shape} != ({n}, {layout.n_features})"
                )
            arrays[region] = _to_dtype(x, np.dtype(manifest["dtype"]))
        self._acquire_writer()
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
        """Flush, update the manifest's counts, drop the write lock. Reads keep working."""
        try:
            self.flush()
            if self._lock_fd is not None and self.manifest is not None:
                self.manifest["counts"] = self._counts()
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

    # ---------------------------------------------------------------- reading

    def _memmap(self, chunk: _Chunk, region: str) -> np.ndarray:
        return np.load(chunk.files[region], mmap_mode="r")

    def _select(self, split: Any = _ALL) -> list[str]:
        if split is _ALL:
            return self.ids
        return [i for i in self.ids if self._meta(i)["split"] == split]

    def _gather(self, region: str, ids: list[str], columns: slice | np.ndarray) -> np.ndarray:
        """Rows ``ids`` (in that order) of ``region``: a memmap view when they are one chunk's
        consecutive rows and ``columns`` is a slice, else a copy in RAM."""
        if region not in self.regions:
            raise KeyError(f"region {region!r} not in this store; have {list(self.regions)}")
        n_cols = (
            len(range(*columns.indices(self.layout.n_features)))
            if isinstance(columns, slice)
            else len(columns)
        )
        if not ids:
            return np.empty((0, n_cols), dtype=self.dtype)
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
        """
        ids = self._select(_ALL if split is None else split)
        x = self._gather(region, ids, self._columns(layers))
        y = np.asarray([self._meta(i)["label"] for i in ids], dtype=np.int8)
        return x, y, ids

    def split(self, name: str | None) -> FeatureSplit:
        """All regions of one split (``None``: samples without a split) as a FeatureSplit.

        Rows are sorted by id. After :meth:`compact` every region is a read-only memory map.
        """
        ids = self._select(name)
        if not ids:
            have = sorted({str(s) for s in self.splits})
            raise KeyError(f"split {name!r} has no samples in {self.path}; splits: {have}")
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
        if self.chunk_dir.is_dir():
            size = sum(p.stat().st_size for p in self.chunk_dir.iterdir() if p.is_file())
        out: dict[str, Any] = {
            "path": str(self.path),
            "dtype": self.dtype,
            "bytes": size,
            **self._counts(),
            "dataset_sha256": sha256_json(sorted(self._meta(i)["sha256"] or i for i in self._rows)),
            "compacted": self._is_compacted(),
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

        Afterwards :meth:`split` and :meth:`features` return memory maps without copying. The
        new chunks are built in ``chunks.new/`` row block by row block (never a whole split in
        RAM), then swapped in with two renames; an interrupted compaction is finished or rolled
        back on the next open.
        """
        self.flush()
        if self._is_compacted():
            return
        with self._writing():
            self._compact()

    def _compact(self) -> None:
        manifest = self._require_manifest()
        new_dir = self.path / "chunks.new"
        shutil.rmtree(new_dir, ignore_errors=True)
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
                    "sha256": _file_sha256(path),
                }
            rows = [{"id": sid, **self._meta(sid)} for sid in ids]
            self._write_sidecar(new_dir, index, rows, files)
        atomic_write_text(new_dir / "COMPLETE", "ok")
        fsync_dir(new_dir)
        os.replace(self.chunk_dir, self.path / "chunks.old")
        os.replace(new_dir, self.chunk_dir)
        fsync_dir(self.path)
        shutil.rmtree(self.path / "chunks.old", ignore_errors=True)
        (self.chunk_dir / "COMPLETE").unlink(missing_ok=True)
        self.refresh()
        self.manifest["counts"] = self._counts()  # type: ignore[index]
        self._write_manifest()

    def assign_splits(self, splits: dict[str, str | None]) -> int:
        """Change the split of stored samples (rewrites the affected sidecars atomically).

        Returns:
            The number of samples whose split changed.
        """
        self.flush()
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
        if changed_chunks:
            with self._writing():
                for pos, sc in changed_chunks.items():
                    path = self.chunk_dir / f"{self._chunks[pos].index:05d}.json"
                    atomic_write_text(path, json.dumps(sc))
        return n
