"""PITA: Progressive Inference-Time Annealing for Boltzmann sampling."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("pita")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0"

KB_KJ_PER_MOL_K = 0.0083144626  # Boltzmann constant, kJ/mol/K
