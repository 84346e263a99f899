"""``qucnn reproduce``: one ``all --quick`` run checked for files and statistical invariants, plus
determinism, merging into an existing metrics.json, the Aer option (through a fake hook with the
agreed signature) and argument errors."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXACT, NEAR, SIGMAS

from qucnn import amplitude_encode
from qucnn.cli import main
from qucnn.core.gates import Op, rotation
from qucnn.experiments import common
from qucnn.experiments.backprop import SHOT_COUNTS, data_patch, theoretical_std
from qucnn.experiments.circuits import ansatz_barriers, barrier_columns, count_ops, draw_ops, layout
from qucnn.experiments.common import Config
from qucnn.experiments.learn import learn_state

VOLATILE = ("meta", "last_command", "versions")


def _read(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _stable(section: dict) -> dict:
    """A metrics section without what legitimately changes between identical runs (times, paths)."""
    return {k: v for k, v in section.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    """One ``reproduce all --quick`` run, read-only for the tests. Under pytest-xdist the workers share it: the
    first to get the lock runs it in the run's common temporary folder, the others wait and read it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp("reproduce_all")
        assert main(["reproduce", "all", "--quick", "--out", str(out), "--seed", "0"]) == 0
        return out, _read(out)
    import fcntl  # POSIX; pytest-xdist runs on one machine here

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above each worker's own
    out = shared / "reproduce_all_quick"
    with open(shared / "reproduce_all_quick.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "metrics.json").exists():
            assert main(["reproduce", "all", "--quick", "--out", str(out), "--seed", "0"]) == 0
    return out, _read(out)


# -- files ------------------------------------------------------------------------------------------
def test_all_writes_every_figure_metrics_and_report(quick_run):
    out, metrics = quick_run
    for key in ("forward", "backprop", "state_learning", "circuits"):
        assert key in metrics, key
        assert metrics[key]["meta"]["seed"] == 0 and metrics[key]["meta"]["wall_time_s"] > 0
        for name in metrics[key]["figures"]:
            assert (out / name).stat().st_size > 1000, name
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"fig1_filter_ansatz.png", "fig2_swap_test.png", "fig2_entanglement_backprop.png", "fig3_forward.png",
            "fig4_backprop.png", "fig5_filter_state.png", "fig6_state_learning.png"} <= set(pngs)
    report = (out / "report.md").read_text()
    for heading in ("## V-A Forward pass", "## V-B Backpropagation", "## V-C State learning", "## Circuits",
                    "maximally mixed", "Not run yet"):
        assert (heading in report) == (heading != "Not run yet"), heading
    assert metrics["versions"]["torch"] == torch.__version__
    assert metrics["forward"]["meta"]["data"].startswith("mnist")


# -- experiment 1 -----------------------------------------------------------------------------------
def test_forward_statistics_match_the_binomial(quick_run):
    f = quick_run[1]["forward"]
    assert (f["shots"], f["images"], f["patches_per_image"]) == (10_000, 16, 625)
    n = f["circuits_run"]
    assert 0 < n == f["nonzero_patches"] <= 16 * 625
    # outside 3 sigma: p = 0.27%; allow SIGMAS binomial standard errors (normal approximation of the
    # binomial estimate: still far below the 5% the brief calls the floor)
    p_out = 1 - f["within_3_sigma_expected"]
    assert 0 <= f["within_3_sigma_fraction"] <= 1
    assert 1 - f["within_3_sigma_fraction"] <= p_out + SIGMAS * math.sqrt(p_out * (1 - p_out) / n)
    assert f["within_3_sigma_fraction"] > 0.95
    assert math.isfinite(f["max_sigma_error"]) and f["max_sigma_error"] < 6 and f["infinite_sigma_errors"] == 0
    assert abs(f["mean_sigma_error"]) < SIGMAS / math.sqrt(n)  # unbiased
    assert abs(f["rms_sigma_error"] - 1) < 0.1
    assert f["classical_test_accuracy"] > 0.5


def test_forward_exact_identities(quick_run):
    f = quick_run[1]["forward"]
    assert f["state_prep_error"] < NEAR and f["unitary_error"] < NEAR  # W|0> = f, W unitary
    assert f["circuit_check"]["max_abs_error"] < NEAR and f["circuit_check"]["qubits"] == 9
    corr = f["correlation"]
    assert corr["classical_squared_normalised_vs_exact_fidelity_max_abs_diff"] < NEAR
    assert corr["quantum_vs_classical_squared_normalised"] > max(corr["quantum_vs_classical"],
                                                                 corr["quantum_vs_classical_squared"])
    assert abs(np.linalg.norm(f["filter"]) - 1) < NEAR


# -- experiment 2 -----------------------------------------------------------------------------------
def test_backprop_rows_cover_methods_shots_parameters(quick_run):
    b = quick_run[1]["backprop"]
    rows = b["rows"]
    assert set(rows[0]) >= {"shots", "method", "parameter", "mean", "std", "exact"}
    for method in ("entanglement", "parameter-shift"):
        for shots in SHOT_COUNTS:
            params = sorted(r["parameter"] for r in rows if r["method"] == method and r["shots"] == shots)
            assert params == list(range(24)), (method, shots)
    assert b["delta"] == b["upstream"] == 0.5 and b["scale_c"] == 1.0


def test_backprop_means_are_unbiased_at_the_largest_shot_count(quick_run):
    b = quick_run[1]["backprop"]
    top, repeats = max(SHOT_COUNTS), b["repeats"]
    for r in (r for r in b["rows"] if r["shots"] == top):
        assert abs(r["mean"] - r["exact"]) < SIGMAS * r["std"] / math.sqrt(repeats) + 1e-12, r


def test_backprop_theoretical_std_matches_measured(quick_run):
    b = quick_run[1]["backprop"]
    fp, fm = torch.tensor(b["f_plus"]), torch.tensor(b["f_minus"])
    for shots in SHOT_COUNTS:
        for method in ("entanglement", "parameter-shift", "entanglement-cmax"):
            sel = sorted((r for r in b["rows"] if r["shots"] == shots and r["method"] == method),
                         key=lambda r: r["parameter"])
            theory = theoretical_std(fp, fm, b["upstream"], shots, method)
            assert torch.allclose(torch.tensor([r["theory_std"] for r in sel], dtype=theory.dtype), theory)
            if method == "entanglement":  # c = 1, one output: the variance gap is (1 - g^2) / (2S) exactly
                ps = theoretical_std(fp, fm, b["upstream"], shots, "parameter-shift")
                gap = (1 - b["upstream"] ** 2) / (2 * shots)
                assert torch.allclose(theory**2 - ps**2, torch.full_like(ps, gap), atol=NEAR)
            # measured/theoretical variance per parameter; its mean over the 24 independent parameters
            # is 1 within SIGMAS standard errors (estimated from the spread of the ratios themselves)
            ratio = torch.tensor([(r["std"] / r["theory_std"]) ** 2 for r in sel])
            assert abs(float(ratio.mean()) - 1) < SIGMAS * float(ratio.std()) / math.sqrt(len(ratio)), (shots, method)


def test_backprop_variance_gap_matches_the_closed_form(quick_run):
    # Var(Eq. 17) - Var(post-processed) = c^2 (1 - delta^2) / (2 S) per gradient, whatever the fidelities
    b = quick_run[1]["backprop"]
    assert [e["shots"] for e in b["variance_gap"]] == list(SHOT_COUNTS)
    for e in b["variance_gap"]:
        assert e["formula"] == pytest.approx(b["scale_c"] ** 2 * (1 - b["delta"] ** 2) / (2 * e["shots"]), rel=EXACT)
        assert len(e["per_parameter"]) == 24 and e["se"] > 0
        assert abs(e["measured_mean"] - e["formula"]) < SIGMAS * e["se"], e["shots"]
        assert e["z"] == pytest.approx((e["measured_mean"] - e["formula"]) / e["se"], rel=NEAR)


def test_backprop_exact_gradient_is_the_parameter_shift(quick_run):
    b = quick_run[1]["backprop"]
    shift = b["upstream"] / 2 * (torch.tensor(b["f_plus"]) - torch.tensor(b["f_minus"]))
    assert torch.allclose(shift, torch.tensor(b["exact_gradient"]), atol=NEAR)
    assert b["checks"]["eq15_circuit_error"] < NEAR and b["checks"]["parameter_shift_exact_error"] < NEAR


def test_data_state_choices():
    cfg = Config(data_state="uniform").validated()
    x, _ = data_patch(cfg, torch.device("cpu"))
    assert torch.allclose(amplitude_encode(x.reshape(1, -1)), torch.full((1, 16), 0.25, dtype=torch.float64))
    x, text = data_patch(Config(data_state="mnist").validated(), torch.device("cpu"))
    assert x.shape == (1, 1, 4, 4) and float(x.min()) >= 0 and int((x > 0).sum()) >= 8 and "MNIST" in text


# -- experiment 3 -----------------------------------------------------------------------------------
def test_state_learning_targets_and_their_spread(quick_run):
    s, forward = quick_run[1]["state_learning"], quick_run[1]["forward"]
    assert [t["kind"] for t in s["filters"]] == ["trained", "trained", "random-real", "random-complex"]
    assert [t["seed"] for t in s["filters"][:2]] == [0, 1]
    # the first target is experiment 1's filter; the second an independently trained one
    assert s["filters"][0]["state"]["real"] == forward["filter"] and s["filters"][0]["state"]["imag"] is None
    assert abs(np.dot(s["filters"][1]["state"]["real"], forward["filter"])) < 0.99
    assert np.linalg.norm(np.array(s["filters"][3]["state"]["real"]) + 1j * np.array(s["filters"][3]["state"]["imag"])) \
        == pytest.approx(1, abs=NEAR)
    for t in s["filters"]:
        fid = t["final_fidelity"]
        assert sorted(fid) == ["1", "2", "3"] and all(0 <= v <= 1 + NEAR for v in fid.values())
        assert fid["3"] >= fid["1"] - 0.02
        for key, values in t["all_final_fidelities"].items():
            assert len(values) == s["restarts"] and max(values) == pytest.approx(fid[key])
            assert min(values) <= t["median_final_fidelity"][key] <= fid[key]
    for kind, depths in s["summary"].items():
        for key, q in depths.items():
            values = [t["final_fidelity"][key] for t in s["filters"] if t["kind"] == kind]
            assert (q["min"], q["max"], q["n"]) == (min(values), max(values), len(values))
            assert q["min"] <= q["median"] <= q["max"]


def test_learning_with_shot_based_gradients_improves_fidelity():
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(16, dtype=torch.float64, generator=gen)
    target = target / target.norm()
    history = learn_state(target, layers=2, iterations=60, restarts=2, gen=gen, shots=2000)
    assert history.shape == (61, 2)
    assert float(history[-1].max()) > float(history[0].max()) + 0.2


# -- circuits ---------------------------------------------------------------------------------------
def test_circuit_counts(quick_run):
    c = quick_run[1]["circuits"]
    assert c["filter_ansatz"]["qubits"] == 4 and c["filter_ansatz"]["cnots"] == 12  # 3 layers x ring of 4
    assert c["filter_ansatz"]["gates"] == 3 * (8 + 4)
    assert c["swap_test"]["qubits"] == 9 and c["swap_test"]["cswaps"] == 4
    assert c["entanglement_backprop"]["qubits"] == 10
    assert c["entanglement_backprop"]["cnots"] == c["swap_test"]["cnots"] + 1
    assert c["state_preparation_gates"]["gate_counts"]["RY"] == 15  # 2**n - 1 rotations


def test_circuit_cx_counts_are_those_of_qucnn_circuits(quick_run):
    """One definition of a CX count: `reproduce circuits` transpiles its circuits exactly as `qucnn circuits`
    (qucnn.qiskit.circuit_resources: rz/sx/x/cx, optimisation level 2, seed 0, all-to-all and a line)."""
    from qucnn.experiments.circuits import TRANSPILE, circuit_specs
    from qucnn.qiskit import RESOURCE_BASIS, circuit_resources, ops_to_circuit

    c = quick_run[1]["circuits"]
    assert c["transpile"]["basis"] == RESOURCE_BASIS == TRANSPILE["basis"]
    assert (c["transpile"]["optimization_level"], c["transpile"]["seed"]) == (2, 0)
    specs = {spec["name"]: spec for spec in circuit_specs(Config(out=quick_run[0], quick=True, seed=0))}
    for name in ("filter_ansatz", "swap_test", "entanglement_backprop"):
        res = circuit_resources(ops_to_circuit(specs[name]["ops"], specs[name]["qubits"]))
        assert (c[name]["cx_all_to_all"], c[name]["cx_line"]) == (res["cx_all_to_all"], res["cx"]), name
    assert c["filter_ansatz"]["cx_all_to_all"] == 12  # the ring's 12 CNOTs, nothing to add
    # the SWAP test's CSWAPs and the data register's unitary become many CX: far more than the 12 drawn
    assert c["swap_test"]["cx_all_to_all"] > c["swap_test"]["cnots"] + 4 * 6
    assert c["swap_test"]["cx_line"] >= c["swap_test"]["cx_all_to_all"]
    report = (quick_run[0] / "report.md").read_text()
    assert "| CX, all-to-all | CX, on a line |" in report and "optimisation level 2, seed 0" in report


def test_the_report_names_its_version_and_no_machine_path_and_escapes_bra_kets(quick_run):
    import qucnn

    out, metrics = quick_run
    report = (out / "report.md").read_text()
    assert metrics["versions"]["qucnn"] == qucnn.__version__ and f"qucnn {qucnn.__version__}," in report
    assert str(out) not in report and str(out.parent) not in report
    assert f"--out {out.name} " in report  # the folder by its name
    prose = re.sub(r"`[^`\n]*`", "", report)  # outside code spans no "<" starts what a renderer takes for a tag
    assert re.findall(r"<[A-Za-z/!?]", prose) == []
    assert "\\|&lt;f\\|x>\\|^2" in report and "`<Z_a> = delta F`" in report


def test_own_drawer_and_layout(tmp_path):
    ops = [rotation("RX", 0, 0.3), Op("CNOT", (0, 2)), rotation("RZ", 1, 1.0),
           Op("UNITARY", (1, 2), torch.eye(4, dtype=torch.complex128)[None]), Op("CSWAP", (0, 1, 2)), Op("H", (0,))]
    # the CNOT's line crosses wire 1, so the RZ on wire 1 goes after it; the H waits for the CSWAP
    assert layout(ops) == [0, 1, 2, 3, 4, 5]
    assert layout(ops[:1] + [rotation("RZ", 1, 1.0), Op("H", (0,))]) == [0, 0, 1]
    assert count_ops(ops, 3)["depth"] == 6
    # a barrier before op 1 keeps the RZ on wire 1 from sliding left of the RX on wire 0
    assert layout(ops[:1] + [rotation("RZ", 1, 1.0)], barriers=[1]) == [0, 1]
    assert barrier_columns(ops[:1] + [rotation("RZ", 1, 1.0)], [1]) == [0.5]
    assert ansatz_barriers(4, 3) == [12, 24, 36] and ansatz_barriers(1, 2) == [2, 4]
    name = draw_ops(ops, 3, tmp_path / "c.png", "test", ["a", "b", "c"], ["U"], measured=[0], barriers=[2])
    assert name == "c.png" and (tmp_path / "c.png").stat().st_size > 1000


# -- determinism and merging -------------------------------------------------------------------------
def test_same_seed_same_numbers_and_same_as_inside_all(quick_run, tmp_path):
    # two runs with the same seed: this one, alone, and the fixture's 'all' (under pytest-xdist often made by
    # another process): the same numbers
    assert main(["reproduce", "backprop", "--quick", "--out", str(tmp_path)]) == 0
    assert _stable(_read(tmp_path)["backprop"]) == _stable(quick_run[1]["backprop"])


def test_single_experiment_merges_into_existing_metrics(quick_run, tmp_path):
    shutil.copy(quick_run[0] / "metrics.json", tmp_path / "metrics.json")
    assert main(["reproduce", "backprop", "--quick", "--seed", "7", "--out", str(tmp_path)]) == 0
    merged, before = _read(tmp_path), quick_run[1]
    for key in ("forward", "state_learning", "circuits"):
        assert merged[key] == before[key], key
    assert merged["backprop"]["meta"]["seed"] == 7 and merged["backprop"]["theta"] != before["backprop"]["theta"]
    report = (tmp_path / "report.md").read_text()
    assert "## V-A Forward pass" in report and "seed 7" in report and "seed 0" in report


def _fake_sample_swap_tests(data, filters, shots, upstream=None, noise_model=None, seed=None):
    """The agreed hook's signature: binomial draws from the exact delta * F (what noiseless Aer gives)."""
    calls.append({"rows": data.shape[0], "seed": seed, "upstream": upstream is not None})
    x = amplitude_encode(torch.as_tensor(data, dtype=torch.float64))
    f = torch.as_tensor(filters)
    f = f / torch.linalg.vector_norm(f, dim=-1, keepdim=True)
    overlap = (f.conj() * x.to(f.dtype)).sum(-1)
    fid = (overlap.abs() ** 2).real if overlap.is_complex() else overlap**2
    expect = fid * (1 if upstream is None else torch.as_tensor(upstream, dtype=torch.float64))
    rng = np.random.default_rng(seed)
    n0 = rng.binomial(shots, ((1 + expect.numpy()) / 2).clip(0, 1))
    return torch.where(x.abs().sum(-1) > 0, torch.as_tensor(2 * n0 / shots - 1), 0.0)


calls: list[dict] = []


def test_aer_backend_goes_through_the_hook_and_keeps_torch_results(quick_run, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "aer_hook", lambda: _fake_sample_swap_tests)
    calls.clear()
    shutil.copy(quick_run[0] / "metrics.json", tmp_path / "metrics.json")
    assert main(["reproduce", "backprop", "--quick", "--backend", "aer", "--out", str(tmp_path)]) == 0
    merged = _read(tmp_path)
    assert merged["backprop"] == quick_run[1]["backprop"]  # the torch results stay
    aer = merged["backprop_aer"]
    assert aer["meta"]["backend"] == "aer" and {c["upstream"] for c in calls} == {True, False}
    assert len({c["seed"] for c in calls}) == len(calls)  # every call its own seed
    top = max(aer["shot_counts"])
    for r in (r for r in aer["rows"] if r["shots"] == top):
        assert abs(r["mean"] - r["exact"]) < SIGMAS * r["theory_std"] / math.sqrt(aer["repeats"]) + 1e-12
    assert aer["figures"] == ["fig4_backprop_aer.png"] and (tmp_path / "fig4_backprop_aer.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert "Qiskit Aer" in report and "fig4_backprop_aer.png" in report


def test_report_calls_only_the_torch_backprop_a_sampler_check(quick_run):
    """The torch run draws shots from exact expectations (a consistency check); a circuit run alone, under the
    Aer key, is reported as the validation, not as a check of the sampler."""
    from qucnn.experiments.report import build_report
    torch_only = build_report(quick_run[1])
    assert "*torch, binomial shot draws*: a consistency check of our sampler" in torch_only
    aer_only = {k: v for k, v in quick_run[1].items() if k != "backprop"} | {"backprop_aer": quick_run[1]["backprop"]}
    section = build_report(aer_only).split("## V-B Backpropagation")[1].split("\n## ")[0]
    assert "*Qiskit Aer*: the validation" in section and "check of our sampler" not in section



@pytest.mark.parametrize("scale, says", [(1.0, "too few to resolve"), (100.0, "more than shot noise explains")])
def test_noisy_backprop_verdict_follows_its_largest_deviation(quick_run, scale, says):
    """A noisy Aer run is called unresolved only while its largest deviation is under 5 standard errors; a larger
    one is reported as the noise's bias reaching the gradients."""
    import copy

    from qucnn.experiments.report import build_report
    noisy = copy.deepcopy(quick_run[1]["backprop"])
    for row in noisy["summary"]:
        row["max_abs_error_in_se"] = min(row["max_abs_error_in_se"], 4.0) * scale
    metrics = {k: v for k, v in quick_run[1].items() if k != "backprop"} | {"backprop_aer_noise": noisy}
    section = build_report(metrics).split("## V-B Backpropagation")[1].split("\n## ")[0]
    assert "*Qiskit Aer + noise model*: the largest deviation" in section and says in section

# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["nonsense"], "unknown experiment 'nonsense'"),
    (["backprop", "--upstream", "1.5"], "--upstream must be a number in [-1, 1]"),
    (["backprop", "--upstream", "nan"], "--upstream must be a number in [-1, 1]"),
    (["forward", "--data", "/no/such/dir"], "--data: directory not found: /no/such/dir"),
    (["forward", "--device", "cuda"], "CUDA is not available"),
    (["forward", "--device", "tpu"], "--device must be cpu or cuda"),
    (["backprop", "--data-state", "mixed"], "--data-state must be one of"),
    (["backprop", "--backend", "braket"], "--backend must be one of"),
    (["backprop", "--noise"], "--noise needs --backend aer"),
    (["learn", "--learn-shots", "0"], "--learn-shots must be a positive int"),
    (["backprop", "--seed", "-1"], "--seed must be a non-negative int"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["reproduce"] + args + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()  # nothing ran


@pytest.mark.slow
def test_real_aer_quick(tmp_path):
    assert main(["reproduce", "forward", "--quick", "--backend", "aer", "--out", str(tmp_path)]) == 0
    f = _read(tmp_path)["forward_aer"]
    assert f["max_sigma_error"] < 6 and f["within_3_sigma_fraction"] > 0.95


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_data_option_loads_an_idx_folder(tmp_path):
    from qucnn.datasets import load_embedded_mnist

    data = load_embedded_mnist()
    folder = tmp_path / "tiny-mnist"
    folder.mkdir()
    _write_idx(folder / "images-idx3-ubyte", (data.train_images[:200, 0] * 255).round().numpy())
    _write_idx(folder / "labels-idx1-ubyte", data.train_labels[:200].numpy())
    out = tmp_path / "out"
    assert main(["reproduce", "forward", "--quick", "--data", str(folder), "--out", str(out)]) == 0
    f = _read(out)["forward"]
    assert f["meta"]["data"] == "tiny-mnist" and f["classical"]["train_images"] == 160
    assert f["images"] == 16 and f["within_3_sigma_fraction"] > 0.95
