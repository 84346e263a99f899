"""Image data: a real IDX reader and the 10,000 real MNIST digits shipped inside the package.

The embedded set (``qucnn/data/``) is split once and for all: the first 8,000 digits train, the last
2,000 test. Any directory holding the standard IDX files (full MNIST, Fashion-MNIST, ...) loads through
:func:`load_idx_dir`.

Example:
    >>> data = load_embedded_mnist()
    >>> data.train_images.shape, data.test_labels.shape
    (torch.Size([8000, 1, 28, 28]), torch.Size([2000]))
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .utils.checks import MissingFileError, UsageError

#: IDX type codes -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
EMBEDDED_TRAIN = 8000
EMBEDDED_FILES = ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")
STANDARD_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")
PAIR_STEMS = ("images-idx3-ubyte", "labels-idx1-ubyte")


def _decompress(raw: bytes, where: str) -> bytes:
    # Sniff the gzip magic rather than trust the suffix: downloads are often renamed either way.
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip stream
        raise UsageError(f"{where}: not a readable gzip file ({err})") from err


def parse_idx(raw: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse the (already decompressed) bytes of an IDX file; ``where`` names it in error messages."""
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
    return parse_idx(_decompress(path.read_bytes(), str(path)), str(path))


@dataclass(frozen=True, eq=False)  # eq=False: a generated __eq__ over tensors would raise, not compare
class Dataset:
    """Images ``(N, 1, H, W)`` float32 in ``[0, 1]`` and labels ``(N,)`` int64, split into train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    name: str

    @property
    def num_classes(self) -> int:
        """``max label + 1`` over both splits (0 for an empty data set)."""
        labels = torch.cat([self.train_labels, self.test_labels])
        return int(labels.max()) + 1 if labels.numel() else 0

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.train_images.shape)}, "
                f"test={tuple(self.test_images.shape)}, classes={self.num_classes})")


def _to_tensors(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UsageError(f"{where}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UsageError(f"{where}: expected integer labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise UsageError(f"{where}: {len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _split(images: np.ndarray, labels: np.ndarray, n_train: int, name: str, where: str) -> Dataset:
    x, y = _to_tensors(images, labels, where)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], name)


def load_embedded_mnist() -> Dataset:
    """The 10,000 real MNIST digits shipped with qucnn: first 8,000 train, last 2,000 test."""
    # Traversable.read_bytes works even when the package is imported from a zip, unlike a file path.
    root = resources.files("qucnn").joinpath("data")
    images, labels = (parse_idx(_decompress(root.joinpath(f).read_bytes(), f"qucnn/data/{f}"), f"qucnn/data/{f}")
                      for f in EMBEDDED_FILES)
    return _split(images, labels, EMBEDDED_TRAIN, "mnist-10k (embedded)", "embedded MNIST")


def _find(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # some mirrors write train-images.idx3-ubyte
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_dir(directory: str | Path) -> Dataset:
    """Load a directory of IDX files into a :class:`Dataset`.

    Either the standard four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (MNIST, Fashion-MNIST; each raw or ``.gz``,
    ``-idx`` or ``.idx``), or a single ``images-idx3-ubyte`` + ``labels-idx1-ubyte`` pair, split 80/20
    (first 80% train).

    Example:
        load_idx_dir("/usr/share/datasets/fashion-mnist").train_images.shape
        # -> torch.Size([60000, 1, 28, 28])
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError(f"data directory not found (or not a directory): {directory}")
    name = directory.resolve().name or str(directory)
    found = [_find(directory, s) for s in STANDARD_STEMS]
    if all(found):
        train = _to_tensors(read_idx(found[0]), read_idx(found[1]), f"{directory} (train)")
        test = _to_tensors(read_idx(found[2]), read_idx(found[3]), f"{directory} (t10k)")
        if train[0].shape[1:] != test[0].shape[1:]:
            raise UsageError(f"{directory}: train images are {tuple(train[0].shape[2:])} but test images "
                             f"are {tuple(test[0].shape[2:])}")
        return Dataset(*train, *test, name=name)
    pair = [_find(directory, s) for s in PAIR_STEMS]
    if all(pair):
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        n_train = len(images) * 4 // 5  # integer arithmetic: 0.8 * n can land just below a whole number
        if n_train == 0 or n_train == len(images):
            raise UsageError(f"{directory}: {len(images)} images are too few for an 80/20 split")
        return _split(images, labels, n_train, name, str(directory))
    present = [p.name for p in found + pair if p is not None]
    raise MissingFileError(
        f"no IDX data set in {directory}: looked for {', '.join(s + '[.gz]' for s in STANDARD_STEMS)} "
        f"or {' + '.join(s + '[.gz]' for s in PAIR_STEMS)}; found only {present or 'none of them'}")


def load_dataset(data: str | Path | None = None) -> Dataset:
    """``None``: the embedded MNIST; otherwise :func:`load_idx_dir` on the given directory."""
    return load_embedded_mnist() if data is None else load_idx_dir(data)


def subset(ds: Dataset, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """The first ``n_train`` training and ``n_test`` test examples (``None`` keeps all)."""
    return Dataset(ds.train_images[:n_train], ds.train_labels[:n_train], ds.test_images[:n_test],
                   ds.test_labels[:n_test], ds.name)
