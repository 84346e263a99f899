"""What produced a result: the versions of Python, qucnn and the packages behind the numbers.

Example:
    >>> sorted(versions())[:3]
    ['matplotlib', 'numpy', 'pennylane']
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys

#: Distributions whose versions go into every metrics file (``None`` when not installed).
PACKAGES = ("torch", "numpy", "matplotlib", "tqdm", "qiskit", "qiskit-aer", "qiskit-ibm-runtime", "pennylane",
            "triton")


def versions() -> dict:
    """``{"qucnn", "python", "platform", <package>: version or None}`` without importing the packages."""
    found = {"qucnn": _qucnn_version(), "python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        found[name.replace("-", "_")] = _version(name)
    return found


def _qucnn_version() -> str | None:
    """The running code's ``qucnn.__version__``: an editable install keeps the metadata of the version it was
    installed at, which is not the code that ran. (The package is imported whenever this module is.)"""
    return getattr(sys.modules.get("qucnn"), "__version__", None) or _version("qucnn")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


__all__ = ["PACKAGES", "versions"]
