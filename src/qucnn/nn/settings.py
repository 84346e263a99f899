"""The quantum settings of a QuCNN layer as one frozen, validated object.

:class:`QuantumSettings` holds what decides how the layer's circuits run: shots, the gradient mode and its shots
or budget, and the generator of every shot draw. ``QuConv2d`` keeps one and replaces it when a setting changes
(validated then, not on every call); :func:`qucnn.functional.quconv2d` makes one from its arguments. The layer
hands it to the functional, which hands it to the gradient estimators.

Example:
    >>> QuantumSettings(shots=1000, gradient="entanglement", gradient_shots=100).gradient
    'entanglement'
    >>> QuantumSettings(shots=0)
    Traceback (most recent call last):
        ...
    qucnn.utils.checks.UsageError: shots must be a positive int or None, got 0
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, replace

import torch

from ..utils.checks import MAX_SHOTS, UsageError, check_shots, one_of, optional_positive_int

#: Folders whose frames a warning skips to point at the user's line (this package's and torch's).
_LIBRARY_DIRS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(torch.__file__))

GRADIENT_MODES = ("autograd", "parameter-shift", "entanglement", "sampled")
#: Gradient modes whose circuits take ``gradient_shots`` shots each.
SHOT_GRADIENTS = ("parameter-shift", "entanglement")


@dataclass(frozen=True, eq=False)
class QuantumSettings:
    """How a layer's circuits run.

    Attributes:
        shots: ``None`` for exact expectations, or ``S`` shots per output (``1 <= S <= 2**53``).
        gradient: one of :data:`GRADIENT_MODES` (see :mod:`qucnn.nn.functional`).
        gradient_shots: shots per gradient circuit (``parameter-shift``, ``entanglement``; ``None``: exact).
        gradient_budget: single-shot circuits per backward for ``gradient="sampled"``.
        generator: ``torch.Generator`` for every shot draw (seeded runs); ``None``: torch's default.
    """

    shots: int | None = None
    gradient: str = "autograd"
    gradient_shots: int | None = None
    gradient_budget: int | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", check_shots(self.shots))
        one_of(self.gradient, GRADIENT_MODES, "gradient")
        object.__setattr__(self, "gradient_shots", check_shots(self.gradient_shots, "gradient_shots"))
        object.__setattr__(self, "gradient_budget", optional_positive_int(self.gradient_budget, "gradient_budget"))
        if self.gradient_budget is not None and self.gradient_budget > MAX_SHOTS:
            raise UsageError(f"gradient_budget must be at most 2**53 single-shot circuits, got {self.gradient_budget}")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(self.generator).__name__}")

    def with_(self, **changes) -> "QuantumSettings":
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    def check_with(self, exact_backend: bool, name: str, n_angles: int, filters: int) -> None:
        """The checks that need the backend or the angles: ``UsageError`` for a combination that cannot run,
        a warning for a setting the mode ignores."""
        if self.shots is None and not exact_backend:
            raise UsageError(f"backend {name!r} runs circuits and has no exact mode: give shots (e.g. shots=1000)")
        if self.gradient in SHOT_GRADIENTS and self.gradient_shots is None and not exact_backend:
            raise UsageError(f"gradient={self.gradient!r} on backend {name!r} needs gradient_shots")
        if self.gradient == "sampled" and self.gradient_budget is None:
            raise UsageError("gradient='sampled' needs gradient_budget (total shots per backward), got None")
        if self.gradient_shots is not None and self.gradient not in SHOT_GRADIENTS:
            warnings.warn(f"gradient_shots={self.gradient_shots} is ignored with gradient={self.gradient!r}; it "
                          f"applies to {' and '.join(SHOT_GRADIENTS)}", UserWarning, stacklevel=_user_stacklevel())
        if self.gradient_budget is not None and self.gradient != "sampled":
            warnings.warn(f"gradient_budget={self.gradient_budget} is ignored with gradient={self.gradient!r}; it "
                          "applies to gradient='sampled'", UserWarning, stacklevel=_user_stacklevel())
        elif self.gradient == "sampled" and self.gradient_budget < 2 * n_angles * filters:
            warnings.warn(f"gradient_budget={self.gradient_budget} is below the {2 * n_angles * filters} circuits "
                          f"that reach every angle's two shifts once ({filters} filters x {n_angles} angles x 2): "
                          "most gradient entries get no sample and the estimate is very noisy", UserWarning,
                          stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """The ``stacklevel`` of a warning raised in the caller of this function that points at the first frame
    outside qucnn and torch: the user's line, whether they called the layer or the functional."""
    frame, level = sys._getframe(2), 2  # the frame that asked, and its caller
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


__all__ = ["GRADIENT_MODES", "QuantumSettings", "SHOT_GRADIENTS"]
