"""The shots study: every setting trains from the same start and its shot bill adds up."""

from __future__ import annotations

import math

import pytest
import torch

from qucnn.analysis.shots import Setting, build_network, default_settings, shots_needed, shots_saving, train_setting
from qucnn.cli import main
from qucnn.datasets import ImageSplits

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
    assert {s.method for s in settings} == {"autograd", "parameter-shift", "entanglement", "sampled"}
    assert Setting("entanglement", shots=10).label == "entanglement S=10"


def test_every_setting_starts_from_the_same_network():
    a = build_network(Setting("autograd"), 2, 4, 2, 1, seed=3)
    b = build_network(Setting("sampled", budget=10), 2, 4, 2, 1, seed=3)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb)


def test_shot_bills(data):
    steps = math.ceil(48 / 16)
    sampled = train_setting(Setting("sampled", budget=500), data, **TINY)
    assert sampled["gradient_shots"] == sampled["gradient_circuits"] == steps * 500
    ps = train_setting(Setting("parameter-shift", shots=7), data, **TINY)
    # 2 shifts x 8 parameters (4 qubits, 1 layer) x 2 filters x 8 outputs with a non-zero patch
    # (3x3 outputs at stride 4, the top-left one all zero) per image, 7 shots each
    per_image = 2 * 8 * 2 * 8
    assert ps["gradient_circuits"] == epochs_images(TINY) * per_image
    assert ps["gradient_shots"] == 7 * ps["gradient_circuits"]
    exact = train_setting(Setting("autograd"), data, **TINY)
    # exact gradients: what parameter shift would run, with infinitely many shots
    assert exact["gradient_circuits"] == ps["gradient_circuits"] and exact["gradient_shots"] is None
    assert 0 <= exact["test_accuracy"] <= 1


def epochs_images(sizes: dict) -> int:
    return sizes["epochs"] * sizes["train"]


def test_saving_in_orders_of_magnitude():
    rows = [
        {"method": "entanglement", "label": "e1", "gradient_shots": 10**7, "test_accuracy": 0.90},
        {"method": "entanglement", "label": "e2", "gradient_shots": 10**9, "test_accuracy": 0.94},
        {"method": "parameter-shift", "label": "p1", "gradient_shots": 10**7, "test_accuracy": 0.93},
        {"method": "sampled", "label": "s1", "gradient_shots": 10**4, "test_accuracy": 0.92},
        {"method": "sampled", "label": "s2", "gradient_shots": 10**5, "test_accuracy": 0.95},
    ]
    saving = shots_saving(rows)
    s1, s2 = saving["points"]
    # e1 -> e2 spans 2 decades for 0.04 of accuracy: 0.92 sits half way, at 10**8 shots
    assert s1["dense"]["entanglement"]["shots"] == pytest.approx(1e8)
    assert s1["dense"]["entanglement"]["orders_of_magnitude"] == pytest.approx(4.0)
    # parameter shift's only point is above 0.92: an upper bound of 10**7 shots, 3 orders
    assert s1["dense"]["parameter-shift"]["interpolated"] is False
    assert s1["orders_of_magnitude"] == pytest.approx(3.0)
    assert s2["orders_of_magnitude"] is None  # nothing dense reached 0.95
    assert saving["best"]["label"] == "s1"
    assert shots_needed([(10, 0.5), (1000, 0.7)], 0.6) == (pytest.approx(100.0), True)


def test_cli_rejects_bad_options(capsys):
    assert main(["analyze", "shots", "--epochs", "0", "--out", "/nonexistent/x"]) == 2
    assert "--epochs must be a positive int, got 0" in capsys.readouterr().err
