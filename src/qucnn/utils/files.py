"""Atomic files: a reader, or a run killed at any moment, sees the old file or the new one, never a mixture.

Every file is written to a temporary file in the destination's folder, flushed and fsync'ed, then moved
over the destination with ``os.replace`` (atomic on POSIX); no temporary file is left behind. A write that
fails (a full disk, an I/O error) raises :class:`~qucnn.utils.checks.OutputWriteError` naming the path and
the errno, and leaves the previous file as it was.

Example:
    atomic_write_text("note.txt", "done")
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import io
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .checks import OutputWriteError, UsageError


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


def write_error(path: str | Path, err: OSError) -> OutputWriteError:
    """The one-line :class:`OutputWriteError` for an ``OSError`` met while writing ``path``: the path, the
    errno's number, name and meaning, e.g. ``cannot write out/checkpoint.pt: [Errno 28 ENOSPC] No space left
    on device``."""
    code = err.errno
    name = errno_codes.errorcode.get(code, "") if code is not None else ""
    reason = err.strerror or str(err) or type(err).__name__
    errno_text = f"[Errno {code} {name}] ".replace(" ]", "]") if code is not None else ""
    return OutputWriteError(f"cannot write {path}: {errno_text}{reason}; the previous file, if any, is unchanged",
                            code)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then ``os.replace`` it onto ``path``.

    On any error (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched;
    an ``OSError`` (``ENOSPC``, ``EIO``, ...) becomes an :class:`OutputWriteError` naming ``path`` and the errno.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _default_mode())  # mkstemp makes 0600; give what open() would
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, OutputWriteError):
            raise write_error(path, err) from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`).

    The object is serialised in memory first: ``torch.save`` into a file turns a failed write into a C++
    ``RuntimeError`` without the errno, while writing the bytes ourselves keeps it.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be made a writable folder, or ``None``; creates it (and its parents) if missing."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".qucnn-write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return str(err.strerror or err)
    return None


def check_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Make sure ``path`` is, or can become, a writable folder; ``UsageError`` naming ``option`` otherwise.

    Creates the folder (and its parents) and writes and removes a probe file, so a run that would fail
    only when it saves its results fails before any work instead.

    Example:
        check_writable_dir("results/train", "--out")
    """
    path = Path(path)
    problem = _folder_problem(path)
    if problem:
        raise UsageError(f"{option} {path}: not a writable folder ({problem})")
    return path


def check_writable_file(path: str | Path, option: str = "--json") -> Path:
    """Make sure a file can be written at ``path`` (its folder is, or can become, writable, and ``path`` is
    not a folder); ``UsageError`` naming ``option`` and ``path`` otherwise. See :func:`check_writable_dir`.

    Example:
        check_writable_file("results/bench.json", "--json")
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give the path of a file to write")
    problem = _folder_problem(path.parent)
    if problem:
        raise UsageError(f"{option} {path}: cannot write into {path.parent} ({problem})")
    return path


__all__ = ["atomic_save", "atomic_write", "atomic_write_text", "check_writable_dir", "check_writable_file",
           "write_error"]
