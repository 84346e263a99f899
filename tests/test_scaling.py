"""``qucnn analyze scaling``: the comparison at 4, 6 and 8 qubits per filter, paired by seed, with the gradient
variance measured beside it and the plateau fit's prediction."""

from __future__ import annotations

import json
import math

import pytest
from conftest import SIGMAS

from qucnn.analysis import scaling
from qucnn.analysis.plateau import fit_decay, haar_grad_variance_first
from qucnn.cli import main
from qucnn.datasets import load_embedded_mnist


def test_geometry_gives_the_qubits_asked_for():
    for n, (kernel, stride) in scaling.GEOMETRY.items():
        cfg = scaling.arm_config(scaling.ScalingConfig(), "quantum", n, seed=3)
        assert (cfg.kernel, cfg.stride, cfg.seed) == (kernel, stride, 3) and math.log2(kernel * kernel) == n
        assert (28 - kernel) % stride == 0  # the windows tile the image to its edge
    shots = scaling.arm_config(scaling.ScalingConfig(gradient_shots=100), scaling.SHOTS_ARM, 6, 0)
    assert (shots.kind, shots.gradient, shots.gradient_shots) == ("quantum", "parameter-shift", 100)
    tuned = scaling.ScalingConfig(settings={"frozen": {"lr": 0.03, "schedule": "constant"}})
    assert scaling.arm_config(tuned, "frozen", 4, 0).lr == 0.03 and scaling.arm_config(tuned, "quantum", 4, 0).lr == 0.01
    assert scaling.ScalingConfig(gradient_shots=None).arms == scaling.KINDS
    with pytest.raises(ValueError, match="qubits must be from"):
        scaling.ScalingConfig(qubits=(5,)).validated()


def test_measured_variance_at_the_study_geometry_is_the_haar_value():
    """At depth 3 the filter gradient is as concentrated as for a Haar-random state (docs/plateau.md): the first
    parameter's variance over the study's own patches is 1 / (2 d (d + 1)) within SIGMAS standard errors."""
    images = load_embedded_mnist().train_images[:500]
    for n in (4, 6):
        v = scaling.study_variance(images, n, layers=3, samples=3000, seed=1)
        haar = haar_grad_variance_first(2**n)
        assert abs(v["var_grad_first"] - haar) < SIGMAS * v["var_grad_first_stderr"], (n, v, haar)


def test_prediction_is_the_decay_fit():
    rows = {2: 0.05, 4: 0.004, 6: 3e-4, 8: 2.5e-5}
    fit = fit_decay(list(rows), list(rows.values()))
    plateau = {"fits": [{"depth": 3, "param": "first", **fit}, {"depth": 2, "param": "first", **fit_decay([2, 4], [1, 1])}]}
    got = scaling.predicted_variance(plateau, 6, layers=3)
    assert got == {"var_grad_first": pytest.approx(math.exp(fit["log_intercept"]) * fit["decay_base"] ** -6)}


def test_tiny_study_pairs_by_seed_and_writes_json(tmp_path, capsys):
    args = ["analyze", "scaling", "--qubits", "6,8", "--kinds", "quantum,frozen", "--seeds", "0,1", "--epochs", "1",
            "--limit-train", "64", "--gradient-shots", "10", "--samples", "64", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert set(result["arms"]) == {f"{a}/n{n}" for a in ("quantum", "frozen", "quantum-shots") for n in (6, 8)}
    assert [(d["a"], d["b"]) for d in result["differences"]] == [
        (f"{a}/n{n}", f"{b}/n{n}") for n in (6, 8) for a, b in (("quantum", "frozen"), ("quantum-shots", "frozen"),
                                                               ("quantum", "quantum-shots"))]
    for d in result["differences"]:
        per = [x - y for x, y in zip(result["arms"][d["a"]]["test_accuracy"], result["arms"][d["b"]]["test_accuracy"])]
        assert d["per_seed"] == pytest.approx(per) and d["p_holm"] is not None
    assert [v["qubits"] for v in result["variance"]] == [6, 8]
    assert all(v["snr_first"] == pytest.approx(math.sqrt(2 * 10 * v["var_grad_first"])) for v in result["variance"])
    shots_rows = [r for r in result["rows"] if r["arm"] == "quantum-shots"]
    assert all(r["quantum_cost"]["backward"]["shots"] == 10 * r["quantum_cost"]["backward"]["circuits"] > 0
               for r in shots_rows)
    assert (tmp_path / "scaling.png").stat().st_size > 10_000 and "quantum-shots/n8" in capsys.readouterr().out
    assert main(args) == 0  # a rerun reuses every finished run from scaling.rows.json
    assert json.loads((tmp_path / "scaling.json").read_text())["rows"] == result["rows"]


def test_bad_options_fail_before_training(tmp_path, capsys):
    assert main(["analyze", "scaling", "--qubits", "5", "--out", str(tmp_path)]) == 2
    assert "qubits must be from [4, 6, 8]" in capsys.readouterr().err
    assert main(["analyze", "scaling", "--gradient-shots", "lots", "--out", str(tmp_path)]) == 2
    assert "--gradient-shots: expected an int or 'none'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["analyze", "scaling", "--tuned", str(bad), "--out", str(tmp_path)]) == 2
    assert f"--tuned {bad}: not the metrics.json or tuning.json" in capsys.readouterr().err
