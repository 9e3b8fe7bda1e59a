"""What a failed load carries: every issue, each with file:line:column and key path."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file; ``line`` and ``column`` are 1-based, 0 when unknown."""

    file: str
    line: int
    column: int
    path: str  # key path such as "devices[0].points[2].type"; "" for file-level problems
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        where += f":{self.column}" if self.line and self.column else ""
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config that cannot be used; carries every issue found in one pass.

    ``unreadable`` is True when the main file itself could not be read or parsed as YAML
    (``gateway check`` exits 2 then, 1 for an invalid but readable config).
    """

    def __init__(self, issues: Iterable[ConfigIssue], *, unreadable: bool = False) -> None:
        self.issues = list(issues)
        self.unreadable = unreadable
        super().__init__("\n".join(str(issue) for issue in self.issues))


def format_issues(err: ConfigError | Iterable[ConfigIssue]) -> str:
    """One issue per line: ``file:line:column: key.path: message``."""
    issues = err.issues if isinstance(err, ConfigError) else err
    return "\n".join(str(issue) for issue in issues)


def as_warning(issue: ConfigIssue) -> ConfigIssue:
    """The same issue shown as ``file:line:column: warning: key.path: message``."""
    where = f"{issue.path}: " if issue.path else ""
    return dataclasses.replace(issue, path="", message=f"warning: {where}{issue.message}")
