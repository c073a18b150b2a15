"""Baselines at PITA's energy-evaluation budget: plain MD and replica exchange.

Both spend at most a given number of energy evaluations (normally the PITA run's total, the
`n_energy_evals_total` of its final rung) with the same accounting as the rest of the
package (DESIGN.md, "Energy evaluations"): every force/energy call counts one per
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

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import md
from .errors import PitaInputError
from .provenance import base_attrs
from .samples import SampleSet

log = logging.getLogger(__name__)

METHODS = ("md", "replica_exchange")
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


def run_baseline(method: str, system, temperatures, n_samples: int, budget: EvaluationBudget, **kw) -> SampleSet:
    """`run_plain_md` ("md") or `run_replica_exchange` ("replica_exchange")."""
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
           "budget_from_samples"]
