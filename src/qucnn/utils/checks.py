"""Input checks shared by every public surface, and the one error type for a user's mistake.

Library functions validate once, at the surface (``QuConv2d``, ``qucnn.functional``, the CLI), with these
helpers; kernels and backends trust their inputs. :class:`UsageError` is a ``ValueError``, so callers that
catch ``ValueError`` keep working; the command line turns it (and only it) into a one-line message and
exit status 2, so a bug anywhere else still shows its traceback.

Example:
    >>> positive_int(3, "shots")
    3
    >>> as_pair(2, "stride", minimum=1)
    (2, 2)
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor


class UsageError(ValueError):
    """A user's mistake: a bad option or argument value, a missing file, a missing optional extra.

    The CLI prints its message and exits with status 2; the library raises it where the caller can fix
    the call. It is a ``ValueError``.
    """


class MissingExtraError(UsageError, ImportError):
    """An optional dependency is not installed; the message gives the install command (:func:`pip_install`)."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class RunError(Exception):
    """A run stopped for a reason that is neither a bad option nor a bug: the disk filled up, the training
    diverged. The message says what happened and what was kept; the CLI prints it as one line and exits with
    status 1."""


class OutputWriteError(RunError, OSError):
    """A result or checkpoint could not be written (``ENOSPC``, ``EIO``, ...). The message names the path and
    the errno; ``errno`` holds the number. The file at that path, if any, is the previous one, unchanged."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


#: Most shots one estimate takes: counts stay exact integers in float64 up to ``2**53`` (and the binomial
#: draws are exact up to there: :func:`qucnn.core.swap_test.estimate_z`).
MAX_SHOTS = 2**53


def pip_install(extra: str) -> str:
    """The install command of an optional extra, quoted so that it works in every shell (zsh included).

    Example:
        >>> pip_install("qiskit")
        "pip install 'qucnn[qiskit]'"
    """
    return f"pip install 'qucnn[{extra}]'"


def integer(value: Any, name: str) -> int:
    """``value`` as a Python int if it is integer-like (``int``, a numpy integer, a 0-dim integer tensor);
    ``TypeError`` naming ``name`` for anything else (``bool`` and floats included)."""
    if isinstance(value, bool) or (isinstance(value, Tensor) and (value.dim() or value.is_floating_point())):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}") from None


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer-like ``value >= minimum`` as an int; ``TypeError``/``UsageError`` naming ``name``.

    Example:
        >>> import numpy as np
        >>> positive_int(np.int64(100), "shots")
        100
    """
    number = integer(value, name)
    if number < minimum:
        what = "a positive int" if minimum == 1 else "a non-negative int" if minimum == 0 else f"an int >= {minimum}"
        raise UsageError(f"{name} must be {what}, got {number}")
    return number


def optional_positive_int(value: Any, name: str, minimum: int = 1) -> int | None:
    """``None``, or :func:`positive_int`."""
    return None if value is None else positive_int(value, name, minimum)


def check_shots(shots: Any, name: str = "shots") -> int | None:
    """``None`` (exact expectations) or an integer-like number of shots in ``[1, 2**53]``
    (:data:`MAX_SHOTS`), returned as an int.

    Example:
        >>> check_shots(2**53)  # the largest accepted; 2**53 + 1 raises UsageError
        9007199254740992
    """
    if shots is None:
        return None
    try:
        number = positive_int(shots, name)
    except TypeError:
        raise TypeError(f"{name} must be a positive int or None, got {type(shots).__name__} {shots!r}") from None
    except UsageError:
        raise UsageError(f"{name} must be a positive int or None, got {shots!r}") from None
    if number > MAX_SHOTS:
        raise UsageError(f"{name} must be at most 2**53 = {MAX_SHOTS} (the largest count drawn exactly in "
                         f"float64), got {number}")
    return number


def as_pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each ``>= minimum``, as a pair (``nn.Conv2d``'s convention)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (integer(value[0], name), integer(value[1], name))
    else:
        try:
            pair = (integer(value, name),) * 2
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if min(pair) < minimum:
        raise UsageError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def one_of(value: Any, allowed: tuple, name: str) -> Any:
    """``value`` if it is in ``allowed``; else a ``UsageError`` listing the choices."""
    if value not in allowed:
        raise UsageError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return value


def check_finite(x: Tensor, what: str = "input") -> None:
    """Raise ``UsageError`` naming ``what`` if ``x`` holds NaN or infinity.

    On the CPU this reads one reduction. On other devices reading a value back would make the host wait
    for the device, so the check is queued on the device instead (``torch._assert_async``): a NaN/inf
    input stops the program at the next synchronisation with a device-side assertion.
    """
    if not x.numel():
        return
    if x.device.type != "cpu":  # (not utils.devices.reads_back_freely: this module sits below it)
        torch._assert_async(torch.isfinite(x.detach()).all(), f"{what} must be finite (NaN or inf found)")
        return
    # A finite sum proves every element finite (NaN and inf propagate) in one reduction; only a sum that
    # is not finite (a bad value, or an overflow of large finite ones) pays for the elementwise check.
    if bool(torch.isfinite(x.detach().sum())) or bool(torch.isfinite(x).all()):
        return
    bad = int((~torch.isfinite(x)).sum())
    raise UsageError(f"{what} must be finite, got {bad} NaN/inf value(s) among {x.numel()}")


__all__ = ["MAX_SHOTS", "MissingExtraError", "MissingFileError", "OutputWriteError", "RunError", "UsageError",
           "as_pair", "check_finite", "check_shots", "integer", "one_of", "optional_positive_int", "pip_install",
           "positive_int"]
