"""One place that turns a user's ``--device`` string into a ``torch.device``."""

from __future__ import annotations

import torch

from .checks import UsageError


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a ``torch.device``; ``UsageError`` when CUDA is asked for
    and absent, or the index is out of range.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if not isinstance(name, str) or not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise UsageError(f"--device must be cpu or cuda (or cuda:N), got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available here (torch.cuda.is_available() is False, "
                             f"torch {torch.__version__}); use --device cpu")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(name)


def reads_back_freely(device: torch.device) -> bool:
    """Whether reading a value of a tensor on ``device`` back to Python costs nothing (the CPU): elsewhere it
    makes the host wait for the device, so code that must not synchronise takes another way there."""
    return device.type == "cpu"
