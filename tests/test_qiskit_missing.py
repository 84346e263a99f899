"""Without Qiskit: ``import qucnn`` and the PyTorch layer work, ``qucnn.qiskit`` says what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = textwrap.dedent("""
    import sys

    class BlockQiskit:
        # every module whose name starts with "qiskit" (qiskit, qiskit_aer, ...) is unimportable
        def find_spec(self, name, path=None, target=None):
            if name.startswith("qiskit"):
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, BlockQiskit())

    import torch
    import qucnn

    assert not [m for m in sys.modules if m.startswith("qiskit")], "import qucnn imported qiskit"
    layer = qucnn.QuConv2d(1, 2, 2, layers=1, generator=torch.Generator().manual_seed(0))
    out = layer(torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (1, 2, 3, 3) and bool((out >= 0).all())

    import qucnn.qiskit

    calls = {
        "filter_circuit": lambda: qucnn.qiskit.filter_circuit(torch.zeros(1, 2, 2)),
        "sample_swap_tests": lambda: qucnn.qiskit.sample_swap_tests(torch.rand(2, 4), torch.rand(1, 4), 10),
        "default_noise_model": lambda: qucnn.qiskit.default_noise_model(),
        "QiskitExecutor": lambda: qucnn.qiskit.QiskitExecutor(shots=10),
    }
    for name, call in calls.items():
        try:
            call()
        except ImportError as err:
            assert "qucnn[qiskit]" in str(err), (name, str(err))
        else:
            raise SystemExit(f"{name} did not raise ImportError without qiskit")

    from qucnn.cli import main

    assert main(["circuits", "--qasm", "unused-dir"]) == 2
    print("ok")
""")


def test_qucnn_works_and_qiskit_functions_name_the_extra(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert "qucnn[qiskit]" in proc.stderr  # the CLI's error line names the extra too
    assert not (tmp_path / "unused-dir").exists()
