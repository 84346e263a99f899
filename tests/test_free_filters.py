"""The free-filter fidelity layer (the "fidelity-classical" control) and the parameter-matched twin: the map
is |<w/|w| | x>|^2 patch by patch, its gradients are autograd's of that formula, and the kinds have the
parameter counts the docs state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import EXACT

from qucnn.nn.free_filters import FreeFidelity2d
from qucnn.nn.models import MODEL_KINDS, build_model, matched_filters


def per_patch(x: torch.Tensor, states: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """|<f|x>|^2 / |x|^2 for every patch, by an explicit unfold (0 for all-zero patches): ``(B, O, H', W')``."""
    patches = F.unfold(x, kernel, stride=stride).transpose(1, 2)  # (B, L, C*k*k)
    overlap = patches.to(states.dtype) @ states.conj().T  # (B, L, O)
    norm2 = patches.square().sum(-1, keepdim=True)
    fid = torch.where(norm2 > 0, overlap.abs() ** 2 / norm2.clamp(min=1e-300), 0.0)
    side = (x.shape[-1] - kernel) // stride + 1
    return fid.transpose(1, 2).reshape(x.shape[0], -1, side, side)


@pytest.mark.parametrize("channels, kernel, stride", [(1, 4, 1), (2, 3, 2)])
def test_free_fidelity_is_the_normalised_overlap(channels, kernel, stride, gen):
    layer = FreeFidelity2d(channels, 3, kernel, stride, generator=gen).double()
    x = torch.rand(2, channels, 9, 9, generator=gen, dtype=torch.float64)
    x[0, :, :5, :5] = 0  # all-zero patches give 0
    y = layer(x)
    assert y.shape == (2, 3) + layer.output_shape(9, 9)
    assert torch.allclose(y, per_patch(x, layer.states(), kernel, stride), atol=EXACT, rtol=0)
    assert float(y.detach()[0, :, 0, 0].abs().max()) == 0
    norms = torch.linalg.vector_norm(layer.states(), dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=EXACT)


def test_free_fidelity_gradients_are_autograds_of_the_formula(gen):
    layer = FreeFidelity2d(1, 2, 3, generator=gen).double()
    x = torch.rand(2, 1, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 2, 4, 4, generator=gen, dtype=torch.float64)
    ours = torch.autograd.grad((layer(x) * up).sum(), [layer.weight, x])
    ref = torch.autograd.grad((per_patch(x, layer.states(), 3, 1) * up).sum(), [layer.weight, x])
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=EXACT, rtol=0)
    # and finite differences of the layer itself
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(layer, {"weight": w}, (x.detach(),)),
                                    (layer.weight.detach().clone().requires_grad_(True),))


def test_kinds_and_their_parameter_counts():
    counts = {}
    for kind in MODEL_KINDS:
        net = build_model(kind, seed=0)
        assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        counts[kind] = sum(p.numel() for p in net.first.parameters() if p.requires_grad)
    # quantum: 8 filters x 3 layers x 4 qubits x 2 angles; matched: 12 bias-free 4x4 filters; free: 8 x 16 complex
    assert counts == {"quantum": 192, "frozen": 0, "classical": 8 * 17, "fidelity-classical": 8 * 16 * 2,
                      "classical-matched": 192}
    assert matched_filters("classical-matched", 8, 4, 3) == 12 and matched_filters("classical", 8, 4, 3) == 8
    assert matched_filters("classical-matched", 4, 4, 2) == 4  # 4 x 2 x 8 = 64 = 4 x 16
    a, b = build_model("fidelity-classical", seed=0), build_model("fidelity-classical", seed=0)
    assert torch.equal(a.first.weight, b.first.weight)
    assert not torch.equal(a.first.weight, build_model("fidelity-classical", seed=1).first.weight)
