"""Hybrid networks whose first layer is a QuCNN layer, and their classical and frozen-filter twins.

A :class:`HybridNet` is ``first_layer`` (a :class:`~qucnn.nn.QuConv2d`, its free-filter twin
:class:`~qucnn.nn.free_filters.FreeFidelity2d` or an ``nn.Conv2d``) followed by a small classical head
described by a spec string (see :func:`build_head`). The default head,
``"bn,maxpool:2,fc:128,relu"``, was chosen by measurement (docs/training.md): BatchNorm puts the
fidelity maps (all in ``[0, 1]``, most near 0) on a useful scale, max-pooling halves the map, and one
hidden layer of 128 lets the network combine the filters non-linearly.

The head's random layers are written for data parallelism: :class:`GlobalBatchNorm` takes its batch
statistics over the whole global batch when ``torch.distributed`` runs with several processes, and
:class:`GlobalDropout` draws its mask for the whole global batch from its own generator and keeps the
rows of the local shard. A run on N processes then computes what a run on one process computes.

Example:
    >>> model = build_model("quantum", filters=8, kernel=4, layers=3, seed=0)
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core.geometry import ConvSpec
from ..utils.checks import UsageError
from ..utils.seeds import derive_seed
from .free_filters import FreeFidelity2d
from .layer import QuConv2d

DEFAULT_HEAD = "bn,maxpool:2,fc:128,relu"
MODEL_KINDS = ("quantum", "frozen", "classical", "fidelity-classical", "classical-matched")
HEAD_TOKENS = ("bn", "maxpool:K", "avgpool:K", "relu", "dropout:P", "fc:N")


class _AllReduceSum(torch.autograd.Function):
    """``all_reduce(SUM)`` with its adjoint: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        g = g.clone()
        dist.all_reduce(g)
        return g


def _distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm over channel dim 1 of ``(B, C)`` or ``(B, C, H, W)`` whose training statistics cover
    the global batch: with ``torch.distributed`` on several processes the sums are all-reduced (with
    autograd, so gradients flow across ranks as they would through one big batch). On one process it
    is exactly ``nn.BatchNorm2d`` / ``BatchNorm1d``.

    Example:
        >>> GlobalBatchNorm(8)(torch.rand(4, 8, 5, 5)).shape
        torch.Size([4, 8, 5, 5])
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 4):
            raise UsageError(f"GlobalBatchNorm expects (B, C) or (B, C, H, W), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """Batch-normalised ``x`` ``(B, C, ...)``; in training, statistics over the global batch of all ranks."""
        self._check_input_dim(x)
        if not self.training or _distributed_world() == 1:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply  # differentiable: gradients cross ranks as in one big batch
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = all_reduce(x.sum(dims)) / count
        shape = (1, -1) + (1,) * (x.dim() - 2)
        centred = x - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / count  # two passes: no cancellation
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * count / max(count.item() - 1, 1))
        out = centred / torch.sqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


class GlobalDropout(nn.Module):
    """Dropout whose mask comes from its own generator and is drawn for the global batch.

    ``shard = (offset, global_batch)`` (set by :func:`set_shard`) says which rows of the global batch
    this process holds; the mask is drawn for all ``global_batch`` rows and sliced, so every process
    draws the same numbers and the union of the shards sees the single-process mask. ``shard=None``
    draws for the local batch. The generator's state belongs in checkpoints (resume stays exact).

    Example:
        >>> drop = GlobalDropout(0.5, seed=0)
        >>> drop(torch.ones(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, p: float, seed: int = 0) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise UsageError(f"dropout probability must be in [0, 1), got {p!r}")
        self.p = p
        self.generator = torch.Generator().manual_seed(seed)
        self.shard: tuple[int, int] | None = None

    def extra_repr(self) -> str:
        """``p=...`` in ``repr``."""
        return f"p={self.p}"

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with dropout masks drawn per global example (the same on any number of ranks) while training."""
        if not self.training or self.p == 0:
            return x
        offset, total = (0, x.shape[0]) if self.shard is None else self.shard
        keep = torch.rand((total,) + tuple(x.shape[1:]), generator=self.generator,
                          device=self.generator.device) >= self.p
        keep = keep[offset:offset + x.shape[0]].to(x.device)
        return x * keep.to(x.dtype) / (1 - self.p)


def set_shard(model: nn.Module, offset: int, total: int) -> None:
    """Tell every :class:`GlobalDropout` in ``model`` that this batch is rows ``offset..`` of ``total``."""
    for module in model.modules():
        if isinstance(module, GlobalDropout):
            module.shard = (offset, total)


def _token_value(token: str, cast, name: str):
    try:
        return cast(token.split(":", 1)[1])
    except (IndexError, ValueError):
        raise UsageError(f"head token {token!r}: expected {name}") from None


def build_head(spec: str, channels: int, height: int, width: int, num_classes: int,
               seed: int = 0) -> nn.Sequential:
    """The classical head for feature maps ``(B, channels, height, width)``, ending in a linear layer
    to ``num_classes`` logits.

    ``spec`` is a comma-separated list of ``bn`` (:class:`GlobalBatchNorm` over channels or features),
    ``maxpool:K``, ``avgpool:K``, ``relu``, ``dropout:P`` (:class:`GlobalDropout`) and ``fc:N`` (a
    linear layer to N features; the maps are flattened before the first one). ``""`` or ``"linear"``
    is just the final linear layer. Initial weights depend only on ``seed``.

    Example:
        >>> build_head("bn,maxpool:2,fc:128,relu", 8, 25, 25, 10)[-1]
        Linear(in_features=128, out_features=10, bias=True)
    """
    if not isinstance(spec, str):
        raise TypeError(f"head must be a string like {DEFAULT_HEAD!r}, got {type(spec).__name__}")
    tokens = [t.strip() for t in spec.split(",") if t.strip() and t.strip() != "linear"]
    modules: list[nn.Module] = []
    shape: tuple[int, ...] = (channels, height, width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "head"))
        for i, token in enumerate(tokens):
            kind = token.split(":", 1)[0]
            if kind == "bn":
                modules.append(GlobalBatchNorm(shape[0]))
            elif kind in ("maxpool", "avgpool"):
                k = _token_value(token, int, f"{kind}:K with an int K >= 1")
                if len(shape) != 3 or k < 1 or k > min(shape[1:]):
                    raise UsageError(f"head token {token!r}: cannot pool maps of shape {shape}")
                modules.append(nn.MaxPool2d(k) if kind == "maxpool" else nn.AvgPool2d(k))
                shape = (shape[0], shape[1] // k, shape[2] // k)
            elif kind == "relu":
                modules.append(nn.ReLU())
            elif kind == "dropout":
                modules.append(GlobalDropout(_token_value(token, float, "dropout:P with 0 <= P < 1"),
                                             seed=derive_seed(seed, "dropout", i)))
            elif kind == "fc":
                n = _token_value(token, int, "fc:N with an int N >= 1")
                if n < 1:
                    raise UsageError(f"head token {token!r}: expected fc:N with N >= 1")
                if len(shape) == 3:
                    modules.append(nn.Flatten())
                modules.append(nn.Linear(math.prod(shape), n))
                shape = (n,)
            else:
                raise UsageError(f"unknown head token {token!r} in {spec!r}; expected a comma-separated list "
                                 f"of {', '.join(HEAD_TOKENS)}")
        if len(shape) == 3:
            modules.append(nn.Flatten())
        modules.append(nn.Linear(math.prod(shape), num_classes))
    return nn.Sequential(*modules)


def _first_output_shape(layer: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    c, h, w = input_shape
    if isinstance(layer, (QuConv2d, FreeFidelity2d)):
        return (layer.out_channels,) + layer.output_shape(h, w)
    if isinstance(layer, nn.Conv2d):
        spec = ConvSpec.make(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        return (layer.out_channels,) + spec.output_size(h, w)
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, c, h, w)).shape[1:])  # type: ignore[return-value]


class HybridNet(nn.Module):
    """``first_layer`` (quantum or classical convolution) followed by a classical head.

    Args:
        first_layer: a :class:`QuConv2d`, an ``nn.Conv2d``, or any module mapping ``(B, C, H, W)`` to maps.
        head: a spec for :func:`build_head` (default :data:`DEFAULT_HEAD`) or a ready ``nn.Module``.
        input_shape: ``(C, H, W)`` of one image.
        num_classes: logits out.
        seed: initial weights of the head.

    Shapes: ``(B, C, H, W)`` -> logits ``(B, num_classes)``.

    Example:
        >>> net = HybridNet(QuConv2d(1, 4, 4, generator=torch.Generator().manual_seed(0)))
        >>> net(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """

    def __init__(self, first_layer: nn.Module, head: str | nn.Module = DEFAULT_HEAD,
                 input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(first_layer, nn.Module):
            raise TypeError(f"first_layer must be an nn.Module, got {type(first_layer).__name__}")
        if len(input_shape) != 3:
            raise UsageError(f"input_shape must be (C, H, W), got {input_shape!r}")
        self.first = first_layer
        if isinstance(head, nn.Module):
            self.head = head
        else:
            maps = _first_output_shape(first_layer, tuple(input_shape))
            if min(maps) < 1:
                raise UsageError(f"the first layer maps inputs of shape {tuple(input_shape)} to {maps}: the kernel "
                                 "does not fit the image (use a smaller kernel or stride)")
            self.head = build_head(head, *maps, num_classes, seed)
        self.head_spec = head if isinstance(head, str) else None

    @property
    def quantum_layer(self) -> QuConv2d | None:
        """The :class:`QuConv2d` first layer, or ``None`` for a classical network."""
        return self.first if isinstance(self.first, QuConv2d) else None

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, C, H, W)``: the first layer, then the head."""
        return self.head(self.first(x))


def matched_filters(kind: str, filters: int, kernel: int, layers: int, channels: int = 1) -> int:
    """Output channels of the ``"classical-matched"`` twin: bias-free ``kernel x kernel`` filters, as many as
    make its weights equal the quantum layer's ``filters * layers * 2 n`` angles (rounded down; exact for the
    default, ``8 * 3 * 8 = 192 = 12 * 16``). For other kinds, ``filters``.

    Example:
        >>> matched_filters("classical-matched", 8, 4, 3)
        12
    """
    if kind != "classical-matched":
        return filters
    n_qubits = ConvSpec.make(kernel).n_qubits(channels)
    return max(1, filters * layers * 2 * n_qubits // (channels * kernel * kernel))


def build_model(kind: str = "quantum", *, filters: int = 8, kernel: int = 4, stride: int = 1, layers: int = 3,
                shots: int | None = None, gradient: str = "autograd", gradient_shots: int | None = None,
                gradient_budget: int | None = None, seed: int = 0, head: str = DEFAULT_HEAD,
                input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                backend: str = "torch") -> HybridNet:
    """A :class:`HybridNet` of one of five kinds, all with the same head spec (and, for the same number of
    maps, the same head weights for a seed):

    - ``"quantum"``: :class:`QuConv2d` with ``filters`` filters of ``kernel x kernel``, trained;
    - ``"frozen"``: the same layer with the same initial angles, ``theta.requires_grad_(False)``;
    - ``"classical"``: ``nn.Conv2d(C, filters, kernel, stride)`` (with bias);
    - ``"fidelity-classical"``: :class:`~qucnn.nn.free_filters.FreeFidelity2d`, the same fidelity map with a
      free unit-norm complex filter vector (no ansatz), trained;
    - ``"classical-matched"``: ``nn.Conv2d(C, k, kernel, stride, bias=False)`` with ``k`` filters chosen so its
      weights equal the quantum layer's angles (:func:`matched_filters`: 12 filters = 192 weights for the
      default 8 filters x 3 layers x 8 angles); its head sees ``k`` maps.

    The quantum layer's generator (initial angles, then every shot draw) is seeded from ``seed``; its circuits
    run on ``backend``.

    Example:
        >>> build_model("frozen", filters=2, seed=1).first.theta.requires_grad
        False
        >>> sum(p.numel() for p in build_model("classical-matched").first.parameters())
        192
    """
    if kind not in MODEL_KINDS:
        raise UsageError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    c = input_shape[0]
    if kind in ("classical", "classical-matched"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "conv"))
            first: nn.Module = nn.Conv2d(c, matched_filters(kind, filters, kernel, layers, c), kernel, stride,
                                         bias=kind == "classical")
    elif kind == "fidelity-classical":
        first = FreeFidelity2d(c, filters, kernel, stride,
                               generator=torch.Generator().manual_seed(derive_seed(seed, "free filters")))
    else:
        first = QuConv2d(c, filters, kernel, stride=stride, layers=layers, shots=shots, gradient=gradient,
                         gradient_shots=gradient_shots, gradient_budget=gradient_budget, backend=backend,
                         generator=torch.Generator().manual_seed(derive_seed(seed, "filters")))
        if kind == "frozen":
            first.theta.requires_grad_(False)
    return HybridNet(first, head, input_shape, num_classes, seed)


def dropout_generators(model: nn.Module) -> list[torch.Generator]:
    """The generators of every :class:`GlobalDropout` in ``model``, in module order (for checkpoints)."""
    return [m.generator for m in model.modules() if isinstance(m, GlobalDropout)]


__all__ = ["DEFAULT_HEAD", "MODEL_KINDS", "GlobalBatchNorm", "GlobalDropout", "HybridNet", "build_head",
           "build_model", "dropout_generators", "matched_filters", "set_shard"]
