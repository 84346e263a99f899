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


import torch  # noqa: F401  (the examples above use it)

from .idx import EMBEDDED_TRAIN, IDX_DTYPES, check_labels, parse_idx, read_idx
from .images import EmbeddedMNIST, IDXDataset, ImageDataset
from .splits import ImageSplits, load_dataset, load_embedded_mnist, load_idx_dir, subset

__all__ = ["EMBEDDED_TRAIN", "EmbeddedMNIST", "IDXDataset", "IDX_DTYPES", "ImageDataset", "ImageSplits",
           "check_labels", "load_dataset", "load_embedded_mnist", "load_idx_dir", "parse_idx", "read_idx", "subset"]
