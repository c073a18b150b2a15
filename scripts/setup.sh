#!/usr/bin/env bash
# Install the pita package and its dependencies into the current Python (>= 3.10).
# The CPU build of torch is installed first, so pip does not pull a multi-GB CUDA build;
# on a GPU machine set PITA_TORCH_SPEC (e.g. "torch" for the default CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  # PIP_INDEX_URL / PIP_EXTRA_INDEX_URL select a CPU wheel index where the default one has none
  "$PY" -m pip install --quiet "${PITA_TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install --quiet -e ".[test]"
