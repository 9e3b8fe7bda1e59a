"""What the durable queue checks so that it never loses, mangles or strands records silently.

* **Errors are told apart.** A file that is not a queue (not SQLite, malformed pages, failed
  ``quick_check``, unknown schema version) is :class:`QueueCorrupt` and may be quarantined. A file
  the process cannot open, read or write (permissions, read-only filesystem, I/O error, locked)
  is :class:`QueueUnavailable`: nothing is moved, the gateway refuses to start and says what to
  fix. Quarantining a healthy file the process merely could not read would strand its records.
* **Loss is detected.** Deleting the write-ahead log after a crash (or restoring an old copy of
  the file) silently takes back records that were already accepted. Two local signals catch it
  at open: a ``-shm`` file without its ``-wal`` (SQLite removes both together, so the log was
  deleted), and the high-water marker ``<queue>.hw``: the next sequence number per stream,
  fsync'd at most :data:`MARK_INTERVAL` after each commit. A file behind its marker lost at least
  the seqs in between; they are announced as a gap (reason ``lost``) and never reused. The cloud's
  WELCOME catches the rest (see client.py).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import sqlite3
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.uplink.queue_schema import SCHEMA, SCHEMA_VERSION, upgrade

if TYPE_CHECKING:
    from gateway.uplink.queue import DurableQueue, Quota

_log = logging.getLogger(__name__)

#: Seconds after a commit by which the high-water marker is fsync'd (the loss count it can give
#: is exact up to this much of the newest data).
MARK_INTERVAL = 1.0


class QueueError(RuntimeError):
    """The queue file is unusable or an operation contradicts it."""


class QueueCorrupt(QueueError):
    """The file is not a readable queue (not SQLite, malformed, failed quick_check, version)."""


class QueueUnavailable(QueueError):
    """The file could not be opened, read or written (permissions, read-only, I/O): never
    quarantined, because it may be perfectly healthy."""


@dataclass(frozen=True, slots=True)
class Loss:
    """Accepted records the file no longer holds, found at open.

    ``first``..``last``: the seqs known to be lost (announced as a gap); both 0 when only the
    fact is known (``detail`` says how it was found).
    """

    stream: str
    epoch: int
    first: int
    last: int
    detail: str


def _is_corruption(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


def classify(path: str, exc: sqlite3.Error) -> QueueError:
    """The right error for a failed open: corrupt only when SQLite says so."""
    if _is_corruption(exc):
        return QueueCorrupt(f"{path}: {exc}")
    name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    return QueueUnavailable(
        f"uplink queue {path}: {exc} ({name}); the file was left untouched. Check that the "
        f"gateway's user can read and write it and its directory, that the filesystem is "
        f"mounted read-write and healthy, and that no other process holds it"
    )


def check_access(path: str, parent: str) -> None:
    """Refuse early, with the OS's own reason, what SQLite would report only vaguely."""
    if os.path.exists(path):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise QueueUnavailable(
                f"uplink queue {path}: cannot open it for reading and writing: "
                f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)}); the file "
                f"was left untouched. Give the gateway's user read/write access to it (and its "
                f"directory), or point uplink.queue at another file"
            ) from None
        os.close(fd)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise QueueUnavailable(
            f"uplink queue directory {parent} is not writable (read-only filesystem or "
            f"permissions): SQLite must create {os.path.basename(path)}-wal and -shm there. "
            f"Remount it read-write, fix its owner/mode, or point uplink.queue elsewhere"
        )


def wal_deleted(path: str) -> bool:
    """A ``-shm`` without its ``-wal``: the log was deleted while holding commits (SQLite
    deletes the log before the shared-memory file, and both on a clean close)."""
    return os.path.exists(f"{path}-shm") and not os.path.exists(f"{path}-wal")


class HighWaterMarker:
    """``<queue>.hw``: the next sequence number per stream, fsync'd shortly after commits.

    A lower bound of what the queue file assigned (written after the commit, never before), so
    a file behind it lost commits. Bound to the file by its meta epoch; rewritten in place with
    a CRC, so a torn write reads as "no marker" and never as a false loss.
    """

    def __init__(self, path: str, file_epoch: int) -> None:
        self.path = path
        self.file_epoch = file_epoch
        self._fd: int | None = None
        self._dirty: dict[str, tuple[int, int]] | None = None
        self._written_at = -1e18
        self.errors = 0

    def read(self) -> dict[str, tuple[int, int]]:
        """stream -> (epoch, next_seq) as last marked; empty when absent, torn or foreign."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(1 << 20)
        except OSError:
            return {}
        body, _, tail = raw.rstrip(b"\n").rpartition(b"\n")
        try:
            if int(tail, 16) != zlib.crc32(body):
                return {}
            doc = json.loads(body)
            if doc.get("file") != self.file_epoch:
                return {}
            return {str(s): (int(e), int(n)) for s, (e, n) in doc["streams"].items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            return {}

    def note(self, streams: dict[str, tuple[int, int]]) -> None:
        """The committed state changed; written by :meth:`write_due` within MARK_INTERVAL."""
        self._dirty = streams

    def due_in(self) -> float | None:
        """Seconds until a write is due (0: now); None when there is nothing to write."""
        if self._dirty is None:
            return None
        return max(0.0, self._written_at + MARK_INTERVAL - time.monotonic())

    def write_due(self, force: bool = False) -> None:
        """Write the noted state if it is due (or ``force``); an I/O error is logged, not raised:
        the marker only sharpens loss detection, it never holds up a commit."""
        if self._dirty is None or (not force and self.due_in()):
            return
        streams, self._dirty = self._dirty, None
        body = json.dumps(
            {"file": self.file_epoch, "streams": {s: list(v) for s, v in streams.items()}},
            separators=(",", ":"),
        ).encode()
        data = body + b"\n%08x\n" % zlib.crc32(body)
        try:
            if self._fd is None:
                created = not os.path.exists(self.path)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                if created:
                    _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
            os.fdatasync(self._fd)
            self._written_at = time.monotonic()
        except OSError as exc:
            self._dirty = self._dirty or streams
            self._written_at = time.monotonic()  # retry after MARK_INTERVAL, not in a spin
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                _log.warning("uplink queue marker %s not written: %s", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_epoch() -> int:
    """A random non-zero 63-bit id (SQLite INTEGER is signed 64-bit)."""
    return secrets.randbits(63) or 1


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def peek_state(path: str, key: str) -> bytes | None:
    """Read ``key`` from the ``state`` table without opening the queue for writing (before the
    uplink starts); None if the file, the table or the key does not exist or cannot be read."""
    if not os.path.exists(path):
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        row = con.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return None if row is None else bytes(row[0])


def open_checked(
    path: str, clock: Callable[[], float], check: bool, created: bool
) -> tuple[sqlite3.Connection, dict[str, Any], HighWaterMarker, list[Loss]]:
    """Connect, check, upgrade and reconcile the file with its marker, in one transaction.

    Returns the writer connection, the meta rows, the marker and the losses found. Raises
    :class:`QueueCorrupt` or :class:`QueueUnavailable` (see :func:`classify`).
    """
    suspect_wal = not created and wal_deleted(path)
    try:
        w = connect(path)
    except sqlite3.Error as exc:
        raise classify(path, exc) from None
    try:
        if check and not created:
            result = w.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise QueueCorrupt(f"{path}: quick_check: {result and result[0]}")
        w.execute("BEGIN IMMEDIATE")
        if w.execute("SELECT 1 FROM sqlite_master WHERE name = 'streams'").fetchone():
            row = w.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = row and row[0]
            if version in (1, 2):
                upgrade(w, version)
            elif version != SCHEMA_VERSION:
                raise QueueCorrupt(
                    f"{path}: queue schema version {version!r}, "
                    f"this runtime reads version {SCHEMA_VERSION}"
                )
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                w.execute(stmt)
        rows = dict(w.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            rows = {"schema_version": SCHEMA_VERSION, "epoch": new_epoch(), "created": clock()}
            w.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows.items())
        # A command still "running" was cut off by a crash: never run it again.
        w.execute("UPDATE commands SET outcome = 'interrupted' WHERE outcome IS NULL")
        marker = HighWaterMarker(f"{path}.hw", int(rows["epoch"]))
        losses = _find_losses(w, marker, clock(), suspect_wal)
        w.execute("COMMIT")
    except sqlite3.Error as exc:
        _abort(w)
        raise classify(path, exc) from None
    except BaseException:
        _abort(w)
        raise
    for loss in losses:
        _log.critical("uplink queue %s lost accepted records: %s", path, describe(loss))
    return w, rows, marker, losses


def _abort(w: sqlite3.Connection) -> None:
    try:
        if w.in_transaction:
            w.execute("ROLLBACK")
    except sqlite3.Error:
        pass
    w.close()


def _find_losses(
    w: sqlite3.Connection, marker: HighWaterMarker, now: float, suspect_wal: bool
) -> list[Loss]:
    """Seqs the marker saw committed but the file lacks become a ``lost`` gap (never reused)."""
    known = {s: (e, n) for s, e, n in w.execute("SELECT stream, epoch, next_seq FROM streams")}
    losses: list[Loss] = []
    for stream, (epoch, marked) in sorted(marker.read().items()):
        have = known.get(stream)
        if have is not None and (have[0] != epoch or have[1] >= marked):
            continue  # another epoch: the marker may lag a rotation; the cloud's hw decides
        first = 1 if have is None else have[1]
        w.execute(
            "INSERT INTO gaps(stream, first, last, reason, ts) VALUES (?, ?, ?, 'lost', ?)",
            (stream, first, marked - 1, now),
        )
        w.execute(
            "INSERT INTO streams(stream, epoch, next_seq, acked_hw) VALUES (?, ?, ?, 0) "
            "ON CONFLICT(stream) DO UPDATE SET next_seq = excluded.next_seq",
            (stream, epoch, marked),
        )
        losses.append(
            Loss(
                stream,
                epoch,
                first,
                marked - 1,
                "are gone from the file, which is behind its "
                "high-water marker (those the cloud acked before are safe there)",
            )
        )
    if suspect_wal and not losses:
        losses.append(
            Loss("", 0, 0, 0, "its -shm file is present without its -wal: the write-ahead log "
                 "was deleted; commits since the last checkpoint may be lost")
        )  # fmt: skip
    return losses


def describe(loss: Loss) -> str:
    """One line for logs and alarms."""
    if not loss.stream:
        return loss.detail
    return (
        f"stream {loss.stream!r} epoch {loss.epoch}: seqs {loss.first}..{loss.last} {loss.detail}"
    )


def open_or_quarantine(
    path: str | os.PathLike[str],
    clock: Callable[[], float] = time.time,
    quota: Quota | None = None,
) -> tuple[DurableQueue, str | None]:
    """Open the queue; a corrupt file is moved aside (never deleted) and a fresh one started.

    Returns the queue and the quarantine path (None when the file was fine). The fresh file has
    a new epoch, so the cloud never deduplicates its records against the old history. A file
    that could not be read (:class:`QueueUnavailable`) is never moved: that error propagates.
    """
    from gateway.uplink.queue import DurableQueue

    try:
        return DurableQueue(path, clock, quota), None
    except QueueCorrupt as exc:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock()))
        dest = f"{path}.corrupt-{stamp}"
        n = 1
        while os.path.exists(dest):
            n += 1
            dest = f"{path}.corrupt-{stamp}-{n}"
        for suffix in ("", "-wal", "-shm", ".hw"):
            if os.path.exists(f"{path}{suffix}"):
                os.replace(f"{path}{suffix}", f"{dest}{suffix}")
        _log.critical("uplink queue %s is unusable (%s); quarantined as %s", path, exc, dest)
        return DurableQueue(path, clock, quota), dest
