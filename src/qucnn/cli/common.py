"""What every ``qucnn`` subcommand shares: the argument parser class (one-line errors that name the flags the
user typed), the ``--progress`` / ``--no-progress`` pair, and the check of path options.

Example:
    parser = QucnnParser(prog="qucnn")
    add_progress_options(parser)
    parser.parse_args(["--no-progress"]).progress
    # -> False
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

from ..utils.checks import UsageError

#: Options whose value is a path the command writes or reads; an empty value is a usage error.
PATH_OPTIONS = ("out", "json", "qasm", "data")


class QucnnParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line with a ``--help`` hint instead of the whole usage block,
    and which records the flag of every option (``limit_train`` -> ``--limit-train``) in the parsed namespace
    (``args.option_flags``) so that errors raised later can name what the user typed. Subparsers made with
    ``add_subparsers`` are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.option_flags: dict[str, str] = {}
        self.set_defaults(option_flags=self.option_flags)

    def parse_known_args(self, args=None, namespace=None):
        """``ArgumentParser.parse_known_args``, after recording the flag of every option (groups included)."""
        for action in self._actions:  # options added through groups too
            longs = [o for o in action.option_strings if o.startswith("--")]
            if longs:
                self.option_flags.setdefault(action.dest, longs[0])
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and one line: the error and where the help is."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def name_flags(message: str, flags: dict[str, str]) -> str:
    """``message`` with option names written as the flags the user typed: every ``limit_train`` (a name
    with an underscore) becomes ``--limit-train``; a one-word name (``epochs``) where it names the option: at the
    start, before ``must`` or ``(saved``, after ``needs``.

    Example:
        >>> name_flags("limit_train must be a positive int, got 0", {"limit_train": "--limit-train"})
        '--limit-train must be a positive int, got 0'
    """
    for dest, flag in sorted(flags.items(), key=lambda item: -len(item[0])):
        name = re.escape(dest)
        if "_" in dest:
            message = re.sub(rf"(?<![\w/.-]){name}(?![\w/-])", flag, message)
        else:
            message = re.sub(rf"^{name}(?=[ ,])|(?<=needs ){name}\b|(?<![\w/.-]){name}(?= must\b| \(saved)",
                             flag, message)
    return message


def check_path_options(args: argparse.Namespace) -> None:
    """A usage error for an empty path option (``--out ""``): it would write into the current folder or
    nowhere."""
    flags = getattr(args, "option_flags", {})
    for dest in PATH_OPTIONS:
        if getattr(args, dest, None) == "":
            flag = flags.get(dest, f"--{dest}")
            raise UsageError(f"{flag} must not be empty: give a path")


def add_progress_options(parser) -> None:
    """``--progress`` / ``--no-progress`` (``args.progress``: ``True``, ``False`` or ``None`` for the default,
    bars only when stderr is a terminal, so that a redirected log gets no ``\\r`` lines)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="progress bars even when stderr is not a terminal")
    group.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                       help="no progress bars (default: bars only when stderr is a terminal)")


__all__ = ["PATH_OPTIONS", "QucnnParser", "add_progress_options", "check_path_options", "name_flags"]
