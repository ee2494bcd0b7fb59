#!/usr/bin/env bash
# Sets up tensorkiln for development on a fresh machine (CPU): the CPU build of PyTorch first, so that
# the torch requirement does not pull a multi-GB CUDA build, then the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[test]"
python3 -c "import tensorkiln, torch, onnx, onnxruntime; print('tensorkiln', tensorkiln.__version__, 'torch', torch.__version__)"
