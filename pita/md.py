"""Molecular dynamics: hot seed samples (rung 0) and long reference runs.

Two engines produce N decorrelated samples at temperature T, with energies and forces, as a
:class:`pita.samples.SampleSet`:

* ``"openmm"``: ``LangevinMiddleIntegrator`` on the system's ``openmm_system``, one or more
  independent trajectories run one after the other (Reference platform on CPU by default,
  CUDA when asked). Every integration step is one force evaluation; reading energy and
  forces at a saved frame is one more.
* ``"torch"``: :class:`BatchedLangevin`, a BAOAB Langevin integrator over many replicas at
  once that calls ``system.energy_and_forces`` (one evaluation per replica per step, counted
  by the System). Works for any System: molecules (nm, ps, amu, kJ/mol) and reduced-unit
  systems such as Lennard-Jones clusters (mass 1, k_B = 1) or toys in R^d.

BAOAB (B: half kick, A: half drift, O: exact Ornstein-Uhlenbeck velocity update) samples the
same configurational distribution as OpenMM's LangevinMiddleIntegrator (both are the "middle"
splitting; their positions coincide, only the velocity bookkeeping differs), with small
configurational timestep error.

``engine="auto"``: torch on CUDA when the system has a torch evaluator; on CPU OpenMM for
molecules with an OpenMM System unless at least TORCH_CPU_MIN_REPLICAS replicas are asked
for (and the system has a torch evaluator), torch for everything else (Lennard-Jones, toys).
Why: bench/bench_md.py, alanine dipeptide (OBC implicit solvent, 22 atoms, 1 fs, 300 K) on
the 2-core development machine (second core busy), mixed precision, 1 torch thread, each
row's OpenMM and torch runs alternating (OpenMM Reference: 16,500-18,600 steps/s):

    torch BAOAB,    1 replica              840 replica-steps/s  (0.05x one OpenMM trajectory)
    torch BAOAB,   16 replicas           9,700 replica-steps/s  (0.52x)
    torch BAOAB,   32 replicas          18,200 replica-steps/s  (1.04x)
    torch BAOAB,   64 replicas          25,200 replica-steps/s  (1.43x)
    torch BAOAB,  256 replicas          44,300 replica-steps/s  (2.68x)
    torch BAOAB, 1024 replicas          54,400 replica-steps/s  (3.13x)

With R replicas asked for, both engines do the same work (R equilibrations, R trajectories
that OpenMM runs one after the other), so the batched integrator wins from ~32 replicas on
(the threshold, 64, leaves a margin).
With the default replica count (one OpenMM trajectory) OpenMM stays: it needs one
equilibration instead of one per replica, and is bit-reproducible (Reference platform,
double precision). On a GPU the batched integrator runs thousands of replicas per step and wins.

Every energy evaluation is counted, minimisation and equilibration included, and recorded
in the output as ``n_energy_evals``.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from .device import resolve_device  # noqa: F401  (re-exported: md.resolve_device)
from .errors import PitaInputError
from .provenance import base_attrs, system_identity
from .samples import SampleSet

log = logging.getLogger(__name__)

ENGINES = ("auto", "openmm", "torch")
PLATFORMS = ("auto", "Reference", "CPU", "CUDA", "OpenCL")
#: torch engine precision: (state dtype, force-evaluation dtype); "mixed" as OpenMM's mixed precision
PRECISIONS = {"mixed": (torch.float64, torch.float32), "float64": (torch.float64, torch.float64),
              "float32": (torch.float32, torch.float32)}

#: on CPU, batched torch beats one OpenMM Reference trajectory per replica-step from about this
#: many replicas on (bench/bench_md.py, see the module docstring)
TORCH_CPU_MIN_REPLICAS = 64
#: why "auto" picks what it picks (measured with bench/bench_md.py, see the module docstring)
AUTO_NOTE = (
    "auto engine: torch on CUDA; on CPU OpenMM (Reference platform) for molecules with an OpenMM System "
    f"unless >= {TORCH_CPU_MIN_REPLICAS} replicas are asked for (then batched torch replica-steps/s beat "
    "OpenMM's one-trajectory steps/s), torch otherwise"
)


# ---------------------------------------------------------------------------------------------
# defaults per unit system
# ---------------------------------------------------------------------------------------------
def is_molecular(system) -> bool:
    return getattr(system, "units", "reduced") == "kJ/mol,nm"


def default_settings(system) -> dict:
    """Sensible defaults in the system's units (ps for molecules, reduced time otherwise)."""
    if is_molecular(system):
        return {"timestep": 0.001, "friction": 1.0, "stride_steps": 1000, "equilibration_steps": 10000,
                "minimize_steps": 500, "force_tolerance": 10.0}
    return {"timestep": 0.005, "friction": 1.0, "stride_steps": 200, "equilibration_steps": 2000,
            "minimize_steps": 500, "force_tolerance": 1e-3}


def has_torch_evaluator(system) -> bool:
    """True when `system.energy_and_forces` runs batched in torch (not an OpenMM Context loop)."""
    return str(getattr(system, "backend", "torch")) == "torch"


def has_openmm_system(system) -> bool:
    return getattr(system, "openmm_system", None) is not None


def choose_engine(system, engine: str, device: torch.device, replicas: int | None = None) -> str:
    """The engine run_md uses; `replicas` is the count asked for (None: the engine's default)."""
    if engine not in ENGINES:
        raise PitaInputError(f"engine: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "openmm":
        if not has_openmm_system(system):
            raise PitaInputError(f"engine: 'openmm' needs a molecular system with an OpenMM System; "
                                 f"{getattr(system, 'name', system)!r} has none (use --engine torch)")
        return "openmm"
    if engine == "torch":
        return "torch"
    # auto
    if not has_openmm_system(system):
        return "torch"
    many = replicas is not None and replicas >= TORCH_CPU_MIN_REPLICAS
    if has_torch_evaluator(system) and (device.type == "cuda" or many):
        return "torch"
    return "openmm"


# ---------------------------------------------------------------------------------------------
# torch engine
# ---------------------------------------------------------------------------------------------
def _mass_tensor(system, masses, event_shape, device, dtype) -> torch.Tensor:
    m = np.asarray(system.masses if masses is None else masses, dtype=np.float64).reshape(-1)
    if np.any(~np.isfinite(m)) or np.any(m <= 0):
        raise PitaInputError(f"{system.name}: masses must be positive and finite (virtual sites are not supported)")
    m_t = torch.as_tensor(m, dtype=dtype, device=device)
    if len(event_shape) == 2:  # (n_atoms, 3)
        if m.size != event_shape[0]:
            raise PitaInputError(f"{system.name}: {m.size} masses for {event_shape[0]} atoms")
        return m_t.reshape(1, -1, 1)
    if m.size != event_shape[0]:
        raise PitaInputError(f"{system.name}: {m.size} masses for dimension {event_shape[0]}")
    return m_t.reshape(1, -1)


def _per_config_max_force(f: torch.Tensor) -> torch.Tensor:
    """Largest per-atom force norm (particles) or largest component (R^d), per configuration."""
    if f.ndim == 3:
        return f.norm(dim=-1).amax(dim=-1)
    return f.abs().amax(dim=-1)


def _rms_force(f: torch.Tensor) -> torch.Tensor:
    return f.pow(2).flatten(1).mean(-1).sqrt()


def minimize_torch(system, x: torch.Tensor, max_steps: int = 500, force_tolerance: float | None = None,
                   step0: float | None = None, max_step: float | None = None,
                   eval_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Batched steepest descent with a per-configuration adaptive step (a trust region).

    Each iteration moves the atom with the largest force by `s` along the force direction (all
    others proportionally), accepts when the energy does not rise (then s *= 1.2, capped at
    `max_step`), else rejects and halves s. Configurations stop once their RMS force is below
    `force_tolerance` or their step falls below 1e-6 L. Returns (x, energy, forces, n_evals);
    every evaluation goes through `system.energy_and_forces` (in `eval_dtype`, default x's) and
    is counted there.
    """
    ev = x.dtype if eval_dtype is None else eval_dtype
    L = float(getattr(system, "length_scale", 1.0) or 1.0)
    step0 = 0.01 * L if step0 is None else float(step0)
    max_step = 0.1 * L if max_step is None else float(max_step)
    tol = default_settings(system)["force_tolerance"] if force_tolerance is None else float(force_tolerance)
    n0 = system.n_energy_evals
    x = x.clone()
    e, f = system.energy_and_forces(x.to(ev))
    e, f = e.to(x.dtype), f.to(x.dtype)
    s = torch.full((x.shape[0],), step0, dtype=x.dtype, device=x.device)
    shape = (-1,) + (1,) * (x.ndim - 1)
    e0 = e.clone()
    for _ in range(int(max_steps)):
        active = (_rms_force(f) > tol) & (s > 1e-6 * L) & torch.isfinite(e)
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        fa = f[idx]
        fmax = _per_config_max_force(fa).clamp_min(1e-30)
        x_new = x[idx] + (s[idx] / fmax).reshape(shape) * fa
        e_new, f_new = system.energy_and_forces(x_new.to(ev))
        e_new, f_new = e_new.to(x.dtype), f_new.to(x.dtype)
        ok = torch.isfinite(e_new) & (e_new <= e[idx])
        acc = idx[ok]
        x[acc], e[acc], f[acc] = x_new[ok], e_new[ok], f_new[ok]
        s[acc] = (s[acc] * 1.2).clamp_max(max_step)
        s[idx[~ok]] *= 0.5
    n_evals = system.n_energy_evals - n0
    log.info("minimised %d configuration(s): energy %.4g -> %.4g (mean), rms force %.3g, %d evaluations",
             x.shape[0], float(e0.mean()), float(e.mean()), float(_rms_force(f).mean()), n_evals)
    return x, e, f, n_evals


class BatchedLangevin:
    """BAOAB Langevin dynamics for a batch of replicas of a System, in torch.

    Units are the system's: for molecules x in nm, t in ps, m in amu, U in kJ/mol (so F/m is in
    nm/ps^2), k_B from `system.kB`; reduced units for Lennard-Jones (mass 1, k_B = 1).
    One step: v += dt/2 F/m; x += dt/2 v; v = c v + sqrt((1 - c^2) kT/m) xi (c = exp(-friction dt));
    x += dt/2 v; F = F(x) (one evaluation per replica); v += dt/2 F/m.
    Every random number comes from `generator` (deterministic on CPU for a given seed).
    Precision: the state (x, v) is kept in `dtype`, forces are evaluated in `eval_dtype`
    (default `dtype`); float64 state with float32 forces is OpenMM's "mixed" precision.
    """

    def __init__(self, system, temperature: float, timestep: float, friction: float, *,
                 masses=None, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                 eval_dtype: torch.dtype | None = None) -> None:
        if not (temperature > 0 and math.isfinite(temperature)):
            raise PitaInputError(f"temperature: must be positive, got {temperature}")
        if not (timestep > 0 and math.isfinite(timestep)):
            raise PitaInputError(f"timestep: must be positive, got {timestep}")
        if not (friction >= 0 and math.isfinite(friction)):
            raise PitaInputError(f"friction: must be non-negative, got {friction}")
        self.system = system
        self.temperature = float(temperature)
        self.kT = float(system.kB) * self.temperature
        self.dt = float(timestep)
        self.friction = float(friction)
        self.device = torch.device(device)
        self.dtype = dtype
        self.eval_dtype = dtype if eval_dtype is None else eval_dtype
        self.generator = generator
        self.event_shape = tuple(system.event_shape)
        self.mass = _mass_tensor(system, masses, self.event_shape, self.device, dtype)
        self.inv_mass = 1.0 / self.mass
        self.sigma_v = torch.sqrt(self.kT * self.inv_mass)  # thermal velocity scale per dof
        self.c1 = math.exp(-self.friction * self.dt)
        self.c2 = math.sqrt(max(0.0, 1.0 - self.c1 * self.c1))
        self.x: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.energy: torch.Tensor | None = None
        self.forces: torch.Tensor | None = None
        self.time = 0.0
        self.n_steps = 0

    def _randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=self.dtype, device=self.device)

    def _noise(self, shape) -> torch.Tensor:
        """Standard normal noise for the O step, drawn in the force-evaluation precision: torch's
        CPU sampler is vectorised for float32 only (about 5x faster than float64, where it was
        half the integrator's own cost), and float32 noise is as good for the dynamics."""
        return torch.randn(shape, generator=self.generator, dtype=self.eval_dtype, device=self.device)

    def initialize(self, x: torch.Tensor, v: torch.Tensor | None = None, energy=None, forces=None) -> None:
        """Set positions (and velocities, else Maxwell-Boltzmann); evaluates forces unless given."""
        self.x = x.to(device=self.device, dtype=self.dtype).clone()
        if tuple(self.x.shape[1:]) != self.event_shape:
            raise PitaInputError(f"positions: expected shape (replicas, {self.event_shape}), got {tuple(self.x.shape)}")
        self.v = (self._randn(self.x.shape) * self.sigma_v) if v is None else v.to(self.x).clone()
        if energy is None or forces is None:
            energy, forces = self.system.energy_and_forces(self.x.to(self.eval_dtype))
        self.energy = energy.detach().to(self.dtype)
        self.forces = forces.detach().to(self.dtype)

    def step(self, n_steps: int = 1) -> None:
        half = 0.5 * self.dt
        x, v, f = self.x, self.v, self.forces
        kick = half * self.inv_mass  # dt/2 / m
        c1, noise_scale = self.c1, self.c2 * self.sigma_v
        for _ in range(int(n_steps)):
            # fused updates: every operation is a pass over (replicas, ...) float64 arrays. The
            # first ones of a step allocate new x and v (a caller may hold the previous ones),
            # the rest update those in place; forces stay in eval_dtype (promoted on the fly).
            v = torch.addcmul(v, f, kick)  # B
            x = torch.add(x, v, alpha=half)  # A
            v.mul_(c1).addcmul_(self._noise(v.shape), noise_scale)  # O
            x.add_(v, alpha=half)  # A
            e, f = self.system.energy_and_forces(x.to(self.eval_dtype))
            f = f.detach()
            v.addcmul_(f, kick)  # B
            self.energy = e.detach().to(self.dtype)
        self.x, self.v, self.forces = x, v, f.to(self.dtype)
        self.n_steps += int(n_steps)
        self.time += int(n_steps) * self.dt

    def kinetic_temperature(self) -> float:
        """Instantaneous temperature from the kinetic energy over all replicas (no constraints)."""
        ke2 = (self.mass * self.v * self.v).sum()
        return float(ke2 / (self.v.numel() * self.system.kB))


def _starting_positions(system, n: int, start, rng: np.random.Generator) -> np.ndarray:
    """(n, *event_shape) float64 starts: a sample set's configurations, the reference structure,
    a jittered cubic lattice (particles without a reference), or N(0, L^2) for toys in R^d."""
    shape = tuple(system.event_shape)
    if start is not None:
        pos = np.asarray(start.positions if isinstance(start, SampleSet) else start, dtype=np.float64)
        if pos.shape == shape:
            pos = pos[None]
        if tuple(pos.shape[1:]) != shape:
            raise PitaInputError(f"start: positions of shape {list(pos.shape)} do not fit system "
                                 f"{system.name} (expected [N, {', '.join(map(str, shape))}])")
        m = pos.shape[0]
        # distinct configurations when there are enough, else cycle through all of them
        idx = np.sort(rng.choice(m, size=n, replace=False)) if m >= n else np.arange(n) % m
        return pos[idx].copy()
    ref = getattr(system, "reference_positions", None)
    if ref is not None:
        ref = np.asarray(ref, dtype=np.float64).reshape(shape)
        return np.broadcast_to(ref, (n,) + shape).copy()
    L = float(getattr(system, "length_scale", 1.0) or 1.0)
    if len(shape) == 2:
        n_atoms = shape[0]
        a = float(getattr(system, "r_m", L))
        k = int(math.ceil(n_atoms ** (1.0 / 3.0))) + 2
        g = np.arange(-k, k + 1, dtype=np.float64)
        grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3) * a
        order = np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], np.round((grid**2).sum(-1), 9)))
        pts = grid[order[:n_atoms]]
        out = pts[None] + 0.05 * a * rng.standard_normal((n, n_atoms, 3))
        return out - out.mean(axis=1, keepdims=True)
    return L * rng.standard_normal((n,) + shape)


def _tqdm(total: int, desc: str, progress: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=(None if progress is None else not progress), leave=False)



def _advance(step, n_steps: int, chunk: int, bar) -> None:
    """Run `n_steps` integrator steps in calls of at most `chunk`, updating the progress bar."""
    done = 0
    while done < n_steps:
        k = min(chunk, n_steps - done)
        step(k)
        done += k
        bar.update(k)

def run_torch_md(system, temperature: float, n_frames: int, *, replicas: int, stride_steps: int,
                 equilibration_steps: int, timestep: float, friction: float, minimize: bool = True,
                 minimize_steps: int = 500, start=None, seed: int = 0, device="cpu",
                 dtype: torch.dtype = torch.float64, eval_dtype: torch.dtype | None = None,
                 progress: bool | None = None) -> dict:
    """Batched Langevin over `replicas`; `n_frames` saved frames per replica every `stride_steps`.

    Returns arrays shaped (replicas, n_frames, ...) plus counters. All replicas start from the
    (minimised) starting structure(s) with Maxwell-Boltzmann velocities; equilibration
    decorrelates them.
    """
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    n0 = system.n_energy_evals
    t0 = time.perf_counter()
    x0 = _starting_positions(system, replicas, start, rng)
    # minimise each distinct start once (all replicas usually share the reference structure)
    uniq, inverse = np.unique(x0.reshape(replicas, -1), axis=0, return_inverse=True)
    xu = torch.as_tensor(uniq.reshape((-1,) + tuple(system.event_shape)), dtype=dtype, device=device)
    n_min = 0
    if minimize and minimize_steps > 0:
        xu, _, _, n_min = minimize_torch(system, xu, max_steps=minimize_steps, eval_dtype=eval_dtype)
    x = xu[torch.as_tensor(np.asarray(inverse).reshape(-1), device=device)]
    integ = BatchedLangevin(system, temperature, timestep, friction, generator=gen, device=device, dtype=dtype,
                            eval_dtype=eval_dtype)
    integ.initialize(x)
    chunk = max(1, min(stride_steps, 100))
    with _tqdm(equilibration_steps, f"md equilibration ({replicas} replicas)", progress) as bar:
        _advance(integ.step, equilibration_steps, chunk, bar)
        _check_finite(integ.energy, "equilibration")
    if equilibration_steps:
        log.info("torch md: equilibrated %d steps, kinetic T %.1f K (target %.1f), mean U %.4g",
                 equilibration_steps, integ.kinetic_temperature(), temperature, float(integ.energy.mean()))
    n_atoms_shape = tuple(system.event_shape)
    pos = np.empty((replicas, n_frames) + n_atoms_shape, dtype=np.float64)
    frc = np.empty_like(pos)
    ene = np.empty((replicas, n_frames), dtype=np.float64)
    t_prod = np.empty(n_frames, dtype=np.float64)
    integ.time = 0.0
    with _tqdm(n_frames * stride_steps, f"md production ({replicas} replicas)", progress) as bar:
        for k in range(n_frames):
            _advance(integ.step, stride_steps, chunk, bar)
            _check_finite(integ.energy, f"production frame {k}")
            pos[:, k] = integ.x.cpu().numpy()
            frc[:, k] = integ.forces.cpu().numpy()
            ene[:, k] = integ.energy.cpu().numpy()
            t_prod[k] = integ.time
    wall = time.perf_counter() - t0
    n_evals = system.n_energy_evals - n0
    log.info("torch md: %d replicas x %d frames in %.1f s, kinetic T %.1f K, %d energy evaluations "
             "(%d in minimisation)", replicas, n_frames, wall, integ.kinetic_temperature(), n_evals, n_min)
    return {"positions": pos, "energy": ene, "forces": frc, "time": np.broadcast_to(t_prod, ene.shape).copy(),
            "n_energy_evals": int(n_evals), "n_energy_evals_minimization": int(n_min), "wall_s": wall,
            "kinetic_temperature": integ.kinetic_temperature()}


def _check_finite(energy: torch.Tensor, where: str) -> None:
    bad = ~torch.isfinite(energy)
    if bool(bad.any()):
        r = int(torch.nonzero(bad).flatten()[0])
        raise PitaInputError(f"timestep: the integration blew up during {where} ({int(bad.sum())} replica(s) with "
                             f"non-finite energy, first replica {r}); use a smaller timestep or minimise first")


# ---------------------------------------------------------------------------------------------
# OpenMM engine
# ---------------------------------------------------------------------------------------------
def _openmm_platform(name: str | None, device: torch.device | None):
    import openmm

    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name in (None, "auto"):
        name = "CUDA" if (device is not None and device.type == "cuda" and "CUDA" in available) else "Reference"
    if name not in available:
        raise PitaInputError(f"platform: OpenMM platform {name!r} is not available here; available: {', '.join(available)}")
    props = {}
    if name == "CUDA":
        props = {"Precision": "mixed"}
        if device is not None and device.index is not None:
            props["DeviceIndex"] = str(device.index)
    return openmm.Platform.getPlatformByName(name), props


def _minimize_openmm(context, n_atoms: int, max_steps: int, tolerance: float) -> int:
    """L-BFGS (scipy) on an OpenMM Context: every energy/force call is counted exactly.

    (OpenMM's LocalEnergyMinimizer does not report how many evaluations its line searches
    make, and the design requires exact accounting.)
    """
    import openmm.unit as u
    from scipy.optimize import minimize

    count = [0]

    def fun(flat):
        context.setPositions(flat.reshape(n_atoms, 3))
        st = context.getState(getEnergy=True, getForces=True)
        count[0] += 1
        e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        g = -np.asarray(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)).reshape(-1)
        if not np.isfinite(e):
            return 1e30, np.zeros_like(flat)
        return e, g

    x0 = np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)).reshape(-1)
    # gtol on the max |gradient component|: the rms criterion of OpenMM (10 kJ/mol/nm) is close
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_steps), "maxfun": int(2 * max_steps), "gtol": tolerance})
    context.setPositions(res.x.reshape(n_atoms, 3))
    return count[0]


def run_openmm_md(openmm_system, positions, temperature: float, n_frames: int, *, n_trajectories: int = 1,
                  stride_steps: int, equilibration_steps: int, timestep: float, friction: float,
                  minimize: bool = True, minimize_steps: int = 500, force_tolerance: float = 10.0,
                  platform: str | None = None, device=None, seed: int = 0,
                  progress: bool | None = None) -> dict:
    """Independent LangevinMiddle trajectories with OpenMM, one after the other.

    `positions`: (n_atoms, 3) or (n_trajectories, n_atoms, 3) starts in nm; `timestep` in ps,
    `friction` in 1/ps. Returns arrays shaped (n_trajectories, n_frames, ...) and the number of
    force evaluations: every integration step, every saved frame (energy and forces read
    back), every minimiser call.
    """
    import openmm
    import openmm.unit as u

    device = None if device is None else torch.device(device)
    plat, props = _openmm_platform(platform, device)
    pos0 = np.asarray(positions, dtype=np.float64)
    n_atoms = openmm_system.getNumParticles()
    if pos0.ndim == 2:
        pos0 = np.broadcast_to(pos0, (n_trajectories,) + pos0.shape)
    if pos0.shape[1:] != (n_atoms, 3) or pos0.shape[0] < n_trajectories:
        raise PitaInputError(f"positions: expected ({n_trajectories}, {n_atoms}, 3) starts, got {list(pos0.shape)}")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(1, 2**31 - 1, size=(n_trajectories, 2))  # OpenMM treats seed 0 as "random"
    pos = np.empty((n_trajectories, n_frames, n_atoms, 3))
    frc = np.empty_like(pos)
    ene = np.empty((n_trajectories, n_frames))
    tim = np.empty((n_trajectories, n_frames))
    n_evals = n_min = 0
    t0 = time.perf_counter()
    chunk = max(1, min(stride_steps, 1000))
    for r in range(n_trajectories):
        integ = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction / u.picosecond, timestep * u.picosecond)
        integ.setRandomNumberSeed(int(seeds[r, 0]))
        ctx = openmm.Context(openmm_system, integ, plat, props)
        ctx.setPositions(pos0[r] * u.nanometer)
        if minimize and minimize_steps > 0:
            k = _minimize_openmm(ctx, n_atoms, minimize_steps, force_tolerance)
            n_min += k
            n_evals += k
        ctx.setVelocitiesToTemperature(temperature * u.kelvin, int(seeds[r, 1]))
        desc = f"openmm md trajectory {r + 1}/{n_trajectories}"
        with _tqdm(equilibration_steps + n_frames * stride_steps, desc, progress) as bar:
            _advance(integ.step, equilibration_steps, chunk, bar)
            n_evals += equilibration_steps
            for f in range(n_frames):
                _advance(integ.step, stride_steps, chunk, bar)
                st = ctx.getState(getPositions=True, getEnergy=True, getForces=True)
                n_evals += stride_steps + 1
                pos[r, f] = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                frc[r, f] = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
                ene[r, f] = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                tim[r, f] = (f + 1) * stride_steps * timestep
                if not np.isfinite(ene[r, f]):
                    raise PitaInputError(f"timestep: OpenMM trajectory {r} blew up at frame {f} (non-finite energy); "
                                         "use a smaller timestep or minimise first")
        del ctx, integ
    wall = time.perf_counter() - t0
    log.info("openmm md (%s): %d trajectories x %d frames in %.1f s, %d force evaluations (%d in minimisation)",
             plat.getName(), n_trajectories, n_frames, wall, n_evals, n_min)
    return {"positions": pos, "energy": ene, "forces": frc, "time": tim, "n_energy_evals": int(n_evals),
            "n_energy_evals_minimization": int(n_min), "wall_s": wall, "platform": plat.getName(),
            "precision": props.get("Precision", "double" if plat.getName() == "Reference" else "single")}


# ---------------------------------------------------------------------------------------------
# front end
# ---------------------------------------------------------------------------------------------
def _check_count(name: str, value, minimum: int) -> int:
    try:
        iv = int(value)
    except (TypeError, ValueError):
        raise PitaInputError(f"{name}: expected an integer, got {value!r}") from None
    if iv != value and not (isinstance(value, float) and value.is_integer()):
        raise PitaInputError(f"{name}: expected an integer, got {value!r}")
    if iv < minimum:
        raise PitaInputError(f"{name}: must be >= {minimum}, got {iv}")
    return iv


def _check_positive(name: str, value, allow_zero: bool = False) -> float:
    try:
        fv = float(value)
    except (TypeError, ValueError):
        raise PitaInputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(fv) or fv < 0 or (fv == 0 and not allow_zero):
        raise PitaInputError(f"{name}: must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return fv


def default_replicas(engine: str, n_samples: int, device: torch.device) -> int:
    if engine == "openmm":
        return 1
    return max(1, min(n_samples, 1024 if device.type == "cuda" else 64))


def run_md(system, temperature: float, n_samples: int, *, engine: str = "auto", replicas: int | None = None,
           stride_steps: int | None = None, equilibration_steps: int | None = None,
           timestep: float | None = None, friction: float | None = None, minimize: bool = True,
           minimize_steps: int | None = None, platform: str | None = None, device: str | None = None,
           dtype: str | torch.dtype | None = None, seed: int = 0, rung: int = 0, start=None,
           previous_total: int | None = None, config: dict | None = None,
           progress: bool | None = None) -> SampleSet:
    """`n_samples` decorrelated MD samples of `system` at `temperature` as a SampleSet.

    timestep: in the system's time unit (ps for molecules, reduced for LJ/toys); friction in
    1/time. replicas: parallel replicas (torch) or independent trajectories (openmm); the
    samples are split evenly, each run saving a frame every `stride_steps` after
    `equilibration_steps`. Output order is run-major (all frames of run 0, then run 1, ...),
    so `trajectory` and `time_ps` give time-lagged pairs. start: a SampleSet or positions
    array to start from (default: the system's reference structure, or a lattice/normal draw).
    n_energy_evals counts every evaluation (minimisation, equilibration, production, saved
    frames); n_energy_evals_total adds `previous_total` (default: the start set's total).
    """
    temperature = _check_positive("temperature", temperature)
    n_samples = _check_count("n_samples", n_samples, 1)
    seed = _check_count("seed", seed, 0)
    rung = _check_count("rung", rung, 0)
    dev = resolve_device(device)
    eng = choose_engine(system, engine, dev, None if replicas is None else min(int(replicas), n_samples))
    if engine == "auto":
        log.info("md: engine auto -> %s on %s (%s)", eng, dev, AUTO_NOTE)
    d = default_settings(system)
    stride_steps = _check_count("stride_steps", d["stride_steps"] if stride_steps is None else stride_steps, 1)
    equilibration_steps = _check_count("equilibration_steps",
                                       d["equilibration_steps"] if equilibration_steps is None else equilibration_steps, 0)
    minimize_steps = _check_count("minimize_steps", d["minimize_steps"] if minimize_steps is None else minimize_steps, 0)
    timestep = _check_positive("timestep", d["timestep"] if timestep is None else timestep)
    friction = _check_positive("friction", d["friction"] if friction is None else friction, allow_zero=True)
    replicas = _check_count("replicas", default_replicas(eng, n_samples, dev) if replicas is None else replicas, 1)
    replicas = min(replicas, n_samples)
    if platform not in (None, *PLATFORMS):
        raise PitaInputError(f"platform: unknown OpenMM platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    precision = "mixed" if dtype is None else str(dtype).replace("torch.", "")
    if precision not in PRECISIONS:
        raise PitaInputError(f"dtype: expected one of {', '.join(PRECISIONS)}, got {dtype!r}")
    tdtype, eval_dtype = PRECISIONS[precision]
    n_frames = int(math.ceil(n_samples / replicas))
    mol = is_molecular(system)
    log.info("md: %s at %.6g K, %d samples = %d %s x %d frames, stride %d, equilibration %d, dt %g %s, engine %s on %s",
             system.name, temperature, n_samples, replicas, "trajectories" if eng == "openmm" else "replicas",
             n_frames, stride_steps, equilibration_steps, timestep, "ps" if mol else "(reduced)", eng, dev)

    if eng == "openmm":
        start_pos = _starting_positions(system, replicas, start, np.random.default_rng(seed))
        out = run_openmm_md(system.openmm_system, start_pos, temperature, n_frames, n_trajectories=replicas,
                            stride_steps=stride_steps, equilibration_steps=equilibration_steps, timestep=timestep,
                            friction=friction, minimize=minimize, minimize_steps=minimize_steps,
                            force_tolerance=d["force_tolerance"], platform=platform, device=dev, seed=seed,
                            progress=progress)
        # the System's counter is the project's ledger: OpenMM's evaluations bypass it, add them
        system.n_energy_evals += out["n_energy_evals"]
    else:
        out = run_torch_md(system, temperature, n_frames, replicas=replicas, stride_steps=stride_steps,
                           equilibration_steps=equilibration_steps, timestep=timestep, friction=friction,
                           minimize=minimize, minimize_steps=minimize_steps, start=start, seed=seed,
                           device=dev, dtype=tdtype, eval_dtype=eval_dtype, progress=progress)

    shape = tuple(system.event_shape)
    take = slice(0, n_samples)
    positions = out["positions"].reshape((-1,) + shape)[take]
    forces = out["forces"].reshape((-1,) + shape)[take]
    energy = out["energy"].reshape(-1)[take]
    time_ps = out["time"].reshape(-1)[take]
    trajectory = np.repeat(np.arange(replicas, dtype=np.int32), n_frames)[take]
    if previous_total is None:
        previous_total = int(start.attrs.get("n_energy_evals_total", 0)) if isinstance(start, SampleSet) else 0
    settings = {
        "system": system.spec() if hasattr(system, "spec") else getattr(system, "name", "system"),
        "temperature": temperature, "n_samples": n_samples, "engine": eng, "replicas": replicas,
        "stride_steps": stride_steps, "equilibration_steps": equilibration_steps, "timestep": timestep,
        "friction": friction, "minimize": bool(minimize), "minimize_steps": minimize_steps,
        "platform": out.get("platform", ""), "device": str(dev), "precision": precision if eng == "torch" else "",
    }
    attrs = base_attrs("md", config if config is not None else settings, seed)
    attrs.update({
        "system": system.name,
        **system_identity(system),
        "temperature": temperature,
        "units": system.units,
        "length_scale": float(system.length_scale),
        "rung": rung,
        "n_energy_evals": int(out["n_energy_evals"]),
        "n_energy_evals_total": int(previous_total) + int(out["n_energy_evals"]),
        "n_energy_evals_minimization": int(out["n_energy_evals_minimization"]),
        "md_engine": eng,
        "md_replicas": replicas,
        "md_frames_per_replica": n_frames,
        "md_stride_steps": stride_steps,
        "md_equilibration_steps": equilibration_steps,
        "md_timestep": timestep,
        "md_friction": friction,
        "md_minimized": int(bool(minimize)),
        "md_platform": out.get("platform", ""),
        "md_device": str(dev),
        "md_precision": precision if eng == "torch" else out.get("precision", "double"),
        "md_wall_s": float(out["wall_s"]),
        "time_unit": "ps" if mol else "reduced",
        "kB": float(system.kB),
    })
    return SampleSet(positions=positions.astype(np.float32), energy=energy.astype(np.float64), attrs=attrs,
                     forces=forces.astype(np.float32), trajectory=trajectory, time_ps=time_ps.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# statistics for validation (engines against each other, MD against references)
# ---------------------------------------------------------------------------------------------
def _series(values: np.ndarray, trajectory: np.ndarray | None) -> list[np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    if trajectory is None:
        return [values]
    trajectory = np.asarray(trajectory)
    return [values[trajectory == t] for t in np.unique(trajectory)]


def block_standard_error(values, trajectory=None, n_blocks: int = 20) -> tuple[float, float]:
    """(mean, standard error) of the mean by block averaging (`pita.metrics.block_standard_error`):
    each run's time series is cut into contiguous blocks (whole runs grouped into `n_blocks`
    blocks when there are at least that many), leave-one-block-out jackknife; for equal blocks
    this is std(block means) / sqrt(#blocks).
    """
    from .metrics import block_standard_error as block_se, trajectory_blocks

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = float(v.mean())
    blocks = trajectory_blocks(v.size, trajectory, n_blocks=n_blocks)
    return mean, block_se(v, blocks)


def statistical_inefficiency(values, trajectory=None, n_blocks: int = 20) -> float:
    """g = N SE^2 / var >= 1: the number of saved frames per independent sample."""
    v = np.asarray(values, dtype=np.float64)
    _, se = block_standard_error(v, trajectory, n_blocks)
    var = float(np.var(v))
    if not (var > 0) or not math.isfinite(se):
        return 1.0
    return max(1.0, v.size * se * se / var)


def decorrelated(values, trajectory=None, g: float | None = None) -> np.ndarray:
    """Every ceil(g)-th frame of each run (g: statistical inefficiency, estimated if None)."""
    g = statistical_inefficiency(values, trajectory) if g is None else g
    k = max(1, int(math.ceil(g)))
    return np.concatenate([s[::k] for s in _series(values, trajectory)])


def energy_summary(ss: SampleSet) -> dict:
    mean, se = block_standard_error(ss.energy, ss.trajectory)
    g = statistical_inefficiency(ss.energy, ss.trajectory)
    return {"n": len(ss), "mean": mean, "se": se, "std": float(np.std(ss.energy)), "g": g,
            "n_independent": len(decorrelated(ss.energy, ss.trajectory, g))}


def compare_energy_distributions(a: SampleSet, b: SampleSet) -> dict:
    """Mean energies +- SE of two sets, their z-score, and a two-sample KS test on decorrelated energies."""
    from scipy.stats import ks_2samp

    sa, sb = energy_summary(a), energy_summary(b)
    diff = sb["mean"] - sa["mean"]
    se = math.sqrt(sa["se"] ** 2 + sb["se"] ** 2)
    da = decorrelated(a.energy, a.trajectory, sa["g"])
    db = decorrelated(b.energy, b.trajectory, sb["g"])
    ks = ks_2samp(da, db)
    return {"a": sa, "b": sb, "diff": diff, "se": se, "z": diff / se if se > 0 else float("inf"),
            "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}


__all__ = ["BatchedLangevin", "minimize_torch", "run_torch_md", "run_openmm_md", "run_md", "choose_engine",
           "default_settings", "ENGINES", "PLATFORMS", "block_standard_error", "statistical_inefficiency",
           "decorrelated", "energy_summary", "compare_energy_distributions"]
