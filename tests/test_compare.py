"""``qucnn train --compare --heads``: the head is a factor of the comparison, tuning seeds are disjoint from the
evaluation seeds by construction, and metrics.json has ``compare.<kind>.<head>`` and the ``differences`` list."""

from __future__ import annotations

import json

import pytest

from qucnn.cli import main
from qucnn.train import TrainConfig
from qucnn.train.compare import HEADS, combine, default_pairs, run_heads, settings_for
from qucnn.utils.stats import holm


def test_heads_and_seeds_are_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["train", "--compare", "--tune", "--seeds", "0-4", "--tune-seeds", "3,7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--tune-seeds 3,7 overlaps --seeds 0,1,2,3,4 in 3" in err and not out.exists()
    assert main(["train", "--compare", "--heads", "plain,gelu", "--out", str(out)]) == 2
    assert "heads (--heads) must be one of plain, relu; got 'gelu'" in capsys.readouterr().err
    assert main(["train", "--heads", "relu", "--out", str(out)]) == 2  # heads belong to a comparison
    assert "pass compare=True (--compare)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="margin"):
        TrainConfig(compare=True, margin=0).validate()
    with pytest.raises(ValueError, match="must not repeat a head"):
        TrainConfig(compare=True, heads=("relu", "relu")).validate()


def test_default_seeds_and_disjoint_tuning_seeds():
    cfg = TrainConfig(compare=True, tune=True, seed=3)
    cfg.validate()
    assert cfg.run_seeds == (3, 4, 5, 6, 7) and cfg.run_tune_seeds == (8, 9)  # 5 seeds, tuning after them
    assert TrainConfig(seed=2).run_seeds == (2,)  # a single run trains one seed
    cfg = TrainConfig(compare=True, heads=("plain", "relu"))
    assert run_heads(cfg) == HEADS and run_heads(TrainConfig(head="bn,fc:8,relu")) == {"custom": "bn,fc:8,relu"}
    tuned = settings_for(cfg, "classical", "relu", {"chosen": {"classical": {"relu": {"lr": 0.03, "schedule": "x"}}}})
    assert (tuned.head, tuned.lr, tuned.schedule) == (HEADS["relu"], 0.03, "x")


def test_pairs_answer_one_question_each():
    kinds = ("quantum", "frozen", "classical", "fidelity-classical", "classical-matched")
    pairs = default_pairs(kinds, ("plain", "relu"))
    for head in ("plain", "relu"):  # at equal head: training, the ansatz, the map, equal parameters
        for a, b in (("quantum", "frozen"), ("quantum", "fidelity-classical"), ("fidelity-classical", "classical"),
                     ("quantum", "classical"), ("quantum", "classical-matched")):
            assert (f"{a}/{head}", f"{b}/{head}") in pairs
    assert [p for p in pairs if p[0].endswith("/relu") and p[1].endswith("/plain")] == \
        [(f"{k}/relu", f"{k}/plain") for k in kinds]  # the head's own effect, kind by kind
    assert len(pairs) == 15 and default_pairs(("quantum", "frozen"), ("plain",)) == [("quantum/plain", "frozen/plain")]


def _run(acc: float) -> dict:
    final = {"test_accuracy": acc, "validation_accuracy": acc - 0.01}
    return {"final": final, "epochs": [], "model": {"trainable": 10, "first_layer_trainable": 2, "repr": "x"}}


def test_combine_writes_kind_by_head_and_the_differences_list():
    cfg = TrainConfig(compare=True, kinds=("quantum", "classical"), heads=("plain", "relu"), seeds=(0, 1, 2),
                      margin=0.5)
    cfg.validate()
    acc = {("quantum", "plain"): [0.970, 0.975, 0.972], ("quantum", "relu"): [0.971, 0.974, 0.973],
           ("classical", "plain"): [0.960, 0.964, 0.963], ("classical", "relu"): [0.969, 0.973, 0.970]}
    runs = {(k, h, s): _run(a[i]) for (k, h), a in acc.items() for i, s in enumerate((0, 1, 2))}
    out = combine(cfg, runs, None)
    assert set(out["compare"]) == {"quantum", "classical"} and set(out["compare"]["quantum"]) == {"plain", "relu"}
    assert out["compare"]["classical"]["relu"]["test_accuracy"] == acc[("classical", "relu")]
    assert out["compare"]["classical"]["relu"]["settings"]["head"] == HEADS["relu"]
    diffs = out["differences"]
    assert [(d["a"], d["b"]) for d in diffs] == [("quantum/plain", "classical/plain"), ("quantum/relu", "classical/relu"),
                                                ("quantum/relu", "quantum/plain"), ("classical/relu", "classical/plain")]
    assert all({"a", "b", "mean", "ci95", "p_holm", "equivalent_at"} <= set(d) for d in diffs)
    assert diffs[0]["mean"] == pytest.approx(0.010) and diffs[0]["margin"] == pytest.approx(0.005)
    assert [d["p_holm"] for d in diffs] == pytest.approx(holm([d["p"] for d in diffs]))
    assert out["margin_points"] == 0.5


def test_cli_trains_every_kind_with_every_head(tmp_path, capsys):
    args = ["train", "--compare", "--heads", "plain,relu", "--kinds", "quantum,classical", "--seeds", "0,1",
            "--tune", "--tune-seeds", "5", "--out", str(tmp_path), "--epochs", "1", "--limit-train", "96",
            "--limit-test", "64", "--validation", "64", "--filters", "2", "--no-progress", "--threads", "1", "--no-plot"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["heads"] == HEADS and m["tune_seeds"] == [5] and m["tuning"]["seeds"] == [5]
    for kind in ("quantum", "classical"):
        for head in ("plain", "relu"):
            c = m["compare"][kind][head]
            assert c["settings"]["head"] == HEADS[head] and len(c["test_accuracy"]) == 2
            assert c["settings"]["lr"] == m["tuning"]["chosen"][kind][head]["lr"]
            assert (tmp_path / kind / head / "seed1" / "model.pt").exists()
            assert len(m["tuning"]["results"][kind][head]) == 6  # the same 6-point grid for every arm
    assert len(m["differences"]) == 4 and "quantum/relu - classical/relu" in printed and "verdict" in printed
