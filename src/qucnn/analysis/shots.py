"""How many shots does training really need? Test accuracy against the total shots spent on filter
gradients, for every gradient estimator of :class:`qucnn.QuConv2d`.

Each setting trains the same hybrid network (same seed, initial angles, data order and head) on the
embedded MNIST with exact forward passes, so the only difference is the filter-gradient estimator:
exact (autograd, the reference line), post-processed parameter shift and Eq. 17 at ``S`` shots per
circuit, and the shot-frugal sampled estimator at a budget of ``N`` shots per backward call. The
shots a quantum computer would have spent come from the layer's own cost accounting.

Example:
    >>> result = shots_study(quick_settings(), **QUICK)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from ..layer import QuConv2d


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


def shots_saving(rows: list[dict], tolerance: float = 0.005) -> dict | None:
    """Orders of magnitude of shots the cheapest estimator saves against the cheapest Eq. 17 / parameter-
    shift run, among the runs within ``tolerance`` of the best shot-based accuracy of those two."""
    dense = [r for r in rows if r["method"] in ("parameter-shift", "entanglement") and r["gradient_shots"]]
    sampled = [r for r in rows if r["method"] == "sampled" and r["gradient_shots"]]
    if not dense or not sampled:
        return None
    target = max(r["test_accuracy"] for r in dense) - tolerance
    good_dense = [r for r in dense if r["test_accuracy"] >= target]
    good_sampled = [r for r in sampled if r["test_accuracy"] >= target]
    if not good_sampled:
        return {"target_accuracy": target, "orders_of_magnitude": None, "note": "no sampled budget reached it"}
    best_dense = min(good_dense, key=lambda r: r["gradient_shots"])
    best_sampled = min(good_sampled, key=lambda r: r["gradient_shots"])
    return {"target_accuracy": target, "dense": best_dense["label"], "dense_shots": best_dense["gradient_shots"],
            "sampled": best_sampled["label"], "sampled_shots": best_sampled["gradient_shots"],
            "orders_of_magnitude": math.log10(best_dense["gradient_shots"] / best_sampled["gradient_shots"])}


def shots_study(settings: list[Setting], data, seed: int = 0, progress: bool = True, **sizes) -> dict:
    """Train every setting with the same seed; returns ``{"rows": [...], "saving": ..., "config": ...}``."""
    from tqdm.auto import tqdm

    steps = sizes["epochs"] * math.ceil(min(sizes["train"], len(data.train_images)) / sizes["batch_size"])
    rows = []
    with tqdm(total=steps * len(settings), desc="shots study", disable=not progress) as bar:
        for setting in settings:
            bar.set_postfix_str(setting.label)
            rows.append(train_setting(setting, data, seed=seed, progress=bar, **sizes))
    return {"config": {**sizes, "seed": seed, "data": data.name}, "rows": rows, "saving": shots_saving(rows)}


def plot_shots(result: dict, path) -> None:
    """Accuracy against total gradient shots (log x); the exact run is a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
