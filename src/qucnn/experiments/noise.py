"""How gate and readout noise bias QuCNN's shot estimates (``qucnn noise``), on Qiskit Aer.

(a) Forward: SWAP-test fidelity estimates against the exact ``F`` for a sweep of known fidelities
    (``|x> = cos(a)|f> + sin(a)|f_perp>``, ``F = cos^2 a``, with ``|f>`` a real MNIST-patch filter, the
    paper's "ideal convolutional state") and for real MNIST test patches against the same filter:
    noiseless, and noisy with the data prepared by the SVD unitary (the paper's), by Mottonen gates,
    and with the ancilla-free Bell-basis overlap.
(b) Gradients (Fig. 4): one 4-qubit 3-layer ansatz filter against ``H^n|0>`` with upstream 0.5: the
    post-processed parameter shift and the entanglement circuit (``delta = 0.5``), noiseless and noisy,
    against the exact gradient.

Noise shrinks estimates towards 0 (depolarized ancillas read ``+1`` and ``-1`` equally often): a fitted
line ``estimate = slope * exact + intercept`` per configuration summarises the bias.

Example:
    summary = run_noise(Path("results/noise"), quick=True)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..core.encoding import amplitude_encode
from ..core.swap_test import swap_test
from ..datasets import load_embedded_mnist
from ..nn.layer import QuConv2d
from ..utils.checks import positive_int
from ..utils.files import atomic_write_text
from .common import jsonable, progress, pyplot, save_figure

QUBITS, LAYERS, UPSTREAM = 4, 3, 0.5


@dataclass(frozen=True)
class NoiseConfig:
    """Sizes of the experiment; :data:`QUICK` and :data:`FULL` are the presets."""

    sweep: int  # known fidelities in [0, 1]
    patches: int  # real MNIST patches
    params: int  # gradient components estimated (evenly spread over the 24)
    shots: int  # per forward circuit
    gradient_shots: int  # per gradient circuit (the gradients are small: they need more)


QUICK = NoiseConfig(sweep=4, patches=3, params=4, shots=4000, gradient_shots=20000)
FULL = NoiseConfig(sweep=11, patches=16, params=24, shots=10000, gradient_shots=100000)
#: Seeded filter draws; the one with the largest exact gradient is used, so bias shows above shot noise.
FILTER_DRAWS = 64
#: The forward configurations: (label, noisy, state preparation, overlap).
FORWARD_RUNS = (("noiseless", False, "unitary", "cswap"), ("noisy, SVD unitary", True, "unitary", "cswap"),
                ("noisy, Mottonen gates", True, "gates", "cswap"), ("noisy, gates + Bell", True, "gates", "bell"))


def _fit(exact: Tensor, estimate: Tensor) -> dict:
    """Least-squares line ``estimate = slope * exact + intercept`` and the mean/max absolute error."""
    a = torch.stack([exact, torch.ones_like(exact)], 1)
    slope, intercept = torch.linalg.lstsq(a, estimate.unsqueeze(1)).solution[:, 0].tolist()
    err = estimate - exact
    return {"slope": slope, "intercept": intercept, "mean_abs_error": float(err.abs().mean()),
            "max_abs_error": float(err.abs().max())}


def _forward_states(gen: torch.Generator, cfg: NoiseConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Filter ``f`` (d,), sweep data (K, d), MNIST patches (M, d); the sweep's exact fidelities (K,)."""

    data = load_embedded_mnist()
    k = int(math.isqrt(2**QUBITS))
    train = torch.nn.functional.unfold(data.train_images[:1].double(), k).transpose(1, 2)[0]  # (L, 16)
    f = amplitude_encode(train[train.norm(dim=1).argmax()])  # the brightest patch of a training digit
    perp = torch.randn(f.shape[0], generator=gen, dtype=torch.float64)
    perp = perp - (perp @ f) * f
    perp = perp / perp.norm()
    angles = torch.linspace(0, math.pi / 2, cfg.sweep, dtype=torch.float64)
    sweep = torch.cos(angles)[:, None] * f + torch.sin(angles)[:, None] * perp
    test = torch.nn.functional.unfold(data.test_images[:64].double(), k).transpose(1, 2).reshape(-1, 2**QUBITS)
    test = test[test.norm(dim=1) > 1.0]  # patches with some ink
    pick = torch.randperm(test.shape[0], generator=gen)[:cfg.patches]
    return f, sweep, test[pick], torch.cos(angles) ** 2


def _forward(cfg: NoiseConfig, seed: int, noise_model, gen: torch.Generator) -> dict:
    from ..qiskit import sample_swap_tests

    f, sweep, patches, _ = _forward_states(gen, cfg)
    rows = torch.cat([sweep, patches])
    exact = swap_test(amplitude_encode(rows), f)
    runs = {}
    for i, (label, noisy, method, overlap) in enumerate(progress(FORWARD_RUNS, "forward runs")):
        t0 = time.perf_counter()
        z = sample_swap_tests(rows, f.unsqueeze(0), cfg.shots, noise_model=noise_model if noisy else None,
                              seed=seed + i, method=method, overlap=overlap)
        runs[label] = {"noisy": noisy, "method": method, "overlap": overlap, "estimate": z,
                       "fit": _fit(exact, z), "seconds": round(time.perf_counter() - t0, 2)}
    return {"exact": exact, "sweep": cfg.sweep, "patches": cfg.patches,
            "std_error": ((1 - exact**2) / cfg.shots).sqrt(), "runs": runs}


def _gradients(cfg: NoiseConfig, seed: int, noise_model, gen: torch.Generator) -> dict:
    from ..qiskit import QiskitExecutor

    k = int(math.isqrt(2**QUBITS))
    layer = QuConv2d(1, 1, k, layers=LAYERS).double()
    x = torch.ones(1, 1, k, k, dtype=torch.float64)  # one patch: the uniform superposition H^n|0>
    g = torch.full((1, 1, 1, 1), UPSTREAM, dtype=torch.float64)
    draws = (2 * math.pi * torch.rand((FILTER_DRAWS,) + layer.theta.shape[1:], generator=gen,
                                      dtype=torch.float64)).requires_grad_(True)
    fidelity = layer.ansatz.state(draws).sum(-1).abs() ** 2 / 2**QUBITS  # |<+...+|f>|^2 per draw
    (grads,) = torch.autograd.grad(fidelity.sum(), draws)
    with torch.no_grad():
        layer.theta.copy_(draws[grads.flatten(1).norm(dim=1).argmax()].unsqueeze(0))
    layer.zero_grad()
    layer(x).backward(g)
    total = layer.theta[0].numel()
    params = torch.linspace(0, total - 1, cfg.params).round().long().unique()
    exact = layer.theta.grad.reshape(-1)[params]
    runs = {}
    configs = [(m, noisy) for noisy in (False, True) for m in ("parameter-shift", "entanglement")]
    for i, (method, noisy) in enumerate(progress(configs, "gradient runs")):
        t0 = time.perf_counter()
        executor = QiskitExecutor(noise_model=noise_model if noisy else None, seed=seed + 100 + i,
                                  shots=cfg.gradient_shots)
        # scale c = 1 keeps delta = g = 0.5 in the circuit (Eq. 17 with |g| <= 1)
        est = executor.gradient(layer, x, g, method=method, scale=1.0, params=params).reshape(-1)[params]
        label = f"{'noisy' if noisy else 'noiseless'} {method}"
        runs[label] = {"noisy": noisy, "method": method, "estimate": est, "fit": _fit(exact, est),
                       "circuits": executor.last_run["circuits"], "seconds": round(time.perf_counter() - t0, 2)}
    return {"params": params, "exact": exact, "upstream": UPSTREAM, "theta": layer.theta.detach()[0],
            "fidelity": float(layer(x).detach()), "shots": cfg.gradient_shots, "runs": runs}


def _resources() -> dict:
    """CNOTs (all-to-all, as the noisy runs transpile) of the circuits the experiment runs, n = 4."""
    from ..qiskit import circuit_resources, swap_test_circuit

    gen = torch.Generator().manual_seed(0)
    patch = torch.rand(2**QUBITS, generator=gen, dtype=torch.float64)
    theta = torch.rand(LAYERS, QUBITS, 2, generator=gen, dtype=torch.float64)
    kinds = {"swap_test, SVD unitary": swap_test_circuit(patch, method="unitary", filter_state=patch),
             "swap_test, Mottonen gates": swap_test_circuit(patch, filter_state=patch),
             "bell, Mottonen gates": swap_test_circuit(patch, filter_state=patch, overlap="bell"),
             "parameter-shift circuit": swap_test_circuit(patch, theta),
             "entanglement circuit": swap_test_circuit(patch, theta, upstream=UPSTREAM)}
    return {name: circuit_resources(c)["cx_all_to_all"] for name, c in kinds.items()}


def _plot(result: dict, path: Path) -> str:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    fwd, grad = result["forward"], result["gradients"]
    exact = torch.as_tensor(fwd["exact"])
    k = fwd["sweep"]
    for (label, run), marker in zip(fwd["runs"].items(), "os^D"):
        z = torch.as_tensor(run["estimate"])
        line = ax1.plot(exact[:k], z[:k], marker=marker, ms=4, lw=1,
                        label=f"{label} (slope {run['fit']['slope']:.2f})")[0]
        ax1.plot(exact[k:], z[k:], marker=marker, ls="none", ms=6, mfc="none", color=line.get_color())
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8, label="exact")
    ax1.set(xlabel="exact fidelity F", ylabel="shot estimate of <Z_a>",
            title=f"(a) forward, {result['shots']} shots\n"
                  "sweep (lines) and MNIST patches (open) vs an MNIST filter")
    ax1.legend(fontsize=7)
    gx = torch.as_tensor(grad["exact"])
    for (label, run), marker in zip(grad["runs"].items(), "os^D"):
        ax2.plot(gx, torch.as_tensor(run["estimate"]), marker=marker, ls="none", ms=5,
                 label=f"{label} (slope {run['fit']['slope']:.2f})")
    lim = float(gx.abs().max()) * 1.15
    ax2.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="exact")
    ax2.set(xlabel="exact dL/dtheta", ylabel="estimate",
            title=f"(b) Fig. 4 gradients, {grad['shots']} shots\n{QUBITS}-qubit {LAYERS}-layer filter vs "
                  f"H^n|0>, upstream {UPSTREAM}")
    ax2.legend(fontsize=7)
    noise = result["noise_model"]
    fig.suptitle(f"Aer noise: depolarizing p1={noise['p1']} (sx, x), p2={noise['p2']} (cx), "
                 f"readout {noise['readout']}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def run_noise(out: Path, quick: bool = False, seed: int = 0, p1: float = 1e-3, p2: float = 1e-2,
              readout: float = 2e-2, shots: int | None = None) -> dict:
    """Run both parts, write ``noise.json`` and ``noise.png`` into ``out``, return the JSON dict."""
    from ..qiskit import default_noise_model

    cfg = QUICK if quick else FULL
    if shots is not None:
        shots = positive_int(shots, "--shots")
        cfg = NoiseConfig(cfg.sweep, cfg.patches, cfg.params, shots, shots)
    positive_int(seed, "--seed", 0)
    model = default_noise_model(p1=p1, p2=p2, readout=readout)
    t0 = time.perf_counter()
    result = {"config": asdict(cfg), "quick": quick, "seed": seed, "shots": cfg.shots,
              "noise_model": {"p1": p1, "p2": p2, "readout": readout, "basis": list(model.basis_gates),
                              "readout_only_factor": 1 - 2 * readout},
              "forward": _forward(cfg, seed, model, torch.Generator().manual_seed(seed)),
              "gradients": _gradients(cfg, seed, model, torch.Generator().manual_seed(seed + 1)),
              "cx_all_to_all": _resources()}
    result["wall_time_s"] = round(time.perf_counter() - t0, 2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["figure"] = _plot(result, out / "noise.png")
    atomic_write_text(out / "noise.json", json.dumps(jsonable(result), indent=1, allow_nan=False) + "\n")
    return jsonable(result)


__all__ = ["run_noise", "NoiseConfig", "QUICK", "FULL"]
