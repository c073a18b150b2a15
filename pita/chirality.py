"""Chirality of the C-alpha centres: detect, and repair by mirroring where that works.

The force field is mirror-symmetric, so a sampler can produce D-amino acids that the data
(all L) never contain; see docs/METHOD.md, section 6. Conventions:

* A chiral centre is the C-alpha of every residue that has atoms named ``N``, ``CA``, ``C``
  and ``CB`` (every standard amino acid except glycine; caps such as ACE/NME have no CA/CB).
  ``chiral_centers`` returns rows ``(CA, N, C, CB)`` of atom indices.
* The signed volume of a centre is the triple product
  ``(N - CA) . ((C - CA) x (CB - CA))``; it is positive for L-amino acids (S at C-alpha for
  all but cysteine, whose CIP label differs but whose geometry is the same), negative for D.
  Its sign is invariant under translations, proper rotations and positive scaling, so it
  works equally on nm positions and on normalised model coordinates x~ = (x - centroid)/L.
* Mirroring ``x -> -x`` (a point inversion, an improper transformation) flips every centre
  at once and leaves the energy unchanged; it keeps mean-free coordinates mean-free.

Arrays may be numpy or torch; shapes ``(B, n_atoms, 3)``, a single ``(n_atoms, 3)``, or flat
``(B, 3 n_atoms)`` (the model's layout). Outputs follow the input's array library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # torch is a hard dependency of the package, but keep this module importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None

__all__ = ["chiral_centers", "chirality_signs", "reference_signs", "is_correct", "mirror", "fix_chirality",
           "ChiralityChecker"]


def _is_torch(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _residues(topology):
    """Residues of an mdtraj Topology (property) or an OpenMM Topology (method)."""
    res = topology.residues
    return res() if callable(res) else res


def chiral_centers(topology) -> np.ndarray:
    """Atom indices (n_centers, 4) = (CA, N, C, CB) of every residue with a C-beta.

    Accepts an mdtraj or an OpenMM topology. Glycine (no CB) and caps are skipped; the
    result has shape (0, 4) if there is no chiral centre.
    """
    rows = []
    for res in _residues(topology):
        idx = {}
        for atom in res.atoms() if callable(res.atoms) else res.atoms:
            idx.setdefault(atom.name, atom.index)
        if all(k in idx for k in ("CA", "N", "C", "CB")):
            rows.append([idx["CA"], idx["N"], idx["C"], idx["CB"]])
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _as_batch(x):
    """(B, n, 3) view of x plus a function restoring the original layout."""
    shape = tuple(x.shape)
    if len(shape) == 3 and shape[-1] == 3:
        return x, lambda y: y
    if len(shape) == 2 and shape[-1] == 3:
        return x[None], lambda y: y[0]
    if len(shape) == 2 and shape[-1] % 3 == 0:
        return x.reshape(shape[0], -1, 3), lambda y: y.reshape(shape)
    raise ValueError(f"chirality: expected positions of shape (B, n_atoms, 3), (n_atoms, 3) or (B, 3 n_atoms); "
                     f"got {shape}")


def chirality_signs(x, centers):
    """Sign (+1, -1, or 0 if degenerate) of the triple product per centre, shape (B, n_centers).

    ``x``: numpy array or torch tensor, (B, n_atoms, 3) / (n_atoms, 3) / flat (B, 3 n_atoms);
    a single configuration gives shape (1, n_centers). Returns the same library as ``x``
    (float for numpy in x's dtype, torch in x's dtype and device).
    """
    xb, _ = _as_batch(x)
    c = np.asarray(centers, dtype=np.int64).reshape(-1, 4)
    if _is_torch(xb):
        ci = torch.as_tensor(c, device=xb.device)
        ca, n, cc, cb = (xb[:, ci[:, k], :] for k in range(4))
        vol = ((n - ca) * torch.linalg.cross(cc - ca, cb - ca, dim=-1)).sum(-1)
        return torch.sign(vol)
    xb = np.asarray(xb)
    ca, n, cc, cb = (xb[:, c[:, k], :] for k in range(4))
    vol = np.einsum("bki,bki->bk", n - ca, np.cross(cc - ca, cb - ca))
    return np.sign(vol)


def reference_signs(reference_positions, centers) -> np.ndarray:
    """Signs (n_centers,) of one reference structure (n_atoms, 3), as a numpy int8 array."""
    x = reference_positions
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    s = chirality_signs(x.reshape(1, -1, 3), centers)[0]
    if np.any(s == 0):
        raise ValueError("chirality: the reference structure has a planar (degenerate) chiral centre")
    return s.astype(np.int8)


def _match(x, centers, ref_signs):
    """(B, n_centers) bool: which centres agree with the reference, in x's library."""
    s = chirality_signs(x, centers)
    if _is_torch(s):
        return s == torch.as_tensor(np.asarray(ref_signs), dtype=s.dtype, device=s.device)
    return s == np.asarray(ref_signs, dtype=s.dtype)


def is_correct(x, centers, ref_signs):
    """Bool (B,): every chiral centre matches the reference (True for a molecule without centres)."""
    m = _match(x, centers, ref_signs)
    return m.all(dim=-1) if _is_torch(m) else m.all(axis=-1)


def mirror(x):
    """Point inversion x -> -x (numpy or torch, any shape); flips every chiral centre."""
    return -x


def fix_chirality(x, centers, ref_signs):
    """Repair chirality against the reference signs.

    Per particle (configuration): all centres right -> kept as is; all centres wrong ->
    mirrored (x -> -x fixes every one of them); mixed (some right, some wrong, possible
    only with two or more centres) -> dropped, since mirroring cannot fix it. A degenerate
    (planar) centre counts as wrong and cannot be fixed by mirroring either, so it drops.

    Returns ``(x_fixed, keep_mask, n_mirrored, n_dropped)``: ``x_fixed`` has the input's
    shape and library with the mirrored particles replaced (dropped ones are left as they
    were: select them out with ``keep_mask``); ``keep_mask`` is bool (B,); the counts are ints.
    """
    xb, restore = _as_batch(x)
    s = chirality_signs(xb, centers)
    torch_in = _is_torch(s)
    if torch_in:
        ref = torch.as_tensor(np.asarray(ref_signs), dtype=s.dtype, device=s.device)
        right = s == ref
        wrong = s == -ref
        n_c = right.shape[-1]
        all_right = right.all(dim=-1) if n_c else torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
        all_wrong = wrong.all(dim=-1) if n_c else torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        xf = torch.where(all_wrong[:, None, None], -xb, xb)
    else:
        ref = np.asarray(ref_signs, dtype=s.dtype)
        right = s == ref
        wrong = s == -ref
        n_c = right.shape[-1]
        all_right = right.all(axis=-1) if n_c else np.ones(s.shape[0], dtype=bool)
        all_wrong = wrong.all(axis=-1) if n_c else np.zeros(s.shape[0], dtype=bool)
        xf = np.where(all_wrong[:, None, None], -np.asarray(xb), np.asarray(xb))
    keep = all_right | all_wrong
    n_mirrored = int(all_wrong.sum())
    n_dropped = int((~keep).sum())
    return restore(xf), keep, n_mirrored, n_dropped


@dataclass
class ChiralityChecker:
    """Chiral centres and reference signs of one molecule, bound together."""

    centers: np.ndarray
    ref_signs: np.ndarray

    @classmethod
    def from_topology(cls, topology, reference_positions) -> "ChiralityChecker":
        centers = chiral_centers(topology)
        return cls(centers, reference_signs(reference_positions, centers))

    @classmethod
    def from_system(cls, system) -> "ChiralityChecker":
        """From a MolecularSystem: its ``topology`` (mdtraj) and ``reference_positions`` (nm, (n, 3))."""
        return cls.from_topology(system.topology, system.reference_positions)

    @classmethod
    def for_system(cls, system) -> "ChiralityChecker | None":
        """`from_system`, or None when the system has no topology / reference structure or no chiral centre."""
        if getattr(system, "topology", None) is None or getattr(system, "reference_positions", None) is None:
            return None
        checker = cls.from_system(system)
        return checker if checker.n_centers else None

    @property
    def n_centers(self) -> int:
        return int(self.centers.shape[0])

    def signs(self, x):
        return chirality_signs(x, self.centers)

    def is_correct(self, x):
        return is_correct(x, self.centers, self.ref_signs)

    def wrong_fraction(self, x, w=None) -> float:
        """Fraction of configurations with at least one wrong centre; with weights `w` (any
        non-negative array, normalised here) the weighted fraction."""
        ok = self.is_correct(x)
        if _is_torch(ok):
            ok = ok.cpu().numpy()
        wrong = ~np.asarray(ok, dtype=bool)
        n = int(wrong.shape[0])
        if not n:
            return 0.0
        if w is None:
            return float(wrong.sum()) / n
        w = np.asarray(w.detach().cpu() if _is_torch(w) else w, dtype=np.float64).reshape(-1)
        if w.shape[0] != n or np.any(w < 0) or not w.sum() > 0:
            raise ValueError(f"chirality: weights must be {n} non-negative numbers, not all zero")
        return float(w[wrong].sum() / w.sum())

    def same_signs(self, x, y):
        """Bool (B,): every centre of `y` has the sign it has in `x` (row by row, float64 signs).

        The guard of MCMC moves that must stay within a particle's enantiomer (pita.relax)."""
        if _is_torch(x):
            x, y = x.to(torch.float64), y.to(torch.float64)
        else:
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        m = self.signs(x) == self.signs(y)
        return m.all(dim=-1) if _is_torch(m) else m.all(axis=-1)

    def fix(self, x):
        """See :func:`fix_chirality`."""
        return fix_chirality(x, self.centers, self.ref_signs)
