"""The ``qucnn`` command line. Each subcommand lives in its own module of this package, which exposes
``register(subparsers)``; :data:`COMMANDS` lists them in the order ``qucnn --help`` shows.

Errors the user can fix (:class:`~qucnn.utils.checks.UsageError`: a bad option, a missing file or extra, an
unwritable output folder or one another run is writing into) print one line naming the flag and exit with
status 2, as do argparse's errors (one line and a ``--help`` hint); a run that cannot finish
(:class:`~qucnn.utils.checks.RunError`: a full disk, a diverged training) prints one line and exits with 1;
Ctrl-C prints one line (with how to resume, where the command can) and exits with 130; anything else is a
bug and keeps its traceback. Progress bars are drawn only when stderr is a terminal, unless ``--progress`` or
``--no-progress`` says otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path

from .. import __version__
from ..utils.checks import RunError, UsageError
from ..utils.files import write_error
from ..utils.outputs import claim_output_dir
from ..utils.progress import set_progress
from . import analyze, bench, circuits, demo, noise, reproduce, train
from .common import QucnnParser, check_path_options, name_flags

COMMANDS = (reproduce, train, bench, circuits, noise, analyze, demo)
#: Errors of a write that no atomic writer wrapped still end in one line (exit 1), not a traceback.
WRITE_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def build_parser() -> QucnnParser:
    """The ``qucnn`` argument parser, with one subcommand per module of :data:`COMMANDS`."""
    parser = QucnnParser(
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
    """Run ``qucnn ARGV`` (default ``sys.argv[1:]``) and return its exit status (0; 1 when the run could not
    finish, e.g. a full disk; 2 for a usage error; 130 for Ctrl-C).

    Example:
        main(["train", "--epochs", "1", "--out", "results/try"])
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's errors and --help/--version end here
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    args.argv = argv  # what a resume hint repeats
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    command = " ".join(["qucnn", args.command] + ([args.analysis] if getattr(args, "analysis", None) else []))
    set_progress(getattr(args, "progress", None))
    try:
        check_path_options(args)
        with contextlib.ExitStack() as outputs:
            for folder, option in output_folders(args):
                outputs.enter_context(claim_output_dir(folder, option))
            return int(args.func(args) or 0)
    except UsageError as err:
        print(f"{command}: error: {name_flags(str(err), args.option_flags)}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"{command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        print(f"{command}: error: {write_error(err.filename or '(unknown file)', err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        print(f"\n{command}: interrupted" + (f"; {hint(args)}" if hint else ""), file=sys.stderr)
        return 130
    finally:
        set_progress(None)


def output_folders(args) -> list[tuple[Path, str]]:
    """The folders a command writes into, with the option that named each: ``--json``'s folder (the analyses
    then leave ``--out`` alone), else ``--out``; and ``--qasm``. The command holds them for its whole run
    (:func:`~qucnn.utils.outputs.claim_output_dir`). Under torchrun only rank 0 holds them."""
    if int(os.environ.get("RANK", "0")) != 0:
        return []
    folders = []
    if getattr(args, "json", None):
        folders.append((Path(args.json).parent, "--json"))
    elif getattr(args, "out", None):
        folders.append((Path(args.out), "--out"))
    if getattr(args, "qasm", None):
        folders.append((Path(args.qasm), "--qasm"))
    return folders


__all__ = ["COMMANDS", "build_parser", "main", "output_folders"]
