"""The neural-network layer: the functional :func:`quconv2d`, the module :class:`QuConv2d`, the gradient
estimators, cost accounting, and hybrid models built on the layer."""

from .cost import CostLedger, QuantumCost
from .free_filters import FreeFidelity2d
from .functional import quconv2d
from .layer import QuConv2d
from .models import DEFAULT_HEAD, MODEL_KINDS, HybridNet, build_head, build_model
from .settings import GRADIENT_MODES, QuantumSettings

__all__ = ["CostLedger", "DEFAULT_HEAD", "FreeFidelity2d", "GRADIENT_MODES", "HybridNet", "MODEL_KINDS", "QuConv2d",
           "QuantumCost", "QuantumSettings", "build_head", "build_model", "quconv2d"]
