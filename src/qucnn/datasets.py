"""Image data as PyTorch datasets: an IDX reader, the 10,000 real MNIST digits shipped inside the package,
and the train/test tensors that the training loop and the experiments use.

- :class:`EmbeddedMNIST` ``(train=True, transform=None, target_transform=None)``: the embedded digits as a
  ``torch.utils.data.Dataset``, like torchvision's ``MNIST``: the first 8,000 train, the last 2,000 test.
- :class:`IDXDataset` ``(images, labels, ...)``: any pair of IDX files (MNIST, Fashion-MNIST, ...).
- :class:`ImageSplits`: a data set's train and test tensors at once (:func:`load_embedded_mnist`,
  :func:`load_idx_dir`, :func:`load_dataset`), for code that works on whole tensors.

Every item is ``(image, label)``: ``image`` float32 ``(1, H, W)`` in ``[0, 1]``, ``label`` an int. Labels are
checked when a data set is built: a label outside ``0..num_classes-1`` raises a ``UsageError`` naming the file
and the value, instead of silently widening the model's output.

Example:
    >>> train = EmbeddedMNIST(train=True)
    >>> image, label = train[0]
    >>> len(train), tuple(image.shape), image.dtype, type(label).__name__, train.num_classes
    (8000, (1, 28, 28), torch.float32, 'int', 10)
    >>> loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    >>> images, labels = next(iter(loader))
    >>> tuple(images.shape), labels.dtype
    ((64, 1, 28, 28), torch.int64)
    >>> data = load_embedded_mnist()
    >>> data.train_images.shape, data.test_labels.shape
    (torch.Size([8000, 1, 28, 28]), torch.Size([2000]))
"""

from __future__ import annotations

import gzip
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from .utils.checks import MissingFileError, UsageError, integer, positive_int

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
    return parse_idx(_decompress(path.read_bytes(), str(path)), str(path))


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


class ImageDataset(TorchDataset):
    """Grayscale uint8 images held in memory, as a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs.

    ``dataset[i]`` is ``(image, label)``: ``image`` float32 ``(1, H, W)`` in ``[0, 1]`` (the pixel byte / 255),
    ``label`` a Python ``int`` in ``0..num_classes-1``; ``transform(image)`` and ``target_transform(label)``
    are applied when given (torchvision's convention), so a ``DataLoader`` batches them to ``(B, 1, H, W)``
    float32 and ``(B,)`` int64.

    Args:
        data: uint8 images ``(N, H, W)`` (a tensor or a numpy array).
        targets: integer labels ``(N,)``.
        num_classes: the number of classes; ``None`` infers it (:func:`check_labels`).
        transform: called on each image tensor ``(1, H, W)``.
        target_transform: called on each label.
        name: names the data in reprs and error messages.
        where: what error messages call the images and the labels (default: ``name`` for both).

    Attributes:
        data: the images, uint8 ``(N, H, W)``.
        targets: the labels, int64 ``(N,)``.
        num_classes: the number of classes (every label lies below it).
        name: what reprs and messages call the data.

    Example:
        >>> ds = ImageDataset(torch.full((2, 3, 3), 255, dtype=torch.uint8), torch.tensor([0, 1]))
        >>> image, label = ds[1]
        >>> tuple(image.shape), float(image.max()), label, ds.num_classes
        ((1, 3, 3), 1.0, 1, 2)
    """

    def __init__(self, data: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, *,
                 num_classes: int | None = None, transform: Callable[[torch.Tensor], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None, name: str = "images",
                 where: tuple[str, str] | None = None) -> None:
        images_at, labels_at = where or (name, name)
        data, targets = torch.as_tensor(data), torch.as_tensor(targets)
        if data.dim() != 3 or data.dtype != torch.uint8:
            raise UsageError(f"{images_at}: expected uint8 images of shape (N, H, W), got {data.dtype} "
                             f"{tuple(data.shape)}")
        if targets.dim() != 1 or targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise UsageError(f"{labels_at}: expected integer labels of shape (N,), got {targets.dtype} "
                             f"{tuple(targets.shape)}")
        if len(data) != len(targets):
            raise UsageError(f"{images_at}: {len(data)} images but {len(targets)} labels")
        for what, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{what} must be callable or None, got {type(fn).__name__}")
        self.num_classes = check_labels(targets, num_classes, labels_at)
        self.data, self.targets = data, targets.long()
        self.transform, self.target_transform, self.name = transform, target_transform, name

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        """``(image, label)`` of example ``index``: float32 ``(1, H, W)`` in ``[0, 1]`` and an int, transformed."""
        i = integer(index, "index")
        image, label = self.data[i].unsqueeze(0).float() / 255, int(self.targets[i])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All examples at once, untransformed: images ``(N, 1, H, W)`` float32 in ``[0, 1]``, labels ``(N,)`` int64."""
        return self.data.unsqueeze(1).float() / 255, self.targets.clone()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {len(self)} images of {tuple(self.data.shape[1:])}, "
                f"classes={self.num_classes})")


class IDXDataset(ImageDataset):
    """A pair of IDX files (images ``(N, H, W)`` uint8, labels ``(N,)``) as a ``torch.utils.data.Dataset``.

    Items as :class:`ImageDataset`. Both files may be raw or gzip. Raises ``FileNotFoundError`` for a missing
    file and ``ValueError`` (:class:`~qucnn.utils.checks.UsageError`) naming the file for a malformed one,
    mismatched lengths, or labels that are not class indices (:func:`check_labels`).

    Args:
        images: path of the images file (``*-images-idx3-ubyte[.gz]``).
        labels: path of the labels file (``*-labels-idx1-ubyte[.gz]``).
        transform: called on each image tensor ``(1, H, W)``.
        target_transform: called on each label.
        num_classes: the number of classes (labels must lie below it); ``None`` infers it from the labels.

    Example:
        train = IDXDataset("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz")
        loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    """

    def __init__(self, images: str | Path, labels: str | Path, transform: Callable[[torch.Tensor], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None, num_classes: int | None = None) -> None:
        self.images_path, self.labels_path = Path(images), Path(labels)
        x, y = read_idx(self.images_path), read_idx(self.labels_path)
        if y.dtype.kind not in "iu":
            raise UsageError(f"{self.labels_path}: expected integer labels of shape (N,), got {y.dtype} {y.shape}")
        super().__init__(x, y.astype(np.int64), num_classes=num_classes, transform=transform,
                         target_transform=target_transform, name=self.images_path.name,
                         where=(str(self.images_path), str(self.labels_path)))


@lru_cache(maxsize=1)
def _embedded() -> tuple[torch.Tensor, torch.Tensor]:
    # Traversable.read_bytes works even when the package is imported from a zip, unlike a file path.
    root = resources.files("qucnn").joinpath("data")
    images, labels = (parse_idx(_decompress(root.joinpath(f).read_bytes(), f"qucnn/data/{f}"), f"qucnn/data/{f}")
                      for f in EMBEDDED_FILES)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


class EmbeddedMNIST(ImageDataset):
    """The 10,000 real MNIST digits shipped with qucnn, as a ``torch.utils.data.Dataset`` (torchvision style).

    ``train=True``: the first 8,000 digits; ``False``: the last 2,000 (every class occurs in both). Items as
    :class:`ImageDataset`: ``(image (1, 28, 28) float32 in [0, 1], label int in 0..9)``. Nothing is
    downloaded; the files and their origin are in ``qucnn/data/README.md``.

    Args:
        train: the training split (``True``) or the test split.
        transform: called on each image tensor ``(1, 28, 28)``.
        target_transform: called on each label.

    Example:
        >>> test = EmbeddedMNIST(train=False)
        >>> len(test), test.num_classes, test[0][1]
        (2000, 10, 5)
    """

    def __init__(self, train: bool = True, transform: Callable[[torch.Tensor], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None) -> None:
        if not isinstance(train, bool):
            raise TypeError(f"train must be True or False, got {type(train).__name__} {train!r}")
        images, labels = _embedded()
        part = slice(None, EMBEDDED_TRAIN) if train else slice(EMBEDDED_TRAIN, None)
        # Clones: a caller editing one split's tensors in place must not change the other, or later loads.
        name = f"mnist-10k (embedded, {'train' if train else 'test'})"
        super().__init__(images[part].clone(), labels[part].clone(), num_classes=10, transform=transform,
                         target_transform=target_transform, name=name)
        self.train = train


@dataclass(frozen=True, eq=False)  # eq=False: a generated __eq__ over tensors would raise, not compare
class ImageSplits:
    """A data set's train and test tensors at once, for code that works on whole tensors (the training loop,
    the experiments): images ``(N, 1, H, W)`` float32 in ``[0, 1]``, labels ``(N,)`` int64.

    ``classes``: the validated number of classes (``None``: ``max label + 1`` over both splits).

    Example:
        >>> splits = ImageSplits.from_datasets(EmbeddedMNIST(train=True), EmbeddedMNIST(train=False), "mnist")
        >>> tuple(splits.train_images.shape), splits.num_classes
        ((8000, 1, 28, 28), 10)
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    name: str
    classes: int | None = None

    @classmethod
    def from_datasets(cls, train: ImageDataset, test: ImageDataset, name: str) -> ImageSplits:
        """The tensors of two :class:`ImageDataset` s; test labels must be classes of the training set."""
        if train.data.shape[1:] != test.data.shape[1:]:
            raise UsageError(f"{name}: train images are {tuple(train.data.shape[1:])} but test images are "
                             f"{tuple(test.data.shape[1:])}")
        if test.num_classes > train.num_classes:
            check_labels(test.targets, train.num_classes, f"{test.name} (test labels, {train.num_classes} classes "
                                                          f"in the training labels)")
        return cls(*train.tensors(), *test.tensors(), name=name, classes=train.num_classes)

    @property
    def num_classes(self) -> int:
        """The validated class count, else ``max label + 1`` over both splits (0 for an empty data set)."""
        if self.classes is not None:
            return self.classes
        labels = torch.cat([self.train_labels, self.test_labels])
        return int(labels.max()) + 1 if labels.numel() else 0

    def __repr__(self) -> str:
        return (f"ImageSplits({self.name!r}, train={tuple(self.train_images.shape)}, "
                f"test={tuple(self.test_images.shape)}, classes={self.num_classes})")


def load_embedded_mnist() -> ImageSplits:
    """The 10,000 real MNIST digits shipped with qucnn as tensors: first 8,000 train, last 2,000 test.

    Example:
        >>> load_embedded_mnist().test_images.shape
        torch.Size([2000, 1, 28, 28])
    """
    return ImageSplits.from_datasets(EmbeddedMNIST(train=True), EmbeddedMNIST(train=False), "mnist-10k (embedded)")


def _find(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # some mirrors write train-images.idx3-ubyte
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_idx_dir(directory: str | Path, num_classes: int | None = None) -> ImageSplits:
    """Load a directory of IDX files into :class:`ImageSplits` (through :class:`IDXDataset`).

    Either the standard four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (MNIST, Fashion-MNIST; each raw or ``.gz``,
    ``-idx`` or ``.idx``), or a single ``images-idx3-ubyte`` + ``labels-idx1-ubyte`` pair, split 80/20
    (first 80% train). ``num_classes``: as :class:`IDXDataset` (``None`` infers it from the training labels;
    the test labels must then lie below it).

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
        train = IDXDataset(found[0], found[1], num_classes=num_classes)
        test = IDXDataset(found[2], found[3], num_classes=train.num_classes)
        return ImageSplits.from_datasets(train, test, name)
    pair = [_find(directory, s) for s in PAIR_STEMS]
    if all(pair):
        both = IDXDataset(pair[0], pair[1], num_classes=num_classes)
        n_train = len(both) * 4 // 5  # integer arithmetic: 0.8 * n can land just below a whole number
        if n_train == 0 or n_train == len(both):
            raise UsageError(f"{directory}: {len(both)} images are too few for an 80/20 split")
        x, y = both.tensors()
        return ImageSplits(x[:n_train], y[:n_train], x[n_train:], y[n_train:], name, classes=both.num_classes)
    present = [p.name for p in found + pair if p is not None]
    raise MissingFileError(
        f"no IDX data set in {directory}: looked for {', '.join(s + '[.gz]' for s in STANDARD_STEMS)} "
        f"or {' + '.join(s + '[.gz]' for s in PAIR_STEMS)}; found only {present or 'none of them'}")


def load_dataset(data: str | Path | None = None, num_classes: int | None = None) -> ImageSplits:
    """``None``: the embedded MNIST; otherwise :func:`load_idx_dir` on the given directory.

    ``num_classes``: the number of classes, checked against the labels (``None``: inferred).

    Example:
        >>> load_dataset().num_classes
        10
    """
    if data is not None:
        return load_idx_dir(data, num_classes)
    splits = load_embedded_mnist()
    if num_classes is None:
        return splits
    k = check_labels(torch.cat([splits.train_labels, splits.test_labels]), num_classes, "embedded MNIST")
    return ImageSplits(splits.train_images, splits.train_labels, splits.test_images, splits.test_labels, splits.name,
                       classes=k)


def subset(ds: ImageSplits, n_train: int | None = None, n_test: int | None = None) -> ImageSplits:
    """The first ``n_train`` training and ``n_test`` test examples (``None`` keeps all); the class count stays.

    Example:
        >>> subset(load_embedded_mnist(), 100, 10).test_labels.shape
        torch.Size([10])
    """
    return ImageSplits(ds.train_images[:n_train], ds.train_labels[:n_train], ds.test_images[:n_test],
                       ds.test_labels[:n_test], ds.name, classes=ds.classes)


def __getattr__(name: str) -> Any:
    if name == "Dataset":  # qucnn 0.2's name, which read as a torch.utils.data.Dataset but was not one
        warnings.warn("qucnn.datasets.Dataset was renamed ImageSplits; the old name goes away in qucnn 0.3",
                      DeprecationWarning, stacklevel=2)
        return ImageSplits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EMBEDDED_TRAIN", "EmbeddedMNIST", "IDXDataset", "IDX_DTYPES", "ImageDataset", "ImageSplits",
           "check_labels", "load_dataset", "load_embedded_mnist", "load_idx_dir", "parse_idx", "read_idx", "subset"]
