"""One gateway process per data directory: an exclusive ``flock`` held for the process lifetime.

Two processes on one queue file interleave their sequence numbers and acks (constraint errors,
negative depth, lost readings). ``flock`` is released by the kernel when the process dies, even by
SIGKILL, so a crashed gateway never leaves a stale lock behind; the lock file keeps the holder's
pid only to name it in the refusal.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

LOCK_NAME = ".gateway.lock"


class DirLocked(RuntimeError):
    """Another process holds the directory, or the lock could not be taken (the message says)."""


class DirLock:
    """Exclusive locks on ``dirs`` (duplicates and nesting-equal paths are locked once)."""

    def __init__(self, dirs: Iterable[str | os.PathLike[str]]) -> None:
        seen: dict[str, Path] = {}
        for d in dirs:
            p = Path(d).resolve()
            seen.setdefault(str(p), p)
        self.dirs = list(seen.values())
        self._fds: list[int] = []

    def acquire(self) -> DirLock:
        """Take every lock or none; raises :class:`DirLocked` naming the holder's pid."""
        try:
            for d in self.dirs:
                self._fds.append(_lock(d))
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing the descriptor drops the flock
        self._fds.clear()

    @property
    def held(self) -> bool:
        return bool(self._fds)


def _lock(d: Path) -> int:
    path = d / LOCK_NAME
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        writable = True
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES) or not path.exists():
            raise DirLocked(
                f"cannot lock {d} ({exc.strerror}): the gateway needs a directory it can write "
                f"for its state; fix its owner/mode or mount, or set gateway.data_dir / "
                f"uplink.queue elsewhere"
            ) from None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # still lockable, if not writable
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise DirLocked(
                f"{d} is in use by another gateway process (pid {holder or 'unknown'}, lock file "
                f"{path}): two gateways on one queue lose data. Stop that process first, or give "
                f"this one its own gateway.data_dir and uplink.queue"
            ) from None
        raise DirLocked(f"cannot lock {path}: {exc.strerror}") from None
    if writable:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
