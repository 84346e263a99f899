"""Matplotlib on the Agg backend, imported only when a figure is drawn (``import qucnn`` stays light)."""

from __future__ import annotations

from .checks import MissingExtraError


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or a :class:`MissingExtraError` saying how to install it."""
    try:
        import matplotlib
    except ImportError as err:  # a core dependency, but a trimmed environment may lack it
        raise MissingExtraError("figures need matplotlib: pip install matplotlib (a dependency of qucnn)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


__all__ = ["pyplot"]
