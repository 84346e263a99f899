"""Workloads W1-W3 of ``qucnn bench``: each returns the cases to time on the same data in one process.

- W1, forward (the paper's Fig. 3): 16 embedded-MNIST test images, 625 4x4 patches each, one 3-layer
  4-qubit filter, the 9-qubit SWAP test; exact and with 10,000 shots. Items: nonzero patches (all-zero
  patches have no state; every implementation gives them 0 or skips them).
- W2, gradient: ``sum_j g_j F_j`` over the 625 patches of one image, 3-layer 4-qubit filter (24 angles).
- W3, training step: 64 images, 8 filters 4x4, 3 layers, conv -> flatten -> linear 10, forward + backward
  + Adam, against the same network with ``nn.Conv2d(1, 8, 4)``.

Slow peers run on a seeded random subset of the nonzero patches (their rates are per patch; each row's
note says how many). W4 (scale) lives in :mod:`qucnn.bench.scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..datasets import load_embedded_mnist
from ..nn.layer import QuConv2d
from ..utils.checks import UsageError
from . import peers
from .runner import Case, skipped

SHOTS = 10_000
SEED = 0
DESCRIPTIONS = {
    "w1": "forward, Fig. 3 (16 MNIST test images x 625 4x4 patches, 1 filter, 9-qubit SWAP test), float64",
    "w2": "gradient of sum_j g_j F_j over the 625 patches of one image, 3-layer 4-qubit filter (24 angles), float64",
    "w3": "training step, {w3_batch} images, 8 filters 4x4, 3 layers, conv -> flatten -> linear 10, Adam, float32",
}
REFERENCES = {"w1": "qucnn-exact", "w2": "qucnn-autograd", "w3": "torch-conv2d"}


@dataclass(frozen=True)
class Sizes:
    """How much of each workload to run; :func:`sizes` gives the full and the ``--quick`` choice."""

    w1_images: int = 16
    pennylane_patches: int = 256
    aer_patches: int = 64
    w2_pennylane_patches: int | None = None  # None: every nonzero patch of the image (the same function)
    w3_batch: int = 64


def sizes(quick: bool) -> Sizes:
    """The workload sizes: the full ones, or the small ``--quick`` ones (seconds, for CI)."""
    return Sizes(16, 64, 8, 32, 64) if quick else Sizes()


def _sync(device: str):
    return torch.cuda.synchronize if device == "cuda" else None


def _patches(images: torch.Tensor) -> torch.Tensor:
    """Every 4x4 patch of ``images`` ``(B, 1, H, W)``, row-major: ``(B*H'*W', 16)``."""
    return nn.functional.unfold(images, 4).transpose(1, 2).reshape(-1, 16)


def _subset(count: int, want: int | None) -> torch.Tensor:
    if want is None or want >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(SEED))[:want].sort().values


def _layer(out_channels: int, device: str, dtype: torch.dtype, **kw) -> QuConv2d:
    layer = QuConv2d(1, out_channels, 4, layers=3, generator=torch.Generator().manual_seed(SEED), **kw)
    return layer.to(device=device, dtype=dtype)


def w1(size: Sizes, devices: list[str]) -> tuple[list[Case], list[dict]]:
    """W1, the Fig. 3 forward: cases timing every implementation on the same MNIST patches, and skipped rows
    for missing peers. ``devices``: ``"cpu"`` and optionally ``"cuda"`` for the qucnn rows."""
    images = load_embedded_mnist().test_images[: size.w1_images].double()
    base = _layer(1, "cpu", torch.float64)
    theta = base.theta.detach().clone()
    with torch.no_grad():
        exact = base(images).reshape(-1)  # (B*625,) in patch order
        state = base.filter_states()[0]
    patches = _patches(images)
    nonzero = (patches.abs().sum(1) > 0).nonzero()[:, 0]
    items = len(nonzero)
    cases: list[Case] = []

    def err(values, idx=None):
        ref = exact if idx is None else exact[idx]
        return {"max_abs_err": float((torch.as_tensor(values).reshape(-1).double().cpu() - ref).abs().max())}

    def shot_check(values, idx=None):
        ref = exact if idx is None else exact[idx]
        diff = torch.as_tensor(values).reshape(-1).double().cpu() - ref
        sd = ((1 - ref**2).clamp_min(1e-12) / SHOTS).sqrt()
        return {"max_abs_err": float(diff.abs().max()), "max_z": float((diff / sd).abs().max())}

    for dev in devices:
        x = images.to(dev)
        layer = _layer(1, dev, torch.float64)
        noisy = _layer(1, dev, torch.float64, shots=SHOTS)
        noisy.generator = torch.Generator(device=dev).manual_seed(SEED)
        conv = nn.Conv2d(1, 1, 4).to(device=dev, dtype=torch.float64)
        sync = _sync(dev)
        cases += [
            Case("qucnn-exact", _no_grad(layer, x), items, "patches", "QuConv2d forward, exact",
                 check=err, sync=sync, device=dev),
            Case("qucnn-shots", _no_grad(noisy, x), items, "patches",
                 f"QuConv2d forward, {SHOTS:,} shots (exact binomial draws)", check=shot_check, sync=sync,
                 device=dev),
            Case("qucnn-reference", _no_grad(_layer(1, dev, torch.float64, backend="reference"), x), items, "patches",
                 "QuConv2d forward, backend='reference' (gate-by-gate ansatz, autograd-composed maps)",
                 check=err, sync=sync, device=dev),
            Case("torch-conv2d", _no_grad(conv, x), items, "patches", "nn.Conv2d(1, 1, 4) forward (classical)",
                 sync=sync, device=dev),
        ]
    img_np, state_np = images[:, 0].numpy(), state.numpy()
    cases.append(Case("numpy-floor", lambda: peers.numpy_forward(img_np, state_np, 4), items, "patches",
                      "closed form |x.conj(f)|^2/|x|^2 on every patch, NumPy", check=err))
    peer_cases, rows = _w1_peers(patches, nonzero, theta[0], size, err, shot_check)
    return cases + peer_cases, rows


def _no_grad(module, x):
    def call():
        with torch.no_grad():
            return module(x)
    return call


def _w1_peers(patches, nonzero, theta, size: Sizes, err, shot_check) -> tuple[list[Case], list[dict]]:
    cases: list[Case] = []
    rows: list[dict] = []
    pl_idx = nonzero[_subset(len(nonzero), size.pennylane_patches)]
    pl_x, theta_np = patches[pl_idx].numpy(), theta.numpy()
    note = f"{len(pl_idx)} random nonzero patches, parameter broadcasting (one batched tape)"
    why = peers.missing("pennylane")
    for device, impl in (("default.qubit", "pennylane-default"), ("lightning.qubit", "pennylane-lightning")):
        if why is None and device == "lightning.qubit":
            why_l = peers.missing("pennylane_lightning")
        else:
            why_l = why
        for shots, suffix in ((None, ""), (SHOTS, "-shots")):
            if why_l is not None:
                rows.append(skipped("w1", impl + suffix, why_l))
                continue
            qnode = peers.pennylane_swap_test(device, 4, theta.shape[0], shots=shots)
            check = (lambda v, i=pl_idx: err(v, i)) if shots is None else (lambda v, i=pl_idx: shot_check(v, i))
            cases.append(Case(impl + suffix, lambda q=qnode: q(pl_x, theta_np), len(pl_idx), "patches",
                              note + ("" if shots is None else f", {SHOTS:,} shots"), check=check, peer=True))
    why = peers.missing("qiskit", "qiskit_aer")
    if why is not None:
        rows.append(skipped("w1", "qiskit-aer", why))
    else:
        aer_idx = nonzero[_subset(len(nonzero), size.aer_patches)]
        aer_x = patches[aer_idx]
        how = {"path": ""}

        def aer():
            z, how["path"] = peers.aer_swap_tests(aer_x, theta, SHOTS, SEED)
            return z
        cases.append(Case("qiskit-aer", aer, len(aer_idx), "patches",
                          f"{len(aer_idx)} random nonzero patches, {SHOTS:,} shots, Mottonen data preparation",
                          check=lambda v, i=aer_idx: {**shot_check(v, i), "qiskit_path": how["path"]}, peer=True))
    return cases, rows


def w2(size: Sizes, devices: list[str]) -> tuple[list[Case], list[dict]]:
    """W2, the 24-parameter filter gradient of one image's maps: every gradient mode and the PennyLane
    differentiation methods, each checked against the autograd reference."""
    x = load_embedded_mnist().test_images[:1].double()
    g = torch.randn(1, 1, 25, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(SEED))
    base = _layer(1, "cpu", torch.float64)
    base.zero_grad()
    (base(x) * g).sum().backward()
    reference = base.theta.grad.detach().clone()
    patches = _patches(x)
    nonzero = (patches.abs().sum(1) > 0).nonzero()[:, 0]
    items = len(nonzero)

    def err(grad, ref=reference):
        return {"max_abs_err": float((torch.as_tensor(grad).reshape(ref.shape).double().cpu() - ref).abs().max())}

    cases: list[Case] = []
    for dev in devices:
        xd, gd = x.to(dev), g.to(dev)
        for mode in ("autograd", "parameter-shift", "entanglement"):
            layer = _layer(1, dev, torch.float64, gradient=mode)
            cases.append(Case(f"qucnn-{mode}", _grad(layer, xd, gd), items, "patches",
                              {"autograd": "exact, PyTorch autograd through the closed form",
                               "parameter-shift": "exact expectations, Eq. 4-6 (48 shifted filters)",
                               "entanglement": "exact expectations, Eq. 16-17 (c = max|g|)"}[mode],
                              check=err, sync=_sync(dev), device=dev))
        layer = _layer(1, dev, torch.float64, backend="reference")
        cases.append(Case("qucnn-autograd-reference", _grad(layer, xd, gd), items, "patches",
                          "autograd on backend='reference' (gate-by-gate simulator)", check=err,
                          sync=_sync(dev), device=dev))
    rows: list[dict] = []
    why = peers.missing("pennylane")
    idx = nonzero[_subset(len(nonzero), size.w2_pennylane_patches)]
    sub, g_sub = patches[idx], g.reshape(-1)[idx]
    if len(idx) < len(nonzero):  # the reference of a subsample: the same function on those patches only
        theta = base.theta.detach().clone().requires_grad_(True)
        state = base.ansatz.state(theta)[0]
        fid = (sub.to(state.dtype) @ state.conj()).abs() ** 2 / (sub * sub).sum(1)
        (sub_ref,) = torch.autograd.grad((fid * g_sub).sum(), theta)
    else:
        sub_ref = reference
    note = (f"all {len(idx)} nonzero patches (the same function)" if len(idx) == len(nonzero)
            else f"{len(idx)} random nonzero patches") + ", default.qubit, broadcasting, torch interface"
    for method in ("parameter-shift", "backprop"):
        if why is not None:
            rows.append(skipped("w2", f"pennylane-{method}", why))
            continue
        qnode = peers.pennylane_swap_test("default.qubit", 4, 3, diff_method=method, interface="torch")
        theta0 = base.theta.detach()[0].clone()

        def call(q=qnode, t0=theta0):
            t = t0.clone().requires_grad_(True)
            (q(sub, t) * g_sub).sum().backward()
            return t.grad

        cases.append(Case(f"pennylane-{method}", call, len(idx), "patches", note,
                          check=lambda v, r=sub_ref: err(v, r), peer=True))
    return cases, rows


def _grad(layer: QuConv2d, x, g):
    def call():
        layer.zero_grad()
        (layer(x) * g).sum().backward()
        return layer.theta.grad
    return call


def w3(size: Sizes, devices: list[str]) -> tuple[list[Case], list[dict]]:
    """W3, one training step (forward, backward, Adam) of QuConv2d + linear head against ``nn.Conv2d`` +
    the same head, on ``size.w3_batch`` MNIST images."""
    data = load_embedded_mnist()
    if size.w3_batch > len(data.train_labels):
        raise UsageError(f"w3_batch must be at most {len(data.train_labels)} (the embedded training images), "
                         f"got {size.w3_batch}")
    x, y = data.train_images[: size.w3_batch], data.train_labels[: size.w3_batch]
    cases: list[Case] = []
    for dev in devices:
        xd, yd, sync = x.to(dev), y.to(dev), _sync(dev)
        for impl, note, make in (
            ("qucnn-exact", "QuConv2d(1, 8, 4, layers=3), exact, autograd", lambda: _layer(8, dev, torch.float32)),
            ("torch-conv2d", "nn.Conv2d(1, 8, 4) in its place", lambda: _seeded_conv(dev)),
            ("qucnn-reference", "QuConv2d, backend='reference'",
             lambda: _layer(8, dev, torch.float32, backend="reference")),
            ("qucnn-entanglement", "QuConv2d, gradient='entanglement' (exact expectations)",
             lambda: _layer(8, dev, torch.float32, gradient="entanglement")),
        ):
            cases.append(Case(impl, _step(make(), xd, yd), size.w3_batch, "images", note, sync=sync, device=dev))
    return cases, []


def _seeded_conv(device: str) -> nn.Conv2d:
    torch.manual_seed(SEED)
    return nn.Conv2d(1, 8, 4).to(device)


def _step(conv: nn.Module, x, y):
    torch.manual_seed(SEED)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(8 * 25 * 25, 10)).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def targets(rows: list[dict]) -> list[dict]:
    """The brief's targets as ratios from this run.

    A target is evaluated only against the rows it names: when one of them is missing or skipped (a peer not
    installed, a case that failed), its ``value`` and ``met`` are ``None`` and ``missing`` lists those rows,
    so a missing PennyLane is never "met" against a slower peer that happened to run.
    """
    def row(w, impl, device="cpu"):
        return next((r for r in rows if r["workload"] == w and r["impl"] == impl and r["device"] == device), None)

    out = []

    def add(name, num: list[dict | None], den: list[dict | None], op, threshold, wanted: list[str]):
        missing = [impl for impl, r in zip(wanted, num + den) if r is None or r.get("skipped")]
        value = None
        if not missing:
            value = max(r["items_per_s"] for r in num) / max(r["items_per_s"] for r in den)
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"name": f"{name} ({op} {threshold:g})", "value": value, "threshold": threshold, "met": met,
                    "missing": missing})

    if any(r["workload"] == "w1" for r in rows):
        peers = sorted({r["impl"] for r in rows if r["workload"] == "w1" and r.get("peer")
                        and r["impl"] != "numpy-floor"})
        add("W1 qucnn-exact items/s over the fastest circuit peer", [row("w1", "qucnn-exact")],
            [row("w1", impl) for impl in peers] or [None], ">=", 1000, ["qucnn-exact"] + (peers or ["a circuit peer"]))
        add("W1 qucnn-exact time over numpy-floor time", [row("w1", "numpy-floor")], [row("w1", "qucnn-exact")],
            "<=", 3, ["numpy-floor", "qucnn-exact"])
    if any(r["workload"] == "w2" for r in rows):
        add("W2 qucnn-autograd items/s over pennylane-backprop", [row("w2", "qucnn-autograd")],
            [row("w2", "pennylane-backprop")], ">=", 100, ["qucnn-autograd", "pennylane-backprop"])
    if any(r["workload"] == "w3" for r in rows):
        add("W3 qucnn-exact step time over torch-conv2d step time", [row("w3", "torch-conv2d")],
            [row("w3", "qucnn-exact")], "<=", 2, ["torch-conv2d", "qucnn-exact"])
    return out


__all__ = ["w1", "w2", "w3", "sizes", "Sizes", "targets", "DESCRIPTIONS", "REFERENCES", "SHOTS"]
