"""Every registered backend against the shipped conformance suite (:func:`qucnn.testing.check_backend`), as quimb
holds all its simulators to one test; a backend written from outside in one method; the suite's own power to
fail; the registry; what backends report.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from conftest import EXACT

from qucnn import QuConv2d
from qucnn.backends import (
    Backend,
    CircuitBackend,
    Filters,
    ReferenceBackend,
    Result,
    SimulatorBackend,
    TorchBackend,
    available_backends,
    forget_instances,
    get_backend,
    register_backend,
    registered_backends,
    unregister_backend,
)
from qucnn.backends.fused import FusedEngine
from qucnn.core.geometry import ConvSpec, unfold_encoded
from qucnn.functional import quconv2d
from qucnn.testing import CHECKS, check_backend

BACKENDS = available_backends()
EXACT_BACKENDS = [name for name in BACKENDS if get_backend(name).exact]
CIRCUIT_BACKENDS = [name for name in BACKENDS if not get_backend(name).exact]


@pytest.mark.parametrize("name", EXACT_BACKENDS)
def test_every_exact_backend_passes_the_conformance_suite(name):
    check_backend(name)


@pytest.mark.parametrize("name", CIRCUIT_BACKENDS)
def test_every_circuit_backend_passes_the_suite_for_shots(name):
    check_backend(name, exact=False, checks=("shots", "cost", "gradient-modes"))


# -- a backend written from outside, in one file and one method ------------------------------------------------
class _Counted(torch.autograd.Function):
    """Identity whose backward counts its calls: proves that a backend's own maps run in the backward."""

    calls = backward_calls = 0

    @staticmethod
    def forward(ctx, t):
        _Counted.calls += 1
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        _Counted.backward_calls += 1
        return g


class Outside(SimulatorBackend):
    """The maps by explicit unfolding: what a third-party author writes (and nothing else)."""

    name = "outside"

    def __init__(self, error: float = 0.0) -> None:
        self.error = error

    def maps(self, x, states, spec):
        patches = unfold_encoded(x.to(states.real.dtype), spec, states.shape[-1])  # (B, L, d)
        overlap = _Counted.apply(patches.to(states.dtype) @ states.conj().T)
        fid = (overlap.real**2 + overlap.imag**2).transpose(1, 2) * (1 + self.error)
        ho, wo = spec.output_size(*x.shape[-2:])
        valid = patches.abs().sum(-1) > 0
        return fid.unflatten(2, (ho, wo)).to(x.dtype), valid.view(-1, 1, ho, wo)


@pytest.fixture
def outside():
    register_backend("outside-test", Outside)
    yield get_backend("outside-test")
    unregister_backend("outside-test")


def _run(backend, gradient, x, seed=0):
    layer = QuConv2d(2, 3, (2, 3), stride=(2, 1), padding=1, padding_mode="reflect", layers=2, backend=backend,
                     gradient=gradient, generator=torch.Generator().manual_seed(seed)).double()
    if gradient == "sampled":
        layer.gradient_budget = 300
    xr = x.clone().requires_grad_(True)
    out = layer(xr)
    forward = layer.last_cost["forward"]
    out.backward(torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    return out.detach(), xr.grad, layer.theta.grad, forward


def test_a_backend_of_one_method_equals_torch_in_every_mode(outside, monkeypatch):
    x = torch.rand(2, 2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x[0, :, :4, :4] = 0
    for gradient in ("autograd", "parameter-shift", "entanglement", "sampled"):
        want = _run("torch", gradient, x)
        calls_before = _Counted.calls, _Counted.backward_calls

        def refuse(*args, **kwargs):
            raise AssertionError("the torch engines ran for the outside backend")

        with monkeypatch.context() as patched:  # torch's engines must not run behind the backend's back
            patched.setattr(FusedEngine, "maps", refuse)
            patched.setattr(ReferenceBackend, "maps", refuse)
            got = _run("outside-test", gradient, x)
        for a, b in zip(want[:3], got[:3]):
            assert (a - b).abs().max() <= 1e-12
        valid = int((F.avg_pool2d(F.pad(x.abs().sum(1, keepdim=True), (1, 1, 1, 1), mode="reflect"), (2, 3), (2, 1))
                     > 0).sum())
        assert got[3].circuits == 3 * valid and got[3] == want[3]  # counted by the layer, not the backend
        assert _Counted.calls > calls_before[0]  # its own maps ran (the sampled circuits too)
        if gradient == "autograd":
            assert _Counted.backward_calls > calls_before[1]  # its own maps' backward ran
    check_backend(outside)


def test_the_suite_fails_a_backend_one_percent_off():
    with pytest.raises(AssertionError, match="forward, geometry 0"):
        check_backend(Outside(error=0.01), checks=("forward",))


class WrongBackward(Outside):
    """Right maps, wrong gradient: the backward of the overlap is doubled."""

    def maps(self, x, states, spec):
        fid, valid = super().maps(x, states, spec)
        return fid + (fid - fid.detach()), valid  # same values, twice the gradient


def test_the_suite_fails_a_backend_with_a_wrong_backward():
    with pytest.raises(AssertionError) as caught:
        check_backend(WrongBackward(), checks=("forward", "autograd"))
    message = str(caught.value)
    assert "autograd dx" in message and "gradcheck" in message and "forward" not in message.split("check(s):")[1]


def test_the_suite_refuses_what_it_cannot_check():
    with pytest.raises(ValueError, match="unknown checks"):
        check_backend("torch", checks=("speed",))
    assert set(CHECKS) == {"forward", "autograd", "gradient-modes", "shots", "cost"}


class BadReturns(Outside):
    def maps(self, x, states, spec):
        return super().maps(x, states, spec)[0]  # F alone, not (F, valid)


def test_a_wrong_return_type_names_the_backend_and_the_method():
    with pytest.raises(TypeError, match=r"backend 'outside' \(BadReturns\)\.maps returned Tensor"):
        QuConv2d(1, 2, 2, layers=1, backend=BadReturns())(torch.rand(1, 1, 4, 4))

    class FloatValid(Outside):
        def maps(self, x, states, spec):
            fid, valid = super().maps(x, states, spec)
            return fid, valid.to(fid.dtype)  # a float mask, not a bool one

    class SingleF(Outside):
        def maps(self, x, states, spec):
            fid, valid = super().maps(x, states, spec)
            return fid.float(), valid  # float32 for a float64 input

    with pytest.raises(TypeError, match=r"\(FloatValid\)\.maps returned F torch.float32 and valid torch.float32, "
                                        r"expected torch.float32 \(x's dtype\) and torch.bool"):
        QuConv2d(1, 2, 2, layers=1, backend=FloatValid())(torch.rand(1, 1, 4, 4))
    with pytest.raises(TypeError, match=r"\(SingleF\)\.maps returned F torch.float32 and valid torch.bool, "
                                        r"expected torch.float64"):
        QuConv2d(1, 2, 2, layers=1, backend=SingleF()).double()(torch.rand(1, 1, 4, 4, dtype=torch.float64))

    class NoStates(Outside):
        def filter_states(self, theta):
            return None

    with pytest.raises(TypeError, match=r"\(NoStates\)\.filter_states returned NoneType"):
        QuConv2d(1, 2, 2, layers=1, backend=NoStates())(torch.rand(1, 1, 4, 4))

    class NoResult(Outside):
        def expectations(self, *args, **kwargs):
            return super().expectations(*args, **kwargs).values

    with torch.no_grad(), pytest.raises(TypeError, match=r"\(NoResult\)\.expectations returned Tensor, expected a "
                                                    r"qucnn.backends.Result"):
        QuConv2d(1, 2, 2, layers=1, backend=NoResult(), shots=10)(torch.rand(1, 1, 4, 4))


def test_a_backend_must_say_whether_it_is_exact():
    class Silent(Backend):
        name = "silent"

        def expectations(self, *args, **kwargs):
            raise NotImplementedError

        def circuit_expectations(self, *args, **kwargs):
            raise NotImplementedError

    with pytest.raises(TypeError, match="exact"):
        Silent()

    class Said(Silent):
        exact = False

    assert Said().exact is False


# -- the registry ----------------------------------------------------------------------------------------
def test_registry_lists_adds_options_and_forgets():
    assert BACKENDS[:2] == ["torch", "reference"]
    assert isinstance(get_backend("torch"), TorchBackend) and isinstance(get_backend("reference"), ReferenceBackend)
    assert get_backend("torch") is get_backend("torch")
    own = TorchBackend()
    assert get_backend(own) is own
    with pytest.raises(ValueError, match="unknown backend 'nope'; registered: torch, reference, triton, aer, pennylane"):
        get_backend("nope")
    with pytest.raises(ValueError, match="unknown backend"):
        QuConv2d(1, 2, 2, backend="nope")
    with pytest.raises(TypeError, match="backend must be a name or a qucnn.backends.Backend"):
        get_backend(3)
    with pytest.raises(ValueError, match="apply to a backend name"):
        get_backend(own, policy=None)
    register_backend("outside-test", Outside)
    try:
        assert "outside-test" in available_backends()
        with pytest.raises(ValueError, match="registered already"):
            register_backend("outside-test", Outside)
        with_options = get_backend("outside-test", error=0.5)
        assert with_options.error == 0.5 and with_options is not get_backend("outside-test")
        assert get_backend("outside-test").error == 0.0
        first = get_backend("outside-test")
        forget_instances()  # a new instance on the next call; the registration stays
        assert get_backend("outside-test") is not first and "outside-test" in available_backends()
        register_backend("hidden-test", Outside, available=lambda: False)
        assert "hidden-test" not in available_backends() and "hidden-test" in registered_backends()
        register_backend("broken-test", lambda: "not a backend")
        with pytest.raises(TypeError, match="returned str, not a Backend"):
            get_backend("broken-test")
    finally:
        for name in ("outside-test", "hidden-test", "broken-test"):
            unregister_backend(name)
    assert not {"outside-test", "hidden-test", "broken-test"} & set(registered_backends())
    with pytest.raises(ValueError, match="no backend called 'outside-test'"):
        unregister_backend("outside-test")


def test_filters_and_results_hold_what_they_promise():
    theta = torch.zeros(2, 3, 1, 2, 2)
    f = Filters(theta=theta)
    assert f.shape == (2, 3) and f.n_qubits == 2 and f.flatten().theta.shape == (6, 1, 2, 2)
    assert f.take(torch.tensor([4])).theta.shape == (1, 1, 2, 2)
    assert Filters(states=torch.zeros(5, 8)).n_qubits == 3
    with pytest.raises(ValueError, match="needs theta"):
        Filters()
    with pytest.raises(ValueError, match="different numbers of filters"):
        Filters(theta=theta, states=torch.zeros(5, 4))
    assert Result(torch.zeros(1)).extras == {}


@pytest.mark.parametrize("name", ["torch", "reference", "outside-test"])
def test_the_circuit_request_agrees_with_the_dense_one(name, outside):
    """The sampled estimator's individual circuits: the closed form of the torch engines, and, for a backend of
    one method, its own maps run one distinct filter at a time."""
    layer = QuConv2d(1, 2, 2, layers=1, generator=torch.Generator().manual_seed(0)).double()
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[0, :, :3, :3] = 0
    backend = get_backend(name)
    dense = backend.expectations(x, Filters(theta=layer.theta.detach()[None]), ConvSpec.make(2))
    patches = F.unfold(x, 2).transpose(1, 2).reshape(-1, 4)  # (B*16, 4), row-major positions
    rows = backend.circuit_expectations(patches.repeat_interleave(2, 0),
                                        Filters(theta=layer.theta.detach().repeat(32, 1, 1, 1)))
    assert torch.allclose(rows.values.reshape(2, 4, 4, 2).permute(0, 3, 1, 2), dense.values[0], atol=EXACT)
    assert int((dense.values[0] == 0).sum()) == 2 * 4  # the 4 all-zero patches of image 0, both filters



def test_the_sampled_circuits_of_a_backend_of_one_method_are_its_own_maps():
    """No closed form behind the backend's back: maps 1.5x off give circuits 1.5x off (and one call per distinct
    filter state, not per circuit)."""
    patches = torch.rand(40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    patches[5] = 0
    theta = torch.rand(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    filters = Filters(theta=theta.repeat(10, 1, 1, 1))
    calls = _Counted.calls
    off = Outside(error=0.5).circuit_expectations(patches, filters).values
    assert _Counted.calls - calls == 4
    exact = get_backend("torch").circuit_expectations(patches, filters).values
    assert off[5] == 0 and exact[5] == 0 and torch.allclose(off, 1.5 * exact, rtol=1e-12, atol=0)

def test_functional_equals_the_layer_exactly():
    layer = QuConv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0), layers=2,
                     generator=torch.Generator().manual_seed(0)).double()
    x = torch.rand(2, 2, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theta = layer.theta.detach().clone().requires_grad_(True)
    for x_grad in (False, True):  # the patch-matrix and the convolution route
        xa, xb = x.clone().requires_grad_(x_grad), x.clone().requires_grad_(x_grad)
        by_function = quconv2d(xa, theta, (2, 3), (2, 1), (1, 0), layers=2)
        by_layer = layer(xb)
        assert torch.equal(by_function, by_layer)
        theta.grad = None
        layer.zero_grad()
        by_function.sum().backward()
        by_layer.sum().backward()
        assert torch.equal(theta.grad, layer.theta.grad)
        assert not x_grad or torch.equal(xa.grad, xb.grad)


@pytest.mark.parametrize("name", BACKENDS)
def test_empty_and_unbatched_inputs(name):
    shots = None if get_backend(name).exact else 100
    layer = QuConv2d(1, 3, 2, layers=1, shots=shots, backend=name).double()
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert layer(x[:0]).shape == (0, 3, 4, 4)
    assert layer(x[1]).shape == (3, 4, 4)


def test_layers_with_a_simulator_backend_object_copy_and_pickle():
    layer = QuConv2d(1, 2, 2, layers=1, backend=TorchBackend(), generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = layer(x)  # fills the engine's filter-state cache (weak references)
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert isinstance(clone.backend, TorchBackend) and torch.equal(clone(x), expected)


def test_circuit_backends_are_circuit_backends():
    for name in CIRCUIT_BACKENDS:
        assert isinstance(get_backend(name), CircuitBackend)
    assert not issubclass(TorchBackend, CircuitBackend) and issubclass(TorchBackend, SimulatorBackend)
