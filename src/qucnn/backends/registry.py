"""Backends by name: ``QuConv2d(..., backend="torch")`` looks its backend up here.

``"triton"`` is available where Triton is installed and there is a GPU, or ``TRITON_INTERPRET=1`` asks for
Triton's interpreter; ``"aer"`` and ``"pennylane"`` where their extras are installed.

Example:
    >>> available_backends()[:2]
    ['torch', 'reference']
    >>> get_backend("torch") is get_backend("torch")
    True
    >>> from qucnn.backends import RoutePolicy
    >>> get_backend("torch", policy=RoutePolicy(route="conv")).policy.route
    'conv'
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import torch

from ..utils.checks import UsageError
from .base import Backend
from .pennylane_backend import PennyLaneBackend
from .qiskit_backend import QiskitBackend
from .reference import ReferenceBackend
from .torch_backend import TorchBackend, TritonBackend

_FACTORIES: dict[str, Callable[..., Backend]] = {}
_AVAILABLE: dict[str, Callable[[], bool]] = {}
_INSTANCES: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[..., Backend], *, available: Callable[[], bool] | None = None,
                     replace: bool = False) -> None:
    """Make ``factory(**options)`` the backend called ``name``.

    Args:
        name: what users pass as ``backend=``.
        factory: returns a :class:`Backend`; called with no arguments once, on first use of the name, and with
            the keyword arguments of each :func:`get_backend` call that gives some.
        available: whether the backend can run here (its optional dependencies are installed); listed by
            :func:`available_backends` only when true. Default: always.
        replace: allow replacing an existing name (otherwise ``UsageError``).
    """
    if not isinstance(name, str) or not name:
        raise UsageError(f"a backend name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if name in _FACTORIES and not replace:
        raise UsageError(f"a backend called {name!r} is registered already (pass replace=True to replace it)")
    _FACTORIES[name] = factory
    _AVAILABLE[name] = available or (lambda: True)
    _INSTANCES.pop(name, None)


def unregister_backend(name: str) -> None:
    """Forget the backend called ``name`` (``UsageError`` if there is none)."""
    if name not in _FACTORIES:
        raise UsageError(f"no backend called {name!r} is registered; registered: {', '.join(_FACTORIES)}")
    for table in (_FACTORIES, _AVAILABLE, _INSTANCES):
        table.pop(name, None)



def forget_instances() -> None:
    """Forget the instances :func:`get_backend` made so far: the next call makes each backend anew (e.g. after an
    optional dependency was installed or removed in a running session). Registrations stay."""
    _INSTANCES.clear()

def available_backends() -> list[str]:
    """The names of the registered backends that can run here, in registration order."""
    return [name for name in _FACTORIES if _AVAILABLE[name]()]


def registered_backends() -> list[str]:
    """Every registered name, including backends whose optional dependencies are missing here."""
    return list(_FACTORIES)


def get_backend(backend: str | Backend, **options: Any) -> Backend:
    """The backend called ``backend``, or ``backend`` itself if it is one.

    Without ``options``, one shared instance per name; with them, a new instance ``factory(**options)`` (e.g.
    ``get_backend("aer", fake_device="fake_torino")``).
    """
    if isinstance(backend, Backend):
        if options:
            raise UsageError(f"options {sorted(options)} apply to a backend name, not to the backend object {backend!r}")
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a name or a qucnn.backends.Backend, got {type(backend).__name__}")
    if backend not in _FACTORIES:
        raise UsageError(f"unknown backend {backend!r}; registered: {', '.join(_FACTORIES)}")
    if options:
        return _checked(backend, _FACTORIES[backend](**options))
    if backend not in _INSTANCES:
        _INSTANCES[backend] = _checked(backend, _FACTORIES[backend]())
    return _INSTANCES[backend]


def _checked(name: str, instance: Any) -> Backend:
    if not isinstance(instance, Backend):
        raise TypeError(f"the factory of backend {name!r} returned {type(instance).__name__}, not a Backend")
    return instance


def _importable(*modules: str) -> Callable[[], bool]:
    return lambda: all(importlib.util.find_spec(m) is not None for m in modules)


def triton_requested_interpreter() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (CPU tensors, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _triton_available() -> bool:
    """Triton is installed, and there is a GPU or the interpreter is asked for."""
    return importlib.util.find_spec("triton") is not None and (
        torch.cuda.is_available() or triton_requested_interpreter())


register_backend("torch", TorchBackend)
register_backend("reference", ReferenceBackend)
register_backend("triton", TritonBackend, available=_triton_available)
register_backend("aer", QiskitBackend, available=_importable("qiskit", "qiskit_aer"))
register_backend("pennylane", PennyLaneBackend, available=_importable("pennylane"))

__all__ = ["available_backends", "get_backend", "register_backend", "registered_backends", "unregister_backend"]
