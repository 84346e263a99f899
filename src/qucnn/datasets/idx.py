"""The IDX format (MNIST, Fashion-MNIST, ...): parse a file's bytes, read a (gzip-compressed) file, and check that
labels are class indices.

Example:
    >>> parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 7, 9])).tolist()
    [7, 9]
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..utils.checks import MissingFileError, UsageError, positive_int


#: IDX type codes -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
EMBEDDED_TRAIN = 8000
EMBEDDED_FILES = ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")
STANDARD_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")
PAIR_STEMS = ("images-idx3-ubyte", "labels-idx1-ubyte")


def decompress(raw: bytes, where: str) -> bytes:
    """``raw`` gunzipped if it is a gzip stream, else as it is; a corrupt stream is a ``UsageError`` naming
    ``where``."""
    # Sniff the gzip magic rather than trust the suffix: downloads are often renamed either way.
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip stream
        raise UsageError(f"{where}: not a readable gzip file ({err})") from err


def parse_idx(raw: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse the (already decompressed) bytes of an IDX file; ``where`` names it in error messages.

    Example:
        >>> parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
        [7, 8, 9]
    """
    if not raw:
        raise UsageError(f"{where}: empty file (expected an IDX header of at least 4 bytes)")
    if len(raw) < 4:
        raise UsageError(f"{where}: {len(raw)} bytes is too short for an IDX header (need at least 4)")
    zero, code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise UsageError(f"{where}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000, a type code in "
                         f"{[hex(c) for c in IDX_DTYPES]} and ndim >= 1)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UsageError(f"{where}: truncated header: {ndim} dimensions need {header} bytes, found {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    # math.prod on Python ints: np.prod would silently wrap around for a corrupt, huge shape.
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) < expected:
        raise UsageError(f"{where}: truncated: shape {shape} needs {expected} bytes, found {len(raw)}")
    if len(raw) > expected:
        raise UsageError(f"{where}: {len(raw) - expected} unexpected trailing bytes: shape {shape} needs "
                         f"{expected} bytes, found {len(raw)}")
    # astype copies to native byte order, so the result is writable and independent of ``raw``.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array of its declared dtype and shape.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an empty or truncated file,
    an unknown magic number, trailing bytes or a corrupt gzip stream.

    Example:
        read_idx("train-labels-idx1-ubyte.gz").shape
        # -> (60000,)
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"IDX file not found: {path}")
    return parse_idx(decompress(path.read_bytes(), str(path)), str(path))


def check_labels(labels: np.ndarray | torch.Tensor, num_classes: int | None = None, where: str = "labels") -> int:
    """Check that ``labels`` ``(N,)`` are class indices; return the number of classes.

    With ``num_classes``, every label must lie in ``0..num_classes-1``. Without it the count is inferred as
    ``max + 1``, and every class below the largest label must occur at least once: labels that skip
    classes (a corrupt byte of 200 among digits 0..9 would otherwise make a 201-class model) raise a
    ``UsageError`` naming ``where`` and the value, which says to pass ``num_classes`` if the gap is meant.

    Example:
        >>> check_labels(np.array([0, 2, 1, 2]))
        3
        >>> try:
        ...     check_labels(np.array([0, 1, 200]), where="labels.idx")
        ... except ValueError as err:
        ...     print(str(err)[:65])
        labels.idx: the labels skip classes 2..199 (largest label 200, at
    """
    y = torch.as_tensor(labels).long().reshape(-1)
    if num_classes is not None:
        k = positive_int(num_classes, "num_classes")
        bad = torch.nonzero((y < 0) | (y >= k)).flatten()
        if len(bad):
            i = int(bad[0])
            raise UsageError(f"{where}: label {int(y[i])} at index {i} is not a class index in 0..{k - 1} "
                             f"({len(bad)} such label(s) of {len(y)})")
        return k
    if not len(y):
        return 0
    if int(y.min()) < 0:
        i = int(y.argmin())
        raise UsageError(f"{where}: label {int(y[i])} at index {i} is negative (labels are class indices 0..K-1)")
    top = int(y.argmax())
    k = int(y[top]) + 1
    present = torch.bincount(y, minlength=k) > 0
    if not bool(present.all()):
        missing = torch.nonzero(~present).flatten().tolist()
        runs = _ranges(missing)
        raise UsageError(f"{where}: the labels skip classes {runs} (largest label {k - 1}, at index {top}), so they "
                         f"are not class indices 0..K-1: a corrupt label? If {k} classes, some without examples, is "
                         f"what you mean, pass num_classes={k} (qucnn train --classes {k})")
    return k


def _ranges(values: list[int]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2..4, 7"`` (at most four runs, then ``...``)."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = [f"{a}..{b}" if b > a else f"{a}" for a, b in runs[:4]]
    return ", ".join(text + (["..."] if len(runs) > 4 else []))


__all__ = ["EMBEDDED_FILES", "EMBEDDED_TRAIN", "IDX_DTYPES", "PAIR_STEMS", "STANDARD_STEMS", "check_labels", "decompress",
           "parse_idx", "read_idx"]
