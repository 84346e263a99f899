"""How QuCNN scales with the qubits per filter: the comparison of ``qucnn train --compare`` at 4, 6 and 8 qubits
(kernels 4x4 stride 1, 8x8 stride 2, 16x16 stride 4 on 28x28 MNIST), with the gradient variance measured beside
it, against what the barren-plateau fit of ``qucnn analyze plateau`` predicts.

Arms, each for every seed, paired by seed:

- ``quantum``, ``fidelity-classical``, ``frozen``, ``classical-matched``: as in :mod:`qucnn.train.compare`, exact
  expectations, each kind with its tuned ``lr`` and ``schedule`` (``settings``, e.g. from a comparison's
  ``tuning.chosen``) and the same head;
- ``quantum-shots``: the quantum kind with parameter-shift gradients from ``gradient_shots`` shots per circuit
  (forward exact): where the plateau bites. The fit predicts that a circuit's gradient signal falls below its
  shot noise (``Var[dF/dtheta] < 1/(2S)``) from about 5 qubits at 1,000 shots.

Beside the training, per qubit count: the measured ``Var[dF/dtheta]`` (first and last ansatz parameter, uniform
angles, patches at the study's own kernel and stride positions of the training images) against the fit's
prediction, and the per-circuit signal-to-noise ratio ``sqrt(2 S Var)``.

Example:
    result = scaling_study(ScalingConfig(qubits=(4, 6), seeds=(0, 1), epochs=1, limit_train=512))
    result["differences"][0]["a"]
    # -> 'quantum/n4'
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.encoding import amplitude_encode
from ..datasets import load_dataset
from ..train import TrainConfig, train
from ..utils.checks import UsageError, positive_int
from ..utils.stats import compare_pairs, summarise
from .plateau import cell_generator, measure_cell, plateau_study, sample_angles, shot_noise_variance, \
    variance_with_stderr

#: Kernel and stride per qubit count on 28x28 images (a k x k patch needs log2(k^2) qubits).
GEOMETRY = {4: (4, 1), 6: (8, 2), 8: (16, 4)}
KINDS = ("quantum", "fidelity-classical", "frozen", "classical-matched")
SHOTS_ARM = "quantum-shots"
#: The comparisons at every qubit count (a - b).
PAIRS = (("quantum", "frozen"), ("quantum", "fidelity-classical"), ("quantum", "classical-matched"),
         (SHOTS_ARM, "frozen"), ("quantum", SHOTS_ARM))


@dataclass(frozen=True)
class ScalingConfig:
    """What the study trains: ``qubits`` (keys of :data:`GEOMETRY`), ``kinds``, ``seeds``, ``epochs``,
    ``limit_train`` (first N training images; the validation hold-out stays the last 1,000), ``head`` (a spec),
    ``filters``, ``layers``, ``settings`` (``{kind: {"lr", "schedule"}}``; missing kinds use TrainConfig's
    defaults), ``gradient_shots`` (shots per parameter-shift circuit of the ``quantum-shots`` arm; ``None``: no
    such arm), ``samples`` (draws per gradient-variance cell), ``margin`` (TOST margin, accuracy fraction),
    ``data`` (an IDX folder; default the embedded MNIST)."""

    qubits: tuple[int, ...] = (4, 6, 8)
    kinds: tuple[str, ...] = KINDS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 5
    limit_train: int | None = None
    head: str = "bn,maxpool:2,fc:128,relu"
    filters: int = 8
    layers: int = 3
    settings: dict = field(default_factory=dict)
    gradient_shots: int | None = 1000
    samples: int = 2000
    margin: float = 0.005
    data: str | None = None

    def validated(self) -> "ScalingConfig":
        """This config after checking every field (``UsageError`` naming it)."""
        bad = [n for n in self.qubits if n not in GEOMETRY]
        if bad or not self.qubits:
            raise UsageError(f"qubits must be from {sorted(GEOMETRY)}, got {list(self.qubits)}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise UsageError(f"kinds must be from {KINDS}, got {list(self.kinds)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise UsageError(f"seeds must be distinct ints >= 0, got {list(self.seeds)}")
        for name in ("epochs", "filters", "layers", "samples"):
            positive_int(getattr(self, name), name)
        if self.gradient_shots is not None:
            positive_int(self.gradient_shots, "gradient_shots")
        if self.limit_train is not None:
            positive_int(self.limit_train, "limit_train")
        return self

    @property
    def arms(self) -> tuple[str, ...]:
        """The kinds plus ``quantum-shots`` when ``gradient_shots`` is set."""
        return self.kinds + ((SHOTS_ARM,) if self.gradient_shots is not None else ())


def arm_config(cfg: ScalingConfig, arm: str, qubits: int, seed: int) -> TrainConfig:
    """The :class:`~qucnn.train.TrainConfig` of one run (no files, no progress bars, one thread)."""
    kernel, stride = GEOMETRY[qubits]
    kind = "quantum" if arm == SHOTS_ARM else arm
    shots = {"gradient": "parameter-shift", "gradient_shots": cfg.gradient_shots} if arm == SHOTS_ARM else {}
    return TrainConfig(kind=kind, epochs=cfg.epochs, kernel=kernel, stride=stride, filters=cfg.filters,
                       layers=cfg.layers, head=cfg.head, seed=seed, limit_train=cfg.limit_train, progress=False,
                       plot=False, threads=1, data=cfg.data, **cfg.settings.get(kind, {}), **shots)


def study_variance(images: torch.Tensor, qubits: int, layers: int, samples: int, seed: int = 0) -> dict:
    """``Var[dF/dtheta]`` (first and last parameter, with standard errors) and ``Var[F]`` over uniform angles and
    the non-zero ``k x k`` patches at the study's stride positions of ``images`` ``(N, 1, H, W)``."""
    kernel, stride = GEOMETRY[qubits]
    gen = cell_generator(seed, qubits, 1, layers, 7)
    cols = F.unfold(images[:, :1].double(), kernel, stride=stride).transpose(1, 2).reshape(-1, kernel * kernel)
    cols = cols[cols.abs().amax(1) > 0]
    patches = amplitude_encode(cols[torch.randint(len(cols), (samples,), generator=gen)])
    cell = measure_cell(patches, sample_angles(samples, layers, qubits, gen))
    out = {"qubits": qubits, "kernel": kernel, "stride": stride, "samples": samples}
    for param in ("first", "last"):
        var, se = variance_with_stderr(cell.grad(param))
        out[f"var_grad_{param}"], out[f"var_grad_{param}_stderr"] = var, se
    out["var_fidelity"] = variance_with_stderr(cell.fidelity)[0]
    return out


def predicted_variance(plateau: dict, qubits: int, layers: int) -> dict:
    """``Var[dF/dtheta]`` at ``qubits`` from the decay fits (``exp(a) b^-n``) of a plateau study at depth
    ``layers``, per parameter."""
    fits = {f["param"]: f for f in plateau["fits"] if f["depth"] == layers}
    return {f"var_grad_{p}": math.exp(f["log_intercept"]) * f["decay_base"] ** -qubits for p, f in fits.items()}


def scaling_study(cfg: ScalingConfig, progress: bool = True, done: list[dict] | None = None, on_row=None) -> dict:
    """Train every arm at every qubit count for every seed, measure the gradient variance, and compare.

    Returns ``{"config", "rows", "arms", "differences", "variance", "plateau_fit"}``: ``rows`` one per run
    (``label`` = ``arm/n<qubits>``, ``seed``, ``test_accuracy``, ``validation_accuracy``, ``seconds``, the training
    ``quantum_cost``); ``arms[label]`` the accuracies by seed and their :func:`summarise`; ``differences`` the
    :data:`PAIRS` at each qubit count, Holm-corrected across the table; ``variance`` per qubit count the measured
    and predicted ``Var[dF/dtheta]`` and the per-circuit SNR at ``gradient_shots``. ``done``: rows of an earlier
    run of the same config (reused); ``on_row(rows)`` after each new row."""
    cfg = cfg.validated()
    cached = {(r["label"], r["seed"]): r for r in done or []}
    runs = [(n, arm, seed) for n in cfg.qubits for seed in cfg.seeds for arm in cfg.arms]
    rows = []
    with tqdm(total=len(runs), desc="scaling", disable=not progress, unit="run") as bar:
        for n, arm, seed in runs:
            key = (f"{arm}/n{n}", seed)
            if key not in cached:
                m = train(arm_config(cfg, arm, n, seed))
                f = m["final"]
                cached[key] = {"label": key[0], "arm": arm, "qubits": n, "seed": seed,
                               "test_accuracy": f["test_accuracy"], "validation_accuracy": f["validation_accuracy"],
                               "seconds": f["seconds"], "quantum_cost": f["quantum_cost"],
                               "settings": {"lr": m["config"]["lr"], "schedule": m["config"]["schedule"]}}
                rows.append(cached[key])
                if on_row is not None:
                    on_row(rows)
            else:
                rows.append(cached[key])
            bar.set_postfix_str(f"{key[0]} seed {seed}")
            bar.update()
    return {"config": {**dataclasses.asdict(cfg), "geometry": {n: GEOMETRY[n] for n in cfg.qubits}},
            "rows": rows, **compare_arms(rows, cfg), **variance_section(cfg)}


def compare_arms(rows: list[dict], cfg: ScalingConfig) -> dict:
    """``arms`` (accuracies by seed, :func:`summarise`) and ``differences`` (:data:`PAIRS` per qubit count)."""
    arms, values = {}, {}
    for label in dict.fromkeys(r["label"] for r in rows):
        per = sorted((r for r in rows if r["label"] == label), key=lambda r: cfg.seeds.index(r["seed"]))
        values[label] = [r["test_accuracy"] for r in per]
        arms[label] = {"seeds": [r["seed"] for r in per], "test_accuracy": values[label],
                       "summary": summarise(values[label]), "seconds": sum(r["seconds"] for r in per) / len(per)}
    pairs = [(f"{a}/n{n}", f"{b}/n{n}") for n in cfg.qubits for a, b in PAIRS
             if f"{a}/n{n}" in values and f"{b}/n{n}" in values]
    diffs = compare_pairs(values, pairs, cfg.margin) if pairs and len(cfg.seeds) > 1 else []
    return {"arms": arms, "differences": diffs}


def variance_section(cfg: ScalingConfig) -> dict:
    """The measured gradient variance at each qubit count (patches of the training images) against the plateau
    fit (a plateau study of the same images at depth ``cfg.layers`` over 2, 4, 6, 8 qubits with ``cfg.samples``
    draws: the cells ``qucnn analyze plateau`` draws for the embedded MNIST)."""
    images = load_dataset(cfg.data).train_images
    plateau = plateau_study(images, (2, 4, 6, 8), (cfg.layers,), samples=cfg.samples)
    out = []
    for n in cfg.qubits:
        measured = study_variance(images, n, cfg.layers, cfg.samples)
        predicted = predicted_variance(plateau, n, cfg.layers)
        entry = {**measured, "predicted": predicted}
        for p in ("first", "last"):
            v, se = measured[f"var_grad_{p}"], measured[f"var_grad_{p}_stderr"]
            entry[f"z_{p}"] = (v - predicted[f"var_grad_{p}"]) / se if se > 0 else None
            if cfg.gradient_shots is not None:
                entry[f"snr_{p}"] = math.sqrt(v / shot_noise_variance(cfg.gradient_shots))
        out.append(entry)
    stall = [s for s in plateau["stall"] if s["shots"] == cfg.gradient_shots]
    return {"variance": out, "plateau_fit": {"fits": plateau["fits"], "stall": stall,
                                             "command": f"qucnn analyze plateau --qubits 2,4,6,8 --depths "
                                                        f"{cfg.layers} --samples {cfg.samples} --seed 0"}}


__all__ = ["GEOMETRY", "KINDS", "PAIRS", "SHOTS_ARM", "ScalingConfig", "arm_config", "compare_arms",
           "predicted_variance", "scaling_study", "study_variance", "variance_section"]
