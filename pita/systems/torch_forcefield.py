"""Batched torch evaluation of an openmm.System: energies and analytic forces.

The parameters are read from the System's Force objects, so the torch energy is the OpenMM
energy of that System, term by term:

- HarmonicBondForce      0.5 k (r - r0)^2
- HarmonicAngleForce     0.5 k (theta - theta0)^2
- PeriodicTorsionForce   k (1 + cos(n phi - phase))
- NonbondedForce         Coulomb + Lennard-Jones over all pairs, NoCutoff, with the
                         exceptions (scaled 1-4 pairs, excluded pairs) substituted
- GBSAOBCForce           OBC2 generalized Born as OpenMM's Reference platform computes it,
                         with its ACE surface-area term
- CustomGBForce          only the OBC forms of amber14's implicit/obc1.xml and obc2.xml,
                         recognised from the expressions and their constants
- CMMotionRemover        skipped (changes no energy)

Anything else raises UnsupportedForceError naming the force class (use the OpenMM backend).

Layout: the batch is the innermost (contiguous) axis everywhere: coordinates (n, 3, B),
difference vectors (k, 3, B), per-pair quantities (P, B), so every operation vectorises over
configurations (molecules have few atoms; batches are long) and gathers/scatters by atom
index move whole contiguous rows. Parameters carry a trailing axis of length 1 to broadcast
over the batch.

Bonded terms are functions of a few difference vectors x_a - x_b, gathered by index, and
return dE/d(vector), scattered back with index_add. Pair terms (nonbonded, generalized Born)
share one list of atom pairs a < b, ordered so that each term uses a prefix of it (the GB
terms need every pair, Coulomb + LJ skip the excluded 1-2 and 1-3 pairs); each returns
w = (dE/dr)/r per pair and the forces are one scatter of w (x_a - x_b). The Born radii need
the ordered pairs (the descreening integral is not symmetric): the same list twice.

Performance (CPU, one thread): eager torch costs one pass over memory plus a few
microseconds of dispatch per operation, so the kernels keep the number of operations and
transcendentals low (one rsqrt per pair, one log per ordered pair, one exp per pair), avoid
boolean masks (slow to build and apply) where a max() does the same, and the batch is
processed in long chunks (dispatch, not memory traffic, is what limits eager torch here).
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import re
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import PitaInputError

#: forces that change no potential energy
SKIPPED_FORCES = ("CMMotionRemover",)
SUPPORTED_FORCES = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce",
                    "GBSAOBCForce", "CustomGBForce (OBC1/OBC2 of amber14 implicit/)")

#: OpenMM's Reference GBSAOBCForce constants (nm)
GBSA_DIELECTRIC_OFFSET = 0.009
GBSA_PROBE_RADIUS = 0.14
OBC2_TANH_COEFFS = (1.0, -0.8, 4.85)  # tanh(alpha psi - beta psi^2 + gamma psi^3)


class UnsupportedForceError(PitaInputError):
    """The System holds a force (or a force setting) the torch backend does not implement."""


@functools.lru_cache(maxsize=1)
def coulomb_constant() -> float:
    """1/(4 pi eps0) in kJ/mol nm/e^2 exactly as OpenMM uses it (read back from a 2-charge system)."""
    import openmm as mm

    system = mm.System()
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.NoCutoff)
    for _ in range(2):
        system.addParticle(1.0)
        nb.addParticle(1.0, 1.0, 0.0)
    system.addForce(nb)
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions([mm.Vec3(0, 0, 0), mm.Vec3(1, 0, 0)])
    return float(ctx.getState(getEnergy=True).getPotentialEnergy()._value)


@functools.lru_cache(maxsize=1)
def retain_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS at once.

    A chunk's intermediates are a few dozen tensors of ~0.1-1 MB that are freed and allocated
    again for the next chunk. With glibc's default thresholds they are mmap'ed or trimmed off
    the heap and come back as fresh pages: a page fault per 4 KiB, and on a virtual machine
    that doubled the time of an evaluation. Raising the mmap and trim thresholds (process-wide,
    once; freed memory up to 256 MiB stays with the process) makes the allocations reuse warm
    memory. No effect with other allocators or C libraries.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):
        return False


# ---- small vector helpers on (k, 3, B) tensors ---------------------------------------------
def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # component-wise: several times faster than torch.linalg.cross on these shapes
    a0, a1, a2 = a.unbind(1)
    b0, b1, b2 = b.unbind(1)
    return torch.stack((a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0), 1)


def _norm(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(_dot(a, a))  # torch.linalg.vector_norm over a middle axis is very slow on CPU


# ---- energy terms ---------------------------------------------------------------------------
@dataclass
class Term:
    """A term of the potential: parameters (float64 CPU tensors until cast) and atom-index pairs.

    `vectors` lists the difference vectors (a, b) -> x_a - x_b the term needs; `evaluate`
    gets them as a (k, 3, B) tensor and returns (energy (B,), dE/dvectors (k, 3, B) or None).
    """

    def vectors(self) -> np.ndarray:  # (k, 2)
        raise NotImplementedError

    def evaluate(self, v: torch.Tensor, grad: bool):
        raise NotImplementedError

    def cast(self, device, dtype) -> "Term":
        """A copy with floating parameters on `device` in `dtype`, with a trailing batch axis."""
        kw = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.to(device=device, dtype=dtype)[..., None]
            kw[f.name] = value
        return type(self)(**kw)


def _f64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


@dataclass
class HarmonicBonds(Term):
    atoms: np.ndarray  # (k, 2)
    length: torch.Tensor
    k: torch.Tensor

    def vectors(self):
        return self.atoms[:, [1, 0]]

    def evaluate(self, v, grad):
        r = _norm(v)
        stretch = r - self.length
        k_stretch = self.k * stretch
        energy = 0.5 * (k_stretch * stretch).sum(0)
        return energy, (v * (k_stretch / r)[:, None]) if grad else None


@dataclass
class HarmonicAngles(Term):
    atoms: np.ndarray  # (k, 3), middle atom is the vertex
    angle: torch.Tensor
    k: torch.Tensor

    def vectors(self):
        a = self.atoms
        return np.concatenate([a[:, [0, 1]], a[:, [2, 1]]])

    def evaluate(self, v, grad):
        m = self.atoms.shape[0]
        u, w = v[:m], v[m:]
        c = _dot(u, w)
        s = _norm(_cross(u, w))
        theta = torch.atan2(s, c)  # atan2 stays accurate near 0 and pi, unlike acos
        bend = theta - self.angle
        k_bend = self.k * bend
        energy = 0.5 * (k_bend * bend).sum(0)
        if not grad:
            return energy, None
        # d theta/du = (c u/|u|^2 - w)/s, and symmetrically for w
        de = (k_bend / s.clamp_min(torch.finfo(s.dtype).tiny))[:, None]
        gu = (u * (c / _dot(u, u))[:, None] - w) * de
        gw = (w * (c / _dot(w, w))[:, None] - u) * de
        return energy, torch.cat([gu, gw])


@dataclass
class PeriodicTorsions(Term):
    """k (1 + cos(n phi - phase)); phi is computed once per distinct atom quadruple (force
    fields stack several periodicities on one dihedral)."""

    atoms: np.ndarray  # (k, 4)
    periodicity: torch.Tensor
    phase: torch.Tensor
    k: torch.Tensor

    def __post_init__(self):
        quads, which = np.unique(self.atoms.reshape(-1, 4), axis=0, return_inverse=True)
        self._quads = quads.reshape(-1, 4)
        self._which = torch.as_tensor(which.reshape(-1))

    def cast(self, device, dtype):
        out = super().cast(device, dtype)
        out._which = out._which.to(device)
        out._k_sum = float(self.k.sum())
        out._minus_kn = -out.k * out.periodicity
        return out

    def vectors(self):
        a = self._quads
        return np.concatenate([a[:, [0, 1]], a[:, [1, 2]], a[:, [3, 2]]])

    def evaluate(self, v, grad):
        m = self._quads.shape[0]
        f, g, h = v[:m], v[m:2 * m], v[2 * m:]
        a = _cross(f, g)
        b = _cross(h, g)
        g_norm = _norm(g)
        phi = torch.atan2(-g_norm * _dot(f, b), _dot(a, b))  # OpenMM's sign convention
        arg = self.periodicity * phi.index_select(0, self._which) - self.phase
        energy = (self.k * torch.cos(arg)).sum(0) + self._k_sum
        if not grad:
            return energy, None
        # Blondel & Karplus (1996) derivatives of phi with respect to the three bond vectors
        de = phi.new_zeros(phi.shape).index_add_(0, self._which, self._minus_kn * torch.sin(arg))
        da = a * (de / _dot(a, a))[:, None]
        db = b * (de / _dot(b, b))[:, None]
        inv_g = 1.0 / g_norm
        gf = da * (-g_norm)[:, None]
        gh = db * g_norm[:, None]
        gg = da * (_dot(f, g) * inv_g)[:, None] - db * (_dot(h, g) * inv_g)[:, None]
        return energy, torch.cat([gf, gg, gh])


@dataclass
class PairGeometry:
    """Distances over a pair list (a_p, b_p): d = x_a - x_b (P, 3, B) and r^2, r, 1/r, 1/r^2 (P, B)."""

    d: torch.Tensor
    r2: torch.Tensor
    r: torch.Tensor
    inv_r: torch.Tensor
    inv_r2: torch.Tensor

    @classmethod
    def of(cls, xt: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> "PairGeometry":
        d = xt.index_select(0, a) - xt.index_select(0, b)
        r2 = _dot(d, d)
        inv_r = torch.rsqrt(r2)  # one transcendental per pair; r and 1/r^2 follow by products
        return cls(d, r2, r2 * inv_r, inv_r, inv_r * inv_r)


@dataclass
class PairTerm(Term):
    """A term over atom pairs a < b, evaluated on one pair list shared by all pair terms.

    `needed()` is the (n, n) symmetric mask of the pairs the term depends on; the force field
    orders its pair list so that each term works on a prefix of it (pairs the term does not
    need but that fall inside its prefix get parameters that contribute exactly zero).
    `bind(a, b, device, dtype)` returns a copy with per-pair parameters along that list, and
    `pair_energy(geometry, grad)` returns (energy (B,), w (P_term, B)), w = (dE/dr)/r, so that
    dE/dx_a = sum_b w_ab (x_a - x_b).
    """

    n_atoms: int

    def needed(self) -> np.ndarray:
        raise NotImplementedError

    def bind(self, a: np.ndarray, b: np.ndarray, device, dtype) -> "PairTerm":
        raise NotImplementedError


def _per_pair(matrix: torch.Tensor, a: np.ndarray, b: np.ndarray, device, dtype) -> torch.Tensor:
    """matrix[a_p, b_p] as a (P, 1) tensor that broadcasts over the batch."""
    return matrix[torch.as_tensor(a), torch.as_tensor(b)].to(device=device, dtype=dtype)[:, None]


@dataclass
class CoulombLennardJones(PairTerm):
    """NonbondedForce with NoCutoff: every pair with its combined or exception parameters.

    The parameter matrices are symmetric with a zero diagonal; excluded pairs have qq = eps4 = 0
    and are left out of the pair prefix when they can be.
    """

    qq: torch.Tensor  # coulomb constant * q_a q_b
    sigma: torch.Tensor
    eps4: torch.Tensor  # 4 epsilon_ab

    def needed(self):
        return ((self.qq != 0) | (self.eps4 != 0)).numpy()

    def bind(self, a, b, device, dtype):
        out = dataclasses.replace(self)
        out._qq = _per_pair(self.qq, a, b, device, dtype)
        out._sigma2 = _per_pair(self.sigma, a, b, device, dtype) ** 2
        out._eps4 = _per_pair(self.eps4, a, b, device, dtype)
        return out

    def pair_energy(self, g, grad):
        m = self._qq.shape[0]
        inv_r, inv_r2 = g.inv_r[:m], g.inv_r2[:m]
        coulomb = self._qq * inv_r
        sr6 = (self._sigma2 * inv_r2) ** 3  # (sigma/r)^6
        a6 = self._eps4 * sr6
        energy = (coulomb + a6 * (sr6 - 1.0)).sum(0)  # 4 eps (sr^12 - sr^6)
        if not grad:
            return energy, None
        # r dE/dr = -(coulomb + 4 eps (12 sr^12 - 6 sr^6)) = -(coulomb + 6 a6 (2 sr^6 - 1))
        w = torch.addcmul(coulomb, a6, sr6 * 12.0 - 6.0).mul_(inv_r2).neg_()
        return energy, w


@dataclass
class OBCGeneralizedBorn(PairTerm):
    """Onufriev-Bashford-Case generalized Born with the ACE non-polar term.

    Born radii: I_a = sum_{b != a} h(r_ab, or_a, sr_b) (pairwise descreening integral, with an
    engulfment correction in OpenMM's native GBSAOBCForce only), psi = I or,
    B = 1/(1/or - tanh(c1 psi + c2 psi^2 + c3 psi^3)/radius).
    Polar energy: sum_{a < b} qq_ab / f_ab, f^2 = r^2 + B_a B_b exp(-r^2/(4 B_a B_b)), plus the
    self energy sum_a self_coeff q_a^2 / B_a. Non-polar (ACE): ace_coeff (radius+probe)^2 (radius/B)^6.

    The descreening integral is not symmetric in (a, b), so it runs over the ordered pairs: the
    pair list twice, as (2, P, B) tensors ([0]: a descreened by b, [1]: b by a).
    """

    charge: torch.Tensor
    offset_radius: torch.Tensor  # or = radius - dielectric offset
    scaled_radius: torch.Tensor  # sr = scale * or
    radius: torch.Tensor
    tanh_coeffs: tuple
    self_coeff: float  # E_self = self_coeff q^2 / B
    pair_coeff: float  # E_pair = pair_coeff q_a q_b / f
    ace_coeff: float
    probe_radius: float
    engulf: bool

    def needed(self):
        return ~np.eye(self.n_atoms, dtype=bool)

    def bind(self, a, b, device, dtype):
        def per_atom(t):
            return t.to(device=device, dtype=dtype)[:, None]

        out = dataclasses.replace(self)
        q, o, s = self.charge, self.offset_radius, self.scaled_radius
        out._a = torch.as_tensor(a, device=device)
        out._b = torch.as_tensor(b, device=device)
        # ordered pairs (descreened atom, descreening atom): (a, b) then (b, a)
        descreened = np.concatenate([a, b])
        descreening = np.concatenate([b, a])
        out._descreened = torch.as_tensor(descreened, device=device)
        out._or_q = o[descreened].to(device=device, dtype=dtype).view(2, -1, 1)
        out._sr_q = s[descreening].to(device=device, dtype=dtype).view(2, -1, 1)
        out._sr2_q = out._sr_q ** 2
        out._inv_or_q = 1.0 / out._or_q
        out._one = torch.ones((1, 1, 1), device=device, dtype=dtype)
        # atoms closer than this may be engulfed (or_a < sr_b - r): about 0.01 nm, never at physical
        # geometries, so the engulfment branch runs only when some pair is that close
        out._engulf_reach = 1.01 * float((s[descreening] - o[descreened]).max()) + 1e-6
        out._qq = per_atom(self.pair_coeff * q)[a] * per_atom(q)[b]
        out._self_qq = per_atom(self.self_coeff * q * q)
        out._or = per_atom(o)
        out._inv_or = 1.0 / out._or
        out._or_over_radius = per_atom(o / self.radius)
        out._inv_radius = 1.0 / per_atom(self.radius)
        out._ace = per_atom(self.ace_coeff * (self.radius + self.probe_radius) ** 2 * self.radius ** 6)
        return out

    def descreening(self, g, grad):
        """2 h(r, or_a, sr_b) and -8 dh/dr on the ordered pairs, (2, P, B) each (the second None
        without grad).

        OpenMM's derivative of h is the simplified one: the terms from dL/dr and dU/dr cancel
        (on every branch of L = max(or, |r - sr|), engulfment correction included). Written
        with fused multiply-adds and in-place updates: this is the largest array of the
        evaluation, and each operation is a pass over it.
        """
        o, s, s2 = self._or_q, self._sr_q, self._sr2_q
        r, inv_r = g.r[None], g.inv_r[None]
        # b descreens a only if or_a < r + sr_b = U; otherwise L = or as well, and U clamped to or
        # makes h and dh exactly zero without a mask
        inv_u = torch.maximum(r + s, o).reciprocal_()
        lower = torch.maximum((r - s).abs_(), o)
        inv_l = torch.reciprocal(lower)
        log_ratio = lower.mul_(inv_u).log_()  # log(L/U)
        dl = inv_l - inv_u
        p = dl * (inv_l + inv_u)  # 1/L^2 - 1/U^2
        lever = torch.addcmul(r, s2, inv_r, value=-1.0)  # r - sr^2/r
        h2 = torch.addcmul(dl, lever, p, value=-0.25).addcmul_(log_ratio, inv_r, value=0.5)
        dh8 = None
        if grad:  # -8 dh/dr = (1 + sr^2/r^2)(1/L^2 - 1/U^2) + 2 log(L/U)/r^2
            inv_r2 = g.inv_r2[None]
            dh8 = torch.addcmul(self._one, s2, inv_r2).mul_(p).addcmul_(log_ratio, inv_r2, value=2.0)
        if self._engulf_reach > 0 and float(g.r.detach().min()) < self._engulf_reach:
            engulfed = (r < s - o).to(r.dtype)  # a inside b's descreening sphere (then L = sr_b - r)
            if self.engulf:  # GBSAOBCForce adds 2 (1/or - 1/L) (its derivative cancels, see above)
                h2 = h2 + 2.0 * engulfed * (self._inv_or_q - inv_l)
            elif grad:  # CustomGB has no such term, so the dL/dr terms no longer cancel
                dh8 = dh8 - 8.0 * engulfed * inv_l * inv_l
        return h2, dh8

    def born_radii(self, integral):
        """B(I) and dB/dI, per atom: (n, B)."""
        psi = integral * self._or
        c1, c2, c3 = self.tanh_coeffs
        t = torch.tanh(psi * (c1 + psi * (c2 + psi * c3)))
        born = torch.reciprocal(self._inv_or - t * self._inv_radius)
        dpoly = c1 + psi * (2.0 * c2 + psi * (3.0 * c3))
        return born, born * born * (1.0 - t * t) * dpoly * self._or_over_radius

    def pair_energy(self, g, grad):
        n = self.n_atoms
        batch = g.r.shape[1:]
        h2, dh8 = self.descreening(g, grad)
        integral = 0.5 * h2.new_zeros((n,) + batch).index_add_(0, self._descreened, h2.flatten(0, 1))
        born, dborn = self.born_radii(integral)
        inv_b = torch.reciprocal(born)
        b_a, b_b = born.index_select(0, self._a), born.index_select(0, self._b)
        bb = b_a * b_b
        q = g.r2 / bb  # r^2 / (B_a B_b)
        ex = torch.exp(q * -0.25)
        inv_f = torch.rsqrt(torch.addcmul(g.r2, bb, ex))
        polar = self._qq * inv_f
        self_energy = self._self_qq * inv_b
        ace = self._ace * inv_b ** 6
        energy = polar.sum(0) + (self_energy + ace).sum(0)
        if not grad:
            return energy, None
        pf = polar * inv_f * inv_f
        pf_ex = pf * ex
        w = torch.add(pf, pf_ex, alpha=-0.25).neg_()  # (dE/dr)/r at fixed Born radii
        de_dbb = pf_ex * (q * -0.125 - 0.5)  # dE/d(B_a B_b)
        de_dborn = (self_energy + 6.0 * ace).mul_(inv_b).neg_()
        de_dborn.index_add_(0, self._a, de_dbb * b_b).index_add_(0, self._b, de_dbb * b_a)
        # chain rule through I_a = 1/2 sum_b 2 h_ab, with dh8 = -8 dh/dr
        m = (de_dborn * dborn * -0.125).index_select(0, self._descreened).view_as(dh8)
        chain = torch.addcmul(m[0] * dh8[0], m[1], dh8[1])
        return energy, w.addcmul_(chain, g.inv_r)


# ---- reading the OpenMM System --------------------------------------------------------------
def _harmonic_bonds(force) -> HarmonicBonds:
    rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
    atoms = np.array([[p1, p2] for p1, p2, _, _ in rows], dtype=np.int64).reshape(-1, 2)
    return HarmonicBonds(atoms, _f64([r0._value for _, _, r0, _ in rows]), _f64([k._value for *_, k in rows]))


def _harmonic_angles(force) -> HarmonicAngles:
    rows = [force.getAngleParameters(a) for a in range(force.getNumAngles())]
    atoms = np.array([r[:3] for r in rows], dtype=np.int64).reshape(-1, 3)
    return HarmonicAngles(atoms, _f64([r[3]._value for r in rows]), _f64([r[4]._value for r in rows]))


def _periodic_torsions(force) -> PeriodicTorsions:
    rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
    atoms = np.array([r[:4] for r in rows], dtype=np.int64).reshape(-1, 4)
    return PeriodicTorsions(atoms, _f64([r[4] for r in rows]), _f64([r[5]._value for r in rows]),
                            _f64([r[6]._value for r in rows]))


def _coulomb_lennard_jones(force, n: int) -> CoulombLennardJones:
    import openmm as mm

    if force.getNonbondedMethod() != mm.NonbondedForce.NoCutoff:
        raise UnsupportedForceError("openmm.System: NonbondedForce: only NoCutoff is supported by the torch backend")
    if force.getNumGlobalParameters() or force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise UnsupportedForceError("openmm.System: NonbondedForce: parameter offsets are not supported by the torch backend")
    ke = coulomb_constant()
    params = np.array([[p._value for p in force.getParticleParameters(a)] for a in range(n)]).reshape(n, 3)
    q, sig, eps = params.T
    qq = ke * q[:, None] * q[None, :]
    sigma = 0.5 * (sig[:, None] + sig[None, :])  # Lorentz-Berthelot
    eps4 = 4.0 * np.sqrt(eps[:, None] * eps[None, :])
    for e in range(force.getNumExceptions()):  # 1-4 scaling and exclusions replace the combined values
        a, b, qprod, s, ep = force.getExceptionParameters(e)
        qq[a, b] = qq[b, a] = ke * qprod._value
        sigma[a, b] = sigma[b, a] = s._value
        eps4[a, b] = eps4[b, a] = 4.0 * ep._value
    np.fill_diagonal(qq, 0.0)
    np.fill_diagonal(eps4, 0.0)
    return CoulombLennardJones(n, _f64(qq), _f64(sigma), _f64(eps4))


def _gbsa_obc(force, n: int) -> OBCGeneralizedBorn:
    import openmm as mm

    if force.getNonbondedMethod() != mm.GBSAOBCForce.NoCutoff:
        raise UnsupportedForceError("openmm.System: GBSAOBCForce: only NoCutoff is supported by the torch backend")
    params = np.array([[getattr(p, "_value", p) for p in force.getParticleParameters(a)] for a in range(n)]).reshape(n, 3)
    charge, radius, scale = params.T
    eps_in, eps_out = force.getSoluteDielectric(), force.getSolventDielectric()
    prefactor = -coulomb_constant() * (1.0 / eps_in - 1.0 / eps_out) if eps_in and eps_out else 0.0
    offset_radius = radius - GBSA_DIELECTRIC_OFFSET
    return OBCGeneralizedBorn(
        n, _f64(charge), _f64(offset_radius), _f64(offset_radius * scale), _f64(radius),
        tanh_coeffs=OBC2_TANH_COEFFS, self_coeff=0.5 * prefactor, pair_coeff=prefactor,
        ace_coeff=4.0 * math.pi * force.getSurfaceAreaEnergy()._value, probe_radius=GBSA_PROBE_RADIUS,
        engulf=True)


# The OBC forms of amber14's implicit/obc1.xml and obc2.xml (whitespace removed). {NUM} marks a
# constant that is read from the expression; everything else must match exactly.
_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUM = r"([-+]?" + _UNSIGNED + ")"
_OBC_INTEGRAL = ("select(step(r+sr2-or1),0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r),0)"
                 ";U=r+sr2;L=max(or1,D);D=abs(r-sr2)")
_OBC_RADIUS = re.compile(r"1/\(1/or-tanh\((.*)\)/radius\);psi=I\*or;radius=or\+offset;offset=" + _NUM)
_OBC_SELF = re.compile(r"-0\.5\*" + _NUM + r"\*\(1/soluteDielectric-1/solventDielectric\)\*charge\^2/B")
_OBC_ACE = re.compile(_NUM + r"\*\(radius\+" + _NUM + r"\)\^2\*\(radius/B\)\^6")
_OBC_PAIR = re.compile(r"-" + _NUM + r"\*\(1/soluteDielectric-1/solventDielectric\)\*charge1\*charge2/f")
_OBC_PAIR_F = "sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2)))"
_POLY_TERM = re.compile(r"([-+]?)(?:(" + _UNSIGNED + r")\*)?psi(?:\^([23]))?")


def _split_expression(expr: str) -> tuple[str, dict[str, str]]:
    """'main; a=1; b=2' -> ('main', {'a': '1', 'b': '2'}) with whitespace removed."""
    parts = expr.replace(" ", "").split(";")
    defs = dict(p.split("=", 1) for p in parts[1:] if p)
    return parts[0], defs


def _tanh_polynomial(text: str) -> tuple:
    """'0.8*psi+2.909125*psi^3' -> (0.8, 0.0, 2.909125); None if it is not such a cubic."""
    coeffs = [0.0, 0.0, 0.0]
    pos = 0
    for m in _POLY_TERM.finditer(text):
        if m.start() != pos:
            return None
        sign, num, power = m.group(1), m.group(2), m.group(3)
        coeffs[int(power or 1) - 1] += (-1.0 if sign == "-" else 1.0) * (float(num) if num else 1.0)
        pos = m.end()
    return tuple(coeffs) if pos == len(text) and pos > 0 else None


def _custom_gb_obc(force, n: int) -> OBCGeneralizedBorn:
    """The CustomGBForce of amber14 implicit/obc1.xml (or obc2.xml), parsed into OBC parameters."""
    import openmm as mm

    def unsupported(why):
        return UnsupportedForceError(
            f"openmm.System: CustomGBForce: {why}; the torch backend implements only the OBC1/OBC2 forms of "
            "amber14 implicit/obc1.xml and obc2.xml (use backend='openmm' for others)")

    if force.getNonbondedMethod() != mm.CustomGBForce.NoCutoff:
        raise unsupported("only NoCutoff is supported")
    if force.getNumGlobalParameters() or force.getNumTabulatedFunctions() or force.getNumFunctions():
        raise unsupported("global parameters or tabulated functions")
    names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
    if sorted(names) != ["charge", "or", "sr"] or force.getNumComputedValues() != 2 or force.getNumEnergyTerms() != 3:
        raise unsupported("not the OBC parameter layout (charge, or, sr; values I, B; three energy terms)")
    pair_type = mm.CustomGBForce.ParticlePairNoExclusions
    single = mm.CustomGBForce.SingleParticle

    name, expr, kind = force.getComputedValueParameters(0)
    main, defs = _split_expression(expr)
    if name != "I" or kind != pair_type or ";".join([main] + [f"{k}={v}" for k, v in defs.items()]) != _OBC_INTEGRAL:
        raise unsupported(f"unrecognised Born integral {expr!r}")
    name, expr, kind = force.getComputedValueParameters(1)
    m = _OBC_RADIUS.fullmatch(expr.replace(" ", ""))
    coeffs = _tanh_polynomial(m.group(1)) if m else None
    if name != "B" or kind != single or coeffs is None:
        raise unsupported(f"unrecognised Born radius {expr!r}")
    offset = float(m.group(2))

    terms = [force.getEnergyTermParameters(t) for t in range(3)]
    self_coeff = pair_coeff = ace = None
    for expr, kind in terms:
        main, defs = _split_expression(expr)
        if defs.get("kappa", "0") not in ("0", "0.0"):
            raise unsupported("salt screening (kappa != 0)")
        try:
            eps_scale = 1.0 / float(defs.get("soluteDielectric", "nan")) - 1.0 / float(defs.get("solventDielectric", "nan"))
        except ValueError:
            eps_scale = float("nan")
        if kind == single and (m := _OBC_SELF.fullmatch(main)) and math.isfinite(eps_scale):
            self_coeff = -0.5 * float(m.group(1)) * eps_scale
        elif kind == single and (m := _OBC_ACE.fullmatch(main)) and defs.get("radius") == "or+offset":
            ace = (float(m.group(1)), float(m.group(2)), float(defs["offset"]))
        elif kind == pair_type and (m := _OBC_PAIR.fullmatch(main)) and defs.get("f") == _OBC_PAIR_F \
                and math.isfinite(eps_scale):
            pair_coeff = -float(m.group(1)) * eps_scale
        else:
            raise unsupported(f"unrecognised energy term {expr!r}")
    if None in (self_coeff, pair_coeff, ace) or abs(ace[2] - offset) > 1e-12:
        raise unsupported("energy terms do not form the OBC model")

    params = np.array([force.getParticleParameters(a) for a in range(n)], dtype=np.float64).reshape(n, 3)
    col = {k: params[:, names.index(k)] for k in names}
    return OBCGeneralizedBorn(
        n, _f64(col["charge"]), _f64(col["or"]), _f64(col["sr"]), _f64(col["or"] + offset),
        tanh_coeffs=coeffs, self_coeff=self_coeff, pair_coeff=pair_coeff, ace_coeff=ace[0],
        probe_radius=ace[1], engulf=False)


def terms_from_openmm(system) -> list[Term]:
    """The energy terms of an openmm.System; raises UnsupportedForceError for anything else."""
    n = system.getNumParticles()
    readers = {
        "HarmonicBondForce": lambda f: _harmonic_bonds(f),
        "HarmonicAngleForce": lambda f: _harmonic_angles(f),
        "PeriodicTorsionForce": lambda f: _periodic_torsions(f),
        "NonbondedForce": lambda f: _coulomb_lennard_jones(f, n),
        "GBSAOBCForce": lambda f: _gbsa_obc(f, n),
        "CustomGBForce": lambda f: _custom_gb_obc(f, n),
    }
    if any(system.isVirtualSite(a) for a in range(n)):
        raise UnsupportedForceError("openmm.System: virtual sites are not supported by the torch backend")
    terms = []
    for force in system.getForces():
        kind = type(force).__name__
        if kind in SKIPPED_FORCES:
            continue
        if kind not in readers:
            raise UnsupportedForceError(
                f"openmm.System: {kind} is not supported by the torch backend (supported: "
                f"{', '.join(SUPPORTED_FORCES)}; skipped: {', '.join(SKIPPED_FORCES)}); use backend='openmm'")
        terms.append(readers[kind](force))
    return terms


# ---- the batched evaluator --------------------------------------------------------------------
def pair_list(terms: list, n: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The pairs a < b any pair term needs, ordered so that each term's pairs form a prefix.

    Pairs needed by more terms come first (nonbonded + GB: the 1-4 and farther pairs, then the
    1-2 and 1-3 pairs that only GB sees). Returns (a, b, prefix length per term).
    """
    a, b = np.triu_indices(n, 1)
    needed = np.array([t.needed()[a, b] for t in terms], dtype=bool).reshape(len(terms), -1)
    keep = needed.any(0)
    order = np.argsort(-needed[:, keep].sum(0), kind="stable")
    a, b, needed = a[keep][order], b[keep][order], needed[:, keep][:, order]
    lengths = [int(np.flatnonzero(nd).max()) + 1 if nd.any() else 0 for nd in needed]
    return a, b, lengths


@dataclass
class _Cast:
    """The terms cast to one (device, dtype), with the index lists of the bonded vectors and pairs."""

    bonded: list
    slices: list
    head: torch.Tensor  # vector c is x[head[c]] - x[tail[c]]
    tail: torch.Tensor
    pairs: list  # pair terms, longest prefix of the pair list first
    pair_a: torch.Tensor  # pair p is x[pair_a[p]] - x[pair_b[p]]
    pair_b: torch.Tensor


class TorchForceField:
    """U(x) and F(x) = -dU/dx of an openmm.System for batches (B, n_atoms, 3) in nm, kJ/mol.

    method="analytic" (default) uses the hand-written derivatives; "autograd" differentiates
    the energy with torch autograd (slower; for cross-checks). Batches are processed in chunks
    of `chunk_size` configurations to bound memory (about 65 MB at 1024 configurations of
    alanine dipeptide in float64). On CPU each torch operation costs a few microseconds of
    dispatch besides its arithmetic, so the chunks should be long: from 1 to 4096
    configurations per chunk the rate rises up to ~512 and is flat to ~2048 (cache effects
    of the larger intermediates are smaller than the dispatch saved). compile=True runs the
    analytic kernel through torch.compile (the first call per dtype/device compiles for
    minutes on CPU). On a GPU each chunk costs ~2.5 ms of kernel launches whatever its size,
    so the default there is 65536 (an H100 went from 26x to 500x OpenMM Reference; ~4 GB of
    transient memory in float64; bench/RESULTS_GPU.md).
    """

    CPU_CHUNK, GPU_CHUNK = 1024, 65536

    def __init__(self, system, chunk_size: int | None = None, compile: bool = False):
        self.n_atoms = system.getNumParticles()
        self.terms = terms_from_openmm(system)
        self.chunk_size = None if chunk_size is None else int(chunk_size)  # None: by device
        self.compile = bool(compile)
        self._cache: dict = {}
        self._compiled_fn = None

    @classmethod
    def from_openmm(cls, system, **kw) -> "TorchForceField":
        return cls(system, **kw)

    def _cast(self, device, dtype) -> _Cast:
        key = (str(device), dtype)
        if key not in self._cache:
            if torch.device(device).type == "cpu":
                retain_freed_memory()
            bonded = [t for t in self.terms if not isinstance(t, PairTerm)]
            blocks, slices, start = [], [], 0
            for t in bonded:
                v = t.vectors()
                blocks.append(v)
                slices.append(slice(start, start + len(v)))
                start += len(v)
            cols = np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.int64)
            pair_terms = [t for t in self.terms if isinstance(t, PairTerm)]
            a, b, lengths = pair_list(pair_terms, self.n_atoms)
            order = sorted(range(len(pair_terms)), key=lambda k: -lengths[k])
            self._cache[key] = _Cast(
                [t.cast(device, dtype) for t in bonded], slices,
                torch.as_tensor(cols[:, 0], device=device), torch.as_tensor(cols[:, 1], device=device),
                [pair_terms[k].bind(a[:lengths[k]], b[:lengths[k]], device, dtype) for k in order],
                torch.as_tensor(a, device=device), torch.as_tensor(b, device=device))
        return self._cache[key]

    def _evaluate(self, x: torch.Tensor, grad: bool):
        c = self._cast(x.device, x.dtype)
        xt = x.permute(1, 2, 0).contiguous()  # (n, 3, B): gathers and scatters move whole rows
        energy = x.new_zeros(x.shape[0])
        grad_x = torch.zeros_like(xt) if grad else None
        if c.bonded:
            v = xt.index_select(0, c.head) - xt.index_select(0, c.tail)  # (K, 3, B)
            dvs = []
            for term, sl in zip(c.bonded, c.slices):
                e, dv = term.evaluate(v[sl], grad)
                energy = energy + e
                dvs.append(dv)
            if grad:
                dv = torch.cat(dvs)
                grad_x.index_add_(0, c.head, dv).index_add_(0, c.tail, dv, alpha=-1)
        if c.pairs:
            energy = energy + self._pair_terms(c, xt, grad_x)
        if not grad:
            return energy, None
        return energy, -grad_x.permute(2, 0, 1)

    @staticmethod
    def _pair_terms(c: _Cast, xt: torch.Tensor, grad_x: torch.Tensor | None) -> torch.Tensor:
        """Energy of the pair terms (B,); adds their gradient to grad_x (n, 3, B) when given."""
        g = PairGeometry.of(xt, c.pair_a, c.pair_b)
        energy, w = 0.0, None
        for term in c.pairs:
            e, wt = term.pair_energy(g, grad_x is not None)
            energy = energy + e
            if w is None:
                w = wt  # the longest prefix comes first
            elif wt is not None:
                w[:wt.shape[0]] += wt
        if grad_x is not None:  # dE/dx_a = sum_b w_ab (x_a - x_b)
            gw = g.d * w[:, None]
            grad_x.index_add_(0, c.pair_a, gw).index_add_(0, c.pair_b, gw, alpha=-1)
        return energy

    def _kernel(self):
        if not self.compile:
            return self._evaluate
        if self._compiled_fn is None:
            self._compiled_fn = torch.compile(self._evaluate, dynamic=True)
        return self._compiled_fn

    def _chunks(self, x, fn):
        chunk = self.chunk_size or (self.GPU_CHUNK if x.device.type == "cuda" else self.CPU_CHUNK)
        if x.shape[0] <= chunk:
            return fn(x)
        outs = [fn(xc) for xc in torch.split(x, chunk)]
        return tuple(None if o[0] is None else torch.cat(o) for o in zip(*outs))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(x), shape (B,)."""
        kernel = self._kernel()
        with torch.no_grad():
            return self._chunks(x, lambda xc: kernel(xc, False))[0]

    def energy_and_forces(self, x: torch.Tensor, method: str = "analytic"):
        """(U (B,), F (B, n, 3)) in the dtype and on the device of x."""
        if method == "analytic":
            kernel = self._kernel()
            with torch.no_grad():
                e, f = self._chunks(x, lambda xc: kernel(xc, True))
            return e, f.contiguous()
        if method == "autograd":
            def fn(xc):
                with torch.enable_grad():
                    xr = xc.detach().requires_grad_(True)
                    e, _ = self._evaluate(xr, False)
                    (g,) = torch.autograd.grad(e.sum(), xr)
                return e.detach(), -g
            return self._chunks(x, fn)
        raise ValueError(f"method: expected 'analytic' or 'autograd', got {method!r}")

    def energy_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Energy per term class (for debugging and tests), each (B,)."""
        c = self._cast(x.device, x.dtype)
        out = {}
        with torch.no_grad():
            xt = x.permute(1, 2, 0)
            v = xt[c.head] - xt[c.tail]
            for t, sl in zip(c.bonded, c.slices):
                out[type(t).__name__] = t.evaluate(v[sl], False)[0]
            if c.pairs:
                g = PairGeometry.of(xt, c.pair_a, c.pair_b)
                for t in c.pairs:
                    out[type(t).__name__] = t.pair_energy(g, False)[0]
        return out
