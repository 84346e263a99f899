"""Smoke runs of ``qucnn bench`` (seconds): the JSON schema, positive finite medians, ratios, and missing
peers turned into notes instead of errors (simulated by blocking their imports)."""

from __future__ import annotations

import json
import math
import sys

import pytest

from qucnn import cli
from qucnn.bench import Case, markdown, measure, run
from qucnn.bench.peers import missing
from qucnn.bench.runner import add_ratios

PEER_MODULES = ("pennylane", "pennylane_lightning", "qiskit_aer")


@pytest.fixture
def no_peers(monkeypatch):
    """Make every peer import fail, as on a machine without ``qucnn[bench]``."""
    for name in PEER_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


def _check_schema(result: dict, workloads: set[str]) -> None:
    machine = result["machine"]
    for key in ("cpu", "cores", "torch", "device", "torch_threads"):
        assert key in machine
    assert {r["workload"] for r in result["rows"]} == workloads
    live = [r for r in result["rows"] if not r["skipped"]]
    assert live
    for r in live:
        for key in ("workload", "impl", "device", "median_s", "items_per_s", "items", "unit"):
            assert key in r, (r["impl"], key)
        assert math.isfinite(r["median_s"]) and r["median_s"] > 0
        assert math.isfinite(r["items_per_s"]) and r["items_per_s"] > 0
    for r in result["rows"]:
        if r["skipped"]:
            assert r["median_s"] is None and r["note"]


def test_w1_quick_without_peers_gives_notes_and_valid_json(no_peers, tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = cli.main(["bench", "--workload", "w1", "--quick", "--repeats", "1", "--json", str(path)])
    assert code == 0
    result = json.loads(path.read_text())
    _check_schema(result, {"w1"})
    rows = {r["impl"]: r for r in result["rows"]}
    for impl in ("pennylane-default", "pennylane-lightning", "qiskit-aer"):
        assert rows[impl]["skipped"] and "qucnn[bench]" in rows[impl]["note"]
    for impl in ("qucnn-exact", "qucnn-shots", "numpy-floor", "torch-conv2d"):
        assert not rows[impl]["skipped"]
    assert rows["qucnn-exact"]["max_abs_err"] == 0  # the reference values come from the same layer
    assert rows["numpy-floor"]["max_abs_err"] < 1e-12
    assert rows["qucnn-reference"]["max_abs_err"] < 1e-12
    assert rows["numpy-floor"]["speedup_vs"]["qucnn-exact"] > 0
    assert "fastest-peer" not in rows["qucnn-exact"]["speedup_vs"]  # no peer ran
    table = path.with_suffix(".md").read_text()
    assert "| qucnn-exact | cpu |" in table and "skipped: pennylane not installed" in table
    assert "| qucnn-exact | cpu |" in capsys.readouterr().out
    target = next(t for t in result["targets"] if "fastest circuit peer" in t["name"])
    assert target["value"] is None and target["met"] is None
    assert set(target["missing"]) >= {"pennylane-default", "pennylane-lightning", "qiskit-aer"}
    assert "not evaluated (not run: " in table


@pytest.mark.slow  # the PennyLane peers of W2 and W3: CI runs it with -m slow
def test_w2_and_w3_quick_with_installed_peers():
    result = run(["w2", "w3"], quick=True, repeats=1)
    _check_schema(result, {"w2", "w3"})
    rows = {(r["workload"], r["impl"]): r for r in result["rows"]}
    for mode in ("autograd", "parameter-shift", "entanglement"):
        assert rows[("w2", f"qucnn-{mode}")]["max_abs_err"] < 1e-10
    for method in ("parameter-shift", "backprop"):
        row = rows[("w2", f"pennylane-{method}")]
        if missing("pennylane") is None:  # present: it ran, on the same function
            assert not row["skipped"] and row["max_abs_err"] < 1e-10
            assert row["speedup_vs"]["qucnn-autograd"] > 0
        else:
            assert row["skipped"]
    assert rows[("w3", "torch-conv2d")]["speedup_vs"]["torch-conv2d"] == pytest.approx(1)
    assert rows[("w3", "qucnn-exact")]["items"] == 64
    names = [t["name"] for t in result["targets"]]
    assert any(n.startswith("W3") for n in names) and any(n.startswith("W2") for n in names)


def test_w3_batch_size_is_a_choice_and_named_in_the_table(no_peers):
    result = run(["w3"], quick=True, repeats=1, w3_batch=5)
    rows = {r["impl"]: r for r in result["rows"]}
    assert rows["qucnn-exact"]["items"] == rows["torch-conv2d"]["items"] == 5
    assert result["config"]["sizes"]["w3_batch"] == 5
    assert "training step, 5 images" in markdown(result)


@pytest.mark.slow  # every W4 case in its own process: CI runs it with -m slow
def test_w4_tiny_reports_bandwidth_and_memory(no_peers):
    result = run(["w4"], quick=True, repeats=1, w4_images=64)
    _check_schema(result, {"w4"})
    rows = [r for r in result["rows"] if r["impl"] == "qucnn-exact"]
    assert {r["variant"] for r in rows} == {"K=8 forward", "K=8 forward+backward", "K=32 forward",
                                             "K=32 forward+backward"}
    for r in rows:
        assert 0 < r["fraction_of_copy"] < 10
        assert r["peak_rss_delta_bytes"] >= 0
        assert r["output_bytes"] == 4 * 64 * int(r["variant"][2:4].strip()) * 625


def test_measure_turns_a_failing_case_into_a_note_and_computes_ratios():
    def boom():
        raise RuntimeError("peer exploded")

    cases = [Case("fast", lambda: sum(range(10)), items=10, unit="x"),
             Case("slow", lambda: sum(range(10_000)), items=10, unit="x", peer=True),
             Case("broken", boom, items=1, unit="x", peer=True)]
    rows = measure("w0", cases, repeats=3)
    by = {r["impl"]: r for r in rows}
    assert by["broken"]["skipped"] and "peer exploded" in by["broken"]["note"]
    assert by["fast"]["median_s"] < by["slow"]["median_s"]
    add_ratios(rows, "slow")
    assert by["fast"]["speedup_vs"]["slow"] == pytest.approx(by["slow"]["median_s"] / by["fast"]["median_s"])
    assert by["fast"]["speedup_vs"]["fastest-peer-name"] == "slow"
    text = markdown({"rows": rows, "references": {"w0": "slow"}})
    assert "| fast | cpu |" in text and "skipped: failed: RuntimeError: peer exploded" in text


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="workloads must be a non-empty subset"):
        run(["w9"])
    with pytest.raises(ValueError, match="device must be one of"):
        run(["w1"], device="tpu")
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        run(["w1"], repeats=0)
    with pytest.raises(ValueError, match="w3_batch must be a positive int"):
        run(["w3"], w3_batch=0)
    with pytest.raises(ValueError, match="w3_batch must be at most 8000"):
        run(["w3"], w3_batch=8001)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure("w0", [], repeats=0)


def _row(workload, impl, rate, peer=False, skipped=False):
    return {"workload": workload, "impl": impl, "device": "cpu", "peer": peer, "skipped": skipped,
            "items_per_s": None if skipped else rate}


def test_a_target_with_a_missing_peer_is_not_evaluated_never_met_against_another_row():
    from qucnn.bench.workloads import targets

    w1 = [_row("w1", "qucnn-exact", 1e6), _row("w1", "numpy-floor", 2e6), _row("w1", "qiskit-aer", 10.0, peer=True),
          _row("w1", "pennylane-default", None, peer=True, skipped=True)]
    first = targets(w1)[0]
    # Aer alone would give 1e5 >= 1000, "met"; with PennyLane not run the target is not evaluated.
    assert first["value"] is None and first["met"] is None and first["missing"] == ["pennylane-default"]
    assert targets(w1)[1]["met"] is True and targets(w1)[1]["value"] == pytest.approx(2.0)
    table = markdown({"rows": [], "targets": targets(w1)})
    assert "| - | not evaluated (not run: pennylane-default) |" in table and "yes" in table
    w1[-1] = _row("w1", "pennylane-default", 2000.0, peer=True)
    first = targets(w1)[0]
    assert first["value"] == pytest.approx(500) and first["met"] is False and first["missing"] == []
    assert "| 500 | NO |" in markdown({"rows": [], "targets": targets(w1)})
    w2 = targets([_row("w2", "qucnn-autograd", 1.0), _row("w2", "pennylane-backprop", None, True, True)])
    assert w2[0]["met"] is None and w2[0]["missing"] == ["pennylane-backprop"]


def test_gpu_rows_run_their_code_paths_on_the_cpu(monkeypatch):
    """The rows of --device cuda (qucnn.bench.gpu), on 3 images on the CPU (backend 'triton' in Triton's
    interpreter): every implementation runs, agrees with the float64 reference, and gets its ratios."""
    from qucnn.bench import gpu, runner

    monkeypatch.setattr(runner, "MIN_SAMPLE_S", 0.0)  # one call per sample: the paths, not the timings
    monkeypatch.setattr(gpu, "VARIANTS", (gpu.VARIANTS[0], gpu.VARIANTS[3], gpu.VARIANTS[4]))  # each kind once
    rows, notes = gpu.w4_rows(3, repeats=1, device="cpu")
    live = [r for r in rows if not r.get("skipped")]
    assert len(live) == len(rows) == 1 + 3 * 3  # memcpy; forward, forward+backward and shots, 3 each
    by = {(r["variant"], r["impl"]): r for r in live}
    for impl in ("qucnn-triton", "qucnn-torch", "torch-two-conv"):
        assert by[("K=8 forward", impl)]["max_abs_err"] < 1e-5 and by[("K=8 forward", impl)]["x_floor"] > 0
        assert by[("K=32 forward+backward", impl)]["grad_rel_err"] < 1e-4
    shots = {impl: r for (variant, impl), r in by.items() if "shots" in variant}
    assert set(shots) == {"qucnn-triton", "qucnn-torch", "torch-binomial"}
    assert shots["qucnn-triton"]["max_z"] < 6 and shots["qucnn-torch"]["max_z"] < 6
    assert by[("K=8 forward", "qucnn-torch")]["speedup_vs"]["torch-two-conv"] > 0
    targets = gpu.targets(rows)
    assert len(targets) == 3 and all(t["met"] is None for t in targets)  # 3 images: reported, not judged
    assert "3 images on cpu" in notes[0]
    cases = gpu.w3_cases(2, "cpu")
    assert [c.impl for c in cases] == ["qucnn-triton", "qucnn-torch", "torch-two-conv"]
    losses = [float(c.fn()) for c in cases]  # one training step each, from the same seeded start
    assert max(losses) - min(losses) < 1e-4
