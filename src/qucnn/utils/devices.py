"""Devices: a user's ``--device`` string as a ``torch.device``, whether reading back from a device is free, and a
context without autocast."""

from __future__ import annotations

import contextlib

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


def autocast_off(device: torch.device):
    """A context without autocast on ``device`` (a no-op context when autocast is off there already): exact
    fidelities are computed in the input's own dtype, float32 at least."""
    try:
        on = torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 takes no device type
        on = torch.is_autocast_enabled() if device.type == "cuda" else torch.is_autocast_cpu_enabled()
    return torch.autocast(device_type=device.type, enabled=False) if on else contextlib.nullcontext()
