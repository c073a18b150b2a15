"""Feynman-Kac sequential Monte Carlo: anneal a diffusion model of pi_{T_k} to pi_{T_{k+1}}.

The path of targets is q_t(x) ∝ exp(-phi_t(x)), phi_t = gamma E(x, sigma(t)), diffusion time t
from 1 (sigma_max) to 0 (sigma_min), generation time s = 1 - t. See docs/METHOD.md, section 7.

Continuous time (the formula of docs/METHOD.md, section 7.4). For a move dx = u ds + g_n dW and target
exp(-phi), the Feynman-Kac log-weight rate at fixed x is

    dA/ds = -d phi/d s + div u - <u, grad phi> - (g_n^2/2) (|grad phi|^2 - laplacian phi)     (general)

and PITA's drift u = gamma (g^2/2)(s - grad E) with g_n = g reduces it to

    dA/ds = gamma^2 <-grad E, b> + gamma div b + gamma dE/dt,   b = (g^2/2) s            ("pita")

for *any* score field s (the laplacian of E cancels whatever s is). The general formula is
used when the drift is built differently (``drift="score"``: u = gamma g^2 s;
``drift="energy"``: u = -gamma g^2 grad E; ``drift="tempered"``, below), when the noise is
rescaled (``noise_scale`` != 1)
or when the score is taken from the energy (``score_source="energy"``: s = -grad E, whose
divergence is -laplacian E).

Tempered drift (``drift="tempered"``, u = (1 + lambda^2 gamma)(g^2/2) s with noise lambda g;
the default lambda = gamma^(-1/2) gives u = g^2 s). PITA's drift contracts the particles too
fast: for a Gaussian p_t = N(0, (sd^2 + sigma^2) I), the particles' variance lags the targets'
(sd^2 + sigma^2)/gamma, and the weights repair that in every one of the d directions, so their
log-variance grows like (gamma - 1)^2 d (ESS collapse on a 60-dimensional molecule at
gamma = 1.6). With the exact model (heat equation dE/dtau = (laplacian E - |grad E|^2)/2) the tempered
drift's rate is ((gamma - 1)/2) laplacian E per unit tau = sigma^2 for any lambda: the
|grad E|^2 terms cancel, and for a Gaussian laplacian E is the same for every particle, so
the weights only carry what is not Gaussian: basin free energies and anharmonicity. It needs the general rate (laplacian E) or the discrete
weights (no divergence at all).

Discretisation (what this module implements). Time is reparametrised by tau = sigma^2, in which
g^2 = 1: step n goes from sigma_n to sigma_{n+1} < sigma_n with Delta_n = sigma_n^2 - sigma_{n+1}^2
(the exact variance the VE process sheds over the step, rather than g^2(t_n) ds, which
overshoots at the left end of a rho = 7 schedule). Everything except the explicit time term is
evaluated at the left point (x_n, sigma_n), the same fields in the drift and in the rate:

    x_{n+1} = x_n + gamma (Delta_n/2)(s - grad E) + sqrt(Delta_n) eps
    A      += gamma^2 (Delta_n/2) <-grad E, s> + gamma (Delta_n/2) div s
              + gamma [E(x_n, sigma_n) - E(x_n, sigma_{n+1})]

The time term is the exact integral over the step of gamma dE/dt at the frozen x_n (a finite
difference in t at the same x: one extra forward pass of E, no gradient), or with
``time_derivative="autograd"`` the left-point derivative in tau, gamma (dE/dsigma)/(2 sigma_n) Delta_n,
from the same backward pass that gives grad E (no extra pass; consistent with the other
left-point terms, so for the exact model at gamma = 1 the discrete rate vanishes identically).

Discrete time (``weights="discrete"``, an exact alternative): the weight of the Euler step is
the ratio of the forward kernel to the Euler kernel of the reversal towards the targets,
    A += phi_n(x_n) - phi_{n+1}(x_{n+1}) + log N(x_n; x_{n+1} + v(x_{n+1}) Delta_n, Delta_n)
                                           - log N(x_{n+1}; x_n + u(x_n) Delta_n, Delta_n),
v = -u - grad phi (for the exact model v = 0: plain noising). This is a valid importance
weight for any step size (no time-discretisation bias in the weighted law), needs no
divergence, and tends to the continuous rate as Delta -> 0; the fields at x_{n+1} are the
ones the next step needs anyway, so it costs no extra network pass.

Annealed importance weights (``weights="ais"``, exact for ANY model, consistent across sigma or
not): the particles are carried by the scaling x -> a_n x, a_n^2 = (sigma_{n+1}^2 + sd^2) /
(sigma_n^2 + sd^2), which maps the Gaussian N(0, (sigma_n^2 + sd^2)/gamma) (the model's density
where the noise dominates) onto the next level's, with the exact weight of a bijection,
A += gamma [E(x_n, sigma_n) - E(a_n x_n, sigma_{n+1})] + d ln a_n (Neal's AIS increment, escorted
by the map; without it the particles' norm, a slow variable for local moves, lags the contracting
targets and the weights collapse within the first steps), and then move by
``mala_steps`` Metropolis-adjusted Langevin steps that leave q_{n+1} invariant (model evaluations
only, no energy of the system); with ``leapfrog_steps`` L > 1 each move is Hamiltonian Monte Carlo
instead: L leapfrog steps of the same step size, then one Metropolis test (L network passes per move;
a trajectory travels ~L steps where L Langevin steps diffuse ~sqrt(L); L = 1 is MALA exactly).
The SDE is not used. Both kinds of weights are exact for any family exp(-gamma E(., sigma)); they
differ in variance. The SDE's weights carry the heat-equation residual of the model along the
particles' own paths (at gamma = 1 the FK rate IS that residual), which a CPU-trained model
leaves large at bond scale; these carry only how far consecutive targets are apart and how well
the moves equilibrate.
The diffusion model's contribution is the path itself: at large sigma the basins of q_n merge,
so the moves carry mass between them, which MCMC on the system at T_{k+1} cannot.

Mean-free mode (molecules): x lives in the mean-free subspace of dimension 3(n-1); noise,
prior, score, grad E and Hutchinson probes are projected onto it, and divergences are traces
on the subspace (the trace of P J P).

At t = 0 with a target System: chirality is fixed (mirror what a mirror fixes, drop the rest),
then log w = A - U(x)/(k_B T_{k+1}) + gamma E(x~, sigma_min), one true energy per particle.
E is the path's end potential at the configuration the path produced, i.e. before any
mirroring (A belongs to it; U is mirror-invariant, E need not be): mirroring is a
measure-preserving bijection, so the mirrored particle keeps the produced one's weight.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .coords import denormalize, mean_free_dim, remove_mean

log = logging.getLogger(__name__)

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
DRIFTS = ("pita", "score", "energy", "tempered")
SCORE_SOURCES = ("score", "energy")
TIME_DERIVATIVES = ("finite_difference", "autograd")
WEIGHTS = ("continuous", "discrete", "ais")
GAMMA_PATHS = ("constant", "temper_at_sigma_min")
#: MALA moves of weights="ais": the step size is kappa tau / gamma (tau = sigma^2, the scale of the
#: widest direction of q_n), kappa adapted after every level towards this acceptance rate
MALA_TARGET_ACCEPTANCE = 0.574
MALA_INITIAL_KAPPA = 0.5
#: a MALA move accepted by fewer than this fraction of the particles halves kappa before the next move
#: of the same level: where a level's density sharpens faster than the per-level adaptation follows
#: (LJ-13 at sigma ~ 0.3, as the first shell forms: acceptance 0.37 -> 0.002 over six levels), frozen
#: moves leave resampled duplicates identical
MALA_STALL_ACCEPTANCE = 0.15
#: HMC moves (leapfrog_steps > 1): the acceptance rate that kappa is adapted towards (optimal for HMC in
#: high dimension, Beskos et al. 2013), and the range of the random factor on each move's step size, which
#: breaks the resonance of a fixed trajectory length with near-harmonic modes (bonds)
HMC_TARGET_ACCEPTANCE = 0.651
HMC_STEP_JITTER = 0.2
ESS_COLLAPSE = 0.01
#: weights="ais" with level_ess: bisection steps in log sigma per refined level, and the most levels
#: (this factor times n_steps) before the grid is followed unrefined
LEVEL_BISECTIONS = 12
LEVEL_CAP_FACTOR = 4


class AllParticlesDiverged(RuntimeError):
    """Every particle's state or fields became NaN/inf: nothing is left to anneal."""


# ---------------------------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------------------------
def make_schedule(sigma_min: float, sigma_max: float, rho: float):
    from .diffusion import EDMSchedule

    return EDMSchedule(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)


def sigma_grid(n_steps: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """sigma_0 = sigma_max > ... > sigma_N = sigma_min at uniform steps in t (float64)."""
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    if not (0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    sched = make_schedule(sigma_min, sigma_max, rho)
    t = np.linspace(1.0, 0.0, n_steps + 1)
    sig = np.asarray([float(sched.sigma(torch.tensor(ti, dtype=torch.float64))) for ti in t], dtype=np.float64)
    sig[0], sig[-1] = sigma_max, sigma_min
    return sig


# ---------------------------------------------------------------------------------------------
# SMC utilities
# ---------------------------------------------------------------------------------------------
# one implementation of weights, ESS and systematic resampling for the package (pita/weights.py);
# these names stay importable from here
from .weights import ess, normalized_weights, systematic_resample  # noqa: E402,F401


def logmeanexp(logw: torch.Tensor) -> float:
    lw = logw.double()
    finite = torch.isfinite(lw)
    if not finite.any():
        return -math.inf
    return float(torch.logsumexp(lw, 0) - math.log(lw.numel()))


def conditional_ess(log_weight: torch.Tensor, increment: torch.Tensor) -> float:
    """Conditional ESS fraction of an SMC step (Zhou, Johansen & Aston 2016): with normalised
    weights W and incremental weights v = exp(increment), (sum W v)^2 / sum W v^2, in (0, 1]. It
    measures the new level against the current particle cloud whatever that cloud's own ESS."""
    lw = log_weight.double()
    inc = increment.double()
    ok = torch.isfinite(lw) & torch.isfinite(inc)
    if not ok.any():
        return 0.0
    lw, inc = lw[ok], inc[ok]
    logW = lw - torch.logsumexp(lw, 0)
    num = 2.0 * torch.logsumexp(logW + inc, 0)
    den = torch.logsumexp(logW + 2.0 * inc, 0)
    return float(torch.exp(num - den).clamp(max=1.0))


# ---------------------------------------------------------------------------------------------
# divergences
# ---------------------------------------------------------------------------------------------
def _probes(shape, k: int, kind: str, n_atoms: int | None, generator, dtype, device) -> torch.Tensor:
    if kind == "rademacher":
        v = torch.randint(0, 2, (k, *shape), generator=generator, device="cpu").to(dtype) * 2 - 1
    elif kind == "gaussian":
        v = torch.randn((k, *shape), generator=generator, dtype=dtype, device="cpu")
    else:
        raise ValueError(f"probe kind must be one of {PROBES}")
    v = v.to(device)
    if n_atoms is not None:  # E[P v v^T P] = P: unbiased for the trace on the subspace
        v = remove_mean(v.reshape(k * shape[0], -1), n_atoms).reshape(v.shape)
    return v


# ---------------------------------------------------------------------------------------------
# the explicit time term of the continuous-time rate
# ---------------------------------------------------------------------------------------------
def time_term(gamma: float, energy_left: torch.Tensor, energy_right: torch.Tensor) -> torch.Tensor:
    """gamma [E(x_n, sigma_n) - E(x_n, sigma_{n+1})]: the exact integral over the step of the
    rate's time term -d phi/ds = gamma dE/dt (s = 1 - t) at the frozen x_n."""
    return gamma * (energy_left - energy_right)


def gaussian_scaling(sigma: float, sigma_next: float, variance: float, dim: int) -> tuple[float, float]:
    """(a, d ln a): the scaling x -> a x that maps N(0, (sigma^2 + variance)/gamma) onto
    N(0, (sigma_next^2 + variance)/gamma) in d dimensions, and the log of its Jacobian determinant."""
    a = math.sqrt((sigma_next ** 2 + variance) / (sigma ** 2 + variance))
    return a, dim * math.log(a)


def tempering_increment(gamma_from: float, gamma_to: float, energy: torch.Tensor) -> torch.Tensor:
    """log q_{gamma_to}(x) - log q_{gamma_from}(x) for q_g ∝ exp(-g E(x, sigma_min)) at fixed x:
    the exact AIS weight of a tempering level."""
    return -(gamma_to - gamma_from) * energy


def torsion_log_acceptance(gamma: float, energy: torch.Tensor, energy_proposed: torch.Tensor) -> torch.Tensor:
    """log Metropolis ratio of a torsion move for exp(-gamma E(x, sigma)); the rotation proposal is
    symmetric and volume-preserving, so no proposal term."""
    return gamma * (energy.double() - energy_proposed.double())


def time_term_autograd(gamma: float, dE_dsigma: torch.Tensor, sigma: float, delta: float) -> torch.Tensor:
    """Left-point version in tau = sigma^2: gamma (dE/dsigma)/(2 sigma_n) Delta_n."""
    return gamma * dE_dsigma * (delta / (2.0 * sigma))


_BATCHED_GRADS_OK: dict[Any, bool] = {}


def divergence(out: torch.Tensor, x: torch.Tensor, method: str = "exact", probes: torch.Tensor | None = None,
               n_atoms: int | None = None, retain_graph: bool = False) -> torch.Tensor:
    """Divergence (B,) of the field `out` (B, D) w.r.t. `x` (B, D), rows independent.

    exact: trace of the Jacobian (D reverse passes, vectorised when autograd allows; in
    mean-free mode the field is assumed projected, so the trace is the one on the subspace).
    hutchinson: mean over probes (k, B, D) of v^T J v.
    """
    B, D = out.shape
    if method == "hutchinson":
        if probes is None:
            raise ValueError("hutchinson divergence needs probes")
        k = probes.shape[0]
        acc = torch.zeros(B, dtype=out.dtype, device=out.device)
        for i in range(k):
            (vj,) = torch.autograd.grad(out, x, grad_outputs=probes[i], retain_graph=retain_graph or i < k - 1)
            acc = acc + (vj * probes[i]).sum(-1)
        return acc / k
    if method != "exact":
        raise ValueError(f"divergence must be one of {DIVERGENCES}")
    eye = torch.eye(D, dtype=out.dtype, device=out.device)
    if n_atoms is not None:
        # trace of P J P on the subspace: contract with projected basis vectors
        eye = remove_mean(eye, n_atoms)
    key = (type(out.grad_fn).__name__, D)
    if _BATCHED_GRADS_OK.get(key, True):
        try:
            basis = eye.unsqueeze(1).expand(D, B, D)
            (jac,) = torch.autograd.grad(out, x, grad_outputs=basis, is_grads_batched=True, retain_graph=retain_graph)
            # jac[i, b, :] = e_i^T J_b ; trace = sum_i (e_i^T J_b e_i) with e_i the (projected) basis
            return torch.einsum("ibd,id->b", jac, eye)
        except RuntimeError:
            _BATCHED_GRADS_OK[key] = False
    acc = torch.zeros(B, dtype=out.dtype, device=out.device)
    for i in range(D):
        gi = eye[i].expand(B, D)
        (vj,) = torch.autograd.grad(out, x, grad_outputs=gi, retain_graph=retain_graph or i < D - 1)
        acc = acc + (vj * gi).sum(-1)
    return acc


# ---------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------
@dataclass
class AnnealResult:
    """Particles and weights after annealing (and the final correction when a system was given).

    x: (N, D) model coordinates (normalised, flat) of the surviving particles.
    positions: (N, *event_shape) system coordinates (nm for molecules) when a system was given.
    log_weight: final log-weights (after the correction to the system when given, else A).
    log_weight_path: A at t = 0 (the FK weight for the target exp(-gamma E(., sigma_min))).
    model_energy: gamma E(x~, sigma_min) per particle (the path's end potential).
    energy: U(positions) per particle (system units) when a system was given.
    """

    x: torch.Tensor
    log_weight: np.ndarray
    log_weight_path: np.ndarray
    model_energy: np.ndarray
    ess_trace: np.ndarray  # ESS/N per step, before any resampling of that step
    sigmas: np.ndarray  # sigma_n at each step's start
    resample_steps: np.ndarray
    positions: torch.Tensor | None = None
    energy: np.ndarray | None = None
    forces: torch.Tensor | None = None
    n_resamples: int = 0
    n_dropped_nonfinite: int = 0
    n_mirrored: int = 0
    n_dropped_chirality: int = 0
    n_energy_evals: int = 0
    ess_path: float = float("nan")  # ESS of A at t = 0
    #: index (0..N-1) of the initial particle each surviving particle descends from through resampling
    ancestor: np.ndarray | None = None
    ess_final: float = float("nan")  # ESS of log_weight
    log_Z: float = float("nan")  # running estimate of log(Z_end / Z_start) along the path
    collapse_steps: list = field(default_factory=list)
    wall_time_s: float = 0.0
    settings: dict = field(default_factory=dict)

    def genealogy(self) -> dict:
        """How many initial particles the output descends from, and the ESS of the final weights summed per
        ancestor: a weighted set from one or two lineages sits in one basin however large its ESS is."""
        if self.ancestor is None or len(self.ancestor) == 0:
            return {}
        anc = np.asarray(self.ancestor)
        lw = np.asarray(self.log_weight, dtype=np.float64)
        per_lineage = np.bincount(anc, weights=np.exp(lw - lw.max()))
        return {"n_ancestors": int(np.unique(anc).size),
                "ess_ancestors": float(ess(np.log(per_lineage[per_lineage > 0])))}

    def diagnostics(self) -> dict:
        n = int(self.x.shape[0])
        return {
            "n_particles_out": n,
            "ess_final": self.ess_final,
            "ess_final_fraction": self.ess_final / max(n, 1),
            "ess_path": self.ess_path,
            **self.genealogy(),
            "ess_trace": [float(v) for v in self.ess_trace],
            "sigmas": [float(v) for v in self.sigmas],
            "resample_steps": [int(v) for v in self.resample_steps],
            "n_resamples": self.n_resamples,
            "n_dropped_nonfinite": self.n_dropped_nonfinite,
            "n_mirrored": self.n_mirrored,
            "n_dropped_chirality": self.n_dropped_chirality,
            "ess_collapse_steps": list(self.collapse_steps),
            "n_energy_evals": self.n_energy_evals,
            "log_Z_path": self.log_Z,
            "wall_time_s": self.wall_time_s,
            "settings": self.settings,
        }


# ---------------------------------------------------------------------------------------------
# the sampler
# ---------------------------------------------------------------------------------------------
class _Fields:
    """Model fields at (x, sigma) for the rate: E, grad E, s, div s, laplacian E, dE/dsigma."""

    __slots__ = ("E", "gE", "s", "div_s", "lap_E", "dE_dsig")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def index(self, idx):
        return _Fields(**{k: (None if getattr(self, k) is None else getattr(self, k)[idx]) for k in self.__slots__})

    def set_rows(self, mask, value: float = 0.0):
        for k in self.__slots__:
            v = getattr(self, k)
            if v is not None:
                v[mask] = value


def anneal(
    model: Any,
    gamma: float,
    n_particles: int,
    n_steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
    mean_free: bool | None = None,
    n_atoms: int | None = None,
    dim: int | None = None,
    divergence_method: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    resample_threshold: float = 1.0,
    stop_resample_sigma: float = 0.0,
    drift: str = "pita",
    score_source: str = "score",
    noise_scale: float | None = None,
    time_derivative: str = "finite_difference",
    weights: str = "continuous",
    mala_steps: int = 1,
    leapfrog_steps: int = 1,
    gamma_path: str = "constant",
    temper_ess: float = 0.5,
    temper_mala_steps: int = 32,
    temper_max_levels: int = 100,
    level_ess: float = 0.0,
    torsions: Any = None,
    torsion_moves: int = 0,
    torsion_sigma_max: float = math.inf,
    batch_size: int | None = None,
    system: Any = None,
    temperature: float | None = None,
    length_scale: float | None = None,
    fix_chirality: bool = True,
    compute_forces: bool = False,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    log_every: int = 0,
) -> AnnealResult:
    """Anneal `model` (diffusion model of exp(-E(., sigma_min))) to exp(-gamma E(., sigma_min)) by FK-SMC.

    model: `energy(x, sigma) -> (B,)`, `score(x, sigma) -> (B, D)` on flat x (B, D), sigma (B,).
        Schedule, n_atoms, mean_free and dim are read from the model (attributes sigma_min,
        sigma_max, rho, or a `schedule` object having them) unless given.
    gamma: beta_{k+1} / beta_k = T_k / T_{k+1}.
    resample_threshold: systematic resampling when ESS/N < threshold; 1.0 resamples at every
        step (the paper), 0 never.
    stop_resample_sigma: no resampling once sigma < this (weights keep accumulating).
    divergence_method: "exact" (Jacobian trace) or "hutchinson" with `n_probes` probes of kind
        `probe` ("rademacher"|"gaussian"; mean-free in mean-free mode).
    drift, score_source, noise_scale, time_derivative, weights: see the module docstring.
    gamma_path: "constant" (gamma along the whole sigma path) or "temper_at_sigma_min" (gamma 1 along
        the sigma path, then resample-move tempering of exp(-gamma' E(., sigma_min)) from gamma' = 1 to
        gamma, each level chosen so that the conditional ESS/N of its increments is `temper_ess`, at
        most `temper_max_levels` levels, `temper_mala_steps` MALA moves on the level's density after each).
    mala_steps, leapfrog_steps: moves per level of weights "ais" (and of the tempering levels), each
        Metropolis-adjusted Langevin (leapfrog_steps 1) or HMC with leapfrog_steps leapfrog steps.
    level_ess: weights "ais" only; 0 follows the sigma grid of n_steps levels, > 0 refines it: where
        a grid step would drop the conditional ESS/N of the increments below level_ess, the level
        stops at the sigma where it equals level_ess (more levels, hence more moves, where the
        targets change fastest; at most 4 n_steps levels in all).
    torsions, torsion_moves, torsion_sigma_max: `torsion_moves` Metropolis rotations per particle about
        rotatable bonds (a `pita.torsions.TorsionMoves`, molecules) after the MALA moves of every level
        (weights "ais", tempering levels) whose sigma is at most `torsion_sigma_max` (here every level by
        default; the pipeline's setting defaults to 2): exact moves for the level's density
        exp(-gamma E(x, sigma)) (symmetric proposal; network passes only), which carry particles between
        the basins that local moves cannot leave within a level.
    system, temperature: the target System and T_{k+1}; when given, the final exact correction
        log w = A - U/(k_B T) + gamma E(x~, sigma_min) is applied (chirality fixed first for
        molecules), with positions = denormalize(x~, length_scale).
    batch_size: particles per network pass (memory), None = all.
    seed / generator: every random draw comes from this generator (deterministic runs).
    """
    t_start = time.perf_counter()
    gamma = float(gamma)
    if gamma <= 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be positive, got {gamma}")
    for name, val, allowed in (("divergence_method", divergence_method, DIVERGENCES), ("probe", probe, PROBES),
                               ("drift", drift, DRIFTS), ("score_source", score_source, SCORE_SOURCES),
                               ("time_derivative", time_derivative, TIME_DERIVATIVES), ("weights", weights, WEIGHTS)):
        if val not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {val!r}")
    if gamma_path not in GAMMA_PATHS:
        raise ValueError(f"gamma_path must be one of {GAMMA_PATHS}, got {gamma_path!r}")
    if not 0.0 < temper_ess < 1.0:
        raise ValueError(f"temper_ess must lie in (0, 1), got {temper_ess}")
    if temper_max_levels < 1 or temper_mala_steps < 0:
        raise ValueError("temper_max_levels must be >= 1 and temper_mala_steps >= 0")
    # the sigma path's own gamma: with tempering at sigma_min the path is the model's own diffusion
    # (gamma 1), whose basin masses are those the model learned; gamma acts at sigma_min only
    gamma_target = gamma
    if gamma_path == "temper_at_sigma_min":
        gamma = 1.0
    if n_probes < 1:
        raise ValueError("n_probes must be >= 1")
    if mala_steps < 0:
        raise ValueError("mala_steps must be >= 0")
    if leapfrog_steps < 1:
        raise ValueError("leapfrog_steps must be >= 1")
    if leapfrog_steps > 1 and weights != "ais" and gamma_path != "temper_at_sigma_min":
        raise ValueError("leapfrog_steps > 1 needs moves: weights='ais' or gamma_path='temper_at_sigma_min'")
    if not 0.0 <= level_ess < 1.0:
        raise ValueError(f"level_ess must lie in [0, 1), got {level_ess}")
    if level_ess > 0 and weights != "ais":
        raise ValueError("level_ess refines the levels of weights='ais' only")
    if torsion_moves < 0:
        raise ValueError("torsion_moves must be >= 0")
    if torsion_moves and weights != "ais" and gamma_path != "temper_at_sigma_min":
        raise ValueError("torsion_moves need moves: weights='ais' or gamma_path='temper_at_sigma_min'")
    if torsion_moves and torsions is None:
        raise ValueError("torsion_moves need `torsions` (a molecule with rotatable bonds)")
    if not torsion_sigma_max > 0:
        raise ValueError(f"torsion_sigma_max must be positive, got {torsion_sigma_max}")
    max_levels = LEVEL_CAP_FACTOR * int(n_steps)
    sigma_min, sigma_max, rho = _schedule_params(model, sigma_min, sigma_max, rho)
    if mean_free is None:
        mean_free = bool(getattr(model, "mean_free", False))
    if mean_free:
        n_atoms = int(n_atoms if n_atoms is not None else getattr(model, "n_atoms"))
        D = 3 * n_atoms
    else:
        n_atoms = None
        D = int(dim if dim is not None else getattr(model, "dim"))
    d_eff = mean_free_dim(D, n_atoms)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    if dtype is None:
        dtype = param.dtype if param is not None else torch.float32
    if device is None:
        device = param.device if param is not None else "cpu"
    device = torch.device(device)
    if generator is None:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(0 if seed is None else int(seed))
    N = int(n_particles)
    bs = int(batch_size) if batch_size else N
    sig = sigma_grid(n_steps, sigma_min, sigma_max, rho)
    if noise_scale is None:
        noise_scale = 1.0 / math.sqrt(gamma) if drift == "tempered" else 1.0
    if not (noise_scale > 0 and math.isfinite(noise_scale)):
        raise ValueError(f"noise_scale must be positive, got {noise_scale}")
    general = drift != "pita" or noise_scale != 1.0 or score_source == "energy"
    lam2 = float(noise_scale) ** 2
    need_lap = general  # the general rate needs laplacian phi (and div s = -laplacian E for score_source="energy")
    need_div_s = score_source == "score" and drift in ("pita", "score", "tempered")
    if weights in ("discrete", "ais"):
        need_lap, need_div_s = False, False
    need_dsig = weights == "continuous" and time_derivative == "autograd"
    settings = dict(gamma=gamma_target, gamma_path=gamma_path, n_particles=N, n_steps=int(n_steps),
                    sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, mean_free=bool(mean_free), n_atoms=n_atoms, dim=D, divergence=divergence_method,
                    n_probes=int(n_probes), probe=probe, resample_threshold=float(resample_threshold),
                    stop_resample_sigma=float(stop_resample_sigma), drift=drift, score_source=score_source,
                    noise_scale=float(noise_scale), time_derivative=time_derivative, weights=weights,
                    mala_steps=int(mala_steps), leapfrog_steps=int(leapfrog_steps), level_ess=float(level_ess),
                    # the kind of the per-level moves whose acceptance the mala_acceptance_* keys record
                    move="hmc" if int(leapfrog_steps) > 1 else "mala",
                    torsion_moves=int(torsion_moves),
                    batch_size=bs, seed=seed, dtype=str(dtype))
    if torsion_moves:
        settings.update(torsion_sigma_max=float(torsion_sigma_max))
    if gamma_path == "temper_at_sigma_min":
        settings.update(temper_ess=float(temper_ess), temper_mala_steps=int(temper_mala_steps),
                        temper_max_levels=int(temper_max_levels))

    proj = (lambda v: remove_mean(v, n_atoms)) if mean_free else (lambda v: v)

    def noise(shape):
        return proj(torch.randn(shape, generator=generator, dtype=dtype, device="cpu").to(device))

    # -------- fields ------------------------------------------------------------------
    # a model whose score is -grad E (score_source "energy" in its config): its score is the gradient
    # computed here anyway, so it is not evaluated a second time
    model_config = getattr(model, "config", None)
    score_is_energy_grad = (score_source == "score" and isinstance(model_config, dict)
                            and model_config.get("score_source") == "energy")

    def fields_chunk(x: torch.Tensor, sigma: float) -> _Fields:
        B = x.shape[0]
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            sg = torch.full((B,), sigma, dtype=dtype, device=device, requires_grad=need_dsig)
            E = model.energy(xr, sg)
            # div s = -laplacian E when the score is -grad E: one divergence, not two
            need_lap_here = need_lap or (need_div_s and score_is_energy_grad)
            want_graph = need_lap_here
            inputs = [xr, sg] if need_dsig else [xr]
            grads = torch.autograd.grad(E.sum(), inputs, create_graph=want_graph)
            gE = grads[0]
            gEp = proj(gE)
            dE_dsig = grads[1].detach() if need_dsig else None
            lap = None
            if need_lap_here:
                probes = (_probes((B, D), n_probes, probe, n_atoms, generator, dtype, device)
                          if divergence_method == "hutchinson" else None)
                lap = divergence(gEp, xr, divergence_method, probes, n_atoms).detach()
            if weights == "ais":  # the moves use E and grad E only; no score pass
                s, div_s = None, None
            elif score_source == "energy" or score_is_energy_grad:
                s = -gEp.detach()
                div_s = -lap if lap is not None else None
            else:
                s_out = proj(model.score(xr, sg))
                div_s = None
                if need_div_s:
                    probes = (_probes((B, D), n_probes, probe, n_atoms, generator, dtype, device)
                              if divergence_method == "hutchinson" else None)
                    div_s = divergence(s_out, xr, divergence_method, probes, n_atoms).detach()
                s = s_out.detach()
        return _Fields(E=E.detach(), gE=gEp.detach(), s=s, div_s=div_s, lap_E=lap, dE_dsig=dE_dsig)

    def fields(x: torch.Tensor, sigma: float) -> _Fields:
        if x.shape[0] <= bs:
            return fields_chunk(x, sigma)
        parts = [fields_chunk(x[i:i + bs], sigma) for i in range(0, x.shape[0], bs)]
        return _Fields(**{k: (None if getattr(parts[0], k) is None else torch.cat([getattr(p, k) for p in parts]))
                          for k in _Fields.__slots__})

    def energy_only(x: torch.Tensor, sigma: float) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], bs):
                xb = x[i:i + bs]
                out.append(model.energy(xb, torch.full((xb.shape[0],), sigma, dtype=dtype, device=device)))
        return torch.cat(out)

    def drift_of(f: _Fields) -> torch.Tensor:  # per unit tau = sigma^2
        if drift == "pita":
            return 0.5 * gamma * (f.s - f.gE)
        if drift == "score":
            return gamma * f.s
        if drift == "tempered":
            return 0.5 * (1.0 + lam2 * gamma) * f.s
        return -gamma * f.gE

    def cont_rate(f: _Fields, u: torch.Tensor) -> torch.Tensor:  # per unit tau, without the time term
        if not general:
            return 0.5 * gamma * f.div_s - 0.5 * gamma * gamma * (f.s * f.gE).sum(-1)
        if drift == "pita":
            div_u = 0.5 * gamma * (f.div_s - f.lap_E)
        elif drift == "score":
            div_u = gamma * f.div_s
        elif drift == "tempered":
            div_u = 0.5 * (1.0 + lam2 * gamma) * f.div_s
        else:
            div_u = -gamma * f.lap_E
        gphi = gamma * f.gE
        lap_phi = gamma * f.lap_E if f.lap_E is not None else 0.0
        return div_u - (u * gphi).sum(-1) - 0.5 * lam2 * ((gphi * gphi).sum(-1) - lap_phi)

    def metropolis(x, f, y, fy, log_alpha):
        """Accepts y (fields fy) over x (fields f) where log u < log_alpha; returns x, f, acceptance rate."""
        u = torch.rand(x.shape[0], generator=generator, dtype=torch.float64).to(device)
        # an HMC trajectory could end at a non-finite y with finite fields (only for an odd model): never accept it
        accept = (torch.log(u) < log_alpha) & torch.isfinite(log_alpha) & torch.isfinite(y).all(-1) & alive
        for k in _Fields.__slots__:
            v, vy = getattr(f, k), getattr(fy, k)
            if v is not None:
                setattr(f, k, torch.where(accept.reshape(-1, *([1] * (v.dim() - 1))), vy, v))
        x = torch.where(accept[:, None], y, x)
        n_alive = max(int(alive.sum()), 1)
        return x, f, float(accept.sum()) / n_alive

    def mala(x: torch.Tensor, f: _Fields, sigma: float, h: float) -> tuple[torch.Tensor, _Fields, float]:
        """One Metropolis-adjusted Langevin step for q(x) ∝ exp(-gamma E(x, sigma)) (proposal variance h;
        gamma: the current level's, which the tempering stage raises)."""
        y = x - 0.5 * h * gamma * f.gE + math.sqrt(h) * noise(x.shape)
        fy = fields(y, sigma)
        log_fwd = -((y - x + 0.5 * h * gamma * f.gE).double() ** 2).sum(-1) / (2 * h)
        log_back = -((x - y + 0.5 * h * gamma * fy.gE).double() ** 2).sum(-1) / (2 * h)
        log_alpha = gamma * (f.E.double() - fy.E.double()) + log_back - log_fwd
        return metropolis(x, f, y, fy, log_alpha)

    def hmc(x: torch.Tensor, f: _Fields, sigma: float, h: float) -> tuple[torch.Tensor, _Fields, float]:
        """One HMC move for q(x) ∝ exp(-gamma E(x, sigma)): unit mass, leapfrog_steps leapfrog steps of
        size sqrt(h) times a random factor in 1 +- HMC_STEP_JITTER (one per move, independent of the state),
        then a Metropolis test on the Hamiltonian gamma E + |p|^2 / 2."""
        jitter = 1.0 + HMC_STEP_JITTER * (2.0 * float(torch.rand((), generator=generator, dtype=torch.float64)) - 1.0)
        eps = math.sqrt(h) * jitter
        p0 = noise(x.shape)
        p = p0 - 0.5 * eps * gamma * f.gE
        y, fy = x, f
        for i in range(leapfrog_steps):
            y = y + eps * p
            fy = fields(y, sigma)
            p = p - (eps if i < leapfrog_steps - 1 else 0.5 * eps) * gamma * fy.gE
        log_alpha = (gamma * (f.E.double() - fy.E.double())
                     + 0.5 * ((p0.double() ** 2).sum(-1) - (p.double() ** 2).sum(-1)))
        return metropolis(x, f, y, fy, log_alpha)

    # whether the moves after a level's torsion moves read grad E at the same x: on the tempering levels
    # (x is kept between them); on the sigma path the next level evaluates its fields afresh at a x
    torsion_needs_gradient = gamma_path == "temper_at_sigma_min"

    def torsion_level(x: torch.Tensor, f: _Fields, sigma: float) -> tuple[torch.Tensor, _Fields, float]:
        """torsion_moves Metropolis rotations per particle for q(x) ∝ exp(-gamma E(x, sigma)): the proposal
        (a uniform bond, a uniform angle in +-180 deg, centroid kept) is symmetric and volume-preserving,
        so the test is on gamma E alone; one forward pass per move, then one pass for the moved particles
        (with the gradient only where later moves need it: torsion_needs_gradient)."""
        shape = (x.shape[0], -1, 3)
        accepted = torch.zeros(x.shape[0], dtype=torch.bool, device=device)
        energy, rates = f.E, []
        for _ in range(torsion_moves):
            y = torsions.propose(x.reshape(shape), generator)[0].reshape(x.shape)
            energy_y = energy_only(y, sigma)
            log_alpha = torsion_log_acceptance(gamma, energy, energy_y)
            u = torch.rand(x.shape[0], generator=generator, dtype=torch.float64).to(device)
            # a dropped particle (zeroed) has no bond axis: its proposal is NaN and never accepted
            accept = (torch.log(u) < log_alpha) & torch.isfinite(log_alpha) & torch.isfinite(y).all(-1) & alive
            x = torch.where(accept[:, None], y, x)
            energy = torch.where(accept, energy_y, energy)
            accepted |= accept
            rates.append(float(accept.sum()) / max(int(alive.sum()), 1))
        if not accepted.any():
            return x, f, float(np.mean(rates))
        idx = accepted.nonzero().squeeze(1)
        if not torsion_needs_gradient:
            # the level ends here: the next one needs E at x only (its increment), so no gradient pass and no
            # stale gradient kept. E of the moved particles is evaluated again as a batch of them, as fields()
            # would: `energy` (from the proposals' full batch) differs in float32 rounding (log weights by
            # ~1e-5), which would change the resampling of the runs recorded in docs/RESULTS.md
            E_moved = f.E.clone()
            E_moved[idx] = energy_only(x[idx], sigma)
            return x, _Fields(**{k: (E_moved if k == "E" else None) for k in _Fields.__slots__}), float(np.mean(rates))
        f_acc = fields(x[idx], sigma)
        for k in _Fields.__slots__:
            v, va = getattr(f, k), getattr(f_acc, k)
            if v is not None:
                v = v.clone()
                v[idx] = va
                setattr(f, k, v)
        return x, f, float(np.mean(rates))

    move, target_acceptance = (mala, MALA_TARGET_ACCEPTANCE) if leapfrog_steps == 1 else (hmc, HMC_TARGET_ACCEPTANCE)

    # -------- initialisation -------------------------------------------------------------
    var0 = sigma_max ** 2 / gamma
    x = noise((N, D)) * math.sqrt(var0)
    f = fields(x, float(sig[0]))
    A = (-gamma * f.E.double() + (x.double() ** 2).sum(-1) / (2 * var0)
         + 0.5 * d_eff * math.log(2 * math.pi * var0))
    log_Z = 0.0
    alive = torch.ones(N, dtype=torch.bool, device=device)
    ancestor = torch.arange(N)
    n_bad = 0
    ess_trace, resample_steps, collapse_steps = [], [], []
    kappa, acceptance, kappas, n_stalled = MALA_INITIAL_KAPPA, [], [], 0
    torsion_acceptance: list[tuple[float, float, float]] = []  # (sigma, gamma, acceptance) per level with torsion moves
    sd_model = getattr(model, "sd", None)
    transport_var = float(sd_model) ** 2 if isinstance(sd_model, (int, float)) else 1.0

    def drop_nonfinite(x, A, f):
        nonlocal n_bad
        bad = ~torch.isfinite(x).all(-1) | torch.isnan(A) | (A == math.inf)
        for k in ("E", "gE", "s", "div_s", "lap_E", "dE_dsig"):
            v = getattr(f, k)
            if v is not None:
                bad |= ~torch.isfinite(v.reshape(v.shape[0], -1)).all(-1)
        bad &= alive
        nb = int(bad.sum())
        if nb:
            n_bad += nb
            alive[bad] = False
            log.warning("fksmc: %d particle(s) with NaN/inf state dropped (total %d)", nb, n_bad)
        if (~alive).any():
            x = torch.where(alive[:, None], x, torch.zeros_like(x))
            A = torch.where(alive, A, torch.full_like(A, -math.inf))
            f.set_rows(~alive, 0.0)
        return x, A

    def move_level(x, f, sigma, n_moves):
        """n_moves MALA (or HMC) moves on the level at sigma (step variance kappa sigma^2 / gamma); kappa is
        adapted after the level towards the target acceptance, and halved at once after a move that
        fewer than MALA_STALL_ACCEPTANCE of the particles accept (from past moves only)."""
        nonlocal kappa, n_stalled
        rates = []
        kappas.append(kappa)
        for _ in range(n_moves):
            x, f, acc = move(x, f, sigma, kappa * sigma ** 2 / gamma)
            rates.append(acc)
            if acc < MALA_STALL_ACCEPTANCE:  # from this level's past moves only
                kappa = max(0.5 * kappa, 1e-4)
                n_stalled += 1
        if torsion_moves and sigma <= torsion_sigma_max:
            x, f, torsion_rate = torsion_level(x, f, sigma)
            torsion_acceptance.append((sigma, gamma, torsion_rate))
        if not rates:
            return x, f, None
        rate = float(np.mean(rates))
        kappa = float(np.clip(kappa * math.exp(rate - target_acceptance), 1e-4, 1e2))
        return x, f, rate

    def resample(x, f, A):
        """Systematic resampling by the weights A; log Z takes their mean, lineages follow."""
        nonlocal log_Z, ancestor, alive
        idx = systematic_resample(A, N, generator)
        log_Z += logmeanexp(A)
        ancestor = ancestor[idx.cpu()]
        alive = torch.ones(N, dtype=torch.bool, device=device)
        return x[idx], f.index(idx), torch.zeros(N, dtype=torch.float64, device=device)

    x, A = drop_nonfinite(x, A, f)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n_steps, desc="anneal", leave=False)
        except ImportError:  # pragma: no cover
            pass

    def refine(x, A, f, s_n, s_grid):
        """The next level for weights="ais" with level_ess: the grid's next sigma if its increments keep
        the conditional ESS/N >= level_ess, else the sigma in (s_grid, s_n) where they reach it (bisection
        in log sigma on energy-only passes). Returns (sigma, scaled x, fields there, increment)."""
        def increment_at(s_to, with_fields):
            a, log_jacobian = gaussian_scaling(s_n, s_to, transport_var, d_eff)
            y = a * x
            if with_fields:
                f_to = fields(y, s_to)
                return y, f_to, time_term(gamma, f.E.double(), f_to.E.double()) + log_jacobian
            return y, None, time_term(gamma, f.E.double(), energy_only(y, s_to).double()) + log_jacobian

        y, f_to, inc = increment_at(s_grid, True)
        if level_ess <= 0 or len(ess_trace) >= max_levels or conditional_ess(A, inc) >= level_ess:
            return s_grid, y, f_to, inc
        lo, hi = math.log(s_grid), math.log(s_n)  # the increment at lo fails, at hi (no move) it is 0
        for _ in range(LEVEL_BISECTIONS):
            mid = 0.5 * (lo + hi)
            if conditional_ess(A, increment_at(math.exp(mid), False)[2]) >= level_ess:
                hi = mid
            else:
                lo = mid
        s_to = math.exp(hi)
        return (s_to, *increment_at(s_to, True))

    # -------- steps ----------------------------------------------------------------------
    # level n goes from s_n to s_next: the grid's next point, or with level_ess (weights "ais") a point
    # before it where the grid step would drop the conditional ESS/N below level_ess
    n, grid_next, s_n = 0, 1, float(sig[0])
    level_sigmas = []
    while grid_next <= n_steps:
        s_next = float(sig[grid_next])
        level_sigmas.append(s_n)
        # resampling decision on the current weights (before moving)
        r = ess(A) / N
        ess_trace.append(r)
        if r < ESS_COLLAPSE:
            if not collapse_steps:
                log.warning("fksmc: ESS/N = %.2e < %.0e at step %d (sigma %.3g); further collapses are only counted",
                            r, ESS_COLLAPSE, n, s_n)
            collapse_steps.append(n)
        if alive.sum() == 0:
            raise AllParticlesDiverged("fksmc: every particle became NaN/inf")
        if r < resample_threshold and s_n >= stop_resample_sigma:
            x, f, A = resample(x, f, A)
            resample_steps.append(n)
        if weights == "ais":
            # transport by the scaling that maps N(0, (sigma_n^2 + sd^2)/gamma) onto the next level's
            # Gaussian (exact where noise dominates; -> identity as sigma -> 0), then the exact weight of
            # a bijection: q_{n+1}(a x) a^d / q_n(x)
            s_next, x, f, increment = refine(x, A, f, s_n, s_next)
            A = A + increment
            x, A = drop_nonfinite(x, A, f)
            x, f, rate = move_level(x, f, s_next, mala_steps)
            if rate is not None:
                acceptance.append(rate)
            if log_every and (n + 1) % log_every == 0:
                log.info("fksmc: level %d sigma %.3g ESS/N %.3f", n + 1, s_next, ess(A) / N)
            n, s_n = n + 1, s_next
            if s_next == float(sig[grid_next]):
                grid_next += 1
                if bar is not None:
                    bar.update(1)
            continue
        delta = s_n ** 2 - s_next ** 2
        u = drift_of(f)
        eps = noise((N, D))
        x_new = x + u * delta + math.sqrt(lam2 * delta) * eps
        if weights == "continuous":
            rate = cont_rate(f, u).double() * delta
            if time_derivative == "finite_difference":
                dt_term = time_term(gamma, f.E.double(), energy_only(x, s_next).double())
            else:
                # left point in tau = sigma^2, like the other terms: dE/dtau = dE/dsigma / (2 sigma)
                dt_term = time_term_autograd(gamma, f.dE_dsig.double(), s_n, delta)
            A = A + rate + dt_term
            f_new = fields(x_new, s_next)
        else:
            f_new = fields(x_new, s_next)
            v = -drift_of(f_new) - lam2 * gamma * f_new.gE  # reversal drift towards the targets
            back = x - x_new - v * delta
            fwd_sq = lam2 * delta * (eps.double() ** 2).sum(-1)
            A = (A + gamma * (f.E.double() - f_new.E.double())
                 - (back.double() ** 2).sum(-1) / (2 * lam2 * delta) + fwd_sq / (2 * lam2 * delta))
        x, f = x_new, f_new
        x, A = drop_nonfinite(x, A, f)
        if log_every and (n + 1) % log_every == 0:
            log.info("fksmc: step %d/%d sigma %.3g ESS/N %.3f", n + 1, n_steps, s_next, ess(A) / N)
        n, s_n, grid_next = n + 1, s_next, grid_next + 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # -------- tempering at sigma_min (gamma_path "temper_at_sigma_min") ----------------------
    temper_gammas, temper_acceptance, temper_ess_trace, temper_resamples = [], [], [], 0
    if gamma_target != gamma:
        sigma_end = float(sig[-1])
        while gamma != gamma_target:  # upwards (cooling) or, for a hotter target, downwards
            energy_end = f.E.double()
            g_next = gamma_target
            if (len(temper_gammas) + 1 < temper_max_levels
                    and conditional_ess(A, tempering_increment(gamma, g_next, energy_end)) < temper_ess):
                lo, hi = gamma, gamma_target  # bisection for the level whose conditional ESS/N is temper_ess
                for _ in range(50):
                    mid = 0.5 * (lo + hi)
                    ok = conditional_ess(A, tempering_increment(gamma, mid, energy_end)) >= temper_ess
                    lo, hi = (mid, hi) if ok else (lo, mid)
                g_next = lo if lo != gamma else gamma + 1e-9 * (gamma_target - gamma)
            A = A + tempering_increment(gamma, g_next, energy_end)
            gamma = g_next
            temper_gammas.append(gamma)
            x, A = drop_nonfinite(x, A, f)
            temper_ess_trace.append(ess(A) / N)
            if temper_ess_trace[-1] < resample_threshold:
                x, f, A = resample(x, f, A)
                temper_resamples += 1
            x, f, rate = move_level(x, f, sigma_end, temper_mala_steps)
            if rate is not None:
                temper_acceptance.append(rate)
            log.info("fksmc: tempering level %d gamma %.4f ESS/N %.3f", len(temper_gammas), gamma, ess(A) / N)

    # -------- t = 0 ------------------------------------------------------------------------
    log_Z_path = log_Z + logmeanexp(A)
    keep = alive.clone()
    x, A, E_end = x[keep], A[keep], f.E[keep].double()
    model_energy = gamma * E_end
    A_path = A.clone()
    res = AnnealResult(
        x=x.detach(), log_weight=A.cpu().numpy().copy(), log_weight_path=A.cpu().numpy().copy(),
        model_energy=model_energy.cpu().numpy(), ess_trace=np.asarray(ess_trace),
        sigmas=np.asarray(level_sigmas), resample_steps=np.asarray(resample_steps, dtype=np.int64),
        n_resamples=len(resample_steps), n_dropped_nonfinite=n_bad, collapse_steps=collapse_steps,
        log_Z=log_Z_path, settings=settings, ancestor=ancestor[keep.cpu()].numpy(),
    )
    res.ess_path = ess(A_path)
    if temper_gammas:
        res.settings.update(temper_gammas=[float(g) for g in temper_gammas], temper_levels=len(temper_gammas),
                            temper_ess_trace=[float(r) for r in temper_ess_trace], temper_resamples=temper_resamples,
                            temper_acceptance_mean=float(np.mean(temper_acceptance)) if temper_acceptance else None)
    if level_ess > 0:
        res.settings.update(n_levels=len(level_sigmas), n_refined_levels=len(level_sigmas) - n_steps)
    if acceptance:
        res.settings["mala_acceptance_mean"] = float(np.mean(acceptance))
        res.settings["mala_acceptance_min"] = float(np.min(acceptance))
        # per level (the annealing levels, then any tempering levels): a level whose moves are all
        # rejected leaves resampled duplicates identical, which drains the lineages
        res.settings["mala_acceptance_trace"] = [float(a) for a in acceptance + temper_acceptance]
        res.settings["mala_kappa_trace"] = [float(k) for k in kappas]
        res.settings["mala_stalled_moves"] = n_stalled
    if torsion_acceptance:
        res.settings["torsion_levels"] = len(torsion_acceptance)
        res.settings["torsion_acceptance_mean"] = float(np.mean([a for _, _, a in torsion_acceptance]))
        # [sigma, gamma, acceptance] per level: the tempering levels share sigma_min and differ in gamma
        res.settings["torsion_acceptance_trace"] = [[float(s_), float(g), float(a)] for s_, g, a in torsion_acceptance]
    if system is not None:
        if temperature is None:
            raise ValueError("anneal: a system needs the target temperature")
        _final_correction(res, model, system, float(temperature), gamma, sigma_min, n_atoms, dtype, device,
                          length_scale, fix_chirality, compute_forces, bs)
    else:
        res.ess_final = res.ess_path
    if len(collapse_steps) > 1:
        log.warning("fksmc: ESS/N was below %.0e at %d of %d steps", ESS_COLLAPSE, len(collapse_steps), n_steps)
    if res.ess_final / max(len(res.log_weight), 1) < ESS_COLLAPSE:
        log.warning("fksmc: final ESS %.1f of %d particles (< %.0f%%)", res.ess_final, len(res.log_weight),
                    100 * ESS_COLLAPSE)
        res.collapse_steps.append(int(n_steps))
    res.wall_time_s = time.perf_counter() - t_start
    return res


def _schedule_params(model, sigma_min, sigma_max, rho):
    sched = getattr(model, "schedule", None)

    def pick(given, name, default):
        if given is not None:
            return float(given)
        for obj in (model, sched):
            if obj is not None and getattr(obj, name, None) is not None:
                return float(getattr(obj, name))
        if default is None:
            raise ValueError(f"anneal: {name} not given and the model has no '{name}'")
        return float(default)

    return pick(sigma_min, "sigma_min", None), pick(sigma_max, "sigma_max", None), pick(rho, "rho", 7.0)


def to_positions(x: torch.Tensor, system: Any, length_scale: float | None) -> torch.Tensor:
    """Model coordinates (B, D) -> system coordinates: denormalize for particles, x * L in R^d."""
    L = float(length_scale if length_scale is not None else getattr(system, "length_scale", 1.0))
    if getattr(system, "n_atoms", None) is not None:
        return denormalize(x, L, int(system.n_atoms))
    return x * L


def _final_correction(res: AnnealResult, model, system, temperature, gamma, sigma_min, n_atoms, dtype, device,
                      length_scale, fix_chirality, compute_forces, bs) -> None:
    x = res.x
    L = float(length_scale if length_scale is not None else getattr(model, "length_scale",
                                                                      getattr(system, "length_scale", 1.0)))
    pos = to_positions(x, system, L)
    keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if fix_chirality and getattr(system, "topology", None) is not None and system.n_atoms is not None:
        from . import chirality

        centers = chirality.chiral_centers(system.topology)
        if len(centers):
            ref = chirality.reference_signs(np.asarray(system.reference_positions), centers)
            pos, keep_m, n_mir, n_drop = chirality.fix_chirality(pos, centers, ref)
            keep = torch.as_tensor(keep_m, dtype=torch.bool, device=x.device)
            res.n_mirrored, res.n_dropped_chirality = int(n_mir), int(n_drop)
            if n_mir or n_drop:
                log.info("fksmc: chirality: %d mirrored, %d dropped", n_mir, n_drop)
            # model coordinates of the fixed configurations (mirror is x -> -x in both)
            x = (pos.reshape(pos.shape[0], -1) / L) if n_atoms is not None else pos / L
            x = remove_mean(x, n_atoms) if n_atoms is not None else x
            keep_np = keep.cpu().numpy()
            x, pos = x[keep], pos[keep]
            res.log_weight_path = res.log_weight_path[keep_np]
            # the end potential stays the one at the configuration the path PRODUCED (before
            # mirroring): A belongs to that configuration, and U is mirror-invariant, so
            # A - U(-x)/kT + gamma E(x) is the weight of the mirrored particle. A non-equivariant
            # E is not mirror-invariant; re-evaluating it at -x would bias the weights.
            res.model_energy = res.model_energy[keep_np]
            res.ancestor = res.ancestor[keep_np]
    kT = float(system.kT(temperature))
    n0 = system.n_energy_evals
    U_list, F_list = [], []
    for i in range(0, pos.shape[0], bs):
        pb = pos[i:i + bs]
        if compute_forces:
            U, F = system.energy_and_forces(pb)
            F_list.append(F.detach())
        else:
            U = system.energy(pb)
        U_list.append(U.detach().double())
    U = torch.cat(U_list) if U_list else torch.zeros(0, dtype=torch.float64)
    res.n_energy_evals = system.n_energy_evals - n0
    lw = torch.as_tensor(res.log_weight_path, dtype=torch.float64) - U.cpu() / kT + torch.as_tensor(res.model_energy)
    bad = ~torch.isfinite(lw)
    if bad.any():
        nb = int(bad.sum())
        log.warning("fksmc: %d particle(s) with non-finite final weight or energy dropped", nb)
        res.n_dropped_nonfinite += nb
        good = (~bad).numpy()
        x, pos, U, lw = x[~bad.to(x.device)], pos[~bad.to(pos.device)], U[~bad], lw[~bad]
        res.log_weight_path, res.model_energy = res.log_weight_path[good], res.model_energy[good]
        res.ancestor = res.ancestor[good]
        F_list = [torch.cat(F_list)[~bad.to(pos.device)]] if F_list else []
    res.x, res.positions = x, pos
    res.energy = U.cpu().numpy()
    res.forces = torch.cat(F_list) if F_list else None
    res.log_weight = lw.numpy()
    res.ess_final = ess(lw)
