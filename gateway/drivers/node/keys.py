"""Node key files: one secret per node, referenced from the config (``node.key_file``).

A key file holds the key as hex (32 to 128 hex digits: 16 to 64 bytes; 32 bytes from
``new_node_key``), optionally after ``#`` comment lines. The same bytes go onto the node
(docs/node-frame.md). A file other users could read or change is refused: the key is all that
tells a node's frames from anyone else's.

``python -m gateway.drivers.node.keys new FILE`` writes a fresh key (mode 0600) and prints the
line to put on the node.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys

from gateway.impl import node_frame as nf

MAX_FILE = 4096


class NodeKeyError(ValueError):
    """A key file that cannot be used; the message says which and what to do."""


def load_node_key(path: str | os.PathLike[str]) -> bytes:
    """The key in ``path``; NodeKeyError if missing, unreadable, open to others or malformed."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise NodeKeyError(
            f"{path}: cannot read the node key ({exc.strerror}); create one with "
            f"`python -m gateway.drivers.node.keys new {path}`"
        ) from None
    if not stat.S_ISREG(mode) or len(data) > MAX_FILE:
        raise NodeKeyError(f"{path}: not a node key file (a small file of hex digits)")
    if mode & 0o007 or mode & 0o020:
        raise NodeKeyError(
            f"{path}: other users can read or change this node key (mode {mode & 0o777:o}); "
            f"`chmod 600 {path}`"
        )
    text = "".join(
        line.strip()
        for line in data.decode("ascii", "replace").splitlines()
        if not line.lstrip().startswith("#")
    )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if not nf.KEY_MIN <= len(key) <= nf.KEY_MAX:
        raise NodeKeyError(
            f"{path}: a node key is {2 * nf.KEY_MIN} to {2 * nf.KEY_MAX} hex digits "
            f"({nf.KEY_MIN} to {nf.KEY_MAX} bytes); this file does not hold one"
        )
    return key


def new_node_key(path: str | os.PathLike[str]) -> bytes:
    """Write a fresh 32-byte key to ``path`` (mode 0600; an existing file is not replaced)."""
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# node key (docs/node-frame.md); keep it secret\n{key.hex()}\n")
    return key


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "new":
        print("usage: python -m gateway.drivers.node.keys new FILE", file=sys.stderr)
        return 2
    try:
        key = new_node_key(argv[1])
    except OSError as exc:
        print(f"{argv[1]}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {argv[1]}; on the node: gwnode.Node(..., key=bytes.fromhex('{key.hex()}'))")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
