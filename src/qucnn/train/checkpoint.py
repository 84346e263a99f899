"""Training checkpoints: written atomically (:mod:`qucnn.utils.files`), read safely.

Checkpoints hold only tensors and primitive containers, so :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)`` (no pickled code runs).

Example:
    load_checkpoint("results/train/checkpoint.pt")["step"]
    # -> 125
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..utils.checks import MissingFileError, UsageError

CHECKPOINT_FORMAT = "qucnn-train-checkpoint"
CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint written by :func:`qucnn.train.train`.

    Raises:
        MissingFileError: no file at ``path`` (a ``FileNotFoundError`` and a :class:`UsageError`).
        UsageError: the file is truncated, corrupt, or not a qucnn training checkpoint (the message
            names the file); nothing is modified.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad bytes
        raise UsageError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                         "it was left as it is") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a qucnn training checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"checkpoint {path} has version {ckpt.get('version')!r}; this qucnn reads "
                         f"version {CHECKPOINT_VERSION}")
    return ckpt


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint"]
