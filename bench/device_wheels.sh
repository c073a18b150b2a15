#!/bin/bash
# Wheels of the packages a lent GPU machine lacks (its image has torch, numpy, scipy, h5py, pandas,
# pyyaml, tqdm, matplotlib, scikit-learn; not openmm, mdtraj, POT, deeptime), for its Python 3.12,
# at the versions installed here, into .whl/ (git-ignored). About 56 MB: with the 7 MB working tree
# it stays under the 64 MiB a device call carries. The generated bench/device_plan.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
platforms=(--platform manylinux2014_x86_64)
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "openmm==$(version openmm)" "mdtraj==$(version mdtraj)" "pot==$(version pot)" \
  "deeptime==$(version deeptime)"
du -sh .whl
