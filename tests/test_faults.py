"""Fault injection: nothing is lost and nothing is silently wrong when runs collide on an output folder, a
checkpoint is damaged or holds NaN, the loss diverges, the disk fills up, shots exceed what can be drawn
exactly, or a command fails early.

Each test names the fault it injects; every one of them failed before the fix it checks. Tiny runs only: a
test takes about a second."""

from __future__ import annotations

import contextlib
import errno
import importlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SIGMAS

import qucnn.train.checkpoint as checkpoint_module
import qucnn.utils.files as files_module
from qucnn import QuConv2d, cli
from qucnn.core.swap_test import estimate_z
from qucnn.train import TrainConfig, load_checkpoint, train
from qucnn.utils.checks import UsageError, check_shots

#: A training run of two steps (64 images, batches of 32) that checkpoints after each.
TINY = ["--limit-train", "64", "--limit-test", "32", "--validation", "0", "--epochs", "1", "--filters", "2",
        "--batch-size", "32", "--threads", "1", "--no-plot", "--no-progress", "--checkpoint-every", "1"]


def _boom(*args, **kwargs):
    raise AssertionError("work started although the command should have been refused")


def _one_line(capsys) -> str:
    """The command's error: one line, the last on stderr (log lines such as a finished epoch may come before),
    no traceback."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- an exclusive lock on the output folder ---------------------------------------------------------------------

@contextlib.contextmanager
def _holder(folder: Path):
    """A second process (forked) that holds ``folder`` as a run's output folder until the block ends; yields its
    PID. It is killed with SIGKILL at the end, as a crashed run would be."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder: claim, report, wait to be killed; never return into pytest
        code = 1
        try:
            os.close(ready_r)
            claim = importlib.import_module("qucnn.utils.outputs").claim_output_dir
            with claim(folder, "--out"):
                os.write(ready_w, b"locked")
                while True:
                    time.sleep(60)
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 16) == b"locked", "the holder process could not lock the folder"
        yield pid
    finally:
        os.close(ready_r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


#: (argv with {out} for the folder held by another run, the function that would start the work, option)
HELD = {
    "train": (["train", "--out", "{out}", *TINY], "qucnn.train.run.fit", "--out"),
    "reproduce": (["reproduce", "forward", "--quick", "--out", "{out}"], "qucnn.cli.reproduce.reproduce", "--out"),
    "analyze plateau": (["analyze", "plateau", "--quick", "--out", "{out}"], "qucnn.cli.analyze.plateau_study",
                        "--out"),
    "analyze shots": (["analyze", "shots", "--quick", "--out", "{out}"], "qucnn.cli.analyze.load_embedded_mnist",
                      "--out"),
    "analyze hardware": (["analyze", "hardware", "--quick", "--out", "{out}"],
                         "qucnn.analysis.hardware.hardware_study", "--out"),
    "analyze plateau --json": (["analyze", "plateau", "--quick", "--json", "{out}/p.json"],
                               "qucnn.cli.analyze.plateau_study", "--json"),
    "noise": (["noise", "--quick", "--out", "{out}"], "qucnn.cli.noise.run_noise", "--out"),
    "circuits": (["circuits", "--qasm", "{out}"], "qucnn.cli.circuits.load_embedded_mnist", "--qasm"),
    "bench --json": (["bench", "--workload", "w1", "--quick", "--json", "{out}/b.json"], "qucnn.cli.bench.run_bench",
                     "--json"),
}


@pytest.mark.parametrize("case", sorted(HELD))
def test_lock_a_second_run_on_a_held_output_folder_exits_2_naming_the_holder(case, tmp_path, monkeypatch, capsys):
    argv, work, option = HELD[case]
    out = tmp_path / "out"
    monkeypatch.setattr(work, _boom)
    with _holder(out) as pid:
        assert cli.main([a.format(out=out) for a in argv]) == 2
        err = _one_line(capsys)
    assert f"{option} {out}: another qucnn run (PID {pid}) is writing into this folder" in err
    assert list(out.iterdir()) == [out / ".qucnn.lock"]  # nothing written, nothing removed


def test_lock_of_a_killed_run_does_not_block_and_is_cleaned_up(tmp_path, capsys):
    out = tmp_path / "run"
    with _holder(out) as pid:
        pass  # SIGKILLed here, its lock file left behind
    assert (out / ".qucnn.lock").read_text().strip() == str(pid)
    assert cli.main(["train", "--out", str(out), *TINY]) == 0
    assert (out / "checkpoint.pt").exists() and not (out / ".qucnn.lock").exists()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow  # ~4 s: a fresh interpreter imports torch; the tests above run the CLI in this process
def test_lock_refuses_a_real_qucnn_train_process(tmp_path):
    """The ``qucnn`` executable itself, in its own process, against a folder another process holds."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with _holder(out) as pid:
        second = subprocess.run([sys.executable, "-m", "qucnn", "train", "--out", str(out), *TINY],
                                capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip() == (f"qucnn train: error: --out {out}: another qucnn run (PID {pid}) is writing "
                                     "into this folder; wait for it to finish or choose another --out")


# -- empty paths --------------------------------------------------------------------------------------------------

EMPTY = {
    "train --out": (["train", "--out", "", *TINY], "qucnn.train.run.fit", "--out"),
    "reproduce --out": (["reproduce", "forward", "--quick", "--out", ""], "qucnn.cli.reproduce.reproduce", "--out"),
    "analyze plateau --out": (["analyze", "plateau", "--quick", "--out", ""], "qucnn.cli.analyze.plateau_study",
                              "--out"),
    "analyze shots --json": (["analyze", "shots", "--quick", "--json", ""], "qucnn.cli.analyze.load_embedded_mnist",
                             "--json"),
    "analyze hardware --out": (["analyze", "hardware", "--quick", "--out", ""],
                               "qucnn.analysis.hardware.hardware_study", "--out"),
    "noise --out": (["noise", "--quick", "--out", ""], "qucnn.cli.noise.run_noise", "--out"),
    "circuits --qasm": (["circuits", "--qasm", ""], "qucnn.cli.circuits.load_embedded_mnist", "--qasm"),
    "circuits --out": (["circuits", "--qasm", "{tmp}", "--out", ""], "qucnn.cli.circuits.load_embedded_mnist",
                       "--out"),
    "bench --json": (["bench", "--workload", "w1", "--json", ""], "qucnn.cli.bench.run_bench", "--json"),
}


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_empty_output_path_is_a_usage_error(case, tmp_path, monkeypatch, capsys):
    argv, work, option = EMPTY[case]
    monkeypatch.setattr(work, _boom)
    monkeypatch.chdir(tmp_path)
    assert cli.main([a.format(tmp=tmp_path / "q") for a in argv]) == 2
    assert f"error: {option} must not be empty" in _one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_empty_output_path_in_the_api_is_a_usage_error():
    with pytest.raises(UsageError, match="out must be a folder path"):
        train(TrainConfig(out="", epochs=1, limit_train=32, progress=False))


# -- checkpoints: integrity, NaN, divergence -----------------------------------------------------------------------

def _interrupted_run(out: Path, *extra: str) -> Path:
    """A run stopped after 2 steps, its checkpoint from step 1 on disk."""
    assert cli.main(["train", "--out", str(out), *TINY, "--max-steps", "2", *extra]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 1
    return out / "checkpoint.pt"


def test_checkpoint_with_a_flipped_bit_refuses_to_resume(tmp_path, capsys):
    path = _interrupted_run(tmp_path / "run")
    raw = bytearray(path.read_bytes())
    theta = torch.load(path, weights_only=True)["model"]["first.theta"]
    at = raw.find(theta.numpy().tobytes())
    assert at > 0 and raw.count(theta.numpy().tobytes()) == 1
    raw[at + 17] ^= 0x04  # one bit of one angle, as a bad disk or copy would flip it
    path.write_bytes(bytes(raw))
    assert torch.load(path, weights_only=True)["model"]["first.theta"].ne(theta).sum() == 1  # torch reads it
    assert cli.main(["train", "--out", str(path.parent), *TINY, "--resume"]) == 2
    err = _one_line(capsys)
    assert "checkpoint corrupted" in err and str(path) in err
    assert path.read_bytes() == bytes(raw)  # left as it was, not overwritten
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("part", ["model", "optimizer"])
def test_checkpoint_with_nan_weights_or_optimizer_state_refuses_to_resume(part, tmp_path, capsys):
    path = _interrupted_run(tmp_path / "run")
    ckpt = torch.load(path, weights_only=True)
    ckpt.pop("integrity", None)
    if part == "model":
        ckpt["model"]["first.theta"][0, 0, 0, 0] = float("nan")
    else:
        next(iter(ckpt["optimizer"]["state"].values()))["exp_avg_sq"].view(-1)[0] = float("inf")
    checkpoint_module.save_checkpoint(ckpt, path)  # sealed: only the values are wrong
    before = path.read_bytes()
    assert cli.main(["train", "--out", str(path.parent), *TINY, "--resume"]) == 2
    err = _one_line(capsys)
    assert f"checkpoint {path} holds NaN or infinite values in {part}[" in err
    assert path.read_bytes() == before


def test_checkpoint_of_format_1_without_integrity_check_is_refused_with_a_reason(tmp_path, capsys):
    path = _interrupted_run(tmp_path / "run")
    ckpt = torch.load(path, weights_only=True)
    ckpt.pop("integrity", None)
    torch.save({**ckpt, "version": 1}, path)  # as qucnn wrote it before checkpoints were sealed
    assert cli.main(["train", "--out", str(path.parent), *TINY, "--resume"]) == 2
    assert "has format version 1, written before checkpoints carried an integrity check" in _one_line(capsys)



def test_checkpoint_without_its_seal_is_refused_as_unsealed(tmp_path, capsys):
    path = _interrupted_run(tmp_path / "run")
    ckpt = torch.load(path, weights_only=True)
    ckpt.pop("integrity")
    torch.save(ckpt, path)
    assert cli.main(["train", "--out", str(path.parent), *TINY, "--resume"]) == 2
    err = _one_line(capsys)
    assert "carries no SHA-256 record of its contents" in err and str(path) in err

def test_checkpoint_resume_after_sealing_is_still_bit_identical(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert cli.main(["train", "--out", str(full), *TINY]) == 0
    _interrupted_run(cut)
    assert cli.main(["train", "--out", str(cut), *TINY, "--resume"]) == 0
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (full, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_checkpoint(cut / "checkpoint.pt")
    assert ckpt["integrity"]["digest"] == checkpoint_module.checkpoint_digest(ckpt)


def test_divergence_a_nan_loss_stops_with_exit_1_and_keeps_the_last_finite_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    # Adam's first step moves every weight by ~lr: 1e30 overflows float32 logits at step 2
    argv = ["train", "--out", str(out), *TINY, "--kind", "classical", "--lr", "1e30", "--schedule", "constant"]
    assert cli.main(argv) == 1
    err = _one_line(capsys)
    assert "training diverged (classical): the training loss became nan by step 2" in err
    assert f"the last finite checkpoint, step 1, is kept in {out / 'checkpoint.pt'}" in err
    ckpt = load_checkpoint(out / "checkpoint.pt")  # sealed and finite
    assert ckpt["step"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]  # no model.pt, no metrics.json


# -- a full disk ------------------------------------------------------------------------------------------------

class _FullDisk:
    """A file whose writes fail with ``code`` (the injected fault)."""

    def __init__(self, fh, code: int) -> None:
        self._fh, self._code = fh, code

    def write(self, data) -> int:
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()


def _fail_writes(monkeypatch, code: int, target: str, after: int = 0) -> None:
    """Make every write of a file named ``target`` fail with ``code``, after ``after`` successful ones."""
    real, seen = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        fh = real(fd, *args, **kwargs)
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{target}."):
            seen.append(fd)
            if len(seen) > after:
                return _FullDisk(fh, code)
        return fh

    monkeypatch.setattr(files_module.os, "fdopen", fdopen)


@pytest.mark.parametrize("code, target", [(errno.ENOSPC, "checkpoint.pt"), (errno.EIO, "metrics.json")])
def test_disk_full_or_io_error_ends_in_one_line_and_keeps_the_previous_files(code, target, tmp_path, monkeypatch,
                                                                             capsys):
    out = tmp_path / "run"
    path = _interrupted_run(out)
    first = path.read_bytes()
    _fail_writes(monkeypatch, code, target)
    assert cli.main(["train", "--out", str(out), *TINY, "--resume"]) == 1
    err = _one_line(capsys)
    name = errno.errorcode[code]
    assert f"cannot write {out / target}: [Errno {code} {name}] {os.strerror(code)}" in err
    assert _no_temp_files(out)
    if target == "checkpoint.pt":
        assert path.read_bytes() == first  # the step-1 checkpoint, intact
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    else:  # the final checkpoint and model went through; metrics.json did not, and no part of it exists
        assert load_checkpoint(path)["step"] == 2 and not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert cli.main(["train", "--out", str(out), *TINY, "--resume"]) == 0  # the kept checkpoint resumes


@contextlib.contextmanager
def _small_disk(folder: Path, monkeypatch):
    """A 200 KB tmpfs at ``folder`` where this machine lets us mount one (root); elsewhere every write under it
    fails with ENOSPC, injected. Yields whether the disk is real."""
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    try:
        if not mounted:
            _fail_writes(monkeypatch, errno.ENOSPC, "")  # every atomic write: names start with "."
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_on_a_real_200k_tmpfs_or_injected(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    with _small_disk(disk, monkeypatch):
        out = disk / "run"
        assert cli.main(["train", "--out", str(out), *TINY]) == 1  # a checkpoint is ~480 KB
        err = _one_line(capsys)
        assert f"cannot write {out / 'checkpoint.pt'}: [Errno {errno.ENOSPC} ENOSPC] " in err
        assert _no_temp_files(disk) and not (out / "checkpoint.pt").exists()


# -- shots ------------------------------------------------------------------------------------------------------

def test_shots_above_2_53_are_refused_everywhere():
    assert check_shots(2**53) == 2**53
    for call in (lambda: check_shots(2**53 + 1), lambda: QuConv2d(1, 1, 2, shots=2**53 + 1),
                 lambda: estimate_z(torch.zeros(2), 2**63), lambda: check_shots(2**64)):
        with pytest.raises(UsageError, match=r"at most 2\*\*53 = 9007199254740992"):
            call()


def test_shots_torch_sampler_is_binomial_at_2_53():
    """Mean and variance of 20,000 estimates at S = 2**53 (half at <Z> = 0, half at <Z> = -0.4), standardised by
    the binomial's, within 5 standard errors."""
    shots, n = 2**53, 20_000
    z_true = torch.cat([torch.zeros(n // 2), torch.full((n // 2,), -0.4)]).double()
    z = estimate_z(z_true, shots, torch.Generator().manual_seed(53))
    x = (z - z_true) / ((1 - z_true**2) / shots).sqrt()
    assert abs(x.mean().item()) < SIGMAS / math.sqrt(n)
    assert abs(x.var().item() - 1) < SIGMAS * math.sqrt(2 / n)
    layer = QuConv2d(1, 1, 2, shots=shots, generator=torch.Generator().manual_seed(0)).double()
    out = layer(torch.rand(1, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (1, 1, 2, 2) and bool(((out >= -1) & (out <= 1)).all())


def test_shots_every_torch_binomial_draw_stays_within_the_exact_range(monkeypatch):
    """torch.binomial's float64 BTRS drifts above 2**44 shots (benchmarks/binomial_exactness.json): larger S are
    drawn as a sum of draws of at most 2**44, and the total is still S."""
    counts, real = [], torch.binomial

    def binomial(count, prob, generator=None):
        counts.append(count.max().item())
        return real(count, prob, generator=generator)

    monkeypatch.setattr(torch, "binomial", binomial)
    z = estimate_z(torch.tensor([1.0, -1.0], dtype=torch.float64), 2**53)
    assert z.tolist() == [1.0, -1.0]  # all shots accounted for: p = 1 and p = 0 give S and 0
    assert max(counts) <= 2**44 and sum(counts) == 2**53


# -- early failures, contradictions ------------------------------------------------------------------------------

EARLY = {  # each failed after creating its output folder (or, with Qiskit missing, fails for that reason)
    "analyze hardware": ["analyze", "hardware", "--quick", "--fake-device", "fake_nowhere", "--out", "{new}"],
    "noise": ["noise", "--quick", "--shots", "0", "--out", "{new}"],
    "circuits": ["circuits", "--qasm", "{new}", "--out", "{tmp}/a-file/sub"],
}


@pytest.mark.parametrize("case", sorted(EARLY))
def test_early_failure_removes_the_folders_it_created(case, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    argv = [a.format(new=tmp_path / "a" / "b", tmp=tmp_path) for a in EARLY[case]]
    assert cli.main(argv) == 2
    _one_line(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_early_failure_keeps_a_folder_that_existed(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    assert cli.main(["noise", "--quick", "--shots", "0", "--out", str(tmp_path / "mine")]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and not list((tmp_path / "mine").iterdir())


def test_resume_with_overwrite_and_demo_without_images_are_usage_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("qucnn.train.run.fit", _boom)
    assert cli.main(["train", "--out", str(tmp_path), "--resume", "--overwrite"]) == 2
    assert "argument --overwrite: not allowed with argument --resume" in _one_line(capsys)
    with pytest.raises(UsageError, match="resume and overwrite contradict each other"):
        train(TrainConfig(out=str(tmp_path), resume=True, overwrite=True, progress=False))
    monkeypatch.setattr("qucnn.cli.demo.load_embedded_mnist", _boom)
    for images in ("0", "-1"):
        assert cli.main(["demo", "--images", images]) == 2
        assert "--images must be a positive int" in _one_line(capsys)


# -- the layer: memory, meta tensors, faint patches, backends that break their contract, pickling ----------------

def test_a_forward_too_large_for_memory_is_refused_at_once(monkeypatch):
    """20-qubit filters on a (1, 4, 512, 512) input: the states alone need tens of GiB. Refused before anything
    large is allocated, within a second, saying what was asked, what it needs and what there is."""
    layer = QuConv2d(4, 1024, 512, layers=3)
    x = torch.zeros(1, 4, 512, 512)
    x[0, 0, 0, 0] = 1.0
    tic = time.perf_counter()
    with pytest.raises(UsageError, match=r"needs about \d+\.\d GiB \(1024 filter states of 20 qubits, input "
                                         r"\(1, 4, 512, 512\)\) but cpu has \d+\.\d GiB available"):
        layer(x)
    assert time.perf_counter() - tic < 1.0
    import qucnn.nn.memory as memory  # the check reads the device's memory: a small machine refuses smaller calls

    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**30)
    with pytest.raises(UsageError, match="but cpu has 1.0 GiB available"):  # 4096 states of 12 qubits, 6 layers
        QuConv2d(1, 4096, 64, layers=6)(torch.rand(1, 1, 64, 64))


def test_a_meta_forward_infers_the_shape_without_computing():
    layer = QuConv2d(3, 5, 3, stride=2, padding=1, layers=2, device="meta")
    out = layer(torch.empty(4, 3, 17, 16, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 5, 9, 8) and out.dtype == torch.float32
    assert layer(torch.empty(3, 17, 16, device="meta")).shape == (5, 9, 8)


@pytest.mark.parametrize("dtype, faint", [(torch.float32, 1e-30), (torch.float64, 1e-200)])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_a_faint_patch_beside_bright_ones_keeps_its_fidelity(dtype, faint, backend):
    """Values 1..255 with a band scaled by 1e-30 (float32) or 1e-200 (float64): every patch of the band keeps its
    fidelity to the dtype's precision (it used to be 0); only exactly all-zero patches give 0."""
    import torch.nn.functional as F

    x = torch.randint(1, 256, (2, 1, 12, 12), generator=torch.Generator().manual_seed(0)).to(dtype)
    x[:, :, 4:8, :] *= faint
    x[1, :, 9:, :] = 0
    layer = QuConv2d(1, 3, 3, layers=2, backend=backend, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        out = layer(x).double()
    states = layer.ansatz.state(layer.theta.detach().double(), method="gates")
    patches = F.unfold(x.double(), 3).transpose(1, 2)  # each patch normalised by its own largest value first
    top = patches.abs().amax(-1, keepdim=True)
    unit = patches / torch.where(top > 0, top, torch.ones_like(top))
    unit = F.pad(unit / unit.norm(dim=-1, keepdim=True).clamp(min=1e-300), (0, 7))
    want = ((unit.to(states.dtype) @ states.conj().T).abs() ** 2).transpose(1, 2).reshape(out.shape)
    assert (out - want).abs().max() <= (1e-6 if dtype == torch.float32 else 1e-13)
    assert torch.equal(out == 0, want == 0) and int((want == 0).sum()) > 0


def test_a_faint_patch_has_a_finite_input_gradient_in_float32():
    x = torch.randint(1, 256, (1, 1, 8, 8), generator=torch.Generator().manual_seed(1)).float()
    x[:, :, :4, :] *= 1e-30
    x.requires_grad_(True)
    layer = QuConv2d(1, 2, 2, layers=1, generator=torch.Generator().manual_seed(0))
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 0, :3].abs().max() > 1e20  # dF/dx ~ 1/||x|| there


def test_a_backend_returning_the_wrong_type_is_named():
    from qucnn.backends import ReferenceBackend

    class Broken(ReferenceBackend):
        name = "broken"

        def maps(self, x, states, spec):
            return super().maps(x, states, spec)[0].tolist()

    with pytest.raises(TypeError, match=r"backend 'broken' \(Broken\)\.maps returned list, expected a pair of tensors"):
        QuConv2d(1, 2, 2, layers=1, backend=Broken())(torch.rand(1, 1, 3, 3))


@pytest.mark.parametrize("name", ["aer", "pennylane"])
def test_layers_on_circuit_backends_copy_pickle_and_save(name, tmp_path):
    import copy
    import pickle

    from qucnn.backends import get_backend

    options = {"fake_device": "fake_torino"} if name == "aer" else {"device": "default.qubit"}
    backend = get_backend(name, seed=3, **options)
    layer = QuConv2d(1, 2, 2, layers=1, shots=50, backend=backend, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(layer, torch.nn.Flatten())
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(clone[0].backend) is type(backend) and clone[0].backend.arguments == backend.arguments
        assert clone[0].backend is not backend
        assert torch.equal(clone[0].theta, layer.theta)
    torch.save(model, tmp_path / "model.pt")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert loaded[0].backend.arguments == backend.arguments and torch.equal(loaded[0].theta, layer.theta)
    fresh = torch.nn.Sequential(QuConv2d(1, 2, 2, layers=1, shots=50, backend=name), torch.nn.Flatten())
    fresh.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert torch.equal(fresh[0].theta, layer.theta)
    with torch.no_grad():
        assert loaded(torch.rand(1, 1, 3, 3)).shape == (1, 8)


def test_a_circuit_backend_holding_a_live_object_says_so_when_pickled():
    import copy
    import pickle

    from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager

    from qucnn.backends import QiskitBackend

    backend = QiskitBackend(pass_manager=generate_preset_pass_manager(1), seed=1)  # holds a local lambda
    with pytest.raises(TypeError, match=r"QiskitBackend cannot be pickled: its argument\(s\) pass_manager are live "
                                        "objects"):
        pickle.dumps(backend)
    clone = copy.deepcopy(backend)  # a deep copy needs no pickle: a backend of its own, the same settings
    assert isinstance(clone, QiskitBackend) and clone.arguments.keys() == backend.arguments.keys()


@pytest.mark.parametrize("backend", ["torch", "reference", "triton"])
@pytest.mark.parametrize("dtype, tiny", [(torch.float32, 1e-40), (torch.float32, 1e-45), (torch.float64, 5e-324)])
def test_a_subnormal_image_gives_its_fidelities_not_nan(backend, dtype, tiny):
    """An image whose largest value is subnormal: its power-of-two scale would overflow to inf (and inf * 0 is
    NaN in every output and in theta's gradient); it gives the fidelities of the same patch at a normal scale."""
    layer = QuConv2d(1, 2, 4, backend=backend, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = torch.zeros(2, 1, 8, 8, dtype=dtype)
    x[0, 0, 3, 3] = tiny
    x[1] = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)
    out = layer(x)
    out.sum().backward()
    normal = x.clone()
    normal[0, 0, 3, 3] = 1.0
    want = QuConv2d(1, 2, 4, backend="reference", generator=torch.Generator().manual_seed(0)).double()(normal.double())
    assert not out.isnan().any() and not layer.theta.grad.isnan().any()
    assert (out.detach().double() - want.detach()).abs().max() <= (1e-6 if dtype == torch.float32 else 1e-14)


def test_a_finished_run_without_its_checkpoint_is_not_replaced_silently(tmp_path, capsys):
    """Results of an earlier run (``metrics.json``, ``model.pt``) are kept unless --overwrite is passed, whatever
    kind of run wrote them and whether its checkpoint is still there."""
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), *TINY]) == 0
    (out / "checkpoint.pt").unlink(missing_ok=True)
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "model.pt")}
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), *TINY, "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "--overwrite" in err
    assert cli.main(["train", "--out", str(out), *TINY, "--compare", "--kinds", "classical", "--seeds", "0"]) == 2
    assert {name: (out / name).read_bytes() for name in before} == before
    assert cli.main(["train", "--out", str(out), *TINY, "--seed", "5", "--overwrite"]) == 0
    assert (out / "metrics.json").read_bytes() != before["metrics.json"]


def test_the_memory_estimate_counts_the_adjoint_backward_of_the_filter_states():
    """A filter gradient forms every layer's n bit-flipped states at once (16 qubits, 64 filters, 10 layers: 5 GiB in
    complex64); the estimate counts them when theta needs a gradient, and not under no_grad."""
    from qucnn.core.geometry import ConvSpec
    from qucnn.nn.memory import call_bytes
    theta = torch.zeros(64, 10, 16, 2, requires_grad=True)
    x, spec = torch.zeros(1, 1, 256, 256), ConvSpec.make(256)
    flipped = 10 * 64 * 2**16 * 16 * 8
    assert call_bytes(x, theta, spec) >= flipped
    with torch.no_grad():
        assert call_bytes(x, theta, spec) < flipped / 8
