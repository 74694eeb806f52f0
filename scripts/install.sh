#!/usr/bin/env bash
# Install everything the plugin needs into the current Python environment, in the order that works (README, "Install"):
# torch + torchvision first, then basicsr 1.4.2 without build isolation, then the plugin and its dependencies.
# Usage: bash scripts/install.sh [--dev]      (--dev adds pytest, the linters and onnx/onnxruntime for fsr-export)
# Environment: PYTHON (default: python), TORCH_SPEC (default: "torch==2.14.1 torchvision==0.29.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=""
[ "${1:-}" = "--dev" ] && EXTRAS="[dev]"
PIP="$PY -m pip install --disable-pip-version-check --quiet"

# shellcheck disable=SC2086
$PIP $TORCH_SPEC
$PIP setuptools wheel
# basicsr 1.4.2 ships only an sdist whose setup.py imports torch: build it against the torch installed above.
$PIP --no-build-isolation basicsr==1.4.2
# facenet-pytorch ships the MTCNN face detector weights; its metadata pins old torch/numpy/Pillow, so no deps.
$PIP --no-deps facenet-pytorch==2.6.0
# The plugin itself (non-editable: the wheel carries fsr_basicsr_hook.pth, the hook BasicSR's own entry points need).
$PIP --no-build-isolation ".$EXTRAS"
rm -rf build ./*.egg-info
$PY -c "import fsr_basicsr_hook, basicsr, fsr_arch; print('basicsr-fsr installed: basicsr', basicsr.__version__)"
