"""Shared machinery of the Section V experiments: the run configuration, seeding and determinism,
the shot sampler (our binomial estimator or Qiskit Aer), metrics.json, plotting and progress bars.

Every experiment takes a :class:`Config` and returns a plain dict of metrics (JSON-ready). Each draws
its random numbers from its own generator, seeded from ``(config.seed, experiment name)``, so running
one experiment alone gives the same numbers as running it inside ``all``.

Example:
    >>> cfg = Config(out=Path("results"), quick=True).validated()
    >>> cfg.metric_key("forward")
    'forward'
    >>> gen = cfg.generator("forward")   # seeded CPU generator
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..backends import get_backend
from ..datasets import load_dataset
from ..utils.checks import MissingExtraError, MissingFileError, UsageError, optional_positive_int, pip_install
from ..utils.devices import resolve_device
from ..utils.files import atomic_write, atomic_write_text
from ..utils.progress import show_progress
from ..utils.plotting import pyplot
from ..utils.seeds import derive_seed

#: Experiment names, in the order ``all`` runs them, and their section of metrics.json.
EXPERIMENTS = ("forward", "backprop", "learn", "circuits")
SECTIONS = {"forward": "forward", "backprop": "backprop", "learn": "state_learning", "circuits": "circuits"}
BACKENDS = ("torch", "aer")
DATA_STATES = ("uniform", "mnist")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class Config:
    """What ``qucnn reproduce`` was asked to do. Build it, then call :meth:`validated`.

    Attributes:
        out: output folder (PNGs, metrics.json, report.md).
        quick: the CI preset (fewer repeats, restarts, iterations; Aer subsampled).
        data: an IDX folder for :func:`qucnn.datasets.load_dataset`, or None for the embedded MNIST.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``) for the tensor work; shot draws always use a
            seeded CPU generator, so the numbers do not depend on the device's random stream.
        seed: base seed of every random draw.
        upstream: the backpropagated value ``g`` of experiment 2, in ``[-1, 1]``.
        data_state: experiment 2's fixed data state, ``"uniform"`` (``H^n|0>``) or ``"mnist"``.
        learn_shots: shots per parameter-shift circuit in experiment 3 (None: exact autograd).
        backend: ``"torch"`` (:func:`qucnn.swap_test.estimate_z`) or ``"aer"`` (Qiskit Aer circuits).
        noise: with ``backend="aer"``, run under ``qucnn.qiskit.default_noise_model()``.
    """

    out: Path = Path("results")
    quick: bool = False
    data: str | None = None
    device: str = "cpu"
    seed: int = 0
    upstream: float = 0.5
    data_state: str = "uniform"
    learn_shots: int | None = None
    backend: str = "torch"
    noise: bool = False

    def validated(self) -> "Config":
        """Check every field; raise ``ValueError``/``TypeError``/``FileNotFoundError`` naming the option."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"--seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.upstream, (int, float)) or isinstance(self.upstream, bool) \
                or not math.isfinite(self.upstream) or not -1 <= self.upstream <= 1:
            raise UsageError(f"--upstream must be a number in [-1, 1] (it is the cosine of the ancilla angle, "
                             f"Eq. 17), got {self.upstream!r}")
        if self.upstream == 0:
            raise UsageError("--upstream 0 makes every gradient exactly 0 (nothing to validate); use a value "
                             "in [-1, 0) or (0, 1]")
        if self.data_state not in DATA_STATES:
            raise UsageError(f"--data-state must be one of {DATA_STATES}, got {self.data_state!r}")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.noise and self.backend != "aer":
            raise UsageError("--noise needs --backend aer (the torch backend has only shot noise)")
        optional_positive_int(self.learn_shots, "--learn-shots")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UsageError(f"--out must be a folder, got the file {self.out}")
        if self.data is not None and not Path(self.data).is_dir():
            raise MissingFileError(f"--data: directory not found: {self.data}")
        resolve_device(self.device)
        return replace(self, out=Path(self.out))

    @property
    def torch_device(self) -> torch.device:
        """``device`` resolved to a ``torch.device`` (a ``UsageError`` if it is not available)."""
        return resolve_device(self.device)

    def generator(self, name: str) -> torch.Generator:
        """A CPU generator seeded from ``(seed, name)``: independent streams per experiment."""
        return torch.Generator().manual_seed(derive_seed(self.seed, name))

    def metric_key(self, experiment: str) -> str:
        """Section of metrics.json: ``forward``, or ``forward_aer`` / ``forward_aer_noise`` for Aer runs
        of the shot-based experiments (so torch and Aer results can sit side by side)."""
        section = SECTIONS[experiment]
        if self.backend == "aer" and experiment in ("forward", "backprop"):
            section += "_aer_noise" if self.noise else "_aer"
        return section

    def figure(self, experiment: str, stem: str) -> Path:
        """Where a figure goes: ``out/<stem>.png``, or ``out/<stem>_aer[_noise].png`` for an Aer run, so
        torch and Aer figures can sit side by side like their metrics."""
        suffix = self.metric_key(experiment)[len(SECTIONS[experiment]):]
        return self.out / f"{stem}{suffix}.png"

    def describe(self) -> dict:
        """The configuration as a JSON-ready dict (recorded in metrics.json)."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch, use deterministic kernels and one CPU thread (so float sums never depend on how
    work is split between threads); restore the previous settings and random state afterwards."""
    threads = torch.get_num_threads()
    was_det = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    # CUDA has ops without a deterministic kernel: warn rather than fail there
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        # the caller's global random state comes back unchanged
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)


def progress(iterable: Iterable, desc: str, total: int | None = None, **kw: Any):
    """A tqdm bar on stderr (hidden when stderr is not a terminal, e.g. in CI logs, unless ``--progress``:
    :func:`qucnn.utils.progress.show_progress`)."""

    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not show_progress(), dynamic_ncols=True,
                **kw)


def save_figure(fig, path: Path, **savefig: Any) -> str:
    """Save ``fig`` as a PNG at ``path``, close it, and return the file name (for metrics.json)."""
    plt = pyplot()
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=110, **savefig))
    plt.close(fig)
    return path.name


def mosaic(maps: Tensor, cols: int = 4, gap: int = 2, normalise: bool = True) -> Tensor:
    """Tile ``maps`` ``(N, H, W)`` into one ``(rows*(H+gap)-gap, cols*(W+gap)-gap)`` image (NaN gaps).

    With ``normalise``, each tile is scaled by its own largest absolute value, so maps of different
    scales (a raw convolution, a fidelity) can be compared by pattern.
    """
    n, h, w = maps.shape
    rows = math.ceil(n / cols)
    out = torch.full((rows * (h + gap) - gap, cols * (w + gap) - gap), float("nan"), dtype=torch.float64)
    for i in range(n):
        tile = maps[i].double()
        if normalise:
            top = tile.nan_to_num(0.0).abs().max()
            tile = tile / top if top > 0 else tile
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


# -- shot estimates: one interface, two back ends ----------------------------------------------------
class ShotSampler:
    """Shot estimates of ``<Z_a>`` of SWAP tests (or entanglement circuits, with ``upstream``).

    ``backend="torch"``: the torch backend's binomial draws from the exact expectation (what ``QuConv2d``
    uses). ``backend="aer"``: the circuits run on :class:`qucnn.backends.QiskitBackend` (through its wrapper
    ``qucnn.qiskit.sample_swap_tests``, the hook tests replace) in Qiskit Aer, optionally with
    ``default_noise_model()``; each call gets its own derived seed.
    """

    def __init__(self, config: Config, name: str) -> None:
        self.backend = config.backend
        self.generator = config.generator(name + ":shots")
        self.seed = derive_seed(config.seed, name + ":aer") % (2**31)
        self.calls = 0
        self.noise_model = None
        self.hook = None
        if self.backend == "aer":
            self.hook = aer_hook()
            if config.noise:
                from ..qiskit import default_noise_model

                self.noise_model = default_noise_model()

    def __call__(self, patches: Tensor, filters: Tensor, expectation: Tensor, shots: int,
                 upstream: Tensor | None = None) -> Tensor:
        """Estimates ``(N,)`` for ``N`` circuits.

        Args:
            patches: raw patch values ``(N, m)`` (amplitude-encoded by the back end; all-zero rows give 0).
            filters: filter states ``(N or 1, d)``.
            expectation: the exact ``<Z_a>`` ``(N,)`` (``delta * F``), used by the torch back end.
            shots: shots per circuit.
            upstream: deltas ``(N,)`` in ``[-1, 1]`` for the entanglement circuit, or None.
        """

        valid = patches.abs().sum(-1) > 0
        if self.backend == "torch":
            estimates = get_backend("torch").sample(expectation, shots, self.generator)
            return torch.where(valid.to(expectation.device), estimates, torch.zeros_like(estimates))
        kwargs: dict[str, Any] = {"upstream": None if upstream is None else upstream.detach().cpu(),
                                  "noise_model": self.noise_model, "seed": self.seed + self.calls}
        if "method" in inspect.signature(self.hook).parameters:
            # Mottonen gates (one parametrised circuit for the whole batch) where the states are real;
            # the SVD unitary is one UnitaryGate circuit per row and far slower to run.
            kwargs["method"] = "unitary" if filters.is_complex() else "gates"
        self.calls += 1
        z = self.hook(patches.detach().cpu().double(), filters.detach().cpu(), shots, **kwargs)
        return torch.as_tensor(z, dtype=expectation.dtype).to(expectation.device)


def aer_hook():
    """``qucnn.qiskit.sample_swap_tests``, or an ImportError saying what is missing."""
    try:
        from ..qiskit import sample_swap_tests
    except MissingExtraError as err:  # its message already says what to install
        raise MissingExtraError(f"--backend aer: {err}") from err
    except (ImportError, AttributeError) as err:
        raise MissingExtraError(f"--backend aer needs qiskit and qiskit-aer: {pip_install('qiskit')} "
                                f"({type(err).__name__}: {err})") from err
    return sample_swap_tests


# -- metrics.json --------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """Tensors, numpy scalars, Paths and tuples as plain JSON values; non-finite floats as None."""
    if isinstance(value, Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def load_metrics(out: Path) -> dict:
    """The metrics.json already in ``out`` (``{}`` if none); a corrupt file is an error, not wiped."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); move it away or choose another --out") from err
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def save_metrics(out: Path, metrics: dict) -> Path:
    """Write ``metrics`` as ``OUT/metrics.json`` (strict JSON: no NaN); return its path."""
    path = Path(out) / METRICS_FILE
    atomic_write_text(path, json.dumps(jsonable(metrics), indent=1, allow_nan=False) + "\n")
    return path


_DATA_CACHE: dict[str | None, Any] = {}


def load_data(config: Config):
    """The data set of ``config.data`` (:func:`qucnn.datasets.load_dataset`), loaded once per process."""

    key = None if config.data is None else str(Path(config.data).resolve())
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(config.data)
    return _DATA_CACHE[key]


def run_meta(config: Config, experiment: str, dataset_name: str | None, wall_s: float) -> dict:
    """What produced a section of metrics.json: seed, device, data, back end, preset, wall time."""
    return {"experiment": experiment, "seed": config.seed, "device": str(config.torch_device),
            "data": dataset_name, "backend": config.backend, "noise": config.noise, "quick": config.quick,
            "wall_time_s": round(wall_s, 3), "platform": platform.platform(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


__all__ = ["BACKENDS", "Config", "DATA_STATES", "EXPERIMENTS", "METRICS_FILE", "REPORT_FILE", "SECTIONS",
           "ShotSampler", "aer_hook", "deterministic", "jsonable", "load_data", "load_metrics", "mosaic",
           "progress", "pyplot", "resolve_device", "run_meta", "save_figure", "save_metrics"]
