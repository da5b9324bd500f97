#!/usr/bin/env bash
# The GPU half of the benchmark suite, in one call on a GPU machine that has Python >= 3.10 with torch,
# transformers and accelerate but no ray, bpy or network. It installs the few wheels it needs from bench/wheels/
# (built beforehand on a machine with network: `make gpu-wheels`), then runs each GPU benchmark under its own time
# limit (at most 9 minutes in all on one H100-class GPU), the first being the paper path's model code in bf16 on CUDA
# (bench/gpu_paper_path.py: the checks `make rehearsal` makes on CPU). Results: JSON in bench/results/ and, when
# $OUT is set (the device tool's output folder), copies there. The planner reads them in place of its assumptions.
#
#   bash bench/gpu.sh                      # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! ls bench/wheels/*.whl >/dev/null 2>&1; then
    echo "error: no wheels in bench/wheels (run 'make gpu-wheels' on a machine with network first)" >&2
    exit 2
fi
python -m pip install --no-index --no-deps --quiet --disable-pip-version-check bench/wheels/*.whl \
    || { echo "error: installing bench/wheels failed" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
run() {  # run LIMIT_S SCRIPT ARGS...: one benchmark; a failure or a timeout is reported and the next one runs
    local limit=$1
    shift
    echo "== $* (limit ${limit} s)"
    timeout "$limit" python "$@"
    local code=$?
    if [ $code -ne 0 ]; then
        echo "warning: $1 exited with $code" >&2
        status=1
    fi
}
run 120 bench/gpu_paper_path.py --out bench/results/gpu_paper_path.json
run 200 bench/train_bench.py --full --out bench/results/train_gpu.json
run 100 bench/gpu_bench.py --out bench/results/gpu.json
run 100 bench/depth_bench.py --sizes 512 --batches 1 4 16 --no-cpu --out bench/results/depth_gpu.json
if [ -n "${OUT:-}" ]; then
    cp bench/results/gpu.json bench/results/depth_gpu.json bench/results/train_gpu.json \
        bench/results/gpu_paper_path.json "$OUT"/ 2>/dev/null || true
fi
exit $status
