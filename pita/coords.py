"""Normalised coordinates the networks see: x~ = (x - centroid) / L, flattened to (B, D).

The centroid is unweighted (not mass-weighted): removing it is then an orthogonal projection,
so the Gaussian prior, divergences and Hutchinson probes all live in one linear subspace.
In x~, grad(U/kT) = -L F / kT.
"""
from __future__ import annotations

import torch


def remove_mean(x: torch.Tensor, n_atoms: int | None) -> torch.Tensor:
    """Project flat (B, n_atoms*3) or (B, n_atoms, 3) onto the mean-free subspace; identity if n_atoms is None."""
    if n_atoms is None:
        return x
    shape = x.shape
    xv = x.reshape(shape[0], n_atoms, 3)
    return (xv - xv.mean(dim=1, keepdim=True)).reshape(shape)


def normalize(x: torch.Tensor, length_scale: float) -> torch.Tensor:
    """(B, n_atoms, 3) in nm -> flat mean-free (B, 3 n_atoms) in units of L."""
    x = x - x.mean(dim=1, keepdim=True)
    return (x / length_scale).reshape(x.shape[0], -1)


def denormalize(xt: torch.Tensor, length_scale: float, n_atoms: int, centroid: torch.Tensor | None = None) -> torch.Tensor:
    """Flat normalised (B, D) -> (B, n_atoms, 3) in nm (centroid at the origin unless given)."""
    x = xt.reshape(xt.shape[0], n_atoms, 3) * length_scale
    if centroid is not None:
        x = x + centroid.reshape(-1, 1, 3)
    return x


def sample_mean_free_normal(shape: tuple[int, int], n_atoms: int | None, generator: torch.Generator | None = None,
                            dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal noise in the mean-free subspace (flat (B, D)); plain normal if n_atoms is None."""
    eps = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return remove_mean(eps, n_atoms)


def mean_free_dim(dim: int, n_atoms: int | None) -> int:
    """Dimension of the subspace the density lives in: 3(n-1) for particles, dim otherwise."""
    return dim - 3 if n_atoms is not None else dim


def random_rotations(n: int, generator: torch.Generator | None = None, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """n uniformly random proper rotations (det = +1, never reflections), shape (n, 3, 3)."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    # fix the sign ambiguity of QR so q is Haar-distributed, then flip to det = +1
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[det < 0, :, 0] *= -1
    return q.to(dtype=dtype, device=device)


def kabsch_rotations(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Proper rotations R (B, 3, 3) that best superpose each centred x[b] (n, 3) onto the
    centred reference (n, 3): argmin_R sum_i |R x_i - r_i|^2 with det R = +1 (no reflections)."""
    xc = x - x.mean(dim=1, keepdim=True)
    rc = (reference - reference.mean(dim=0, keepdim=True)).to(xc)
    h = xc.transpose(1, 2) @ rc.unsqueeze(0)  # (B, 3, 3) covariance
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return vt.transpose(1, 2) @ fix @ u.transpose(1, 2)


def align_to_reference(x: torch.Tensor, reference: torch.Tensor, vectors: torch.Tensor | None = None):
    """Centre and rotate configurations (B, n, 3) onto a reference; rotate `vectors` (e.g. forces) alike.

    The Boltzmann density is rotation invariant, so a model of aligned configurations loses
    nothing for invariant observables, and a non-equivariant network need not learn SO(3).
    """
    rot = kabsch_rotations(x, reference)
    xc = x - x.mean(dim=1, keepdim=True)
    aligned = xc @ rot.transpose(1, 2)
    if vectors is None:
        return aligned
    return aligned, vectors @ rot.transpose(1, 2)
