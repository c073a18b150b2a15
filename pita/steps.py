"""The steps of the method as library functions: typed settings in, finished outputs out.

    seed(system, T_0, MDSettings)                       -> SampleSet  (MD at the hot temperature)
    reference(system, T_k, ReferenceSettings, given=)   -> SampleSet  (reference MD, or a shipped set)
    train(sets, system, TrainSettings, ...)             -> TrainResult (checkpoint + losses written)
    anneal(model, system, T_next, AnnealSettings, ...)  -> (SampleSet, diagnostics)  (weighted, FK-SMC)
    relax(samples, system, T, RelaxSettings, ...)       -> (SampleSet, diagnostics)  (unweighted)
    evaluate(samples, reference, system, EvaluateSettings, out_dir) -> metrics
    baseline(method, system, ladder, BaselineSettings, budget)      -> SampleSet

Every SampleSet returned carries its provenance (producing step, settings digest, seed,
package version, energy evaluations of the step and cumulated along the ladder). The `pita`
commands are thin shells over these: parse options, read inputs, call, write.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import PitaInputError
from .samples import SampleSet
from .settings import (AnnealSettings, BaselineSettings, EvaluateSettings, MDSettings, ReferenceSettings,
                       RelaxSettings, TrainSettings, to_dict)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# MD: seed and reference
# ---------------------------------------------------------------------------------------------
def md_timestep(system: Any, settings: MDSettings | BaselineSettings) -> float | None:
    """The timestep in the system's time unit: `timestep`, else `timestep_fs` for molecules, else
    None (the system's own default, for reduced units)."""
    from .md import is_molecular

    if settings.timestep is not None:
        return settings.timestep
    if is_molecular(system):
        return settings.timestep_fs * 1e-3
    return None


def seed(system: Any, temperature: float, settings: MDSettings, *, seed: int = 0, rung: int = 0,
         start: SampleSet | None = None, device: str | None = None, progress: bool | None = None) -> SampleSet:
    """Decorrelated MD samples (energies and forces) of `system` at `temperature`."""
    return _run_md(system, temperature, settings, seed, rung, start, device, progress)


def _run_md(system: Any, temperature: float, settings: MDSettings, seed: int, rung: int, start: Any,
            device: str | None, progress: bool | None) -> SampleSet:
    from .md import run_md

    return run_md(system, temperature, settings.n_samples, engine=settings.engine, replicas=settings.replicas,
                  stride_steps=settings.stride_steps, equilibration_steps=settings.equilibration_steps,
                  timestep=md_timestep(system, settings), friction=settings.friction_per_ps,
                  minimize=settings.minimize, minimize_steps=settings.minimize_steps,
                  platform=None if settings.platform == "auto" else settings.platform, device=device,
                  dtype=settings.dtype, seed=seed, rung=rung, start=start,
                  config={"step": "md", "settings": to_dict(settings), "system": system.spec(),
                          "temperature": temperature},
                  progress=progress)


def reference(system: Any, temperature: float, settings: ReferenceSettings, *, given: str | Path | None = None,
              seed: int = 0, rung: int = 0, device: str | None = None, progress: bool | None = None) -> SampleSet:
    """Reference samples at `temperature`: the `given` set (checked against the system and the
    temperature), or MD with `settings`."""
    if given is None:
        return _run_md(system, temperature, settings, seed, rung, None, device, progress)
    ref = SampleSet.read(given, temperature=temperature, load_forces=True)
    ref.check_system(str(given), system)
    ref.attrs["reference_source"] = str(given)
    ref.attrs["rung"] = rung
    return ref


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def train(sample_sets: Sequence[str | Path | SampleSet], system: Any, settings: TrainSettings, *,
          init: str | Path | None = None, out: str | Path, losses_csv: str | Path | None = None,
          device: str = "auto", seed: int = 0, work_dir: str | Path | None = None,
          progress: bool | None = None, next_temperature: float | None = None,
          diagnostics: str | Path | None = None):
    """Train the rung's score and energy models; writes the checkpoint `out` (and `losses_csv`).

    `settings.holdout_fraction` of the rung's own set (the first) is kept out of training; the
    model's fidelity on it (pita.fidelity: energy spread, score/energy consistency, its own samples
    at gamma = 1) goes into the checkpoint's meta and the `diagnostics` JSON.
    """
    from .training import train as train_models

    if init is not None:
        from .models import check_checkpoint_system, load_checkpoint

        check_checkpoint_system(load_checkpoint(init, "cpu"), system, init)
    sets = [s if isinstance(s, SampleSet) else SampleSet.read(s) for s in sample_sets]
    for given, s in zip(sample_sets, sets):
        s.check_system(str(given) if not isinstance(given, SampleSet) else "<sample set>", system)
    held_out = None
    if settings.holdout_fraction > 0 and len(sets[0]) >= 20:
        rng = np.random.default_rng(seed + 7919)
        order = rng.permutation(len(sets[0]))
        n_out = max(1, min(int(round(settings.holdout_fraction * len(sets[0]))), 5000))
        held_out, sets[0] = sets[0].subset(np.sort(order[:n_out])), sets[0].subset(np.sort(order[n_out:]))
    fidelity = None
    if held_out is not None:
        def fidelity(model):
            from .fidelity import held_out_data, model_fidelity

            log.info("train: fidelity of the model on %d held-out samples", len(held_out))
            return model_fidelity(model, system, held_out_data(held_out, system, model),
                                  next_temperature=next_temperature, n_generated=settings.fidelity_samples,
                                  generation_steps=settings.fidelity_steps, seed=seed, device="cpu")
    result = train_models(sets, system, config=settings, init=init, out=out, losses_csv=losses_csv,
                          device=device, seed=seed, work_dir=work_dir, progress=progress, fidelity=fidelity)
    if diagnostics is not None:
        from .provenance import atomic_write_json

        atomic_write_json(diagnostics, {"fidelity": result.model.meta.get("fidelity"),
                                        "checkpoint": str(out), "steps": result.step})
    return result


# ---------------------------------------------------------------------------------------------
# anneal
# ---------------------------------------------------------------------------------------------
def anneal(model: Any, system: Any, temperature: float, settings: AnnealSettings, *, checkpoint: str,
           samples_in: SampleSet | None = None, samples_in_source: str = "--samples-in", seed: int = 0, device: Any = "cpu", rung: int | None = None,
           progress: bool = False) -> tuple[SampleSet, dict]:
    """FK-SMC from the model of rung k (temperature T_k) to `temperature`: the weighted set after
    the exact final correction, and the diagnostics (ESS trace, resampling, chirality, cost)."""
    from .fksmc import anneal as fk_anneal
    from .provenance import base_attrs, file_digest, system_identity
    from .relax import torsion_cycles

    T_k, T_next = float(model.temperature), float(temperature)
    if not T_next < T_k * (1 + 1e-9):
        log.warning("anneal: target %g is not colder than the model's %g", T_next, T_k)
    prev_total, rung_in = 0, None
    if samples_in is not None:
        prev_total = int(samples_in.attrs["n_energy_evals_total"])
        rung_in = samples_in.attrs.get("rung")
        if not math.isclose(samples_in.temperature, T_k, rel_tol=1e-6):
            raise PitaInputError(f"{samples_in_source}: attribute 'temperature' is {samples_in.temperature:g} but the "
                                 f"model {checkpoint} was trained at {T_k:g}")
    gamma = T_k / T_next
    L = float(getattr(model, "length_scale", system.length_scale))
    schedule = {k: getattr(settings, k) for k in ("sigma_min", "sigma_max", "rho") if getattr(settings, k) is not None}
    provenance = dict(step="anneal", settings=to_dict(settings), checkpoint=file_digest(checkpoint),
                      system=system.spec(), temperature=T_next, source_temperature=T_k)
    log.info("anneal: T %g -> %g (gamma %.4f), %d particles x %d steps on %s", T_k, T_next, gamma,
             settings.n_particles, settings.n_steps, device)
    # as in relax: a system without rotatable bonds (a cluster, a toy) makes none
    torsions, torsion_moves = None, torsion_cycles(system, settings.torsion_moves)
    if torsion_moves:
        from .torsions import TorsionMoves

        torsions = TorsionMoves.for_system(system)
    elif settings.torsion_moves:
        log.warning("anneal: torsion moves asked for, but %s has no rotatable bond: none made", system.name)
    res = fk_anneal(model, gamma, settings.n_particles, settings.n_steps, divergence_method=settings.divergence,
                    n_probes=settings.probes, probe=settings.probe, resample_threshold=settings.resample_threshold,
                    stop_resample_sigma=settings.stop_resample_sigma, weights=settings.weights,
                    mala_steps=settings.mala_steps, leapfrog_steps=settings.leapfrog_steps,
                    gamma_path=settings.gamma_path, temper_ess=settings.temper_ess,
                    temper_mala_steps=settings.temper_mala_steps, temper_max_levels=settings.temper_max_levels,
                    level_ess=settings.level_ess, torsions=torsions, torsion_moves=torsion_moves,
                    torsion_sigma_max=settings.torsion_sigma_max, drift=settings.drift,
                    noise_scale=settings.noise_scale, score_source=settings.score_source,
                    time_derivative=settings.time_derivative, batch_size=settings.batch_size, system=system,
                    temperature=T_next, length_scale=L, fix_chirality=settings.chirality_fix,
                    compute_forces=settings.forces, seed=seed, device=device, progress=progress, **schedule)
    if len(res.log_weight) == 0:
        raise PitaInputError(f"{checkpoint}: no particle survived the annealing (all NaN/inf or wrong chirality)")
    total = prev_total + int(res.n_energy_evals)
    diagnostics = res.diagnostics()
    diagnostics.update(source_temperature=T_k, temperature=T_next, gamma=gamma, n_energy_evals_total=total)
    if samples_in is not None:
        # the trivial proposal a learned model must beat: rung k's own samples reweighted to T_{k+1}
        diagnostics["ess_reweight_previous_fraction"] = reweighting_ess_fraction(samples_in, system, T_next)
    lineages = res.genealogy()
    if lineages:
        # a large final ESS from a handful of lineages still stands for a handful of draws
        level = logging.WARNING if lineages["ess_ancestors"] < 10 else logging.INFO
        log.log(level, "anneal: the %d particles descend from %d initial particle(s); ESS over lineages %.1f",
                len(res.log_weight), lineages["n_ancestors"], lineages["ess_ancestors"])
    attrs = base_attrs("anneal", provenance, seed)
    if rung is None:
        rung = int(rung_in) + 1 if rung_in is not None else -1
    attrs.update(system=system.name, **system_identity(system), temperature=T_next, units=system.units,
                 length_scale=L, rung=rung,
                 n_energy_evals=int(res.n_energy_evals), n_energy_evals_total=total,
                 source_temperature=T_k, gamma=gamma, sigma_min=float(res.settings["sigma_min"]),
                 ess=float(res.ess_final), ess_fraction=float(res.ess_final / len(res.log_weight)),
                 n_mirrored=res.n_mirrored, n_dropped_chirality=res.n_dropped_chirality,
                 n_dropped_nonfinite=res.n_dropped_nonfinite, n_resamples=res.n_resamples,
                 wall_time_s=float(res.wall_time_s), checkpoint=str(checkpoint),
                 ess_path_fraction=float(res.ess_path / len(res.log_weight)), **lineages)
    extra = {
        "ess_trace": np.asarray(res.ess_trace, dtype=np.float64),
        "sigmas": np.asarray(res.sigmas, dtype=np.float64),
        "resample_steps": np.asarray(res.resample_steps, dtype=np.int64),
        "log_weight_path": np.asarray(res.log_weight_path, dtype=np.float64),
        "model_energy": np.asarray(res.model_energy, dtype=np.float64),
    }
    if res.ancestor is not None:  # the initial particle each one descends from
        extra["ancestor"] = np.asarray(res.ancestor, dtype=np.int64)
    out = SampleSet(positions=res.positions.detach().cpu().numpy().astype(np.float32),
                    energy=np.asarray(res.energy, dtype=np.float64), attrs=attrs,
                    forces=None if res.forces is None else res.forces.detach().cpu().numpy().astype(np.float32),
                    log_weight=np.asarray(res.log_weight, dtype=np.float64), extra=extra)
    return out, diagnostics


def reweighting_ess_fraction(samples: SampleSet, system: Any, temperature: float) -> float:
    """ESS/N of importance-reweighting a set at T_k to `temperature`: log w = -(1/kT - 1/kT_k) U
    (times the set's own weights, if any)."""
    from .weights import ess

    lw = -(1.0 / system.kT(temperature) - 1.0 / system.kT(samples.temperature)) * np.asarray(samples.energy, float)
    if samples.log_weight is not None:
        lw = lw + samples.log_weight
    return float(ess(lw) / len(samples))


# ---------------------------------------------------------------------------------------------
# relax
# ---------------------------------------------------------------------------------------------
#: attributes of the weighted input that describe the anneal, not the relaxed output
_ANNEAL_ONLY_ATTRS = ("ess", "ess_fraction", "n_resamples", "wall_time_s", "checkpoint", "n_mirrored",
                      "n_dropped_chirality", "n_dropped_nonfinite", "gamma", "source_temperature", "sigma_min")


def relax(samples: SampleSet, system: Any, temperature: float, settings: RelaxSettings, *, model: Any = None,
          source: str = "--samples", seed: int = 0, device: Any = "cpu", rung: int | None = None
          ) -> tuple[SampleSet, dict]:
    """Resample a weighted set by its weights (bridging from the model's density when its ESS is
    tiny) and move every particle at `temperature` with the true forces: an unweighted set."""
    from .provenance import base_attrs, system_identity
    from .relax import model_potential
    from .relax import relax as relax_samples

    phi0_fn, A = None, None
    if model is not None and settings.bridge != "never":
        gamma = float(samples.attrs.get("gamma", float(model.temperature) / temperature))
        sigma_min = float(samples.attrs.get("sigma_min", model.sigma_min))
        n_atoms = model.n_atoms if model.mean_free else None
        phi0_fn = model_potential(model, gamma, sigma_min, float(samples.attrs.get("length_scale", model.length_scale)),
                                  n_atoms, settings.batch_size)
        # the bridge's start weights w.r.t. pi_0 at the particles' current (possibly mirrored) positions
        # are recovered from the final log-weights (A = log w + U/kT - phi0(x)): the stored path weight
        # belongs to the configuration before mirroring, where a non-invariant E differs
    elif settings.bridge == "always":
        raise PitaInputError("--bridge always: needs --checkpoint, the model that produced the weighted set")
    provenance = dict(step="relax", settings=to_dict(settings), system=system.spec(), temperature=temperature,
                      input_digest=samples.attrs.get("config_digest"))
    attrs = base_attrs("relax", provenance, seed)
    attrs.update(system=system.name, **system_identity(system), units=system.units,
                 length_scale=float(samples.attrs["length_scale"]),
                 rung=rung if rung is not None else samples.attrs.get("rung", -1))
    samples = samples.subset(np.arange(len(samples)))
    for key in _ANNEAL_ONLY_ATTRS:
        samples.attrs.pop(key, None)
    res = relax_samples(samples, system, temperature, method=settings.method, n_steps=settings.n_steps,
                        step_size=settings.step_size, n_burnin=settings.burn_in, friction=settings.friction_per_ps,
                        bridge_mode=settings.bridge, bridge_ess_threshold=settings.bridge_ess_threshold,
                        bridge_mala_steps=settings.bridge_mala_steps, phi0_fn=phi0_fn, log_weight_path=A,
                        n_out=settings.n_out, batch_size=settings.batch_size, seed=seed,
                        torsion_moves=settings.torsion_moves,
                        torsion_max_angle=math.radians(settings.torsion_max_angle_deg), device=device,
                        lineage=samples.lineage(), attrs=attrs)
    _keep_data_enantiomer(res, system)
    if len(res.samples) == 0:
        raise PitaInputError(f"{source}: no finite configuration left after relaxation")
    res.samples.attrs["input_ess"] = float(res.diagnostics["ess_in"])
    return res.samples, res.diagnostics


def _keep_data_enantiomer(res: Any, system: Any) -> None:
    """The force field cannot tell L from D, so moves at high T (or from poor starts) can invert a
    centre: before the next rung trains on this set, mirror the particles that a mirror fixes
    (U is mirror symmetric, F(-x) = -F(x)) and drop the rest, counting both."""
    if getattr(system, "topology", None) is None or getattr(system, "reference_positions", None) is None:
        return
    from .chirality import ChiralityChecker

    checker = ChiralityChecker.from_system(system)
    if checker.n_centers == 0:
        return
    s = res.samples
    wrong = ~np.asarray(checker.is_correct(s.positions))
    fixed, keep, n_mirrored, n_dropped = checker.fix(s.positions)
    if s.forces is not None:
        s.forces = np.where(wrong[:, None, None], -s.forces, s.forces)
    s.positions = np.asarray(fixed, dtype=np.float32)
    res.samples = s.subset(np.nonzero(np.asarray(keep))[0])
    res.samples.attrs["relax_n_mirrored"] = int(n_mirrored)
    res.samples.attrs["relax_n_dropped_chirality"] = int(n_dropped)
    res.diagnostics["n_mirrored_after_moves"] = int(n_mirrored)
    res.diagnostics["n_dropped_chirality_after_moves"] = int(n_dropped)
    if n_mirrored or n_dropped:
        log.warning("relax: %d sample(s) ended in the mirror enantiomer (mirrored back), %d with mixed chirality "
                    "(dropped)", n_mirrored, n_dropped)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def evaluate(samples: SampleSet, reference_set: SampleSet, system: Any, settings: EvaluateSettings,
             out_dir: str | Path, *, metrics_path: str | Path | None = None, seed: int = 0,
             samples_path: str = "<samples>", reference_path: str = "<reference>", method: str | None = None,
             extra: dict | None = None, cross_check: SampleSet | None = None,
             cross_check_path: str | None = None, basin_reference: dict | None = None,
             basin_reference_path: str | None = None, plots_dir: str | Path | None = None) -> dict:
    """Metrics of `samples` against `reference_set` at the same temperature (+ plots in out_dir);
    `extra` (the ESS and model-fidelity numbers of the steps that made the samples) is added;
    `cross_check`: a second reference, its metrics under `cross_check`; `basin_reference`:
    basin free energies (`pita umbrella --combine`), the differences under `basin_reference`."""
    from .evaluate import evaluate as evaluate_sets

    return evaluate_sets(samples, reference_set, system, out_dir, metrics_path=metrics_path, plots=settings.plots,
                         seed=seed, samples_path=samples_path, reference_path=reference_path, method=method,
                         ot_max_n=settings.max_samples, distance_max_n=settings.distance_max_samples,
                         tica_lag_frames=settings.tica_lag_frames, tica_lag_ps=settings.tica_lag_ps,
                         n_blocks=settings.blocks, bootstrap=settings.bootstrap_replicates,
                         bootstrap_ot_samples=settings.bootstrap_ot_samples, extra=extra, cross_check=cross_check,
                         cross_check_path=cross_check_path, basin_reference=basin_reference,
                         basin_reference_path=basin_reference_path, plots_dir=plots_dir)


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------
def baseline(method: str, system: Any, temperatures: Sequence[float], settings: BaselineSettings, budget: Any, *,
             seed: int = 0, device: str | None = None, progress: bool | None = None,
             seed_set: SampleSet | None = None, relax: Sequence[RelaxSettings] | RelaxSettings | None = None,
             seed_source: str = "--seed-set", pre_relaxation: list | None = None) -> SampleSet:
    """Plain MD at the target, replica exchange across the ladder, or smc (model-free
    adaptive-tempering SMC from `seed_set`, the PITA run's rung-0 set at T_0, with the relax
    settings `relax` of each rung 1..K: see `smc_relax_settings`), within `budget` evaluations.
    smc's final bridged set, before its relaxation, is appended to `pre_relaxation` if given."""
    import dataclasses

    from .baselines import run_baseline, run_smc
    from .settings import from_mapping

    if method == "smc":
        if seed_set is None:
            raise PitaInputError(f"{seed_source}: smc starts from the PITA run's rung-0 set at T_0; give it")
        n_rungs = len(temperatures) - 1
        if relax is None or isinstance(relax, RelaxSettings):
            relax = [relax or RelaxSettings()] * max(n_rungs, 0)
        relax = list(relax)
        if settings.smc_relax:
            over = from_mapping(RelaxSettings, settings.smc_relax, "baselines", prefix="smc_relax.")
            given = {k: getattr(over, k) for k in settings.smc_relax}
            relax = [dataclasses.replace(r, **given) for r in relax]
        kernels = [smc_kernel(r) for r in relax]
        config = {"method": "smc", "settings": to_dict(settings), "relax": [to_dict(r) for r in relax],
                  "system": system.spec(), "temperatures": [float(t) for t in temperatures],
                  "budget": int(budget.total), "seed_set": seed_set.attrs.get("config_digest"),
                  "seed_set_total": int(seed_set.attrs.get("n_energy_evals_total", 0))}
        out = run_smc(system, list(temperatures), settings.n_samples, budget, seed_set, kernels=kernels,
                      ess_fraction=settings.smc_ess_fraction, max_levels=settings.smc_max_levels,
                      max_particles=settings.smc_max_particles, min_particles=settings.smc_min_particles,
                      spend_leftover=settings.smc_spend_leftover, device=device, seed=seed, progress=progress,
                      config=config, seed_source=seed_source, pre_relaxation=pre_relaxation)
        out.attrs["smc_relax_settings"] = [to_dict(r) for r in relax]
        for pre in pre_relaxation or []:
            pre.attrs["smc_relax_settings"] = out.attrs["smc_relax_settings"]
        return out
    kw = dict(walkers_per_temperature=settings.replicas_per_temperature, timestep=md_timestep(system, settings),
              friction=settings.friction_per_ps, minimize=settings.minimize, minimize_steps=settings.minimize_steps,
              engine=settings.engine, platform=None if settings.platform == "auto" else settings.platform,
              device=device, dtype=settings.dtype, seed=seed, progress=progress)
    if method == "replica_exchange":
        kw["swap_every"] = settings.swap_every
    return run_baseline(method, system, list(temperatures), settings.n_samples, budget, **kw)


def smc_kernel(settings: RelaxSettings) -> Any:
    """The smc baseline's moves at one rung from that rung's relax settings (n_out, bridge and
    bridge_ess_threshold do not apply: the baseline plans its sizes and always bridges)."""
    from .baselines import SmcKernel

    return SmcKernel(method=settings.method, n_steps=settings.n_steps, torsion_moves=settings.torsion_moves,
                     bridge_mala_steps=settings.bridge_mala_steps, step_size=settings.step_size,
                     n_burnin=settings.burn_in, friction=settings.friction_per_ps, batch_size=settings.batch_size,
                     torsion_max_angle=math.radians(settings.torsion_max_angle_deg))


def rung_sections(cls: Any, data: Any, n_rungs: int, source: str) -> list:
    """Settings of class `cls` for rungs 1..n_rungs from `data`: None (the defaults at every
    rung), one mapping of settings (every rung), or a mapping rung index -> settings naming every
    rung 1..n_rungs ({"1": {...}, "2": {...}}, as the workflow passes a section per rung with the
    per-rung overrides resolved)."""
    from .settings import from_mapping

    what = cls.__name__.removesuffix("Settings").lower()
    if data is None:
        return [cls()] * n_rungs
    if not isinstance(data, dict):
        raise PitaInputError(f"{source}: expected a JSON object ({what} settings, or rung index -> {what} settings)")
    rung_keys = [k for k in data if isinstance(k, str) and k.isdigit()]
    if not rung_keys:
        return [from_mapping(cls, data, source)] * n_rungs
    if len(rung_keys) != len(data):
        other = next(k for k in data if k not in rung_keys)
        raise PitaInputError(f"{source}: mixes rung indices and settings (key {other!r}); give either {what} "
                             f"settings or rung index -> {what} settings")
    want = {str(k) for k in range(1, n_rungs + 1)}
    if set(rung_keys) != want:
        missing, unknown = sorted(want - set(rung_keys), key=int), sorted(set(rung_keys) - want, key=int)
        problem = (f"rung(s) {', '.join(missing)} missing" if missing else
                   f"rung(s) {', '.join(unknown)} not on the ladder")
        raise PitaInputError(f"{source}: needs the {what} settings of every rung 1..{n_rungs}: {problem}")
    return [from_mapping(cls, data[str(k)], source, prefix=f"{k}.") for k in range(1, n_rungs + 1)]


def smc_relax_settings(data: Any, n_rungs: int, source: str = "--relax-json") -> list[RelaxSettings]:
    """The relax settings of rungs 1..n_rungs for the smc baseline (`rung_sections`)."""
    return rung_sections(RelaxSettings, data, n_rungs, source)


__all__ = ["seed", "reference", "train", "anneal", "relax", "evaluate", "baseline", "md_timestep", "smc_kernel",
           "smc_relax_settings", "rung_sections"]
