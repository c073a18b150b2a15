"""The target system: what the method needs from a Boltzmann density.

A System evaluates U(x) and F = -grad U batched on torch tensors of shape
(batch, n_atoms, 3) (particle systems) or (batch, dim) (toy densities in R^d), on any device
and in float32 or float64, and counts every configuration it evaluates: the energy
evaluation count is the method's headline cost.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import KB_KJ_PER_MOL_K


class System:
    """Base class. Subclasses implement `_energy` (and optionally `_energy_and_forces`)."""

    #: short name used in configs and file attributes
    name: str = "system"
    #: "kJ/mol,nm" for molecules, "reduced" for Lennard-Jones and toys
    units: str = "reduced"
    #: Boltzmann constant in the system's energy units per kelvin (1 in reduced units)
    kB: float = 1.0
    #: number of particles, or None for a density in plain R^d
    n_atoms: int | None = None
    #: fixed length scale L used to normalise coordinates: x~ = (x - centroid) / L
    length_scale: float = 1.0
    #: True when the density is translation invariant (particles): work in the mean-free space
    mean_free: bool = True
    #: mdtraj.Topology for molecules, None otherwise
    topology: Any = None

    def __init__(self) -> None:
        self.n_energy_evals = 0

    # ---- shape -------------------------------------------------------------------------
    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration: (n_atoms, 3) or (dim,)."""
        if self.n_atoms is None:
            return (self.dim,)
        return (self.n_atoms, 3)

    @property
    def dim(self) -> int:
        return 3 * int(self.n_atoms)

    @property
    def masses(self) -> np.ndarray:
        """Particle masses (amu for molecules, 1 in reduced units)."""
        return np.ones(self.n_atoms if self.n_atoms is not None else self.dim)

    def kT(self, temperature: float) -> float:
        """k_B T in the system's energy units."""
        return self.kB * float(temperature)

    def spec(self) -> dict:
        """A JSON-able spec that `pita.systems.load` turns back into this system."""
        return {"name": self.name}

    # ---- energies ----------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{self.name}: expected positions of shape (batch, {', '.join(map(str, self.event_shape))}),"
                f" got {tuple(x.shape)}"
            )
        return x

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) for a batch, shape (batch,). Counts one evaluation per configuration."""
        x = self._check(x)
        self.n_energy_evals += int(x.shape[0])
        with torch.no_grad():
            return self._energy(x)

    def energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, F = -grad U) for a batch. Counts one evaluation per configuration."""
        x = self._check(x)
        self.n_energy_evals += int(x.shape[0])
        return self._energy_and_forces(x)

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # generic fallback: autograd of the energy
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            e = self._energy(xr)
            (g,) = torch.autograd.grad(e.sum(), xr)
        return e.detach(), -g

    def reset_counter(self) -> int:
        n, self.n_energy_evals = self.n_energy_evals, 0
        return n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_atoms={self.n_atoms}, units={self.units!r})"


KB_MOLECULAR = KB_KJ_PER_MOL_K
