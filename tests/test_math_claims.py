"""Claims of docs/math.md about Eq. 17 that the other tests do not cover: the entanglement circuit is a
SWAP test followed by a classical random sign, and its variance exceeds the post-processed product's by
exactly c^2 (1 - delta^2) / S per circuit."""

from __future__ import annotations

import pytest
import torch
from conftest import EXACT, random_state

from qucnn.core.simulator import probabilities
from qucnn.core.swap_test import backprop_ancilla, swap_test, swap_test_circuit_state
from qucnn.experiments.backprop import theoretical_std


@pytest.mark.parametrize("delta", [-0.7, 0.0, 0.35, 1.0])
def test_entanglement_circuit_is_a_swap_test_times_an_independent_random_sign(delta, gen):
    n = 2
    x, f = random_state(2**n, 4, gen, complex_=False), random_state(2**n, 4, gen)
    joint = probabilities(swap_test_circuit_state(x, f, upstream=delta), (0, backprop_ancilla(n)))  # (B, 4): (a, b)
    p_swap0 = (1 + swap_test(f, x)) / 2  # the plain SWAP test's P(a = 0)
    p_b = torch.tensor([(1 + delta) / 2, (1 - delta) / 2], dtype=torch.float64)  # b's bit, independent
    for a in (0, 1):
        for b in (0, 1):
            # measuring b first: a's final bit is the plain SWAP-test bit XOR b
            swap_bit = a ^ b
            expected = p_b[b] * (p_swap0 if swap_bit == 0 else 1 - p_swap0)
            assert torch.allclose(joint[:, 2 * a + b], expected, atol=EXACT), (a, b)


@pytest.mark.parametrize("g", [-0.9, 0.2, 0.5])
def test_eq17_variance_gap_is_c2_one_minus_delta2_whatever_the_fidelity(g, gen):
    # theoretical_std uses c = 1 for "entanglement": per gradient the gap is (1 - g^2) / (2 S)
    f_plus, f_minus = torch.rand(50, generator=gen, dtype=torch.float64), torch.rand(50, generator=gen,
                                                                                       dtype=torch.float64)
    for shots in (1, 10, 1000):
        ent = theoretical_std(f_plus, f_minus, g, shots, "entanglement") ** 2
        post = theoretical_std(f_plus, f_minus, g, shots, "parameter-shift") ** 2
        assert torch.allclose(ent - post, torch.full_like(ent, (1 - g**2) / (2 * shots)), atol=EXACT)
        cmax = theoretical_std(f_plus, f_minus, g, shots, "entanglement-cmax") ** 2  # c = |g|: delta = +-1
        assert torch.allclose(cmax, post, atol=EXACT)
