#!/usr/bin/env bash
# Sets up tensorkiln for development on a fresh machine (CPU): the CPU build of PyTorch first, so that
# the torch requirement does not pull a multi-GB CUDA build, then the package with its test extras.
# pip shows what it collects and downloads (with progress bars on a terminal); each stage says what it does.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
start=$SECONDS
stage() { echo; echo "==> [$1/3] $2 ($((SECONDS - start)) s so far)"; }

stage 1 "PyTorch 2.13 (the CPU build: a few hundred MB the first time, already there on later runs)"
python3 -m pip install --progress-bar on "torch==2.13.0"
stage 2 "tensorkiln (editable) with its test extras: numpy, onnx, onnxruntime, pytest, triton, ..."
python3 -m pip install --progress-bar on -e ".[test]"
stage 3 "checking the install"
python3 -c "import tensorkiln, torch, onnx, onnxruntime; print('tensorkiln', tensorkiln.__version__, 'torch', torch.__version__)"
if command -v kiln >/dev/null; then
  echo "kiln is $(command -v kiln)"
else
  echo "note: the kiln command is not on PATH; add pip's script folder to PATH ($(python3 -c \
'import sysconfig; print(sysconfig.get_path("scripts"))')), or run it as python3 -m tensorkiln.cli.main"
fi
echo "==> set up in $((SECONDS - start)) s; next: kiln demo"
