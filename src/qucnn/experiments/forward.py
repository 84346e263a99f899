"""Experiment 1 (Section V-A, Fig. 3 and Fig. 5): the forward pass of a classically trained filter.

1. Train ``conv(1->1, 4x4, stride 1, no bias) -> ReLU -> 2x2 max pool -> linear(144 -> 10)`` on the
   training split (Adam, seeded). No bias, so the classical feature map is exactly ``Conv(X, F)`` of
   Eq. 1 and can be compared with the quantum one without an offset.
2. Normalise the 16 weights to a unit vector ``f`` (the "ideal convolutional state") and build its
   QuantumFlow SVD unitary ``W`` (Fig. 5); check by simulation that ``W|0> = f``.
3. SWAP-test ``f`` against all 625 patches of 16 test images with 10,000 shots each: the binomial
   estimate of the exact fidelities (the circuit's own distribution) or, with the Aer back end,
   the circuits themselves. All-zero patches have no state: their output is 0 and nothing is run.
   A sample of patches also runs through the full 9-qubit circuit (both registers prepared by SVD
   unitaries) to check the closed form the estimates are drawn from.

Example:
    metrics = run_forward(Config(out=Path("results"), quick=True).validated())
    metrics["within_3_sigma_fraction"] > 0.99
    # -> True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backends import get_backend
from ..core.windows import squared_norms
from ..core.encoding import svd_unitary
from ..core.gates import Op
from ..core.geometry import ConvSpec
from ..core.simulator import expval_z, simulate
from ..core.swap_test import SWAP_ANCILLA, data_wires, filter_wires, swap_test_ops
from ..utils.checks import UsageError
from .common import Config, ShotSampler, load_data, mosaic, progress, pyplot, save_figure

KERNEL = 4
SHOTS = 10_000
IMAGES = 16
CIRCUIT_CHECK_PATCHES = 32
#: Fraction of a normal variable within 3 standard deviations.
NORMAL_3_SIGMA = math.erf(3 / math.sqrt(2))
#: Aer runs: (images, patches per image at most) by (quick, noise); the torch back end always runs 16 x 625.
AER_PLAN = {(False, False): (16, None), (True, False): (2, 64), (False, True): (4, 32), (True, True): (1, 16)}
TRAIN = {"epochs": 3, "batch": 64, "lr": 1e-2}
#: Colour of all-zero patches (no quantum state) in every map of Fig. 3.
NO_STATE_GREY = "#d0d0d0"


class FilterNet(nn.Module):
    """``conv(1->1, 4x4, no bias) -> ReLU -> 2x2 max pool -> linear(12*12 -> classes)``."""

    def __init__(self, classes: int = 10, side: int = 28) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, KERNEL, bias=False)
        pooled = (side - KERNEL + 1) // 2
        self.fc = nn.Linear(pooled * pooled, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, classes)`` of images ``(B, 1, H, W)``."""
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


@dataclass(frozen=True)
class ClassicalFilter:
    """The trained first-layer filter ``weight`` ``(4, 4)`` (float64) and the network's test accuracy."""

    weight: Tensor
    accuracy: float
    losses: list[float]
    train_images: int
    test_images: int

    @property
    def state(self) -> Tensor:
        """The ideal convolutional state: the weights, row-major, as a unit vector ``(16,)``."""
        flat = self.weight.flatten()
        return flat / flat.norm()


_FILTERS: dict[tuple, ClassicalFilter] = {}


def train_classical(config: Config) -> ClassicalFilter:
    """Train :class:`FilterNet` on ``config``'s data (seeded, deterministic); cached per process so
    ``all`` trains once and the later experiments reuse the same filter."""
    data = load_data(config)
    key = (data.name, tuple(data.train_images.shape), config.seed, str(config.torch_device))
    if key in _FILTERS:
        return _FILTERS[key]
    if data.train_images.shape[1] != 1 or data.train_images.shape[-1] < KERNEL:
        raise UsageError(f"experiment 1 needs one-channel images of at least {KERNEL}x{KERNEL}, got "
                         f"{tuple(data.train_images.shape[1:])}")
    device = config.torch_device
    gen = config.generator("forward:train")
    with torch.random.fork_rng(devices=[]):  # seed nn's initialisers without touching the global stream
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
        net = FilterNet(data.num_classes, data.train_images.shape[-1]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=TRAIN["lr"])
    x, y = data.train_images.to(device), data.train_labels.to(device)
    losses = []
    for _ in progress(range(TRAIN["epochs"]), "train classical filter"):
        order = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(x), TRAIN["batch"]):
            idx = order[start:start + TRAIN["batch"]]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    with torch.no_grad():
        pred = net(data.test_images.to(device)).argmax(1).cpu()
    accuracy = float((pred == data.test_labels).double().mean())
    weight = net.conv.weight.detach().cpu().double()[0, 0]
    _FILTERS[key] = ClassicalFilter(weight, accuracy, losses, len(x), len(data.test_images))
    return _FILTERS[key]


def max_sigma_error(estimate: Tensor, exact: Tensor, shots: int) -> Tensor:
    """``|estimate - exact|`` in units of the standard error ``sqrt((1 - F^2) / S)``, elementwise.

    Where ``F = 1`` the estimator has no variance and equals ``F``; the error is then 0."""
    sigma = torch.sqrt((1 - exact**2).clamp(min=0) / shots)
    diff = (estimate - exact).abs()
    degenerate = torch.where(diff > 0, math.inf, 0.0).to(diff.dtype)
    return torch.where(sigma > 0, diff / torch.where(sigma > 0, sigma, torch.ones_like(sigma)), degenerate)


def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two equally shaped tensors (NaN entries of either are left out)."""
    keep = ~(a.isnan() | b.isnan())
    a, b = a[keep].double(), b[keep].double()
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def circuit_check(images: Tensor, state: Tensor, exact: Tensor, gen: torch.Generator) -> dict:
    """Run sampled patches through the full 9-qubit circuit: ``W_x`` on the data register, ``W_f`` on
    the filter register (both SVD unitaries), H, CSWAPs, H; compare ``<Z_a>`` with the closed form."""

    patches = F.unfold(images, KERNEL).transpose(1, 2).reshape(-1, KERNEL * KERNEL)  # (B*625, 16)
    nonzero = (patches.abs().sum(-1) > 0).nonzero()[:, 0]
    pick = nonzero[torch.randperm(len(nonzero), generator=gen)[:CIRCUIT_CHECK_PATCHES].to(nonzero.device)]
    n = 4
    ops = [Op("UNITARY", data_wires(n), svd_unitary(patches[pick])),
           Op("UNITARY", filter_wires(n), svd_unitary(state[None].to(patches.dtype)))] + swap_test_ops(n)
    z = expval_z(simulate(ops, n_qubits=2 * n + 1, dtype=torch.complex128, device=images.device), SWAP_ANCILLA)
    err = (z - exact.flatten()[pick]).abs()
    return {"patches": len(pick), "qubits": 2 * n + 1, "max_abs_error": float(err.max())}


def run_forward(config: Config) -> dict:
    """Run experiment 1 and draw its figures into ``config.out``; returns the metrics section."""

    data = load_data(config)
    device = config.torch_device
    classical = train_classical(config)
    gen = config.generator("forward")
    state = classical.state.to(device)  # (16,) real unit vector
    w = svd_unitary(state[None])  # (1, 16, 16)
    prepared = simulate([Op("UNITARY", tuple(range(4)), w)], n_qubits=4, dtype=torch.complex128,
                        device=device).reshape(-1)
    eye = torch.eye(16, dtype=w.dtype, device=device)

    images = data.test_images[:IMAGES].to(device, torch.float64)
    spec = ConvSpec.make(KERNEL)
    exact = get_backend("torch").maps(images, state[None], spec)[0][:, 0]  # (B, 25, 25)
    norms = squared_norms(images, spec)[:, 0]
    valid = norms > 0
    conv = F.conv2d(images, classical.weight.to(device)[None, None])[:, 0]  # Eq. 1, no bias
    squared = torch.where(valid, conv**2 / (classical.weight.norm() ** 2 * norms.clamp(min=1e-300)), 0)

    n_img, run_mask = _plan(config, valid, gen)
    estimates = _shot_maps(config, images[:n_img], state, exact[:n_img], run_mask[:n_img])
    ran = run_mask[:n_img]
    sig = max_sigma_error(estimates[ran], exact[:n_img][ran], SHOTS)
    finite = sig[sig.isfinite()]
    signed = ((estimates - exact[:n_img]) / torch.sqrt((1 - exact[:n_img] ** 2) / SHOTS))[ran]
    quantum = torch.where(ran, estimates, torch.full_like(estimates, float("nan")))

    metrics = {
        "shots": SHOTS,
        "images": n_img,
        "patches_per_image": int(exact.shape[-1] * exact.shape[-2]),
        "nonzero_patches": int(valid[:n_img].sum()),
        "circuits_run": int(ran.sum()),
        "classical_test_accuracy": classical.accuracy,
        "classical": {"architecture": "conv(1->1, 4x4, stride 1, no bias) -> ReLU -> maxpool 2 -> linear(144->10)",
                      "bias": False, "optimizer": f"Adam lr {TRAIN['lr']}, batch {TRAIN['batch']}",
                      "epochs": TRAIN["epochs"], "train_images": classical.train_images,
                      "test_images": classical.test_images, "epoch_losses": classical.losses},
        "filter": classical.state,
        "filter_norm": float(classical.weight.norm()),
        "state_prep_error": float((prepared - state.to(prepared.dtype)).abs().max()),
        "unitary_error": float((w[0].conj().T @ w[0] - eye).abs().max()),
        "circuit_check": circuit_check(images, state, exact, gen),
        "max_sigma_error": float(sig.max()),
        "infinite_sigma_errors": int((~sig.isfinite()).sum()),
        "within_3_sigma_fraction": float((sig <= 3).double().mean()),
        "within_3_sigma_expected": NORMAL_3_SIGMA,
        "mean_sigma_error": float(signed.mean()),
        "rms_sigma_error": float(finite.square().mean().sqrt()),
        "max_abs_error": float((estimates - exact[:n_img])[ran].abs().max()),
        # estimate = slope * F + intercept: (1, 0) without noise; noise shrinks estimates towards 0
        "fit": _line_fit(exact[:n_img][ran], estimates[ran]),
        "correlation": {
            "quantum_vs_classical": pearson(quantum, conv[:n_img]),
            "quantum_vs_classical_relu": pearson(quantum, conv[:n_img].relu()),
            "quantum_vs_classical_squared": pearson(quantum, conv[:n_img] ** 2),
            "quantum_vs_classical_squared_normalised": pearson(quantum, squared[:n_img]),
            "classical_squared_normalised_vs_exact_fidelity_max_abs_diff": float((squared - exact).abs().max()),
        },
    }
    metrics["figures"] = [
        _plot_maps(config.figure("forward", "fig3_forward"), images[:n_img], conv[:n_img], quantum, exact[:n_img],
                   signed, config),
        _plot_state(config.out / "fig5_filter_state.png", classical, prepared, w[0]),
    ]
    return metrics


def _line_fit(x: Tensor, y: Tensor) -> dict:
    """Least-squares ``y = slope * x + intercept``."""
    a = torch.stack([x, torch.ones_like(x)], 1)
    slope, intercept = torch.linalg.lstsq(a.cpu(), y.cpu().unsqueeze(1)).solution[:, 0].tolist()
    return {"slope": slope, "intercept": intercept}


def _plan(config: Config, valid: Tensor, gen: torch.Generator) -> tuple[int, Tensor]:
    """How many images and which patches to run: every non-zero patch of 16 images, or an Aer subsample."""
    if config.backend == "torch":
        return IMAGES, valid
    n_img, per_image = AER_PLAN[(config.quick, config.noise)]
    mask = torch.zeros_like(valid)
    for b in range(n_img):
        where = valid[b].flatten().nonzero()[:, 0]
        if per_image is not None:
            where = where[torch.randperm(len(where), generator=gen)[:per_image].to(where.device)]
        mask[b].view(-1)[where] = True
    return n_img, mask


def _shot_maps(config: Config, images: Tensor, state: Tensor, exact: Tensor, run: Tensor) -> Tensor:
    """Shot estimates ``(B, 25, 25)`` at the ``run`` positions (0 elsewhere), one image at a time."""
    sampler = ShotSampler(config, "forward")
    out = torch.zeros_like(exact)
    patches = F.unfold(images, KERNEL).transpose(1, 2)  # (B, 625, 16)
    for b in progress(range(images.shape[0]), f"forward SWAP tests ({config.backend})"):
        idx = run[b].flatten().nonzero()[:, 0]
        z = sampler(patches[b, idx], state[None], exact[b].flatten()[idx], SHOTS)
        out[b].view(-1)[idx] = z.to(out.dtype)
    return out


def _plot_maps(path: Path, images: Tensor, conv: Tensor, quantum: Tensor, exact: Tensor, signed: Tensor,
               config: Config) -> str:
    """Fig. 3 on absolute colour scales (one scale per quantity, shared by every map), with all-zero patches
    (no quantum state: output 0, never run) drawn the same light grey in every map."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    backend = config.backend + (" + noise" if config.noise else "")
    cols = 4 if images.shape[0] >= 4 else images.shape[0]
    nostate = squared_norms(images, ConvSpec.make(KERNEL))[:, 0] == 0  # (B, 25, 25)
    ran = ~quantum.isnan()

    def masked(maps: Tensor) -> Tensor:
        return torch.where(nostate, torch.full_like(maps, float("nan")), maps).cpu()

    top = float(torch.nan_to_num(torch.maximum(exact, quantum), nan=0.0).max())
    lim = float(conv.abs().max())
    error = torch.where(ran, (quantum - exact) / torch.sqrt((1 - exact**2) / SHOTS), float("nan"))
    fig, ax = plt.subplots(2, 3, figsize=(15, 10.5), layout="constrained")
    panels = [
        (ax[0, 0], images[:, 0].cpu(), "gray", (0, 1), f"{images.shape[0]} MNIST test images", False),
        (ax[0, 1], masked(conv), "RdBu_r", (-lim, lim), "classical feature maps Conv(X, F), no bias", True),
        (ax[0, 2], masked(quantum), "viridis", (0, top), f"QuCNN: SWAP-test estimates, {SHOTS:,} shots ({backend})",
         True),
        (ax[1, 0], masked(exact), "viridis", (0, top), "exact fidelity |<f|x>|^2\n= Conv(X,F)^2 / (|F|^2 |x|^2)", True),
        (ax[1, 1], masked(error), "RdBu_r", (-4, 4), "(estimate - exact) / standard error sqrt((1-F^2)/S)", True),
    ]
    for axis, maps, cmap, (lo, hi), title, grey in panels:
        if grey:  # all-zero patches underneath, light grey; NaN (also the gaps) is transparent
            axis.imshow(torch.where(mosaic(nostate.double().cpu(), cols, normalise=False) > 0, 1.0,
                                    float("nan")).numpy(), cmap=ListedColormap([NO_STATE_GREY]),
                        interpolation="nearest")
        shown = axis.imshow(mosaic(maps, cols, normalise=False).numpy(), cmap=cmap, vmin=lo, vmax=hi,
                            interpolation="nearest")
        axis.set_title(title, fontsize=11)
        axis.axis("off")
        fig.colorbar(shown, ax=axis, shrink=0.75)
    keys = [Patch(color=NO_STATE_GREY, label="all-zero patch: no quantum state, output 0, no circuit run")]
    if bool((~ran & ~nostate).any()):
        keys.append(Patch(fc="white", ec="black", label="white: patch not in the subsample run on this backend"))
    fig.legend(handles=keys, loc="outside lower left", fontsize=11, frameon=False, ncols=len(keys))
    hist = ax[1, 2]
    values = signed.cpu().numpy()
    hist.hist(values, bins=60, density=True, color="tab:blue", alpha=0.7, label=f"{len(values):,} patches")
    grid = torch.linspace(-5, 5, 201)
    hist.plot(grid, torch.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), "k--", label="N(0, 1)")
    hist.set_xlabel("(estimate - exact) / standard error")
    hist.set_ylabel("density")
    hist.set_title(f"shot error of every patch run ({backend})", fontsize=11)
    hist.legend(fontsize=10)
    fig.suptitle("Fig. 3: classical vs QuCNN feature maps of one trained 4x4 filter (absolute colour scales: "
                 "the two fidelity maps share one)", fontsize=13)
    return save_figure(fig, path)


def _plot_state(path: Path, classical: ClassicalFilter, prepared: Tensor, w: Tensor) -> str:
    plt = pyplot()
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(1, 3, figsize=(16, 5.6), layout="constrained")
    lim = float(classical.weight.abs().max())
    shown = ax[0].imshow(classical.weight.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[0].set_title(f"trained 4x4 filter F (|F| = {float(classical.weight.norm()):.3f})", fontsize=11)
    ax[0].set_xticks(range(KERNEL))
    ax[0].set_yticks(range(KERNEL))
    ax[0].set_xlabel("column")
    ax[0].set_ylabel("row")
    fig.colorbar(shown, ax=ax[0], shrink=0.85)
    idx = torch.arange(16)
    ax[1].bar(idx, classical.state.numpy(), color="tab:blue", label="f = F / |F| (row-major)")
    ax[1].plot(idx, prepared.real.cpu().numpy(), "rx", ms=9, mew=2, label="W|0> (simulated)")
    ax[1].set_xlabel("basis state |p> (p = 4 row + column)")
    ax[1].set_ylabel("amplitude")
    ax[1].set_title("ideal convolutional state: amplitudes", fontsize=11)
    ax[1].legend(fontsize=10)
    shown = ax[2].imshow(w.real.cpu().numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax[2].add_patch(Rectangle((-0.5, -0.5), 1, 16, fill=False, ec="black", lw=2))
    ax[2].set_xlabel("column j (input basis state |j>); the framed column 0 is W|0> = f")
    ax[2].set_ylabel("row i (output basis state |i>)")
    ax[2].set_title("QuantumFlow SVD unitary W (real, orthogonal)", fontsize=11)
    fig.colorbar(shown, ax=ax[2], shrink=0.85)
    fig.suptitle("Fig. 5: preparing the ideal convolutional state", fontsize=13)
    return save_figure(fig, path)


__all__ = ["ClassicalFilter", "FilterNet", "IMAGES", "SHOTS", "circuit_check", "max_sigma_error", "pearson",
           "run_forward", "train_classical"]
