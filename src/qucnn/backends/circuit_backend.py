"""What every backend that runs real circuits with shots shares: which circuits to run, and what their shots mean.

A circuit backend (:class:`CircuitBackend`: Qiskit samplers, PennyLane devices) turns a request of the protocol
into rows ``(patch, filter, delta)``, drops the rows whose result is known (all-zero patch, ``delta = 0``,
outside ``mask``), and runs every *distinct* row once: ``m`` identical rows (the same amplitude-encoded patch, the
same filter, the same delta; proportional patches encode to the same state) become one circuit run with
``m * S`` shots whose outcomes are split into ``m`` blocks of ``S``. Shots are independent, so each row gets an
``S``-shot estimate with exactly the distribution of running its own circuit: the statistics are those of the
torch backend, and the layer's cost ledger counts one ``S``-shot estimate per (patch, filter) output run, as for
every backend. ``Result.extras["distinct"]`` reports the circuits actually bound and run, ``"jobs"`` the jobs.

Subclasses implement one method, :meth:`CircuitBackend.execute`: run groups of distinct circuits
(:class:`CircuitRows`), each with its own shot count, and return every shot's outcome (``True`` for
``<Z_a> = -1``). :meth:`CircuitBackend.correct` is a hook for post-processing the estimates (readout
mitigation). A backend pickles and deep-copies by its constructor's arguments (:attr:`CircuitBackend.arguments`).

Example:
    >>> rows = CircuitRows.build(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), Filters(theta=torch.zeros(1, 1, 1, 2)))
    >>> rows.multiplicity.tolist()   # both patches encode to |0>: one circuit, run for both
    [2]
"""

from __future__ import annotations

import abc
import copy
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.ansatz import FilterAnsatz
from ..core.encoding import amplitude_encode, mottonen_ops
from ..core.gates import Op
from ..core.geometry import ConvSpec, unfold_patches
from ..core.swap_test import data_wires, filter_wires
from ..utils.checks import UsageError
from .base import Backend, Filters, Result


def _unique_rows(table: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``table`` ``(N, k)`` and the index of each row's distinct row ``(N,)``."""
    if table.shape[0] == 0:
        return table, torch.zeros(0, dtype=torch.int64)
    distinct, inverse = torch.unique(table, dim=0, return_inverse=True)
    return distinct, inverse


def _filter_table(filters: Filters) -> Tensor:
    """One row of numbers per filter that identifies its circuit: the angles, else the state."""
    flat = filters.flatten()
    if flat.theta is not None:
        return flat.theta.detach().double().reshape(flat.theta.shape[0], -1).cpu()
    states = flat.states.detach().cpu()
    return torch.view_as_real(states.to(torch.complex128)).reshape(states.shape[0], -1) if states.is_complex() \
        else states.double()


@dataclass(frozen=True)
class CircuitRows:
    """``D`` distinct SWAP-test (or, with ``delta``, Eq. 15) circuits on ``2n+1`` (``2n+2``) qubits.

    ``patches`` ``(D, 2**n)`` unit real states; ``theta`` ``(D, L, n, 2)`` ansatz angles or ``states``
    ``(D, 2**n)`` unit filter states; ``delta`` ``(D,)`` or ``None``; ``multiplicity`` ``(D,)``: how many
    requested rows each stands for; ``inverse`` ``(R,)``: the distinct circuit of every requested row, in order.
    """

    n: int
    patches: Tensor
    theta: Tensor | None
    states: Tensor | None
    delta: Tensor | None
    multiplicity: Tensor
    inverse: Tensor

    @classmethod
    def build(cls, patches: Tensor, filters: Filters, filter_index: Tensor | None = None,
              delta: Tensor | None = None) -> "CircuitRows":
        """Distinct circuits of ``R`` requested rows: raw ``patches`` ``(R, m)`` (none all zero), the
        filter of each row (``filter_index`` ``(R,)`` into the flattened ``filters``; default row ``i`` ->
        filter ``i``, or filter 0 when there is one), ``delta`` ``(R,)`` or ``None``."""
        encoded = amplitude_encode(patches.detach().double().cpu())
        n = encoded.shape[-1].bit_length() - 1
        table = _filter_table(filters)
        if filter_index is None:
            filter_index = torch.zeros(len(encoded), dtype=torch.int64) if table.shape[0] == 1 \
                else torch.arange(len(encoded))
        keys = [encoded, table[filter_index.cpu()]]
        if delta is not None:
            keys.append(delta.detach().double().cpu().reshape(-1, 1))
        _, inverse = _unique_rows(torch.cat(keys, 1))
        d = int(inverse.max()) + 1 if len(inverse) else 0
        first = torch.full((d,), len(inverse), dtype=torch.int64).scatter_reduce(
            0, inverse, torch.arange(len(inverse)), "amin")  # the first requested row of each circuit
        # renumber the circuits in order of first appearance, so that runs do not depend on sorting
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(d)
        inverse, first = rank[inverse], first[order]
        flat = filters.flatten()
        pick = filter_index.cpu()[first]
        theta = None if flat.theta is None else flat.theta.detach().double().cpu()[pick]
        states = None if flat.states is None or theta is not None else flat.states.detach().cpu()[pick]
        if states is not None:
            states = states / torch.linalg.vector_norm(states, dim=-1, keepdim=True)
        return cls(n, encoded[first], theta, states, None if delta is None else delta.double().cpu()[first],
                   torch.bincount(inverse, minlength=d), inverse)

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def take(self, index: Tensor) -> "CircuitRows":
        """The distinct circuits ``index`` (their own group; ``inverse`` is not carried)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return CircuitRows(self.n, self.patches[index], pick(self.theta), pick(self.states), pick(self.delta),
                           self.multiplicity[index], torch.zeros(0, dtype=torch.int64))

    @property
    def templated(self) -> bool:
        """Whether all circuits share one gate structure with angles only (ansatz or real filter states)."""
        return self.theta is not None or not self.states.is_complex()

    @property
    def structure(self) -> tuple:
        """What fixes the gate sequence: qubits, filter kind (ansatz layers or prepared state), Eq. 15 or not."""
        kind = ("ansatz", int(self.theta.shape[1])) if self.theta is not None else ("state",)
        return (self.n, kind, self.delta is not None)

    def preparation_ops(self) -> list[Op]:
        """Both registers prepared from ``|0>``: Mottonen for the patch, the Fig. 1 ansatz (or Mottonen for a
        real filter state) for the filter; angles batched ``(D, 1)``."""
        n = self.n
        ops = mottonen_ops(self.patches, data_wires(n))
        if self.theta is not None:
            ops += FilterAnsatz(n, int(self.theta.shape[1])).ops(self.theta, filter_wires(n))
        elif not self.states.is_complex():
            ops += mottonen_ops(self.states, filter_wires(n))
        else:
            raise UsageError("complex filter states have no angle-only preparation here; give theta, or real states")
        return ops

    def num_qubits(self) -> int:
        """Qubits of these circuits: ``2n + 1``, plus the backpropagation ancilla with upstream deltas."""
        return 2 * self.n + 1 + (self.delta is not None)


def split_shots(minus: np.ndarray, multiplicity: int, shots: int) -> np.ndarray:
    """``S``-shot estimates ``1 - 2 k / S`` from per-shot outcomes ``minus`` ``(D, m * S)`` (``True``: -1):
    ``(D, m)``, block ``j`` of a circuit from its shots ``j S .. (j + 1) S - 1``."""
    counts = np.asarray(minus, dtype=np.int64).reshape(-1, multiplicity, shots).sum(-1)
    return 1 - 2 * counts / shots


def _rebuild(cls: type, arguments: dict[str, Any]) -> "CircuitBackend":
    return cls(**arguments)


class CircuitBackend(Backend):
    """A backend that runs circuits with shots (no exact mode). Subclasses implement :meth:`execute`, call
    ``super().__init__(seed, **their_constructor_arguments)`` and may override :meth:`correct`."""

    exact = False

    def __init__(self, seed: int | None = None, **arguments: Any) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
        self.seed = seed
        self._seeds = np.random.default_rng(seed)
        #: The constructor's arguments: what a pickle or a deep copy rebuilds the backend from.
        self.arguments = {"seed": seed, **arguments}

    def __reduce__(self):
        try:
            pickle.dumps(self.arguments)
        except Exception as err:  # a live object (a sampler, a device, a pass manager) the user passed
            live = [k for k, v in self.arguments.items() if not _picklable(v)]
            raise TypeError(f"{type(self).__name__} cannot be pickled: its argument(s) {', '.join(live)} are live "
                            f"objects ({err}); build it from settings (names, options) instead, or save the model's "
                            "state_dict and attach the backend again after loading") from None
        return _rebuild, (type(self), self.arguments)

    def __deepcopy__(self, memo: dict) -> "CircuitBackend":
        try:
            arguments = copy.deepcopy(self.arguments, memo)
        except Exception:  # a live object (a sampler, a device): copies share this backend, as they share it
            return self
        return _rebuild(type(self), arguments)

    def _call_seed(self, generator: torch.Generator | None) -> int:
        """The seed of one call: drawn from ``generator`` (a layer's shot stream) or the backend's own stream."""
        if generator is not None:
            return int(torch.randint(2**62, (1,), generator=generator, device=generator.device).item())
        return int(self._seeds.integers(2**62))

    @staticmethod
    def _check_shots(shots: int | None) -> int:
        if shots is None:
            raise UsageError("a circuit backend has no exact mode: give shots (e.g. shots=1000)")
        return int(shots)

    @abc.abstractmethod
    def execute(self, groups: list[tuple[CircuitRows, int]], seed: int) -> tuple[list[np.ndarray], dict]:
        """Run every circuit of every group ``(rows, shots)``: the SWAP test of :class:`CircuitRows` (or its
        Eq. 15 circuit, when ``rows.delta`` is given), ``shots`` shots each, seeded by ``seed``. Return per group
        the outcomes ``(D, shots)`` bool (``True`` where the shot measured ``<Z_a> = -1``), and what was submitted
        (``{"jobs": ...}``, reported in :attr:`Result.extras <qucnn.backends.Result.extras>`)."""

    def correct(self, z: Tensor, rows: CircuitRows, seed: int) -> tuple[Tensor, dict]:
        """Post-process the estimates ``z`` ``(R,)`` of the requested rows (e.g. readout mitigation); return them
        and what to report. Default: unchanged."""
        return z, {}

    def _estimates(self, rows: CircuitRows, shots: int, seed: int) -> tuple[Tensor, dict]:
        """One ``shots``-shot estimate per requested row ``(R,)`` float64, and the extras."""
        out = np.zeros(len(rows.inverse))
        if len(rows) == 0:
            return torch.from_numpy(out), {"distinct": 0, "jobs": 0}
        mult = rows.multiplicity.numpy()
        groups = [(np.flatnonzero(mult == m), int(m)) for m in np.unique(mult)]
        outcomes, extras = self.execute([(rows.take(torch.from_numpy(idx)), m * shots) for idx, m in groups], seed)
        # block j of circuit d goes to the j-th requested row of d
        order = np.argsort(rows.inverse.numpy(), kind="stable")
        start = np.concatenate([[0], np.cumsum(mult)[:-1]])
        blocks = np.zeros(int(mult.sum()))
        for (idx, m), minus in zip(groups, outcomes):
            z = split_shots(minus, m, shots)  # (D_g, m)
            blocks[(start[idx][:, None] + np.arange(m)).reshape(-1)] = z.reshape(-1)
        out[order] = blocks
        z, corrected = self.correct(torch.from_numpy(out), rows, seed)
        return z, {"distinct": len(rows), **extras, **corrected}

    def expectations(self, x: Tensor, filters: Filters, spec: ConvSpec, *, upstream: Tensor | None = None,
                     mask: Tensor | None = None, shots: int | None = None,
                     generator: torch.Generator | None = None) -> Result:
        shots = self._check_shots(shots)
        groups, o = filters.shape
        patches = unfold_patches(x.detach().double().cpu(), spec)  # (B, L, m)
        b, positions = patches.shape[:2]
        ho, wo = spec.output_size(*x.shape[-2:])
        run = (patches.abs().sum(-1) > 0)[:, None, :].expand(b, o, positions)
        if mask is not None:
            run = run & mask.detach().cpu().reshape(b, o, positions)
        delta = None
        if upstream is not None:
            delta = upstream.detach().double().cpu().reshape(b, o, positions)
            run = run & (delta != 0)
        gi, bi, oi, li = run.unsqueeze(0).expand(groups, b, o, positions).nonzero(as_tuple=True)
        rows = CircuitRows.build(patches[bi, li], filters, gi * o + oi, None if delta is None else delta[bi, oi, li])
        z, extras = self._estimates(rows, shots, self._call_seed(generator))
        dtype = torch.promote_types(x.dtype, torch.float32)
        values = torch.zeros(groups, b, o, positions, dtype=torch.float64)
        values[gi, bi, oi, li] = z
        return Result(values.reshape(groups, b, o, ho, wo).to(device=x.device, dtype=dtype), extras)

    def circuit_expectations(self, patches: Tensor, filters: Filters, *, upstream: Tensor | None = None,
                             shots: int | None = None, generator: torch.Generator | None = None) -> Result:
        shots = self._check_shots(shots)
        raw = patches.detach().double().cpu()
        run = raw.abs().sum(-1) > 0
        if upstream is not None:
            run = run & (upstream.detach().cpu() != 0)
        index = run.nonzero()[:, 0]
        count = filters.flatten().shape[0]
        filter_index = torch.zeros_like(index) if count == 1 else index
        delta = None if upstream is None else upstream.detach().double().cpu()[index]
        rows = CircuitRows.build(raw[index], filters, filter_index, delta)
        z, extras = self._estimates(rows, shots, self._call_seed(generator))
        values = torch.zeros(raw.shape[0], dtype=torch.float64)
        values[index] = z
        dtype = torch.promote_types(patches.dtype, torch.float32)
        return Result(values.to(device=patches.device, dtype=dtype), extras)


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


__all__ = ["CircuitBackend", "CircuitRows", "split_shots"]
