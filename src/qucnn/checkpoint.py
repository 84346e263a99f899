"""Atomic files and training checkpoints.

Every file is written to a temporary file in the destination's directory, flushed and fsync'ed, then
moved over the destination with ``os.replace`` (atomic on POSIX): a reader, or a run killed at any
moment, sees the old file or the new one, never a mixture, and no temporary file is left behind.

Checkpoints hold only tensors and primitive containers, so :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)`` (no pickled code runs).

Example:
    >>> atomic_save({"step": 3, "w": torch.zeros(2)}, "ckpt.pt")  # doctest: +SKIP
    >>> load_checkpoint("ckpt.pt")["step"]  # doctest: +SKIP
    3
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

CHECKPOINT_FORMAT = "qucnn-train-checkpoint"
CHECKPOINT_VERSION = 1


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then ``os.replace`` it onto ``path``.

    On any error (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched.

    Example:
        >>> atomic_write("out.bin", lambda fh: fh.write(b"data"))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _default_mode())  # mkstemp makes 0600; give what open() would
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint written by :func:`qucnn.training.train`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, corrupt, or not a qucnn training checkpoint (the message
            names the file); nothing is modified.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad bytes
        raise ValueError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                         "it was left as it is") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a qucnn training checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has version {ckpt.get('version')!r}; this qucnn reads "
                         f"version {CHECKPOINT_VERSION}")
    return ckpt


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "atomic_save", "atomic_write", "atomic_write_text",
           "load_checkpoint"]
