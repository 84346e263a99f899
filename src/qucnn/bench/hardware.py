"""Workload W5 of ``qucnn bench``: the quantum work of one training step of the ``qucnn analyze hardware`` task
(MNIST 0 vs 1 pooled to 8x8 and binarised, 2 filters 2x2 stride 2 of 2 ansatz layers: 5-qubit SWAP tests), with
every circuit run by Qiskit Aer's ``SamplerV2`` at the same shots: the forward ``F`` of every patch and filter,
and the parameter-shift gradient of ``sum(g * F)`` for a fixed upstream ``g``.

- ``qucnn-aer``: ``QuConv2d(backend=QiskitBackend())``: one template per structure, bound per batch, identical
  circuits run once with their shots split;
- ``qiskit-ml``: the obvious Qiskit Machine Learning build: one ``SamplerQNN`` (patch angles as inputs, filter
  angles as weights, the same transpiled circuit) per filter, wrapped in ``TorchConnector``, on the non-zero
  patches; its default ``ParamShiftSamplerGradient``;
- ``qucnn-pennylane``: ``QuConv2d(backend=PennyLaneBackend("lightning.qubit"))``.

Two variants: the task's binarised images (many identical patches, which qucnn runs once with their shots
split), and ``grey``: the pooled images before binarising (no two patches alike). Every row checks its estimates against the exact ones: the largest error in standard errors of the forward values
and of the gradient (binomial variances from the exact fidelities).
"""

from __future__ import annotations

import torch

from ..backends import Filters, PennyLaneBackend, QiskitBackend, get_backend
from ..backends.circuit_backend import CircuitRows
from ..core.encoding import amplitude_encode, mottonen_ops
from ..core.geometry import ConvSpec, unfold_patches
from ..core.swap_test import data_wires
from ..datasets import load_embedded_mnist
from ..core.windows import valid_patches
from ..nn.gradients import shifted_thetas
from ..nn.layer import QuConv2d
from .runner import Case, skipped

SEED = 0
DESCRIPTION = ("one training step's circuits of the hardware task (forward + parameter-shift gradient, "
               "{images} images, {shots} shots per circuit, 5-qubit SWAP tests) through Qiskit Aer / lightning.qubit")
REFERENCE = "qiskit-ml"


def _images(count: int, binary: bool) -> torch.Tensor:
    data = load_embedded_mnist()
    keep = (data.train_labels == 0) | (data.train_labels == 1)
    x = torch.nn.functional.adaptive_avg_pool2d(data.train_images[keep][:count].double(), 8)
    return (x > 0.4).double() if binary else x


def _exact(layer: QuConv2d, x: torch.Tensor, g: torch.Tensor, shots: int) -> tuple[torch.Tensor, ...]:
    """Exact F, exact gradient, and the binomial variances of S-shot forward and parameter-shift estimates."""
    exact = QuConv2d(1, layer.out_channels, 2, stride=2, layers=layer.layers).double()
    exact.load_state_dict(layer.state_dict())
    f = exact(x)
    (f * g).sum().backward()
    states = exact.ansatz.state(shifted_thetas(exact.theta.detach())[0])
    spec = ConvSpec.make(2, 2)
    fid = get_backend("torch").maps(x, states.reshape(-1, states.shape[-1]), spec)[0]
    fid = fid.reshape(2, -1, *f.shape)  # (2, P, B, O, H', W')
    valid = valid_patches(x, spec)
    var = (g**2 / 4 * (2 - fid[0] ** 2 - fid[1] ** 2) / shots * valid).sum((1, 3, 4)).T  # (O, P)
    return f.detach(), exact.theta.grad.reshape(var.shape), (1 - f.detach() ** 2) / shots, var


def _sigmas(estimate: torch.Tensor, exact: torch.Tensor, var: torch.Tensor) -> float:
    sd = var.double().sqrt()
    keep = sd > 0
    return float(((estimate.double() - exact.double()).abs()[keep] / sd[keep]).max())


def _layer_step(layer: QuConv2d, x: torch.Tensor, g: torch.Tensor):
    def call():
        layer.zero_grad()
        out = layer(x)
        (out * g).sum().backward()
        return out.detach(), layer.theta.grad.detach().reshape(layer.out_channels, -1)
    return call


def _qiskit_ml(layer: QuConv2d, x: torch.Tensor, g: torch.Tensor, shots: int):
    """One SamplerQNN + TorchConnector per filter on the non-zero patches (what a Qiskit ML user would write), on
    the same transpiled circuit, the patch's Mottonen angles as inputs."""
    from qiskit import ClassicalRegister
    from qiskit_aer.primitives import SamplerV2
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import SamplerQNN

    from ..qiskit.circuits import ops_to_template, ops_values, overlap_ops
    from ..qiskit.sampling import SamplerRunner

    spec = ConvSpec.make(2, 2)
    patches = unfold_patches(x, spec).reshape(-1, 4)  # (B * H'W', 4)
    rows = patches.abs().sum(1) > 0
    theta = layer.theta.detach().double()
    probe = CircuitRows.build(patches[rows][:1], Filters(theta=theta[:1]))
    ops = probe.preparation_ops() + overlap_ops(2, None, "cswap")
    circuit, _ = ops_to_template(ops, 5)
    circuit.add_register(ClassicalRegister(1, "meas"))  # Qiskit ML's gradients read the register "meas" (or "c")
    circuit.measure(0, 0)
    params = list(circuit.parameters)  # t[0..2]: Mottonen angles of the patch, t[3..10]: the filter
    runner = SamplerRunner(seed_transpiler=0)
    isa = runner.pass_manager.run(circuit)
    n_data = 3
    inputs = torch.from_numpy(ops_values(mottonen_ops(amplitude_encode(patches[rows]), data_wires(2))))
    assert inputs.shape[1] == n_data
    sampler = SamplerV2(default_shots=shots, seed=SEED, options={"backend_options": {"max_parallel_threads": 1}})
    connectors = []
    for o in range(theta.shape[0]):
        qnn = SamplerQNN(circuit=isa, sampler=sampler, input_params=params[:n_data], weight_params=params[n_data:],
                         interpret=lambda bits: bits & 1, output_shape=2)
        connectors.append(TorchConnector(qnn, initial_weights=theta[o].reshape(-1).numpy().copy()))
    b, o_, ho, wo = g.shape
    g_rows = g.permute(0, 2, 3, 1).reshape(-1, o_)[rows]

    def call():
        outs, grads = [], []
        for o, conn in enumerate(connectors):
            conn.zero_grad()
            probs = conn(inputs)  # (N, 2): P(a=0), P(a=1)
            f = probs[:, 0] - probs[:, 1]
            (f * g_rows[:, o]).sum().backward()
            outs.append(f.detach())
            grads.append(conn.weight.grad.detach().clone())
        full = torch.zeros(len(rows), o_, dtype=torch.float64)
        full[rows] = torch.stack(outs, 1).double()
        return full.reshape(b, ho, wo, o_).permute(0, 3, 1, 2), torch.stack(grads).double()
    return call


def cases(images: int, shots: int, missing) -> tuple[list[Case], list[dict]]:
    """The W5 cases and the skipped rows of missing peers (``missing(name)``: why a peer is missing, or None)."""
    x = _images(images, binary=True)
    grey = _images(images, binary=False)
    g = torch.randn(images, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(SEED))
    out, rows = [], []

    def layer(backend):
        return QuConv2d(1, 2, 2, stride=2, layers=2, shots=shots, gradient="parameter-shift", gradient_shots=shots,
                        backend=backend, generator=torch.Generator().manual_seed(SEED)).double()

    def check_for(lay, data):
        f, grad, var_f, var_g = _exact(lay, data, g, shots)
        return lambda res: {"forward_max_sigmas": _sigmas(res[0], f, var_f),
                            "gradient_max_sigmas": _sigmas(res[1], grad, var_g)}

    for variant, data in (("binarised", x), ("grey", grey)):
        extra = {"variant": variant}
        count = int(valid_patches(data, ConvSpec.make(2, 2)).sum()) * 2 * 17  # forward + 16 shifts per (patch, filter)
        lay = layer(QiskitBackend(seed=SEED))
        out.append(Case("qucnn-aer", _layer_step(lay, data, g), images, "images",
                        f"QiskitBackend (Aer SamplerV2), {count} circuits"
                        + (", identical ones bound once" if variant == "binarised" else ", none alike"),
                        check=check_for(lay, data), extra=extra))
        why = missing("qiskit_machine_learning")
        if why is None:
            lay = layer("torch")
            out.append(Case("qiskit-ml", _qiskit_ml(lay, data, g, shots), images, "images",
                            f"SamplerQNN + TorchConnector per filter, Aer SamplerV2, ParamShiftSamplerGradient "
                            f"({count} circuits)", check=check_for(lay, data), peer=True, extra=extra))
        else:
            rows.append({**skipped("w5", "qiskit-ml", why), **extra})
        why = missing("pennylane")
        if why is None:
            lay = layer(PennyLaneBackend("lightning.qubit", seed=SEED))
            out.append(Case("qucnn-pennylane", _layer_step(lay, data, g), images, "images",
                            "PennyLaneBackend('lightning.qubit'), broadcast QNode", check=check_for(lay, data),
                            extra=extra))
        else:
            rows.append({**skipped("w5", "qucnn-pennylane", why), **extra})
    return out, rows


__all__ = ["DESCRIPTION", "REFERENCE", "cases"]
