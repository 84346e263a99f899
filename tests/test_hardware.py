"""``qucnn analyze hardware --quick``: the four settings train with every circuit on their backend and the JSON
has the promised schema and sane numbers."""

from __future__ import annotations

import json

import pytest

from qucnn.analysis import hardware
from qucnn.cli import main


@pytest.mark.slow  # a whole study through Aer: CI runs it with -m slow
def test_quick_hardware_study_writes_the_schema_and_sane_numbers(tmp_path, capsys):
    assert main(["analyze", "hardware", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = json.loads((tmp_path / "hardware.json").read_text())
    assert result["fake_device"] == "fake_torino" and (tmp_path / "hardware.png").stat().st_size > 10_000
    rows = result["rows"]
    assert [r["setting"] for r in rows] == list(hardware.SETTINGS)
    assert all(set(r) == {"setting", "test_accuracy", "circuits", "shots", "wall_s"} for r in rows)
    task = hardware.QUICK_TASK
    exact, shots, noisy, mitigated = rows
    assert exact["shots"] is None and all(0 <= r["test_accuracy"] <= 1 and r["wall_s"] > 0 for r in rows)
    # the same data, weights and data order: the same circuits everywhere, each with its shots
    assert exact["circuits"] == shots["circuits"] == noisy["circuits"] == mitigated["circuits"] > 0
    assert all(r["shots"] == r["circuits"] * task.shots for r in (shots, noisy, mitigated))
    readout = result["details"]["settings"]["noisy-mitigated"]["readout"]
    assert readout and all(0 <= c["p10"] < 0.2 and 0 <= c["p01"] < 0.2 for c in readout)
    assert result["details"]["distinct_nonzero_patches"] <= 15  # binarised 2x2 patches
    assert "noisy-mitigated" in capsys.readouterr().out


def test_hardware_refuses_bad_options(tmp_path, capsys):
    assert main(["analyze", "hardware", "--fake-device", "fake_nowhere", "--out", str(tmp_path)]) == 2
    assert "unknown fake device 'fake_nowhere'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown settings"):
        hardware.hardware_study(hardware.QUICK_TASK, None, settings=("exact", "psychic"))


@pytest.mark.slow  # training through Aer, twice: CI runs it with -m slow
def test_train_through_aer_resumes_bit_for_bit_and_needs_shots(tmp_path, capsys):
    import torch

    args = ["train", "--backend", "aer", "--shots", "20", "--gradient", "parameter-shift", "--gradient-shots", "20",
            "--filters", "1", "--kernel", "2", "--stride", "7", "--layers", "1", "--limit-train", "8",
            "--limit-test", "8", "--batch-size", "4", "--epochs", "2", "--no-plot", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--max-steps", "3", "--checkpoint-every", "1"]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (torch.load(tmp_path / d / "model.pt") for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the shot stream is checkpointed: Aer repeats itself
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    cost = metrics["final"]["quantum_cost"]
    assert cost["backward"]["shots"] == 20 * cost["backward"]["circuits"] > 0
    assert metrics["config"]["backend"] == "aer"
    capsys.readouterr()
    assert main(["train", "--backend", "pennylane", "--out", str(tmp_path / "c")]) == 2
    assert "give shots" in capsys.readouterr().err


@pytest.mark.slow
def test_w5_estimates_agree_within_shot_noise_and_qucnn_is_faster_than_qiskit_ml():
    from qucnn.bench import run

    result = run(["w5"], quick=True, repeats=1)
    rows = [r for r in result["rows"] if r["workload"] == "w5"]
    assert rows and not any(r.get("skipped") for r in rows), [r.get("note") for r in rows]
    assert all(r["forward_max_sigmas"] < 5 and r["gradient_max_sigmas"] < 5 for r in rows)
    for variant in ("binarised", "grey"):
        speed = {r["impl"]: r["items_per_s"] for r in rows if r["variant"] == variant}
        assert speed["qucnn-aer"] > speed["qiskit-ml"]
