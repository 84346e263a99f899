"""Run QuCNN circuits through a Qiskit ``SamplerV2``: batched SWAP tests, and a ``QuConv2d`` forward and
filter gradients estimated from shots.

Every circuit of a call goes into as few ``SamplerV2.run`` calls as memory allows: circuits that differ
only in their angles (Mottonen state preparation, the ansatz, the upstream RY) form ONE parametrised
PUB with a ``(N, P)`` array of parameter values; circuits with matrix gates (the SVD unitary) are one
PUB each, all in the same call. A call is split only past :data:`MAX_SHOTS_PER_RUN` shots, because
Aer's sampler keeps every shot as a Python string.

Example:
    >>> import torch
    >>> from qucnn.qiskit import sample_swap_tests
    >>> data = torch.tensor([[1.0, 0.0], [1.0, 1.0]]); filt = torch.tensor([[1.0, 0.0]])
    >>> sample_swap_tests(data, filt, shots=1000, seed=0).shape
    torch.Size([2])
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..core.encoding import amplitude_encode, state_preparation_ops
from ..core.gates import GATES
from ..core.geometry import unfold_encoded
from ..core.swap_test import data_wires, filter_wires
from ..nn.gradients import shifted_thetas
from ..nn.layer import QuConv2d
from ..utils.checks import MissingExtraError, UsageError, check_finite, check_shots
from . import MISSING
from .circuits import OVERLAPS, add_measurements, ops_to_circuit, ops_to_template, overlap_ops

try:
    from qiskit import transpile
    from qiskit.circuit.library import StatePreparation
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2 as AerSampler
except ImportError as err:  # exercised by tests/test_qiskit_missing.py
    raise MissingExtraError(MISSING) from err

#: Most shots one ``run`` call may return (Aer's SamplerV2 holds each shot as a string: ~60 bytes).
MAX_SHOTS_PER_RUN = 1 << 22
METHODS = ("gates", "unitary")
GRADIENT_METHODS = ("entanglement", "parameter-shift")


class _Runner:
    """Transpiles as needed, runs PUBs in as few sampler calls as possible, counts ``+1`` outcomes."""

    def __init__(self, sampler=None, noise_model=None, seed: int | None = None, pass_manager=None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
        if sampler is not None and noise_model is not None:
            raise UsageError("noise_model configures the default Aer sampler; with your own sampler, "
                             "give it the noise model (e.g. SamplerV2(options={'backend_options': "
                             "{'noise_model': model}}))")
        self.sampler, self.noise_model, self.seed, self.pass_manager = sampler, noise_model, seed, pass_manager
        self.jobs = 0

    def prepare(self, circuits: list) -> list:
        if self.pass_manager is not None:
            return list(self.pass_manager.run(circuits))
        if self.sampler is not None:  # the caller's sampler: circuits as built (give pass_manager for ISA)
            return circuits
        if self.noise_model is not None:  # unroll so that every gate meets its error
            return list(transpile(circuits, basis_gates=list(self.noise_model.basis_gates),
                                  optimization_level=1, seed_transpiler=self.seed or 0))
        supported = set(AerSimulator().target.operation_names)
        return [c if all(i.operation.name in supported for i in c.data)
                else transpile(c, target=AerSimulator().target, optimization_level=0) for c in circuits]

    def _sampler(self, call: int):
        if self.sampler is not None:
            return self.sampler
        options = {"backend_options": {"noise_model": self.noise_model}} if self.noise_model is not None else None
        # Aer derives each experiment's seed from the call's; a fresh derived seed per call keeps the
        # calls of a split run independent of each other (and reproducible).
        seed = None if self.seed is None else int(np.random.SeedSequence([self.seed, call]).generate_state(1)[0])
        return AerSampler(seed=seed, options=options)

    def run(self, pubs: list[tuple], shots: int, counter) -> np.ndarray:
        """Run ``pubs`` (``(circuit, values | None)``); returns the ``+1`` counts, concatenated over rows."""
        circuits = self.prepare([c for c, _ in pubs])
        rows = [(c, v) for c, (_, v) in zip(circuits, pubs)]
        per_call = max(1, MAX_SHOTS_PER_RUN // shots)
        out, batch, size = [], [], 0
        for circuit, values in rows:  # split big value arrays so a call stays under the shot limit
            starts = range(0, len(values), per_call) if values is not None else []
            chunks = [None] if values is None else [values[i:i + per_call] for i in starts]
            for chunk in chunks:
                n = 1 if chunk is None else len(chunk)
                if batch and size + n > per_call:
                    out += self._call(batch, shots, counter)
                    batch, size = [], 0
                batch.append((circuit,) if chunk is None else (circuit, chunk))
                size += n
        if batch:
            out += self._call(batch, shots, counter)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _call(self, batch: list[tuple], shots: int, counter) -> list[np.ndarray]:
        result = self._sampler(self.jobs).run(batch, shots=shots).result()
        self.jobs += 1
        return [np.asarray(counter(r.data)).reshape(-1) for r in result]


def _counter(overlap: str, with_upstream: bool):
    """``data bin -> (N,)`` number of shots whose +-1 outcome is +1 (ancilla 0, or even Bell parity)."""
    def count(data) -> np.ndarray:
        if overlap == "cswap":
            ones = data.a.bitcount()
        else:
            ones = (data.x & data.f).bitcount() + (data.b.bitcount() if with_upstream else 0)
        return (ones % 2 == 0).sum(-1)
    return count


def _check_overlap_method(method: str, overlap: str) -> None:
    if method not in METHODS:
        raise UsageError(f"method must be one of {METHODS}, got {method!r}")
    if overlap not in OVERLAPS:
        raise UsageError(f"overlap must be one of {OVERLAPS}, got {overlap!r}")


def _estimate(runner: _Runner, data: Tensor, shots: int, *, theta: Tensor | None = None,
              states: Tensor | None = None, upstream: Tensor | None = None, method: str = "gates",
              overlap: str = "cswap") -> np.ndarray:
    """Shot estimates ``2 n_+ / S - 1`` of ``N`` overlap circuits: unit real ``data`` ``(N, d)`` against
    ansatz filters ``theta`` ``(N, L, n, 2)`` or filter ``states`` ``(N or 1, d)``; ``upstream`` ``(N,)``."""
    num = data.shape[0]
    if num == 0:
        return np.zeros(0)
    n = data.shape[1].bit_length() - 1
    num_qubits = 2 * n + 1 + (upstream is not None)
    ops = list(state_preparation_ops(data, data_wires(n), method))
    per_row_states = None
    if theta is not None:
        ops += FilterAnsatz(n, theta.shape[1]).ops(theta, filter_wires(n))
    elif method == "gates" and states.is_complex():
        per_row_states = states.numpy()  # complex state: Qiskit's StatePreparation, one circuit per row
    else:
        ops += state_preparation_ops(states, filter_wires(n), method)
    tail = overlap_ops(n, upstream, overlap)
    measured = dict(n=n, upstream=upstream is not None, overlap=overlap)
    if per_row_states is None and all(GATES[op.gate].num_wires is not None for op in ops):
        circuit, values = ops_to_template(ops + tail, num_qubits)
        add_measurements(circuit, **measured)
        pubs = [(circuit, values)]
    else:
        pubs = []
        for i in range(num):
            circuit = ops_to_circuit(ops, num_qubits, i)
            if per_row_states is not None:
                row = per_row_states[i if len(per_row_states) > 1 else 0]
                circuit.append(StatePreparation(row), list(reversed(filter_wires(n))))
            circuit.compose(ops_to_circuit(tail, num_qubits, i), inplace=True)
            add_measurements(circuit, **measured)
            pubs.append((circuit, None))
    plus = runner.run(pubs, shots, _counter(overlap, upstream is not None))
    return 2 * plus / shots - 1


def _as_batch(value, name: str, complex_ok: bool) -> Tensor:
    t = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if t.dim() != 2:
        raise UsageError(f"{name} must have shape (B, d), got {tuple(t.shape)}")
    if t.is_complex() and not complex_ok:
        raise TypeError(f"{name} must be real (amplitude-encoded data), got {t.dtype}")
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must hold numbers, got {t.dtype}")
    t = t.to(torch.complex128 if t.is_complex() else torch.float64)
    check_finite(t, name)
    return t


def _param_indices(params, total: int) -> Tensor:
    if params is None:
        return torch.arange(total)
    idx = torch.as_tensor(params).reshape(-1)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool or idx.numel() == 0 \
            or bool(((idx < 0) | (idx >= total)).any()):
        raise UsageError(f"params must be a non-empty list of ints in [0, {total}), got {params!r}")
    return idx.long()


def sample_swap_tests(data, filters, shots: int, upstream=None, noise_model=None, seed: int | None = None,
                      sampler=None, method: str = "unitary", overlap: str = "cswap",
                      pass_manager=None) -> Tensor:
    """Shot estimates of ``<Z_a>`` for ``B`` SWAP tests (or entanglement circuits), run in one call.

    Args:
        data: ``(B, m)`` real patch values; amplitude-encoded here (zero-padded to ``d = 2**n``,
            normalised). All-zero rows are not run and give 0.
        filters: ``(B, d)`` or ``(1, d)`` filter state vectors, real or complex (normalised here).
        shots: shots ``S`` per circuit.
        upstream: ``(B,)`` (or one value for all) deltas in ``[-1, 1]`` for the entanglement circuit
            (``<Z_a> = delta F``), or None.
        noise_model: Aer ``NoiseModel`` for the default sampler (circuits are unrolled to its basis).
        seed: seeds the default Aer sampler and the transpiler.
        sampler: any ``SamplerV2`` (default: ``qiskit_aer.primitives.SamplerV2``); with your own
            sampler, circuits are sent as built unless ``pass_manager`` is given (hardware needs ISA).
        method: ``"unitary"`` (SVD ``UnitaryGate``, the paper's) or ``"gates"`` (Mottonen for real
            states, Qiskit ``StatePreparation`` for complex filters) for both registers.
        overlap: ``"cswap"`` (the SWAP test) or ``"bell"`` (the ancilla-free Bell-basis test).
        pass_manager: optional Qiskit pass manager applied to every circuit before running.

    Returns:
        float64 ``(B,)``: ``2 n0 / S - 1`` (``n0``: shots with outcome +1), unbiased for ``F`` or ``delta F``.

    Example:
        >>> z = sample_swap_tests(torch.eye(4), torch.full((1, 4), 0.5), shots=4000, seed=1)
        >>> bool(((z - 0.25).abs() < 0.1).all())
        True
    """
    check_shots(shots)
    if shots is None:
        raise UsageError("shots must be a positive int (a sampler has no exact mode), got None")
    _check_overlap_method(method, overlap)
    x = _as_batch(data, "data", complex_ok=False)
    encoded = amplitude_encode(x)
    f = _as_batch(filters, "filters", complex_ok=True)
    if f.shape[1] != encoded.shape[1] or f.shape[0] not in (1, x.shape[0]):
        raise UsageError(f"filters must have shape ({x.shape[0]} or 1, {encoded.shape[1]}) to match data "
                         f"{tuple(x.shape)} (encoded length {encoded.shape[1]}), got {tuple(f.shape)}")
    norms = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise UsageError("a filter row is all zero: it has no quantum state")
    f = f / norms
    valid = encoded.abs().sum(1) > 0
    delta = None
    if upstream is not None:
        delta = _as_batch(torch.as_tensor(upstream).reshape(1, -1), "upstream", complex_ok=False)[0]
        if delta.shape[0] == 1:
            delta = delta.expand(x.shape[0])
        if delta.shape[0] != x.shape[0] or bool(((delta < -1) | (delta > 1)).any()):
            raise UsageError(f"upstream must have shape ({x.shape[0]},) with values in [-1, 1], got "
                             f"shape {tuple(delta.shape)}, range [{float(delta.min())}, {float(delta.max())}]")
        delta = delta[valid]
    rows = valid.nonzero()[:, 0]
    states = f if f.shape[0] == 1 else f[rows]
    runner = _Runner(sampler, noise_model, seed, pass_manager)
    z = _estimate(runner, encoded[rows], shots, states=states, upstream=delta, method=method, overlap=overlap)
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    out[rows] = torch.as_tensor(z, dtype=torch.float64)
    return out


class QiskitExecutor:
    """Run a :class:`qucnn.QuConv2d`'s forward and filter gradients on a Qiskit ``SamplerV2``.

    Args:
        sampler: any ``SamplerV2`` (default: Aer's, with ``noise_model`` and a fresh seed per call drawn
            from ``seed``). An IBM Runtime sampler works the same way (untested) with ``pass_manager``.
        noise_model: Aer ``NoiseModel`` for the default sampler (see :func:`default_noise_model`).
        seed: seeds every call's sampler and transpiler (reproducible sequences of calls).
        shots: shots per circuit.
        method: data state preparation, ``"gates"`` (Mottonen; all circuits of a call then form one
            parametrised PUB) or ``"unitary"`` (SVD ``UnitaryGate``, one PUB per circuit).
        overlap: ``"cswap"`` (SWAP test) or ``"bell"`` (ancilla-free Bell-basis test).
        pass_manager: optional Qiskit pass manager applied before running (hardware ISA circuits).

    ``last_run`` holds ``{"circuits", "shots", "jobs"}`` of the last forward or gradient call.

    Example:
        >>> from qucnn import QuConv2d
        >>> layer = QuConv2d(1, 2, 2, layers=1).double()
        >>> QiskitExecutor(shots=100, seed=0).forward(layer, torch.rand(1, 1, 3, 3)).shape
        torch.Size([1, 2, 2, 2])
    """

    def __init__(self, sampler=None, noise_model=None, seed: int | None = None, shots: int = 4096,
                 method: str = "gates", overlap: str = "cswap", pass_manager=None) -> None:
        check_shots(shots)
        if shots is None:
            raise UsageError("shots must be a positive int, got None")
        _check_overlap_method(method, overlap)
        _Runner(sampler, noise_model, seed, pass_manager)  # validates the combination now
        self.sampler, self.noise_model, self.pass_manager = sampler, noise_model, pass_manager
        self.shots, self.method, self.overlap = shots, method, overlap
        self._seeds = np.random.default_rng(seed) if seed is not None else None
        self.last_run: dict = {"circuits": 0, "shots": 0, "jobs": 0}

    def _runner(self) -> _Runner:
        seed = None if self._seeds is None else int(self._seeds.integers(2**31))
        return _Runner(self.sampler, self.noise_model, seed, self.pass_manager)

    def _run(self, data: Tensor, **kw) -> np.ndarray:
        runner = self._runner()
        z = _estimate(runner, data, self.shots, method=self.method, overlap=self.overlap, **kw)
        self.last_run = {"circuits": len(z), "shots": len(z) * self.shots, "jobs": runner.jobs}
        return z

    @staticmethod
    def _patches(layer, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int, int, int]]:
        if not isinstance(layer, QuConv2d):
            raise TypeError(f"layer must be a qucnn.QuConv2d, got {type(layer).__name__}")
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != layer.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise UsageError(f"x must be a tensor of shape (B, {layer.in_channels}, H, W), got {got}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a real floating tensor, got {x.dtype}")
        check_finite(x, "x")
        d = 2**layer.n_qubits
        patches = unfold_encoded(x.detach().double(), layer._spec, d)
        h_out, w_out = layer.output_shape(x.shape[-2], x.shape[-1])
        flat = patches.reshape(-1, d)
        return flat, flat.abs().sum(1) > 0, (x.shape[0], h_out, w_out, layer.out_channels)

    def forward(self, layer, x: Tensor) -> Tensor:
        """Shot estimates of ``layer(x)``: ``x`` ``(B, C, H, W)`` -> ``(B, O, H', W')`` (0 on all-zero patches).

        One circuit per (nonzero patch, filter), all in one parametrised PUB (``method="gates"``).
        """
        flat, valid, (b, h, w, o) = self._patches(layer, x)
        rows = valid.nonzero()[:, 0]
        theta = layer.theta.detach().double()
        z = self._run(flat[rows].repeat_interleave(o, 0), theta=theta.repeat(len(rows), 1, 1, 1))
        out = torch.zeros(flat.shape[0], o, dtype=torch.float64)
        out[rows] = torch.as_tensor(z).reshape(len(rows), o)
        return out.reshape(b, h, w, o).permute(0, 3, 1, 2).to(x.dtype)

    def gradient(self, layer, x: Tensor, upstream_grad: Tensor, method: str = "entanglement",
                 scale: float | None = None, params=None) -> Tensor:
        """Shot estimate of ``dL/dtheta`` ``(O, L, n, 2)`` given ``upstream_grad = dL/dy`` ``(B, O, H', W')``.

        ``"parameter-shift"`` (Eq. 4-6): ``sum_j g_j (F+_j - F-_j) / 2`` with ``F+-`` estimated from
        SWAP tests at ``theta +- pi/2`` (pairs with ``g_j = 0`` contribute nothing and are not run).
        ``"entanglement"`` (Eq. 16-17): ``delta_j = g_j / c`` is folded into each circuit,
        ``(c / 2) sum_j (<Z>+_j - <Z>-_j)``; ``c = scale`` or, by default, ``max_j |g_j|`` as in
        :func:`qucnn.gradients.entanglement_grad` (``scale`` must be ``>= max_j |g_j|``).
        ``params``: optional indices into one filter's flattened ``L * n * 2`` angles; only those are
        estimated (the others stay 0, like frozen parameters, and cost no circuits).
        """
        if method not in GRADIENT_METHODS:
            raise UsageError(f"method must be one of {GRADIENT_METHODS}, got {method!r}")
        flat, valid, (b, h, w, o) = self._patches(layer, x)
        if not isinstance(upstream_grad, Tensor) or tuple(upstream_grad.shape) != (b, o, h, w):
            got = tuple(upstream_grad.shape) if isinstance(upstream_grad, Tensor) else type(upstream_grad).__name__
            raise UsageError(f"upstream_grad must have shape {(b, o, h, w)}, got {got}")
        g = upstream_grad.detach().double().permute(0, 2, 3, 1).reshape(-1, o)  # (patches, O)
        check_finite(g, "upstream_grad")
        theta = layer.theta.detach().double()
        grad = torch.zeros(o, theta[0].numel(), dtype=torch.float64)
        selected = _param_indices(params, theta[0].numel())
        c = float(g.abs().max()) if scale is None else float(scale)
        if scale is not None and (not math.isfinite(c) or c < float(g.abs().max()) or c <= 0):
            raise UsageError(f"scale must be >= max |upstream_grad| = {float(g.abs().max())}, got {scale}")
        pairs = (valid[:, None] & (g != 0)).nonzero()  # (K, 2): patch j, filter o
        if len(pairs) == 0 or c == 0:
            self.last_run = {"circuits": 0, "shots": 0, "jobs": 0}
            return grad.reshape(theta.shape).to(layer.theta.dtype)
        shifted = shifted_thetas(theta)[0][:, selected]  # (2, P, O, L, n, 2)
        p, k = shifted.shape[1], len(pairs)
        data = flat[pairs[:, 0]].repeat(2 * p, 1)  # rows ordered (sign, param, pair)
        thetas = shifted[:, :, pairs[:, 1]].reshape((-1,) + theta.shape[1:])
        g_k = g[pairs[:, 0], pairs[:, 1]]
        if method == "parameter-shift":
            est = torch.as_tensor(self._run(data, theta=thetas)).reshape(2, p, k)
            contrib = (est[0] - est[1]) / 2 * g_k  # (P, K)
        else:
            est = torch.as_tensor(self._run(data, theta=thetas, upstream=(g_k / c).repeat(2 * p)))
            est = est.reshape(2, p, k)
            contrib = (c / 2) * (est[0] - est[1])
        grad[:, selected] = torch.zeros(o, p, dtype=torch.float64).index_add_(0, pairs[:, 1], contrib.T)
        return grad.reshape(theta.shape).to(layer.theta.dtype)


__all__ = ["sample_swap_tests", "QiskitExecutor", "MAX_SHOTS_PER_RUN"]
