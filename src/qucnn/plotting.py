"""Matplotlib, imported only when a figure is drawn (it is the optional ``plots`` extra)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or an ``ImportError`` naming the extra to install."""
    try:
        import matplotlib
    except ImportError as err:  # optional dependency
        raise ImportError("figures need matplotlib: pip install qucnn[plots]") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
