"""The ``qucnn`` command line. Each subcommand lives in its own module of this package, which exposes
``register(subparsers)``; :data:`COMMANDS` lists them in the order ``qucnn --help`` shows.

Errors the user can fix (:class:`~qucnn.utils.checks.UsageError`: a bad option, a missing file or extra, an
unwritable output folder) print one line and exit with status 2; Ctrl-C prints one line (with how to resume,
where the command can) and exits with 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..utils.checks import UsageError
from . import analyze, bench, circuits, demo, noise, reproduce, train

COMMANDS = (reproduce, train, bench, circuits, noise, analyze, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``qucnn`` argument parser, with one subcommand per module of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="qucnn",
        description="QuCNN: quantum convolutional layers with SWAP-test filters, their quantum gradient "
                    "estimators (parameter shift, the paper's entanglement-based Eq. 17, sampled) and shots.",
    )
    parser.add_argument("--version", action="version", version=f"qucnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``qucnn ARGV`` (default ``sys.argv[1:]``) and return its exit status (0, 2 for a usage error, 130
    for Ctrl-C).

    Example:
        main(["train", "--epochs", "1", "--out", "results/try"])
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what a resume hint repeats
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"qucnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        print(f"\nqucnn {args.command}: interrupted" + (f"; {hint(args)}" if hint else ""), file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]
