"""Module paths of qucnn 0.1, kept importable for one release with a ``DeprecationWarning``.

0.2 moved the modules into layers (``core``, ``backends``, ``nn``, ``train``, ``cli``); ``import
qucnn.layer`` still gives :mod:`qucnn.nn.layer`, and so on. ``qucnn.fastpath`` and ``qucnn.fastconv`` are
gone: their switch is now a choice of backend (``backend="reference"``) and a route policy of the torch
backend (:class:`qucnn.backends.RoutePolicy`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

#: Old module -> new module.
MOVED = {
    "qucnn.gates": "qucnn.core.gates",
    "qucnn.simulator": "qucnn.core.simulator",
    "qucnn.encoding": "qucnn.core.encoding",
    "qucnn.ansatz": "qucnn.core.ansatz",
    "qucnn.swap_test": "qucnn.core.swap_test",
    "qucnn.layer": "qucnn.nn.layer",
    "qucnn.gradients": "qucnn.nn.gradients",
    "qucnn.models": "qucnn.nn.models",
    "qucnn.training": "qucnn.train",
    "qucnn.training_loop": "qucnn.train.loop",
    "qucnn.training_report": "qucnn.train.report",
    "qucnn.checkpoint": "qucnn.train.checkpoint",
    "qucnn.distributed": "qucnn.train.distributed",
    "qucnn.devices": "qucnn.utils.devices",
    "qucnn.plotting": "qucnn.utils.plotting",
    "qucnn.commands": "qucnn.cli",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads the new module in its place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in qucnn 0.3", DeprecationWarning,
                      stacklevel=3)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # the import system overwrites it with the alias's
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._specs[module.__spec__.name]


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())


__all__ = ["MOVED", "install"]
