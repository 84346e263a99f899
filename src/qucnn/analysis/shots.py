"""How many shots does training really need? Test accuracy against the total shots spent on filter
gradients, for every gradient estimator of :class:`qucnn.QuConv2d`.

Each setting trains the same hybrid network (same seed, initial angles, data order and head) on the
embedded MNIST with exact forward passes, so the only difference is the filter-gradient estimator:
exact (autograd, the reference line), post-processed parameter shift and Eq. 17 at ``S`` shots per
circuit, and the shot-frugal sampled estimator at a budget of ``N`` shots per backward call. The
shots a quantum computer would have spent come from the layer's own cost accounting.

Example:
    result = shots_study(quick_settings(), **QUICK)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn.layer import QuConv2d
from ..utils.plotting import pyplot


@dataclass(frozen=True)
class Setting:
    """One estimator: ``method`` a ``QuConv2d`` gradient mode; ``shots`` per circuit (``None``: exact),
    or ``budget`` shots per backward call for ``"sampled"``."""

    method: str
    shots: int | None = None
    budget: int | None = None

    @property
    def label(self) -> str:
        if self.method == "sampled":
            return f"sampled N={self.budget:.0e}"
        return self.method if self.shots is None else f"{self.method} S={self.shots}"


def default_settings() -> list[Setting]:
    """Exact; parameter shift and Eq. 17 at S = 1, 10, 100, 1000; sampled at N = 1e2 .. 1e6."""
    out = [Setting("autograd")]
    for method in ("parameter-shift", "entanglement"):
        out += [Setting(method, shots=s) for s in (1, 10, 100, 1000)]
    out += [Setting("sampled", budget=10**k) for k in range(2, 7)]
    return out


def quick_settings() -> list[Setting]:
    return [Setting("autograd"), Setting("entanglement", shots=10), Setting("parameter-shift", shots=10),
            Setting("sampled", budget=1000), Setting("sampled", budget=100_000)]


#: Network and data sizes of the full study and of ``--quick``.
FULL = dict(filters=4, kernel=4, stride=2, layers=2, epochs=2, train=4000, test=2000, batch_size=64, lr=0.01)
QUICK = dict(filters=2, kernel=4, stride=2, layers=1, epochs=1, train=1024, test=500, batch_size=32, lr=0.02)


def build_network(setting: Setting, filters: int, kernel: int, stride: int, layers: int, seed: int,
                  image_size: int = 28, classes: int = 10) -> nn.Sequential:
    """QuConv2d -> BatchNorm -> flatten -> linear; identical initial weights for every setting."""
    torch.manual_seed(seed)
    layer = QuConv2d(1, filters, kernel, stride=stride, layers=layers, gradient=setting.method,
                     gradient_shots=setting.shots, gradient_budget=setting.budget,
                     generator=torch.Generator().manual_seed(seed))
    side = (image_size - kernel) // stride + 1
    return nn.Sequential(layer, nn.BatchNorm2d(filters), nn.Flatten(), nn.Linear(filters * side * side, classes))


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(images[i:i + 500]).argmax(1) == labels[i:i + 500]).sum())
                      for i in range(0, len(images), 500))
    model.train()
    return correct / len(images)


def train_setting(setting: Setting, data, *, filters: int, kernel: int, stride: int, layers: int, epochs: int,
                  train: int, test: int, batch_size: int, lr: float, seed: int = 0, progress=None) -> dict:
    """Train one setting; returns its accuracy, the gradient shots and circuits spent, and the time."""
    model = build_network(setting, filters, kernel, stride, layers, seed, data.train_images.shape[-1])
    layer: QuConv2d = model[0]
    layer.generator = torch.Generator().manual_seed(seed + 1)  # shot draws, apart from the init stream
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.train_images[:train], data.train_labels[:train]
    order_gen = torch.Generator().manual_seed(seed + 2)
    layer.reset_cost()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=order_gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            if progress is not None:
                progress.update(1)
    cost = layer.total_cost()["backward"]
    return {**asdict(setting), "label": setting.label,
            "test_accuracy": _accuracy(model, data.test_images[:test], data.test_labels[:test]),
            "gradient_shots": cost["shots"], "gradient_circuits": cost["circuits"],
            "steps": epochs * math.ceil(len(x) / batch_size), "seconds": time.perf_counter() - start}


def shots_needed(curve: list[tuple[float, float]], accuracy: float) -> tuple[float | None, bool]:
    """Shots a curve of ``(shots, accuracy)`` points needs to reach ``accuracy``, interpolated linearly in
    log(shots) between the points that bracket it. Returns ``(shots, exact)``: below the curve's first
    point, its first point's shots with ``exact=False`` (an upper bound); above its best, ``None``."""
    curve = sorted(curve)
    for i, (shots, acc) in enumerate(curve):
        if acc >= accuracy:
            if i == 0:
                return shots, acc == accuracy
            (s0, a0) = curve[i - 1]
            if a0 >= acc:  # a non-monotone curve: take the point itself
                return shots, True
            frac = (accuracy - a0) / (acc - a0)
            return 10 ** (math.log10(s0) + frac * (math.log10(shots) - math.log10(s0))), True
    return None, False


def shots_saving(rows: list[dict]) -> dict | None:
    """For each sampled-estimator run, the shots post-processed parameter shift and Eq. 17 need for the
    same accuracy (:func:`shots_needed`), and the orders of magnitude saved; ``best`` is the largest
    saving measured against the cheaper of the two."""
    curves = {m: [(r["gradient_shots"], r["test_accuracy"]) for r in rows if r["method"] == m and r["gradient_shots"]]
              for m in ("parameter-shift", "entanglement")}
    sampled = [r for r in rows if r["method"] == "sampled" and r["gradient_shots"]]
    if not sampled or not any(curves.values()):
        return None
    points = []
    for row in sorted(sampled, key=lambda r: r["gradient_shots"]):
        entry = {"label": row["label"], "shots": row["gradient_shots"], "test_accuracy": row["test_accuracy"]}
        needed = {}
        for method, curve in curves.items():
            shots, exact = shots_needed(curve, row["test_accuracy"]) if curve else (None, False)
            needed[method] = {"shots": shots, "interpolated": exact,
                              "orders_of_magnitude": None if shots is None else math.log10(shots / row["gradient_shots"])}
        entry["dense"] = needed
        cheapest = [v["orders_of_magnitude"] for v in needed.values() if v["orders_of_magnitude"] is not None]
        entry["orders_of_magnitude"] = min(cheapest) if cheapest else None
        points.append(entry)
    scored = [p for p in points if p["orders_of_magnitude"] is not None]
    best = max(scored, key=lambda p: p["orders_of_magnitude"]) if scored else None
    return {"points": points, "best": best}


def shots_study(settings: list[Setting], data, seed: int = 0, progress: bool = True, **sizes) -> dict:
    """Train every setting with the same seed; returns ``{"rows": [...], "saving": ..., "config": ...}``."""

    steps = sizes["epochs"] * math.ceil(min(sizes["train"], len(data.train_images)) / sizes["batch_size"])
    rows = []
    with tqdm(total=steps * len(settings), desc="shots study", disable=not progress) as bar:
        for setting in settings:
            bar.set_postfix_str(setting.label)
            rows.append(train_setting(setting, data, seed=seed, progress=bar, **sizes))
    return {"config": {**sizes, "seed": seed, "data": data.name}, "rows": rows, "saving": shots_saving(rows)}


def plot_shots(result: dict, path) -> None:
    """Accuracy against total gradient shots (log x); the exact run is a horizontal line."""

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in result["rows"]:
        if row["method"] == "autograd":
            ax.axhline(row["test_accuracy"], color="k", ls="--", label="exact gradients")
    styles = {"parameter-shift": ("tab:blue", "o"), "entanglement": ("tab:red", "s"), "sampled": ("tab:green", "^")}
    for method, (color, marker) in styles.items():
        pts = sorted((r["gradient_shots"], r["test_accuracy"]) for r in result["rows"]
                     if r["method"] == method and r["gradient_shots"])
        if pts:
            ax.plot(*zip(*pts), color=color, marker=marker, label=method if method != "entanglement" else "Eq. 17")
    ax.set_xscale("log")
    ax.set_xlabel("total shots spent on filter gradients")
    ax.set_ylabel("test accuracy")
    cfg = result["config"]
    ax.set_title(f"{cfg['data']}: {cfg['filters']} filters {cfg['kernel']}x{cfg['kernel']}, "
                 f"{cfg['layers']} layers, {cfg['epochs']} epoch(s), {cfg['train']} images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
