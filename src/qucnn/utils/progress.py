"""Whether to draw progress bars: on a terminal yes, in a redirected log no (a bar redraws itself with ``\\r``,
which a log file keeps as one long line per update), unless the user asked for one or the other.

The command line's ``--progress`` / ``--no-progress`` set the process-wide choice with :func:`set_progress`;
library code asks :func:`show_progress`, passing its own ``progress=`` argument when it has one.

Example:
    >>> set_progress(False)
    >>> show_progress()
    False
    >>> show_progress(True)  # an explicit request wins
    True
    >>> set_progress(None)  # back to: bars only on a terminal
"""

from __future__ import annotations

import sys
from typing import TextIO

_CHOICE: bool | None = None


def set_progress(choice: bool | None) -> None:
    """``True``: bars everywhere; ``False``: none; ``None`` (the default): bars only when stderr is a terminal."""
    global _CHOICE
    if choice is not None and not isinstance(choice, bool):
        raise TypeError(f"progress must be True, False or None, got {choice!r}")
    _CHOICE = choice


def show_progress(requested: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether a progress bar should be drawn: ``requested`` if given, else the choice of :func:`set_progress`,
    else whether ``stream`` (default stderr) is a terminal."""
    if requested is not None:
        return bool(requested)
    if _CHOICE is not None:
        return _CHOICE
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


__all__ = ["set_progress", "show_progress"]
