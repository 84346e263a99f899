"""How many shots does training really need? Test accuracy against the total shots spent on filter
gradients, for every gradient estimator of :class:`qucnn.QuConv2d`, over several seeds, against the
zero-shot baseline of frozen filters.

Each setting trains the same hybrid network (for a seed: the same initial angles and head, data order and
shot stream) on the embedded MNIST with exact forward passes, so the only difference is the filter-gradient
estimator: exact (autograd), none at all (``frozen``: the filters stay at their random start, 0 gradient
shots), post-processed parameter shift and Eq. 17 at ``S`` shots per circuit, and the sampled estimator at a
budget of ``N`` shots per backward call. The shots a quantum computer would have spent come from the layer's
own cost accounting. No setting is tuned, so the test set is read once per run and nothing is chosen on it.

Each setting is compared with frozen filters paired by seed (two-sided 95 % t intervals, Holm-corrected
across the settings, TOST at a stated margin), and a shot saving is claimed only from interval crossings
(:mod:`qucnn.analysis.shots_report`), in shots and in circuits.

Example:
    result = shots_study(quick_settings(), data, seeds=(0, 1, 2), **QUICK)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..nn.layer import QuConv2d
from ..utils.checks import UsageError
from ..utils.files import atomic_write_text
from ..utils.seeds import derive_seed
from .shots_report import aggregate, plot_shots, shots_saving

DENSE = ("parameter-shift", "entanglement")


@dataclass(frozen=True)
class Setting:
    """One estimator: ``method`` a ``QuConv2d`` gradient mode or ``"frozen"`` (no filter gradient); ``shots``
    per circuit (``None``: exact), or ``budget`` shots per backward call for ``"sampled"``."""

    method: str
    shots: int | None = None
    budget: int | None = None

    @property
    def label(self) -> str:
        """The setting's name in tables and legends, e.g. ``"parameter-shift S=10"``, ``"sampled N=1e+03"``."""
        if self.method == "sampled":
            return f"sampled N={self.budget:.0e}"
        return self.method if self.shots is None else f"{self.method} S={self.shots}"


def default_settings() -> list[Setting]:
    """Exact; frozen; parameter shift and Eq. 17 at S = 1, 10, 100, 1000; sampled at N = 1e2 .. 1e6."""
    out = [Setting("autograd"), Setting("frozen")]
    for method in DENSE:
        out += [Setting(method, shots=s) for s in (1, 10, 100, 1000)]
    out += [Setting("sampled", budget=10**k) for k in range(2, 7)]
    return out


def quick_settings() -> list[Setting]:
    """The ``--quick`` settings: exact, frozen, each shot estimator at one small budget, sampled at two."""
    return [Setting("autograd"), Setting("frozen"), Setting("entanglement", shots=10),
            Setting("parameter-shift", shots=10), Setting("sampled", budget=1000), Setting("sampled", budget=100_000)]


#: Network and data sizes of the full study and of ``--quick``.
FULL = dict(filters=4, kernel=4, stride=2, layers=2, epochs=2, train=4000, test=2000, batch_size=64, lr=0.01)
QUICK = dict(filters=2, kernel=4, stride=2, layers=1, epochs=1, train=1024, test=500, batch_size=32, lr=0.02)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def build_network(setting: Setting, filters: int, kernel: int, stride: int, layers: int, seed: int,
                  image_size: int = 28, classes: int = 10) -> nn.Sequential:
    """QuConv2d -> BatchNorm -> flatten -> linear; identical initial weights for every setting of a seed.
    ``frozen``: the same angles with ``requires_grad=False``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "shots study:head"))
        gradient = "autograd" if setting.method == "frozen" else setting.method
        layer = QuConv2d(1, filters, kernel, stride=stride, layers=layers, gradient=gradient,
                         gradient_shots=setting.shots, gradient_budget=setting.budget,
                         generator=torch.Generator().manual_seed(derive_seed(seed, "shots study:filters")))
        side = (image_size - kernel) // stride + 1
        net = nn.Sequential(layer, nn.BatchNorm2d(filters), nn.Flatten(), nn.Linear(filters * side * side, classes))
    if setting.method == "frozen":
        layer.theta.requires_grad_(False)
    return net


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(images[i:i + 500]).argmax(1) == labels[i:i + 500]).sum())
                      for i in range(0, len(images), 500))
    model.train()
    return correct / len(images)


def train_setting(setting: Setting, data, *, filters: int, kernel: int, stride: int, layers: int, epochs: int,
                  train: int, test: int, batch_size: int, lr: float, seed: int = 0, progress=None) -> dict:
    """Train one setting with one seed; returns its accuracy, the gradient shots and circuits spent, the time."""
    model = build_network(setting, filters, kernel, stride, layers, seed, data.train_images.shape[-1])
    layer: QuConv2d = model[0]
    layer.generator = torch.Generator().manual_seed(derive_seed(seed, "shots study:shots"))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    x, y = data.train_images[:train], data.train_labels[:train]
    order_gen = torch.Generator().manual_seed(derive_seed(seed, "shots study:order"))
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
    return {**asdict(setting), "label": setting.label, "seed": seed,
            "test_accuracy": _accuracy(model, data.test_images[:test], data.test_labels[:test]),
            "gradient_shots": cost["shots"], "gradient_circuits": cost["circuits"],
            "steps": epochs * math.ceil(len(x) / batch_size), "seconds": time.perf_counter() - start}


def shots_study(settings: list[Setting], data, seeds: tuple[int, ...] = DEFAULT_SEEDS, progress: bool = True,
                done: list[dict] | None = None, on_row=None, margin: float = 0.005, **sizes) -> dict:
    """Train every setting with every seed; returns ``{"rows", "settings", "saving", "config"}``.

    ``done``: rows of an earlier run with the same ``sizes`` (e.g. a killed one, or fewer seeds); their
    ``(label, seed)`` pairs are reused, not retrained (every run is a pure function of setting, seed and
    sizes). ``on_row(rows)`` is called after each new row (to save progress). ``margin``: the equivalence margin
    of the comparisons with frozen filters, as an accuracy fraction (0.005 = 0.5 points)."""
    steps = sizes["epochs"] * math.ceil(min(sizes["train"], len(data.train_images)) / sizes["batch_size"])
    cached = {(r["label"], r["seed"]): r for r in done or []}
    rows = []
    todo = sum((s.label, seed) not in cached for seed in seeds for s in settings)
    with tqdm(total=steps * todo, desc="shots study", disable=not progress) as bar:
        for seed in seeds:
            for setting in settings:
                if (setting.label, seed) in cached:
                    rows.append(cached[(setting.label, seed)])
                    continue
                bar.set_postfix_str(f"seed {seed}, {setting.label}")
                rows.append(train_setting(setting, data, seed=seed, progress=bar, **sizes))
                if on_row is not None:
                    on_row(rows)
    summary = aggregate(rows, margin)
    return {"config": {**sizes, "seeds": list(seeds), "data": data.name, "margin": margin}, "rows": rows,
            "settings": summary, "saving": shots_saving(summary)}


def read_progress(path: Path, sizes: dict) -> list[dict]:
    """The finished rows kept in ``path`` (``OUT/shots.rows.json``) by a study of the same ``sizes``; ``[]``
    without the file or for other sizes; ``UsageError`` naming the file when it is not such a record."""
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        rows = saved["rows"] if saved.get("sizes") == sizes else []
        if not all(isinstance(r, dict) and {"label", "seed", "test_accuracy"} <= r.keys() for r in rows):
            raise ValueError("a row lacks label, seed or test_accuracy")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"{path}: not a shots-study progress file ({err}); delete it to start afresh") from None
    return rows


def write_progress(path: Path, sizes: dict, done: list[dict], rows: list[dict]) -> None:
    """Atomically record ``rows`` in ``path`` together with every row of ``done`` they do not replace (so a run
    with fewer seeds keeps the other seeds' finished rows)."""
    keys = {(r["label"], r["seed"]) for r in rows}
    kept = [r for r in done if (r["label"], r["seed"]) not in keys]
    atomic_write_text(path, json.dumps({"sizes": sizes, "rows": kept + rows}))


__all__ = ["DEFAULT_SEEDS", "FULL", "QUICK", "Setting", "aggregate", "build_network", "default_settings",
           "plot_shots", "quick_settings", "read_progress", "shots_saving", "shots_study",
           "train_setting", "write_progress"]
