"""The command line as a user meets it: unwritable outputs fail before any work (exit 2, one line), Ctrl-C
ends with one line saying how to resume (exit 130), bad labels stop ``qucnn train``, messages are honest and
name the flags typed, argparse errors are one line, progress bars only on a terminal (or when asked), and
``qucnn bench`` times its small workloads on one thread and says so."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import qucnn
from qucnn import cli
from qucnn.backends import forget_instances
from qucnn.bench import Case
from qucnn.cli import train as train_cli
from qucnn.experiments.common import progress as experiment_progress

SRC = str(Path(qucnn.__file__).resolve().parents[1])


def _boom(*args, **kwargs):
    raise AssertionError("work started before the output path was checked")


#: (argv with {bad} for a path under a file, the function that would start the work, the option named)
UNWRITABLE = {
    "train": (["train", "--out", "{bad}", "--epochs", "1", "--limit-train", "64", "--no-progress"],
              "qucnn.train.run.fit", "--out"),
    "reproduce": (["reproduce", "forward", "--quick", "--out", "{bad}"], "qucnn.cli.reproduce.reproduce", "--out"),
    "circuits --qasm": (["circuits", "--qasm", "{bad}"], "qucnn.cli.circuits.load_embedded_mnist", "--qasm"),
    "circuits --out": (["circuits", "--qasm", "{ok}", "--out", "{bad}"], "qucnn.cli.circuits.load_embedded_mnist",
                       "--out"),
    "analyze plateau": (["analyze", "plateau", "--quick", "--out", "{bad}"], "qucnn.cli.analyze.load_embedded_mnist",
                        "--out"),
    "analyze plateau --json": (["analyze", "plateau", "--quick", "--json", "{bad}/p.json"],
                               "qucnn.cli.analyze.load_embedded_mnist", "--json"),
    "analyze shots": (["analyze", "shots", "--quick", "--out", "{bad}"], "qucnn.cli.analyze.load_embedded_mnist",
                      "--out"),
    "noise": (["noise", "--quick", "--out", "{bad}"], "qucnn.cli.noise.run_noise", "--out"),
    "bench --json": (["bench", "--workload", "w1", "--quick", "--json", "{bad}/b.json"], "qucnn.cli.bench.run_bench",
                     "--json"),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_an_unwritable_output_fails_before_any_work(case, tmp_path, monkeypatch, capsys):
    argv, work, option = UNWRITABLE[case]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(work, _boom)
    argv = [a.format(bad=blocker / "sub", ok=tmp_path / "ok") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    command = " ".join(argv[:2] if argv[0] == "analyze" else argv[:1])  # "qucnn analyze plateau: error: ..."
    assert len(err.splitlines()) == 1 and err.startswith(f"qucnn {command}: error: {option} {blocker / 'sub'}")
    assert f"{blocker} is a file, not a folder" in err


def test_a_json_path_that_is_a_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("qucnn.cli.bench.run_bench", _boom)
    assert cli.main(["bench", "--workload", "w1", "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path}: is a folder; give the path of a file to write" in capsys.readouterr().err


def _idx(path: Path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(">u1").tobytes())


def test_train_refuses_a_label_byte_of_200(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "idx"
    data.mkdir()
    labels = np.arange(20) % 10
    labels[13] = 200
    for prefix, n, y in (("train", 20, labels), ("t10k", 10, np.arange(10))):
        _idx(data / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8)))
        _idx(data / f"{prefix}-labels-idx1-ubyte", y)
    monkeypatch.setattr("qucnn.train.run.fit", _boom)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "out"), "--kernel", "2", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{data / 'train-labels-idx1-ubyte'}: the labels skip classes" in err and "largest label 200" in err
    assert not (tmp_path / "out").exists()


def _hint_args(out: Path, **kw) -> argparse.Namespace:
    args = dict(out=str(out), compare=False, kind="quantum", resume=False, started=time.time(),
                argv=["train", "--out", str(out), "--overwrite", "--epochs", "2"])
    return argparse.Namespace(**{**args, **kw})


def test_resume_hint_names_only_this_runs_checkpoints(tmp_path):
    out = tmp_path / "run"
    assert train_cli.resume_hint(_hint_args(out)).startswith("no checkpoint written yet")
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    old = time.time() - 60
    os.utime(out / "checkpoint.pt", (old, old))  # an older run's, found by an --overwrite run
    assert train_cli.resume_hint(_hint_args(out)).startswith("no checkpoint written yet")
    hint = train_cli.resume_hint(_hint_args(out, resume=True))  # a resumed run continues from it
    assert hint == f"continue with: qucnn train --out {shlex.quote(str(out))} --epochs 2 --resume"
    (out / "checkpoint.pt").touch()  # written by this run, which started earlier
    assert train_cli.resume_hint(_hint_args(out, started=time.time() - 5)).startswith("continue with: qucnn train")
    compare = tmp_path / "cmp"
    (compare / "frozen" / "plain" / "seed1").mkdir(parents=True)
    assert train_cli.resume_hint(_hint_args(compare, compare=True)).startswith("no checkpoint written yet")
    # a comparison's runs: OUT/<kind>/<head>/seed<S>/
    (compare / "frozen" / "plain" / "seed1" / "checkpoint.pt").write_bytes(b"")
    assert train_cli.resume_hint(_hint_args(compare, compare=True, started=time.time() - 5)).startswith("continue")


def test_ctrl_c_prints_how_to_resume_and_the_resumed_run_finishes(tmp_path, capsys):
    out = tmp_path / "run"
    # 20 epochs of 8 steps: after the first checkpoint over 150 steps remain, so the signal finds the run still
    # training even when this process is descheduled for a while on a loaded machine
    argv = ["train", "--out", str(out), "--limit-train", "256", "--limit-test", "32", "--validation", "0", "--filters",
            "2", "--epochs", "20", "--batch-size", "32", "--checkpoint-every", "1", "--threads", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    # a background job of a non-interactive shell starts with SIGINT ignored, and Python keeps an ignored SIGINT
    # (no KeyboardInterrupt): give the child the default disposition, as a terminal would
    proc = subprocess.Popen([sys.executable, "-m", "qucnn", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("qucnn train: interrupted; continue with: qucnn train --out ")
    assert last.endswith(" --resume") and not (out / "metrics.json").exists()
    resume = shlex.split(last.split("continue with: ", 1)[1])[1:]
    assert cli.main(resume + ["--no-plot"]) == 0  # --no-plot: not part of what a resume must repeat
    printed = capsys.readouterr().out
    assert f"wrote {out}/metrics.json, model.pt, checkpoint.pt" in printed and "learning_curve" not in printed
    assert (out / "metrics.json").exists() and not (out / "learning_curve.png").exists()


# -- progress bars, thread settings, error messages ------------------------------------------------------------

TINY_TRAIN = ["--limit-train", "64", "--limit-test", "32", "--validation", "0", "--epochs", "1", "--filters", "2",
              "--batch-size", "32", "--threads", "1", "--no-plot"]


def _bars_in_runs(monkeypatch):
    """Stand-ins for the long work of bench and reproduce that draw the bars those commands draw (and no plateau
    figure)."""

    def bench(*args, progress, **kwargs):
        for label in ("a", "b", "c"):
            progress(label)
        return {"rows": [], "targets": [], "notes": []}

    def reproduce(names, config, argv):
        for _ in experiment_progress(range(3), "steps"):
            pass
        return {}

    monkeypatch.setattr("qucnn.cli.bench.run_bench", bench)
    monkeypatch.setattr("qucnn.cli.reproduce.reproduce", reproduce)
    monkeypatch.setattr("qucnn.cli.reproduce._print_summary", lambda *a: None)
    monkeypatch.setattr("qucnn.cli.analyze.plot_plateau", lambda *a: None)  # the figure is not what is tested


PROGRESS_COMMANDS = {
    "train": ["train", "--out", "{out}", *TINY_TRAIN],
    "bench": ["bench", "--workload", "w1"],
    "reproduce": ["reproduce", "forward", "--out", "{out}"],
    "analyze plateau": ["analyze", "plateau", "--qubits", "2", "--depths", "1", "--samples", "8", "--out", "{out}"],
}


@pytest.mark.parametrize("flag, bars", [(None, False), ("--progress", True), ("--no-progress", False)])
@pytest.mark.parametrize("command", sorted(PROGRESS_COMMANDS))
def test_progress_bars_only_on_a_terminal_unless_asked(command, flag, bars, tmp_path, monkeypatch, capsys):
    _bars_in_runs(monkeypatch)
    argv = [a.format(out=tmp_path / "out") for a in PROGRESS_COMMANDS[command]] + ([flag] if flag else [])
    assert cli.main(argv) == 0
    err = capsys.readouterr().err  # captured: not a terminal, as in a redirected log
    assert ("\r" in err) == bars, err


def test_progress_and_no_progress_together_is_a_usage_error(capsys):
    assert cli.main(["train", "--progress", "--no-progress"]) == 2
    assert "argument --no-progress: not allowed with argument --progress" in capsys.readouterr().err


def test_bench_times_the_small_workloads_on_one_thread_and_records_it(tmp_path, monkeypatch):
    seen: list[int] = []
    monkeypatch.setattr("qucnn.bench.workloads.w1", lambda size, devices: (
        [Case("probe", lambda: seen.append(torch.get_num_threads()), items=1, unit="call")], []))
    before = torch.get_num_threads()
    for threads, expected in ((None, 1), ("2", 2)):
        seen.clear()
        path = tmp_path / f"bench-{threads}.json"
        argv = ["bench", "--workload", "w1", "--repeats", "1", "--json", str(path)]
        assert cli.main(argv + (["--threads", threads] if threads else [])) == 0
        result = json.loads(path.read_text())
        assert set(seen) == {expected}  # every call of the timed section, warm-up included
        assert result["config"]["torch_threads"] == {"w1": expected}
        assert [r["torch_threads"] for r in result["rows"]] == [expected]
        assert f"(torch threads: {expected})" in path.with_suffix(".md").read_text()
        assert torch.get_num_threads() == before  # the caller's setting is restored


@pytest.mark.parametrize("flag", ["--limit-train", "--gradient-shots", "--checkpoint-every", "--batch-size"])
def test_errors_name_the_flag_the_user_typed(flag, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("qucnn.train.run.fit", _boom)
    assert cli.main(["train", "--out", str(tmp_path / "run"), flag, "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qucnn train: error: {flag} must be a positive int, got 0"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, prog, message", [
    (["train", "--epochs", "x"], "qucnn train", "argument --epochs: invalid int value: 'x'"),
    (["analyze", "plateau", "--samples", "many"], "qucnn analyze plateau", "argument --samples: invalid int value"),
    (["bench", "--workload", "w9"], "qucnn bench", "argument --workload: invalid choice: 'w9'"),
    (["trian"], "qucnn", "argument COMMAND: invalid choice: 'trian'"),
])
def test_argparse_errors_are_one_line_with_a_help_hint(argv, prog, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err
    assert err.startswith(f"{prog}: error: {message}") and err.strip().endswith(f"(see '{prog} --help')")


class _BlockQiskit:
    """A meta-path finder that makes every ``qiskit*`` module unimportable, as on a machine without the extra."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("qiskit"):
            raise ImportError(f"{name} is blocked for this test")
        return None


@pytest.mark.parametrize("argv", [
    ["reproduce", "forward", "--backend", "aer", "--out", "{out}"],
    ["train", "--backend", "aer", "--shots", "10", "--out", "{out}", *TINY_TRAIN],
    ["analyze", "hardware", "--quick", "--out", "{out}"],
])
def test_the_aer_missing_message_says_it_once_and_quotes_the_install_command(argv, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m.split(".")[0].startswith("qiskit") or m.startswith("qucnn.qiskit.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BlockQiskit(), *sys.meta_path])
    forget_instances()  # no "aer" instance made by an earlier test
    monkeypatch.setattr("qucnn.train.run.fit", _boom)
    assert cli.main([a.format(out=tmp_path / "out") for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.count("pip install 'qucnn[qiskit]'") == 1 and err.count("qiskit-aer") == 1, err
    assert not (tmp_path / "out").exists()
