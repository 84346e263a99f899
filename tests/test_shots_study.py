"""The shots study: every setting of a seed trains from the same start, frozen filters spend no gradient
shots, bills add up, every setting is compared with frozen filters (Holm across the table), and savings come
from interval crossings, in shots and in circuits."""

from __future__ import annotations

import math

import pytest
import torch

from qucnn.analysis.shots import (
    DEFAULT_SEEDS,
    Setting,
    build_network,
    default_settings,
    read_progress,
    train_setting,
    write_progress,
)
from qucnn.analysis.shots_report import aggregate, crossing, saving_against, shots_saving, shots_table
from qucnn.cli import main
from qucnn.datasets import ImageSplits
from qucnn.utils.checks import UsageError
from qucnn.utils.stats import holm, summarise

TINY = dict(filters=2, kernel=4, stride=4, layers=1, epochs=1, train=48, test=32, batch_size=16, lr=0.05)


@pytest.fixture(scope="module")
def data() -> ImageSplits:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(80, 1, 12, 12, generator=gen)
    x[:, :, :4, :4] = 0  # all-zero patches: never run, never billed
    y = torch.randint(0, 3, (80,), generator=gen)
    return ImageSplits(x[:48], y[:48], x[48:], y[48:], "random")


def test_default_settings_cover_the_issue():
    settings = default_settings()
    budgets = sorted(s.budget for s in settings if s.method == "sampled")
    assert budgets == [10**k for k in range(2, 7)]
    assert {s.method for s in settings} == {"autograd", "frozen", "parameter-shift", "entanglement", "sampled"}
    assert Setting("entanglement", shots=10).label == "entanglement S=10"


def test_every_setting_of_a_seed_starts_from_the_same_network():
    a = build_network(Setting("autograd"), 2, 4, 2, 1, seed=3)
    b = build_network(Setting("sampled", budget=10), 2, 4, 2, 1, seed=3)
    c = build_network(Setting("frozen"), 2, 4, 2, 1, seed=3)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb) and torch.equal(pa, pc)
    assert not c[0].theta.requires_grad and a[0].theta.requires_grad
    assert not torch.equal(a[0].theta, build_network(Setting("autograd"), 2, 4, 2, 1, seed=4)[0].theta)


def test_shot_bills(data):
    steps = math.ceil(48 / 16)
    sampled = train_setting(Setting("sampled", budget=500), data, **TINY)
    assert sampled["gradient_shots"] == sampled["gradient_circuits"] == steps * 500
    ps = train_setting(Setting("parameter-shift", shots=7), data, **TINY)
    # 2 shifts x 8 parameters (4 qubits, 1 layer) x 2 filters x 8 outputs with a non-zero patch
    # (3x3 outputs at stride 4, the top-left one all zero) per image, 7 shots each
    per_image = 2 * 8 * 2 * 8
    assert ps["gradient_circuits"] == TINY["epochs"] * TINY["train"] * per_image
    assert ps["gradient_shots"] == 7 * ps["gradient_circuits"]
    exact = train_setting(Setting("autograd"), data, **TINY)
    # exact gradients: what parameter shift would run, with infinitely many shots
    assert exact["gradient_circuits"] == ps["gradient_circuits"] and exact["gradient_shots"] is None
    frozen = train_setting(Setting("frozen"), data, **TINY)
    assert frozen["gradient_shots"] == frozen["gradient_circuits"] == 0 and 0 <= frozen["test_accuracy"] <= 1


def _row(method: str, label: str, seed: int, acc: float, shots: int | None, circuits: int | None = None) -> dict:
    return {"method": method, "label": label, "shots": None, "budget": None, "seed": seed, "test_accuracy": acc,
            "gradient_shots": shots, "gradient_circuits": shots if circuits is None else circuits}


def test_every_setting_against_frozen_with_holm_across_the_table():
    assert len(DEFAULT_SEEDS) >= 5
    frozen = [0.80, 0.85, 0.90, 0.82, 0.87]
    rows = [_row("frozen", "frozen", s, a, 0) for s, a in enumerate(frozen)]
    rows += [_row("sampled", "s1", s, a + d, 10**4) for s, (a, d) in enumerate(zip(frozen, (0.02, 0.03, 0.04, 0.03, 0.03)))]
    rows += [_row("sampled", "s2", s, a + d, 10**5) for s, (a, d) in enumerate(zip(frozen, (0.02, -0.02, 0.03, 0, 0.01)))]
    settings = {s["label"]: s for s in aggregate(rows, margin=0.005)}
    assert settings["frozen"]["vs_frozen"] is None
    s1, s2 = settings["s1"]["vs_frozen"], settings["s2"]["vs_frozen"]
    assert s1["b"] == "frozen" and s1["mean"] == pytest.approx(0.03) and s1["significant"]
    assert not s2["significant"] and not s2["equivalent"]
    assert [s1["p_holm"], s2["p_holm"]] == pytest.approx(holm([s1["p"], s2["p"]]))
    assert settings["s1"]["gradient_circuits"] == 10**4 and settings["s1"]["summary"]["n"] == 5


def test_crossing_interpolates_in_log_cost():
    assert crossing([(1e6, -0.02), (1e8, 0.02)]) == {"cost": pytest.approx(1e7), "where": "interpolated"}
    assert crossing([(1e6, 0.01), (1e8, 0.02)]) == {"cost": 1e6, "where": "at or below first"}
    assert crossing([(1e6, -0.01), (1e8, -0.02)]) == {"cost": None, "where": "beyond"}
    assert crossing([(5e7, -0.02), (5e7, 0.01)])["cost"] == pytest.approx(5e7)  # equal costs: that cost


def test_saving_from_interval_crossings_in_shots_and_circuits():
    seeds = [0, 1, 2, 3, 4]
    sampled = {"label": "sampled N=1e+04", "method": "sampled", "seeds": seeds, "gradient_shots": 1e6,
               "gradient_circuits": 1e6, "test_accuracy": [0.90, 0.91, 0.92, 0.90, 0.91]}
    offsets = {1e6: [-0.05, -0.06, -0.04, -0.05, -0.05], 1e8: [0.01, 0.02, 0.00, 0.01, 0.01]}
    dense = [{"label": f"ps {b:g}", "method": "parameter-shift", "seeds": seeds, "gradient_shots": b,
              "gradient_circuits": 1e7, "test_accuracy": [a + o for a, o in zip(sampled["test_accuracy"], offsets[b])]}
             for b in (1e6, 1e8)]
    got = saving_against(sampled, dense, "shots")
    first, second = (summarise(offsets[b]) for b in (1e6, 1e8))
    assert [p["mean"] for p in got["points"]] == pytest.approx([first["mean"], second["mean"]])
    # low: where the upper interval end reaches 0, between 1e6 and 1e8 in log10
    hi0, hi1 = first["ci95"][1], second["ci95"][1]
    assert got["low"]["orders_of_magnitude"] == pytest.approx(2 * (-hi0) / (hi1 - hi0))
    mean0, mean1 = first["mean"], second["mean"]
    assert got["central"]["orders_of_magnitude"] == pytest.approx(2 * (-mean0) / (mean1 - mean0))
    assert got["claimed"] and got["low"]["orders_of_magnitude"] < got["central"]["orders_of_magnitude"]
    # in circuits the dense estimator runs 1e7 at every budget: it needs 1e7, one order more than 1e6
    circuits = saving_against(sampled, dense, "circuits")
    assert circuits["central"]["orders_of_magnitude"] == pytest.approx(1.0) and circuits["claimed"]
    # a sampled setting that costs more circuits than the dense one saves none
    costly = saving_against({**sampled, "gradient_circuits": 1e8}, dense, "circuits")
    assert costly["central"]["orders_of_magnitude"] == pytest.approx(-1.0) and not costly["claimed"]
    # dense already as good at its first budget: the lower end is not bounded, nothing claimed
    easy = saving_against(sampled, [dict(d, test_accuracy=sampled["test_accuracy"]) for d in dense], "shots")
    assert easy["low"]["where"] == "at or below first" and not easy["claimed"]


def test_study_result_and_table():
    rows = [_row("frozen", "frozen", s, 0.5 + 0.01 * s, 0) for s in range(3)]
    rows += [_row("parameter-shift", "ps", s, 0.6 + 0.01 * s, 10**8, 10**6) for s in range(3)]
    rows += [_row("sampled", "sa", s, 0.55 + 0.012 * s, 10**5) for s in range(3)]
    settings = aggregate(rows)
    saving = shots_saving(settings)
    point = saving["points"][0]
    assert point["label"] == "sa" and set(point["against"]["parameter-shift"]) == {"shots", "circuits"}
    hollow = shots_saving(aggregate([r for r in rows if r["label"] != "frozen"] +
                                    [_row("frozen", "frozen", s, 0.55 + 0.012 * s, 0) for s in range(3)]))
    assert hollow["points"][0]["above_frozen"] is False  # identical to frozen on every seed
    assert not any(c["claimed"] for c in hollow["points"][0]["against"]["parameter-shift"].values())
    text = shots_table({"settings": settings, "saving": saving})
    assert "sa > frozen" in text and "saving of sa against parameter-shift" in text  # +5.2 points on every seed


def test_cli_rejects_bad_options(capsys):
    assert main(["analyze", "shots", "--epochs", "0", "--out", "/nonexistent/x"]) == 2
    assert "--epochs must be a positive int, got 0" in capsys.readouterr().err
    assert main(["analyze", "shots", "--seeds", "a,b", "--out", "/nonexistent/x"]) == 2
    assert "--seeds: expected a list" in capsys.readouterr().err


def test_progress_keeps_every_finished_row_and_rejects_a_foreign_file(tmp_path):
    """A study with fewer seeds reuses what it asks for and keeps the other seeds' rows on disk; other sizes
    start afresh; a file that is not a progress record is named in the error."""
    path = tmp_path / "shots.rows.json"
    sizes = dict(TINY)
    assert read_progress(path, sizes) == []
    row = lambda label, seed, acc: {"label": label, "seed": seed, "test_accuracy": acc}  # noqa: E731
    earlier = [row("frozen", 0, 0.5), row("frozen", 3, 0.6)]
    write_progress(path, sizes, [], earlier)
    done = read_progress(path, sizes)
    assert done == earlier and read_progress(path, {**sizes, "epochs": 2}) == []
    write_progress(path, sizes, done, [row("frozen", 0, 0.5), row("autograd", 0, 0.7)])  # a run over seed 0
    kept = read_progress(path, sizes)
    assert sorted((r["label"], r["seed"]) for r in kept) == [("autograd", 0), ("frozen", 0), ("frozen", 3)]
    path.write_text('{"sizes": 1, "rows": [1]}')
    assert read_progress(path, sizes) == []  # other sizes: ignored, as before
    path.write_text("not json")
    with pytest.raises(UsageError, match="shots.rows.json: not a shots-study progress file"):
        read_progress(path, sizes)
