"""Does QuCNN still learn when every circuit runs on a (simulated) quantum computer? One small task trained in
every combination of an execution setting and a head, for several seeds, paired by seed:

- ``exact``: the torch simulator with exact expectations (parameter shift on exact fidelities);
- ``shots``: noiseless Aer (:class:`~qucnn.backends.QiskitBackend`), ``S`` shots per circuit;
- ``noisy``: Aer with a fake IBM device (default ``fake_torino``): its calibrated noise, basis gates and coupling
  map; circuits transpiled for it;
- ``noisy-mitigated``: the same with readout mitigation of the measured ancilla;

each with BatchNorm after the quantum layer (head ``bn``) and without it (``no-bn``): BatchNorm absorbs an
affine shrink of the fidelities, which is most of what device noise does to them. Every arm uses the same
estimator (parameter shift) and the same evaluation: the trained model's test accuracy with ``S``-shot
forwards on its own backend (the exact arm: noiseless shots on the torch simulator), repeated
``eval_repeats`` times (mean and spread), and once more with exact expectations.

The task fits a 2-core machine: MNIST 0 vs 1, average-pooled to 8x8 and binarised (pixel > 0.4), a 2x2 kernel
(2 data qubits: a 5-qubit SWAP test), stride 2, 2 filters of 2 ansatz layers. Binarising bounds the distinct
non-zero patches to 15; identical circuits run once with their shots split, so a noisy step costs ~500
distinct density-matrix simulations instead of one per patch, while every output gets its own estimate.

Example:
    result = hardware_study(QUICK_TASK, data, seeds=(0, 1))
    sorted({row["setting"] for row in result["rows"]})
    # -> ['exact', 'noisy', 'noisy-mitigated', 'shots']
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..backends import Filters, QiskitBackend, get_backend
from ..datasets import ImageSplits
from ..nn.models import build_model
from ..utils.checks import UsageError, positive_int
from ..utils.seeds import derive_seed
from ..utils.stats import compare_pairs, summarise
from .hardware_report import hardware_table, plot_hardware

SETTINGS = ("exact", "shots", "noisy", "noisy-mitigated")
#: Heads after the quantum layer: with BatchNorm and without it.
HEADS = {"bn": "bn,fc:16,relu", "no-bn": "fc:16,relu"}
DEFAULT_DEVICE = "fake_torino"
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class HardwareTask:
    """Sizes of the study: images, epochs, batch, Adam's ``lr``, the layer (``filters``, ``layers``), ``shots``
    per forward circuit and ``gradient_shots`` per parameter-shift circuit, the pooled image side ``image``, and
    ``eval_repeats``: shot-based evaluations of each trained model."""

    train: int = 240
    test: int = 400
    epochs: int = 3
    batch_size: int = 60
    lr: float = 0.05
    filters: int = 2
    layers: int = 2
    shots: int = 100
    gradient_shots: int = 100
    image: int = 8
    threshold: float = 0.4
    eval_repeats: int = 5

    def validated(self) -> "HardwareTask":
        """This task, after checking that every size is a positive int (``UsageError`` naming the field)."""
        for name in ("train", "test", "epochs", "batch_size", "filters", "layers", "shots", "gradient_shots",
                     "eval_repeats"):
            positive_int(getattr(self, name), name)
        return self


TASK = HardwareTask()
QUICK_TASK = HardwareTask(train=32, test=64, epochs=1, batch_size=32, filters=1, layers=1, shots=50,
                          gradient_shots=50, eval_repeats=2)


def task_data(data: ImageSplits, task: HardwareTask) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: the first images of digits 0 and 1, pooled to ``image x image``
    and binarised; labels 0/1."""
    out = []
    for images, labels, count in ((data.train_images, data.train_labels, task.train),
                                  (data.test_images, data.test_labels, task.test)):
        keep = (labels == 0) | (labels == 1)
        if int(keep.sum()) < count:
            raise UsageError(f"the data has {int(keep.sum())} images of 0 and 1, fewer than the {count} asked for")
        x = F.adaptive_avg_pool2d(images[keep][:count].float(), task.image)
        out += [(x > task.threshold).float(), labels[keep][:count].long()]
    return tuple(out)


def make_backend(setting: str, fake_device: str, seed: int):
    """The backend of a setting: a registered name or a :class:`~qucnn.backends.QiskitBackend`."""
    if setting == "exact":
        return "torch"
    if setting == "shots":
        return QiskitBackend(seed=seed)
    return QiskitBackend(fake_device=fake_device, mitigate_readout=setting == "noisy-mitigated", seed=seed)


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / len(y)


def _evaluate(model, task: HardwareTask, x: torch.Tensor, y: torch.Tensor) -> dict:
    """``eval_repeats`` shot-based test accuracies on the model's own backend (exact arm: torch with shots),
    then one with exact expectations on the torch simulator."""
    layer = model.quantum_layer
    layer.shots = task.shots
    repeats = [_accuracy(model, x, y) for _ in range(task.eval_repeats)]
    layer.backend, layer.shots = "torch", None
    return {"eval_repeats": repeats, "eval_std": summarise(repeats)["std"], "exact_eval_accuracy": _accuracy(model, x, y)}


def train_arm(setting: str, head: str, task: HardwareTask, data: tuple[torch.Tensor, ...], fake_device: str,
              seed: int = 0, bar=None) -> dict:
    """Train one (setting, head) with one seed, every circuit on its backend, then evaluate it
    (:func:`_evaluate`). Returns a row: ``setting``, ``head``, ``label``, ``seed``, ``test_accuracy`` (mean of the
    shot-based evaluations), ``eval_repeats``, ``eval_std``, ``exact_eval_accuracy``, ``circuits`` and ``shots``
    of training, ``curve`` (train loss per epoch), ``wall_s``, ``cpu_s`` and, mitigated, ``readout``."""
    x_tr, y_tr, x_te, y_te = data
    exact = setting == "exact"
    tic, cpu = time.perf_counter(), time.process_time()
    backend = make_backend(setting, fake_device, derive_seed(seed, "hardware-backend"))
    model = build_model("quantum", filters=task.filters, kernel=2, stride=2, layers=task.layers,
                        shots=None if exact else task.shots, gradient="parameter-shift",
                        gradient_shots=None if exact else task.gradient_shots, seed=seed, head=HEADS[head],
                        input_shape=(1, task.image, task.image), num_classes=2, backend=backend)
    layer = model.quantum_layer
    layer.generator = torch.Generator().manual_seed(derive_seed(seed, "hardware-shots"))
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    steps = -(-len(x_tr) // task.batch_size)
    curve = []
    for epoch in range(task.epochs):
        order = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))
        loss_sum = 0.0
        for i in range(steps):
            idx = order[i * task.batch_size:(i + 1) * task.batch_size]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            if bar is not None:
                bar.update()
                bar.set_postfix_str(f"seed {seed}, {setting}/{head}, loss {float(loss.detach()):.3f}")
        curve.append({"epoch": epoch + 1, "train_loss": loss_sum / len(x_tr)})
    cost = layer.total_cost()
    row = {"setting": setting, "head": head, "label": f"{setting}/{head}", "seed": seed,
           "circuits": sum(c["circuits"] for c in cost.values()),
           "shots": None if exact else sum(c["shots"] for c in cost.values()), "curve": curve}
    row.update(_evaluate(model, task, x_te, y_te))
    row["test_accuracy"] = sum(row["eval_repeats"]) / len(row["eval_repeats"])
    row.update(wall_s=round(time.perf_counter() - tic, 2), cpu_s=round(time.process_time() - cpu, 2),
               backend="torch" if exact else repr(backend))
    if setting == "noisy-mitigated":
        row["readout"] = backend.runner.calibrations()
    return row


def hardware_pairs(settings: tuple[str, ...], heads: tuple[str, ...]) -> list[tuple[str, str]]:
    """The comparisons of the study's table: per head, each setting against the one before it in
    :data:`SETTINGS` order and ``noisy`` against ``exact``; then each setting with BatchNorm against without."""
    pairs = []
    for h in heads:
        present = [s for s in SETTINGS if s in settings]
        pairs += [(f"{b}/{h}", f"{a}/{h}") for a, b in zip(present, present[1:])]
        if "noisy" in present and "exact" in present and present.index("noisy") > 1:
            pairs.append((f"noisy/{h}", f"exact/{h}"))
    if "bn" in heads and "no-bn" in heads:
        pairs += [(f"{s}/bn", f"{s}/no-bn") for s in SETTINGS if s in settings]
    return pairs


def summarise_arms(rows: list[dict], seeds: tuple[int, ...], margin: float) -> dict:
    """Per arm ``label``: accuracies by seed with :func:`summarise` (and of the exact evaluation, and the mean
    evaluation spread); ``differences``: :func:`hardware_pairs` paired by seed (Holm across the table), plus the
    difference-in-differences ``(noisy - exact) with BatchNorm`` minus ``without`` where both heads ran."""
    by = {(r["label"], r["seed"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    arms, values = {}, {}
    for label in labels:
        per = [by[(label, s)] for s in seeds if (label, s) in by]
        values[label] = [r["test_accuracy"] for r in per]
        arms[label] = {"seeds": [r["seed"] for r in per], "test_accuracy": values[label],
                       "summary": summarise(values[label]),
                       "exact_eval": summarise([r["exact_eval_accuracy"] for r in per]),
                       "eval_std_mean": sum(r["eval_std"] or 0.0 for r in per) / len(per)}
    settings = tuple(dict.fromkeys(r["setting"] for r in rows))
    heads = tuple(dict.fromkeys(r["head"] for r in rows))
    pairs = [p for p in hardware_pairs(settings, heads) if len(values[p[0]]) == len(values[p[1]]) > 1]
    if {"noisy/bn", "exact/bn", "noisy/no-bn", "exact/no-bn"} <= values.keys() and len(seeds) > 1:
        for h in ("bn", "no-bn"):
            values[f"(noisy - exact)/{h}"] = [a - b for a, b in zip(values[f"noisy/{h}"], values[f"exact/{h}"])]
        pairs.append(("(noisy - exact)/bn", "(noisy - exact)/no-bn"))
    return {"arms": arms, "differences": compare_pairs(values, pairs, margin) if pairs else []}


def hardware_study(task: HardwareTask, data: ImageSplits, fake_device: str = DEFAULT_DEVICE,
                   seeds: tuple[int, ...] = DEFAULT_SEEDS, settings: tuple[str, ...] = SETTINGS,
                   heads: tuple[str, ...] = tuple(HEADS), progress: bool = True, done: list[dict] | None = None,
                   on_row=None, margin: float = 0.005) -> dict:
    """Every (setting, head) for every seed on the same data, initial weights and data order per seed:
    ``{"fake_device", "noise_response", "config", "rows", "arms", "differences", "distinct_nonzero_patches"}``
    (``noise_response``: :func:`noise_response` for the first seed when ``noisy`` is among the settings). ``done``: rows of an
    earlier run of the same task (reused, not retrained); ``on_row(rows)`` after each new row; ``margin``: the
    TOST margin as an accuracy fraction."""
    task = task.validated()
    unknown = [s for s in settings if s not in SETTINGS] + [h for h in heads if h not in HEADS]
    if unknown:
        raise UsageError(f"unknown settings or heads {unknown}; choose from {SETTINGS} and {tuple(HEADS)}")
    tensors = task_data(data, task)
    cached = {(r["label"], r["seed"]): r for r in done or []}
    arms = list(itertools.product(seeds, settings, heads))
    todo = [a for a in arms if (f"{a[1]}/{a[2]}", a[0]) not in cached]
    steps = task.epochs * -(-task.train // task.batch_size)
    rows = []
    with tqdm(total=len(todo) * steps, desc="hardware study", disable=not progress, unit="step") as bar:
        for seed, setting, head in arms:
            key = (f"{setting}/{head}", seed)
            if key in cached:
                rows.append(cached[key])
                continue
            rows.append(train_arm(setting, head, task, tensors, fake_device, seed, bar))
            if on_row is not None:
                on_row(rows)
    response = noise_response(task, data, fake_device, seeds[0]) if "noisy" in settings else None
    return {"fake_device": fake_device, "noise_response": response,
            "config": {"task": asdict(task), "seeds": list(seeds), "margin": margin,
                       "settings": list(settings), "heads": {h: HEADS[h] for h in heads}, "data": data.name},
            "rows": rows, **summarise_arms(rows, tuple(seeds), margin),
            "distinct_nonzero_patches": _distinct_patches(tensors[0])}


def _patches(x: torch.Tensor) -> torch.Tensor:
    """The distinct non-zero 2x2 patches ``(P, 4)`` of binarised images ``x``."""
    patches = F.unfold(x, 2, stride=2).transpose(1, 2).reshape(-1, 4)
    return torch.unique(patches[patches.sum(1) > 0], dim=0)


def _distinct_patches(x: torch.Tensor) -> int:
    return len(_patches(x))


def noise_response(task: HardwareTask, data: ImageSplits, fake_device: str = DEFAULT_DEVICE, seed: int = 0,
                   shots: int = 20_000) -> dict:
    """How the device's noise maps the exact ``<Z_a> = F`` of the task's circuits: every distinct non-zero
    training patch against every initial filter of ``seed``, each run with ``shots`` shots on the noisy backend
    (unmitigated) and exactly on the torch simulator; a least-squares line ``noisy = slope F + intercept``.
    Returns ``{"slope", "intercept", "max_residual", "points", "shots", "standard_error"}``."""
    patches = _patches(task_data(data, task)[0]).double()
    model = build_model("quantum", filters=task.filters, kernel=2, stride=2, layers=task.layers, seed=seed,
                        head=HEADS["bn"], input_shape=(1, task.image, task.image), num_classes=2)
    theta = model.quantum_layer.theta.detach().double()
    rows = patches.repeat(len(theta), 1)
    filters = Filters(theta=theta.repeat_interleave(len(patches), 0))
    exact = get_backend("torch").circuit_expectations(rows, filters).values
    noisy = make_backend("noisy", fake_device, derive_seed(seed, "noise-response"))
    z = noisy.circuit_expectations(rows, filters, shots=shots, generator=torch.Generator().manual_seed(seed)).values
    design = torch.stack([exact, torch.ones_like(exact)], 1)
    slope, intercept = torch.linalg.lstsq(design, z.unsqueeze(1)).solution.squeeze(1).tolist()
    residual = (z - (slope * exact + intercept)).abs().max()
    return {"slope": slope, "intercept": intercept, "max_residual": float(residual), "points": len(rows),
            "shots": shots, "standard_error": float((1 / shots) ** 0.5),
            "exact": exact.tolist(), "noisy": z.tolist()}


def quick(task: HardwareTask) -> HardwareTask:
    """``task`` cut to the ``--quick`` sizes."""
    return replace(task, **{k: getattr(QUICK_TASK, k) for k in ("train", "test", "epochs", "batch_size", "filters",
                                                                 "layers", "shots", "gradient_shots", "eval_repeats")})


__all__ = ["DEFAULT_DEVICE", "DEFAULT_SEEDS", "HEADS", "HardwareTask", "QUICK_TASK", "SETTINGS", "TASK",
           "hardware_pairs", "hardware_study", "hardware_table", "make_backend", "noise_response", "plot_hardware", "summarise_arms", "task_data",
           "train_arm"]
