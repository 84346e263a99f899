#!/usr/bin/env bash
# The GPU check of issue 13, for a session with one GPU (each step has a time limit; they add up to 8 minutes).
# Needs only what the repository needs (torch, triton, pytest); no network.
#   1. qucnn bench --device cuda --skip-cpu, W4 (60,000 images) and W3: qucnn-triton, qucnn-torch,
#      torch-two-conv, the copy bandwidth and the shot rows, each with its error against float64;
#   2. the kernel tests compiled on the GPU (tests/test_triton.py, with the CUDA-graph capture), and
#      tests/test_device.py (the Triton path and the torch routes on the GPU);
#   3. one epoch of qucnn train --compare on the GPU (the quantum model against its classical twin).
# Usage: bash benchmarks/gpu_check.sh [OUT]    (default OUT: benchmarks/gpu-out; everything lands there, and
# TARBALL (default OUT/gpu-out.tgz) holds all of it but *.pt, refreshed after every step, for a device that
# returns few files: TARBALL=$OUT/gpu-out.tgz bash benchmarks/gpu_check.sh /tmp/gpu-out)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
PY="${PYTHON:-python3}"
TARBALL="${TARBALL:-$OUT/gpu-out.tgz}"
status=0

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, keep its output in OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$OUT/log.txt"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/log.txt"
    tail -n 20 "$OUT/$name.txt"
    [ "$rc" -eq 0 ] || status=1
    tar czf "$TARBALL.tmp" --exclude='*.pt' --exclude='*.tgz*' -C "$OUT" . && mv "$TARBALL.tmp" "$TARBALL"
}

step env 30 "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, torch.cuda.get_device_name(0))"
step bench-w4 150 "$PY" -m qucnn bench --device cuda --skip-cpu --workload w4 --json "$OUT/bench-w4.json"
step bench-w3 75 "$PY" -m qucnn bench --device cuda --skip-cpu --workload w3 --json "$OUT/bench-w3.json"
step pytest 150 "$PY" -m pytest tests/test_triton.py tests/test_device.py --device cuda -m "not slow" -q \
    -p no:cacheprovider --durations=15
step train 60 "$PY" -m qucnn train --device cuda --compare --kinds quantum,classical --epochs 1 --no-progress \
    --out "$OUT/train" --overwrite
exit $status
