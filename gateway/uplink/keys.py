"""CurveZMQ keys: key pairs on disk, the cloud's allow-list of gateway keys, ``gateway keys``.

Key files use pyzmq's certificate format (``NAME.key`` public, ``NAME.key_secret`` both halves,
mode 0600), so ``zmq.auth`` tools read them too. The allow-list is a directory of public key files;
the stem of each file (``gw1`` of ``gw1.key``) is the identity the cloud gives that key.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

_log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RELOAD_INTERVAL = 1.0  # seconds between checks of the allow-list directory


class KeyError_(ValueError):
    """A key file is missing, unreadable or malformed (the message names the file)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes  # Z85, 40 bytes
    secret: bytes | None


def _check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise KeyError_(f"key name {name!r}: use letters, digits, '_', '.', '-' (max 128)")
    return name


def create(directory: str | os.PathLike[str], name: str, force: bool = False) -> KeyPair:
    """Create ``NAME.key`` and ``NAME.key_secret`` in ``directory``; refuse to overwrite."""
    _check_name(name)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = d / f"{name}.key", d / f"{name}.key_secret"
    if not force and (pub.exists() or sec.exists()):
        raise KeyError_(f"{sec} already exists; pass --force to replace the key pair")
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        tpub, tsec = zmq.auth.create_certificates(tmp, name)
        os.chmod(tsec, 0o600)
        os.replace(tpub, pub)
        os.replace(tsec, sec)
    return load(sec)


def load(path: str | os.PathLike[str]) -> KeyPair:
    """Read a public (``.key``) or secret (``.key_secret``) key file."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError as exc:
        raise KeyError_(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KeyError_(f"{path}: not a key file ({exc})") from None
    if public is None or len(public) != 40:
        raise KeyError_(f"{path}: no valid public-key")
    return KeyPair(public, secret)


def load_secret(path: str | os.PathLike[str]) -> KeyPair:
    pair = load(path)
    if pair.secret is None:
        raise KeyError_(f"{path}: has no secret-key (use the .key_secret file)")
    return pair


def allow(
    public_file: str | os.PathLike[str], allow_dir: str | os.PathLike[str], name: str | None = None
) -> Path:
    """Install a gateway's public key into the allow-list as ``NAME.key`` (atomic)."""
    src = Path(public_file)
    pair = load(src)
    stem = src.name.split(".key")[0] if ".key" in src.name else src.stem
    name = _check_name(name or stem)
    d = Path(allow_dir)
    d.mkdir(parents=True, exist_ok=True)
    dst = d / f"{name}.key"
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".allow-")
    with os.fdopen(fd, "w") as f:
        f.write(
            f"# gateway {name}, added {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f'metadata\ncurve\n    public-key = "{pair.public.decode()}"\n'
        )
    os.replace(tmp, dst)
    return dst


class AllowList:
    """Public key -> gateway name, from a directory of ``NAME.key`` files; reloads on change.

    ``lookup`` re-reads the directory at most every ``RELOAD_INTERVAL`` seconds, and only when
    its listing or a file's mtime/size changed, so adding or deleting a file needs no restart.
    A malformed file is skipped with an error log (the others stay valid).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._sig: tuple[tuple[str, int, int], ...] | None = None
        self._keys: dict[bytes, str] = {}
        self._names: set[str] = set()
        self._checked = 0.0
        self.reloads = 0
        self.reload(force=True)

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return ()
        for e in entries:
            if e.name.endswith(".key") and e.is_file():
                st = e.stat()
                out.append((e.name, st.st_mtime_ns, st.st_size))
        return tuple(sorted(out))

    def reload(self, force: bool = False) -> bool:
        """Re-read the directory if it changed; True if the key set was reloaded."""
        with self._lock:
            self._checked = time.monotonic()
            sig = self._signature()
            if not force and sig == self._sig:
                return False
            keys: dict[bytes, str] = {}
            for name, _, _ in sig:
                path = self.directory / name
                try:
                    pair = load(path)
                except KeyError_ as exc:
                    _log.error("allow-list: skipping %s", exc)
                    continue
                gw = name[: -len(".key")]
                if pair.public in keys:
                    _log.error(
                        "allow-list: %s repeats the key of %s; skipped", path, keys[pair.public]
                    )
                    continue
                keys[pair.public] = gw
            self._keys, self._sig = keys, sig
            self._names = set(keys.values())
            self.reloads += 1
            _log.info("allow-list %s: %d gateway keys", self.directory, len(keys))
            return True

    def lookup(self, public_z85: bytes) -> str | None:
        """The gateway name of an allowed key, None if it is not (or no longer) allowed."""
        if time.monotonic() - self._checked >= RELOAD_INTERVAL:
            self.reload()
        return self._keys.get(public_z85)

    def has_name(self, name: str) -> bool:
        """True while a key named ``name`` is in the allow-list (revocation check per message)."""
        if time.monotonic() - self._checked >= RELOAD_INTERVAL:
            self.reload()
        return name in self._names

    def __len__(self) -> int:
        return len(self._keys)


# --- `gateway keys` ------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gateway keys new|show|allow`` on the CLI's subparsers."""
    k = sub.add_parser("keys", help="create and manage CurveZMQ keys (gateway and cloud)")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    s = ks.add_parser("new", help="create a key pair NAME.key / NAME.key_secret")
    s.add_argument("--dir", default="var/keys", help="directory for the key files")
    s.add_argument("--name", required=True, help="gateway id (or 'cloud' for the receiver)")
    s.add_argument("--force", action="store_true", help="replace an existing pair")
    s.set_defaults(fn=cmd_keys)
    s = ks.add_parser("show", help="print the public key of a key file")
    s.add_argument("file", help="NAME.key or NAME.key_secret")
    s.set_defaults(fn=cmd_keys)
    s = ks.add_parser("allow", help="add a gateway's public key to the cloud's allow-list")
    s.add_argument("file", help="the gateway's NAME.key")
    s.add_argument("--allow-dir", default="var/cloud/allowed", help="allow-list directory")
    s.add_argument("--id", default=None, help="gateway id (default: the file's name)")
    s.set_defaults(fn=cmd_keys)
    from gateway.drivers.opcua.certs import add_keys_parser as add_opcua_keys

    add_opcua_keys(ks)


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        if args.keys_command == "new":
            pair = create(args.dir, args.name, force=args.force)
            print(f"{Path(args.dir) / args.name}.key_secret  public key {pair.public.decode()}")
        elif args.keys_command == "show":
            pair = load(args.file)
            kind = "secret+public" if pair.secret else "public"
            print(f"{pair.public.decode()}  ({kind}, {args.file})")
        elif args.keys_command == "allow":
            dst = allow(args.file, args.allow_dir, args.id)
            print(f"allowed {dst.stem}: {dst} (the receiver picks it up within a second)")
    except KeyError_ as exc:
        print(f"gateway keys: {exc}", file=sys.stderr)
        return 1
    return 0
