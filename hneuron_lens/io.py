"""File helpers shared by every module that saves an artefact: one family, one set of rules.

Rules (what the library promises about files; the README's "Reliability" section lists them):

* **Atomic writes.** :func:`atomic_write_text` / :func:`atomic_write_bytes` /
  :func:`atomic_write_json` write a temp file beside the target, fsync it and rename it into
  place; :func:`write_dir_atomically` does the same for a whole directory. Readers see the old
  version or the new one, never half of one.
* **Artefacts say what they are.** Every directory the library writes carries a marker file,
  ``.hneuron_lens.json`` (``{"kind": ..., "library_version": ..., "created": ...}``);
  :func:`artefact_kind` reads it, and recognises directories written before the marker existed by
  their layout (:data:`KINDS`).
* **Never replace what the library did not create.** :func:`check_output_dir` accepts a missing
  or empty directory, or one holding an artefact of the same kind (to resume it, or to replace it
  when the caller passed ``overwrite``); anything else is an :class:`~hneuron_lens.errors.OutputError`,
  with or without ``overwrite``. :func:`check_output_file` is the same rule for one file.
* **User-given names stay inside the output directory.** :func:`safe_child` joins a name that
  came from the user (a neuron-set name, a split name) to a directory and refuses ``..``, path
  separators, absolute paths and anything that resolves outside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hneuron_lens.errors import OutputError

MARKER = ".hneuron_lens.json"
"""Name of the file that says which kind of artefact a directory holds."""


def library_version() -> str:
    """The hneuron_lens version stamped into every saved artefact."""
    from hneuron_lens import __version__

    return str(__version__)


def sha256_json(obj: Any) -> str:
    """sha256 of ``obj`` serialised as canonical JSON (sorted keys; unknown types as ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def to_jsonable(value: Any) -> Any:
    """Normalise tuples to lists etc., so a value compares equal after a JSON round trip."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` for text from a user's file: nesting deeper than Python's recursion limit
    (a line of a million ``[``) raises ``json.JSONDecodeError`` like any other malformed JSON,
    instead of ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deeply to parse", "", 0) from None


# --------------------------------------------------------------------------------------------
# atomic files


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it into place.

    Readers see the old file or the new one, never a partial write; a crash leaves at most a
    ``.<name>.*.tmp`` file beside the target (never the target half-written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1) -> None:
    """:func:`atomic_write_text` of ``json.dumps(obj)`` (numpy scalars and paths as text)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    return str(o)


# --------------------------------------------------------------------------------------------
# artefact kinds


def _read_json(path: Path) -> Any:
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_store(path: Path) -> bool:
    m = _read_json(path / "manifest.json")
    if isinstance(m, dict) and {"fingerprint", "layout", "regions"} <= set(m):
        return True
    chunks = path / "chunks"
    return chunks.is_dir() and any(p.name[:5].isdigit() for p in chunks.glob("*.json"))


def _is_probe(path: Path) -> bool:
    m = _read_json(path / "probe.json")
    return isinstance(m, dict) and m.get("format") == "hneuron_lens.SparseProbe"


def _is_run(path: Path) -> bool:
    m = _read_json(path / "manifest.json")
    if isinstance(m, dict) and {"config", "funnel"} <= set(m):
        return True
    head = path / "responses.jsonl"
    if not head.is_file():
        return False
    with open(head, "rb") as f:
        first = f.readline(1 << 20)
    try:
        return loads_json(first).get("type") == "header"
    except (ValueError, AttributeError):
        return False


def _is_sweep(path: Path) -> bool:
    m = _read_json(path / "report.json")
    if isinstance(m, dict) and {"alphas", "outcomes"} <= set(m):
        return True
    return any(path.glob("*/alpha=*.jsonl")) or any(path.glob("*/neurons.json"))


KINDS: dict[str, Callable[[Path], bool]] = {
    "activation_store": _is_store,
    "probe": _is_probe,
    "run": _is_run,
    "sweep": _is_sweep,
}
"""Directory kinds the library writes, each with how to recognise one written before the
``.hneuron_lens.json`` marker existed. Other modules may pass other kinds (a new artefact): such
directories are recognised by their marker only."""


def artefact_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind of artefact directory ``path`` holds (``None``: not one the library wrote).

    Reads the ``.hneuron_lens.json`` marker; without one, recognises the layouts of
    :data:`KINDS` (directories written by earlier versions).
    """
    path = Path(path)
    if not path.is_dir():
        return None
    marker = _read_json(path / MARKER)
    if isinstance(marker, dict) and isinstance(marker.get("kind"), str):
        return str(marker["kind"])
    for kind, looks_like in KINDS.items():
        if looks_like(path):
            return kind
    return None


def write_marker(path: str | os.PathLike[str], kind: str) -> None:
    """Write ``path/.hneuron_lens.json`` saying that ``path`` holds an artefact of ``kind``."""
    atomic_write_json(
        Path(path) / MARKER,
        {
            "kind": kind,
            "library_version": library_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def _a(kind: str) -> str:
    """``"an activation store"``, ``"a probe"``: a kind's name with its article."""
    name = kind.replace("_", " ")
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _listing(path: Path, n: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def check_output_dir(
    path: str | os.PathLike[str],
    kind: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    option: str = "--out",
) -> bool:
    """Check that ``path`` may receive an artefact directory of ``kind``; change nothing.

    Args:
        path: the output directory.
        kind: what will be written there (``"probe"``, ``"activation_store"``, ...).
        overwrite: an existing artefact of the same kind may be replaced.
        resume: an existing artefact of the same kind is continued (stores, runs, sweeps).
        option: the CLI option that named ``path``, for the message.

    Returns:
        ``True`` when ``path`` already holds an artefact of ``kind``, ``False`` when it is
        missing or an empty directory.

    Raises:
        OutputError: ``path`` is a file; or a non-empty directory of another kind or of no
            kind the library knows (never replaced, whatever ``overwrite`` says); or an
            artefact of the same kind while neither ``overwrite`` nor ``resume`` is set.
    """
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_dir():
        raise OutputError(
            f"{option} is an existing file, not a directory",
            file=path,
            hint="give a new directory (or an empty one)",
        )
    if not any(path.iterdir()):
        return False
    found = artefact_kind(path)
    if found == kind:
        if overwrite or resume:
            return True
        raise OutputError(
            f"{option} already holds {_a(kind)}",
            file=path,
            hint="pass --overwrite to replace it, or choose another directory",
        )
    what = _a(found) if found else f"files this library did not write ({_listing(path)})"
    raise OutputError(
        f"{option} is not empty and holds {what}",
        file=path,
        hint=f"choose a new or empty directory; it is never replaced by {_a(kind)}"
        + (", even with --overwrite" if overwrite else ""),
    )


def claim_output_dir(path: str | os.PathLike[str], kind: str, *, option: str = "--out") -> Path:
    """Create (or accept) a resumable artefact directory of ``kind`` and mark it.

    :func:`check_output_dir` with ``resume=True``, then ``mkdir`` and the marker file. For
    directories written in place over time (activation stores, run and sweep directories).
    """
    path = Path(path)
    check_output_dir(path, kind, resume=True, option=option)
    path.mkdir(parents=True, exist_ok=True)
    marker = _read_json(path / MARKER)
    if not (isinstance(marker, dict) and marker.get("kind") == kind):
        write_marker(path, kind)
    return path


@contextlib.contextmanager
def write_dir_atomically(
    path: str | os.PathLike[str], kind: str, *, overwrite: bool = False, option: str = "--out"
) -> Iterator[Path]:
    """Build an artefact directory in a temp sibling, then swap it into place in one rename.

    Yields the temp directory to fill. On success it gets the marker and replaces ``path``
    (an old artefact of the same kind is moved aside, then deleted once the new one is in
    place); on an exception the temp directory is removed and ``path`` is untouched. The checks
    of :func:`check_output_dir` run before anything is written.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "probe"
        >>> with write_dir_atomically(target, "probe") as tmp:
        ...     _ = (tmp / "probe.json").write_text("{}")
        >>> artefact_kind(target)
        'probe'
    """
    path = Path(path)
    check_output_dir(path, kind, overwrite=overwrite, option=option)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        write_marker(tmp, kind)
        fsync_dir(tmp)
        _swap_dir(tmp, path, kind, overwrite=overwrite, option=option)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_dir(tmp: Path, path: Path, kind: str, *, overwrite: bool, option: str) -> None:
    """Move the finished ``tmp`` to ``path``; an existing ``path`` must be empty or ``kind``."""
    check_output_dir(path, kind, overwrite=overwrite, option=option)  # again: it may have changed
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    if not path.exists():
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / "x")
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / "x", path)
        raise
    finally:
        fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def check_output_file(
    path: str | os.PathLike[str],
    kind: str,
    *,
    recognise: Callable[[Path], bool],
    overwrite: bool = False,
    regenerate: bool = False,
    option: str = "--out",
) -> bool:
    """Check that the file ``path`` may be (re)written with an artefact of ``kind``.

    Args:
        path: the output file.
        kind: what will be written (for the message): ``"evaluation report"``...
        recognise: tells whether an existing file is such an artefact (reads, never writes).
        overwrite: the user asked to replace an existing artefact of this kind.
        regenerate: the file is derived from another artefact and rewritten on every run
            (e.g. ``responses.judged.jsonl`` beside ``responses.jsonl``): replace it when it is
            of this kind even without ``overwrite``.
        option: the CLI option that named ``path``, for the message.

    Returns:
        ``True`` when an existing file will be replaced.

    Raises:
        OutputError: ``path`` is a directory; or a file that is not a ``kind`` (never
            replaced); or a ``kind`` while neither ``overwrite`` nor ``regenerate`` is set.
    """
    path = Path(path)
    if not path.exists():
        return False
    if path.is_dir():
        raise OutputError(
            f"{option} is a directory", file=path, hint=f"give a file name for the {kind}"
        )
    if path.stat().st_size == 0:
        return True
    if not recognise(path):
        raise OutputError(
            f"{option} exists and is not a {kind} written by this library",
            file=path,
            hint="choose another file name; it is never replaced, even with --overwrite",
        )
    if overwrite or regenerate:
        return True
    raise OutputError(
        f"{option} already exists",
        file=path,
        hint="pass --overwrite to replace it, or choose another file name",
    )


def json_object_with(*keys: str) -> Callable[[Path], bool]:
    """A ``recognise`` function for :func:`check_output_file`: a JSON object with ``keys``."""

    def recognise(path: Path) -> bool:
        data = _read_json(path)
        return isinstance(data, dict) and set(keys) <= set(data)

    return recognise


# --------------------------------------------------------------------------------------------
# names from the user


def safe_child(root: str | os.PathLike[str], *names: str, what: str = "name") -> Path:
    """``root / name / ...`` for names that came from the user, checked to stay inside ``root``.

    Each name must be one plain path component: not empty, not ``.`` or ``..``, without ``/``,
    ``\\`` or NUL, not absolute, not starting with ``~``. The joined path is also resolved
    (symlinks included) and must lie inside ``root`` resolved.

    Raises:
        OutputError: naming the bad name and what to do.

    Example:
        >>> safe_child("/tmp/sweep", "h_neurons").as_posix()
        '/tmp/sweep/h_neurons'
    """
    root = Path(root)
    for name in names:
        bad = (
            not isinstance(name, str)
            or name.strip() in ("", ".", "..")
            or any(c in name for c in ("/", "\\", "\x00"))
            or name.startswith("~")
            or Path(name).is_absolute()
        )
        if bad:
            raise OutputError(
                f"{what} {name!r} cannot be used as a file name",
                file=root,
                hint="use letters, digits, '-', '_' or '.', without path separators or '..'",
            )
    out = root.joinpath(*names)
    base = root.resolve()
    if not out.resolve().is_relative_to(base):
        raise OutputError(
            f"{what} {'/'.join(names)!r} resolves outside {root}",
            file=root,
            hint="remove the symbolic link or choose another name",
        )
    return out
