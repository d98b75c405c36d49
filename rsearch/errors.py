"""The one exception family users see: a message that names the problem, printed as one line by the CLI."""
from __future__ import annotations


class RsearchError(Exception):
    """Bad input or state the user can act on. The CLI prints `rsearch: <message>` and exits 2."""


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error's message (its type's name when the message is empty), cut to
    `limit` characters. Never raises, whatever `str(e)` does: the one formatter every handler uses."""
    try:
        text = e if isinstance(e, str) else str(e)
    except Exception:  # a broken __str__ must not hide the error being reported
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        return lines[0][:limit]
    return e.__class__.__name__ if not isinstance(e, str) else "error"
