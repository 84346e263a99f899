"""Functional form of the QuCNN layer (``qucnn.functional.quconv2d``), as ``torch.nn.functional`` is to
``torch.nn``. The implementation lives in :mod:`qucnn.nn.functional`.

Example:
    >>> import torch
    >>> quconv2d(torch.rand(2, 1, 6, 6), torch.rand(4, 3, 4, 2), kernel_size=4).shape
    torch.Size([2, 4, 3, 3])
"""

from .nn.functional import quconv2d
from .nn.settings import GRADIENT_MODES

__all__ = ["GRADIENT_MODES", "quconv2d"]
