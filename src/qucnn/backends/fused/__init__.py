"""The fused PyTorch engine (:class:`FusedEngine`): exact fidelity maps on any torch device, its routes in
:mod:`.parts`."""

from .engine import CACHE_MAX_ANGLES, FusedEngine, fused_maps

__all__ = ["CACHE_MAX_ANGLES", "FusedEngine", "fused_maps"]
