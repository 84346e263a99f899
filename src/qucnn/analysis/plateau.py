"""Barren-plateau study of the QuCNN filter: how the gradient of ``F = |<f(theta)|x>|^2`` concentrates.

For ``n`` qubits and ansatz depth ``L`` (the Fig. 1 ansatz, ``L`` layers) we draw ``S`` pairs
(uniform angles ``theta`` in ``[0, 2 pi)``, a real MNIST patch ``x``), compute the exact gradient of
``F = swap_test(f(theta), x)`` by autograd in one batched call, and report the sample variance and
mean of ``dF/dtheta`` for the FIRST parameter (``theta[0, 0, 0]``: the RX on qubit 0 of layer 0) and
the LAST one (``theta[L-1, n-1, 1]``: the RZ on qubit ``n-1`` of layer ``L-1``), and of ``F`` itself.

Reference values for a Haar-random (2-design) filter state and a fixed data state ``x``
(``d = 2**n``, derivation in ``docs/plateau.md``):

- ``Var[F] = (d - 1) / (d**2 (d + 1))`` and ``E[F] = 1/d`` (``F`` is Beta(1, d-1) distributed);
- first parameter (the circuit after it a 2-design): ``Var[dF/dtheta] = 1 / (2 d (d + 1))``;
- last parameter (the circuit before it a 2-design, then the fixed CNOT ring ``W``):
  ``Var[dF/dtheta] = (1 - g**2) / (2 d (d + 1))`` with ``g = <x| W Z_{n-1} W^dag |x>``.

All of them decay like ``4**-n``: the fit ``log Var = a - n log b`` gives ``b = 4`` there.

Example:
    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0]]).repeat(4000, 1)         # |0>, 1 qubit
    >>> gen = torch.Generator().manual_seed(0)
    >>> cell = measure_cell(x, sample_angles(4000, 1, 1, gen))
    >>> abs(float(cell.grad_first.var()) - 1 / 8) < 0.01       # Var[-sin(a)/2] = 1/8
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..core.ansatz import FilterAnsatz
from ..core.encoding import amplitude_encode
from ..core.simulator import free_bytes
from ..core.swap_test import swap_test
from ..utils.checks import UsageError, optional_positive_int, positive_int
from .plateau_theory import (
    fit_decay,
    haar_fidelity_mean,
    haar_fidelity_variance,
    haar_grad_variance_first,
    haar_grad_variance_last,
    last_generator_overlap,
    shot_noise_variance,
    variance_with_stderr,
)

#: Shot budgets the study compares the gradient spread with (shots per SWAP-test circuit).
SHOT_BUDGETS = (1000, 10_000)
PARAMS = ("first", "last")


# ----------------------------------------------------------------------------- data and angles

def kernel_for(n_qubits: int, channels: int = 1, image_size: int = 28) -> int:
    """The side ``k`` of the square patch whose ``C*k*k`` values need exactly ``n_qubits`` qubits.

    The largest ``k`` with ``C*k*k <= 2**n`` (so the register is as full as possible), provided
    ``C*k*k > 2**(n-1)``. Raises ``ValueError`` (with a channel count that works) when none exists.

    Example:
        >>> [kernel_for(n) for n in (2, 4, 6, 8)]
        [2, 4, 8, 16]
        >>> kernel_for(3, channels=2)
        2
    """
    for name, value in (("n_qubits", n_qubits), ("channels", channels)):
        positive_int(value, name)
    k = math.isqrt(2**n_qubits // channels)
    if k >= 1 and channels * k * k > 2 ** (n_qubits - 1) and k <= image_size:
        return k
    ok = [c for c in range(1, 65) if _has_kernel(n_qubits, c, image_size)]
    hint = f"; --channels {ok[0]} gives {n_qubits} qubits" if ok else ""
    raise UsageError(
        f"no k x k patch with {channels} channel(s) needs exactly {n_qubits} qubits (C*k*k must lie in "
        f"({2 ** (n_qubits - 1)}, {2 ** n_qubits}] with k <= {image_size}){hint}")


def _has_kernel(n: int, c: int, image_size: int) -> bool:
    k = math.isqrt(2**n // c)
    return 1 <= k <= image_size and c * k * k > 2 ** (n - 1)


def sample_patches(images: Tensor, n_qubits: int, samples: int, generator: torch.Generator,
                   channels: int = 1, max_rounds: int = 100) -> Tensor:
    """Amplitude-encoded random patches: real unit vectors ``(samples, 2**n_qubits)`` in float64.

    ``images`` is ``(N, 1, H, W)`` (or ``(N, H, W)``). Each patch takes a ``k x k`` window
    (``k = kernel_for(n_qubits, channels)``) at a uniformly random position; its ``C`` channels are
    the same window of ``C`` training images drawn independently (with replacement). All-zero
    patches are rejected and redrawn.

    Example:
        >>> imgs = torch.rand(10, 1, 28, 28)
        >>> sample_patches(imgs, 4, 5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 16])
    """
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise UsageError(f"expected single-channel images (N, 1, H, W), got {tuple(images.shape)}")
        images = images[:, 0]
    if images.dim() != 3:
        raise UsageError(f"expected images (N, 1, H, W) or (N, H, W), got {tuple(images.shape)}")
    n_img, height, width = images.shape
    k = kernel_for(n_qubits, channels, min(height, width))
    images = images.to(torch.float64)
    kept: list[Tensor] = []
    have = 0
    for _ in range(max_rounds):
        draw = 2 * (samples - have) + 16
        idx = torch.randint(n_img, (draw, channels), generator=generator)
        rows = torch.randint(height - k + 1, (draw,), generator=generator)
        cols = torch.randint(width - k + 1, (draw,), generator=generator)
        offs = torch.arange(k)
        r = (rows[:, None] + offs)[:, None, :, None]          # (draw, 1, k, 1)
        c = (cols[:, None] + offs)[:, None, None, :]          # (draw, 1, 1, k)
        patches = images[idx[:, :, None, None], r, c].reshape(draw, channels * k * k)
        patches = patches[patches.abs().amax(-1) > 0]
        kept.append(patches)
        have += patches.shape[0]
        if have >= samples:
            return amplitude_encode(torch.cat(kept)[:samples])
    raise UsageError(f"found only {have} non-zero {k}x{k} patches in {max_rounds} rounds; are the images blank?")


def sample_angles(samples: int, layers: int, n_qubits: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Uniform angles in ``[0, 2 pi)``: ``(samples, layers, n_qubits, 2)``, drawn on the CPU so that
    every device sees the same numbers."""
    return 2 * math.pi * torch.rand(samples, layers, n_qubits, 2, generator=generator, dtype=dtype)


def cell_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded from ``(seed, *keys)``: each cell's draws do not depend on the other cells."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# ----------------------------------------------------------------------------- one cell

@dataclass
class Cell:
    """Per-sample values of one (qubits, depth) cell, each ``(S,)`` on the CPU in float64."""

    fidelity: Tensor
    grad_first: Tensor
    grad_last: Tensor

    def grad(self, param: str) -> Tensor:
        """The sampled gradients ``(samples,)`` of the ``"first"`` or ``"last"`` ansatz parameter."""
        return {"first": self.grad_first, "last": self.grad_last}[param]


#: Fraction of the free memory one batched simulation (with its autograd graph) may use.
MEMORY_FRACTION = 0.25


def graph_bytes_per_sample(n_qubits: int, layers: int, dtype: torch.dtype = torch.float64) -> int:
    """Memory of one sample's forward pass and autograd graph: autograd keeps about one state per gate
    (``3 n L`` gates: RX, RZ, CNOT per qubit and layer), plus a few working copies."""
    itemsize = 2 * torch.empty((), dtype=dtype).element_size()  # complex amplitudes
    return (3 * n_qubits * layers + 8) * 2**n_qubits * itemsize


def auto_batch_size(n_qubits: int, layers: int, samples: int, device: torch.device,
                    dtype: torch.dtype = torch.float64) -> int:
    """The largest chunk (at most ``samples``) whose graph fits in ``MEMORY_FRACTION`` of the free memory."""
    fit = int(MEMORY_FRACTION * free_bytes(device)) // graph_bytes_per_sample(n_qubits, layers, dtype)
    return max(1, min(samples, fit))


def measure_cell(data: Tensor, theta: Tensor, batch_size: int | None = None) -> Cell:
    """Exact ``F = |<f(theta_s)|x_s>|^2`` and ``dF/dtheta`` (first, last parameter) for each sample ``s``.

    ``data`` ``(S, 2**n)`` are unit data states, ``theta`` ``(S, L, n, 2)`` the filter angles (on the
    device to compute on). One batched ``FilterAnsatz.state`` call and one batched overlap per chunk
    of ``batch_size`` samples; the default is all ``S`` at once unless the autograd graph would take
    more than ``MEMORY_FRACTION`` of the free memory (see :func:`auto_batch_size`). The gradient comes
    from autograd; chunking does not change the result.
    """
    if theta.dim() != 4 or theta.shape[-1] != 2:
        raise UsageError(f"theta must have shape (S, L, n, 2), got {tuple(theta.shape)}")
    samples, layers, n, _ = theta.shape
    if data.shape != (samples, 2**n):
        raise UsageError(f"data must have shape ({samples}, {2 ** n}) to match theta, got {tuple(data.shape)}")
    ansatz = FilterAnsatz(n, layers)
    step = auto_batch_size(n, layers, samples, theta.device, theta.dtype) if batch_size is None else batch_size
    out: list[tuple[Tensor, Tensor]] = []
    for start in range(0, samples, step):
        th = theta[start:start + step].detach().clone().requires_grad_(True)
        x = data[start:start + step].to(device=th.device, dtype=th.dtype)
        fid = swap_test(ansatz.state(th), x)
        (grad,) = torch.autograd.grad(fid.sum(), th)
        out.append((fid.detach(), grad))
    fid = torch.cat([f for f, _ in out]).cpu().double()
    grad = torch.cat([g for _, g in out]).cpu().double()
    return Cell(fid, grad[:, 0, 0, 0], grad[:, -1, -1, 1])


# ----------------------------------------------------------------------------- the study

def parse_int_list(text: str, name: str = "value") -> list[int]:
    """``"2,4,6"``, ``"1-12"`` or a mix (``"1-3,6"``) -> sorted distinct ints (``ValueError`` otherwise)."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise UsageError(f"{name}: expected a list like '2,4,6' or a range like '1-12', got {text!r}") from None
    return sorted(out)


def plateau_study(images: Tensor, qubits: Iterable[int], depths: Iterable[int], samples: int = 2000,
                  seed: int = 0, channels: int = 1, device: str | torch.device = "cpu",
                  batch_size: int | None = None, progress: bool = False) -> dict:
    """Run every (qubits, depth) cell and return the JSON-ready result.

    Keys: ``rows`` (one per cell and parameter: ``qubits, depth, channels, samples, param, var_grad,
    mean_grad, var_fidelity, mean_fidelity`` plus standard errors, the kernel, the Haar references and
    ``shots_snr1 = 1 / (2 var_grad)``), ``fits`` (``depth, param, decay_base, decay_base_stderr,
    log_intercept``, and ``haar_decay_base``: the same fit of the Haar reference over the same qubits), ``fidelity_fits`` (the same for ``Var[F]``), ``stall`` (fitted qubit count where
    ``Var[dF/dtheta]`` meets the shot noise ``1/(2S)`` of each budget in :data:`SHOT_BUDGETS`) and
    ``config``. The patches of one qubit count are shared by all depths (common random numbers).
    """

    qubits, depths = sorted(set(qubits)), sorted(set(depths))
    check_study(qubits, depths, samples, channels, batch_size)
    device = torch.device(device)
    cells = [(n, L) for n in qubits for L in depths]
    rows: list[dict] = []
    data: dict[int, Tensor] = {}
    for n, depth in tqdm(cells, desc="plateau cells", unit="cell", disable=not progress):
        if n not in data:
            data[n] = sample_patches(images, n, samples, cell_generator(seed, n, channels, 0), channels)
        theta = sample_angles(samples, depth, n, cell_generator(seed, n, channels, depth)).to(device)
        cell = measure_cell(data[n].to(device), theta, batch_size)
        var_f, se_f = variance_with_stderr(cell.fidelity)
        d = 2**n
        haar = {"first": haar_grad_variance_first(d), "last": haar_grad_variance_last(data[n])}
        for param in PARAMS:
            var_g, se_g = variance_with_stderr(cell.grad(param))
            rows.append({
                "qubits": n, "depth": depth, "channels": channels, "samples": samples, "param": param,
                "var_grad": var_g, "mean_grad": float(cell.grad(param).mean()),
                "var_fidelity": var_f, "mean_fidelity": float(cell.fidelity.mean()),
                "var_grad_stderr": se_g, "var_fidelity_stderr": se_f,
                "kernel": kernel_for(n, channels), "haar_var_grad": haar[param],
                "haar_var_fidelity": haar_fidelity_variance(d), "haar_mean_fidelity": haar_fidelity_mean(d),
                "shots_snr1": 1.0 / (2 * var_g) if var_g > 0 else None,
            })
    return {"config": {"qubits": qubits, "depths": depths, "samples": samples, "seed": seed,
                       "channels": channels, "device": str(device),
                       "patches": "k x k windows at uniform positions; C channels = the same window of C "
                                  "independently drawn training images; all-zero patches redrawn",
                       "first_param": "theta[0, 0, 0] (RX, qubit 0, layer 0)",
                       "last_param": "theta[L-1, n-1, 1] (RZ, qubit n-1, layer L-1)"},
            **summarise(rows)}


def check_study(qubits: Sequence[int], depths: Sequence[int], samples: int, channels: int,
                batch_size: int | None) -> None:
    """Validate the study's options up front, with messages that name the option."""
    positive_int(samples, "--samples", minimum=2)  # a variance needs two samples
    if not qubits or min(qubits) < 1:
        raise UsageError(f"--qubits must be positive ints, got {list(qubits)}")
    if not depths or min(depths) < 1:
        raise UsageError(f"--depths must be positive ints (ansatz layers), got {list(depths)}")
    optional_positive_int(batch_size, "--batch-size")
    for n in qubits:
        kernel_for(n, channels)


def summarise(rows: list[dict]) -> dict:
    """Decay fits per (depth, parameter) and the fitted stall sizes, from the study's ``rows``."""
    fits, fid_fits, stall = [], [], []
    for depth in sorted({r["depth"] for r in rows}):
        for param in PARAMS:
            sel = sorted((r for r in rows if r["depth"] == depth and r["param"] == param),
                         key=lambda r: r["qubits"])
            if len(sel) < 2 or any(r["var_grad"] <= 0 for r in sel):
                continue
            qs = [r["qubits"] for r in sel]
            fit = fit_decay(qs, [r["var_grad"] for r in sel])
            haar = fit_decay(qs, [r["haar_var_grad"] for r in sel])["decay_base"]
            fits.append({"depth": depth, "param": param, **fit, "haar_decay_base": haar, "qubits": qs})
            for shots in SHOT_BUDGETS:
                log_b = math.log(fit["decay_base"])
                crossing = ((fit["log_intercept"] - math.log(shot_noise_variance(shots))) / log_b
                            if log_b > 0 else None)
                measured = [r["qubits"] for r in sel if r["var_grad"] < shot_noise_variance(shots)]
                stall.append({"depth": depth, "param": param, "shots": shots, "fitted_qubits": crossing,
                              "first_measured_qubits": measured[0] if measured else None})
            if param == "first":
                fid = fit_decay(qs, [r["var_fidelity"] for r in sel])
                haar = fit_decay(qs, [r["haar_var_fidelity"] for r in sel])["decay_base"]
                fid_fits.append({"depth": depth, **fid, "haar_decay_base": haar, "qubits": qs})
    return {"rows": rows, "fits": fits, "fidelity_fits": fid_fits, "stall": stall}


__all__ = ["SHOT_BUDGETS", "PARAMS", "MEMORY_FRACTION", "Cell", "auto_batch_size", "graph_bytes_per_sample", "kernel_for", "sample_patches", "sample_angles",
           "cell_generator", "measure_cell", "variance_with_stderr", "fit_decay", "haar_fidelity_mean",
           "haar_fidelity_variance", "haar_grad_variance_first", "haar_grad_variance_last",
           "last_generator_overlap", "shot_noise_variance", "parse_int_list", "plateau_study",
           "check_study", "summarise"]
