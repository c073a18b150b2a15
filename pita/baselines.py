"""Baselines at PITA's energy-evaluation budget: plain MD, replica exchange and model-free SMC.

Both spend at most a given number of energy evaluations (normally the PITA run's total, the
`n_energy_evals_total` of its final rung) with the same accounting as the rest of the
package (docs/METHOD.md, section 10): every force/energy call counts one per
configuration, minimisation and equilibration included, every replica at every temperature.

* ``"md"``: plain Langevin MD at the target temperature (`pita.md.run_md`, OpenMM or the
  batched torch engine) with as many walkers as replica exchange runs in all
  (`walkers_per_temperature` x ladder size), so both baselines have the same parallelism and
  the same number of steps per walker; only the ladder and the swaps differ.
* ``"replica_exchange"`` (parallel tempering): `walkers_per_temperature` (M) walkers at each
  temperature of the ladder T_0 > ... > T_K, integrated together by batched BAOAB
  (:class:`LadderLangevin`, the integrator of `pita.md.BatchedLangevin` with per-walker
  temperatures). Every `swap_every` steps, neighbouring temperatures (k, k+1) propose to swap
  their configurations, walker m with walker m (M independent ladders), even pairs and odd
  pairs alternating; acceptance min(1, exp((beta_k - beta_{k+1}) (U_k - U_{k+1}))) with U_k the
  energy of the configuration at T_k (:func:`swap_log_acceptance`). A swapped configuration
  keeps its velocities rescaled by sqrt(T_new / T_old), so they stay Maxwell-Boltzmann at the
  new temperature. Swaps reuse the stored energies: they cost no evaluation. Samples are
  recorded at the target (coldest) temperature only, after the equilibration share.
* ``"smc"`` (:func:`run_smc`): PITA without the learned model. From the PITA run's own rung-0
  MD set at T_0 (its evaluations count: n_energy_evals_total = the seed set's total + what the
  baseline spends), each step T_k -> T_{k+1} of the ladder takes N particles of the rung-k set,
  runs the resample-move bridge of `pita.relax.bridge` from pi_{T_k} (phi0 = U/kT_k, known
  exactly: no model) to pi_{T_{k+1}} (adaptive lambda keeping the incremental ESS/N at a set
  fraction, systematic resampling, MALA moves invariant for each intermediate target), then the
  PITA rung's relaxation (`pita.relax.relax`: MALA or Langevin steps and Metropolis torsion
  moves at T_{k+1}, :class:`SmcKernel`). The budget is met by the number of particles per rung
  (:func:`plan_smc_particles`): the bridge's levels are estimated from the seed set's energy
  spread (:func:`smc_level_estimates`, with a margin), each bridge is capped at the levels its
  rung's share of the budget pays for, what a rung leaves goes to the next rungs' particles, and
  what the last bridge leaves goes to extra steps of the final relaxation (`spend_leftover`).

The budget (:class:`EvaluationBudget`) is split into minimisation (measured, exact), one
initial force evaluation per walker, equilibration and production (:class:`StepPlan`); the
production share sets the stride between saved frames, the equilibration gets the rest, and
what cannot be spent in whole steps of all walkers (fewer evaluations than walkers) is left
unspent. The recorded `n_energy_evals` is the System's own counter over the whole run and is
never above the budget.

Particle systems (Lennard-Jones, molecules) are translation invariant: the centroid of each
walker diffuses freely, as in `pita md`; saved positions are shifted to a zero centroid
(energies and forces do not change). Toys in R^d are stored as they are.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict as dataclasses_asdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import md
from .errors import PitaInputError
from .provenance import base_attrs, system_identity
from .samples import SampleSet
from .settings import MAX_STEPS

log = logging.getLogger(__name__)

METHODS = ("md", "replica_exchange", "smc")
#: default share of the budget (after minimisation) spent on equilibration
EQUILIBRATION_FRACTION = 0.2
#: at most this share of the budget goes to minimising the starting structure(s)
MINIMIZATION_SHARE = 0.1


# ---------------------------------------------------------------------------------------------
# small physical objects
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemperatureLadder:
    """T_0 > T_1 > ... > T_K; the target is the last (coldest) temperature."""

    temperatures: tuple[float, ...]
    kB: float = 1.0

    @classmethod
    def from_values(cls, values, kB: float, field_name: str = "temperatures") -> "TemperatureLadder":
        try:
            temps = tuple(float(t) for t in (values if isinstance(values, (list, tuple, np.ndarray)) else [values]))
        except (TypeError, ValueError):
            raise PitaInputError(f"{field_name}: expected numbers, got {values!r}") from None
        if not temps:
            raise PitaInputError(f"{field_name}: needs at least one temperature (the target, last)")
        for i, t in enumerate(temps):
            if not (math.isfinite(t) and t > 0):
                raise PitaInputError(f"{field_name}: temperature {i} must be positive, got {t!r}")
        for i in range(1, len(temps)):
            if not temps[i] < temps[i - 1]:
                raise PitaInputError(f"{field_name}: must decrease from hot to cold (target last), but "
                                     f"{temps[i - 1]:g} is followed by {temps[i]:g}")
        return cls(temps, float(kB))

    def __len__(self) -> int:
        return len(self.temperatures)

    @property
    def target(self) -> float:
        return self.temperatures[-1]

    @property
    def betas(self) -> np.ndarray:
        return 1.0 / (self.kB * np.asarray(self.temperatures, dtype=np.float64))

    def pair_labels(self) -> list[str]:
        t = self.temperatures
        return [f"{t[k]:g}-{t[k + 1]:g}" for k in range(len(t) - 1)]


def swap_log_acceptance(beta_i, beta_j, u_i, u_j):
    """log of the Metropolis ratio for exchanging configuration x_i (at beta_i, energy u_i) with
    x_j (at beta_j, energy u_j): (beta_i - beta_j) (u_i - u_j); accept with min(1, exp(.))."""
    return (beta_i - beta_j) * (u_i - u_j)


@dataclass(frozen=True)
class StepPlan:
    """Steps per walker within a budget: `equilibration_steps`, then `n_frames` x `stride_steps`.

    Cost per walker: `initial_evals` + equilibration_steps + n_frames x (stride_steps +
    `evals_per_frame`) (the torch engine evaluates forces once at the start, OpenMM reads energy
    and forces back at each saved frame)."""

    walkers: int
    n_frames: int
    stride_steps: int
    equilibration_steps: int
    initial_evals: int = 1
    evals_per_frame: int = 0

    @property
    def evals_per_walker(self) -> int:
        return self.initial_evals + self.equilibration_steps + self.n_frames * (self.stride_steps + self.evals_per_frame)

    @property
    def n_energy_evals(self) -> int:
        return self.walkers * self.evals_per_walker

    @property
    def equilibration_evals(self) -> int:
        return self.walkers * (self.initial_evals + self.equilibration_steps)

    @property
    def production_evals(self) -> int:
        return self.n_energy_evals - self.equilibration_evals


@dataclass(frozen=True)
class EvaluationBudget:
    """At most `total` energy evaluations; `equilibration_fraction` of what is left after
    minimisation goes to equilibration (plus rounding), the rest to production."""

    total: int
    equilibration_fraction: float = EQUILIBRATION_FRACTION
    source: str = ""

    def __post_init__(self):
        what = self.source or "budget"
        if isinstance(self.total, bool) or not isinstance(self.total, (int, np.integer)) or self.total < 1:
            raise PitaInputError(f"{what}: the energy-evaluation budget must be a positive integer, got {self.total!r}")
        f = self.equilibration_fraction
        if not (isinstance(f, (int, float)) and 0 <= f < 1):
            raise PitaInputError(f"equilibration_fraction: must be in [0, 1), got {f!r}")

    def plan(self, spent: int, walkers: int, n_frames: int, *, initial_evals: int = 1,
             evals_per_frame: int = 0) -> StepPlan:
        """The longest run of `walkers` that saves `n_frames` frames each and, with `spent`
        evaluations already made, stays within the budget."""
        left = int(self.total) - int(spent)
        per_walker = left // int(walkers)
        avail = per_walker - initial_evals
        stride = int(math.floor(avail * (1.0 - self.equilibration_fraction) / n_frames)) - evals_per_frame
        if stride < 1:
            need = walkers * (initial_evals + n_frames * (1 + evals_per_frame)) + spent
            raise PitaInputError(
                f"{self.source or 'budget'}: {self.total} energy evaluations are too few for {walkers} walker(s) x "
                f"{n_frames} saved frame(s) ({spent} already spent on minimisation; at least {need} needed, "
                f"more with an equilibration share): raise the budget or lower n_samples/replicas")
        eq = avail - n_frames * (stride + evals_per_frame)
        plan = StepPlan(walkers=int(walkers), n_frames=int(n_frames), stride_steps=stride, equilibration_steps=eq,
                        initial_evals=initial_evals, evals_per_frame=evals_per_frame)
        assert spent + plan.n_energy_evals <= self.total
        return plan


@dataclass
class SwapStatistics:
    """Swap attempts and acceptances per neighbouring pair (k, k+1) of the ladder."""

    attempts: np.ndarray
    accepted: np.ndarray
    labels: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, ladder: TemperatureLadder) -> "SwapStatistics":
        n = max(0, len(ladder) - 1)
        return cls(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), ladder.pair_labels())

    @property
    def acceptance(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.attempts > 0, self.accepted / np.maximum(self.attempts, 1), np.nan)

    @property
    def overall(self) -> float:
        total = int(self.attempts.sum())
        return float(self.accepted.sum() / total) if total else float("nan")


# ---------------------------------------------------------------------------------------------
# replica exchange
# ---------------------------------------------------------------------------------------------
class LadderLangevin(md.BatchedLangevin):
    """`pita.md.BatchedLangevin` (BAOAB) where walker r runs at its own temperature T_r: the O
    step's thermal noise and the initial Maxwell-Boltzmann velocities use kB T_r / m."""

    def __init__(self, system, temperatures, timestep: float, friction: float, **kw) -> None:
        temps = np.asarray(temperatures, dtype=np.float64).reshape(-1)
        super().__init__(system, float(temps.max()), timestep, friction, **kw)
        shape = (-1,) + (1,) * len(self.event_shape)
        self.walker_temperature = torch.as_tensor(temps, dtype=self.dtype, device=self.device).reshape(shape)
        self.sigma_v = torch.sqrt(float(system.kB) * self.walker_temperature * self.inv_mass)

    def kinetic_temperatures(self) -> np.ndarray:
        """Instantaneous kinetic temperature of each walker (no constraints)."""
        ke2 = (self.mass * self.v * self.v).flatten(1)
        return (ke2.sum(1) / (ke2.shape[1] * self.system.kB)).cpu().numpy()


class ReplicaExchange:
    """M walkers at each temperature of a ladder, BAOAB between Metropolis swaps of neighbours.

    Walker slot k*M + m sits at temperature T_k; a swap exchanges configurations (positions,
    rescaled velocities, energies, forces) between slots (k, m) and (k+1, m), so each slot keeps
    its temperature. `attempt_swaps(parity)` tries the pairs k = parity, parity + 2, ...
    """

    def __init__(self, system, ladder: TemperatureLadder, walkers_per_temperature: int, timestep: float,
                 friction: float, *, generator: torch.Generator, device="cpu", dtype=torch.float64,
                 eval_dtype=None) -> None:
        if len(ladder) < 2:
            raise PitaInputError("temperatures: replica exchange needs at least two temperatures")
        self.system = system
        self.ladder = ladder
        self.M = int(walkers_per_temperature)
        self.K = len(ladder)
        self.generator = generator
        temps = np.repeat(np.asarray(ladder.temperatures), self.M)
        self.integrator = LadderLangevin(system, temps, timestep, friction, generator=generator, device=device,
                                         dtype=dtype, eval_dtype=eval_dtype)
        self.device = self.integrator.device
        self.betas = torch.as_tensor(ladder.betas, dtype=torch.float64, device=self.device)
        t = torch.as_tensor(ladder.temperatures, dtype=dtype, device=self.device)
        #: velocity factor for a configuration arriving at T_k from T_{k+1}, and the reverse
        self._up = torch.sqrt(t[:-1] / t[1:])
        self._down = torch.sqrt(t[1:] / t[:-1])
        self.stats = SwapStatistics.empty(ladder)

    @property
    def n_walkers(self) -> int:
        return self.K * self.M

    def initialize(self, x: torch.Tensor) -> None:
        self.integrator.initialize(x)

    def step(self, n_steps: int) -> None:
        self.integrator.step(n_steps)

    def accept_mask(self, parity: int, uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pair indices k, accept (n_pairs, M) bool) for the pairs (k, k+1), k = parity, parity+2, ..."""
        ks = torch.arange(int(parity), self.K - 1, 2, device=self.device)
        u = self.integrator.energy.to(torch.float64).reshape(self.K, self.M)
        log_a = swap_log_acceptance(self.betas[ks, None], self.betas[ks + 1, None], u[ks], u[ks + 1])
        if uniforms is None:
            uniforms = torch.rand(log_a.shape, generator=self.generator, dtype=torch.float64, device=self.device)
        accept = torch.log(uniforms) < log_a
        return ks, accept

    def attempt_swaps(self, parity: int, uniforms: torch.Tensor | None = None) -> int:
        """One round of swap proposals; returns the number accepted."""
        ks, accept = self.accept_mask(parity, uniforms)
        if ks.numel() == 0:
            return 0
        self.stats.attempts[ks.cpu().numpy()] += self.M
        self.stats.accepted[ks.cpu().numpy()] += accept.sum(1).cpu().numpy()
        kk, mm = torch.nonzero(accept, as_tuple=True)
        if kk.numel() == 0:
            return 0
        k = ks[kk]
        a = k * self.M + mm  # hotter slot (T_k)
        b = a + self.M  # colder slot (T_{k+1})
        perm = torch.arange(self.n_walkers, device=self.device)
        perm[a], perm[b] = b, a
        integ = self.integrator
        shape = (-1,) + (1,) * (integ.v.ndim - 1)
        scale = torch.ones(self.n_walkers, dtype=integ.v.dtype, device=self.device)
        scale[a] = self._up[k]  # the colder configuration arrives at T_k
        scale[b] = self._down[k]
        integ.x = integ.x[perm]
        integ.v = integ.v[perm] * scale.reshape(shape)
        integ.energy = integ.energy[perm]
        integ.forces = integ.forces[perm]
        return int(kk.numel())

    def target_slice(self) -> slice:
        return slice((self.K - 1) * self.M, self.K * self.M)


# ---------------------------------------------------------------------------------------------
# front ends
# ---------------------------------------------------------------------------------------------
def _centre(x: np.ndarray, system) -> np.ndarray:
    if x.ndim >= 3 and getattr(system, "mean_free", False):
        return x - x.mean(axis=-2, keepdims=True)
    return x


def _minimised_starts(system, n: int, *, minimize: bool, minimize_steps: int, max_evals: int, rng, device, dtype,
                      eval_dtype):
    """(n, ...) starting configurations (the System's reference structure, an LJ lattice or a
    normal draw, as `pita md`), each distinct start minimised once with at most `max_evals`
    evaluations in all (fewer iterations when there are many distinct starts); returns (x, n_evals)."""
    x0 = md._starting_positions(system, n, None, rng)
    uniq, inverse = np.unique(x0.reshape(n, -1), axis=0, return_inverse=True)
    xu = torch.as_tensor(uniq.reshape((-1,) + tuple(system.event_shape)), dtype=dtype, device=device)
    n_min = 0
    # each iteration evaluates at most every distinct start once, plus one initial evaluation
    minimize_steps = min(int(minimize_steps), int(max_evals) // xu.shape[0] - 1)
    if minimize and minimize_steps > 0:
        xu, _, _, n_min = md.minimize_torch(system, xu, max_steps=minimize_steps, eval_dtype=eval_dtype)
    return xu[torch.as_tensor(np.asarray(inverse).reshape(-1), device=device)], n_min


def _common_attrs(method: str, system, ladder: TemperatureLadder, budget: EvaluationBudget, settings: dict,
                  seed: int, n_evals: int, n_min: int, plan: StepPlan, wall: float) -> dict:
    attrs = base_attrs("baseline", settings, seed)
    attrs.update({
        "method": method,
        "system": system.name,
        **system_identity(system),
        "temperature": float(ladder.target),
        "units": system.units,
        "length_scale": float(system.length_scale),
        "rung": len(ladder) - 1,
        "n_energy_evals": int(n_evals),
        # a baseline is a method of its own: nothing before it on a ladder
        "n_energy_evals_total": int(n_evals),
        "n_energy_evals_budget": int(budget.total),
        "n_energy_evals_minimization": int(n_min),
        "n_energy_evals_equilibration": int(n_min + plan.equilibration_evals),
        "n_energy_evals_production": int(plan.production_evals),
        "budget_from": budget.source,
        "equilibration_fraction": float(budget.equilibration_fraction),
        "temperatures": [float(t) for t in ladder.temperatures],
        "walkers": int(plan.walkers),
        "frames_per_walker": int(plan.n_frames),
        "stride_steps": int(plan.stride_steps),
        "equilibration_steps": int(plan.equilibration_steps),
        "wall_time_s": float(wall),
        "time_unit": "ps" if md.is_molecular(system) else "reduced",
        "kB": float(system.kB),
    })
    return attrs


def _check_spent(n_evals: int, budget: EvaluationBudget, expected: int, method: str) -> None:
    # internal consistency: the System's ledger must match the plan and stay within the budget
    if n_evals != expected or n_evals > budget.total:
        raise RuntimeError(f"{method}: spent {n_evals} energy evaluations, planned {expected}, budget {budget.total}")


def _resolve(system, timestep, friction, dtype):
    d = md.default_settings(system)
    timestep = md._check_positive("timestep", d["timestep"] if timestep is None else timestep)
    friction = md._check_positive("friction", d["friction"] if friction is None else friction, allow_zero=True)
    precision = "mixed" if dtype is None else str(dtype).replace("torch.", "")
    if precision not in md.PRECISIONS:
        raise PitaInputError(f"dtype: expected one of {', '.join(md.PRECISIONS)}, got {dtype!r}")
    return timestep, friction, precision


def run_replica_exchange(system, temperatures, n_samples: int, budget: EvaluationBudget, *,
                         walkers_per_temperature: int = 16, swap_every: int = 50, timestep: float | None = None,
                         friction: float | None = None, minimize: bool = True, minimize_steps: int = 500,
                         device=None, dtype=None, seed: int = 0, progress: bool | None = None,
                         config: dict | None = None) -> SampleSet:
    """Replica exchange over `temperatures` (hot -> cold, target last) within `budget`.

    Returns `n_samples` configurations at the target temperature (walker-major: all frames of
    target walker 0, then walker 1, ...; `trajectory` = walker, `time_ps` = time since the end
    of equilibration in the system's time unit) with their energies and forces; attrs record
    the evaluations (total, minimisation, equilibration, production, budget) and the swap
    acceptance per neighbouring pair (`swap_acceptance`, `swap_attempts`, `swap_accepted`,
    `swap_pairs`, `swap_acceptance_mean`).
    """
    ladder = TemperatureLadder.from_values(temperatures, system.kB)
    n_samples = md._check_count("n_samples", n_samples, 1)
    M = md._check_count("replicas", walkers_per_temperature, 1)
    swap_every = md._check_count("swap_every", swap_every, 1)
    seed = md._check_count("seed", seed, 0)
    minimize_steps = md._check_count("minimize_steps", minimize_steps, 0)
    timestep, friction, precision = _resolve(system, timestep, friction, dtype)
    if len(ladder) < 2:
        raise PitaInputError("temperatures: replica exchange needs at least two temperatures (hot ... target)")
    dev = md.resolve_device(device)
    tdtype, eval_dtype = md.PRECISIONS[precision]
    K = len(ladder)
    W = K * M
    n_frames = int(math.ceil(n_samples / M))
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed))

    n0 = system.n_energy_evals
    t0 = time.perf_counter()
    x, n_min = _minimised_starts(system, W, minimize=minimize, minimize_steps=minimize_steps,
                                 max_evals=int(MINIMIZATION_SHARE * budget.total), rng=rng, device=dev, dtype=tdtype,
                                 eval_dtype=eval_dtype)
    plan = budget.plan(n_min, W, n_frames, initial_evals=1)
    re = ReplicaExchange(system, ladder, M, timestep, friction, generator=gen, device=dev, dtype=tdtype,
                         eval_dtype=eval_dtype)
    log.info("replica exchange: %s, ladder %s, %d walkers per temperature, swaps every %d steps; budget %d "
             "evaluations: %d minimisation, %d equilibration steps, %d frames x %d steps per walker (%d evaluations)",
             system.name, ", ".join(f"{t:g}" for t in ladder.temperatures), M, swap_every, budget.total, n_min,
             plan.equilibration_steps, n_frames, plan.stride_steps, n_min + plan.n_energy_evals)
    re.initialize(x)

    shape = tuple(system.event_shape)
    pos = np.empty((M, n_frames) + shape, dtype=np.float64)
    frc = np.empty_like(pos)
    ene = np.empty((M, n_frames), dtype=np.float64)
    t_prod = np.empty(n_frames, dtype=np.float64)
    eq = plan.equilibration_steps
    total = eq + n_frames * plan.stride_steps
    target = re.target_slice()
    step, frame, parity = 0, 0, 0
    next_swap = swap_every
    next_frame = eq + plan.stride_steps
    integ = re.integrator
    eq_stats = SwapStatistics(re.stats.attempts.copy(), re.stats.accepted.copy(), re.stats.labels) if eq == 0 else None
    with md._tqdm(total, f"replica exchange ({K} x {M} walkers)", progress) as bar:
        while step < total:
            stop = min(next_swap, next_frame, total, eq if step < eq else total)
            integ.step(stop - step)
            bar.update(stop - step)
            step = stop
            if step == eq and eq_stats is None:
                md._check_finite(integ.energy, "equilibration")
                eq_stats = SwapStatistics(re.stats.attempts.copy(), re.stats.accepted.copy(), re.stats.labels)
                integ.time = 0.0
            if step == next_swap:
                re.attempt_swaps(parity)
                parity ^= 1
                next_swap += swap_every
            if step == next_frame:
                md._check_finite(integ.energy, f"production frame {frame}")
                pos[:, frame] = integ.x[target].cpu().numpy()
                frc[:, frame] = integ.forces[target].cpu().numpy()
                ene[:, frame] = integ.energy[target].cpu().numpy()
                t_prod[frame] = integ.time
                frame += 1
                next_frame += plan.stride_steps
    wall = time.perf_counter() - t0
    n_evals = system.n_energy_evals - n0
    _check_spent(n_evals, budget, n_min + plan.n_energy_evals, "replica_exchange")
    stats = re.stats
    prod = SwapStatistics(stats.attempts - eq_stats.attempts, stats.accepted - eq_stats.accepted, stats.labels)
    kin = integ.kinetic_temperatures().reshape(K, M).mean(1)
    log.info("replica exchange: %d evaluations in %.1f s; swap acceptance %s; kinetic T per rung %s", n_evals, wall,
             ", ".join(f"{lab}: {a:.3f}" for lab, a in zip(stats.labels, stats.acceptance)),
             ", ".join(f"{t:.4g}" for t in kin))

    settings = {"method": "replica_exchange", "system": system.spec() if hasattr(system, "spec") else system.name,
                "temperatures": list(ladder.temperatures), "n_samples": n_samples, "budget": int(budget.total),
                "equilibration_fraction": budget.equilibration_fraction, "replicas_per_temperature": M,
                "swap_every": swap_every, "timestep": timestep, "friction": friction, "minimize": bool(minimize),
                "minimize_steps": minimize_steps, "device": str(dev), "precision": precision}
    attrs = _common_attrs("replica_exchange", system, ladder, budget, config if config is not None else settings,
                          seed, n_evals, n_min, plan, wall)
    attrs.update({
        "engine": "torch",
        "replicas_per_temperature": M,
        "swap_every": swap_every,
        "timestep": timestep,
        "friction": friction,
        "precision": precision,
        "device": str(dev),
        "swap_pairs": stats.labels,
        "swap_attempts": [int(a) for a in stats.attempts],
        "swap_accepted": [int(a) for a in stats.accepted],
        "swap_acceptance": [float(a) for a in stats.acceptance],
        "swap_acceptance_mean": stats.overall,
        "swap_acceptance_production": [float(a) for a in prod.acceptance],
        "kinetic_temperatures": [float(t) for t in kin],
    })
    take = slice(0, n_samples)
    return SampleSet(
        positions=_centre(pos.reshape((-1,) + shape)[take], system).astype(np.float32),
        energy=ene.reshape(-1)[take].astype(np.float64), attrs=attrs,
        forces=frc.reshape((-1,) + shape)[take].astype(np.float32),
        trajectory=np.repeat(np.arange(M, dtype=np.int32), n_frames)[take],
        time_ps=np.broadcast_to(t_prod, (M, n_frames)).reshape(-1)[take].astype(np.float64),
    )


def run_plain_md(system, temperatures, n_samples: int, budget: EvaluationBudget, *, walkers_per_temperature: int = 16,
                 engine: str = "auto", timestep: float | None = None, friction: float | None = None,
                 minimize: bool = True, minimize_steps: int = 500, platform: str | None = None, device=None,
                 dtype=None, seed: int = 0, progress: bool | None = None, config: dict | None = None) -> SampleSet:
    """Plain Langevin MD at the target (last) temperature within `budget`, with
    `walkers_per_temperature` x len(temperatures) walkers (as many as replica exchange runs).

    The starting structure is minimised once here (counted), then `pita.md.run_md` runs the
    planned equilibration and production on the chosen engine (OpenMM or batched torch)."""
    ladder = TemperatureLadder.from_values(temperatures, system.kB)
    n_samples = md._check_count("n_samples", n_samples, 1)
    M = md._check_count("replicas", walkers_per_temperature, 1)
    seed = md._check_count("seed", seed, 0)
    minimize_steps = md._check_count("minimize_steps", minimize_steps, 0)
    timestep, friction, precision = _resolve(system, timestep, friction, dtype)
    dev = md.resolve_device(device)
    walkers = min(M * len(ladder), n_samples)
    eng = md.choose_engine(system, engine, dev, walkers)
    tdtype, eval_dtype = md.PRECISIONS[precision]
    n_frames = int(math.ceil(n_samples / walkers))
    rng = np.random.default_rng(seed)

    n0 = system.n_energy_evals
    t0 = time.perf_counter()
    x, n_min = _minimised_starts(system, walkers, minimize=minimize, minimize_steps=minimize_steps,
                                 max_evals=int(MINIMIZATION_SHARE * budget.total), rng=rng, device=dev, dtype=tdtype,
                                 eval_dtype=eval_dtype)
    if eng == "openmm":  # no initial evaluation; energy and forces read back at every saved frame
        plan = budget.plan(n_min, walkers, n_frames, initial_evals=0, evals_per_frame=1)
    else:
        plan = budget.plan(n_min, walkers, n_frames, initial_evals=1)
    log.info("md baseline: %s at %g, %d walkers (%s), budget %d evaluations: %d minimisation, %d equilibration "
             "steps, %d frames x %d steps per walker", system.name, ladder.target, walkers, eng, budget.total, n_min,
             plan.equilibration_steps, n_frames, plan.stride_steps)
    out = md.run_md(system, ladder.target, n_samples, engine=eng, replicas=walkers, stride_steps=plan.stride_steps,
                    equilibration_steps=plan.equilibration_steps, timestep=timestep, friction=friction,
                    minimize=False, platform=platform, device=str(dev), dtype=precision, seed=seed,
                    start=x.detach().cpu().numpy(), previous_total=0, progress=progress)
    wall = time.perf_counter() - t0
    n_evals = system.n_energy_evals - n0
    _check_spent(n_evals, budget, n_min + plan.n_energy_evals, "md")

    settings = {"method": "md", "system": system.spec() if hasattr(system, "spec") else system.name,
                "temperatures": list(ladder.temperatures), "n_samples": n_samples, "budget": int(budget.total),
                "equilibration_fraction": budget.equilibration_fraction, "replicas_per_temperature": M,
                "engine": eng, "timestep": timestep, "friction": friction, "minimize": bool(minimize),
                "minimize_steps": minimize_steps, "platform": platform or "", "device": str(dev),
                "precision": precision}
    attrs = {k: v for k, v in out.attrs.items() if k.startswith("md_")}
    attrs.update(_common_attrs("md", system, ladder, budget, config if config is not None else settings, seed,
                               n_evals, n_min, plan, wall))
    attrs.update({"engine": eng, "replicas_per_temperature": M, "timestep": timestep, "friction": friction,
                  "precision": attrs.get("md_precision", precision), "device": str(dev), "md_minimized": int(bool(minimize))})
    return SampleSet(positions=_centre(out.positions.astype(np.float64), system).astype(np.float32), energy=out.energy,
                     attrs=attrs, forces=out.forces, trajectory=out.trajectory, time_ps=out.time_ps)


# ---------------------------------------------------------------------------------------------
# SMC without a model: adaptive tempering down the ladder, PITA's relaxation at every rung
# ---------------------------------------------------------------------------------------------
#: planned bridge levels per rung: ceil(LEVEL_MARGIN x estimate) + LEVEL_SLACK (the estimate
#: assumes a Gaussian energy spread with a constant heat capacity; real bridges may need more)
LEVEL_MARGIN = 1.5
LEVEL_SLACK = 1
#: default smallest number of particles per rung worth running (fewer: the budget is refused)
SMC_MIN_PARTICLES = 100


@dataclass(frozen=True)
class SmcKernel:
    """The moves of one rung of the smc baseline: `pita.relax.relax`'s settings (the PITA run's
    relax section at that rung). `bridge_mala_steps` MALA steps per bridge level, then
    `n_steps` MALA (or Langevin) steps and `torsion_moves` Metropolis torsion moves per particle
    at the rung's temperature (torsion moves only for molecules with rotatable bonds)."""

    method: str = "mala"
    n_steps: int = 200
    torsion_moves: int = 0
    bridge_mala_steps: int = 10
    step_size: float | None = None
    n_burnin: int | None = None
    friction: float = 1.0
    batch_size: int | None = None
    torsion_max_angle: float = math.pi

    def check(self, where: str) -> "SmcKernel":
        from .relax import METHODS as RELAX_METHODS

        if self.method not in RELAX_METHODS:
            raise PitaInputError(f"{where}: method must be one of {', '.join(RELAX_METHODS)}, got {self.method!r}")
        for name in ("n_steps", "torsion_moves", "bridge_mala_steps"):
            md._check_count(f"{where}: {name}", getattr(self, name), 0)
        if self.step_size is not None:
            md._check_positive(f"{where}: step_size", self.step_size)
        if self.n_burnin is not None:
            md._check_count(f"{where}: burn_in", self.n_burnin, 0)
        if self.batch_size is not None:
            md._check_count(f"{where}: batch_size", self.batch_size, 1)
        if not 0 < float(self.torsion_max_angle) <= math.pi:
            raise PitaInputError(f"{where}: torsion_max_angle must be in (0, pi], got {self.torsion_max_angle!r}")
        return self


def smc_level_estimates(energy, kT0: float, temperatures, ess_fraction: float) -> list[int]:
    """Bridge levels expected for each step T_k -> T_{k+1} of the ladder, from the energies of
    a set at T_0: with Gaussian energies of spread sigma(beta), a step d beta keeps ESS/N =
    exp(-(d beta sigma)^2) = f, and beta sigma = sqrt(C/k_B) (the heat capacity, taken constant
    and measured at T_0), so the levels are sqrt(C/k_B) ln(T_k/T_{k+1}) / sqrt(-ln f), at least 1."""
    u = np.asarray(energy, dtype=np.float64).reshape(-1)
    u = u[np.isfinite(u)]
    c = float(np.std(u)) / float(kT0) if u.size > 1 else 0.0
    step = math.sqrt(-math.log(float(ess_fraction)))
    t = [float(v) for v in temperatures]
    return [max(1, int(math.ceil(c * math.log(t[k] / t[k + 1]) / step))) for k in range(len(t) - 1)]


def planned_levels(estimates, max_levels: int) -> list[int]:
    """The levels each bridge is planned (paid) for: the estimate with a margin, at most max_levels."""
    return [max(1, min(int(max_levels), int(math.ceil(LEVEL_MARGIN * e)) + LEVEL_SLACK)) for e in estimates]


def smc_rung_cost(particles: int, n_out: int, levels: int, kernel: SmcKernel, torsion_moves: int,
                  extra_steps: int = 0) -> int:
    """Energy evaluations of one rung: the bridge, N (1 + bridge_mala_steps x levels) (one
    evaluation of the N particles, then N per MALA step of each level), then the relaxation,
    n_out (1 + n_steps + extra_steps + torsion_moves) (one evaluation of the resampled set,
    then one per step and per torsion move)."""
    bridge = int(particles) * (1 + int(kernel.bridge_mala_steps) * int(levels))
    return bridge + int(n_out) * (1 + int(kernel.n_steps) + int(extra_steps) + int(torsion_moves))


def plan_smc_particles(available: int, kernels, levels, torsions, n_samples: int,
                       max_particles: int | None = None) -> tuple[int, int]:
    """(N, cost): the most particles per rung (the same N for the rungs `kernels` still to run,
    the last of them the target, which writes `n_samples`) whose planned cost (`levels` bridge
    levels each, `torsions` torsion moves each) is at most `available` evaluations; N is 0 when
    not even one particle fits."""
    per_particle, fixed = 0, 0
    last = len(kernels) - 1
    for j, (kern, lev, tor) in enumerate(zip(kernels, levels, torsions)):
        per_particle += 1 + int(kern.bridge_mala_steps) * int(lev)
        relax_one = 1 + int(kern.n_steps) + int(tor)
        if j == last:
            fixed += int(n_samples) * relax_one
        else:
            per_particle += relax_one
    n = (int(available) - fixed) // per_particle if available > fixed else 0
    if max_particles is not None:
        n = min(n, int(max_particles))
    n = max(0, n)
    return n, n * per_particle + fixed


class _TemperingPotential:
    """U/kT at the colder temperature (a `pita.relax.SystemPotential`) that remembers its last
    evaluation, so that phi0 = U/kT_source of the same configurations (the bridge's pi_0, the
    hotter Boltzmann density) costs no second evaluation: pi_lambda ∝ exp(-U (lambda/kT +
    (1 - lambda)/kT_source)) is the Boltzmann density at an intermediate temperature."""

    def __init__(self, system, temperature: float, source_temperature: float, batch_size: int | None) -> None:
        from .relax import SystemPotential

        self._pot = SystemPotential(system, temperature, batch_size)
        self.system = system
        self.kT = self._pot.kT
        self.kT_source = float(system.kT(source_temperature))
        self._last = None

    def true(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        U, F = self._pot.true(x)
        self._last = (x, U, F)
        return U, F

    def phi0(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last is not None and self._last[0] is x:
            _, U, F = self._last
        else:  # not the configurations just evaluated: evaluate (and count) them
            U, F = self.true(x)
        return U / self.kT_source, (-F.to(torch.float64) / self.kT_source).to(x.dtype)


def _kernels(kernels, n_rungs: int) -> list[SmcKernel]:
    if kernels is None:
        kernels = SmcKernel()
    if isinstance(kernels, SmcKernel):
        kernels = [kernels] * n_rungs
    kernels = list(kernels)
    if len(kernels) != n_rungs:
        raise PitaInputError(f"relax settings: expected one per rung 1..{n_rungs}, got {len(kernels)}")
    return [k.check(f"relax settings of rung {i + 1}") for i, k in enumerate(kernels)]


#: attributes of smc's output that describe its final relaxation (left out of the bridged set's record)
_FINAL_RELAXATION_ATTRS = ("smc_extra_steps", "smc_n_energy_evals_rung", "smc_wall_time_s_rung", "smc_step_size")


def run_smc(system, temperatures, n_samples: int, budget: EvaluationBudget, seed_set: SampleSet, *,
            kernels=None, ess_fraction: float = 0.5, max_levels: int = 50, max_particles: int | None = None,
            min_particles: int = SMC_MIN_PARTICLES, spend_leftover: bool = True, device=None, seed: int = 0,
            progress: bool | None = None, config: dict | None = None, seed_source: str = "seed set",
            pre_relaxation: list | None = None) -> SampleSet:
    """Adaptive-tempering resample-move SMC from `seed_set` (samples at T_0, the first
    temperature) down the ladder to the target, within `budget` evaluations in all (the seed
    set's n_energy_evals_total included).

    kernels: one :class:`SmcKernel` per rung 1..K (or one for all; default SmcKernel()).
    Rung k: N_k particles drawn from the rung-(k-1) set (systematic resampling), evaluated once,
    bridged from pi_{T_{k-1}} to pi_{T_k} (`pita.relax.bridge`, ESS fraction `ess_fraction`, at
    most the levels the rung's share of the budget pays for and `max_levels`), then relaxed at
    T_k (`pita.relax.relax` without a bridge: N_k particles out, `n_samples` at the target). N_k
    is the most particles for which the remaining rungs fit in what is left of the budget (at
    most `max_particles`); a budget that cannot pay `min_particles` per rung is refused. With
    `spend_leftover`, what the last bridge leaves goes to extra MALA/Langevin steps of the final
    relaxation (`smc_extra_steps`), so the run spends the budget to within `n_samples`.

    pre_relaxation: a list to which the final rung's bridged set (before its relaxation; method
    smc_bridged, its evaluations so far in n_energy_evals_total) is appended: the counterpart of
    PITA's annealed set, what the no-model bridge delivers before the relaxation both share.
    """
    from .relax import _chirality_guard, _evaluate, bridge, default_step_size, relax
    from .steps import _keep_data_enantiomer
    from .weights import systematic_resample

    ladder = TemperatureLadder.from_values(temperatures, system.kB)
    if len(ladder) < 2:
        raise PitaInputError("temperatures: smc needs at least two temperatures (the seed set's T_0 ... target)")
    n_samples = md._check_count("n_samples", n_samples, 1)
    seed = md._check_count("seed", seed, 0)
    min_particles = md._check_count("smc_min_particles", min_particles, 1)
    max_levels = md._check_count("smc_max_levels", max_levels, 1)
    if max_particles is not None:
        max_particles = md._check_count("smc_max_particles", max_particles, 1)
        if max_particles < min_particles:
            raise PitaInputError(f"smc_max_particles: {max_particles} is below smc_min_particles ({min_particles})")
    if not (isinstance(ess_fraction, (int, float)) and 0 < ess_fraction < 1):
        raise PitaInputError(f"smc_ess_fraction: must be in (0, 1), got {ess_fraction!r}")
    K = len(ladder) - 1
    kernels = _kernels(kernels, K)
    T0 = ladder.temperatures[0]
    if len(seed_set) == 0:
        raise PitaInputError(f"{seed_source}: empty sample set")
    if not math.isclose(seed_set.temperature, T0, rel_tol=1e-6):
        raise PitaInputError(f"{seed_source}: attribute 'temperature' is {seed_set.temperature:g} but the ladder "
                             f"starts at {T0:g} (smc starts from the rung-0 set at T_0)")
    if tuple(seed_set.positions.shape[1:]) != tuple(system.event_shape):
        raise PitaInputError(f"{seed_source}: positions of shape {tuple(seed_set.positions.shape[1:])}, "
                             f"{system.name} has {tuple(system.event_shape)}")
    seed_total = md._check_count(f"{seed_source}: n_energy_evals_total", seed_set.attrs["n_energy_evals_total"], 0)
    what = budget.source or "budget"
    if seed_total >= budget.total:
        raise PitaInputError(f"{what}: {budget.total} energy evaluations are too few for smc: the seed set "
                             f"{seed_source} already spent {seed_total}")
    dev = md.resolve_device(device)
    mean_free = bool(getattr(system, "mean_free", False)) and seed_set.positions.ndim == 3
    from .relax import torsion_cycles

    torsions = [torsion_cycles(system, k.torsion_moves) if mean_free else 0 for k in kernels]
    estimates = smc_level_estimates(seed_set.energy, system.kT(T0), ladder.temperatures, ess_fraction)
    levels_plan = planned_levels(estimates, max_levels)
    available = budget.total - seed_total
    n_first, cost = plan_smc_particles(available, kernels, levels_plan, torsions, n_samples, max_particles)
    if n_first < min_particles:
        need = seed_total + plan_smc_particles(10**18, kernels, levels_plan, torsions, n_samples,
                                                           min_particles)[1]
        raise PitaInputError(
            f"{what}: {budget.total} energy evaluations are too few for smc with {min_particles} particles per rung "
            f"(the seed set spent {seed_total}; about {need} needed with these relax settings and "
            f"{sum(levels_plan)} planned bridge levels): raise the budget or lower n_samples, relax n_steps or "
            f"torsion_moves, or smc_min_particles")
    extra_planned = (available - cost) // n_samples if spend_leftover else 0
    planned_total = seed_total + cost + extra_planned * n_samples
    log.info("smc: %s, ladder %s from %s (%d samples, %d evaluations); budget %d: %d particles per rung planned, "
             "bridge levels estimated %s, planned %s; %d evaluations planned", system.name,
             ", ".join(f"{t:g}" for t in ladder.temperatures), seed_source, len(seed_set), seed_total, budget.total,
             n_first, estimates, levels_plan, planned_total)

    gen = torch.Generator()
    gen.manual_seed(int(seed))
    guard = _chirality_guard(system) if mean_free else None
    n0 = system.n_energy_evals
    t0 = time.perf_counter()
    current = seed_set
    spent = 0
    rec: dict[str, list] = {key: [] for key in (
        "particles", "n_out", "levels", "max_levels", "capped", "lambdas", "ess", "bridge_accept",
        "bridge_accept_mean", "relax_accept", "torsion_accept", "relax_steps", "evals", "bridge_evals",
        "relax_evals", "step_size", "unique_in", "wall")}
    extra = 0
    for k in range(1, K + 1):
        tr = time.perf_counter()
        T_prev, T = ladder.temperatures[k - 1], ladder.temperatures[k]
        kern, last = kernels[k - 1], k == K
        left = available - spent
        N, _ = plan_smc_particles(left, kernels[k - 1:], levels_plan[k - 1:], torsions[k - 1:], n_samples,
                                  max_particles)
        if N < 1:  # cannot happen: each rung keeps the later rungs' share at N_{k-1}
            raise RuntimeError(f"smc: no budget left for rung {k} ({left} evaluations)")
        n_out = n_samples if last else N
        relax_cost = n_out * (1 + kern.n_steps + torsions[k - 1])
        later = 0
        if not last:
            later = plan_smc_particles(10**18, kernels[k:], levels_plan[k:], torsions[k:], n_samples, N)[1]
        m = int(kern.bridge_mala_steps)
        cap = max_levels if m == 0 else min(max_levels, (left - later - relax_cost - N) // (N * m))
        if cap < 1:
            raise RuntimeError(f"smc: rung {k} cannot pay for one bridge level ({left} evaluations left)")
        # N particles of the rung-(k-1) set, equally weighted (systematic resampling)
        lw0 = current.log_weight if current.log_weight is not None else np.zeros(len(current))
        idx = np.asarray(systematic_resample(np.asarray(lw0, dtype=np.float64), N, gen))
        x = torch.as_tensor(np.asarray(current.positions)[idx]).to(dtype=torch.float64, device=dev)
        pot = _TemperingPotential(system, T, T_prev, kern.batch_size)
        c0 = system.n_energy_evals
        state = _evaluate(x, pot, pot.phi0)
        state.lineage = torch.arange(N, device=dev)  # the rung's N draws: lineages for the evaluation's errors
        br = bridge(state, torch.zeros(N, dtype=torch.float64, device=dev), pot, pot.phi0,
                    ess_fraction=float(ess_fraction), max_levels=int(cap), n_mala=m,
                    step_size=kern.step_size or default_step_size(system, "mala"), mean_free=mean_free,
                    generator=gen, same_class=guard)
        n_levels = len(br.lambdas) - 1
        bridge_evals = system.n_energy_evals - c0
        if bridge_evals != N * (1 + m * n_levels):
            raise RuntimeError(f"smc: rung {k} bridge spent {bridge_evals} evaluations, expected {N * (1 + m * n_levels)}")
        st = br.state
        bridged_at = seed_total + spent + bridge_evals
        bridged_wall = time.perf_counter() - t0
        bridged = SampleSet(
            positions=st.x.detach().cpu().numpy().astype(np.float32),
            energy=st.U.detach().cpu().numpy().astype(np.float64),
            attrs={"system": system.name, "temperature": float(T), "units": system.units,
                   "length_scale": float(system.length_scale), "rung": k, "n_energy_evals": int(bridge_evals),
                   "n_energy_evals_total": int(seed_total + spent + bridge_evals)},
            forces=st.F.detach().cpu().numpy().astype(np.float32),
            extra={"ancestor": st.lineage.cpu().numpy().astype(np.int64)})
        extra = 0
        if last and spend_leftover:
            extra = max(0, (left - bridge_evals - relax_cost) // n_out)
        res = relax(bridged, system, T, method=kern.method, n_steps=kern.n_steps + extra, step_size=kern.step_size,
                    n_burnin=kern.n_burnin, friction=kern.friction, bridge_mode="never", n_out=n_out,
                    batch_size=kern.batch_size, torsion_moves=kern.torsion_moves,
                    torsion_max_angle=kern.torsion_max_angle, device=dev, generator=gen, lineage=bridged.lineage())
        relax_evals = int(res.diagnostics["n_energy_evals"])
        expected = n_out * (1 + kern.n_steps + extra + torsions[k - 1])
        if relax_evals != expected:
            raise RuntimeError(f"smc: rung {k} relaxation spent {relax_evals} evaluations, expected {expected}")
        _keep_data_enantiomer(res, system)
        spent += bridge_evals + relax_evals
        if spent > available:
            raise RuntimeError(f"smc: spent {seed_total + spent} evaluations, budget {budget.total}")
        current = res.samples
        if len(current) == 0:
            raise PitaInputError(f"{seed_source}: no finite configuration left at rung {k} (T = {T:g})")
        d = res.diagnostics
        acc = [float(a) for a in br.accept_trace]
        rec["particles"].append(int(N))
        rec["n_out"].append(int(len(current)))
        rec["levels"].append(int(n_levels))
        rec["max_levels"].append(int(cap))
        rec["capped"].append(bool(n_levels >= cap and br.ess_trace[-1] < ess_fraction))
        rec["lambdas"].append([float(v) for v in br.lambdas])
        rec["ess"].append([float(v) for v in br.ess_trace])
        rec["bridge_accept"].append(acc)
        rec["bridge_accept_mean"].append(float(np.mean(acc)) if acc else float("nan"))
        rec["relax_accept"].append(float(d.get("accept_rate", float("nan"))))
        rec["torsion_accept"].append(float(d.get("torsion_accept_rate", float("nan"))))
        rec["relax_steps"].append(int(kern.n_steps + extra))
        rec["evals"].append(int(bridge_evals + relax_evals))
        rec["bridge_evals"].append(int(bridge_evals))
        rec["relax_evals"].append(int(relax_evals))
        rec["step_size"].append(float(d.get("step_size", d.get("dt", float("nan")))))
        rec["unique_in"].append(int(np.unique(idx).size))
        rec["wall"].append(time.perf_counter() - tr)
        if rec["capped"][-1]:
            log.warning("smc: rung %d (T = %g): the bridge reached its cap of %d levels (the budget's share) with "
                        "ESS/N %.3g at the forced last level", k, T, cap, br.ess_trace[-1])
        log.info("smc: rung %d (T %g -> %g): %d particles, %d bridge levels (cap %d; lambdas %s), bridge acceptance "
                 "%.2f; relax %d steps + %d torsion moves, acceptance %.2f; %d evaluations (total %d of %d)", k, T_prev,
                 T, N, n_levels, cap, ", ".join(f"{v:.3g}" for v in br.lambdas[1:]), rec["bridge_accept_mean"][-1],
                 kern.n_steps + extra, torsions[k - 1], rec["relax_accept"][-1], bridge_evals + relax_evals,
                 seed_total + spent, budget.total)
    wall = time.perf_counter() - t0
    n_evals = system.n_energy_evals - n0
    if n_evals != spent or seed_total + n_evals > budget.total:
        raise RuntimeError(f"smc: spent {n_evals} evaluations (ledger {spent}), seed {seed_total}, budget {budget.total}")

    settings = {"method": "smc", "system": system.spec() if hasattr(system, "spec") else system.name,
                "temperatures": list(ladder.temperatures), "n_samples": n_samples, "budget": int(budget.total),
                "kernels": [dataclasses_asdict(k) for k in kernels], "ess_fraction": float(ess_fraction),
                "max_levels": max_levels, "max_particles": max_particles, "min_particles": min_particles,
                "spend_leftover": bool(spend_leftover), "device": str(dev),
                "seed_set": seed_set.attrs.get("config_digest")}
    attrs = base_attrs("baseline", config if config is not None else settings, seed)
    attrs.update({
        "method": "smc",
        "system": system.name,
        **system_identity(system),
        "temperature": float(ladder.target),
        "units": system.units,
        "length_scale": float(system.length_scale),
        "rung": K,
        "n_energy_evals": int(n_evals),
        # the seed set is part of the method (PITA's total includes it too)
        "n_energy_evals_total": int(seed_total + n_evals),
        "n_energy_evals_budget": int(budget.total),
        "n_energy_evals_planned": int(planned_total),
        "n_energy_evals_seed": int(seed_total),
        "n_energy_evals_bridge": int(sum(rec["bridge_evals"])),
        "n_energy_evals_relax": int(sum(rec["relax_evals"])),
        "budget_from": budget.source,
        "seed_set": seed_source,
        "seed_set_n_samples": int(len(seed_set)),
        "temperatures": [float(t) for t in ladder.temperatures],
        "smc_particles": rec["particles"],
        "smc_n_out": rec["n_out"],
        "smc_unique_ancestors": rec["unique_in"],
        "smc_ess_fraction": float(ess_fraction),
        "smc_bridge_levels": rec["levels"],
        "smc_bridge_levels_estimated": [int(e) for e in estimates],
        "smc_bridge_levels_planned": [int(v) for v in levels_plan],
        "smc_bridge_max_levels": rec["max_levels"],
        "smc_bridge_capped": [int(c) for c in rec["capped"]],
        "smc_bridge_lambdas": rec["lambdas"],
        "smc_bridge_ess": rec["ess"],
        "smc_bridge_accept": rec["bridge_accept"],
        "smc_bridge_accept_mean": rec["bridge_accept_mean"],
        "smc_relax_accept": rec["relax_accept"],
        "smc_torsion_accept": rec["torsion_accept"],
        "smc_relax_steps": rec["relax_steps"],
        "smc_torsion_moves": [int(t) for t in torsions],
        "smc_extra_steps": int(extra),
        "smc_step_size": rec["step_size"],
        "smc_n_energy_evals_rung": rec["evals"],
        "smc_wall_time_s_rung": rec["wall"],
        "device": str(dev),
        "wall_time_s": float(wall),
        "kB": float(system.kB),
    })
    rung_of = np.concatenate([np.full(len(lam), i + 1, dtype=np.int64) for i, lam in enumerate(rec["lambdas"])])
    extra_arrays = {
        "smc_bridge_rung": rung_of,
        "smc_bridge_lambdas": np.concatenate([np.asarray(v, dtype=np.float64) for v in rec["lambdas"]]),
        "smc_bridge_ess": np.concatenate([np.asarray(v, dtype=np.float64) for v in rec["ess"]]),
    }
    if pre_relaxation is not None:
        # the run's record up to the end of the final bridge: the final relaxation never touched this set
        pre_attrs = {key: value for key, value in attrs.items() if key not in _FINAL_RELAXATION_ATTRS}
        pre_attrs.update({"method": "smc_bridged", "n_energy_evals": int(rec["bridge_evals"][-1]),
                          "n_energy_evals_total": int(bridged_at),
                          "n_energy_evals_relax": int(sum(rec["relax_evals"][:-1])),
                          "smc_relax_accept": rec["relax_accept"][:-1], "smc_torsion_accept": rec["torsion_accept"][:-1],
                          "smc_relax_steps": rec["relax_steps"][:-1], "smc_n_out": rec["n_out"][:-1],
                          "wall_time_s": float(bridged_wall)})
        pre_relaxation.append(SampleSet(
            positions=_centre(np.asarray(bridged.positions, dtype=np.float64), system).astype(np.float32),
            energy=np.asarray(bridged.energy, dtype=np.float64), attrs=pre_attrs, forces=bridged.forces,
            extra={"ancestor": bridged.lineage()}))
    out = current
    if out.lineage() is not None:  # the final rung's draw each sample descends from
        extra_arrays["ancestor"] = out.lineage()
    return SampleSet(positions=_centre(np.asarray(out.positions, dtype=np.float64), system).astype(np.float32),
                     energy=np.asarray(out.energy, dtype=np.float64), attrs=attrs, forces=out.forces,
                     extra=extra_arrays)


def run_baseline(method: str, system, temperatures, n_samples: int, budget: EvaluationBudget, **kw) -> SampleSet:
    """`run_plain_md` ("md") or `run_replica_exchange` ("replica_exchange"); "smc" needs
    `seed_set=` (and takes `run_smc`'s keywords)."""
    if method == "smc":
        seed_set = kw.pop("seed_set", None)
        if seed_set is None:
            raise PitaInputError("seed set: smc starts from the PITA run's rung-0 set at T_0 (--seed-set)")
        return run_smc(system, temperatures, n_samples, budget, seed_set, **kw)
    if method == "md":
        kw.pop("swap_every", None)
        return run_plain_md(system, temperatures, n_samples, budget, **kw)
    if method == "replica_exchange":
        engine = kw.pop("engine", "auto") or "auto"
        if engine not in ("auto", "torch"):
            raise PitaInputError(f"engine: replica exchange runs on the batched torch engine; got {engine!r} "
                                 "(use auto or torch)")
        kw.pop("platform", None)
        return run_replica_exchange(system, temperatures, n_samples, budget, **kw)
    raise PitaInputError(f"method: unknown baseline {method!r}; choose one of {', '.join(METHODS)}")


def plan_pita_budget(system, seed_total: int, anneal: Sequence, relax: Sequence) -> dict:
    """What a PITA run will spend, from its settings alone: the rung-0 set's `seed_total`, then
    per rung k = 1..K the anneal's final correction (one true energy per particle: `n_particles`,
    fewer when particles are dropped) and the relaxation without the bridge
    (`pita.relax.planned_evaluations`). Both are fixed before the run, so the baselines can start
    with this budget while PITA still runs; only a bridge (relax bridge auto when a rung's ESS is
    tiny, or always) spends more, which the report shows. `anneal`, `relax`: the rungs' resolved
    AnnealSettings and RelaxSettings, rung 1 first."""
    from .relax import planned_evaluations, torsion_cycles

    if len(anneal) != len(relax) or not anneal:
        raise ValueError("plan_pita_budget: one anneal and one relax section per rung 1..K")
    rungs, total = [], int(seed_total)
    for k, (a, r) in enumerate(zip(anneal, relax), start=1):
        n_out = r.n_out or a.n_particles
        spend = {"rung": k, "anneal": int(a.n_particles),
                 "relax": planned_evaluations(n_out, r.n_steps, torsion_cycles(system, r.torsion_moves))}
        rungs.append(spend)
        total += spend["anneal"] + spend["relax"]
    return {"n_energy_evals_total": total, "n_energy_evals_seed": int(seed_total), "rungs": rungs}


def _same_temperature(value, expected: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isclose(float(value), float(expected), rel_tol=1e-6))


def budget_from_plan(path, target: float | None = None, equilibration_fraction: float = EQUILIBRATION_FRACTION,
                     system=None, temperatures=None, seed_set: SampleSet | None = None,
                     seed_source: str = "--seed-set") -> EvaluationBudget:
    """The budget a `pita budget` plan (JSON) gives the baselines, checked against the ladder's
    `target` temperature (and its whole `temperatures`), the `system` and smc's `seed_set` (the
    plan counts its evaluations) when they are given."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PitaInputError(f"{path}: not a readable budget plan ({exc.__class__.__name__})") from None
    if not isinstance(plan, dict) or plan.get("kind") != "pita_budget_plan":
        raise PitaInputError(f"{path}: kind: not a budget plan written by `pita budget`")
    total = plan.get("n_energy_evals_total")
    if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= 1000 * MAX_STEPS:
        raise PitaInputError(f"{path}: n_energy_evals_total: must be a positive integer up to "
                             f"{1000 * MAX_STEPS:g}, got {total!r}")
    t = plan.get("temperature")
    if target is not None and not _same_temperature(t, target):
        raise PitaInputError(f"{path}: temperature: the plan is for {t!r}, the ladder's target is {target:g}")
    if system is not None and plan.get("system") != system.name:
        raise PitaInputError(f"{path}: system: the plan is for {plan.get('system')!r}, not {system.name!r}")
    ladder = plan.get("temperatures")
    if temperatures is not None and ladder is not None and not (
            isinstance(ladder, list) and len(ladder) == len(temperatures)
            and all(_same_temperature(t, u) for t, u in zip(ladder, temperatures))):
        raise PitaInputError(f"{path}: temperatures: the plan is for the ladder {ladder!r}, not "
                             f"{[float(u) for u in temperatures]}")
    planned_seed = plan.get("n_energy_evals_seed")
    if seed_set is not None and planned_seed is not None:
        spent = int(seed_set.attrs.get("n_energy_evals_total", 0))
        if planned_seed != spent:
            raise PitaInputError(f"{path}: n_energy_evals_seed: the plan counts {planned_seed} evaluations for the "
                                 f"seed set, but {seed_source} spent {spent}: plan the budget from this seed set")
    return EvaluationBudget(total, equilibration_fraction, source=str(path))


def budget_from(path, target: float | None = None, equilibration_fraction: float = EQUILIBRATION_FRACTION,
                system=None, temperatures=None, seed_set: SampleSet | None = None,
                seed_source: str = "--seed-set") -> EvaluationBudget:
    """The budget in `path`: a `pita budget` plan (.json; `budget_from_plan`) or a sample set
    (its n_energy_evals_total)."""
    if str(path).lower().endswith(".json"):
        return budget_from_plan(path, target, equilibration_fraction, system=system, temperatures=temperatures,
                                seed_set=seed_set, seed_source=seed_source)
    return budget_from_samples(path, target, equilibration_fraction, system=system)


def budget_from_samples(path, target: float | None = None,
                        equilibration_fraction: float = EQUILIBRATION_FRACTION, system=None) -> EvaluationBudget:
    """The budget a PITA run spent: `n_energy_evals_total` of its final sample set (which must
    be at the `target` temperature, and of `system`, when they are given)."""
    ss = SampleSet.read(path, temperature=target, load_forces=False)
    if system is not None:
        ss.check_system(str(path), system)
    return EvaluationBudget(int(ss.attrs["n_energy_evals_total"]), equilibration_fraction, source=str(path))


__all__ = ["METHODS", "TemperatureLadder", "EvaluationBudget", "StepPlan", "SwapStatistics", "LadderLangevin",
           "ReplicaExchange", "swap_log_acceptance", "run_replica_exchange", "run_plain_md", "run_baseline",
           "budget_from_samples", "budget_from_plan", "budget_from", "plan_pita_budget", "SmcKernel",
           "smc_level_estimates", "planned_levels", "smc_rung_cost", "plan_smc_particles", "run_smc"]
