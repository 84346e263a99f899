"""What a training run depends on (:class:`TrainConfig`), and the pure functions of it: the data splits, the
data order of each epoch and the one-cycle schedule. Everything random in a run is a function of ``seed``.

Example:
    >>> TrainConfig(epochs=1, filters=2).model_options()["filters"]
    2
    >>> data_order(0, 0, 5).tolist() == data_order(0, 0, 5).tolist()
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backends import Backend, QiskitBackend, get_backend
from ..nn.functional import GRADIENT_MODES, SHOT_GRADIENTS
from ..nn.models import DEFAULT_HEAD, MODEL_KINDS
from ..utils.checks import UsageError, one_of, optional_positive_int, positive_int
from ..utils.seeds import derive_seed
from ..utils.stats import DEFAULT_MARGIN_POINTS
from .checkpoint import load_checkpoint

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCHEDULES = ("onecycle", "constant")
#: Options that define the computation; ``--resume`` must repeat them (``epochs`` too, unless the
#: schedule is constant).
RUN_KEYS = ("epochs", "batch_size", "lr", "schedule", "filters", "kernel", "stride", "layers", "shots", "gradient",
            "gradient_shots", "gradient_budget", "head", "dtype", "seed", "data", "limit_train", "limit_test",
            "classes", "backend", "fake_device", "mitigate_readout", "validation")
#: Training images held out for validation by default: the last 1,000 of the embedded 8,000.
DEFAULT_VALIDATION = 1000
#: Where the quantum layer's circuits run (``--backend``); all but ``torch`` run circuits with shots.
TRAIN_BACKENDS = ("torch", "aer", "pennylane")
#: Values of run keys that checkpoints written before the key existed implicitly had.
RUN_KEY_DEFAULTS = {"classes": None, "backend": "torch", "fake_device": None, "mitigate_readout": False,
                    "validation": 0}
_CIRCUIT_BACKENDS: dict[tuple, Backend] = {}
EVAL_BATCH = 500
#: The named heads of a comparison (``--heads``): the second adds the ReLU a classical convolution usually has.
NAMED_HEADS = {"plain": DEFAULT_HEAD, "relu": "bn,relu,maxpool:2,fc:128,relu"}
#: Evaluation seeds of a comparison when none are given.
DEFAULT_SEED_COUNT = 5


@dataclass
class TrainConfig:
    """Everything a training run depends on (the CLI's options, one field each).

    ``kind``: one of :data:`~qucnn.nn.models.MODEL_KINDS`; ``compare=True`` trains every kind of ``kinds``
    (default all) with every head of ``heads`` (names of :data:`qucnn.train.compare.HEADS`; default ``head``)
    for every seed of ``seeds`` (default :data:`DEFAULT_SEED_COUNT` seeds from ``seed``), and with
    ``tune=True`` first picks each (kind, head)'s ``lr`` and ``schedule`` on validation accuracy
    (:mod:`qucnn.train.compare`), averaged over ``tune_seeds``, which must be disjoint from ``seeds`` (default:
    the two seeds after the largest of ``seeds``). ``margin``: the equivalence margin of the comparison's TOST,
    in accuracy points.
    ``validation``: the last N training images are held out (never trained on); each epoch reports
    validation loss and accuracy; the test set is evaluated once, after the last epoch. ``0``: no hold-out.
    ``schedule="onecycle"``: the one-cycle policy of ``torch.optim.lr_scheduler.OneCycleLR``
    (``pct_start=0.2``, peak ``lr``) as a pure function of the step; ``"constant"``: Adam at ``lr``.
    ``checkpoint_every``: also checkpoint every N optimizer steps (epochs always end with one).
    ``max_steps``: stop after N optimizer steps as if killed (no final files): for tests and drills.
    ``overwrite``: start afresh even if ``out`` holds a checkpoint (refused otherwise).
    ``threads``: ``torch.set_num_threads`` per process (default: torch's choice; spawned processes share
    the cores). On a busy machine 1 thread can be much faster than an oversubscribed 2.
    ``backend``: where the quantum layer's circuits run (:data:`TRAIN_BACKENDS`; ``aer`` and ``pennylane`` need
    ``shots``), ``fake_device`` (Aer with a fake IBM device's noise) and ``mitigate_readout`` configure ``aer``.
    """

    kind: str = "quantum"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    schedule: str = "onecycle"
    filters: int = 8
    kernel: int = 4
    stride: int = 1
    layers: int = 3
    shots: int | None = None
    gradient: str = "autograd"
    gradient_shots: int | None = None
    gradient_budget: int | None = None
    head: str = DEFAULT_HEAD
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    data: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    checkpoint_every: int | None = None
    compare: bool = False
    nproc: int = 1
    max_steps: int | None = None
    progress: bool = True
    plot: bool = True
    threads: int | None = None
    classes: int | None = None  # number of classes (labels are checked against it); None: from the labels
    backend: str = "torch"
    fake_device: str | None = None
    mitigate_readout: bool = False
    validation: int = DEFAULT_VALIDATION
    seeds: tuple[int, ...] | None = None
    kinds: tuple[str, ...] | None = None
    tune: bool = False
    tune_seeds: tuple[int, ...] | None = None
    heads: tuple[str, ...] | None = None
    margin: float = DEFAULT_MARGIN_POINTS

    def validate(self) -> None:
        """Raise UsageError/TypeError naming the bad option (nothing is read or written)."""
        for name in ("epochs", "batch_size", "filters", "kernel", "stride", "layers", "nproc"):
            setattr(self, name, positive_int(getattr(self, name), name))
        for name in ("shots", "gradient_shots", "gradient_budget", "limit_train", "limit_test",
                     "checkpoint_every", "max_steps", "threads", "classes"):
            setattr(self, name, optional_positive_int(getattr(self, name), name))
        self.seed = positive_int(self.seed, "seed", 0)
        self.validation = positive_int(self.validation, "validation", 0)
        for name in ("seeds", "tune_seeds"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not list(value):
                    raise UsageError(f"{name} must be a non-empty list of ints >= 0, got {value!r}")
                values = tuple(positive_int(v, name, 0) for v in value)
                if len(set(values)) != len(values):
                    raise UsageError(f"{name} must not repeat a seed, got {list(values)}")
                setattr(self, name, values)
        if self.kinds is not None:
            if isinstance(self.kinds, str) or not list(self.kinds):
                raise UsageError(f"kinds must be a non-empty list from {MODEL_KINDS}, got {self.kinds!r}")
            self.kinds = tuple(one_of(k, MODEL_KINDS, "kinds") for k in self.kinds)
        self._validate_comparison()
        if self.tune and self.validation == 0:
            raise UsageError("tune picks settings on validation accuracy: it needs validation > 0")
        for name, allowed in (("kind", MODEL_KINDS), ("gradient", GRADIENT_MODES), ("schedule", SCHEDULES),
                              ("dtype", tuple(DTYPES))):
            one_of(getattr(self, name), allowed, name)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise UsageError(f"lr must be a positive number, got {self.lr!r}")
        if self.gradient == "sampled" and self.gradient_budget is None:
            raise UsageError("gradient 'sampled' needs gradient_budget (total shots per backward)")
        if self.resume and not self.out:
            raise UsageError("resume needs out (the directory holding checkpoint.pt)")
        self._validate_backend()
        if not isinstance(self.head, str):
            raise TypeError(f"head must be a spec string like {DEFAULT_HEAD!r}, got {type(self.head).__name__}")

    def _validate_comparison(self) -> None:
        if self.heads is not None:
            if isinstance(self.heads, str) or not list(self.heads):
                raise UsageError(f"heads (--heads) must be a non-empty list from {tuple(NAMED_HEADS)}, got "
                                 f"{self.heads!r}")
            self.heads = tuple(one_of(h, tuple(NAMED_HEADS), "heads (--heads)") for h in self.heads)
            if len(set(self.heads)) != len(self.heads):
                raise UsageError(f"heads (--heads) must not repeat a head, got {list(self.heads)}")
        if (self.seeds is not None or self.kinds is not None or self.tune or self.heads is not None) \
                and not self.compare:
            raise UsageError("seeds, kinds, heads and tune belong to a comparison: pass compare=True (--compare)")
        overlap = sorted(set(self.tune_seeds or ()) & set(self.run_seeds)) if self.compare else []
        if overlap:
            raise UsageError(f"--tune-seeds {_seed_list(self.tune_seeds)} overlaps --seeds "
                             f"{_seed_list(self.run_seeds)} in {_seed_list(overlap)}: tuning seeds must be disjoint "
                             "from the evaluation seeds")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) \
                or not math.isfinite(self.margin) or self.margin <= 0:
            raise UsageError(f"margin (--margin) must be a positive number of accuracy points, got {self.margin!r}")

    def _validate_backend(self) -> None:
        one_of(self.backend, TRAIN_BACKENDS, "backend")
        if self.backend == "torch" and (self.fake_device is not None or self.mitigate_readout):
            raise UsageError("fake_device and mitigate_readout configure the Qiskit backend: add backend 'aer'")
        if self.backend != "torch":
            if self.shots is None:
                raise UsageError(f"backend {self.backend!r} runs circuits and has no exact mode: give shots "
                                 "(e.g. --shots 1000)")
            if self.gradient in SHOT_GRADIENTS and self.gradient_shots is None:
                raise UsageError(f"gradient {self.gradient!r} on backend {self.backend!r} needs gradient_shots "
                                 "(e.g. --gradient-shots 1000)")
        if not isinstance(self.mitigate_readout, bool):
            raise TypeError(f"mitigate_readout must be True or False, got {self.mitigate_readout!r}")

    def make_backend(self) -> Backend:
        """The backend the quantum layer runs on (one instance per setting and process, so that compiled
        circuits and readout calibrations are reused)."""
        if self.backend != "aer" or (self.fake_device is None and not self.mitigate_readout):
            return get_backend(self.backend)
        key = (self.fake_device, self.mitigate_readout)
        if key not in _CIRCUIT_BACKENDS:
            _CIRCUIT_BACKENDS[key] = QiskitBackend(fake_device=self.fake_device, mitigate_readout=self.mitigate_readout)
        return _CIRCUIT_BACKENDS[key]

    def model_options(self) -> dict:
        """The keyword arguments of :func:`qucnn.nn.models.build_model` that this run fixes (all but kind,
        input shape and classes)."""
        return {"filters": self.filters, "kernel": self.kernel, "stride": self.stride, "layers": self.layers,
                "shots": self.shots, "gradient": self.gradient, "gradient_shots": self.gradient_shots,
                "gradient_budget": self.gradient_budget, "seed": self.seed, "head": self.head,
                "backend": self.make_backend()}

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The evaluation seeds a comparison trains (``seeds``, or :data:`DEFAULT_SEED_COUNT` seeds from ``seed``;
        ``(seed,)`` for a single run)."""
        if self.seeds is not None:
            return self.seeds
        return tuple(range(self.seed, self.seed + DEFAULT_SEED_COUNT)) if self.compare else (self.seed,)

    @property
    def run_tune_seeds(self) -> tuple[int, ...]:
        """The tuning seeds (``tune_seeds``, or the two seeds after the largest evaluation seed: disjoint from them
        by construction)."""
        if self.tune_seeds is not None:
            return self.tune_seeds
        top = max(self.run_seeds)
        return (top + 1, top + 2)

    @property
    def run_kinds(self) -> tuple[str, ...]:
        """The kinds a comparison trains (``kinds``, or all of :data:`~qucnn.nn.models.MODEL_KINDS`)."""
        return self.kinds if self.kinds is not None else MODEL_KINDS

    def as_dict(self) -> dict:
        """The configuration as a JSON-ready dict (``data`` as an absolute path), as checkpoints record it."""
        d = dataclasses.asdict(self)
        d["data"] = None if self.data is None else str(Path(self.data).resolve())
        return d


@dataclass(frozen=True, eq=False)
class Splits:
    """Train, validation and test tensors of one run (images ``(N, C, H, W)``, labels ``(N,)``)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    validation_images: torch.Tensor
    validation_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    name: str
    num_classes: int


def make_splits(data, validation: int = DEFAULT_VALIDATION, limit_train: int | None = None,
                limit_test: int | None = None) -> Splits:
    """Hold out the last ``validation`` training images of ``data`` (a :class:`qucnn.datasets.ImageSplits`); train
    on the first ``limit_train`` of the rest; test on the first ``limit_test`` test images. The held-out
    images do not depend on ``limit_train``, so runs of different sizes validate on the same images.

    Example:
        >>> from qucnn.datasets import load_embedded_mnist
        >>> s = make_splits(load_embedded_mnist(), 1000)
        >>> len(s.train_images), len(s.validation_images), len(s.test_images)
        (7000, 1000, 2000)
    """
    n = len(data.train_images)
    if validation >= n:
        raise UsageError(f"validation {validation} must leave training images: the data set has {n}")
    cut = n - validation
    return Splits(data.train_images[:cut][:limit_train], data.train_labels[:cut][:limit_train],
                  data.train_images[cut:], data.train_labels[cut:], data.test_images[:limit_test],
                  data.test_labels[:limit_test], data.name, data.num_classes)


def _seed_list(seeds) -> str:
    return ",".join(map(str, seeds))


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled indices of epoch ``epoch`` (0-based): a pure function of ``(seed, epoch, n)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))


def one_cycle(step: int, total: int, max_lr: float, pct_start: float = 0.2) -> tuple[float, float]:
    """``(lr, beta1)`` at optimizer step ``step`` of ``total``, as ``OneCycleLR`` (cosine, div 25, final div 1e4,
    momentum 0.95 -> 0.85 -> 0.95) computes them."""
    initial, peak = max_lr / 25, max_lr
    phases = [(pct_start * total - 1, initial, peak, 0.95, 0.85), (total - 1, peak, initial / 1e4, 0.85, 0.95)]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end > start else 1.0
            cos = math.cos(math.pi * pct) + 1
            return lr1 + (lr0 - lr1) / 2 * cos, m1 + (m0 - m1) / 2 * cos
        start = end
    raise AssertionError("unreachable")


def check_resume(cfg: TrainConfig, kind: str, path: Path) -> dict:
    """Load ``path`` and check that it belongs to this run (UsageError naming the differing options)."""
    ckpt = load_checkpoint(path)
    saved = ckpt.get("config", {})
    keys = [k for k in RUN_KEYS if not (k == "epochs" and cfg.schedule == "constant")]
    now = cfg.as_dict()
    saved = {**RUN_KEY_DEFAULTS, **saved}
    diffs = [f"{k} (saved {saved.get(k)!r}, now {now[k]!r})" for k in keys if saved.get(k) != now[k]]
    if ckpt.get("kind") != kind:
        diffs.insert(0, f"model kind (saved {ckpt.get('kind')!r}, now {kind!r})")
    if diffs:
        raise UsageError(f"cannot resume from {path}: it was written by a different run; differing: "
                         f"{'; '.join(diffs)}")
    return ckpt


__all__ = ["DEFAULT_SEED_COUNT", "DEFAULT_VALIDATION", "DTYPES", "EVAL_BATCH", "NAMED_HEADS", "RUN_KEYS", "SCHEDULES",
           "TRAIN_BACKENDS", "Splits", "TrainConfig", "check_resume", "data_order", "make_splits", "one_cycle"]
