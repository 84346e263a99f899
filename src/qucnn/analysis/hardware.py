"""Does QuCNN still learn when every circuit runs on a (simulated) quantum computer? One small task trained four
ways, every forward and gradient circuit executed by the backend:

- ``exact``: the torch simulator (exact expectations, autograd gradients): the reference;
- ``shots``: noiseless Aer (:class:`~qucnn.backends.QiskitBackend`), ``S`` shots per circuit, parameter shift;
- ``noisy``: Aer with a fake IBM device (default ``fake_torino``): its calibrated noise, basis gates and coupling
  map; circuits transpiled for it;
- ``noisy-mitigated``: the same with readout mitigation of the measured ancilla.

The task fits a 2-core machine: MNIST 0 vs 1, average-pooled to 8x8 and binarised (pixel > 0.4), a 2x2 kernel
(2 data qubits: a 5-qubit SWAP test), stride 2, 2 filters of 2 ansatz layers, a few hundred images. Binarising
bounds the distinct non-zero patches to 15; identical circuits run once with their shots split
(:mod:`qucnn.backends.circuit_backend`), so a noisy step costs ~500 distinct density-matrix simulations instead
of one per patch, while every output still gets its own ``S``-shot estimate.

Example:
    result = hardware_study(QUICK_TASK, fake_device="fake_torino")
    [row["setting"] for row in result["rows"]]
    # -> ['exact', 'shots', 'noisy', 'noisy-mitigated']
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..backends import QiskitBackend
from ..datasets import ImageSplits
from ..nn.models import build_model
from ..utils.checks import UsageError, positive_int
from ..utils.files import atomic_write
from ..utils.plotting import pyplot
from ..utils.seeds import derive_seed

SETTINGS = ("exact", "shots", "noisy", "noisy-mitigated")
DEFAULT_DEVICE = "fake_torino"


@dataclass(frozen=True)
class HardwareTask:
    """Sizes of the study: images, epochs, batch, Adam's ``lr``, the layer (``filters``, ``layers``), ``shots``
    per forward circuit and ``gradient_shots`` per parameter-shift circuit, the pooled image side ``image``."""

    train: int = 240
    test: int = 200
    epochs: int = 3
    batch_size: int = 60
    lr: float = 0.05
    filters: int = 2
    layers: int = 2
    shots: int = 100
    gradient_shots: int = 100
    image: int = 8
    threshold: float = 0.4

    def validated(self) -> "HardwareTask":
        """This task, after checking that every size is a positive int (``UsageError`` naming the field)."""
        for name in ("train", "test", "epochs", "batch_size", "filters", "layers", "shots", "gradient_shots"):
            positive_int(getattr(self, name), name)
        return self


TASK = HardwareTask()
QUICK_TASK = HardwareTask(train=32, test=64, epochs=1, batch_size=32, filters=1, layers=1, shots=50,
                          gradient_shots=50)


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


def train_setting(setting: str, task: HardwareTask, data: tuple[torch.Tensor, ...], fake_device: str,
                  seed: int = 0, progress: bool = True) -> dict:
    """Train and test one setting; every circuit (training and test forwards, gradients) runs on its backend.
    Returns ``{"setting", "test_accuracy", "circuits", "shots", "wall_s"}`` (``shots`` ``None`` when exact) and
    the details ``{"curve", "backend"[, "readout"]}``."""
    x_tr, y_tr, x_te, y_te = data
    exact = setting == "exact"
    tic, cpu = time.perf_counter(), time.process_time()
    backend = make_backend(setting, fake_device, derive_seed(seed, "hardware-backend"))
    model = build_model("quantum", filters=task.filters, kernel=2, stride=2, layers=task.layers,
                        shots=None if exact else task.shots, gradient="autograd" if exact else "parameter-shift",
                        gradient_shots=None if exact else task.gradient_shots, seed=seed, head="bn,fc:16,relu",
                        input_shape=(1, task.image, task.image), num_classes=2, backend=backend)
    layer = model.quantum_layer
    layer.generator = torch.Generator().manual_seed(derive_seed(seed, "hardware-shots"))
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    steps = -(-len(x_tr) // task.batch_size)
    curve = []
    bar = tqdm(total=task.epochs * steps, desc=setting, disable=not progress, leave=False, unit="step")
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
            cost = layer.total_cost()
            bar.update()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", circuits=sum(c["circuits"] for c in cost.values()),
                            shots=sum(c["shots"] or 0 for c in cost.values()))
        curve.append({"epoch": epoch + 1, "train_loss": loss_sum / len(x_tr),
                      "test_accuracy": _accuracy(model, x_te, y_te)})
    bar.close()
    cost = layer.total_cost()
    row = {"setting": setting, "test_accuracy": curve[-1]["test_accuracy"],
           "circuits": sum(c["circuits"] for c in cost.values()),
           "shots": None if exact else sum(c["shots"] for c in cost.values()),
           "wall_s": round(time.perf_counter() - tic, 2)}
    details = {"curve": curve, "backend": "torch" if exact else repr(backend),
               "cpu_s": round(time.process_time() - cpu, 2)}
    if setting == "noisy-mitigated":
        details["readout"] = backend.runner.calibrations()
    return row, details


def hardware_study(task: HardwareTask, data: ImageSplits, fake_device: str = DEFAULT_DEVICE, seed: int = 0,
                   settings: tuple[str, ...] = SETTINGS, progress: bool = True) -> dict:
    """Every setting on the same data, initial weights and data order: ``{"fake_device", "rows": [{"setting",
    "test_accuracy", "circuits", "shots", "wall_s"}], "details"}`` (``details``: the task, learning curves, readout
    calibrations)."""
    task = task.validated()
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise UsageError(f"unknown settings {unknown}; choose from {SETTINGS}")
    tensors = task_data(data, task)
    rows, per_setting = [], {}
    for setting in settings:
        row, details = train_setting(setting, task, tensors, fake_device, seed, progress)
        rows.append(row)
        per_setting[setting] = details
    details = {"task": asdict(task), "seed": seed, "data": data.name, "settings": per_setting,
               "distinct_nonzero_patches": _distinct_patches(tensors[0])}
    return {"fake_device": fake_device, "rows": rows, "details": details}


def _distinct_patches(x: torch.Tensor) -> int:
    patches = F.unfold(x, 2, stride=2).transpose(1, 2).reshape(-1, 4)
    return len(torch.unique(patches[patches.sum(1) > 0], dim=0))


def plot_hardware(result: dict, path) -> None:
    """Test accuracy per setting (bars, labelled with circuits and wall time) and the learning curves."""
    plt = pyplot()
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(14, 4))
    rows = result["rows"]
    names = [r["setting"] for r in rows]
    left.bar(names, [r["test_accuracy"] for r in rows], color=[f"C{i}" for i in range(len(rows))])
    for i, r in enumerate(rows):
        left.text(i, r["test_accuracy"] / 2, f"{r['circuits']:.2g} circ\n{r['wall_s']:.0f} s", ha="center",
                  fontsize=8, color="white")
    left.set_ylim(0, 1.05)
    left.set_ylabel("test accuracy")
    left.set_title(f"MNIST 0 vs 1, every circuit on the backend\n(noise: {result['fake_device']})", fontsize=10)
    for r in rows:
        curve = result["details"]["settings"][r["setting"]]["curve"]
        epochs = [c["epoch"] for c in curve]
        mid.plot(epochs, [c["test_accuracy"] for c in curve], "o-", label=r["setting"])
        right.plot(epochs, [c["train_loss"] for c in curve], "o-", label=r["setting"])
    for ax in (mid, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    mid.set_xlabel("epoch")
    mid.set_ylabel("test accuracy")
    right.set_xlabel("epoch")
    right.set_ylabel("train loss")
    right.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))


def quick(task: HardwareTask) -> HardwareTask:
    """``task`` cut to the ``--quick`` sizes."""
    return replace(task, **{k: getattr(QUICK_TASK, k) for k in ("train", "test", "epochs", "batch_size", "filters",
                                                                 "layers", "shots", "gradient_shots")})


__all__ = ["DEFAULT_DEVICE", "HardwareTask", "QUICK_TASK", "SETTINGS", "TASK", "hardware_study", "make_backend",
           "plot_hardware", "task_data", "train_setting"]
