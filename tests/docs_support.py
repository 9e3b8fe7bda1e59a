"""Reading the project's markdown the way a user does: files, sections, links, code spans."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_FENCE = re.compile(r"^\s*```")


def user_docs() -> list[Path]:
    """The markdown a user reads: the README, docs/ and every driver's README."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "gateway" / "drivers").glob("*/README.md")),
    ]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks."""
    out, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, line))
    return out


def sections(text: str) -> list[tuple[str, int, str]]:
    """``(heading, first line number, body)`` of every section (fenced code kept in the body)."""
    out: list[tuple[str, int, str]] = []
    title, start, body, fenced = "", 1, [], False
    for no, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            out.append((title, start, "\n".join(body)))
            title, start, body = m.group(2), no, []
        else:
            body.append(line)
    out.append((title, start, "\n".join(body)))
    return out


def section(path: Path, heading: str) -> str:
    """The body of the section titled exactly ``heading``; fails naming the file if absent."""
    found = [body for title, _, body in sections(path.read_text()) if title == heading]
    assert found, f"{rel(path)} has no section '{heading}'"
    return found[0]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(title) for title, _, _ in sections(path.read_text()) if title}
