"""The one exception family users see: a message that names the problem, printed as one line by the CLI."""


class RsearchError(Exception):
    """Bad input or state the user can act on. The CLI prints `rsearch: <message>` and exits 2."""
