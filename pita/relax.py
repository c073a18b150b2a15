"""Relaxation at T_{k+1} with the true forces (docs/METHOD.md, section 9), and the resample-move bridge.

relax(samples, system, T, ...):
  1. if the weights' ESS is tiny (bridge="auto") or always (bridge="always"): a resample-move
     SMC bridge from the model's density pi_0 ∝ exp(-gamma E(x~, sigma_min)) to the target
     pi_1 ∝ exp(-U/kT) along the geometric path pi_lambda ∝ pi_0^(1-lambda) pi_1^lambda, with
     lambda chosen adaptively (each increment keeps the conditional ESS at a set fraction),
     systematic resampling and MALA moves invariant for each intermediate target (exact SMC);
     the initial weights are the FK weights of the annealing path, A, for pi_0;
  2. systematic resampling by the weights to n_out equally weighted particles;
  3. moves at T with the true forces, batched over particles: MALA (exact; the step size is
     adapted during a burn-in only, then frozen) or short Langevin MD (BAOAB; not exact, has a
     time-step bias);
  4. an unweighted SampleSet with energies and forces of the final states; every true energy
     evaluation is counted (n_energy_evals = this step, n_energy_evals_total = input's total + this).

Positions are in the system's units (nm for molecules). For particle systems the moves keep
the centroid fixed (noise and gradients projected onto the mean-free subspace; the potential
is translation invariant, so this is MALA on the centroid-fixed slice).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .weights import ess, systematic_resample
from .samples import SampleSet

log = logging.getLogger(__name__)

METHODS = ("mala", "langevin")
BRIDGE_MODES = ("auto", "never", "always")
TARGET_ACCEPT = 0.574  # optimal MALA acceptance (Roberts & Rosenthal)


# ---------------------------------------------------------------------------------------------
# potentials
# ---------------------------------------------------------------------------------------------
def _project(g: torch.Tensor, mean_free: bool) -> torch.Tensor:
    if not mean_free or g.ndim != 3:
        return g
    return g - g.mean(dim=1, keepdim=True)


class SystemPotential:
    """V = U/kT with its gradient, from batched System.energy_and_forces (counted by the system)."""

    def __init__(self, system: Any, temperature: float, batch_size: int | None = None) -> None:
        self.system = system
        self.kT = float(system.kT(temperature))
        self.batch_size = batch_size

    def true(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bs = self.batch_size or x.shape[0]
        Us, Fs = [], []
        for i in range(0, x.shape[0], bs):
            U, F = self.system.energy_and_forces(x[i:i + bs])
            Us.append(U.detach().to(torch.float64))
            Fs.append(F.detach().to(x.dtype))
        return torch.cat(Us), torch.cat(Fs)


def model_potential(model: Any, gamma: float, sigma_min: float, length_scale: float, n_atoms: int | None,
                    batch_size: int | None = None) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """phi_0(x) = gamma E(x~, sigma_min) on system positions, and its gradient w.r.t. positions.

    x~ = (x - centroid)/L flattened for particles (n_atoms given), x/L in R^d otherwise.
    """
    L = float(length_scale)

    def phi(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bs = batch_size or x.shape[0]
        vals, grads = [], []
        p = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
        mdtype = p.dtype if p is not None else x.dtype
        mdev = p.device if p is not None else x.device
        for i in range(0, x.shape[0], bs):
            with torch.enable_grad():
                xb = x[i:i + bs].detach().to(dtype=mdtype, device=mdev).requires_grad_(True)
                if n_atoms is not None:
                    xt = ((xb - xb.mean(dim=1, keepdim=True)) / L).reshape(xb.shape[0], -1)
                else:
                    xt = xb / L
                sig = torch.full((xb.shape[0],), float(sigma_min), dtype=mdtype, device=mdev)
                e = gamma * model.energy(xt, sig)
                (g,) = torch.autograd.grad(e.sum(), xb)
            vals.append(e.detach().to(torch.float64).to(x.device))
            grads.append(g.detach().to(x.dtype).to(x.device))
        return torch.cat(vals), torch.cat(grads)

    return phi


@dataclass
class _State:
    x: torch.Tensor
    U: torch.Tensor  # true energy (system units), float64
    F: torch.Tensor  # true forces
    phi0: torch.Tensor | None = None  # model potential (bridge only)
    gphi0: torch.Tensor | None = None
    # the input particle (lineage) each state descends from: resampling copies it, moves keep it
    lineage: torch.Tensor | None = None

    def V(self, lam: float, kT: float) -> torch.Tensor:
        v = self.U / kT
        if self.phi0 is None or lam >= 1.0:
            return v
        return lam * v + (1.0 - lam) * self.phi0

    def gradV(self, lam: float, kT: float) -> torch.Tensor:
        g = -self.F.to(torch.float64) / kT
        if self.phi0 is None or lam >= 1.0:
            return g
        return lam * g + (1.0 - lam) * self.gphi0.to(torch.float64)

    def index(self, idx) -> "_State":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return _State(self.x[idx], self.U[idx], self.F[idx], pick(self.phi0), pick(self.gphi0), pick(self.lineage))

    def where(self, acc: torch.Tensor, other: "_State") -> "_State":
        def w(a, b):
            if a is None or b is None:
                return None
            m = acc.reshape(-1, *([1] * (a.ndim - 1)))
            return torch.where(m, b, a)

        return _State(w(self.x, other.x), w(self.U, other.U), w(self.F, other.F), w(self.phi0, other.phi0),
                      w(self.gphi0, other.gphi0), self.lineage)


def _evaluate(x: torch.Tensor, pot: SystemPotential, phi0_fn=None) -> _State:
    U, F = pot.true(x)
    st = _State(x, U, F)
    if phi0_fn is not None:
        st.phi0, st.gphi0 = phi0_fn(x)
    return st


# ---------------------------------------------------------------------------------------------
# MALA
# ---------------------------------------------------------------------------------------------
@dataclass
class MalaStats:
    step_size: float
    accept_rate: float  # after burn-in (or overall when there is no post-burn-in step)
    accept_trace: list = field(default_factory=list)
    step_trace: list = field(default_factory=list)


def mala(state: _State, pot: SystemPotential, n_steps: int, step_size: float, *, lam: float = 1.0, phi0_fn=None,
         n_burnin: int = 0, target_accept: float = TARGET_ACCEPT, mean_free: bool = False,
         generator: torch.Generator | None = None,
         same_class: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> tuple[_State, MalaStats]:
    """MALA targeting exp(-[lam U/kT + (1-lam) phi0]) (lam = 1: the Boltzmann density at T).

    Proposal y = x - tau grad V(x) + sqrt(2 tau) xi. The step size tau (position units^2)
    is adapted (Robbins-Monro on log tau towards `target_accept`) during the first `n_burnin`
    steps only, then frozen, so the remaining steps are exact MH moves.
    same_class(x, y) -> (N,) bool: proposals outside the current particle's class are rejected
    (chirality: MH for the target restricted to one enantiomer, which the moves then keep).
    """
    kT = pot.kT
    log_tau = math.log(step_size)
    acc_trace, tau_trace = [], []
    n_acc_post, n_post = 0.0, 0
    for it in range(n_steps):
        tau = math.exp(log_tau)
        x = state.x
        gx = _project(state.gradV(lam, kT), mean_free)
        xi = _project(torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device), mean_free)
        y = (x.to(torch.float64) - tau * gx + math.sqrt(2 * tau) * xi).to(x.dtype)
        prop = _evaluate(y, pot, phi0_fn if lam < 1.0 else None)
        gy = _project(prop.gradV(lam, kT), mean_free)
        yd, xd = y.to(torch.float64), x.to(torch.float64)
        dims = tuple(range(1, x.ndim))
        fwd = ((yd - xd + tau * gx) ** 2).sum(dims) / (4 * tau)
        bwd = ((xd - yd + tau * gy) ** 2).sum(dims) / (4 * tau)
        log_alpha = -prop.V(lam, kT) + state.V(lam, kT) - bwd + fwd
        u = torch.rand(x.shape[0], generator=generator, dtype=torch.float64).to(x.device)
        finite = torch.isfinite(log_alpha) & torch.isfinite(y.reshape(y.shape[0], -1)).all(-1)
        accept = finite & (torch.log(u) < torch.where(finite, log_alpha, torch.zeros_like(log_alpha)))
        if same_class is not None:
            accept &= same_class(x, y)
        state = state.where(accept, prop)
        a = float(accept.double().mean())
        acc_trace.append(a)
        tau_trace.append(tau)
        if it < n_burnin:
            rate = 1.0 / math.sqrt(it + 1.0)
            log_tau += 2.0 * rate * (a - target_accept)
        else:
            n_acc_post += a
            n_post += 1
    final_tau = math.exp(log_tau)
    acc = n_acc_post / n_post if n_post else (float(np.mean(acc_trace)) if acc_trace else float("nan"))
    return state, MalaStats(step_size=final_tau, accept_rate=acc, accept_trace=acc_trace, step_trace=tau_trace)


# ---------------------------------------------------------------------------------------------
# Langevin MD (BAOAB)
# ---------------------------------------------------------------------------------------------
def langevin(state: _State, pot: SystemPotential, n_steps: int, dt: float, *, friction: float = 1.0,
             masses: np.ndarray | None = None, generator: torch.Generator | None = None) -> _State:
    """BAOAB Langevin dynamics at kT with the true forces (dt and friction in the system's time units:
    ps and 1/ps for molecules in kJ/mol, nm, amu)."""
    x = state.x.to(torch.float64)
    F = state.F.to(torch.float64)
    kT = pot.kT
    if masses is None:
        m = torch.ones(1, dtype=torch.float64)
    else:
        m = torch.as_tensor(np.asarray(masses, dtype=np.float64))
        m = m.reshape(1, -1, 1) if x.ndim == 3 else m.reshape(1, -1)
    m = m.to(x.device)
    c1 = math.exp(-friction * dt)
    c2 = math.sqrt(1.0 - c1 * c1)
    v = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device) * torch.sqrt(kT / m)
    U = state.U
    for _ in range(n_steps):
        v = v + 0.5 * dt * F / m
        x = x + 0.5 * dt * v
        v = c1 * v + c2 * torch.sqrt(kT / m) * torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device)
        x = x + 0.5 * dt * v
        U, Fn = pot.true(x.to(state.x.dtype))
        F = Fn.to(torch.float64)
        v = v + 0.5 * dt * F / m
    return _State(x.to(state.x.dtype), U, F.to(state.F.dtype), lineage=state.lineage)


# ---------------------------------------------------------------------------------------------
# bridge
# ---------------------------------------------------------------------------------------------
@dataclass
class BridgeResult:
    state: _State
    log_weight: torch.Tensor
    lambdas: list
    ess_trace: list
    accept_trace: list
    n_resamples: int


def bridge(state: _State, log_weight0: torch.Tensor, pot: SystemPotential, phi0_fn, *, ess_fraction: float = 0.5,
           max_levels: int = 50, n_mala: int = 10, step_size: float = 1e-3, n_burnin: int | None = None,
           mean_free: bool = False, generator: torch.Generator | None = None,
           same_class: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> BridgeResult:
    """Resample-move SMC from pi_0 ∝ exp(-phi0) (weights `log_weight0` w.r.t. pi_0) to exp(-U/kT).

    The next lambda is the largest one whose incremental weights keep ESS/N >= ess_fraction
    (bisection; the last level is forced to lambda = 1 after `max_levels`); after each level
    the particles are resampled (systematic) and moved by `n_mala` MALA steps invariant for
    pi_lambda (step size re-adapted during the first half of each level's moves by default).
    The returned log_weight (w.r.t. pi_1) is uniform unless the final level was not resampled.
    """
    kT = pot.kT
    N = state.x.shape[0]
    lw = log_weight0.to(torch.float64).clone()
    lam = 0.0
    lambdas, ess_trace, acc_trace = [0.0], [ess(lw) / N], []
    n_res = 0
    tau = step_size
    burn = n_mala // 2 if n_burnin is None else n_burnin
    level = 0
    while lam < 1.0:
        level += 1
        delta_pot = state.phi0 - state.U / kT  # d log pi_lambda / d lambda

        def ess_at(l_new: float) -> float:
            return ess(lw + (l_new - lam) * delta_pot) / N

        if level >= max_levels or ess_at(1.0) >= ess_fraction:
            new = 1.0
        else:
            lo, hi = lam, 1.0
            for _ in range(50):
                mid = 0.5 * (lo + hi)
                if ess_at(mid) >= ess_fraction:
                    lo = mid
                else:
                    hi = mid
            new = max(lo, lam + 1e-6)
        lw = lw + (new - lam) * delta_pot
        lam = new
        lambdas.append(lam)
        ess_trace.append(ess(lw) / N)
        idx = systematic_resample(lw, N, generator).to(lw.device)
        state = state.index(idx)
        lw = torch.zeros(N, dtype=torch.float64, device=lw.device)
        n_res += 1
        state, st = mala(state, pot, n_mala, tau, lam=lam, phi0_fn=phi0_fn, n_burnin=burn, mean_free=mean_free,
                         generator=generator, same_class=same_class)
        if lam < 1.0 and state.phi0 is None:
            raise RuntimeError("bridge: lost the model potential")
        tau = st.step_size
        acc_trace.append(st.accept_rate)
        log.info("bridge: level %d lambda %.4g, accept %.2f, tau %.3g", level, lam, st.accept_rate, tau)
    return BridgeResult(state, lw, lambdas, ess_trace, acc_trace, n_res)


# ---------------------------------------------------------------------------------------------
# the relax step
# ---------------------------------------------------------------------------------------------
def _chirality_guard(system: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """(x, y) -> proposals that keep every chiral centre's sign, or None (no chiral centre).

    The force field gives L and D the same weight, and a MALA step from a strained start can
    invert one centre of several (a tripeptide then has mixed chirality, which no mirror
    repairs). Rejecting such proposals makes the moves MH for pi restricted to the particle's
    enantiomer; the relax command then mirrors all-D particles back to L."""
    from .chirality import ChiralityChecker

    checker = ChiralityChecker.for_system(system)
    return None if checker is None else checker.same_signs


@dataclass
class RelaxResult:
    samples: SampleSet
    diagnostics: dict


def default_step_size(system: Any, method: str) -> float:
    """MALA tau (position units^2) or Langevin dt (time units), adapted for MALA anyway."""
    L = float(getattr(system, "length_scale", 1.0))
    if method == "mala":
        return (0.005 * L) ** 2 if getattr(system, "units", "") == "kJ/mol,nm" else 1e-2 * L * L
    return 0.001 if getattr(system, "units", "") == "kJ/mol,nm" else 0.005


def torsion_cycles(system: Any, torsion_moves: int) -> int:
    """Torsion moves a relaxation of `system` makes per particle: `torsion_moves` for a molecule
    with a rotatable bond, none otherwise."""
    if torsion_moves <= 0 or not getattr(system, "mean_free", False):
        return 0
    from .torsions import TorsionMoves

    return int(torsion_moves) if TorsionMoves.for_system(system) is not None else 0


def planned_evaluations(n_out: int, n_steps: int, torsion_cycles: int) -> int:
    """True energy evaluations of a relaxation without the bridge: the resampled particles once,
    then each particle once per MALA or Langevin step and once per torsion move. Fixed by the
    settings, so a run's cost is known before it runs (the baselines' planned budget)."""
    return int(n_out) * (1 + int(n_steps) + int(torsion_cycles))


def relax(samples: SampleSet, system: Any, temperature: float, *, method: str = "mala", n_steps: int = 100,
          step_size: float | None = None, n_burnin: int | None = None, friction: float = 1.0,
          bridge_mode: str = "auto", bridge_ess_threshold: float = 0.01, bridge_ess_fraction: float = 0.5,
          bridge_mala_steps: int = 10, bridge_max_levels: int = 50, phi0_fn=None,
          log_weight_path: np.ndarray | None = None, n_out: int | None = None, batch_size: int | None = None,
          torsion_moves: int = 0, torsion_max_angle: float = math.pi, device: str | torch.device | None = None,
          seed: int | None = 0, generator: torch.Generator | None = None, dtype=torch.float64,
          lineage: np.ndarray | None = None, attrs: dict | None = None) -> RelaxResult:
    """Resample `samples` by their weights (bridging first when the ESS is tiny) and move at T.

    phi0_fn: positions -> (gamma E(x~, sigma_min), gradient), needed by the bridge (see
    `model_potential`); log_weight_path: the FK weights A w.r.t. pi_0 (else recovered from the
    stored log_weight, energy and extra/model_energy: A = log_weight + U/kT - phi0).
    lineage: (N,) integer label of the independent draw each input particle descends from (the
    anneal's `ancestor`); default: each input particle its own. The output's extra `ancestor` is
    that label for every output sample: resampling copies it, moves keep it, so samples that share
    it are correlated (the evaluation's standard errors account for that).
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if bridge_mode not in BRIDGE_MODES:
        raise ValueError(f"bridge must be one of {BRIDGE_MODES}, got {bridge_mode!r}")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed))
    N = len(samples)
    n_out = int(n_out or N)
    mean_free = bool(getattr(system, "mean_free", False)) and samples.positions.ndim == 3
    pot = SystemPotential(system, temperature, batch_size)
    kT = pot.kT
    n0 = system.n_energy_evals
    # positions (and so the true energies, moves and weights) live on `device`; draws stay on the CPU generator
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x_in = torch.as_tensor(np.asarray(samples.positions)).to(dtype=dtype, device=dev)
    lw_in = torch.as_tensor(samples.log_weight if samples.log_weight is not None else np.zeros(N),
                            dtype=torch.float64).to(dev)
    ess_in = ess(lw_in)
    if lineage is not None and len(lineage) != N:
        raise ValueError(f"relax: lineage has {len(lineage)} labels for {N} samples")
    lineage_in = torch.as_tensor(np.asarray(lineage if lineage is not None else np.arange(N)), dtype=torch.int64)
    diag: dict[str, Any] = {"n_in": N, "ess_in": ess_in, "ess_in_fraction": ess_in / N, "method": method}
    same_class = _chirality_guard(system) if mean_free else None
    use_bridge = bridge_mode == "always" or (bridge_mode == "auto" and ess_in / N < bridge_ess_threshold)
    if use_bridge and phi0_fn is None:
        if bridge_mode == "always":
            raise ValueError("relax: the bridge needs the model (phi0_fn / --checkpoint)")
        log.warning("relax: ESS/N = %.3g is below %.3g but no model was given: no bridge, plain resampling",
                    ess_in / N, bridge_ess_threshold)
        use_bridge = False
    diag["bridge"] = bool(use_bridge)
    if use_bridge:
        state = _evaluate(x_in, pot, phi0_fn)
        state.lineage = lineage_in.to(dev)
        if log_weight_path is not None:
            A = torch.as_tensor(np.asarray(log_weight_path), dtype=torch.float64).to(dev)
        else:
            # log_weight = A - U/kT + phi0  =>  A = log_weight + U/kT - phi0 (phi0 re-evaluated now)
            A = lw_in + state.U / kT - state.phi0
        br = bridge(state, A, pot, phi0_fn, ess_fraction=bridge_ess_fraction, max_levels=bridge_max_levels,
                    n_mala=bridge_mala_steps, step_size=step_size or default_step_size(system, "mala"),
                    mean_free=mean_free, generator=generator, same_class=same_class)
        diag.update(bridge_lambdas=br.lambdas, bridge_ess_trace=br.ess_trace, bridge_accept=br.accept_trace,
                    bridge_levels=len(br.lambdas) - 1)
        state = br.state
        state.phi0 = state.gphi0 = None
        lw = br.log_weight
    else:
        state = None
        lw = lw_in
    idx = systematic_resample(lw, n_out, generator).to(dev)
    diag["n_unique_after_resampling"] = int(torch.unique(idx).numel())
    if state is None:
        state = _evaluate(x_in[idx], pot)
        state.lineage = lineage_in.to(dev)[idx]
    else:
        state = state.index(idx)
    tau = float(step_size) if step_size is not None else default_step_size(system, method)
    movers = None
    if torsion_moves > 0:
        from .torsions import TorsionMoves

        movers = TorsionMoves.for_system(system, torsion_max_angle) if mean_free else None
        if movers is None:
            log.warning("relax: torsion moves asked for, but %s has no rotatable bond: none made",
                        getattr(system, "name", "the system"))
    n_cycles = int(torsion_moves) if movers is not None else 0
    tors_acc: list[float] = []
    tors_by_bond: dict[str, list[float]] = {}

    def torsion_move(state: _State) -> _State:
        state, ts = movers.run(state, lambda y: _evaluate(y, pot), kT, 1, generator)
        tors_acc.append(ts.accept_rate)
        for name, a in ts.accept_by_bond.items():
            if a == a:  # not NaN: the bond was tried
                tors_by_bond.setdefault(name, []).append(a)
        return state

    def chunks(total: int) -> list[int]:  # `total` local steps spread over the torsion cycles
        if n_cycles == 0:
            return [total]
        return [(i + 1) * total // n_cycles - i * total // n_cycles for i in range(n_cycles)]

    if method == "mala":
        burn = n_steps // 2 if n_burnin is None else min(int(n_burnin), n_steps)
        state, st = mala(state, pot, burn, tau, n_burnin=burn, mean_free=mean_free, generator=generator,
                         same_class=same_class)
        tau_run, acc_trace = (st.step_size if burn else tau), list(st.accept_trace)
        n_acc, n_post = 0.0, 0
        for m in chunks(n_steps - burn):
            if n_cycles:
                state = torsion_move(state)
            if m:
                state, st = mala(state, pot, m, tau_run, n_burnin=0, mean_free=mean_free, generator=generator,
                                 same_class=same_class)
                acc_trace += st.accept_trace
                n_acc += st.accept_rate * m
                n_post += m
        accept_rate = n_acc / n_post if n_post else (float(np.mean(acc_trace)) if acc_trace else float("nan"))
        diag.update(accept_rate=accept_rate, step_size=tau_run, n_burnin=burn, accept_trace=acc_trace)
        if n_post and not (0.2 <= accept_rate <= 0.9):
            log.warning("relax: MALA acceptance %.2f after burn-in", accept_rate)
    else:
        masses = system.masses if system.n_atoms is not None else None
        for m in chunks(n_steps):
            if n_cycles:
                state = torsion_move(state)
            if m:
                state = langevin(state, pot, m, tau, friction=friction, masses=masses, generator=generator)
        diag.update(dt=tau, friction=friction)
    if n_cycles:
        diag.update(torsion_moves=n_cycles, torsion_accept_rate=float(np.mean(tors_acc)),
                    torsion_accept_by_bond={k: float(np.mean(v)) for k, v in tors_by_bond.items()})
        log.info("relax: %d torsion moves per particle, acceptance %.3f (%s)", n_cycles, float(np.mean(tors_acc)),
                 ", ".join(f"{k} {np.mean(v):.2f}" for k, v in tors_by_bond.items()))
    n_evals = system.n_energy_evals - n0
    if not use_bridge and n_evals != planned_evaluations(n_out, n_steps, n_cycles):
        # the planned budget (pita.baselines.plan_pita_budget) relies on this count
        raise RuntimeError(f"relax: spent {n_evals} energy evaluations, planned "
                           f"{planned_evaluations(n_out, n_steps, n_cycles)}")
    good = torch.isfinite(state.U) & torch.isfinite(state.x.reshape(state.x.shape[0], -1)).all(-1)
    n_bad = int((~good).sum())
    if n_bad:
        log.warning("relax: %d particle(s) with non-finite energy dropped", n_bad)
    diag["n_dropped_nonfinite"] = n_bad
    state = state.index(good)
    prev_total = int(samples.attrs.get("n_energy_evals_total", 0))
    out_attrs = dict(samples.attrs)
    for k in ("log_weight_note",):
        out_attrs.pop(k, None)
    out_attrs.update(attrs or {})
    out_attrs.update(temperature=float(temperature), n_energy_evals=int(n_evals),
                     n_energy_evals_total=prev_total + int(n_evals), wall_time_s=time.perf_counter() - t0)
    diag.update(n_energy_evals=int(n_evals), n_energy_evals_total=prev_total + int(n_evals),
                n_out=int(state.x.shape[0]), wall_time_s=time.perf_counter() - t0)
    out_lineage = state.lineage.cpu().numpy().astype(np.int64)
    counts = np.unique(out_lineage, return_counts=True)[1]
    diag.update(n_lineages=int(counts.size), ess_lineages=ess(np.log(counts.astype(np.float64))))
    out = SampleSet(positions=state.x.detach().cpu().numpy().astype(np.float32),
                    energy=state.U.detach().cpu().numpy().astype(np.float64), attrs=out_attrs,
                    forces=state.F.detach().cpu().numpy().astype(np.float32),
                    extra={**{k: np.asarray(v) for k, v in diag.items()
                              if k in ("accept_trace", "bridge_lambdas", "bridge_ess_trace")},
                           "ancestor": out_lineage})
    return RelaxResult(out, diag)
