"""The fused engine: exact fidelity maps as one autograd node, on any torch device (the ``"torch"`` backend's
engine on the CPU, and on CUDA where the Triton engine does not take the call).

Which route (:mod:`.parts`), and how much is computed at once, follows the engine's resolved
:class:`~qucnn.backends.RoutePolicy`: on the CPU, inputs up to ``save_elements`` overlaps run in one pass and keep
what the backward needs, larger ones run in chunks of the batch of ``chunk_elements`` overlaps (cache-sized) and
keep only ``x``; on a GPU both limits follow the free device memory, so a large batch runs in one or a few passes.
The first backward reuses the kept overlaps in place; a backward that must itself be differentiable
(``create_graph=True``) differentiates the plain composition (:func:`~qucnn.backends.reference.plain_fidelity`).

Filter states come from the closed-form ansatz (adjoint-method backward). On the CPU, without a gradient to
record, the states of an angle tensor are remembered and reused while it holds the same values (compared exactly,
a few hundred numbers), so repeated inference prepares the filters once; a GPU would have to synchronise to
compare, so there the states are always recomputed.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from ...core.ansatz import ansatz_state
from ...core.geometry import ConvSpec
from ...core.windows import scale_input
from ...utils.devices import reads_back_freely
from ..reference import plain_fidelity
from ..simulator import SimulatorBackend, closed_form_circuit_maps
from . import parts

#: Filter batches up to this many angles are remembered between calls without a gradient.
CACHE_MAX_ANGLES = 1 << 16


def _chunks(batch: int, per_item: int, limit: int) -> list[tuple[int, int]]:
    step = max(1, limit // max(per_item, 1))
    return [(i, min(i + step, batch)) for i in range(0, batch, step)]


def _unfolds(weight: Tensor, route: str, x_needs_grad: bool) -> bool:
    """Whether the patch-matrix route runs: by ``route``, or, for ``"auto"``, when ``x`` needs no gradient and
    the patch matrix is no bigger than the overlaps it replaces (``C*kh*kw <= 2K``)."""
    if route == "patches":
        return True
    return route == "auto" and not x_needs_grad and weight[0].numel() <= weight.shape[0]


def _maps_nograd(x: Tensor, weight: Tensor, spec: ConvSpec, policy, unfolded: bool,
                 lift: float) -> tuple[Tensor, Tensor]:
    """``(F, valid)`` in chunks of ``policy.chunk_elements`` overlaps."""
    ho, wo = spec.output_size(*x.shape[-2:])
    k = weight.shape[0] // 2
    out = torch.empty((x.shape[0], k, ho, wo), dtype=x.dtype, device=x.device)
    band = policy.band_max_size
    valid = []  # made after each chunk's temporaries, not before them: see benchmarks/ab_forward.py on page faults
    for i, j in _chunks(x.shape[0], 2 * k * ho * wo, policy.chunk_elements):
        if unfolded:
            isq = parts.unfolded_parts(x[i:j], weight, spec, band, lift, out=out[i:j])[2]
        else:
            isq = parts.conv_parts(x[i:j], weight, spec, band, lift, out=out[i:j])[1]
        valid.append(isq > 0)
    return out, valid[0] if len(valid) == 1 else torch.cat(valid)


class _FusedMaps(torch.autograd.Function):
    """``(F, valid)`` from ``(x, states)``; ``valid`` has no gradient.

    Up to ``save_elements`` overlap elements: one pass, and the overlaps (and, by the patch-matrix route, the
    patches) stay on ``ctx`` for the first backward, which turns them into ``dF/dz`` in place. Larger inputs,
    and a second backward (``retain_graph``), recompute them chunk by chunk. Because the backward reuses them
    in place, they live on ``ctx`` rather than in ``save_for_backward``: saved-tensor hooks (activation
    checkpointing, CPU offloading) do not see them, which costs memory, not correctness.
    """

    @staticmethod
    def forward(ctx, x: Tensor, states: Tensor, spec: ConvSpec, policy, lift: float):
        weight = parts.filter_weight(states, x.shape[1], spec.kernel, x.dtype)
        ctx.weight, ctx.spec, ctx.policy, ctx.lift = weight, spec, policy, lift  # intermediates, settings
        ho, wo = spec.output_size(*x.shape[-2:])
        per_item = weight.shape[0] * ho * wo
        ctx.unfolded = _unfolds(weight, policy.route, ctx.needs_input_grad[0])
        ctx.kept = None
        band = policy.band_max_size
        if x.shape[0] * per_item > policy.save_elements:  # large input: keep only x, recompute in the backward
            ctx.spans = _chunks(x.shape[0], per_item, policy.chunk_elements)
            ctx.save_for_backward(x, states, None)
            fid, valid = _maps_nograd(x, weight, spec, policy, ctx.unfolded, lift)
        else:
            ctx.spans = [(0, x.shape[0])]
            if ctx.unfolded:
                z, patches, isq, fid = parts.unfolded_parts(x, weight, spec, band, lift)
                ctx.kept = (z, patches)
            else:
                z, isq, fid = parts.conv_parts(x, weight, spec, band, lift)
                ctx.kept = (z, isq)
            valid = isq > 0
            ctx.save_for_backward(x, states, fid if ctx.needs_input_grad[0] else None)
        ctx.mark_non_differentiable(valid)
        return fid, valid

    @staticmethod
    def backward(ctx, g: Tensor, _valid_grad):
        need_x, need_w = ctx.needs_input_grad[:2]
        x, states, fid_saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, by the plain composition
            ctx.kept = None
            inputs = [t for t, need in ((x, need_x), (states, need_w)) if need]
            with torch.enable_grad():
                out = plain_fidelity(x, states, ctx.spec)
            grads = iter(torch.autograd.grad(out, inputs, g, create_graph=True))
            return (next(grads) if need_x else None), (next(grads) if need_w else None), None, None, None
        weight, spec, band, lift = ctx.weight, ctx.spec, ctx.policy.band_max_size, ctx.lift
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        kept, ctx.kept = ctx.kept, None  # used up in place below: a second backward recomputes
        for i, j in ctx.spans:
            if ctx.unfolded:
                z, patches = kept if kept is not None else parts.unfolded_parts(x[i:j], weight, spec, band, lift)[:2]
                if grad_w is not None:
                    parts.unfolded_backward(z, patches, g[i:j], grad_w)
                if grad_x is not None:  # the patch route only runs for x without a gradient, unless forced
                    grad_x[i:j] = parts.input_grad(x[i:j], weight, spec, band, lift, g[i:j])
            else:
                z, isq, fid = (*kept, fid_saved) if kept is not None else \
                    parts.conv_parts(x[i:j], weight, spec, band, lift, fid=need_x)
                parts.conv_backward(x[i:j], weight, spec, z, isq, fid if need_x else None, g[i:j],
                                    None if grad_x is None else grad_x[i:j], grad_w)
        return grad_x, None if grad_w is None else parts.states_grad(grad_w, states), None, None, None


def fused_maps(x: Tensor, states: Tensor, spec: ConvSpec, policy, lift: float) -> tuple[Tensor, Tensor]:
    """``(F, valid)`` of a prepared input ``x`` with its norms' ``lift`` (:func:`~qucnn.core.windows.scale_input`;
    symmetric zero padding in ``spec``) and ``states`` ``(K, d)``, in ``x``'s dtype; one autograd node when a
    gradient is recorded. ``policy``: a resolved :class:`~qucnn.backends.RoutePolicy`."""
    if torch.is_grad_enabled() and (x.requires_grad or states.requires_grad):
        return _FusedMaps.apply(x, states, spec, policy, lift)
    weight = parts.filter_weight(states, x.shape[1], spec.kernel, x.dtype)
    return _maps_nograd(x, weight, spec, policy, _unfolds(weight, policy.route, False), lift)


class FusedEngine(SimulatorBackend):
    """The fused PyTorch engine of the ``"torch"`` backend, for one resolved
    :class:`~qucnn.backends.RoutePolicy` (made by :meth:`RoutePolicy.resolve`, which reuses it)."""

    name = "torch"

    def __init__(self, policy) -> None:
        self.policy = policy
        self._cache: dict[int, tuple] = {}

    def __repr__(self) -> str:
        return f"FusedEngine(policy={self.policy!r})"

    def __getstate__(self) -> dict:  # the cache holds weak references: copies and pickles start without it
        return {"policy": self.policy}

    def __setstate__(self, state: dict) -> None:
        self.policy, self._cache = state["policy"], {}

    def maps(self, x: Tensor, states: Tensor, spec: ConvSpec) -> tuple[Tensor, Tensor]:
        prepared, spec = spec.prepare(x)
        scaled, lift = scale_input(prepared)
        fid, valid = fused_maps(scaled, states, spec, self.policy, lift)
        return fid.to(x.dtype), valid

    def circuit_maps(self, patches: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
        return closed_form_circuit_maps(patches, states)  # this engine's maps are the closed form (tested)

    def filter_states(self, theta: Tensor) -> Tensor:
        flat = theta.reshape((-1,) + theta.shape[-3:])
        if (not reads_back_freely(theta.device) or (torch.is_grad_enabled() and theta.requires_grad)
                or theta.numel() > CACHE_MAX_ANGLES):
            return ansatz_state(flat).reshape(theta.shape[:-3] + (-1,))
        hit = self._cache.get(id(theta))
        if (hit is not None and hit[0]() is theta and hit[1].shape == theta.shape and hit[1].dtype == theta.dtype
                and torch.equal(hit[1], theta)):
            return hit[2].clone()  # a copy: the caller may change it in place
        states = ansatz_state(flat).reshape(theta.shape[:-3] + (-1,))
        self._cache = {k: v for k, v in self._cache.items() if v[0]() is not None}
        self._cache[id(theta)] = (weakref.ref(theta), theta.detach().clone(), states.clone())
        return states


__all__ = ["CACHE_MAX_ANGLES", "FusedEngine", "fused_maps"]
