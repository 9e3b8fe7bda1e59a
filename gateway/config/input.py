"""Limits on what the gateway reads from files: size before reading, depth before building.

Config files, rule files, rule packs, model files and reference files are written by people and
tools, and a running gateway re-reads them on every change. A wrong path (``/dev/zero``, a FIFO),
a huge file, 3000 levels of nesting or a 5000-digit number must end in a clear message, never in
unbounded memory, a hang, or a RecursionError/ValueError out of the reload. So:

- only regular files are read (opened non-blocking, so a FIFO cannot hang the open), with a
  bounded read: at most ``limit`` bytes, checked against ``fstat`` and again while reading;
- YAML nesting depth and node count (aliases expanded, cycles refused) are checked while the
  node tree is composed, before any value is constructed;
- numbers are refused by the length of their text before ``int()`` sees them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

#: Largest config, rule or pack file read (bytes).
MAX_FILE_BYTES = 2 << 20
#: Largest total of all files of one config load (the config and every rule file, packs
#: counted after parameter substitution).
MAX_TOTAL_BYTES = 8 << 20
#: Deepest YAML nesting accepted (a config needs about 8).
MAX_DEPTH = 64
#: Most YAML nodes in one file, counting every use of an alias as a copy of its target
#: (the pure-Python composer takes about 5 s and 150 MB for 200k on a desktop CPU).
MAX_NODES = 200_000
#: Most issues collected in one load (each costs memory and a line of output).
MAX_ISSUES = 1000
#: Longest text of an integer or float scalar (int64 needs 20 digits).
MAX_NUMBER_CHARS = 64

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


class InputError(ValueError):
    """A file that is not read: what it is, and what to do (the message says both)."""


def read_bounded(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises :class:`FileNotFoundError` for a missing file (callers word that themselves) and
    :class:`InputError` for everything else that keeps it from being read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
            raise InputError(f"{what} {path} is {kind}; only regular files are read")
        if st.st_size > limit:
            raise InputError(_too_big(what, path, st.st_size, limit))
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise InputError(_too_big(what, path, total, limit))
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int = MAX_FILE_BYTES, what: str = "file") -> str:
    """:func:`read_bounded`, decoded as UTF-8 (an :class:`InputError` names the bad byte)."""
    data = read_bounded(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{what} {path} is not UTF-8 text ({exc.reason} at line {line}, byte {exc.start}); "
            "save it as UTF-8"
        ) from None


def file_problem(path: str, what: str) -> str | None:
    """Why ``path`` cannot be read as a ``what`` file (missing, not a regular file), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{what} not found: {path}"
    except OSError as exc:
        return f"cannot read {what} {path}: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"{what} {path} is not a regular file; only regular files are read"
    return None


def _too_big(what: str, path: str | Path, size: int, limit: int) -> str:
    return (
        f"{what} {path} has {size} bytes or more; at most {limit} are read (is it the right "
        "file? split large rule sets into several rule files)"
    )


_CYCLE = "an alias refers to a node that contains it (a cycle); an anchor cannot contain itself"


class LimitError(ComposerError):
    """The YAML text exceeds a limit; carries the mark of where."""


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses deep nesting and alias blow-ups as it goes.

    The composer recurses once per nesting level; the check runs before each level is entered,
    so 3000 ``[`` never reach Python's recursion limit.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:  # type: ignore[override]
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise LimitError(None, None, f"more than {MAX_NODES} values in one file (split it into rule files)",
                             self.peek_event().start_mark)  # fmt: skip
        if self.check_event(AliasEvent):
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels (a config needs about 8; look for runaway brackets)",
                                 self.peek_event().start_mark)  # fmt: skip
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def compose(text: str) -> Node | None:
    """The node tree of ``text`` within the limits; raises yaml errors (LimitError included)."""
    loader = BoundedLoader(text)
    try:
        root: Node | None = loader.get_single_node()
    finally:
        loader.dispose()
    if root is not None:
        check_expansion(root)
    return root


def check_expansion(root: Node) -> None:
    """Refuse alias cycles and trees that aliases expand past :data:`MAX_NODES` nodes.

    Anchors let a 1 KB file name a node a billion times over (and ``<<`` merges are walked
    once per use); the size is counted once per distinct node, without recursion.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_NODES:
                raise LimitError(None, None, f"aliases expand this to more than {MAX_NODES} "
                                 "values; use fewer nested anchors", node.start_mark)  # fmt: skip
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_path:
            raise LimitError(None, None, _CYCLE, node.start_mark)  # fmt: skip
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise LimitError(None, None, _CYCLE, child.start_mark)  # fmt: skip
            if id(child) not in size:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []
