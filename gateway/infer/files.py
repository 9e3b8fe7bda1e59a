"""Model files the cloud sends (``update_model``): stored under ``<data_dir>/models`` only.

The file name is built here from a validated model name and hash, never taken from the peer.
``<data_dir>/models`` is opened with ``O_NOFOLLOW`` and every file is created relative to that
directory descriptor, so neither a symlinked folder nor a symlink planted at the target name can
redirect a write outside it. Files are written to a temporary name, fsync'd and renamed, so a
crash never leaves a half-written model under its final name. Per model, the running file and the
one before it are kept (for a manual rollback); older ones and rejected ones are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from pathlib import Path

_log = logging.getLogger("gateway.infer")

#: What a stored model file is called: ``<model>-<first 16 hex digits of its sha256>.tflite``.
_STORED = re.compile(r"(?P<model>[A-Za-z_][A-Za-z0-9_]*)-[0-9a-f]{16}\.(tflite|reference\.json)")
_TMP = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*-[0-9a-f]{16}\.[a-z.]+\.tmp")


class ModelFileError(OSError):
    """The models folder cannot be used (a symlink, not a directory) or a write failed."""


def stored_name(model: str, sha256: str, suffix: str = ".tflite") -> str:
    """The file name of a model version; ``model`` must already be a valid identifier."""
    return f"{model}-{sha256[:16]}{suffix}"


class ModelFiles:
    """The ``models`` folder under a data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.folder = Path(data_dir) / "models"

    def _open_dir(self) -> int:
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.folder, 0o750)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ModelFileError(f"cannot create {self.folder}: {exc.strerror}") from None
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if os.path.islink(self.folder):
                raise ModelFileError(
                    f"{self.folder} is a symlink; model files are only written into a real "
                    "directory under data_dir: replace the link with a directory"
                ) from None
            raise ModelFileError(f"cannot open {self.folder}: {exc.strerror}") from None
        return fd

    def write(self, name: str, data: bytes) -> str:
        """Store ``data`` as ``name`` (a :func:`stored_name`) atomically; the path written."""
        if not _STORED.fullmatch(name):
            raise ValueError(f"not a stored model file name: {name!r}")
        dfd = self._open_dir()
        tmp = f".{name}.tmp"
        try:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640,
                         dir_fd=dfd)  # fmt: skip
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            with contextlib.suppress(OSError):  # not every filesystem syncs a directory
                os.fsync(dfd)
        except OSError as exc:
            _unlink(dfd, tmp)
            raise ModelFileError(f"cannot write {self.folder / name}: {exc.strerror}") from None
        finally:
            os.close(dfd)
        return str(self.folder / name)

    def remove(self, *names: str) -> None:
        """Remove stored files (rejected versions); missing ones are fine, failures logged."""
        if not self.folder.is_dir():
            return
        try:
            dfd = self._open_dir()
        except ModelFileError as exc:
            _log.warning("model files not removed: %s", exc)
            return
        try:
            for name in names:
                if _STORED.fullmatch(name):
                    _unlink(dfd, name)
        finally:
            os.close(dfd)

    def prune(self, model: str, keep: set[str]) -> list[str]:
        """Remove ``model``'s stored files other than ``keep`` (names), and stale temp files."""
        if not self.folder.is_dir():
            return []
        try:
            dfd = self._open_dir()
        except ModelFileError as exc:
            _log.warning("old model files not removed: %s", exc)
            return []
        removed = []
        try:
            entries = os.listdir(dfd)
        except OSError as exc:
            _log.warning("old model files not removed: %s", exc.strerror)
            entries = []
        try:
            for entry in entries:
                m = _STORED.fullmatch(entry)
                stale_tmp = _TMP.fullmatch(entry) is not None
                if (m and m["model"] == model and entry not in keep) or stale_tmp:
                    try:
                        st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                        _unlink(dfd, entry)
                        removed.append(entry)
        finally:
            os.close(dfd)
        return removed


def _unlink(dfd: int, name: str) -> None:
    """Best effort: a file that cannot be removed is logged, never an error of the command."""
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("cannot remove model file %s: %s", name, exc.strerror)
