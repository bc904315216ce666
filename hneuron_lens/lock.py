"""An exclusive, non-blocking write lock on a file, with a record of who holds it.

:class:`WriteLock` is what makes "one writer at a time" true for an
:class:`~hneuron_lens.store.ActivationStore` (``STORE/.lock``).

Rules (documented in the README's "Reliability" section):

* The lock is ``flock(2)`` on the lock file: exclusive, per open file, never waited for (a second
  writer is told at once who holds it). The kernel releases it when its holder exits in any way,
  SIGKILL included, so on a local disk a lock never outlives its writer and never needs breaking.
* While held, the file records the holder as JSON: pid, host name and start time (for messages,
  and for the rule below). Releasing empties the record.
* **Stale-lock rule**, for file systems without ``flock`` (``ENOLCK`` / ``EOPNOTSUPP`` on some network
  mounts) or platforms without ``fcntl``: the record alone decides. An empty record is free; a record
  from this host whose pid no longer runs is stale and is taken over with a warning; a record from
  another host is honoured (its pid cannot be checked from here) until a person removes the file.

Example:
    >>> import tempfile, pathlib
    >>> lock = WriteLock(pathlib.Path(tempfile.mkdtemp()) / ".lock")
    >>> lock.try_acquire() is None, lock.held
    (True, True)
    >>> other = WriteLock(lock.path)
    >>> other.try_acquire()["pid"] == lock.record()["pid"]
    True
    >>> lock.release(); other.try_acquire() is None
    True
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

try:  # POSIX advisory locks; elsewhere only the record is used (the stale-lock rule)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class WriteLock:
    """An exclusive lock on ``path`` (created if missing), held by this object until released.

    Args:
        path: the lock file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def record(self) -> dict[str, Any]:
        """The holder record this process writes: pid, host and start time."""
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            raw = os.pread(fd, 4096, 0)
            rec = json.loads(raw.decode()) if raw.strip() else {}
        except (OSError, ValueError):
            rec = {}
        return rec if isinstance(rec, dict) else {}

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lock without waiting. Returns ``None`` when taken (or already held by this
        object), else the holder's record (``{"pid": "?", "host": "?"}`` if it has none yet)."""
        if self._fd is not None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = self._take(fd)
            if holder is not None:
                os.close(fd)
                return holder
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.record()).encode(), 0)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        self._fd = fd
        return None

    def _take(self, fd: int) -> dict[str, Any] | None:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                return self._read(fd) or {"pid": "?", "host": "?"}
            except OSError as err:
                if err.errno not in _NO_FLOCK:
                    raise
        return self._stale_rule(fd)

    def _stale_rule(self, fd: int) -> dict[str, Any] | None:
        """Without flock: the holder's record, unless it is empty or stale (module docstring)."""
        rec = self._read(fd)
        if not rec:
            return None
        if rec.get("host") == socket.gethostname():
            try:
                pid = int(rec.get("pid", -1))
            except (TypeError, ValueError):
                pid = -1
            if pid == os.getpid() or pid <= 0 or not _pid_alive(pid):
                logger.warning("taking over the stale lock %s (pid %s is gone)", self.path, pid)
                return None
        return rec

    def release(self) -> None:
        """Empty the record and release the lock (no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # an empty record: nobody holds it
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
