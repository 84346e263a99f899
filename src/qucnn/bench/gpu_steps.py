"""W3's GPU rows of ``qucnn bench --device cuda`` (:mod:`qucnn.bench.gpu` has W4's and the goals): a training step
of conv -> flatten -> linear 10 per conv implementation, and, on CUDA, the ``qucnn-triton`` step captured in a
CUDA graph (:func:`captured_step`) and an epoch of :data:`EPOCH_IMAGES` images of the quantum model and its
classical twin (:func:`epoch_case`), timed warm, their first epoch reported beside.

The implementations compared (:func:`implementations`), the same for W4:

- ``qucnn-triton``: ``QuConv2d(..., backend="triton")``, the fused kernels (what ``"torch"`` runs on CUDA);
- ``qucnn-torch``: the torch backend's own CUDA route, ``TorchBackend(RoutePolicy(engine="fused"))``;
- ``torch-two-conv``: :class:`TwoConv`, the plain formulation differentiated by autograd: the in-run anchor.

Example::

    cases = w3_cases(64, "cuda")
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ..backends.policy import RoutePolicy
from ..backends.reference import plain_fidelity
from ..backends.registry import available_backends
from ..backends.torch_backend import TorchBackend
from ..core.ansatz import ansatz_state
from ..core.geometry import ConvSpec
from ..datasets import load_embedded_mnist
from ..nn.layer import QuConv2d
from .runner import Case
from .workloads import _step

SEED = 0
#: Images of the W3 epoch rows (as ``qucnn train``'s default training split).
EPOCH_IMAGES = 7000


class TwoConv(nn.Module):
    """The maps as plain torch: filter states from the closed-form ansatz, then two ``conv2d`` (overlaps, norms)
    and a division, all differentiated by autograd. ``(B, 1, H, W) -> (B, K, H', W')``."""

    def __init__(self, theta: torch.Tensor, kernel: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.detach().clone())
        self.spec = ConvSpec.make(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fidelity maps ``(B, K, H', W')`` of ``x`` ``(B, C, H, W)`` by two plain convolutions."""
        return plain_fidelity(x, ansatz_state(self.theta), self.spec)


def implementations(filters: int, device: str, **kw) -> dict[str, nn.Module]:
    """The conv implementations the GPU rows compare, by row name: ``qucnn-triton`` (only where that backend is
    available), ``qucnn-torch`` and ``torch-two-conv``, with the same seeded angles (``filters`` 4x4 filters,
    3 layers; ``kw`` goes to :class:`~qucnn.nn.layer.QuConv2d`, e.g. ``shots``), on ``device``.

    Example: ``implementations(8, "cpu")["torch-two-conv"](x)`` -> maps ``(B, 8, H - 3, W - 3)``."""
    base = QuConv2d(1, filters, 4, layers=3, backend=TorchBackend(RoutePolicy(engine="fused")),
                    generator=torch.Generator().manual_seed(SEED), **kw)
    out = {}
    if "triton" in available_backends():
        fused = QuConv2d(1, filters, 4, layers=3, backend="triton", **kw)
        fused.load_state_dict(base.state_dict())
        out["qucnn-triton"] = fused.to(device)
    out["qucnn-torch"] = base.to(device)
    out["torch-two-conv"] = TwoConv(base.theta, 4).to(device)
    return out


def device_sync(device: str) -> Callable[[], None] | None:
    """What waits for ``device``'s queued work before a clock is read: ``torch.cuda.synchronize`` on CUDA, else
    ``None`` (the CPU runs synchronously). Example: ``device_sync("cpu")`` -> ``None``."""
    return torch.cuda.synchronize if device.startswith("cuda") else None


def _model(conv: nn.Module, device: str) -> nn.Sequential:
    """W3's network around ``conv``: conv -> flatten -> linear 10, its linear layer seeded."""
    torch.manual_seed(SEED)
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(8 * 25 * 25, 10)).to(device)


def captured_step(conv: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[object, bool]:
    """``(step, captured)``: W3's training step of conv -> flatten -> linear 10 on ``x``, ``y``, captured in a CUDA
    graph on CUDA (``step()`` replays it, returns the loss), else eager. Example: ``loss = captured_step(c, x,
    y)[0]()``."""
    model = _model(conv, x.device.type)
    cuda = x.device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=cuda)
    static_x, static_y = x.clone(), y.clone()

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)  # a graph replays into the same gradient buffers
        loss = nn.functional.cross_entropy(model(static_x), static_y)
        loss.backward()
        opt.step()
        return loss.detach()

    if not cuda:
        return step, False
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: kernels compiled, gradients and optimizer state allocated
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    if hasattr(conv, "total_cost"):  # the layer's cost ledger reads its pending device counts now, not in the graph
        conv.total_cost()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return loss
    return replay, True


def epoch_case(impl: str, conv: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int,
               device: str) -> Case:
    """A :class:`Case` training conv -> flatten -> linear 10 for an epoch of ``images`` in batches of ``batch``
    (Adam, eager); its first call (the runner's warm-up, first-use compilation included) is timed on its own:
    ``first_epoch_s`` in the row and its note. Example: ``epoch_case("c", nn.Conv2d(1, 8, 4), x, y, 64, "cpu")``."""
    model = _model(conv, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [(images[i:i + batch].to(device), labels[i:i + batch].to(device))
               for i in range(0, len(images), batch)]
    sync = device_sync(device)

    def epoch() -> torch.Tensor:
        start = time.perf_counter()
        for xb, yb in batches:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        if "first_epoch_s" not in case.extra:
            if sync is not None:
                sync()
            case.extra["first_epoch_s"] = first = time.perf_counter() - start
            case.note = (f"an epoch of {len(images):,} images in batches of {batch}, warm; the first epoch of this "
                         f"process took {first:.3g} s (first-use compilation included)")
        return loss.detach()

    case = Case(impl, epoch, len(images), "images", "", sync=sync, device=device)
    return case


def w3_cases(batch: int, device: str, extras: bool | None = None, epoch_images: int = EPOCH_IMAGES) -> list[Case]:
    """W3 on ``device``: a training step (forward, backward, Adam) of conv -> flatten -> linear 10 on ``batch``
    embedded MNIST images per conv implementation; ``extras`` (default: on CUDA): first the epochs of
    :func:`epoch_case` (their first meets the kernels uncompiled), last :func:`captured_step`."""
    data = load_embedded_mnist()
    x, y = data.train_images[:batch].to(device), data.train_labels[:batch].to(device)
    extras = device.startswith("cuda") if extras is None else extras
    triton = "triton" in available_backends()
    cases = []
    if extras:
        repeat = -(-epoch_images // len(data.train_images))
        images = data.train_images.repeat(repeat, 1, 1, 1)[:epoch_images]
        labels = data.train_labels.repeat(repeat)[:epoch_images]
        if triton:
            cases.append(epoch_case("qucnn-triton-epoch", implementations(8, device)["qucnn-triton"], images, labels,
                                    batch, device))
        torch.manual_seed(SEED)
        cases.append(epoch_case("torch-conv2d-epoch", nn.Conv2d(1, 8, 4), images, labels, batch, device))
    notes = {"qucnn-triton": "QuConv2d(1, 8, 4, layers=3, backend='triton'), exact, autograd",
             "qucnn-torch": "QuConv2d on the fused engine (RoutePolicy(engine='fused'))",
             "torch-two-conv": "the same maps as two conv2d + autograd (plain torch), in the conv's place"}
    cases += [Case(impl, _step(module, x, y), batch, "images", notes[impl], sync=device_sync(device), device=device)
              for impl, module in implementations(8, device).items()]
    if extras and triton:
        try:
            step, captured = captured_step(implementations(8, device)["qucnn-triton"], x, y)
            note = "the step captured in a CUDA graph" if captured else "no CUDA device: the same step, eager"
        except Exception as err:  # noqa: BLE001 -- a capture that fails becomes the row's note (measure: skipped)
            def step(err=err):
                raise RuntimeError(f"CUDA graph capture failed: {err}")
            note = ""
        cases.append(Case("qucnn-triton-graph", step, batch, "images", note, sync=device_sync(device), device=device))
    return cases


__all__ = ["EPOCH_IMAGES", "SEED", "TwoConv", "captured_step", "device_sync", "epoch_case", "implementations",
           "w3_cases"]
