"""How many shots does training really need? Test accuracy against the total shots spent on filter
gradients, for every gradient estimator of :class:`qucnn.QuConv2d`, over several seeds, against the
zero-shot baseline of frozen filters.

Each setting trains the same hybrid network (for a seed: the same initial angles and head, data order and
shot stream) on the embedded MNIST with exact forward passes, so the only difference is the filter-gradient
estimator: exact (autograd), none at all (``frozen``: the filters stay at their random start, 0 gradient
shots), post-processed parameter shift and Eq. 17 at ``S`` shots per circuit, and the sampled estimator at a
budget of ``N`` shots per backward call. The shots a quantum computer would have spent come from the layer's
own cost accounting. No setting is tuned, so the test set is read once per run and nothing is chosen on it.

A shot saving is only claimed for a sampled setting whose accuracy is significantly above frozen filters
(one-sided paired t test at 95 % over seeds: a gradient that does no better than no gradient saves nothing);
it is the shots a dense estimator's mean curve needs for the same mean accuracy, with the interval from the
sampled setting's accuracy +- one standard error of its paired difference from frozen filters.

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
from ..utils.files import atomic_write, atomic_write_text
from ..utils.plotting import pyplot
from ..utils.seeds import derive_seed
from ..utils.stats import one_sided_above, summarise

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
DEFAULT_SEEDS = (0, 1, 2)


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


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per setting (in first-seen order): its accuracies per seed with :func:`summarise`, the mean
    gradient shots, and ``vs_frozen``, the one-sided paired test of ``accuracy - frozen accuracy`` over the
    seeds both ran (:func:`qucnn.utils.stats.one_sided_above`; ``None`` without a frozen run)."""
    frozen = {r["seed"]: r["test_accuracy"] for r in rows if r["method"] == "frozen"}
    out: dict[str, dict] = {}
    for r in rows:
        entry = out.setdefault(r["label"], {k: r[k] for k in ("label", "method", "shots", "budget")} |
                               {"seeds": [], "test_accuracy": [], "gradient_shots_per_seed": []})
        entry["seeds"].append(r["seed"])
        entry["test_accuracy"].append(r["test_accuracy"])
        entry["gradient_shots_per_seed"].append(r["gradient_shots"])
    for entry in out.values():
        entry["summary"] = summarise(entry["test_accuracy"])
        shots = entry["gradient_shots_per_seed"]
        entry["gradient_shots"] = None if None in shots else sum(shots) / len(shots)
        paired = [(a, frozen[s]) for s, a in zip(entry["seeds"], entry["test_accuracy"]) if s in frozen]
        entry["vs_frozen"] = None if entry["method"] == "frozen" or not paired else \
            one_sided_above([a - b for a, b in paired])
    return list(out.values())


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


def _orders(curve: list[tuple[float, float]], accuracy: float, shots: float) -> dict:
    need, interpolated = shots_needed(curve, accuracy)
    return {"shots": need, "interpolated": interpolated,
            "orders_of_magnitude": None if need is None else math.log10(need / shots)}


def shots_saving(settings: list[dict]) -> dict | None:
    """For each sampled setting (:func:`aggregate` entries), whether it beats frozen filters; for those that do,
    the shots each dense estimator's mean curve needs for the same mean accuracy and the orders of magnitude
    saved, at the mean and at the mean -+ one standard error of its paired difference from frozen filters (``low``,
    ``high``). ``best``: the largest central saving, against the cheaper dense estimator, among the significant
    settings."""
    curves = {m: [(s["gradient_shots"], s["summary"]["mean"]) for s in settings
                  if s["method"] == m and s["gradient_shots"]] for m in DENSE}
    sampled = sorted((s for s in settings if s["method"] == "sampled" and s["gradient_shots"]),
                     key=lambda s: s["gradient_shots"])
    if not sampled or not any(curves.values()):
        return None
    points = []
    for s in sampled:
        # the paired standard error: the seed-to-seed variation every setting of a seed shares cancels
        mean, sem = s["summary"]["mean"], (s["vs_frozen"] or {}).get("sem") or 0.0
        entry = {"label": s["label"], "shots": s["gradient_shots"], "test_accuracy": mean, "sem": sem,
                 "above_frozen": None if s["vs_frozen"] is None else s["vs_frozen"]["above"], "dense": {}}
        if entry["above_frozen"]:
            for method, curve in curves.items():
                if curve:
                    entry["dense"][method] = {"central": _orders(curve, mean, s["gradient_shots"]),
                                              "low": _orders(curve, mean - sem, s["gradient_shots"]),
                                              "high": _orders(curve, mean + sem, s["gradient_shots"])}
            central = [v["central"]["orders_of_magnitude"] for v in entry["dense"].values()
                       if v["central"]["orders_of_magnitude"] is not None]
            entry["orders_of_magnitude"] = min(central) if central else None
        else:
            entry["orders_of_magnitude"] = None
        points.append(entry)
    scored = [p for p in points if p["orders_of_magnitude"] is not None]
    return {"points": points, "best": max(scored, key=lambda p: p["orders_of_magnitude"]) if scored else None,
            "rule": "saving only where the sampled setting is above frozen filters at one-sided 95 % (paired t "
                    "over seeds); interval from its accuracy +- 1 paired standard error"}


def shots_study(settings: list[Setting], data, seeds: tuple[int, ...] = DEFAULT_SEEDS, progress: bool = True,
                done: list[dict] | None = None, on_row=None, **sizes) -> dict:
    """Train every setting with every seed; returns ``{"rows", "settings", "saving", "config"}``.

    ``done``: rows of an earlier run with the same ``sizes`` (e.g. a killed one, or fewer seeds); their
    ``(label, seed)`` pairs are reused, not retrained (every run is a pure function of setting, seed and
    sizes). ``on_row(rows)`` is called after each new row (to save progress)."""
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
    summary = aggregate(rows)
    return {"config": {**sizes, "seeds": list(seeds), "data": data.name}, "rows": rows, "settings": summary,
            "saving": shots_saving(summary)}


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


def plot_shots(result: dict, path) -> None:
    """Left: accuracy against total gradient shots (log x), mean +- std over seeds, with exact gradients and
    frozen filters as bands (mean +- std). Right: the paired difference from frozen filters (same seed), mean
    +- one standard error; the short bar under each point is its one-sided 95 % lower bound. Filled markers:
    significantly above frozen; hollow: not."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 5.8), layout="constrained")
    bands = {"autograd": ("black", "exact gradients"), "frozen": ("tab:grey", "frozen filters (0 gradient shots)")}
    for s in result["settings"]:
        if s["method"] in bands:
            colour, label = bands[s["method"]]
            m, sd = 100 * s["summary"]["mean"], 100 * (s["summary"]["std"] or 0.0)
            ax.axhline(m, color=colour, ls="--", lw=1.5, label=f"{label}: {m:.2f} +- {sd:.2f} %")
            ax.axhspan(m - sd, m + sd, color=colour, alpha=0.12)
            if s["method"] == "autograd" and s["vs_frozen"] is not None:
                bx.axhline(100 * s["vs_frozen"]["mean"], color=colour, ls="--", lw=1.5,
                           label=f"exact gradients: {100 * s['vs_frozen']['mean']:+.2f} points")
    bx.axhline(0, color="tab:grey", lw=1.5, label="frozen filters")
    styles = {"parameter-shift": ("tab:blue", "o", "parameter shift, post-processed", 0.92),
              "entanglement": ("tab:red", "s", "Eq. 17 (entanglement)", 1.08), "sampled": ("tab:green", "^", "sampled", 1.0)}
    for method, (colour, marker, label, nudge) in styles.items():
        pts = sorted((s for s in result["settings"] if s["method"] == method and s["gradient_shots"]),
                     key=lambda s: s["gradient_shots"])
        if not pts:
            continue
        xs = [s["gradient_shots"] * nudge for s in pts]  # nudged apart where estimators share shot counts
        ax.plot(xs, [100 * s["summary"]["mean"] for s in pts], color=colour, lw=1.2)
        bx.plot(xs, [100 * s["vs_frozen"]["mean"] for s in pts if s["vs_frozen"]], color=colour, lw=1.2)
        for i, (x, s) in enumerate(zip(xs, pts)):
            vs = s["vs_frozen"]
            above = vs is not None and bool(vs["above"])
            style = dict(color=colour, marker=marker, ms=8, mfc=colour if above else "white", capsize=3,
                         label=label if i == 0 else None)
            ax.errorbar([x], [100 * s["summary"]["mean"]], yerr=[100 * (s["summary"]["std"] or 0.0)], **style)
            if vs is not None:
                bx.errorbar([x], [100 * vs["mean"]], yerr=[100 * (vs["sem"] or 0.0)], **style)
                if vs["lower95"] is not None:
                    bx.plot([x / 1.04, x * 1.04], [100 * vs["lower95"]] * 2, color=colour, lw=2)
    for axis in (ax, bx):
        axis.set_xscale("log")
        axis.set_xlabel("total shots spent on filter gradients (mean over seeds)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=9, loc="upper left")
    ax.set_ylabel("test accuracy (%), mean +- std over seeds")
    bx.set_ylabel("accuracy minus frozen filters, same seed (points)")
    ax.set_title("accuracy against gradient shots", fontsize=11)
    bx.set_title("paired with frozen filters: mean +- 1 standard error; bar: one-sided 95 % lower bound",
                 fontsize=11)
    cfg = result["config"]
    fig.suptitle(f"{cfg['data']}: {cfg['filters']} filters {cfg['kernel']}x{cfg['kernel']}, {cfg['layers']} layers, "
                 f"{cfg['epochs']} epoch(s), {cfg['train']} images, seeds {', '.join(map(str, cfg['seeds']))}. "
                 "Filled: above frozen filters (one-sided paired t, 95 %); hollow: not", fontsize=12)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


__all__ = ["DEFAULT_SEEDS", "FULL", "QUICK", "Setting", "aggregate", "build_network", "default_settings",
           "plot_shots", "quick_settings", "read_progress", "shots_needed", "shots_saving", "shots_study",
           "train_setting", "write_progress"]
