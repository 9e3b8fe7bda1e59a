"""Every file the user docs point at exists in a clone of the project.

A link or a path written in the README, docs/ or a driver's README is resolved the way a reader
would: relative to the file that names it, and for code spans also from the repository's root
(``examples/demo.yaml``). A path outside the clone (``../shared/DESIGN.md``) is broken for
everyone who did not build the project in our workspace.
"""

from __future__ import annotations

import re
from pathlib import Path

from docs_support import ROOT, anchors, prose_lines, rel, user_docs

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\s]+)`")
# A code span that names a file: has a folder and a file type; globs and placeholders are not.
_PATH = re.compile(
    r"[\w.-]*/[\w./-]*\.(?:md|py|pyx|pyi|h|yaml|yml|json|sh|dbc|tflite|txt|toml|service)"
)


def _inside_clone(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def _link_problems(doc: Path, text: str | None = None) -> list[str]:
    out = []
    for no, line in prose_lines(doc.read_text() if text is None else text):
        for m in _LINK.finditer(line):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part) if file_part else doc
            where = f"{rel(doc)}:{no}: link {target}"
            if not (_inside_clone(dest) and dest.exists()):
                out.append(f"{where}: no such file in the project")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                out.append(f"{where}: {rel(dest)} has no heading with anchor #{anchor}")
        for m in _CODE.finditer(line):
            name = m.group(1)
            if not _PATH.fullmatch(name):
                continue
            candidates = [doc.parent / name, ROOT / name]
            if not any(_inside_clone(c) and c.exists() for c in candidates):
                out.append(f"{rel(doc)}:{no}: path `{name}` names no file in the project")
    return out


def test_every_link_and_path_in_the_user_docs_resolves() -> None:
    problems = [p for doc in user_docs() for p in _link_problems(doc)]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_broken_link() -> None:
    """The check itself: a missing file, a missing anchor and a path outside the clone fail."""
    doc = ROOT / "docs" / "rules.md"
    bad = "[x](nope.md) [y](../README.md#no-such-heading) `../shared/DESIGN.md` [z](../README.md)"
    problems = _link_problems(doc, bad)
    assert len(problems) == 3, problems
