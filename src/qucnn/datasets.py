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
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

#: IDX type codes -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
EMBEDDED_TRAIN = 8000


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as err:  # truncated or corrupt gzip stream
            raise ValueError(f"{path}: not a readable gzip file ({err})") from err
    return path.read_bytes()


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into a numpy array of its declared dtype and shape.

    Raises ``ValueError`` for an empty or truncated file, an unknown magic number or trailing bytes.

    Example:
        >>> read_idx("train-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        (60000,)
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX header (need at least 4)")
    zero, code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000, a type code in "
                         f"{[hex(c) for c in IDX_DTYPES]} and ndim >= 1)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, found {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) < expected:
        raise ValueError(f"{path}: truncated: shape {shape} needs {expected} bytes, found {len(raw)}")
    if len(raw) > expected:
        raise ValueError(f"{path}: {len(raw) - expected} unexpected trailing bytes after shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class Dataset:
    """Images ``(N, 1, H, W)`` float32 in ``[0, 1]`` and labels ``(N,)`` int64, split into train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    name: str

    @property
    def num_classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.train_images.shape)}, "
                f"test={tuple(self.test_images.shape)}, classes={self.num_classes})")


def _to_tensors(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{where}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _split(images: np.ndarray, labels: np.ndarray, n_train: int, name: str, where: str) -> Dataset:
    x, y = _to_tensors(images, labels, where)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], name)


def load_embedded_mnist() -> Dataset:
    """The 10,000 real MNIST digits shipped with qucnn: first 8,000 train, last 2,000 test."""
    root = resources.files("qucnn").joinpath("data")
    with resources.as_file(root) as folder:
        images = read_idx(Path(folder) / "images-idx3-ubyte.gz")
        labels = read_idx(Path(folder) / "labels-idx1-ubyte.gz")
    return _split(images, labels, EMBEDDED_TRAIN, "mnist-10k (embedded)", "embedded MNIST")


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_dir(directory: str | Path) -> Dataset:
    """Load a directory of IDX files: the standard ``train-images-idx3-ubyte[.gz]``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (MNIST,
    Fashion-MNIST), or a single ``images-idx3-ubyte`` + ``labels-idx1-ubyte`` pair, split 80/20."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"data directory not found: {directory}")
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    found = [_find(directory, s) for s in stems]
    if all(found):
        train = _to_tensors(read_idx(found[0]), read_idx(found[1]), f"{directory} (train)")
        test = _to_tensors(read_idx(found[2]), read_idx(found[3]), f"{directory} (t10k)")
        return Dataset(*train, *test, name=directory.name or str(directory))
    pair = [_find(directory, s) for s in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if all(pair):
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        return _split(images, labels, int(0.8 * len(images)), directory.name, str(directory))
    raise FileNotFoundError(
        f"no IDX data set in {directory}: looked for {', '.join(s + '[.gz]' for s in stems)} "
        "or images-idx3-ubyte[.gz] + labels-idx1-ubyte[.gz]")


def load_dataset(data: str | Path | None = None) -> Dataset:
    """``None``: the embedded MNIST; otherwise :func:`load_idx_dir` on the given directory."""
    return load_embedded_mnist() if data is None else load_idx_dir(data)


def subset(ds: Dataset, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """The first ``n_train`` training and ``n_test`` test examples (``None`` keeps all)."""
    return Dataset(ds.train_images[:n_train], ds.train_labels[:n_train], ds.test_images[:n_test],
                   ds.test_labels[:n_test], ds.name)
