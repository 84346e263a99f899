"""A data set's train and test tensors at once (:class:`ImageSplits`), for code that works on whole tensors: the
embedded MNIST, a folder of IDX files, or either by name.

Example:
    >>> subset(load_embedded_mnist(), 100, 10).train_images.shape
    torch.Size([100, 1, 28, 28])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.checks import MissingFileError, UsageError
from .idx import PAIR_STEMS, STANDARD_STEMS, check_labels
from .images import EmbeddedMNIST, IDXDataset, ImageDataset


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


__all__ = ["ImageSplits", "load_dataset", "load_embedded_mnist", "load_idx_dir", "subset"]
