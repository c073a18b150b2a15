"""Umbrella sampling on a grid of dihedrals, unbiased with MBAR: basin free energies with a known error.

Why: on alanine dipeptide at 300 K the alpha_L basin (phi > 0) holds ~2 % of the mass, 40 ns of
plain MD never enter it, and a replica-exchange set of 10,000 frames knows its free energy to ~0.1
kT, as large as the differences between samplers it is meant to judge. Restraining (phi, psi) to a
grid of windows makes every region (the barriers included) well sampled; MBAR then removes the
restraints exactly and returns every basin's free energy. Both angles are restrained because psi
is slow too: with phi alone restrained, psi rarely changes inside a window and repeats disagree.

The method (window k restrains the D dihedrals theta_d to the grid point c_k with harmonic biases on
the wrapped differences):

    b_k(theta) = sum_d k_d / 2 * d(theta_d, c_kd)^2,   d = wrapped difference in [-pi, pi)
    u_kn       = b_k(theta_n) / kT                      (reduced bias of frame n in window k)

MBAR solves f_k = -ln sum_n exp(-u_kn) / sum_j N_j exp(f_j - u_jn) for the windows' free energies;
the unbiased weight of frame n is w_n ∝ 1 / sum_j N_j exp(f_j - u_jn), and a basin's free energy
relative to C7eq is -ln(sum_{n in b} w_n / sum_{n in C7eq} w_n). pymbar computes f_k and the
uncertainties (from the asymptotic covariance of MBAR, on samples thinned to be uncorrelated by each
window's statistical inefficiency); independent repeats give the spread the asymptotic error cannot
see (slow degrees of freedom the restraints do not hold).

Windows are sampled one after another, each starting where the previous one ended, with OpenMM's
LangevinMiddle integrator on the system's own force field plus a CustomTorsionForce for the bias.
Every integration step and saved frame counts as one energy evaluation.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import PitaInputError
from .settings import MAX_COUNT, MAX_STEPS, setting

log = logging.getLogger(__name__)

#: force group of the restraint (the unbiased energy is read from the other groups)
BIAS_GROUP = 31


@dataclass(frozen=True)
class UmbrellaSettings:
    """Umbrella sampling on a (phi, psi) grid (`pita umbrella`)."""

    windows: int = setting(36, "restraint centres along phi, evenly spaced over [-180, 180) degrees", ge=2, le=3600)
    force_constant: float = setting(200.0, "phi restraint force constant, kJ/mol/rad^2 (neighbouring windows must "
                                           "overlap: sd ~ sqrt(kT/k) rad against the spacing 2 pi/windows)",
                                    gt=0, le=1e6)
    psi_windows: int = setting(12, "restraint centres along psi (1: psi unrestrained, a 1-D phi ladder; slow psi "
                                   "changes then bias the phi profile)", ge=1, le=3600)
    psi_force_constant: float = setting(60.0, "psi restraint force constant, kJ/mol/rad^2", gt=0, le=1e6)
    frames_per_window: int = setting(100, "frames saved per window", ge=10, le=MAX_COUNT)
    stride_steps: int = setting(200, "integration steps between saved frames", ge=1, le=MAX_STEPS)
    equilibration_steps: int = setting(5000, "steps in each window before its first frame", ge=0, le=MAX_STEPS)
    timestep_fs: float = setting(1.0, "timestep in femtoseconds", gt=0, le=10)
    friction_per_ps: float = setting(1.0, "Langevin friction, 1/ps", gt=0, le=1e4)
    residue: int = setting(0, "which residue's (phi, psi) is restrained (index among the residues with both)",
                           ge=0, le=10_000)
    minimize_steps: int = setting(500, "minimiser iterations on the starting structure", ge=0, le=1_000_000)
    sweep: str = setting("forward", "order the windows are visited in: the snake from phi = -180 up (forward) or "
                                    "the same path backwards (a repeat each way shows any lag behind the restraints)",
                         choices=("forward", "backward"))
    platform: str = setting("Reference", "OpenMM platform", choices=("Reference", "CPU", "CUDA", "OpenCL"))


def dihedral(positions: np.ndarray, idx) -> np.ndarray:
    """Dihedral angle (radians, (-pi, pi]) of atoms idx = (i, j, k, l) in (..., n_atoms, 3) positions,
    with the IUPAC sign convention of OpenMM and mdtraj."""
    p = np.asarray(positions, dtype=np.float64)
    b0 = p[..., idx[0], :] - p[..., idx[1], :]
    b1 = p[..., idx[2], :] - p[..., idx[1], :]
    b2 = p[..., idx[3], :] - p[..., idx[2], :]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1n, v) * w, axis=-1)
    return np.arctan2(y, x)


def wrapped_difference(a, b) -> np.ndarray:
    """a - b wrapped to [-pi, pi)."""
    return (np.asarray(a, dtype=np.float64) - b + math.pi) % (2 * math.pi) - math.pi


def grid_centres(counts) -> np.ndarray:
    """(K, D) restraint centres: evenly spaced on [-pi, pi) per dimension, visited in snake order
    (each window next to the one before it, so a window starts close to its own centre)."""
    axes = [-math.pi + 2 * math.pi * np.arange(n) / n for n in counts]
    rows = [[]]
    for d, axis in enumerate(axes):
        new = []
        for i, row in enumerate(rows):
            order = axis if i % 2 == 0 else axis[::-1]
            new.extend(row + [a] for a in order)
        rows = new
    return np.array(rows, dtype=np.float64)


def reduced_bias(theta: np.ndarray, centres: np.ndarray, force_constants, kT: float) -> np.ndarray:
    """u_kn: the bias of every frame (theta (N, D)) in every window (centres (K, D)), in kT: (K, N).
    `force_constants`: (D,) for all windows or (K, D) per window."""
    theta = np.asarray(theta, dtype=np.float64).reshape(len(theta), -1)
    centres = np.asarray(centres, dtype=np.float64).reshape(len(centres), -1)
    k = np.broadcast_to(np.asarray(force_constants, dtype=np.float64), centres.shape)
    u = np.zeros((centres.shape[0], theta.shape[0]))
    for dim in range(theta.shape[1]):  # one dimension at a time: no (K, N, D) temporary
        d = wrapped_difference(theta[None, :, dim], centres[:, dim, None])
        u += (0.5 / kT) * k[:, dim, None] * d * d
    return u


def _restraint_force(dihedrals, force_constants):
    import openmm

    f = openmm.CustomTorsionForce(
        "0.5*k_umbrella*d^2; d = min(a, 2*3.141592653589793 - a); a = abs(theta - theta0)")
    f.addPerTorsionParameter("k_umbrella")
    f.addPerTorsionParameter("theta0")
    for idx, k in zip(dihedrals, force_constants):
        f.addTorsion(*[int(i) for i in idx], [float(k), 0.0])
    f.setForceGroup(BIAS_GROUP)
    return f


@dataclass
class WindowSamples:
    """What the windows saw: per window k and frame f, the restrained dihedrals (D of them), the
    observables (e.g. all residues' (phi, psi)), the unbiased potential energy (kJ/mol)."""

    centres: np.ndarray            # (K, D) radians
    force_constants: np.ndarray    # (D,) kJ/mol/rad^2
    temperature: float             # K
    kT: float                      # kJ/mol
    theta: np.ndarray              # (K, F, D) radians
    observables: np.ndarray        # (K, F, ...) e.g. (phi, psi) per residue
    energy: np.ndarray             # (K, F) kJ/mol, without the restraint
    n_energy_evals: int = 0
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)


def sample_windows(openmm_system, positions: np.ndarray, dihedrals, force_constants, centres: np.ndarray,
                   temperature: float, kT: float, settings: UmbrellaSettings, *, observe=None, seed: int = 0,
                   progress: bool | None = None) -> WindowSamples:
    """Run every window (row of `centres`, (K, D)) on a copy of `openmm_system` with harmonic
    restraints on the D `dihedrals` (atom quadruples).

    `observe(positions (F, n_atoms, 3)) -> (F, ...)` computes the observables kept per frame
    (default: none). Windows run in the order given, each from the previous one's last state.
    """
    import openmm
    import openmm.unit as u

    from .md import _advance, _minimize_openmm, _openmm_platform, _tqdm

    centres = np.asarray(centres, dtype=np.float64).reshape(len(centres), -1)
    D = centres.shape[1]
    if len(dihedrals) != D or len(force_constants) != D:
        raise PitaInputError(f"umbrella: {len(dihedrals)} dihedrals and {len(force_constants)} force constants "
                             f"for {D}-dimensional window centres")
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(openmm_system))
    for i in range(system.getNumForces()):
        if system.getForce(i).getForceGroup() == BIAS_GROUP:
            raise PitaInputError(f"system: force {i} already uses force group {BIAS_GROUP}, which the restraint needs")
    restraint = _restraint_force(dihedrals, force_constants)
    system.addForce(restraint)
    plat, props = _openmm_platform(settings.platform, None)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(1, 2**31 - 1, size=2)  # OpenMM treats seed 0 as "random"
    integ = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, settings.friction_per_ps / u.picosecond,
                                            settings.timestep_fs * 1e-3 * u.picosecond)
    integ.setRandomNumberSeed(int(seeds[0]))
    ctx = openmm.Context(system, integ, plat, props)
    n_atoms = system.getNumParticles()
    ctx.setPositions(np.asarray(positions, dtype=np.float64) * u.nanometer)

    def restrain(c):
        for d in range(D):
            restraint.setTorsionParameters(d, *[int(i) for i in dihedrals[d]], [float(force_constants[d]), float(c[d])])
        restraint.updateParametersInContext(ctx)

    K, F = centres.shape[0], settings.frames_per_window
    theta = np.empty((K, F, D))
    energy = np.empty((K, F))
    observables = None
    unbiased = set(range(32)) - {BIAS_GROUP}
    t0 = time.perf_counter()
    n_evals = 0
    restrain(centres[0])
    n_min = _minimize_openmm(ctx, n_atoms, settings.minimize_steps, 10.0) if settings.minimize_steps > 0 else 0
    n_evals += n_min
    ctx.setVelocitiesToTemperature(temperature * u.kelvin, int(seeds[1]))
    steps_per_window = settings.equilibration_steps + F * settings.stride_steps
    chunk = max(1, min(settings.stride_steps, 1000))
    with _tqdm(K * steps_per_window, f"umbrella: {K} windows", progress) as bar:
        for k in range(K):
            restrain(centres[k])
            _advance(integ.step, settings.equilibration_steps, chunk, bar)
            pos = np.empty((F, n_atoms, 3))
            for f in range(F):
                _advance(integ.step, settings.stride_steps, chunk, bar)
                st = ctx.getState(getPositions=True, getEnergy=True, groups=unbiased)
                pos[f] = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                energy[k, f] = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                if not np.isfinite(energy[k, f]):
                    raise PitaInputError(f"timestep_fs: umbrella window {k} blew up at frame {f} (non-finite energy)")
            n_evals += steps_per_window + F
            for d in range(D):
                theta[k, :, d] = dihedral(pos, dihedrals[d])
            if observe is not None:
                obs = np.asarray(observe(pos))
                if observables is None:
                    observables = np.empty((K, F) + obs.shape[1:])
                observables[k] = obs
    wall = time.perf_counter() - t0
    log.info("umbrella: %d windows x %d frames in %.1f s, %d energy evaluations", K, F, wall, n_evals)
    if observables is None:
        observables = np.zeros((K, F, 0))
    return WindowSamples(centres=centres, force_constants=np.asarray(force_constants, dtype=np.float64),
                         temperature=float(temperature), kT=float(kT), theta=theta, observables=observables,
                         energy=energy, n_energy_evals=int(n_evals), wall_s=float(wall),
                         info={"platform": plat.getName(), "timestep_fs": settings.timestep_fs,
                               "n_energy_evals_minimization": int(n_min), "sweep": settings.sweep,
                               "friction_per_ps": settings.friction_per_ps, "stride_steps": settings.stride_steps,
                               "equilibration_steps": settings.equilibration_steps, "seed": int(seed)})


def _quiet_pymbar() -> None:
    """pymbar logs a banner about JAX at import and a line per solve: keep its errors only."""
    logging.getLogger("pymbar").setLevel(logging.ERROR)


def _inefficiency(series: np.ndarray) -> float:
    _quiet_pymbar()
    from pymbar import timeseries

    x = np.asarray(series, dtype=np.float64)
    if x.size < 4 or not np.var(x) > 0:
        return 1.0
    return float(max(1.0, timeseries.statistical_inefficiency(x, fast=False)))


class MBARBasins:
    """MBAR over the windows of one or more WindowSamples (repeats at the same temperature).

    `states(observables (M, ...)) -> (M,) int` assigns each frame to a state (e.g. a Ramachandran
    basin); free energies are reported relative to state 0. Each window's frames are thinned by its
    statistical inefficiency, taken as the largest of the restraint energy's and every state
    indicator's, so the asymptotic errors count the slow state changes inside windows too.
    """

    def __init__(self, samples: list[WindowSamples], states, n_states: int):
        _quiet_pymbar()
        from pymbar import MBAR

        if not samples:
            raise PitaInputError("umbrella: no window samples to combine")
        first = samples[0]
        for s in samples[1:]:
            if abs(s.temperature - first.temperature) > 1e-9 or abs(s.kT - first.kT) > 1e-12:
                raise PitaInputError(f"umbrella: repeats at different temperatures ({first.temperature:g} K "
                                     f"and {s.temperature:g} K) cannot be combined")
        from scipy.special import logsumexp

        self.kT = first.kT
        self.n_states = int(n_states)
        # windows with the same restraint in different repeats are one MBAR state (the same
        # Hamiltonian): the state count, not the repeat count, sets the size of u_kn
        states_of: dict[tuple, int] = {}
        centres, kforce, theta, labels, g_all = [], [], [], [], []
        for s in samples:
            for k in range(s.centres.shape[0]):
                lab = np.asarray(states(s.observables[k]), dtype=np.int64)
                bias = reduced_bias(s.theta[k], s.centres[k:k + 1], s.force_constants, s.kT)[0]
                g = max([_inefficiency(bias)] + [_inefficiency(lab == b) for b in range(self.n_states)])
                keep = np.unique(np.round(np.arange(0, s.theta.shape[1], g)).astype(int))
                keep = keep[keep < s.theta.shape[1]]
                key = tuple(np.round(s.centres[k], 12)) + tuple(np.round(s.force_constants, 12))
                if key not in states_of:
                    states_of[key] = len(centres)
                    centres.append(s.centres[k])
                    kforce.append(s.force_constants)
                    theta.append([])
                    labels.append([])
                j = states_of[key]
                theta[j].append(s.theta[k, keep])
                labels[j].append(lab[keep])
                g_all.append(g)
        self.centres = np.array(centres)
        self.force_constants = np.array(kforce)
        self.inefficiency = np.array(g_all)
        self.N_k = np.array([sum(t.shape[0] for t in ts) for ts in theta])
        self.theta = np.concatenate([t for ts in theta for t in ts])
        self.labels = np.concatenate([lab for ls in labels for lab in ls])
        u_kn = reduced_bias(self.theta, self.centres, self.force_constants, self.kT)
        self.mbar = MBAR(u_kn, self.N_k, solver_protocol="robust")
        # unbiased log-weights: w_n ∝ 1 / sum_k N_k exp(f_k - u_kn)
        self.log_weights = -logsumexp(np.log(self.N_k)[:, None] + self.mbar.f_k[:, None] - u_kn, axis=0)

    def weights(self) -> np.ndarray:
        w = np.exp(self.log_weights - self.log_weights.max())
        return w / w.sum()

    def free_energies(self) -> tuple[np.ndarray, np.ndarray]:
        """Delta F of every state relative to state 0 (kT), and its MBAR standard error."""
        big = 1e10  # a frame outside the state: weight exp(-1e10) = 0
        u_ln = np.where(self.labels[None, :] == np.arange(self.n_states)[:, None], 0.0, big)
        occupied = np.array([np.any(self.labels == b) for b in range(self.n_states)])
        if not occupied[0]:  # nothing to be relative to
            return np.full(self.n_states, np.nan), np.full(self.n_states, np.nan)
        res = self.mbar.compute_perturbed_free_energies(u_ln)
        dF, se = np.asarray(res["Delta_f"])[0].copy(), np.asarray(res["dDelta_f"])[0].copy()
        # a state no frame visited has no finite free energy (the penalty would make it ~1e10)
        dF[~occupied], se[~occupied] = np.inf, np.nan
        return dF, se

    def profile(self, bins: int = 72, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """F(theta_dim) in kT on `bins` equal bins of [-pi, pi) (min 0; inf where nothing was sampled)."""
        h, edges = np.histogram(self.theta[:, dim], bins=bins, range=(-math.pi, math.pi), weights=self.weights())
        with np.errstate(divide="ignore"):
            f = -np.log(h / (edges[1] - edges[0]))
        f -= np.min(f[np.isfinite(f)])
        return 0.5 * (edges[1:] + edges[:-1]), f


def backbone_indices(topology, residue: int = 0) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """Atoms of the phi and psi dihedrals of the `residue`-th residue that has both (the order of
    pita.metrics.backbone_dihedrals), and its label."""
    from .metrics import backbone_dihedral_atoms

    atoms, labels = backbone_dihedral_atoms(topology)
    if not atoms:
        raise PitaInputError("system: no residue with both phi and psi; umbrella sampling along phi needs one")
    if residue >= len(atoms):
        raise PitaInputError(f"residue: {residue} is out of range; the system has {len(atoms)} residue(s) "
                             "with phi and psi")
    phi, psi = atoms[residue]
    return tuple(int(i) for i in phi), tuple(int(i) for i in psi), labels[residue]


def sample_backbone_windows(system, temperature: float, settings: UmbrellaSettings, *, seed: int = 0,
                            progress: bool | None = None) -> WindowSamples:
    """Umbrella windows on a molecule's (phi, psi) grid (phi alone with psi_windows 1); every
    frame keeps all residues' (phi, psi)."""
    from .metrics import backbone_dihedrals

    phi, psi, label = backbone_indices(system.topology, settings.residue)
    if settings.psi_windows > 1:
        dihedrals, ks = [phi, psi], [settings.force_constant, settings.psi_force_constant]
        centres = grid_centres([settings.windows, settings.psi_windows])
    else:
        dihedrals, ks = [phi], [settings.force_constant]
        centres = grid_centres([settings.windows])
    if settings.sweep == "backward":
        centres = centres[::-1].copy()
    out = sample_windows(system.openmm_system, system.reference_positions, dihedrals, ks, centres, temperature,
                         system.kB * temperature, settings, seed=seed, progress=progress,
                         observe=lambda pos: backbone_dihedrals(pos, system.topology)[0])
    out.info["dihedral_atoms"] = [list(d) for d in dihedrals]
    out.info["residue"] = int(settings.residue)
    out.info["residue_label"] = label
    return out


# ---------------------------------------------------------------------------------------------
# files: the windows of one repeat (HDF5), the basin free energies of all repeats (JSON)
# ---------------------------------------------------------------------------------------------
WINDOWS_FORMAT = "pita-umbrella-windows-1"
WINDOW_DATASETS = ("centres", "force_constants", "theta", "observables", "energy")
WINDOW_ATTRS = ("system", "temperature", "kT", "n_energy_evals", "wall_s", "info", "system_identity")


def write_windows(path, windows: WindowSamples, system, settings: UmbrellaSettings, seed: int) -> None:
    """One repeat's windows, with the settings and provenance needed to combine repeats later."""
    import json

    import h5py

    from .provenance import atomic_path, base_attrs, system_identity
    from .settings import to_dict

    attrs = base_attrs("umbrella", to_dict(settings), seed)
    attrs.update({"format": WINDOWS_FORMAT, "system": system.name, "temperature": windows.temperature,
                  "kT": windows.kT,
                  "n_energy_evals": windows.n_energy_evals, "wall_s": windows.wall_s,
                  "settings": json.dumps(to_dict(settings), sort_keys=True),
                  "info": json.dumps(windows.info, sort_keys=True),
                  "system_identity": json.dumps(system_identity(system), sort_keys=True)})
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.create_dataset("centres", data=windows.centres)
            f.create_dataset("force_constants", data=windows.force_constants)
            f.create_dataset("theta", data=windows.theta, compression="gzip")
            f.create_dataset("observables", data=windows.observables, compression="gzip")
            f.create_dataset("energy", data=windows.energy, compression="gzip")


def read_windows(path) -> tuple[WindowSamples, dict]:
    """Read a window file; (windows, attrs). Errors name the file and the problem."""
    import json
    from pathlib import Path

    import h5py

    path = Path(path)
    if not path.is_file():
        raise PitaInputError(f"{path}: no such window file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            if attrs.get("format") != WINDOWS_FORMAT:
                raise PitaInputError(f"{path}: format: not a `pita umbrella` window file")
            missing = [k for k in WINDOW_DATASETS if k not in f]
            if missing:
                raise PitaInputError(f"{path}: {missing[0]}: dataset missing")
            data = {k: np.asarray(f[k]) for k in WINDOW_DATASETS}
    except OSError as err:
        raise PitaInputError(f"{path}: not a readable HDF5 file ({err})") from None
    missing = [k for k in WINDOW_ATTRS if k not in attrs]
    if missing:
        raise PitaInputError(f"{path}: {missing[0]}: attribute missing")
    if data["centres"].ndim != 2:
        raise PitaInputError(f"{path}: centres: expected (windows, restrained angles), got shape "
                             f"{list(data['centres'].shape)}")
    K, D = data["centres"].shape
    if data["theta"].shape[0::2] != (K, D) or data["force_constants"].shape != (D,) \
            or data["energy"].shape != data["theta"].shape[:2] or data["observables"].shape[:2] != data["theta"].shape[:2]:
        raise PitaInputError(f"{path}: theta/energy/observables: shapes do not match {K} windows")
    for key in ("theta", "energy", "observables"):
        if not np.all(np.isfinite(data[key])):
            raise PitaInputError(f"{path}: {key}: contains non-finite values")
    try:
        windows = WindowSamples(centres=data["centres"], force_constants=data["force_constants"],
                                temperature=float(attrs["temperature"]), kT=float(attrs["kT"]), theta=data["theta"],
                                observables=data["observables"], energy=data["energy"],
                                n_energy_evals=int(attrs["n_energy_evals"]), wall_s=float(attrs["wall_s"]),
                                info=json.loads(attrs["info"]))
    except (TypeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise PitaInputError(f"{path}: attributes: not a `pita umbrella` window file ({err})") from None
    if not isinstance(windows.info, dict):
        raise PitaInputError(f"{path}: info: expected a JSON object")
    return windows, attrs


def basin_reference(runs: list[tuple[WindowSamples, dict]], paths: list[str], out=None) -> dict:
    """Ramachandran basin free energies (relative to C7eq) from the repeats together; written to
    `out` (JSON, atomically) when given. se = max(MBAR's asymptotic error, sd over repeats /
    sqrt(repeats))."""
    from .metrics import BASIN_NAMES, basin_labels
    from .provenance import atomic_write_json, base_attrs, file_digest

    first = runs[0][1]
    for (w, a), path in zip(runs, paths):
        for key in ("system", "system_identity"):
            if a.get(key) != first.get(key):
                raise PitaInputError(f"{path}: {key}: {a.get(key)!r} differs from {paths[0]}'s {first.get(key)!r}")
        if abs(float(a["temperature"]) - float(first["temperature"])) > 1e-9:
            raise PitaInputError(f"{path}: temperature: {a['temperature']} K differs from {paths[0]}'s "
                                 f"{first['temperature']} K")
        if w.info.get("residue") != runs[0][0].info.get("residue"):
            raise PitaInputError(f"{path}: residue: restrains another residue's phi than {paths[0]}")
        if w.centres.shape[1] != runs[0][0].centres.shape[1] or w.observables.shape[2:] != runs[0][0].observables.shape[2:]:
            raise PitaInputError(f"{path}: centres: restrains {w.centres.shape[1]} angle(s), {paths[0]} "
                                 f"{runs[0][0].centres.shape[1]}: repeats must use the same restraints")
    residue = int(runs[0][0].info.get("residue", 0))

    def states(obs):
        return basin_labels(obs[:, residue])

    n = len(BASIN_NAMES)
    together = MBARBasins([w for w, _ in runs], states, n)
    dF, mbar_se = together.free_energies()
    each = np.array([MBARBasins([w], states, n).free_energies()[0] for w, _ in runs])
    sd = each.std(axis=0, ddof=1) if len(runs) > 1 else np.full(n, np.nan)
    se = np.fmax(mbar_se, sd / np.sqrt(len(runs))) if len(runs) > 1 else mbar_se
    w = together.weights()
    p = np.array([w[together.labels == b].sum() for b in range(n)])
    centres, profile = together.profile(dim=0)
    result = {
        "method": "umbrella sampling on the (phi, psi) grid + MBAR" if runs[0][0].centres.shape[1] == 2
                  else "umbrella sampling along phi + MBAR",
        "system": first["system"], "temperature": float(first["temperature"]), "residue": residue,
        "residue_label": next((w.info["residue_label"] for w, _ in runs if w.info.get("residue_label")), None),
        "basins": {name: {"p": float(p[b]), "dF": float(dF[b]), "se": float(se[b]), "mbar_se": float(mbar_se[b]),
                          "repeat_sd": None if len(runs) < 2 else float(sd[b]),
                          "repeats": [float(x) for x in each[:, b]]}
                   for b, name in enumerate(BASIN_NAMES)},
        "repeats": len(runs),
        "windows": int(sum(wi.centres.shape[0] for wi, _ in runs)),
        "frames_used": int(together.N_k.sum()),
        "statistical_inefficiency_max": float(together.inefficiency.max()),
        "n_energy_evals": int(sum(wi.n_energy_evals for wi, _ in runs)),
        "wall_s": float(sum(wi.wall_s for wi, _ in runs)),
        "profile_phi_deg": [float(x) for x in np.degrees(centres)],
        "profile_F_kT": [None if not np.isfinite(x) else float(x) for x in profile],
        "inputs": [{"path": str(path), "sha256": file_digest(path), "seed": int(a.get("seed", -1)),
                    "config_digest": a.get("config_digest")} for (_, a), path in zip(runs, paths)],
    }
    result.update(base_attrs("umbrella_combine", {"inputs": result["inputs"]}))
    if out is not None:
        atomic_write_json(out, result)
    return result
