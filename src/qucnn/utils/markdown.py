"""Markdown that GitHub and MkDocs both render as written, for the reports and tables qucnn generates.

Bra-kets such as ``<f|x>`` look like HTML tags to a Markdown renderer, and a ``|`` ends a table cell: text for
a table cell goes through :func:`cell`. A report names no folder of the machine that made it: paths go
through :func:`short_path`.

Example:
    >>> "| " + cell("|<f|x>|^2") + " |"
    '| \\\\|&lt;f\\\\|x>\\\\|^2 |'
"""

from __future__ import annotations

from pathlib import PurePath


def cell(text: str) -> str:
    r"""``text`` for a Markdown table cell: ``|`` escaped, ``<`` written ``&lt;``; it renders as written.

    Example:
        >>> cell("max |<Z_a> - F|")
        'max \\|&lt;Z_a> - F\\|'
    """
    return str(text).replace("|", "\\|").replace("<", "&lt;")


def short_path(value: object) -> str:
    """An absolute path as its last component; anything else as it is.

    Example:
        >>> short_path("/home/me/runs/reproduce"), short_path("results"), short_path(None)
        ('reproduce', 'results', 'None')
    """
    text = str(value)
    path = PurePath(text)
    return (path.name or text) if path.is_absolute() else text


__all__ = ["cell", "short_path"]
