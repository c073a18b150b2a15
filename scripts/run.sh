#!/usr/bin/env bash
# Set up and run the default pipeline (config.yaml) on this machine with all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec snakemake --cores all "$@"
