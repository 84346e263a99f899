"""Run distinct QuCNN circuits through a Qiskit ``SamplerV2``: templates with ``Parameter`` angles, transpiled
once per structure, bound per batch into PUBs, split into jobs; fake IBM devices; readout calibration.

This is the Qiskit half of :class:`qucnn.backends.QiskitBackend` (which owns the protocol, deduplication and
the meaning of shots, see :mod:`qucnn.backends.circuit_backend`).

- **Templates.** Every circuit of one structure (qubits, ansatz layers, Eq. 15 or not, overlap) is the same gate
  sequence with different angles: the Mottonen RY angles of the patch, the ansatz angles of the filter, the
  ``RY(arccos delta)`` of the ancilla ``b``. One ``QuantumCircuit`` with a ``ParameterVector`` per structure is
  transpiled once; a batch is one ``(D, P)`` array of values (a PUB), never a rebuilt circuit.
- **Fake devices.** ``fake_device="fake_torino"`` (any name of ``qiskit_ibm_runtime.fake_provider``): the template
  is transpiled for that device (its basis gates, coupling map, layout and routing), then cut down to the
  physical qubits it uses, and simulated by Aer with the device's calibrated noise model restricted to those
  qubits. Aer re-reads a noise model for every bound circuit, so the restriction (6 of Torino's 133 qubits) is
  what makes a noisy run affordable; the circuit and its noise are those of the device.
- **Readout calibration.** Two circuits on the measured physical qubit (``|0>`` and ``X|0>``) estimate
  ``p10 = P(1 | 0)`` and ``p01 = P(0 | 1)``, once per qubit.

Example:
    >>> runner = SamplerRunner(seed_transpiler=0)
    >>> runner.device is None
    True
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..backends.circuit_backend import CircuitRows
from ..core.ansatz import FilterAnsatz
from ..core.encoding import state_preparation_ops
from ..core.swap_test import data_wires, filter_wires
from ..utils.checks import MissingExtraError, UsageError
from . import MISSING
from .circuits import OVERLAPS, add_measurements, ops_to_circuit, ops_to_template, ops_values, overlap_ops

try:
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import StatePreparation
    from qiskit.providers import BackendV2
    from qiskit.providers.exceptions import QiskitBackendNotFoundError
    from qiskit.transpiler import Target, generate_preset_pass_manager
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel
    from qiskit_aer.primitives import SamplerV2 as AerSampler
except ImportError as err:  # exercised by tests/test_qiskit_missing.py
    raise MissingExtraError(MISSING) from err

#: Most shots one job may return (Aer's SamplerV2 keeps every shot as a string first: ~60 bytes each).
MAX_SHOTS_PER_RUN = 1 << 22
METHODS = ("gates", "unitary")
#: The extra that brings the fake IBM devices.
RUNTIME_MISSING = "fake IBM devices need qiskit-ibm-runtime: pip install 'qucnn[hardware]'"


def _provider():
    """qiskit-ibm-runtime's fake provider (its snapshots are offline files shipped with the package)."""
    try:
        from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2
    except ImportError as err:
        raise MissingExtraError(RUNTIME_MISSING) from err
    return FakeProviderForBackendV2()


def fake_device_names() -> list[str]:
    """Names accepted as ``fake_device`` (``qiskit_ibm_runtime``'s fake provider: offline snapshots of IBM devices)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # some snapshots warn that their numbers are not typical
        return sorted(b.name for b in _provider().backends())


def resolve_fake_device(device) -> BackendV2:
    """A fake backend by name (``"fake_torino"``), or ``device`` itself if it is a ``BackendV2``."""
    if isinstance(device, BackendV2):
        return device
    if not isinstance(device, str):
        raise TypeError(f"fake_device must be a name like 'fake_torino' or a BackendV2, got {type(device).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # snapshots that warn their numbers are not typical
            return _provider().backend(device)
    except QiskitBackendNotFoundError:
        raise UsageError(f"unknown fake device {device!r}; qiskit-ibm-runtime has: "
                         f"{', '.join(fake_device_names())}") from None


class _Restricted:
    """The part of a device's target on some of its qubits, renumbered ``0..k-1``: what ``NoiseModel.from_backend``
    reads (a BackendV2's ``target``, ``operation_names``, ``dt``)."""

    version = 2

    def __init__(self, target: Target, qubits: tuple[int, ...]) -> None:
        pos = {q: i for i, q in enumerate(qubits)}
        props = target.qubit_properties
        self.target = Target(num_qubits=len(qubits), dt=target.dt,
                             qubit_properties=None if props is None else [props[q] for q in qubits])
        for name in target.operation_names:
            instruction = target[name]
            if instruction is None or None in instruction:  # global operations (control flow) carry no noise
                continue
            kept = {tuple(pos[q] for q in qargs): p for qargs, p in instruction.items() if all(q in pos for q in qargs)}
            if kept:
                self.target.add_instruction(target.operation_from_name(name), kept, name=name)
        self.operation_names = list(self.target.operation_names)
        self.dt = target.dt


def _compact(circuit: QuantumCircuit) -> tuple[QuantumCircuit, tuple[int, ...]]:
    """``circuit`` on the physical qubits it touches, renumbered in order, and those qubits."""
    index = {q: circuit.find_bit(q).index for q in circuit.qubits}
    used = tuple(sorted({index[q] for inst in circuit.data for q in inst.qubits}))
    pos = {q: i for i, q in enumerate(used)}
    out = QuantumCircuit(len(used), global_phase=circuit.global_phase)
    for creg in circuit.cregs:
        out.add_register(creg)
    for inst in circuit.data:
        out.append(inst.operation, [pos[index[q]] for q in inst.qubits], inst.clbits)
    return out, used


def _measured_qubit(circuit: QuantumCircuit) -> int:
    """The qubit measured into the first classical bit (the SWAP ancilla after layout and routing)."""
    for inst in circuit.data:
        if inst.operation.name == "measure" and circuit.find_bit(inst.clbits[0]).index == 0:
            return circuit.find_bit(inst.qubits[0]).index
    raise UsageError("the circuit measures nothing into its first classical bit")


class _Compiled:
    """A transpiled circuit, the columns of the template's values it takes, and where it runs."""

    def __init__(self, circuit: QuantumCircuit, simulator, key) -> None:
        self.circuit = circuit
        self.columns = np.array([p.index for p in circuit.parameters], dtype=np.int64)
        self.simulator = simulator  # None: the runner's sampler
        self.key = key  # identifies (simulator, register) for readout calibration


#: Compiled state shared by the runners of one device and settings (the default sampler only): pass manager,
#: templates, restricted noisy simulators, readout calibrations.
_SHARED: dict[tuple, dict] = {}
_SHARED_STATE = ("device", "pass_manager", "_simulator", "_templates", "_restricted", "_calibration")


class SamplerRunner:
    """Compiles and runs circuit rows; see the module docstring. Arguments as :class:`~qucnn.backends.QiskitBackend`.

    ``last_jobs`` counts the jobs of the last call.
    """

    def __init__(self, sampler=None, *, fake_device=None, noise_model=None, optimization_level: int = 1,
                 max_circuits_per_job: int | None = None, pass_manager=None, method: str = "gates",
                 overlap: str = "cswap", seed_transpiler: int = 0, aer_options: dict | None = None) -> None:
        if method not in METHODS:
            raise UsageError(f"method must be one of {METHODS}, got {method!r}")
        if overlap not in OVERLAPS:
            raise UsageError(f"overlap must be one of {OVERLAPS}, got {overlap!r}")
        if sum(v is not None for v in (sampler, fake_device, noise_model)) > 1:
            raise UsageError("give at most one of sampler, fake_device and noise_model: fake_device and noise_model "
                             "configure the default Aer sampler; give your own sampler its noise instead (e.g. "
                             "SamplerV2(options={'backend_options': {'noise_model': model}}))")
        if isinstance(optimization_level, bool) or optimization_level not in (0, 1, 2, 3):
            raise UsageError(f"optimization_level must be 0, 1, 2 or 3, got {optimization_level!r}")
        self.sampler, self.method, self.overlap = sampler, method, overlap
        self.max_circuits_per_job = max_circuits_per_job
        self.noise_model = noise_model
        # One OpenMP thread per Aer job: these circuits have 5-10 qubits, and on a busy machine Aer's spinning
        # threads cost ~2 s per small job (measured); aer_options={"max_parallel_threads": 0} restores Aer's choice.
        self.aer_options = {"max_parallel_threads": 1, **(aer_options or {})}
        shareable = sampler is None and noise_model is None and pass_manager is None and \
            (fake_device is None or isinstance(fake_device, str))
        key = (fake_device, optimization_level, seed_transpiler, method, overlap, tuple(sorted(self.aer_options.items())))
        if shareable and key in _SHARED:  # the same device and settings: reuse its compiled circuits
            self.__dict__.update(_SHARED[key])
        else:
            self._setup(sampler, fake_device, noise_model, optimization_level, pass_manager, seed_transpiler)
            if shareable:
                _SHARED[key] = {k: self.__dict__[k] for k in _SHARED_STATE}
        self.last_jobs = 0

    def _setup(self, sampler, fake_device, noise_model, level: int, pass_manager, seed: int) -> None:
        self.device = None if fake_device is None else resolve_fake_device(fake_device)
        if pass_manager is not None:
            self.pass_manager = pass_manager
        elif self.device is not None:
            self.pass_manager = generate_preset_pass_manager(level, backend=self.device, seed_transpiler=seed)
        elif noise_model is not None:  # unroll so that every gate meets its error
            self.pass_manager = generate_preset_pass_manager(level, basis_gates=list(noise_model.basis_gates),
                                                             seed_transpiler=seed)
        else:
            target = getattr(getattr(sampler, "mode", None), "target", None)  # e.g. an IBM Runtime sampler's backend
            if sampler is not None and target is None and isinstance(getattr(sampler, "_backend", None), BackendV2):
                target = sampler._backend.target
            self.pass_manager = generate_preset_pass_manager(level, target=target or AerSimulator().target,
                                                             seed_transpiler=seed)
        self._simulator = None if sampler is not None or self.device is not None else \
            AerSimulator(noise_model=noise_model, **self.aer_options)
        self._templates: dict[tuple, _Compiled] = {}
        self._restricted: dict[tuple[int, ...], AerSimulator] = {}
        self._calibration: dict[tuple, tuple[float, float]] = {}

    # -- compiling ------------------------------------------------------------------------------------
    def _compile(self, circuit: QuantumCircuit) -> _Compiled:
        transpiled = self.pass_manager.run(circuit)
        if self.device is None:
            return _Compiled(transpiled, self._simulator, ("all", transpiled.num_qubits))
        compact, used = _compact(transpiled)
        if used not in self._restricted:
            model = NoiseModel.from_backend(_Restricted(self.device.target, used))
            self._restricted[used] = AerSimulator(noise_model=model, **self.aer_options)
        return _Compiled(compact, self._restricted[used], ("device", used))

    def _ops(self, rows: CircuitRows):
        return rows.preparation_ops() + overlap_ops(rows.n, rows.delta, self.overlap)

    def _template(self, rows: CircuitRows) -> _Compiled:
        key = rows.structure + (self.overlap,)
        if key not in self._templates:
            circuit, _ = ops_to_template(self._ops(rows.take(torch.arange(1))), rows.num_qubits())
            add_measurements(circuit, rows.n, rows.delta is not None, self.overlap)
            self._templates[key] = self._compile(circuit)
        return self._templates[key]

    def _one_by_one(self, rows: CircuitRows) -> list[_Compiled]:
        """One circuit per row: the SVD-unitary preparation, or complex filter states (``StatePreparation``)."""
        n, nq = rows.n, rows.num_qubits()
        ops = list(state_preparation_ops(rows.patches, data_wires(n), self.method))
        complex_gates = rows.theta is None and rows.states.is_complex() and self.method == "gates"
        if rows.theta is not None:
            ops += FilterAnsatz(n, int(rows.theta.shape[1])).ops(rows.theta, filter_wires(n))
        elif not complex_gates:
            ops += state_preparation_ops(rows.states, filter_wires(n), self.method)
        tail = overlap_ops(n, rows.delta, self.overlap)
        out = []
        for i in range(len(rows)):
            circuit = ops_to_circuit(ops, nq, i)
            if complex_gates:  # Qiskit's StatePreparation (Mottonen with phases) on our reversed wires
                circuit.append(StatePreparation(rows.states[i].numpy()), list(reversed(filter_wires(n))))
            circuit.compose(ops_to_circuit(tail, nq, i), inplace=True)
            add_measurements(circuit, n, rows.delta is not None, self.overlap)
            out.append(self._compile(circuit))
        return out

    # -- running --------------------------------------------------------------------------------------
    def _pubs(self, rows: CircuitRows, shots: int) -> list[tuple[_Compiled, np.ndarray | None, int]]:
        if self.method == "gates" and rows.templated:
            compiled = self._template(rows)
            values = ops_values(self._ops(rows))[:, compiled.columns]
            return [(compiled, values, shots)]
        return [(c, None, shots) for c in self._one_by_one(rows)]

    def _sampler(self, simulator, seed: int):
        if simulator is None:
            return self.sampler
        return AerSampler.from_backend(simulator, seed=seed)

    def _outcomes(self, data, with_upstream: bool) -> np.ndarray:
        """Per-shot ``True`` where the +-1 outcome is -1: the ancilla read 1, or an odd Bell parity."""
        if self.overlap == "cswap":
            ones = data.a.bitcount()
        else:
            ones = (data.x & data.f).bitcount() + (data.b.bitcount() if with_upstream else 0)
        return (ones % 2 == 1).reshape(-1, ones.shape[-1])

    def run(self, groups: list[tuple[CircuitRows, int]], seed: int) -> list[np.ndarray]:
        """Outcomes ``(D, shots)`` of every group ``(rows, shots)``: all PUBs of a call go out in as few jobs as
        ``max_circuits_per_job`` and :data:`MAX_SHOTS_PER_RUN` allow (one per simulator)."""
        pieces: list[tuple[int, int, _Compiled, np.ndarray | None, int]] = []  # group, first row, pub
        for g, (rows, shots) in enumerate(groups):
            start = 0
            for compiled, values, s in self._pubs(rows, shots):
                per_job = max(1, MAX_SHOTS_PER_RUN // s)
                if self.max_circuits_per_job is not None:
                    per_job = min(per_job, self.max_circuits_per_job)
                count = 1 if values is None else len(values)
                for i in range(0, count, per_job):
                    chunk = None if values is None else values[i:i + per_job]
                    pieces.append((g, start + i, compiled, chunk, s))
                start += count
        results: list[list[np.ndarray | None]] = [[None] * len(rows) for rows, _ in groups]
        self.last_jobs = 0
        for simulator in {id(p[2].simulator): p[2].simulator for p in pieces}.values():
            mine = [p for p in pieces if p[2].simulator is simulator]
            job, size, shots_in = [], 0, 0
            for piece in mine + [None]:
                n = 0 if piece is None else (1 if piece[3] is None else len(piece[3]))
                full = job and (piece is None or shots_in + n * piece[4] > MAX_SHOTS_PER_RUN or
                                (self.max_circuits_per_job is not None and size + n > self.max_circuits_per_job))
                if full:
                    self._run_job(job, simulator, seed, groups, results)
                    job, size, shots_in = [], 0, 0
                if piece is not None:
                    job.append(piece)
                    size, shots_in = size + n, shots_in + n * piece[4]
        return [np.concatenate(r, 0) for r in results]

    def _run_job(self, job, simulator, seed: int, groups, results) -> None:
        job_seed = int(np.random.SeedSequence([seed % 2**63, self.last_jobs]).generate_state(1, np.uint64)[0] >> 1)
        pubs = [(c.circuit, v, s) for _, _, c, v, s in job]
        answer = self._sampler(simulator, job_seed).run(pubs).result()
        self.last_jobs += 1
        for (g, first, compiled, values, _), pub in zip(job, answer):
            minus = self._outcomes(pub.data, groups[g][0].delta is not None)
            for k in range(len(minus)):
                results[g][first + k] = minus[k:k + 1]

    # -- readout ----------------------------------------------------------------------------------------
    def calibrations(self) -> list[dict]:
        """Every readout calibration made so far: ``{"physical_qubit", "p10", "p01"}`` (the qubit as numbered in
        the circuits that run: the device's for a sampler, the restricted register's for a fake device)."""
        return [{"physical_qubit": key[-1], "p10": p10, "p01": p01} for key, (p10, p01) in self._calibration.items()]

    def readout(self, rows: CircuitRows, shots: int, seed: int) -> tuple[float, float, int, bool]:
        """``(p10, p01, physical qubit, measured now)`` of the qubit that holds the SWAP ancilla in ``rows``'
        circuits: ``P(read 1 | prepared 0)`` and ``P(read 0 | prepared 1)`` from two calibration circuits."""
        if self.overlap != "cswap":
            raise UsageError("readout mitigation corrects the one measured ancilla of overlap='cswap'")
        compiled = self._template(rows) if self.method == "gates" and rows.templated else \
            self._one_by_one(rows.take(torch.arange(1)))[0]
        qubit = _measured_qubit(compiled.circuit)
        key = compiled.key + (qubit,)
        if key in self._calibration:
            return self._calibration[key] + (qubit, False)
        circuits = []
        for flip in (False, True):
            qc = QuantumCircuit(compiled.circuit.num_qubits, 1)
            if flip:
                qc.x(qubit)
            qc.measure(qubit, 0)
            circuits.append(qc)
        sampler = self._sampler(compiled.simulator, seed)
        answer = sampler.run([(c, None, shots) for c in circuits]).result()
        ones = [float(pub.data[next(iter(pub.data.keys()))].bitcount().mean()) for pub in answer]
        self._calibration[key] = (ones[0], 1 - ones[1])
        return self._calibration[key] + (qubit, True)


__all__ = ["MAX_SHOTS_PER_RUN", "METHODS", "SamplerRunner", "fake_device_names", "resolve_fake_device"]
