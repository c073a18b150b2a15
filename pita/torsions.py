"""Torsion moves: Metropolis rotations about a molecule's rotatable bonds (an exact MCMC kernel).

A move picks one rotatable bond b-c and an angle delta ~ U(-max_angle, max_angle), and rotates
the smaller side of the bond rigidly about the b-c axis. The proposal is symmetric (the same
bond with -delta undoes it, at the same density) and volume preserving (a rigid rotation of a
subset that moves with the atoms it is anchored to), so accepting with min(1, exp(-dU/kT))
leaves pi_T invariant. It changes a backbone dihedral (phi, psi) or a rotor (methyl) by a large
angle in one step: the basin-to-basin moves that local MALA/Langevin steps cannot make at room
temperature, where crossing the phi/psi barriers takes MD nanoseconds. Rotations never change
chirality. The centroid is restored after each move (the potential is translation invariant).

Rotatable bonds (`rotatable_bonds`): bonds not in a ring whose two atoms both have another
neighbour. Amide C-N bonds are included: most of their random rotations are rejected (the
bond is planar), but the ones near 180 degrees flip a cis peptide bond to trans, a state that
MD and MALA cannot leave at room temperature and that a poor generative model does produce
(a default CPU run once ended with every sample cis at the ACE-ALA bond, 20 kJ/mol too high).
For capped alanine dipeptide: phi, psi, the two amide bonds and the three methyl rotors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


def _components_without(adj: list[set[int]], b: int, c: int) -> set[int]:
    """Atoms reachable from c once the bond b-c is removed."""
    seen, stack = {c}, [c]
    while stack:
        a = stack.pop()
        for nb in adj[a]:
            if (a == c and nb == b) or nb in seen:
                continue
            seen.add(nb)
            stack.append(nb)
    return seen


def rotatable_bonds(topology: Any) -> list[tuple[int, int, np.ndarray]]:
    """(b, c, moving atom indices) for each rotatable bond of an mdtraj Topology; c's side moves
    and is the smaller side."""
    n = topology.n_atoms
    adj: list[set[int]] = [set() for _ in range(n)]
    for a1, a2 in topology.bonds:
        adj[a1.index].add(a2.index)
        adj[a2.index].add(a1.index)

    out = []
    for a1, a2 in topology.bonds:
        b, c = a1.index, a2.index
        if len(adj[b]) < 2 or len(adj[c]) < 2:
            continue
        side_c = _components_without(adj, b, c)
        if b in side_c:
            continue  # ring bond
        if len(side_c) > n - len(side_c):  # move the smaller side
            b, c = c, b
            side_c = _components_without(adj, b, c)
        out.append((b, c, np.array(sorted(side_c - {c}), dtype=np.int64)))
    return out


@dataclass
class TorsionStats:
    n_moves: int
    accept_rate: float
    accept_by_bond: dict


class TorsionMoves:
    """Batched Metropolis torsion moves for a molecule (positions (N, n_atoms, 3))."""

    def __init__(self, bonds: list[tuple[int, int, np.ndarray]], n_atoms: int, max_angle: float = math.pi,
                 names: list[str] | None = None) -> None:
        if not bonds:
            raise ValueError("TorsionMoves: no rotatable bond")
        if not (0 < max_angle <= math.pi):
            raise ValueError(f"max_angle must be in (0, pi], got {max_angle}")
        self.axis_b = torch.tensor([b for b, _, _ in bonds], dtype=torch.long)
        self.axis_c = torch.tensor([c for _, c, _ in bonds], dtype=torch.long)
        moving = torch.zeros(len(bonds), n_atoms, dtype=torch.bool)
        for k, (_, _, idx) in enumerate(bonds):
            moving[k, torch.as_tensor(idx)] = True
        self.moving = moving
        self.max_angle = float(max_angle)
        self.names = names or [f"{b}-{c}" for b, c, _ in bonds]

    @classmethod
    def for_system(cls, system: Any, max_angle: float = math.pi) -> "TorsionMoves | None":
        """Moves for a molecular System (its mdtraj `topology`), None when it has no rotatable bond."""
        top = getattr(system, "topology", None)
        if top is None or not hasattr(top, "bonds"):
            return None
        bonds = rotatable_bonds(top)
        if not bonds:
            return None
        atoms = list(top.atoms)
        names = [f"{atoms[b]}-{atoms[c]}" for b, c, _ in bonds]
        return cls(bonds, top.n_atoms, max_angle, names)

    def propose(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated copies of x (same dtype) and the bond index of each particle's move."""
        N = x.shape[0]
        k = torch.randint(len(self.axis_b), (N,), generator=generator)
        delta = (2.0 * torch.rand(N, generator=generator, dtype=torch.float64) - 1.0) * self.max_angle
        return self.rotate(x, k, delta), k.to(x.device)

    def rotate(self, x: torch.Tensor, k: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Rotate the moving side of bond k[i] of particle i by delta[i] (radians), centroid kept."""
        N = x.shape[0]
        dev = x.device
        k, delta = k.to(dev), delta.to(dev)
        xd = x.to(torch.float64)
        rows = torch.arange(N, device=dev)
        pb = xd[rows, self.axis_b.to(dev)[k]]
        pc = xd[rows, self.axis_c.to(dev)[k]]
        u = pc - pb
        u = u / u.norm(dim=-1, keepdim=True)
        v = xd - pb[:, None]
        cos, sin = torch.cos(delta)[:, None, None], torch.sin(delta)[:, None, None]
        uu = u[:, None, :].expand_as(v)
        # Rodrigues' rotation of every atom about the axis through pb along u
        v_rot = v * cos + torch.cross(uu, v, dim=-1) * sin + uu * (v * uu).sum(-1, keepdim=True) * (1.0 - cos)
        y = torch.where(self.moving.to(dev)[k][..., None], pb[:, None] + v_rot, xd)
        y = y - y.mean(dim=1, keepdim=True) + xd.mean(dim=1, keepdim=True)
        return y.to(x.dtype)

    def run(self, state: Any, evaluate: Callable[[torch.Tensor], Any], kT: float, n_moves: int,
            generator: torch.Generator | None = None) -> tuple[Any, TorsionStats]:
        """n_moves Metropolis torsion moves per particle on a relax state (x, U, F; see pita.relax)."""
        n_acc = torch.zeros(len(self.axis_b), dtype=torch.float64)
        n_try = torch.zeros(len(self.axis_b), dtype=torch.float64)
        total = 0.0
        for _ in range(n_moves):
            y, k = self.propose(state.x, generator)
            prop = evaluate(y)
            log_alpha = -(prop.U - state.U) / kT
            u = torch.rand(y.shape[0], generator=generator, dtype=torch.float64).to(y.device)
            finite = torch.isfinite(log_alpha)
            accept = finite & (torch.log(u) < torch.where(finite, log_alpha, torch.zeros_like(log_alpha)))
            state = state.where(accept, prop)
            kc = k.cpu()
            n_try += torch.bincount(kc, minlength=len(self.axis_b)).double()
            n_acc += torch.bincount(kc, weights=accept.cpu().double(), minlength=len(self.axis_b))
            total += float(accept.double().mean())
        by_bond = {name: (float(a / t) if t > 0 else float("nan"))
                   for name, a, t in zip(self.names, n_acc.tolist(), n_try.tolist())}
        return state, TorsionStats(n_moves=int(n_moves), accept_rate=total / max(n_moves, 1), accept_by_bond=by_bond)
