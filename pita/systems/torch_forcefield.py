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

Layout: the batch is the innermost (contiguous) axis everywhere: coordinates (3, n, B),
bonded vectors (3, k, B), pair matrices (n, n, B), so every operation vectorises over
configurations (molecules have few atoms; batches are long). Parameters carry a trailing
axis of length 1 to broadcast over the batch.

Bonded terms are functions of a few difference vectors x_a - x_b, gathered by index, and
return dE/d(vector), scattered back with index_add. Pair terms (nonbonded, generalized Born)
work on full n x n matrices: no gathers, the Born-radius sums are row sums, the GB self
energy is the diagonal, and the forces come out as dE/dx_a = x_a sum_b w_ab - sum_b w_ab x_b.
Everything is elementwise or a reduction, which torch.compile fuses well.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
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


# ---- small vector helpers on (3, ...) tensors -------------------------------------------
def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack((a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]))


# ---- energy terms ---------------------------------------------------------------------------
@dataclass
class Term:
    """A term of the potential: parameters (float64 CPU tensors until cast) and atom-index pairs.

    `vectors` lists the difference vectors (a, b) -> x_a - x_b the term needs; `evaluate`
    gets them as a (3, k, B) tensor and returns (energy (B,), dE/dvectors (3, k, B) or None).
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
        r = torch.sqrt(_dot(v, v))
        stretch = r - self.length
        energy = (0.5 * self.k * stretch * stretch).sum(0)
        return energy, (v * (self.k * stretch / r)) if grad else None


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
        u, w = v[:, :m], v[:, m:]
        c = _dot(u, w)
        s = torch.sqrt(_dot(*(_cross(u, w),) * 2))
        theta = torch.atan2(s, c)  # atan2 stays accurate near 0 and pi, unlike acos
        bend = theta - self.angle
        energy = (0.5 * self.k * bend * bend).sum(0)
        if not grad:
            return energy, None
        # d theta/du = (c u/|u|^2 - w)/s, and symmetrically for w
        de = self.k * bend / s.clamp_min(torch.finfo(s.dtype).tiny)
        gu = (u * (c / _dot(u, u)) - w) * de
        gw = (w * (c / _dot(w, w)) - u) * de
        return energy, torch.cat([gu, gw], dim=1)


@dataclass
class PeriodicTorsions(Term):
    atoms: np.ndarray  # (k, 4)
    periodicity: torch.Tensor
    phase: torch.Tensor
    k: torch.Tensor

    def vectors(self):
        a = self.atoms
        return np.concatenate([a[:, [0, 1]], a[:, [1, 2]], a[:, [3, 2]]])

    def evaluate(self, v, grad):
        m = self.atoms.shape[0]
        f, g, h = v[:, :m], v[:, m:2 * m], v[:, 2 * m:]
        a = _cross(f, g)
        b = _cross(h, g)
        g_norm = torch.sqrt(_dot(g, g))
        phi = torch.atan2(-g_norm * _dot(f, b), _dot(a, b))  # OpenMM's sign convention
        arg = self.periodicity * phi - self.phase
        energy = (self.k * (1.0 + torch.cos(arg))).sum(0)
        if not grad:
            return energy, None
        # Blondel & Karplus (1996) derivatives of phi with respect to the three bond vectors
        de = -self.k * self.periodicity * torch.sin(arg)
        a2, b2 = _dot(a, a), _dot(b, b)
        da = a * (de / a2)
        db = b * (de / b2)
        gf = -g_norm * da
        gh = g_norm * db
        gg = da * (_dot(f, g) / g_norm) - db * (_dot(h, g) / g_norm)
        return energy, torch.cat([gf, gg, gh], dim=1)


@dataclass
class PairTerm(Term):
    """A term over all atom pairs, evaluated on full (n, n, B) distance matrices.

    `pair_energy(r, r2)` gets r with ones on the diagonal (so 1/r stays finite) and the true
    r^2, and returns (energy (B,), w (n, n, B)) with dE/dx_a = sum_b w_ab (x_a - x_b).
    """

    n_atoms: int


def _offdiagonal(n: int) -> torch.Tensor:
    return 1.0 - torch.eye(n, dtype=torch.float64)


@dataclass
class CoulombLennardJones(PairTerm):
    """NonbondedForce with NoCutoff: every pair with its combined or exception parameters.

    The parameter matrices are symmetric with a zero diagonal; E = 1/2 sum over all (a, b).
    """

    qq: torch.Tensor  # coulomb constant * q_a q_b
    sigma: torch.Tensor
    eps4: torch.Tensor  # 4 epsilon_ab

    def pair_energy(self, r, r2, grad):
        inv_r = 1.0 / r
        coulomb = self.qq * inv_r
        sr6 = self.sigma * inv_r
        sr6 = sr6 * sr6 * sr6
        sr6 = sr6 * sr6
        lj = self.eps4 * (sr6 * sr6 - sr6)
        energy = 0.5 * (coulomb + lj).sum((0, 1))
        if not grad:
            return energy, None
        return energy, -(coulomb + self.eps4 * (12.0 * sr6 * sr6 - 6.0 * sr6)) * inv_r * inv_r


@dataclass
class OBCGeneralizedBorn(PairTerm):
    """Onufriev-Bashford-Case generalized Born with the ACE non-polar term.

    Born radii: I_a = sum_{b != a} h(r_ab, or_a, sr_b) (pairwise descreening integral, with an
    engulfment correction in OpenMM's native GBSAOBCForce only), psi = I or,
    B = 1/(1/or - tanh(c1 psi + c2 psi^2 + c3 psi^3)/radius).
    Polar energy: 1/2 sum_{a, b} qq_ab / f_ab, f^2 = r^2 + B_a B_b exp(-r^2/(4 B_a B_b)); the
    diagonal (f = B_a) is the self energy. Non-polar (ACE): ace_coeff (radius+probe)^2 (radius/B)^6.
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

    def cast(self, device, dtype):
        out = super().cast(device, dtype)
        n, q = self.n_atoms, self.charge
        off = _offdiagonal(n)
        qq = self.pair_coeff * q[:, None] * q[None, :] * off + torch.diag(2.0 * self.self_coeff * q * q)
        out._qq = qq.to(device=device, dtype=dtype)[..., None]
        out._offdiag = off.to(device=device, dtype=dtype)[..., None]
        out._or_row = out.offset_radius[:, None]  # (n, 1, 1)
        out._sr_col = out.scaled_radius[None]  # (1, n, 1)
        out._ace = out.ace_coeff * (out.radius + out.probe_radius) ** 2 * out.radius ** 6
        return out

    def descreening(self, r, grad):
        """h_ab = h(r_ab, or_a, sr_b) (zero on the diagonal), and dh/dr."""
        o, s = self._or_row, self._sr_col
        u = r + s
        d = r - s
        use_d = d.abs() > o
        lo = torch.where(use_d, d.abs(), o)
        inv_l, inv_u, inv_r = 1.0 / lo, 1.0 / u, 1.0 / r
        log_ratio = torch.log(lo * inv_u)
        diff_sq = inv_u * inv_u - inv_l * inv_l
        lever = r - s * s * inv_r
        active = (u > o) * self._offdiag
        h = 0.5 * (inv_l - inv_u + 0.25 * lever * diff_sq + 0.5 * log_ratio * inv_r)
        if self.engulf:  # atom a lies inside the descreening sphere of b
            engulfed = o < s - r
            h = h + torch.where(engulfed, 1.0 / o - inv_l, torch.zeros_like(h))
        h = h * active
        if not grad:
            return h, None
        dl = torch.where(use_d, torch.sign(d), torch.zeros_like(d))  # d lo / d r
        dh = 0.5 * (-dl * inv_l * inv_l + inv_u * inv_u + 0.25 * (1.0 + s * s * inv_r * inv_r) * diff_sq
                    + 0.5 * lever * (dl * inv_l ** 3 - inv_u ** 3)
                    + 0.5 * (dl * inv_l - inv_u) * inv_r - 0.5 * log_ratio * inv_r * inv_r)
        if self.engulf:
            dh = dh + torch.where(engulfed, dl * inv_l * inv_l, torch.zeros_like(dh))
        return h, dh * active

    def born_radii(self, integral):
        """B(I) and dB/dI, per atom: (n, B)."""
        o = self.offset_radius
        psi = integral * o
        c1, c2, c3 = self.tanh_coeffs
        t = torch.tanh(psi * (c1 + psi * (c2 + psi * c3)))
        born = 1.0 / (1.0 / o - t / self.radius)
        dpoly = c1 + psi * (2.0 * c2 + psi * (3.0 * c3))
        return born, born * born * (1.0 - t * t) * dpoly * o / self.radius

    def pair_energy(self, r, r2, grad):
        h, dh = self.descreening(r, grad)
        born, dborn = self.born_radii(h.sum(1))
        inv_b = 1.0 / born
        b_col = born[None]
        bb = born[:, None] * b_col
        ex = torch.exp(-0.25 * r2 / bb)
        inv_f2 = 1.0 / (r2 + bb * ex)
        polar = self._qq * torch.sqrt(inv_f2)
        ace = self._ace * inv_b ** 6
        energy = 0.5 * polar.sum((0, 1)) + ace.sum(0)
        if not grad:
            return energy, None
        w = -polar * inv_f2 * (1.0 - 0.25 * ex)  # (dE/dr)/r of the polar energy at fixed B
        de_dbb = -0.5 * polar * inv_f2 * ex * (1.0 + 0.25 * r2 / bb)
        de_dborn = (de_dbb * b_col).sum(1) - 6.0 * ace * inv_b
        m = (de_dborn * dborn)[:, None] * dh / r  # chain rule through I_a = sum_b h_ab
        return energy, w + m + m.transpose(0, 1)


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
@dataclass
class _Cast:
    """The terms cast to one (device, dtype), with the index lists of the bonded vectors."""

    bonded: list
    slices: list
    head: torch.Tensor  # vector c is x[head[c]] - x[tail[c]]
    tail: torch.Tensor
    pairs: list
    eye: torch.Tensor


class TorchForceField:
    """U(x) and F(x) = -dU/dx of an openmm.System for batches (B, n_atoms, 3) in nm, kJ/mol.

    method="analytic" (default) uses the hand-written derivatives; "autograd" differentiates
    the energy with torch autograd (slower; for cross-checks). Batches are processed in chunks
    of `chunk_size` configurations to bound memory and stay cache-friendly. compile=True runs
    the analytic kernel through torch.compile (fuses the elementwise work: several times
    faster on CPU, but the first call per dtype/device takes tens of seconds to compile).
    """

    def __init__(self, system, chunk_size: int = 256, compile: bool = False):
        self.n_atoms = system.getNumParticles()
        self.terms = terms_from_openmm(system)
        self.chunk_size = int(chunk_size)
        self.compile = bool(compile)
        self._cache: dict = {}
        self._compiled_fn = None

    @classmethod
    def from_openmm(cls, system, **kw) -> "TorchForceField":
        return cls(system, **kw)

    def _cast(self, device, dtype) -> _Cast:
        key = (str(device), dtype)
        if key not in self._cache:
            bonded = [t for t in self.terms if not isinstance(t, PairTerm)]
            blocks, slices, start = [], [], 0
            for t in bonded:
                v = t.vectors()
                blocks.append(v)
                slices.append(slice(start, start + len(v)))
                start += len(v)
            cols = np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.int64)
            self._cache[key] = _Cast(
                [t.cast(device, dtype) for t in bonded], slices,
                torch.as_tensor(cols[:, 0], device=device), torch.as_tensor(cols[:, 1], device=device),
                [t.cast(device, dtype) for t in self.terms if isinstance(t, PairTerm)],
                torch.eye(self.n_atoms, device=device, dtype=dtype)[..., None])
        return self._cache[key]

    def _evaluate(self, x: torch.Tensor, grad: bool):
        c = self._cast(x.device, x.dtype)
        xt = x.permute(2, 1, 0).contiguous()  # (3, n, B)
        energy = x.new_zeros(x.shape[0])
        grad_x = None
        if c.bonded:
            v = xt[:, c.head] - xt[:, c.tail]  # (3, K, B)
            dvs = []
            for term, sl in zip(c.bonded, c.slices):
                e, dv = term.evaluate(v[:, sl], grad)
                energy = energy + e
                dvs.append(dv)
            if grad:
                dv = torch.cat(dvs, dim=1)
                grad_x = torch.zeros_like(xt).index_add_(1, c.head, dv).index_add_(1, c.tail, -dv)
        if c.pairs:
            r, r2 = self._distances(xt, c)
            w = None
            for term in c.pairs:
                e, wt = term.pair_energy(r, r2, grad)
                energy = energy + e
                w = wt if w is None else w + wt
            if grad:  # dE/dx_a = x_a sum_b w_ab - sum_b w_ab x_b
                g = xt * w.sum(1) - (w * xt[:, None]).sum(2)
                grad_x = g if grad_x is None else grad_x + g
        if not grad:
            return energy, None
        return energy, -grad_x.permute(2, 1, 0)

    @staticmethod
    def _distances(xt, c):
        """r (ones on the diagonal, so 1/r stays finite) and r^2, both (n, n, B)."""
        d = xt[:, :, None] - xt[:, None]  # (3, n, n, B): x_a - x_b
        r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        return torch.sqrt(r2 + c.eye), r2

    def _kernel(self):
        if not self.compile:
            return self._evaluate
        if self._compiled_fn is None:
            self._compiled_fn = torch.compile(self._evaluate, dynamic=True)
        return self._compiled_fn

    def _chunks(self, x, fn):
        if x.shape[0] <= self.chunk_size:
            return fn(x)
        outs = [fn(xc) for xc in torch.split(x, self.chunk_size)]
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
            xt = x.permute(2, 1, 0)
            v = xt[:, c.head] - xt[:, c.tail]
            for t, sl in zip(c.bonded, c.slices):
                out[type(t).__name__] = t.evaluate(v[:, sl], False)[0]
            r, r2 = self._distances(xt, c)
            for t in c.pairs:
                out[type(t).__name__] = t.pair_energy(r, r2, False)[0]
        return out
