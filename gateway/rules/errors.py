"""The one error type of the rule compiler, with a ``file:line:column`` location."""

from __future__ import annotations

import re

_HAS_LINE = re.compile(r":\d+$")


class RuleError(Exception):
    """A rule that cannot be compiled: bad syntax, unknown point or function, bad action.

    Parameters
    ----------
    message : str
        What was expected or what is wrong, e.g. ``"expected ')' at column 17"``.
    source : str
        ``"file:line"`` of the rule (``RuleConfig.source``) or a label such as ``"<expr>"``.
    column : int or None
        1-based column inside the offending expression or template, when there is one.
    text : str or None
        The expression or template text, for :meth:`pointer`.

    ``str(err)`` is ``"file:line:column: message"``; an expression is one line, so a source
    without a line number gets line 1.
    """

    def __init__(
        self,
        message: str,
        source: str = "",
        column: int | None = None,
        text: str | None = None,
        file_column: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.column = column
        self.text = text
        self.file_column = file_column  # column in the file when the expression's position is known
        super().__init__(self.location + ": " + message if self.location else message)

    @property
    def location(self) -> str:
        """``file:line:column`` (or as much of it as is known)."""
        if self.column is None:
            return self.source
        line = self.source if _HAS_LINE.search(self.source) else f"{self.source or '<expr>'}:1"
        return f"{line}:{self.file_column or self.column}"

    def pointer(self) -> str:
        """The offending text with a caret under the column, for CLI output ("" if unknown)."""
        if self.text is None or self.column is None:
            return ""
        return f"    {self.text}\n    {' ' * (self.column - 1)}^"
