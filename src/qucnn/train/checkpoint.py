"""Training checkpoints: sealed with a SHA-256 of their contents, written atomically
(:mod:`qucnn.utils.files`), read safely.

Checkpoints hold only tensors and primitive containers, so :func:`load_checkpoint` reads them with
``torch.load(weights_only=True)`` (no pickled code runs). :func:`save_checkpoint` records under
``"integrity"`` the SHA-256 of a canonical serialisation of everything else in the checkpoint (every tensor's
dtype, shape and bytes; every key, number and string), and :func:`load_checkpoint` recomputes it: a flipped
bit anywhere in the model, the optimizer state, the generator states or the position refuses to resume
("checkpoint corrupted") instead of silently diverging. A checkpoint whose weights or optimizer state hold
NaN or infinity is refused as well.

Checkpoints of format version 1 (written before the integrity check existed) are refused with a message
that says so: their contents cannot be verified. Resume them with the qucnn that wrote them, or start afresh.

Example:
    load_checkpoint("results/train/checkpoint.pt")["step"]
    # -> 125
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import torch

from ..utils.checks import MissingFileError, UsageError
from ..utils.files import atomic_save

CHECKPOINT_FORMAT = "qucnn-train-checkpoint"
CHECKPOINT_VERSION = 2
#: The key of the seal; its value is ``{"algorithm": "sha256", "digest": <hex>}``.
INTEGRITY_KEY = "integrity"
#: Parts of a checkpoint whose floating tensors must be finite for a resume.
FINITE_PARTS = ("model", "optimizer")


def _feed(h: Any, obj: Any) -> None:
    """Add ``obj`` to the hash ``h`` unambiguously: a type tag and a length before every item."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(f"T{t.dtype}{tuple(obj.shape)}{len(raw)}:".encode())
        h.update(raw)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, float):
        h.update(b"f" + struct.pack("<d", obj))
    elif obj is None or isinstance(obj, (bool, int, str)):
        text = repr(obj).encode()
        h.update(f"{type(obj).__name__}{len(text)}:".encode() + text)
    else:
        raise TypeError(f"a checkpoint holds tensors, numbers, strings and containers of them; got "
                        f"{type(obj).__name__}")


def checkpoint_digest(contents: dict) -> str:
    """The SHA-256 (hex) of ``contents`` without its ``"integrity"`` entry, over a canonical serialisation
    (every tensor by dtype, shape and bytes, on any device), so it survives a save and a load unchanged.

    Example:
        >>> checkpoint_digest({"w": torch.zeros(2)}) == checkpoint_digest({"w": torch.zeros(2, dtype=torch.float64)})
        False
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in contents.items() if k != INTEGRITY_KEY})
    return h.hexdigest()


def non_finite_entries(contents: dict) -> list[str]:
    """Names of the floating tensors in the model and optimizer parts of ``contents`` that hold NaN or inf."""
    bad: list[str] = []

    def visit(obj: Any, name: str) -> None:
        if isinstance(obj, torch.Tensor):
            if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
                bad.append(name)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                visit(value, f"{name}[{key!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                visit(value, f"{name}[{i}]")

    for part in FINITE_PARTS:
        visit(contents.get(part), part)
    return bad


def save_checkpoint(contents: dict, path: str | Path) -> Path:
    """Seal ``contents`` (a dict of tensors, numbers, strings and containers) with its digest and write it to
    ``path`` atomically: a crash or a full disk leaves the previous checkpoint as it was.

    Raises:
        OutputWriteError: the file could not be written (the message names the path and the errno).

    Example:
        save_checkpoint({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": 3, ...}, path)
    """
    sealed = {**contents, INTEGRITY_KEY: {"algorithm": "sha256", "digest": checkpoint_digest(contents)}}
    return atomic_save(sealed, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint written by :func:`qucnn.train.train`, verified (see the module docstring).

    Raises:
        MissingFileError: no file at ``path`` (a ``FileNotFoundError`` and a :class:`UsageError`).
        UsageError: the file is truncated or corrupted (its contents do not match its digest), not a qucnn
            training checkpoint, of an older format without a digest, or holds non-finite weights or
            optimizer state (the message names the file); nothing is modified.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad bytes
        first = str(err).splitlines()[0] if str(err) else ""
        raise UsageError(f"checkpoint corrupted: {path} is corrupt or truncated and cannot be read "
                         f"({type(err).__name__}: {first}); it was left as it is") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a qucnn training checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    if ckpt.get("version") == 1:
        raise UsageError(f"checkpoint {path} has format version 1, written before checkpoints carried an "
                         "integrity check, so its contents cannot be verified: resume it with the qucnn that wrote "
                         "it, or start afresh with --overwrite")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"checkpoint {path} has version {ckpt.get('version')!r}; this qucnn reads "
                         f"version {CHECKPOINT_VERSION}")
    seal = ckpt.get(INTEGRITY_KEY)
    if seal is None:
        raise UsageError(f"checkpoint corrupted: {path} carries no SHA-256 record of its contents (every checkpoint "
                         "of this version is written with one), so they cannot be verified; it was left as it is. "
                         "Resume from a good copy, or start afresh with --overwrite")
    if not isinstance(seal, dict) or seal.get("algorithm") != "sha256" or seal.get("digest") != checkpoint_digest(ckpt):
        raise UsageError(f"checkpoint corrupted: the contents of {path} do not match the SHA-256 recorded when it "
                         "was written (a damaged disk or copy?); it was left as it is. Resume from a good copy, "
                         "or start afresh with --overwrite")
    bad = non_finite_entries(ckpt)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise UsageError(f"checkpoint {path} holds NaN or infinite values in {', '.join(bad[:3])}{more}: a "
                         "resume would train on them; start afresh with --overwrite (a lower --lr may help)")
    return ckpt


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "INTEGRITY_KEY", "checkpoint_digest", "load_checkpoint",
           "non_finite_entries", "save_checkpoint"]
