"""Molecules: a PDB structure plus OpenMM force-field XML files.

The potential is the openmm.System that `openmm.app.ForceField.createSystem` builds (no
cutoff, no constraints, flexible water). It is evaluated either by batched torch kernels
that read the System's own parameters (backend="torch", pita.systems.torch_forcefield), or
by looping an OpenMM Context over the batch (backend="openmm": the reference and fallback
for force fields the torch kernels do not cover).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import KB_KJ_PER_MOL_K
from ..errors import PitaInputError, brief, clip, finite_number, name_list
from .base import System

log = logging.getLogger(__name__)

BACKENDS = ("torch", "openmm")
SPEC_KEYS = ("name", "pdb", "forcefield", "length_scale", "backend", "platform", "device", "dtype",
             "compile", "chunk_size")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def read_pdb(path: str | Path):
    """openmm.app.PDBFile, or PitaInputError naming the file and the problem."""
    from openmm import app

    path = Path(path)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        found = False
    if not found:
        raise PitaInputError(f"{clip(str(path))}: PDB file not found")
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise PitaInputError(f"{path}: cannot read PDB file: {_one_line(err)}") from err
    if not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
        raise PitaInputError(f"{path}: no atoms in PDB file (no ATOM/HETATM records)")
    try:
        pdb = app.PDBFile(str(path))
    except Exception as err:  # OpenMM raises assorted types for malformed records
        raise PitaInputError(f"{path}: cannot read PDB file: {_one_line(err)}") from err
    if pdb.topology.getNumAtoms() == 0:
        raise PitaInputError(f"{path}: no atoms in PDB file")
    if len(pdb.positions) != pdb.topology.getNumAtoms():
        raise PitaInputError(f"{path}: malformed PDB file (coordinates do not match the atom records)")
    return pdb


def build_openmm_system(pdb, pdb_path, forcefield: list[str]):
    """ForceField(*forcefield).createSystem without cutoff or constraints."""
    from openmm import app

    try:
        ff = app.ForceField(*forcefield)
    except Exception as err:
        raise PitaInputError(f"forcefield {brief(forcefield, 200)}: cannot load force field files: "
                             f"{_one_line(err)[:300]}") from err
    try:
        return ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    except Exception as err:
        raise PitaInputError(
            f"{pdb_path}: force field {', '.join(forcefield)} cannot be applied: {_one_line(err)}") from err


class OpenMMEvaluator:
    """Energies and forces by looping an OpenMM Context over a batch (one call per configuration)."""

    def __init__(self, openmm_system, platform: str = "Reference"):
        import openmm as mm

        try:
            plat = mm.Platform.getPlatformByName(platform)
        except Exception as err:
            names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
            raise PitaInputError(f"system.platform: unknown OpenMM platform {platform!r}; available: {', '.join(names)}") from err
        self.platform = platform
        # the integrator is never stepped; the Context is only a calculator
        self.context = mm.Context(openmm_system, mm.VerletIntegrator(0.001), plat)

    def evaluate(self, x: np.ndarray, forces: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """x (B, n, 3) nm -> energies (B,) kJ/mol and forces (B, n, 3) kJ/mol/nm."""
        from openmm import unit

        x = np.asarray(x, dtype=np.float64)
        energies = np.empty(len(x))
        out = np.empty_like(x) if forces else None
        for k, xk in enumerate(x):
            self.context.setPositions(xk)
            state = self.context.getState(getEnergy=True, getForces=forces)
            energies[k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            if forces:
                out[k] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return energies, out


class MolecularSystem(System):
    """A molecule in implicit solvent (or vacuum): PDB + OpenMM force-field files.

    Positions are (batch, n_atoms, 3) tensors in nm; energies kJ/mol; forces kJ/mol/nm.
    """

    units = "kJ/mol,nm"
    kB = KB_KJ_PER_MOL_K
    mean_free = True

    def __init__(self, pdb: str | Path, forcefield: list[str] | tuple[str, ...] | str, name: str | None = None,
                 length_scale: float | None = None, backend: str = "torch", platform: str = "Reference",
                 device: str | None = None, dtype: str | None = None, compile: bool = False,
                 chunk_size: int | None = None):
        super().__init__()
        import mdtraj

        from . import resolve_data_path

        if isinstance(forcefield, str):
            forcefield = [forcefield]
        if not forcefield:
            raise PitaInputError("system.forcefield: give at least one force-field XML file")
        if not isinstance(forcefield, (list, tuple)) or not name_list(list(forcefield)):
            raise PitaInputError(f"system.forcefield: must be a list of force-field file names, got {brief(forcefield)}")
        if name is not None and not (isinstance(name, str) and name.strip() and name.isprintable()):
            raise PitaInputError(f"system.name: must be a non-empty printable string, got {brief(name)}")
        if length_scale is not None and not (finite_number(length_scale) and length_scale > 0):
            raise PitaInputError(f"system.length_scale: must be a positive finite number, got {brief(length_scale)}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise PitaInputError(f"system.chunk_size: must be a positive integer, got {brief(chunk_size)}")
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError, ValueError):
                raise PitaInputError(f"system.device: not a torch device: {brief(device)}") from None
        if backend not in BACKENDS:
            raise PitaInputError(f"system.backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        if dtype is not None and dtype not in DTYPES:
            raise PitaInputError(f"system.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        self.pdb_spec = str(pdb)  # as given: resolved against data/ again on load
        self.pdb = str(resolve_data_path(pdb))
        self.forcefield = [str(f) for f in forcefield]
        self.name = name or Path(self.pdb).stem
        self.backend = backend
        self.platform = platform
        self.device = torch.device(device) if device else None
        self.dtype = DTYPES[dtype] if dtype else None
        self.compile = bool(compile)
        self.chunk_size = None if chunk_size is None else int(chunk_size)  # None: 1024 on CPU, 65536 on CUDA

        pdb_file = read_pdb(self.pdb)
        self.openmm_topology = pdb_file.topology
        self.openmm_system = build_openmm_system(pdb_file, self.pdb, self.forcefield)
        self.topology = mdtraj.Topology.from_openmm(pdb_file.topology)
        self.n_atoms = self.openmm_system.getNumParticles()
        self.reference_positions = np.array(
            [[v.x, v.y, v.z] for v in pdb_file.getPositions().value_in_unit(_nm())], dtype=np.float64)
        self._masses = np.array(
            [self.openmm_system.getParticleMass(i).value_in_unit(_dalton()) for i in range(self.n_atoms)])
        self.length_scale = float(length_scale) if length_scale is not None else self.default_length_scale()
        if not self.length_scale > 0:
            raise PitaInputError(f"system.length_scale: must be positive, got {length_scale!r}")

        self.torch_forcefield = None
        self._openmm = None
        if backend == "torch":
            from .torch_forcefield import TorchForceField, UnsupportedForceError

            try:
                self.torch_forcefield = TorchForceField(self.openmm_system, chunk_size=self.chunk_size,
                                                        compile=self.compile)
            except UnsupportedForceError as err:
                raise UnsupportedForceError(f"forcefield {', '.join(self.forcefield)}: {err}") from None
        else:
            self._openmm = OpenMMEvaluator(self.openmm_system, platform)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "MolecularSystem":
        """From a config mapping: name, pdb, forcefield, length_scale, backend, platform, device, dtype."""
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise PitaInputError(f"system.{unknown[0]}: unknown key; expected {', '.join(SPEC_KEYS)}")
        for key in ("pdb", "forcefield"):
            if key not in spec:
                raise PitaInputError(f"system.{key}: missing (a molecule needs pdb and forcefield)")
        return cls(**spec)

    def spec(self) -> dict:
        out = {"name": self.name, "pdb": self.pdb_spec, "forcefield": list(self.forcefield),
               "length_scale": self.length_scale, "backend": self.backend}
        if self.backend == "openmm":
            out["platform"] = self.platform
        if self.device is not None:
            out["device"] = str(self.device)
        if self.dtype is not None:
            out["dtype"] = str(self.dtype).removeprefix("torch.")
        if self.compile:
            out["compile"] = True
        return out

    def default_length_scale(self) -> float:
        """RMS distance of the reference atoms from their centroid (nm)."""
        x = self.reference_positions
        return float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))

    @property
    def masses(self) -> np.ndarray:
        """Atomic masses, amu."""
        return self._masses

    def openmm_evaluator(self, platform: str = "Reference") -> OpenMMEvaluator:
        """An OpenMM Context loop over this system (reference values for checks and benchmarks)."""
        return OpenMMEvaluator(self.openmm_system, platform)

    # ---- energies ----------------------------------------------------------------------
    def _check(self, x):
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), dtype=self.dtype or torch.float64, device=self.device)
        return super()._check(x)

    @staticmethod
    def _working_dtype(x: torch.Tensor) -> torch.Tensor:
        return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float64)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        xw = self._working_dtype(x)
        if self.torch_forcefield is not None:
            e = self.torch_forcefield.energy(xw)
        else:
            e = torch.as_tensor(self._openmm.evaluate(xw.detach().cpu().numpy(), forces=False)[0])
        return e.to(device=x.device, dtype=xw.dtype)

    def _energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xw = self._working_dtype(x)
        if self.torch_forcefield is not None:
            e, f = self.torch_forcefield.energy_and_forces(xw.detach())
        else:
            e, f = map(torch.as_tensor, self._openmm.evaluate(xw.detach().cpu().numpy(), forces=True))
        return e.to(device=x.device, dtype=xw.dtype), f.to(device=x.device, dtype=xw.dtype)

    def __repr__(self) -> str:
        return (f"MolecularSystem(name={self.name!r}, n_atoms={self.n_atoms}, forcefield={self.forcefield}, "
                f"backend={self.backend!r})")


def _nm():
    from openmm import unit

    return unit.nanometer


def _dalton():
    from openmm import unit

    return unit.dalton
