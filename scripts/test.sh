#!/usr/bin/env bash
# Set up and run the test suite (the fast tests; `python -m pytest -m slow` runs the slow ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
