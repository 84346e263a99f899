#!/usr/bin/env bash
# The GPU check, for a session with one GPU (each step has a time limit). Needs only what the repository needs
# (torch, triton, pytest); no network. Steps, in order of value (STEPS picks some, comma-separated):
#   env       the versions and the device;
#   tune      benchmarks/triton_tune.py: every candidate kernel path (tap-loop forward in the image layout, K = 32 in
#             filter chunks, tap-loop backward, saved overlaps, mixed-precision shots) timed against the measured
#             kernels on W4; prints the MEASURED_PATHS entries for qucnn/backends/triton/plan.py (OUT/tune.txt,
#             OUT/triton_tune_paths.json);
#   pytest    the kernel tests compiled on the GPU (tests/test_triton_kernels.py: every path against float64, the
#             mixed sampler's draws; tests/test_triton.py with the CUDA-graph capture; tests/test_device.py);
#   sampler   benchmarks/triton_mixed_sampler.py compiled: where the mixed sampler's float32 cannot decide, and
#             that it never decides otherwise than float64 (decided_otherwise must be 0 on the GPU's arithmetic);
#   bench-w4  qucnn bench --device cuda --skip-cpu, W4 (60,000 images): qucnn-triton, qucnn-torch, torch-two-conv,
#             the copy bandwidth and the shot rows, each with its error against float64;
#   bench-w3  the same for W3: the training step, the step captured in a CUDA graph, warm epochs (first beside);
#   train     one epoch of qucnn train --compare on the GPU (the quantum model against its classical twin).
# Usage: bash benchmarks/gpu_check.sh [OUT]    (default OUT: benchmarks/gpu-out; everything lands there, and
# TARBALL (default OUT/gpu-out.tgz) holds all of it but *.pt, refreshed after every step). All steps: at most
# 14 minutes; STEPS=env,tune,pytest,sampler at most 9, then (table filled) STEPS=bench-w4,bench-w3 at most 4.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
PY="${PYTHON:-python3}"
TARBALL="${TARBALL:-$OUT/gpu-out.tgz}"
STEPS=",${STEPS:-env,tune,pytest,sampler,bench-w4,bench-w3,train},"
status=0

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, keep its output in OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    [[ "$STEPS" == *",$name,"* ]] || return 0
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
step tune 270 "$PY" benchmarks/triton_tune.py --budget-s 210 --json "$OUT/triton_tune_paths.json"
step pytest 180 "$PY" -m pytest tests/test_triton_kernels.py tests/test_triton.py tests/test_device.py \
    --device cuda -m "not slow" -q -p no:cacheprovider --durations=15 --continue-on-collection-errors
step sampler 60 "$PY" benchmarks/triton_mixed_sampler.py --device cuda --json "$OUT/triton_mixed_sampler.json"
step bench-w4 150 "$PY" -m qucnn bench --device cuda --skip-cpu --workload w4 --json "$OUT/bench-w4.json"
step bench-w3 90 "$PY" -m qucnn bench --device cuda --skip-cpu --workload w3 --json "$OUT/bench-w3.json"
step train 60 "$PY" -m qucnn train --device cuda --compare --kinds quantum,classical --epochs 1 --no-progress \
    --out "$OUT/train" --overwrite
exit $status
