"""The ``qucnn`` command line. Each subcommand lives in its own module, which exposes
``register(subparsers)``; heavy imports happen inside the command, so ``qucnn --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def command_modules() -> list[str]:
    """Every module of ``qucnn.commands``: each adds one subcommand through ``register(subparsers)``."""
    from . import commands

    return sorted(f"{commands.__name__}.{m.name}" for m in pkgutil.iter_modules(commands.__path__))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="qucnn",
        description="QuCNN: quantum convolutional layers with SWAP-test filters and "
                    "entanglement-based backpropagation.",
    )
    parser.add_argument("--version", action="version", version=f"qucnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"qucnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
