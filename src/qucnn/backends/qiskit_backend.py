"""``QiskitBackend``: QuConv2d's circuits on any Qiskit ``SamplerV2`` (Aer by default, a fake IBM device, IBM
hardware through ``qiskit_ibm_runtime``), forward and every gradient mode inside ``loss.backward()``.

Registered as ``"aer"`` (noiseless Aer) when qiskit and qiskit-aer import. Importing this module imports no
Qiskit; constructing a backend does (``MissingExtraError`` naming the extra if it is missing).

Example:
    >>> from qucnn import QuConv2d
    >>> backend = QiskitBackend(seed=0)
    >>> layer = QuConv2d(1, 2, 2, layers=1, shots=500, backend=backend, gradient="parameter-shift",
    ...                  gradient_shots=500)
    >>> layer(torch.rand(1, 1, 3, 3)).sum().backward()
    >>> layer.theta.grad.shape
    torch.Size([2, 1, 2, 2])
"""

from __future__ import annotations

import numpy as np
import torch

from ..utils.checks import UsageError, optional_positive_int, positive_int
from .circuit_backend import CircuitBackend, CircuitRows


def mitigate(z: np.ndarray, p10: float, p01: float) -> np.ndarray:
    """Undo readout error on ``<Z>`` estimates: the measured ``z' = (p01 - p10) + (1 - p10 - p01) z`` inverted
    (the 2x2 assignment matrix), clipped to ``[-1, 1]``.

    Example:
        >>> mitigate(np.array([0.9 * 0.5 + 0.0]), 0.05, 0.05).round(6).tolist()
        [0.5]
    """
    scale = 1 - p10 - p01
    if scale <= 0:
        raise UsageError(f"readout errors p10={p10:.3f}, p01={p01:.3f} leave no signal to mitigate (1 - p10 - p01 <= 0)")
    return np.clip((np.asarray(z) - (p01 - p10)) / scale, -1.0, 1.0)


class QiskitBackend(CircuitBackend):
    """Run QuCNN circuits on a Qiskit ``SamplerV2``.

    Args:
        sampler: any ``SamplerV2``; default Aer's (seeded per job, see ``seed``). An IBM Runtime sampler
            (``qiskit_ibm_runtime.SamplerV2(mode=backend)``) works the same way: circuits are transpiled for its
            backend's target (untested here: no hardware).
        fake_device: a fake IBM backend by name (``"fake_torino"``, any of
            :func:`qucnn.qiskit.sampling.fake_device_names`) or object: Aer with that device's calibrated noise,
            circuits transpiled for its basis gates and coupling map (needs ``qucnn[hardware]``).
        noise_model: an Aer ``NoiseModel`` for the default sampler (e.g. :func:`qucnn.qiskit.default_noise_model`).
        optimization_level: the preset pass manager's level (0-3), applied once per circuit structure.
        max_circuits_per_job: most bound circuits per sampler job (default: only Aer's shot limit splits).
        mitigate_readout: correct the measured ancilla's readout error (two calibration circuits per physical
            qubit, the inverse of the 2x2 assignment matrix, clipped); the calibration is reported in
            ``Result.extras["readout"]``, not counted in the layer's cost.
        calibration_shots: shots per calibration circuit.
        seed: seeds the transpiler and, without a ``generator``, every job's Aer seed (reproducible runs).
        method: patch preparation, ``"gates"`` (Mottonen RY/CNOT: one template per structure) or ``"unitary"``
            (the SVD ``UnitaryGate``: one circuit per row).
        overlap: ``"cswap"`` (the SWAP test of Fig. 2) or ``"bell"`` (the ancilla-free Bell-basis test).
        pass_manager: your own pass manager instead of the preset one.
        aer_options: options of the Aer simulators this backend makes (default one thread per job).

    Values: ``(G, B, O, H', W')`` shot estimates ``1 - 2 k / S`` (identical circuits run once with ``m S`` shots,
    see :mod:`qucnn.backends.circuit_backend`); ``Result.extras``: ``distinct`` (circuits bound and run),
    ``jobs``, and with mitigation ``readout``. Pickles and deep-copies by its arguments (a ``sampler`` or
    ``pass_manager`` object you pass is a live object: copies share the backend, and pickling it raises a
    ``TypeError`` that says so).
    """

    name = "aer"

    def __init__(self, sampler=None, *, fake_device=None, noise_model=None, optimization_level: int = 1,
                 max_circuits_per_job: int | None = None, mitigate_readout: bool = False,
                 calibration_shots: int = 20_000, seed: int | None = None, method: str = "gates",
                 overlap: str = "cswap", pass_manager=None, aer_options: dict | None = None) -> None:
        super().__init__(seed, sampler=sampler, fake_device=fake_device, noise_model=noise_model,
                         optimization_level=optimization_level, max_circuits_per_job=max_circuits_per_job,
                         mitigate_readout=mitigate_readout, calibration_shots=calibration_shots, method=method,
                         overlap=overlap, pass_manager=pass_manager, aer_options=aer_options)
        from ..qiskit.sampling import SamplerRunner  # imports Qiskit (MissingExtraError without it)

        self.max_circuits_per_job = optional_positive_int(max_circuits_per_job, "max_circuits_per_job")
        if not isinstance(mitigate_readout, bool):
            raise TypeError(f"mitigate_readout must be True or False, got {mitigate_readout!r}")
        self.mitigate_readout = mitigate_readout
        self.jobs_run = 0  # sampler jobs since construction
        self.calibration_shots = positive_int(calibration_shots, "calibration_shots")
        self.fake_device = fake_device
        self.runner = SamplerRunner(sampler, fake_device=fake_device, noise_model=noise_model,
                                    optimization_level=optimization_level,
                                    max_circuits_per_job=self.max_circuits_per_job, pass_manager=pass_manager,
                                    method=method, overlap=overlap, seed_transpiler=seed or 0,
                                    aer_options=aer_options)
        if mitigate_readout and overlap != "cswap":
            raise UsageError("mitigate_readout corrects the measured SWAP ancilla: it needs overlap='cswap'")

    def __repr__(self) -> str:
        device = self.runner.device.name if self.runner.device is not None else None
        return (f"QiskitBackend(fake_device={device!r}, mitigate_readout={self.mitigate_readout}, "
                f"method={self.runner.method!r}, overlap={self.runner.overlap!r})")

    def execute(self, groups: list[tuple[CircuitRows, int]], seed: int) -> tuple[list[np.ndarray], dict]:
        outcomes = self.runner.run(groups, seed)
        self.jobs_run += self.runner.last_jobs
        return outcomes, {"jobs": self.runner.last_jobs}

    def correct(self, z: torch.Tensor, rows: CircuitRows, seed: int) -> tuple[torch.Tensor, dict]:
        if not self.mitigate_readout or not len(rows):
            return z, {}
        p10, p01, qubit, fresh = self.runner.readout(rows, self.calibration_shots, seed + 1)
        return torch.from_numpy(mitigate(z.numpy(), p10, p01)), {"readout": {
            "qubit": qubit, "p10": p10, "p01": p01, "calibration_circuits": 2 if fresh else 0,
            "calibration_shots": 2 * self.calibration_shots if fresh else 0}}


__all__ = ["QiskitBackend", "mitigate"]
