"""Output folders a run owns: one run at a time per folder, and no empty folder left by a run that failed.

:func:`claim_output_dir` makes sure the folder is writable (creating it and any missing parents), then takes
an exclusive ``fcntl.flock`` on ``FOLDER/.qucnn.lock`` for as long as the run lasts. A second run on the same
folder, in any process, is refused at once with a :class:`~qucnn.utils.checks.UsageError` naming the folder
and the PID of the run that holds it. The kernel drops the lock when its holder exits, however it exits
(``SIGKILL`` and crashes included), so a lock file left by a killed run never blocks the next one. Claims
are re-entrant within a process (the CLI and :func:`qucnn.train.train` may both claim the same folder).

If the run raises, the folders the claim created are removed again when they are empty, so a command that
fails before writing anything leaves nothing behind.

Example:
    with claim_output_dir("results/train"):
        ...  # write into results/train; another run on it exits with "in use by ... (PID 1234)"
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .checks import UsageError
from .files import check_writable_dir

LOCK_NAME = ".qucnn.lock"

#: Folders this process holds: resolved path -> (lock file descriptor, number of nested claims).
_HELD: dict[Path, list[int]] = {}


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _holder(lock: Path) -> str:
    """The PID written in a held lock file, as text (``unknown`` if it cannot be read)."""
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return pid if pid.isdigit() else "unknown"


def _acquire(folder: Path, option: str) -> int:
    """Lock ``folder`` for this process; return the lock file's descriptor."""
    lock = folder / LOCK_NAME
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"{option} {folder}: another qucnn run (PID {_holder(lock)}) is writing into this "
                             f"folder; wait for it to finish or choose another {option}") from None
        # the holder we waited on may have removed the file after releasing it: then our lock is on a file
        # nobody else will open; lock the file that is there now instead
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _release(folder: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / LOCK_NAME).unlink()  # while still locked: a waiting run then re-checks (see _acquire)
    os.close(fd)


@contextlib.contextmanager
def claim_output_dir(path: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold ``path`` as this run's output folder for the ``with`` block (see the module docstring).

    Raises:
        UsageError: ``path`` is empty, cannot be a writable folder, or another run holds it (the message
            names ``option``, the folder and the holder's PID).

    Example:
        with claim_output_dir("results/plateau", "--out") as out:
            (out / "plateau.json").write_text("{}")
    """
    if str(path) == "":
        raise UsageError(f"{option} must name a folder, got an empty string")
    folder = Path(path)
    created = _missing_folders(folder)
    check_writable_dir(folder, option)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        try:
            _HELD[key] = [_acquire(folder, option), 1]
        except BaseException:
            _remove_if_empty(created)
            raise
    failed = True
    try:
        yield folder
        failed = False
    finally:
        _HELD[key][1] -= 1
        if not _HELD[key][1]:
            _release(folder, _HELD.pop(key)[0])
        if failed:
            _remove_if_empty(created)


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: what a failed run created and never used."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it and everything above it
            return


def holds_output_dir(path: str | Path) -> bool:
    """Whether this process holds ``path`` through :func:`claim_output_dir`."""
    return Path(path).resolve() in _HELD


__all__ = ["LOCK_NAME", "claim_output_dir", "holds_output_dir"]
