"""The shots study: every setting of a seed trains from the same start, frozen filters spend no gradient
shots, bills add up, and a saving is claimed only where the sampled estimator beats frozen filters."""

from __future__ import annotations

import math

import pytest
import torch

from qucnn.analysis.shots import (
    Setting,
    aggregate,
    build_network,
    default_settings,
    read_progress,
    shots_needed,
    shots_saving,
    train_setting,
    write_progress,
)
from qucnn.cli import main
from qucnn.datasets import ImageSplits
from qucnn.utils.checks import UsageError

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


def _row(method: str, label: str, seed: int, acc: float, shots: int | None) -> dict:
    return {"method": method, "label": label, "shots": None, "budget": None, "seed": seed, "test_accuracy": acc,
            "gradient_shots": shots}


def test_saving_only_above_frozen_with_an_interval():
    frozen = [0.80, 0.85, 0.90]
    rows = [_row("frozen", "frozen", s, a, 0) for s, a in enumerate(frozen)]
    rows += [_row("entanglement", "e1", s, a + 0.01, 10**7) for s, a in enumerate(frozen)]
    rows += [_row("entanglement", "e2", s, a + 0.05, 10**9) for s, a in enumerate(frozen)]
    # s1: +0.03 +- 0.01 over frozen on every seed (significant); s2: +0.02, -0.02, +0.03 (not significant)
    rows += [_row("sampled", "s1", s, a + d, 10**4) for s, (a, d) in enumerate(zip(frozen, (0.02, 0.03, 0.04)))]
    rows += [_row("sampled", "s2", s, a + d, 10**5) for s, (a, d) in enumerate(zip(frozen, (0.02, -0.02, 0.03)))]
    settings = aggregate(rows)
    by = {s["label"]: s for s in settings}
    assert by["frozen"]["vs_frozen"] is None and by["s1"]["vs_frozen"]["above"] is True
    assert by["s2"]["vs_frozen"]["above"] is False
    assert by["s1"]["summary"]["mean"] == pytest.approx(0.88) and by["e1"]["gradient_shots"] == 10**7
    saving = shots_saving(settings)
    s1, s2 = saving["points"]
    assert s2["above_frozen"] is False and s2["dense"] == {} and s2["orders_of_magnitude"] is None
    # e1 (0.86) -> e2 (0.90) spans 2 decades for 0.04: 0.88 sits half way, at 10**8 shots: 4 orders above 10**4
    central = s1["dense"]["entanglement"]["central"]
    assert central["shots"] == pytest.approx(1e8) and central["orders_of_magnitude"] == pytest.approx(4.0)
    sem = 0.01 / math.sqrt(3)
    low = s1["dense"]["entanglement"]["low"]["orders_of_magnitude"]
    assert low == pytest.approx(4.0 - 2 * sem / 0.04) and saving["best"]["label"] == "s1"
    assert shots_needed([(10, 0.5), (1000, 0.7)], 0.6) == (pytest.approx(100.0), True)
    assert shots_needed([(10, 0.5), (1000, 0.7)], 0.4) == (10, False)  # below the curve: an upper bound


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
