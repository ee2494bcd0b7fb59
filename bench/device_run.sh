#!/usr/bin/env bash
# The GPU figures, in device calls of at most 10 minutes each (results under $OUT, or ./bench_out):
#   bash bench/device_run.sh tests                  GPU tests, then the measured peaks
#   bash bench/device_run.sh bench [gpu_peers.py arguments]
# The GPU tests compile every Triton config of every case, which takes most of their time on a machine whose Triton
# cache starts empty: they run in 8 processes where pytest-xdist is installed; the tests marked `timing` run after
# them, alone on the GPU. On a fresh machine the first part takes about 240 s.
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD TENSORKILN_SHARED=${TENSORKILN_SHARED:-$PWD/.devshared} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
case "${1:-}" in
  tests)
    parallel=$(python -c "import xdist" 2>/dev/null && echo "-n 8")
    # -v names every test as it ends: where the time limit stops the run, the file shows which ones never ran
    timeout ${TEST_TIMEOUT:-420} python -m pytest -v -p no:cacheprovider $parallel -m "not timing" tests/gpu \
      > "$OUT/pytest_gpu.txt" 2>&1
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_gpu.txt" | tail -20
    timeout 90 python -m pytest -q -p no:cacheprovider -m timing tests/gpu 2>&1 | tee -a "$OUT/pytest_gpu.txt"
    python bench/gpu_peaks.py | tee "$OUT/peaks.json" ;;
  bench)
    shift
    python bench/gpu_peers.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.txt" ;;
  *)
    echo "usage: bash bench/device_run.sh tests | bench [gpu_peers.py arguments]" >&2; exit 2 ;;
esac
