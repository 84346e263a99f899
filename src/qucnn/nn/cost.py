"""What a quantum computer would have run: :class:`QuantumCost` per call and a :class:`CostLedger` of them.

Every forward and backward of a QuCNN layer records the circuits it needs, their qubits and their shots
(``shots=None``: the expectations were exact, i.e. infinitely many shots). A backward is recorded when it
runs, not at the forward. In ``gradient="autograd"`` mode it is recorded as what a quantum computer would need
for the same gradient by parameter shift (2 circuits per angle and non-zero patch), marked exact. Circuit counts computed on a device stay device
tensors until a cost is read, so counting never makes a GPU forward wait for the host.

Example:
    >>> ledger = CostLedger()
    >>> ledger.record("forward", QuantumCost(circuits=10, qubits=9, shots=1000))
    >>> ledger.total()["forward"]
    {'circuits': 10, 'shots': 1000}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor

from ..utils.checks import one_of

PHASES = ("forward", "backward")
#: Records held with unread device counts before they are read into the totals (one host sync per this many).
MAX_PENDING = 64


@dataclass(frozen=True)
class QuantumCost:
    """Distinct ``circuits`` run, ``qubits`` per circuit, total ``shots`` (``None`` when the expectations were
    exact) and, for backends that run real jobs, the wall time ``wall_s`` of the call."""

    circuits: int = 0
    qubits: int = 0
    shots: int | None = 0
    wall_s: float | None = None

    @property
    def exact(self) -> bool:
        """Whether these circuits' expectations were taken exactly (infinitely many shots)."""
        return self.shots is None and self.circuits > 0

    def as_dict(self) -> dict:
        """The fields as a plain dict (for JSON)."""
        return asdict(self)


class CostLedger:
    """The :class:`QuantumCost` of every call, in order: :attr:`last` per phase and :meth:`total` since
    :meth:`reset`. Counts may be device tensors; they are read (one host sync) when a cost is read or
    every :data:`MAX_PENDING` records."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, Tensor | int, int, int, int | None, float | None]] = []
        self._last = {phase: QuantumCost() for phase in PHASES}
        self.reset()

    def reset(self) -> None:
        """Zero the totals (the last costs stay)."""
        self._settle()
        self._totals = {phase: [0, 0] for phase in PHASES}  # circuits, shots
        self._exact = {phase: False for phase in PHASES}

    def record(self, phase: str, cost: QuantumCost) -> None:
        """Add one call's cost."""
        one_of(phase, PHASES, "phase")
        shots_per = None if cost.shots is None else (cost.shots, cost.circuits)
        self._pending.append((phase, cost.circuits, 1, cost.qubits, shots_per, cost.wall_s))
        self._maybe_settle()

    def record_count(self, phase: str, count: Tensor | int, per_count: int, qubits: int,
                     shots_per_circuit: int | None, wall_s: float | None = None) -> None:
        """Add a call that ran ``count * per_count`` circuits (``count`` may be an unread device tensor) of
        ``qubits`` qubits with ``shots_per_circuit`` shots each (``None``: exact)."""
        one_of(phase, PHASES, "phase")
        self._pending.append((phase, count, per_count, qubits, None if shots_per_circuit is None
                              else (shots_per_circuit, None), wall_s))
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        if len(self._pending) >= MAX_PENDING:  # a loop that never reads its costs must not grow
            self._settle()

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        for phase, count, per_count, qubits, shots, wall_s in pending:
            circuits = int(count) * per_count
            if shots is None:
                total_shots = None
            elif shots[1] is None:  # shots per circuit
                total_shots = circuits * shots[0]
            else:  # a total, as recorded
                total_shots = shots[0]
            cost = QuantumCost(circuits, qubits, total_shots, wall_s)
            self._last[phase] = cost
            self._totals[phase][0] += circuits
            self._totals[phase][1] += total_shots or 0
            self._exact[phase] |= cost.exact

    @property
    def last(self) -> dict[str, QuantumCost]:
        """The cost of the last forward and the last backward: ``{"forward": ..., "backward": ...}``."""
        self._settle()
        return dict(self._last)

    def total(self) -> dict:
        """``{phase: {"circuits", "shots"}}`` since :meth:`reset` (``shots`` is ``None`` if any call was exact)."""
        self._settle()
        return {phase: {"circuits": c, "shots": None if self._exact[phase] else s}
                for phase, (c, s) in self._totals.items()}


__all__ = ["CostLedger", "MAX_PENDING", "PHASES", "QuantumCost"]
