"""``qucnn analyze hardware``: every (setting, head) arm trains with every circuit on its backend, is evaluated
the same way (repeated shot-based evaluations, and exactly), and the arms are compared paired by seed."""

from __future__ import annotations

import json

import pytest
from conftest import SIGMAS

from qucnn.analysis import hardware
from qucnn.cli import main


@pytest.mark.slow  # a whole study through Aer: CI runs it with -m slow
def test_quick_hardware_study_writes_the_schema_and_sane_numbers(tmp_path, capsys):
    assert main(["analyze", "hardware", "--quick", "--seeds", "0", "--out", str(tmp_path), "--no-progress"]) == 0
    result = json.loads((tmp_path / "hardware.json").read_text())
    assert result["fake_device"] == "fake_torino" and (tmp_path / "hardware.png").stat().st_size > 10_000
    rows = result["rows"]
    assert [(r["setting"], r["head"]) for r in rows] == [(s, h) for s in hardware.SETTINGS for h in hardware.HEADS]
    task = hardware.QUICK_TASK
    for r in rows:
        # every arm: the same estimator (parameter shift), evaluated eval_repeats times with shots, and exactly
        assert len(r["eval_repeats"]) == task.eval_repeats and r["test_accuracy"] == pytest.approx(
            sum(r["eval_repeats"]) / task.eval_repeats)
        assert all(0 <= a <= 1 for a in r["eval_repeats"] + [r["exact_eval_accuracy"]]) and r["wall_s"] > 0
    exact = [r for r in rows if r["setting"] == "exact"]
    assert all(r["shots"] is None for r in exact)
    # the same data, weights and data order: the same circuits everywhere, each with its shots
    assert len({r["circuits"] for r in rows}) == 1 and rows[0]["circuits"] > 0
    assert all(r["shots"] == r["circuits"] * task.shots for r in rows if r["setting"] != "exact")
    readout = [r["readout"] for r in rows if r["setting"] == "noisy-mitigated"][0]
    assert readout and all(0 <= c["p10"] < 0.2 and 0 <= c["p01"] < 0.2 for c in readout)
    assert result["distinct_nonzero_patches"] <= 15  # binarised 2x2 patches
    assert result["differences"] == []  # one seed: no intervals
    response = result["noise_response"]  # Torino's noise shrinks <Z_a> = F towards 0: a line, slope below 1
    assert response["points"] == result["distinct_nonzero_patches"] * task.filters and 0.5 < response["slope"] < 1
    assert response["max_residual"] < SIGMAS * response["standard_error"]
    assert "noisy-mitigated/no-bn" in capsys.readouterr().out
    # a rerun with a second seed trains only the new seed's arms (the first seed's rows are kept on disk)
    kept = json.loads((tmp_path / "hardware.rows.json").read_text())["rows"]
    assert len(kept) == len(rows)


def _rows(seed: int, acc: dict) -> list[dict]:
    return [{"setting": s, "head": h, "label": f"{s}/{h}", "seed": seed, "test_accuracy": a, "eval_std": 0.01,
             "exact_eval_accuracy": a, "eval_repeats": [a]} for (s, h), a in acc.items()]


def test_arms_are_paired_by_seed_with_holm_and_the_batchnorm_interaction():
    rows = []
    for seed in range(5):
        rows += _rows(seed, {(s, h): 0.9 + 0.01 * seed - (0.05 if s == "noisy" and h == "no-bn" else 0)
                             for s in hardware.SETTINGS for h in hardware.HEADS})
    out = hardware.summarise_arms(rows, tuple(range(5)), margin=0.005)
    assert set(out["arms"]) == {f"{s}/{h}" for s in hardware.SETTINGS for h in hardware.HEADS}
    diffs = {(d["a"], d["b"]): d for d in out["differences"]}
    assert ("shots/bn", "exact/bn") in diffs and ("noisy/bn", "exact/bn") in diffs and ("exact/bn", "exact/no-bn") in diffs
    assert diffs[("noisy/no-bn", "shots/no-bn")]["mean"] == pytest.approx(-0.05)
    did = diffs[("(noisy - exact)/bn", "(noisy - exact)/no-bn")]
    assert did["mean"] == pytest.approx(0.05) and did["significant"]  # BatchNorm absorbs this noise's cost
    assert diffs[("shots/bn", "exact/bn")]["equivalent"]  # identical on every seed
    assert len(out["differences"]) == 4 * 2 + 4 + 1


def test_hardware_refuses_bad_options(tmp_path, capsys):
    assert main(["analyze", "hardware", "--fake-device", "fake_nowhere", "--out", str(tmp_path)]) == 2
    assert "unknown fake device 'fake_nowhere'" in capsys.readouterr().err
    assert main(["analyze", "hardware", "--margin", "-1", "--out", str(tmp_path)]) == 2
    assert "--margin must be a positive number" in capsys.readouterr().err
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
