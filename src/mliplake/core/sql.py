"""SQL text for values that cannot travel as parameters (ATTACH and LOAD paths, lists in views)."""
from __future__ import annotations

from collections.abc import Iterable


def quote(text: str) -> str:
    """A SQL string literal: ``it's`` becomes ``'it''s'``."""
    return "'" + text.replace("'", "''") + "'"


def quote_list(texts: Iterable[str]) -> str:
    """Comma-separated string literals (the inside of ``IN (...)`` or ``[...]``)."""
    return ", ".join(quote(t) for t in texts)
