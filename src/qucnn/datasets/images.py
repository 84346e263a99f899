"""Images held in memory as ``torch.utils.data.Dataset`` s: any pair of IDX files, and the 10,000 real MNIST digits
shipped inside the package.

Example:
    >>> len(EmbeddedMNIST(train=False))
    2000
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..utils.checks import UsageError, integer
from .idx import EMBEDDED_FILES, EMBEDDED_TRAIN, check_labels, decompress, parse_idx, read_idx


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
    images, labels = (parse_idx(decompress(root.joinpath(f).read_bytes(), f"qucnn/data/{f}"), f"qucnn/data/{f}")
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


__all__ = ["EmbeddedMNIST", "IDXDataset", "ImageDataset"]
