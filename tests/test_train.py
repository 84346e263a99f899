"""Training: a tiny run learns, resume is bit-identical, 2-process DDP equals 1 process, the validation
hold-out and the single test evaluation, --compare over kinds and seeds, tuning on validation only, errors
that lose nothing, atomic files, the schedule, the data order and the learning-curve axes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import EXACT, NEAR

from qucnn.cli import main
from qucnn.core.geometry import ConvSpec
from qucnn.datasets import load_embedded_mnist
from qucnn.core.windows import valid_patches
from qucnn.nn.models import GlobalBatchNorm, build_model
from qucnn.train import TrainConfig, data_order, make_splits, one_cycle, train
from qucnn.train.checkpoint import load_checkpoint
from qucnn.train.compare import grid_points, tune
from qucnn.train.distributed import DistContext
from qucnn.train.loop import evaluate
from qucnn.train.report import curves_figure
from qucnn.utils.files import atomic_save, atomic_write

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tiny(tmp: Path | None, **kw) -> TrainConfig:
    # one thread: on a shared 2-core machine two OpenMP threads per process are many times slower
    base = dict(epochs=2, filters=2, limit_train=512, limit_test=500, batch_size=32, progress=False, threads=1,
                validation=200, out=None if tmp is None else str(tmp))
    return TrainConfig(**{**base, **kw})


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_tiny_run_learns_and_writes_everything(tmp_path):
    m = train(tiny(tmp_path))
    e = m["epochs"]
    assert [x["epoch"] for x in e] == [1, 2]
    assert e[1]["train_loss"] < e[0]["train_loss"] < math.log(10)
    assert m["final"]["test_accuracy"] > 0.5  # chance is 0.1
    assert json.loads((tmp_path / "metrics.json").read_text())["final"] == m["final"]
    for name in ("model.pt", "checkpoint.pt", "learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "first.theta" in state(tmp_path / "model.pt")
    assert no_temp_files(tmp_path)
    # forward cost: one circuit per (image, filter, non-zero patch); exact expectations -> shots None
    x = load_embedded_mnist().train_images[:512]
    circuits = int(valid_patches(x, ConvSpec.make(4)).sum()) * 2
    for entry in e:
        assert entry["quantum_cost"]["forward"] == {"circuits": circuits, "shots": None}
        assert entry["images"] == 512 and entry["images_per_s"] > 0
        assert "test_accuracy" not in entry and 0 <= entry["validation_accuracy"] <= 1  # test: once, at the end
    assert m["final"]["quantum_cost"]["forward"]["circuits"] == 2 * circuits
    assert m["final"]["total_shots"] is None
    assert m["data"] == {"name": m["data"]["name"], "train": 512, "validation": 200, "test": 500, "classes": 10}
    # the reported test accuracy is the saved model's on the test images, and the validation accuracy its
    # accuracy on the last 200 training images
    net = build_model("quantum", filters=2, seed=0)
    net.load_state_dict(state(tmp_path / "model.pt"))
    data = load_embedded_mnist()
    assert evaluate(net, data.test_images[:500], data.test_labels[:500])[1] == m["final"]["test_accuracy"]
    assert evaluate(net, data.train_images[-200:], data.train_labels[-200:])[1] == m["final"]["validation_accuracy"]


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    # shots, entanglement gradients with shots and dropout: every generator must be restored
    kw = dict(limit_train=96, limit_test=64, epochs=2, checkpoint_every=2, stride=2, shots=200,
              gradient="entanglement", gradient_shots=100, head="bn,maxpool:2,fc:32,relu,dropout:0.2")
    full = train(tiny(tmp_path / "full", **kw))
    crashed = train(tiny(tmp_path / "crash", max_steps=5, **kw))  # 3 steps/epoch: dies mid epoch 2
    assert crashed["stopped_at_step"] == 5
    assert not (tmp_path / "crash" / "model.pt").exists()
    ckpt = load_checkpoint(tmp_path / "crash" / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 1, 4)  # the step-4 checkpoint, mid epoch 2
    resumed = train(tiny(tmp_path / "crash", resume=True, **kw))
    a, b = state(tmp_path / "full" / "model.pt"), state(tmp_path / "crash" / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(resumed["epochs"], full["epochs"], strict=True):
        for k in ("train_loss", "validation_loss", "validation_accuracy", "quantum_cost", "eval_quantum_cost"):
            assert x[k] == y[k], k
    assert full["final"]["test_accuracy"] == resumed["final"]["test_accuracy"]
    assert full["final"]["total_shots"] == resumed["final"]["total_shots"] > 0


def test_two_process_ddp_matches_one_process(tmp_path):
    # 65 images, batch 32: shards 16/16, 16/16 and 1/0 (uneven, one empty); dropout masks and BatchNorm
    # statistics must be those of the global batch; entanglement gradients go through the custom Function
    # (the torchrun test below covers autograd gradients and the default head)
    kw = dict(limit_train=65, limit_test=64, epochs=1, dtype="float64", gradient="entanglement",
              head="bn,maxpool:2,fc:16,relu,dropout:0.3", plot=False)
    one = train(tiny(tmp_path / "one", **kw))
    two = train(tiny(tmp_path / "two", nproc=2, **kw))
    assert two["world_size"] == 2
    a, b = state(tmp_path / "one" / "model.pt"), state(tmp_path / "two" / "model.pt")
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=NEAR, rtol=0), k
    assert two["epochs"][0]["train_loss"] == pytest.approx(one["epochs"][0]["train_loss"], abs=NEAR)
    assert two["epochs"][0]["quantum_cost"] == one["epochs"][0]["quantum_cost"]


@pytest.mark.slow  # three 2-process launches: CI runs it with -m slow
def test_two_process_resume_is_bit_identical(tmp_path):
    # per-rank shot streams are gathered into the checkpoint and handed back to their ranks
    kw = dict(limit_train=96, limit_test=32, epochs=1, stride=2, shots=100, checkpoint_every=1, nproc=2, plot=False)
    train(tiny(tmp_path / "full", **kw))
    assert train(tiny(tmp_path / "crash", max_steps=2, **kw))["stopped_at_step"] == 2
    assert len(load_checkpoint(tmp_path / "crash" / "checkpoint.pt")["rng"]["layer"]) == 2
    train(tiny(tmp_path / "crash", resume=True, **kw))
    a, b = state(tmp_path / "full" / "model.pt"), state(tmp_path / "crash" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a torchrun launch of 2 processes: CI runs it with -m slow
def test_torchrun_launch_matches_one_process(tmp_path):
    common = ["--limit-train", "40", "--limit-test", "32", "--epochs", "1", "--filters", "2", "--batch-size", "16",
              "--dtype", "float64", "--no-progress", "--no-plot"]
    assert main(["train", "--out", str(tmp_path / "one"), "--threads", "1", *common]) == 0
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "qucnn", "train", "--out", str(tmp_path / "two"), *common]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = state(tmp_path / "one" / "model.pt"), state(tmp_path / "two" / "model.pt")
    assert all(torch.allclose(a[k], b[k], atol=NEAR, rtol=0) for k in a)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2


def test_compare_trains_every_kind_for_every_seed(tmp_path, capsys):
    args = ["train", "--compare", "--out", str(tmp_path), "--epochs", "1", "--limit-train", "128", "--limit-test",
            "64", "--validation", "64", "--filters", "2", "--no-progress", "--threads", "1", "--seeds", "0,1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "metrics.json").read_text())
    kinds = ("quantum", "frozen", "classical", "fidelity-classical", "classical-matched")
    assert tuple(m["compare"]) == kinds and m["seeds"] == [0, 1] and m["tuning"] is None
    assert m["heads"] == {"plain": "bn,maxpool:2,fc:128,relu"}  # --head's default, by its name
    for kind in kinds:
        c = m["compare"][kind]["plain"]
        assert len(c["test_accuracy"]) == len(c["validation_accuracy"]) == 2
        assert [s["seed"] for s in c["seeds"]] == [0, 1]
        assert [s["test_accuracy"] for s in c["seeds"]] == c["test_accuracy"]
        s = c["summary"]
        assert s["n"] == 2 and s["mean"] == pytest.approx(sum(c["test_accuracy"]) / 2)
        assert s["std"] == pytest.approx(abs(c["test_accuracy"][0] - c["test_accuracy"][1]) / math.sqrt(2))
        assert kind in printed
        for seed in (0, 1):
            run = tmp_path / kind / "plain" / f"seed{seed}"
            assert (run / "model.pt").exists() and (run / "checkpoint.pt").exists()
            assert json.loads((run / "metrics.json").read_text())["final"]["test_accuracy"] == c["test_accuracy"][seed]
    diffs = {(d["a"], d["b"]): d for d in m["differences"]}
    for kind in ("frozen", "classical", "fidelity-classical", "classical-matched"):
        d = diffs[("quantum/plain", f"{kind}/plain")]
        per = [a - b for a, b in zip(m["compare"]["quantum"]["plain"]["test_accuracy"],
                                     m["compare"][kind]["plain"]["test_accuracy"])]
        assert d["per_seed"] == pytest.approx(per) and d["mean"] == pytest.approx(sum(per) / 2)
    assert ("fidelity-classical/plain", "classical/plain") in diffs and len(diffs) == 5
    assert (tmp_path / "learning_curve.png").stat().st_size > 0 and (tmp_path / "compare.png").stat().st_size > 0
    assert m["compare"]["classical"]["plain"]["seeds"][0]["quantum_cost"] is None
    init = build_model("quantum", filters=2, seed=1).first.theta
    assert torch.equal(state(tmp_path / "frozen" / "plain" / "seed1" / "model.pt")["first.theta"], init)
    assert not torch.equal(state(tmp_path / "quantum" / "plain" / "seed1" / "model.pt")["first.theta"], init)
    # same head start: frozen differs from quantum only in the angles; the matched twin has as many
    # first-layer weights as the quantum layer has angles (2 filters x 3 layers x 8 = 48 = 3 x 16)
    models = {k: m["compare"][k]["plain"]["model"] for k in kinds}
    assert models["frozen"]["trainable"] == models["quantum"]["trainable"] - init.numel()
    assert models["classical-matched"]["first_layer_trainable"] == models["quantum"]["first_layer_trainable"] == 48
    assert models["fidelity-classical"]["first_layer_trainable"] == 2 * 16 * 2


def test_validation_split_is_held_out_of_training():
    data = load_embedded_mnist()
    s = make_splits(data, 1000, limit_train=300, limit_test=100)
    assert torch.equal(s.validation_images, data.train_images[7000:])  # the last 1,000 of 8,000
    assert torch.equal(s.train_images, data.train_images[:300]) and torch.equal(s.test_images, data.test_images[:100])
    full = make_splits(data, 1000)
    assert len(full.train_images) == 7000 and torch.equal(full.validation_images, s.validation_images)
    with pytest.raises(ValueError, match="validation 8000 must leave training images"):
        make_splits(data, 8000)


def test_tuning_picks_the_best_validation_point_and_never_reads_the_test_set():
    data = load_embedded_mnist()
    s = make_splits(data, 128, limit_train=256)
    blind = dataclasses.replace(s, test_images=None, test_labels=None)  # any use of the test set would raise
    cfg = tiny(None, epochs=3, compare=True, kinds=("classical", "fidelity-classical"), tune=True, validation=128,
               seeds=(0,), tune_seeds=(1,), head="bn,maxpool:2,fc:16,relu")
    grid = {"lr": (1e-4, 3e-2), "schedule": ("constant",)}
    assert len(grid_points(grid)) == 2
    result = tune(cfg, DistContext(), blind, grid)
    assert result["seeds"] == [1] and result["heads"] == {"custom": "bn,maxpool:2,fc:16,relu"}
    for kind in ("classical", "fidelity-classical"):
        rows = result["results"][kind]["custom"]
        assert [r["lr"] for r in rows] == [1e-4, 3e-2] and result["runs_per_arm"] == 2
        best = max(rows, key=lambda r: (r["validation_accuracy"], -r["validation_loss"]))
        assert result["chosen"][kind]["custom"] == {"lr": best["lr"], "schedule": "constant"}
        assert rows[1]["validation_accuracy"] > rows[0]["validation_accuracy"]  # lr 1e-4 barely moves in 24 steps


def test_tuning_resumes_from_tuning_json(tmp_path, monkeypatch):
    from qucnn.train import compare

    s = make_splits(load_embedded_mnist(), 64, limit_train=64)
    grid = {"lr": (1e-3, 1e-2), "schedule": ("constant",)}
    cfg = tiny(tmp_path, epochs=1, compare=True, kinds=("classical",), tune=True, validation=64, seeds=(0,),
               head="bn,maxpool:2,fc:8,relu")
    first = tune(cfg, DistContext(), s, grid)
    assert (tmp_path / compare.TUNING_FILE).exists()
    calls = []
    monkeypatch.setattr(compare, "fit", lambda *a, **k: calls.append(a) or {})
    again = tune(dataclasses.replace(cfg, resume=True), DistContext(), s, grid)
    assert calls == [] and again["results"] == first["results"]  # every run came from tuning.json


def test_learning_curve_ticks_are_whole_epochs_also_for_one_epoch():
    entry = {"epoch": 1, "train_loss": 2.2, "train_accuracy": 0.3, "validation_loss": 2.1, "validation_accuracy": 0.35}
    fig = curves_figure({"quantum": [entry]})
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1]
    assert fig.axes[0].get_yscale() == "linear"  # 2.1-2.2 spans no decade: no 2.2x10^0 labels
    many = [dict(entry, epoch=e, train_loss=10.0 / e**2) for e in range(1, 13)]
    fig = curves_figure({"quantum": many})
    assert fig.axes[0].get_yscale() == "log" and all(float(t).is_integer() for t in fig.axes[0].get_xticks())


def test_bad_arguments_fail_cleanly_and_lose_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--gradient", "backprop", "--out", str(out)]) == 2
    assert "gradient must be one of" in capsys.readouterr().err and not out.exists()
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "data directory not found" in capsys.readouterr().err and not out.exists()
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err and not out.exists()

    train(tiny(out, epochs=1, limit_train=64, limit_test=32, plot=False))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(before["checkpoint.pt"][: len(before["checkpoint.pt"]) // 2])  # truncated by a crash
    truncated = ckpt.read_bytes()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "1", "--limit-train", "64"]) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "corrupt or truncated" in err
    assert ckpt.read_bytes() == truncated
    assert (out / "model.pt").read_bytes() == before["model.pt"]
    ckpt.write_bytes(before["checkpoint.pt"])
    # a fresh run into a folder holding a checkpoint is refused; a resume of another run too
    assert main(["train", "--out", str(out), "--epochs", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--epochs", "1", "--lr", "0.5"]) == 2
    assert "lr (saved 0.01, now 0.5)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(ValueError, match="unknown head token 'conv:3'"):
        train(tiny(None, head="bn,conv:3"))
    with pytest.raises(ValueError, match="CUDA is not available") if not torch.cuda.is_available() else \
            pytest.raises(ValueError, match="one GPU per process"):
        train(tiny(None, device="cuda", nproc=torch.cuda.device_count() + 1))


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"step": 1, "w": torch.arange(3.0)}, path)
    old = path.read_bytes()

    def dies(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_bytes() == old and no_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    with pytest.raises(ValueError, match="not a qucnn training checkpoint"):
        load_checkpoint(path)


def test_one_cycle_matches_torch_scheduler():
    total, peak = 37, 3e-3
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=total, pct_start=0.2)
    for step in range(total):
        lr, beta1 = one_cycle(step, total, peak)
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=EXACT)
        assert beta1 == pytest.approx(opt.param_groups[0]["betas"][0], rel=EXACT)
        opt.step()
        sched.step()


def test_data_order_is_a_function_of_seed_and_epoch():
    assert torch.equal(data_order(3, 1, 100), data_order(3, 1, 100))
    assert not torch.equal(data_order(3, 1, 100), data_order(3, 2, 100))
    assert sorted(data_order(3, 1, 100).tolist()) == list(range(100))


def test_global_batch_norm_is_batch_norm_on_one_process(gen):
    x = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    ours, ref = GlobalBatchNorm(3).double(), torch.nn.BatchNorm2d(3).double()
    assert torch.allclose(ours(x), ref(x), atol=EXACT)
    assert torch.allclose(ours.running_var, ref.running_var, atol=EXACT)
