#!/usr/bin/env bash
# Set up a fresh machine and run the checks CI runs: install (with dev tools), linters, the test suite.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
bash scripts/install.sh --dev
SOURCES="fsr_arch fsr_data fsr_losses fsr_metrics fsr_models fsr_tools fsr_utils fsr_basicsr_hook.py scripts tests setup.py"
echo "== flake8"; $PY -m flake8 $SOURCES
echo "== isort"; $PY -m isort --check-only --diff $SOURCES
echo "== yapf"; $PY -m yapf --diff --recursive $SOURCES
echo "== pytest"; $PY -m pytest -q "$@" tests
