#!/usr/bin/env bash
# Everything the GPU figures need, in one device call: GPU tests, measured peaks, then the peer benchmark.
#   bash bench/device_run.sh [gpu_peers.py arguments]      (results under $OUT, or ./bench_out)
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD TENSORKILN_SHARED=${TENSORKILN_SHARED:-$PWD/.devshared}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout 240 python -m pytest -q -p no:cacheprovider -x tests/gpu 2>&1 | tail -25 | tee "$OUT/pytest_gpu.txt"
python bench/gpu_peaks.py | tee "$OUT/peaks.json"
python bench/gpu_peers.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.txt"
