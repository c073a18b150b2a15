"""Typed settings of every step, declared once.

Each step of the method has one settings class (a frozen dataclass) whose fields hold the
names, types, bounds, defaults and help texts of its settings:

    MDSettings (config `md_seed`), ReferenceSettings (`reference`), TrainSettings (`train`),
    AnnealSettings (`anneal`), RelaxSettings (`relax`), EvaluateSettings (`evaluate`),
    BaselineSettings (`baselines`)

Everything else derives from them:
  * `from_mapping` turns a config section or a `--config-json` object into settings, refusing
    unknown keys, wrong types and out-of-range values with one line naming the field;
  * `add_arguments` gives a command its options (`--n-particles`, ...) with help and default;
  * `json_schema()` writes workflow/schemas/config.schema.yaml (`python -m pita.settings`;
    a test fails when the committed schema differs from the generated one).
Bounds on counts are also size bounds: nothing allocates a billion particles because of a typo.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PitaInputError, brief, finite_number

#: largest count of samples / particles / outputs a step accepts (a size bound before allocation)
MAX_COUNT = 10_000_000
#: largest number of steps of any loop
MAX_STEPS = 100_000_000
#: seeds are derived per rung and step (seed + 1000 k + c): keep them well inside 32 bits
MAX_SEED = 2**31 - 1


def setting(default: Any = None, help: str = "", *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: tuple | None = None,
            cli: bool = True, factory: Any = None) -> Any:
    """A dataclass field carrying what the schema, the CLI and the checks need to know."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# the steps' settings
# ---------------------------------------------------------------------------------------------
ENGINES = ("auto", "openmm", "torch")
PLATFORMS = ("auto", "Reference", "CPU", "CUDA", "OpenCL")
PRECISIONS = ("mixed", "float64", "float32")


@dataclass(frozen=True)
class MDSettings:
    """Langevin MD at one temperature (`pita md`; config sections md_seed and reference)."""

    n_samples: int = setting(10000, "samples to write", ge=1, le=MAX_COUNT)
    replicas: int | None = setting(None, "parallel replicas (torch) or independent trajectories (openmm); "
                                         "default: 64 torch replicas on CPU, 1024 on CUDA, 1 OpenMM trajectory",
                                   ge=1, le=1_000_000)
    stride_steps: int | None = setting(None, "steps between saved frames (default: 1000 for molecules, 200 in "
                                             "reduced units)", ge=1, le=MAX_STEPS)
    equilibration_steps: int | None = setting(None, "steps before the first saved frame, per replica (default: "
                                                    "10000 for molecules, 2000 in reduced units)", ge=0, le=MAX_STEPS)
    timestep_fs: float = setting(1.0, "timestep in femtoseconds (molecules; ignored for reduced-unit systems)",
                                 gt=0, le=10)
    timestep: float | None = setting(None, "timestep in the system's time unit (reduced units for Lennard-Jones); "
                                           "overrides timestep_fs", gt=0, le=1)
    friction_per_ps: float = setting(1.0, "Langevin friction, 1/ps (1/reduced time unit)", gt=0, le=1e4)
    engine: str = setting("auto", "MD engine (auto: torch on CUDA or for 64+ replicas, else OpenMM for molecules)",
                          choices=ENGINES)
    minimize: bool = setting(True, "energy-minimise the starting structure(s) first")
    minimize_steps: int = setting(500, "maximum minimiser iterations", ge=0, le=1_000_000)
    platform: str = setting("auto", "OpenMM platform (auto: CUDA with a CUDA device, else Reference)",
                            choices=PLATFORMS)
    dtype: str = setting("mixed", "torch engine precision (mixed: float64 state, float32 forces)", choices=PRECISIONS)


@dataclass(frozen=True)
class ReferenceSettings(MDSettings):
    """Reference MD for evaluation (`pita reference`; config section reference)."""

    files: dict = setting(None, "temperature (as written in temperatures) -> existing sample set to use "
                                "instead of running MD", factory=dict, cli=False)
    cross_check: dict = setting(None, "temperature -> a second reference set the same samples are also evaluated "
                                      "against (metrics.json's cross_check; a table in the report)",
                                factory=dict, cli=False)
    basin_free_energies: dict = setting(None, "temperature -> basin free energies known to a small error "
                                              "(`pita umbrella --combine` JSON) every set at that temperature is "
                                              "compared with (metrics.json's basin_reference; a table in the report)",
                                        factory=dict, cli=False)


#: the networks pita.models builds (pairnet: the invariant energy over interatomic distances)
BACKBONES = ("mlp", "transformer", "egnn", "pairnet")


@dataclass(frozen=True)
class ModelSettings:
    backbone: str = setting("mlp", "network of the score and energy models", choices=BACKBONES)
    backbone_options: dict | None = setting(None, "options of the backbone (default: the backbone's own)")
    beta_conditioning: bool = setting(False, "condition on ln(T_ref/T) (needed to train on several rungs' sets)")
    score_source: str = setting("score", "field PitaModel.score returns: the score network or -grad E",
                                choices=("score", "energy"))


@dataclass(frozen=True)
class ScheduleSettings:
    sigma_min: float = setting(0.01, "smallest noise level (normalised units)", gt=0, le=1)
    sigma_max: float | None = setting(None, "largest noise level (default: 2 max|x~| of the data)", gt=0, le=1e4)
    rho: float = setting(7.0, "EDM schedule exponent", gt=0, le=100)


@dataclass(frozen=True)
class SigmaSamplingSettings:
    lognormal_mean: float = setting(-1.2, "mean of ln sigma of EDM's log-normal part", ge=-20, le=20)
    lognormal_std: float = setting(1.2, "std of ln sigma of EDM's log-normal part", gt=0, le=20)
    loguniform_fraction: float = setting(0.5, "share of noise levels drawn log-uniformly on [sigma_min, sigma_max]",
                                         ge=0, le=1)


@dataclass(frozen=True)
class LossWeights:
    denoising_score_matching: float = setting(1.0, "weight of denoising score matching", ge=0, le=1e6)
    energy_distillation: float = setting(1.0, "weight of the energy distillation (-grad E onto the score)", ge=0, le=1e6)
    energy_matching: float = setting(1.0, "weight of energy matching E(x, sigma_min) ~ U/kT", ge=0, le=1e6)
    target_score: float = setting(0.01, "weight of the target-score term at small sigma", ge=0, le=1e6)
    force_matching: float = setting(0.0, "weight of force matching grad E(x, sigma_min) ~ grad U/kT at the data "
                                         "(the samples' stored forces)", ge=0, le=1e6)
    heat_equation: float = setting(0.0, "weight of the heat-equation residual: the spread over x, at fixed sigma, "
                                        "of sigma^2 (dE/dtau - (laplacian E - |grad E|^2)/2), which is the FK "
                                        "log-weight rate at gamma 1 (two Hutchinson probes)", ge=0, le=1e6)


@dataclass(frozen=True)
class TrainSettings:
    """Score and energy models of one rung (`pita train`; config section train)."""

    model: ModelSettings = setting(None, "networks", factory=ModelSettings)
    schedule: ScheduleSettings = setting(None, "noise schedule", factory=ScheduleSettings)
    sigma_sampling: SigmaSamplingSettings = setting(None, "noise levels for training", factory=SigmaSamplingSettings)
    loss_weights: LossWeights = setting(None, "loss weights", factory=LossWeights)
    target_score_max_sigma: float = setting(0.2, "target-score term only below this sigma", ge=0, le=1e4)
    heat_equation_groups: int = setting(8, "heat-equation residual: noise levels per step (log-uniform on "
                                           "[sigma_min, sigma_max])", ge=1, le=100_000)
    heat_equation_group_size: int = setting(16, "heat-equation residual: samples sharing each noise level",
                                            ge=2, le=100_000)
    steps: int = setting(5000, "optimiser steps", ge=1, le=MAX_STEPS)
    batch_size: int = setting(256, "samples per step", ge=1, le=1_000_000)
    lr: float = setting(1e-3, "Adam learning rate", gt=0, le=10)
    lr_warmup_steps: int = setting(100, "linear learning-rate warm-up", ge=0, le=MAX_STEPS)
    weight_decay: float = setting(0.0, "Adam weight decay", ge=0, le=10)
    grad_clip: float = setting(1.0, "gradient-norm clipping", gt=0, le=1e6)
    ema_decay: float = setting(0.999, "decay of the EMA weights used for sampling", ge=0, lt=1)
    random_rotations: bool = setting(True, "random proper rotations of particle systems (when not aligned)")
    align: str = setting("none", "none: random proper rotations for non-invariant backbones (exact weights: the "
                                 "model learns the rotation-uniform density); reference/auto: Kabsch-align molecules "
                                 "to the reference structure (auto: unless the backbone is invariant), which confines "
                                 "the model to one frame and gives the final weights a chi-square(3)/2 tail",
                         choices=("auto", "reference", "none"))
    duplicates: str = setting("drop", "identical samples: drop, or count as a weight", choices=("drop", "count"))
    log_every: int = setting(10, "steps between loss records", ge=1, le=MAX_STEPS)
    checkpoint_every: int = setting(500, "steps between resumable states", ge=1, le=MAX_STEPS)
    holdout_fraction: float = setting(0.1, "share of the rung's set kept out of training to measure the model's "
                                            "fidelity (0: none)", ge=0, le=0.5)
    fidelity_samples: int = setting(256, "samples the model generates at gamma = 1 for the fidelity report (0: "
                                         "none; one true energy each, counted apart)", ge=0, le=100_000)
    fidelity_steps: int = setting(100, "integration steps of those samples", ge=1, le=100_000)
    warm_start: bool = setting(True, "workflow: start rung k from rung k-1's checkpoint", cli=False)


#: training settings that do not change the result (left out of the resume digest)
TRAIN_RUN_CONTROLS = ("checkpoint_every", "warm_start", "fidelity_samples", "fidelity_steps")


@dataclass(frozen=True)
class AnnealSettings:
    """FK-SMC from rung k's model to T_{k+1} (`pita anneal`; config section anneal)."""

    n_particles: int = setting(1000, "particles", ge=1, le=MAX_COUNT)
    n_steps: int = setting(200, "integration steps from sigma_max to sigma_min", ge=1, le=1_000_000)
    resample_threshold: float = setting(0.5, "resample when ESS/N falls below this (1: every step; 0: never)",
                                        ge=0, le=1)
    stop_resample_sigma: float = setting(0.0, "no resampling below this sigma (weights keep accumulating)",
                                         ge=0, le=1e4)
    divergence: str = setting("exact", "divergence of the drift: exact Jacobian trace or Hutchinson estimate",
                              choices=("exact", "hutchinson"))
    probes: int = setting(1, "Hutchinson probes per step", ge=1, le=1000)
    probe: str = setting("rademacher", "Hutchinson probe distribution", choices=("rademacher", "gaussian"))
    weights: str = setting("continuous", "continuous FK rate, the exact discrete-time step weights, or ais: "
                                         "annealed importance weights with MALA moves on each level (exact for "
                                         "any model)", choices=("continuous", "discrete", "ais"))
    mala_steps: int = setting(1, "weights ais: MALA steps per level on the model's density (no energy "
                                 "evaluations)", ge=0, le=10_000)
    leapfrog_steps: int = setting(1, "moves on the model's density (weights ais, tempering levels): 1 = MALA; "
                                     "L > 1 = HMC with L leapfrog steps per move (L network passes; a trajectory "
                                     "travels ~L steps where L Langevin steps diffuse ~sqrt(L))", ge=1, le=10_000)
    level_ess: float = setting(0.0, "weights ais: where a step of the n_steps grid would drop the conditional "
                                    "ESS/N of the level's increments below this, the level stops where it equals "
                                    "it (more levels and moves where the targets change fastest; at most "
                                    "4 n_steps levels); 0: the grid as is", ge=0, lt=1)
    torsion_moves: int = setting(0, "Metropolis rotations about rotatable bonds per particle on each level of "
                                    "weights ais (and each tempering level) whose sigma is at most "
                                    "torsion_sigma_max, on the model's density (exact; molecules; network passes "
                                    "only): they carry particles between basins within a level", ge=0, le=10_000)
    torsion_sigma_max: float = setting(2.0, "torsion_moves act on the levels with sigma at most this "
                                            "(normalised units; above it the molecule is noise)", gt=0, le=1e4)
    gamma_path: str = setting("constant", "where gamma acts: constant (the target exp(-gamma E(x, sigma)) at every "
                                          "sigma), or temper_at_sigma_min (the model's own diffusion, gamma 1, down to "
                                          "sigma_min, then resample-move tempering of exp(-gamma' E(x, sigma_min)) "
                                          "from 1 to gamma; keeps the basin masses the model learned while basins "
                                          "separate)", choices=("constant", "temper_at_sigma_min"))
    temper_ess: float = setting(0.5, "gamma_path temper_at_sigma_min: each level's conditional ESS/N", gt=0, lt=1)
    temper_mala_steps: int = setting(32, "gamma_path temper_at_sigma_min: MALA steps on the model's density per "
                                         "level (no energy evaluations)", ge=0, le=100_000)
    temper_max_levels: int = setting(100, "gamma_path temper_at_sigma_min: at most this many levels (the last "
                                          "jumps to gamma)", ge=1, le=100_000)
    drift: str = setting("pita", "pita: u = gamma (g^2/2)(s - grad E); tempered: exact for Gaussians, lower "
                                 "weight variance", choices=("pita", "tempered", "score", "energy"))
    noise_scale: float | None = setting(None, "noise L g instead of g (default: 1, gamma^-1/2 for the tempered "
                                              "drift)", gt=0, le=100)
    score_source: str = setting("score", "score field of the drift: the score network or -grad E",
                                choices=("score", "energy"))
    time_derivative: str = setting("finite_difference", "dE/dt by finite difference or autograd",
                                   choices=("finite_difference", "autograd"))
    sigma_min: float | None = setting(None, "override the model's sigma_min", gt=0, le=1e4)
    sigma_max: float | None = setting(None, "override the model's sigma_max", gt=0, le=1e4)
    rho: float | None = setting(None, "override the model's schedule exponent", gt=0, le=100)
    batch_size: int = setting(4096, "particles per network pass", ge=1, le=MAX_COUNT)
    forces: bool = setting(False, "also store the true forces of every particle")
    chirality_fix: bool = setting(True, "mirror particles of the wrong enantiomer before the final correction")


@dataclass(frozen=True)
class RelaxSettings:
    """Resample (or bridge) and move at T_k (`pita relax`; config section relax)."""

    method: str = setting("mala", "mala (exact) or langevin (BAOAB)", choices=("mala", "langevin"))
    n_steps: int = setting(200, "MALA or Langevin steps per particle", ge=0, le=MAX_STEPS)
    step_size: float | None = setting(None, "MALA initial step size (position units^2) or Langevin timestep "
                                            "(default: per system)", gt=0, le=1)
    burn_in: int | None = setting(None, "MALA steps with step-size adaptation (default: n_steps / 2)",
                                  ge=0, le=MAX_STEPS)
    friction_per_ps: float = setting(1.0, "Langevin friction (1/ps)", ge=0, le=1e4)
    bridge: str = setting("auto", "resample-move bridge from the model's density: auto runs it when the ESS "
                                  "is tiny", choices=("auto", "never", "always"))
    bridge_ess_threshold: float = setting(0.01, "with bridge auto: bridge when ESS/N is below this", ge=0, le=1)
    bridge_mala_steps: int = setting(10, "MALA steps per bridge level", ge=0, le=1_000_000)
    n_out: int | None = setting(None, "samples written (default: as many as the input set)", ge=1, le=MAX_COUNT)
    batch_size: int | None = setting(None, "configurations per energy call (default: all)", ge=1, le=MAX_COUNT)
    torsion_moves: int = setting(0, "Metropolis rotations about rotatable bonds per particle (molecules; exact), "
                                    "interleaved with the steps after burn-in", ge=0, le=MAX_STEPS)
    torsion_max_angle_deg: float = setting(180.0, "torsion moves draw the angle from U(-a, a)", gt=0, le=180)


@dataclass(frozen=True)
class EvaluateSettings:
    """Metrics against reference MD at the same temperature (`pita evaluate`; config section evaluate)."""

    max_samples: int = setting(5000, "support points per set for exact 2-D optimal transport", ge=10, le=100_000)
    distance_max_samples: int = setting(5000, "frames per set for the pairwise-distance W2", ge=10, le=1_000_000)
    tica_lag_frames: int = setting(10, "TICA lag in frames of the reference trajectories", ge=1, le=1_000_000)
    tica_lag_ps: float | None = setting(None, "TICA lag in ps (needs time_ps in the reference); overrides "
                                              "tica_lag_frames", gt=0, le=1e9)
    blocks: int = setting(10, "blocks for the reference's error bars (and a time-correlated set's statistical "
                               "inefficiency in the bootstrap)", ge=2, le=10_000)
    bootstrap_replicates: int = setting(100, "bootstrap replicates per set for the standard error of every metric "
                                             "(<metric>_se; 0: none)", ge=0, le=100_000)
    bootstrap_ot_samples: int = setting(500, "frames per bootstrap replicate for the optimal-transport metrics (torus, "
                                             "TICA, distance W2; m-out-of-n, scaled to the estimate's size)",
                                        ge=10, le=100_000)
    plots: bool = setting(True, "write the PNG plots")


@dataclass(frozen=True)
class BaselineSettings:
    """Baselines at the PITA run's evaluation budget (`pita baseline`; config section baselines)."""

    enabled: bool = setting(False, "workflow: run the baselines and show them in the report", cli=False)
    methods: list = setting(None, "workflow: which baselines", factory=lambda: ["md", "replica_exchange", "smc"],
                            cli=False)
    budget: str = setting("planned", "workflow: the budget the baselines get: planned (from the PITA run's settings "
                                     "by `pita budget`; the baselines run beside PITA; exact unless a relaxation "
                                     "bridges or particles are dropped, which the report shows) or spent (the "
                                     "final rung's total; they wait for the whole run)",
                          choices=("planned", "spent"), cli=False)
    replicas_per_temperature: int = setting(16, "replica exchange: walkers per temperature; plain MD runs this many "
                                                "x len(temperatures) walkers at the target", ge=1, le=1_000_000)
    swap_every: int = setting(50, "replica exchange: steps between swap attempts", ge=1, le=MAX_STEPS)
    n_samples: int = setting(5000, "samples written at the target temperature", ge=1, le=MAX_COUNT)
    equilibration_fraction: float = setting(0.2, "share of the budget spent before the first saved frame",
                                            ge=0, lt=1)
    timestep_fs: float = setting(1.0, "timestep in femtoseconds (molecules)", gt=0, le=10)
    timestep: float | None = setting(None, "timestep in reduced time (Lennard-Jones); overrides timestep_fs",
                                     gt=0, le=1)
    friction_per_ps: float = setting(1.0, "Langevin friction, 1/ps", gt=0, le=1e4)
    engine: str = setting("auto", "plain MD's engine; replica exchange always runs batched torch", choices=ENGINES)
    platform: str = setting("auto", "OpenMM platform", choices=PLATFORMS)
    minimize: bool = setting(True, "minimise the starting structure (counted in the budget)")
    minimize_steps: int = setting(500, "maximum minimiser iterations", ge=0, le=1_000_000)
    dtype: str = setting("mixed", "torch precision", choices=PRECISIONS)
    smc_max_particles: int | None = setting(None, "smc: particles per rung at most (default: as many as the budget "
                                                  "pays for)", ge=1, le=MAX_COUNT)
    smc_min_particles: int = setting(100, "smc: refuse a budget that cannot pay this many particles per rung",
                                     ge=1, le=MAX_COUNT)
    smc_ess_fraction: float = setting(0.5, "smc: each bridge level keeps the incremental ESS/N at this fraction",
                                      gt=0, lt=1)
    smc_max_levels: int = setting(50, "smc: bridge levels per rung at most (the last is forced to the rung's "
                                      "temperature)", ge=1, le=10_000)
    smc_spend_leftover: bool = setting(True, "smc: what the last bridge leaves of the budget goes to extra steps of "
                                             "the final relaxation")
    smc_relax: dict = setting(None, "smc: relax settings (the relax section's keys) applied over the PITA run's "
                                    "relax settings at every rung, e.g. {torsion_moves: 0} for MALA only",
                              factory=dict, cli=False)


@dataclass(frozen=True)
class ExportSettings:
    """Trajectories of the rungs' samples for VMD / PyMOL (`pita export`; config section export)."""

    enabled: bool = setting(True, "workflow: export the samples as trajectories with a PDB topology", cli=False)
    formats: list = setting(None, "workflow: trajectory formats, as file extensions (those `pita export` writes)",
                            factory=lambda: ["dcd"], cli=False)
    rungs: str = setting("final", "workflow: export the final rung only, or every rung", choices=("final", "all"),
                         cli=False)
    superpose: bool = setting(False, "workflow: align every frame onto the first (heavy atoms)", cli=False)


#: the most minutes a job may ask for (a week; partitions allow less: README "GPU and cluster")
MAX_RUNTIME_MIN = 7 * 24 * 60


@dataclass(frozen=True)
class JobResources:
    """What each job of one rule asks the scheduler for."""

    runtime: int = setting(60, "wall-clock limit per job, minutes (SLURM --time)", ge=1, le=MAX_RUNTIME_MIN)
    mem_mb: int = setting(4000, "memory per job, MB (SLURM --mem)", ge=100, le=4_000_000)


def _job(runtime: int, mem_mb: int, rule: str) -> Any:
    return setting(None, f"rule {rule}", factory=lambda: JobResources(runtime, mem_mb))


@dataclass(frozen=True)
class ResourceSettings:
    """Runtime and memory per rule (config section resources; defaults sized for config.yaml on a CPU)."""

    md_seed: JobResources = _job(120, 4000, "md_seed")
    reference_md: JobResources = _job(240, 4000, "reference_md")
    train: JobResources = _job(240, 8000, "train")
    anneal: JobResources = _job(120, 8000, "anneal")
    relax: JobResources = _job(120, 4000, "relax")
    evaluate: JobResources = _job(60, 4000, "evaluate")
    plan_budget: JobResources = _job(10, 2000, "plan_budget")
    baseline: JobResources = _job(240, 4000, "baseline")
    evaluate_baseline: JobResources = _job(60, 4000, "evaluate_baseline")
    report: JobResources = _job(10, 2000, "report")
    export: JobResources = _job(10, 2000, "export")


BASELINE_METHODS = ("md", "replica_exchange", "smc")
#: config section -> settings class; the order is the pipeline's
SECTIONS: dict[str, type] = {
    "md_seed": MDSettings, "reference": ReferenceSettings, "train": TrainSettings, "anneal": AnnealSettings,
    "relax": RelaxSettings, "evaluate": EvaluateSettings, "baselines": BaselineSettings, "export": ExportSettings,
    "resources": ResourceSettings,
}
#: per-rung overridable sections
RUNG_SECTIONS = ("md_seed", "reference", "train", "anneal", "relax", "evaluate")


# ---------------------------------------------------------------------------------------------
# mapping -> settings
# ---------------------------------------------------------------------------------------------
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(type, nullable) of an annotation such as `int | None`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _fail(source: str, name: str, problem: str) -> typing.NoReturn:
    if not source:  # a command-line option: "--n-particles: must be >= 1, got 0"
        raise PitaInputError(f"{name}: {problem}")
    raise PitaInputError(f"{source}: field '{name}': {problem}")


def _check_value(source: str, name: str, value: Any, hint: Any, meta: dict) -> Any:
    typ, nullable = _base_type(hint)
    if value is None:
        if nullable:
            return None
        _fail(source, name, "must not be null")
    if typ is bool:
        if not isinstance(value, bool):
            _fail(source, name, f"must be true or false, got {brief(value)}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(source, name, f"must be an integer, got {brief(value)}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(source, name, f"must be a number, got {brief(value)}")
        if not finite_number(value):
            _fail(source, name, f"must be a finite number, got {brief(value)}")
        value = float(value)
    elif typ is str:
        if not isinstance(value, str):
            _fail(source, name, f"must be a string, got {brief(value)}")
    elif typ is dict:
        if not isinstance(value, dict):
            _fail(source, name, f"must be a mapping, got {brief(value)}")
        return dict(value)
    elif typ is list:
        if not isinstance(value, list):
            _fail(source, name, f"must be a list, got {brief(value)}")
        return list(value)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        _fail(source, name, f"must be one of {', '.join(map(str, choices))}, got {brief(value)}")
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            _fail(source, name, f"must be {word} {bound:g}, got {brief(value)}")
    return value


#: keys that moved, with the hint the error gives
MOVED = {"backbone": "model.backbone", "options": "the train section itself (model, schedule, loss_weights, ...)",
         "friction": "friction_per_ps", "replicas": "replicas_per_temperature"}


def from_mapping(cls: type, data: Any, source: str, prefix: str = "", defaults: Any = None) -> Any:
    """Settings of class `cls` from a mapping: defaults (or `defaults`, an instance) updated by `data`.

    Unknown keys, wrong types and out-of-range values raise PitaInputError naming
    "<source>: field '<prefix><key>'".
    """
    if data is None:
        data = {}
    where = prefix.rstrip(".") or cls.__name__
    if not isinstance(data, dict):
        _fail(source, where, f"must be a mapping of settings, got {type(data).__name__}")
    fields, hints = _fields(cls), _hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            hint = f"; moved to {MOVED[key]}" if key in MOVED and key not in fields else ""
            known = ", ".join(sorted(fields))
            _fail(source, name, f"unknown setting{hint} (known: {known})")
        hint_type = hints[key]
        if dataclasses.is_dataclass(hint_type):
            # the field's own default (resources.train is 240 min, not JobResources()'s 60)
            base = getattr(defaults if defaults is not None else cls(), key)
            values[key] = from_mapping(hint_type, value, source, f"{name}.", base)
        else:
            values[key] = _check_value(source, name, value, hint_type, fields[key].metadata)
    base = defaults if defaults is not None else cls()
    return check_consistent(dataclasses.replace(base, **values), source, prefix)


def to_dict(settings: Any) -> dict:
    return dataclasses.asdict(settings)


def load_json_argument(text: str, option: str) -> Any:
    """`--config-json` / `--system`: inline JSON, or the name of a JSON file."""
    stripped = text.strip()
    source = option
    if not stripped.startswith(("{", "[", '"')):
        path = Path(stripped)
        if not path.is_file():
            raise PitaInputError(f"{option}: neither inline JSON nor an existing file: {text!r}")
        source = str(path)
        try:
            stripped = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise PitaInputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise PitaInputError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise PitaInputError(f"{source}: JSON nested too deeply to be a setting") from None


# ---------------------------------------------------------------------------------------------
# command-line options
# ---------------------------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One option per scalar setting of `cls` (dest = the setting's name, default None = unset),
    plus --config-json; the help shows each default."""
    group = parser.add_argument_group(title or f"settings ({cls.__doc__.splitlines()[0].rstrip('.')})")
    fields, hints = _fields(cls), _hints(cls)
    defaults = cls()
    for name, f in fields.items():
        if not f.metadata.get("cli", True) or dataclasses.is_dataclass(hints[name]):
            continue
        typ, _ = _base_type(hints[name])
        if typ in (dict, list):
            continue
        default = getattr(defaults, name)
        text = f.metadata.get("help", "")
        if not (default is None and "default" in text):
            text += f" (default: {'none' if default is None else default})"
        if typ is bool:
            group.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(_flag(name), dest=name, type=_cli_type(typ), default=None,
                               choices=f.metadata.get("choices"), metavar=None if f.metadata.get("choices") else
                               name.upper(), help=text)
    group.add_argument("--config-json", dest="config_json", metavar="JSON_OR_FILE",
                       help="the settings above as a JSON object (inline or a file; the config section's keys); "
                            "options given on the command line win")


def _cli_type(typ: type):
    if typ is int:
        def parse_int(text: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        return parse_int
    if typ is float:
        def parse_float(text: str) -> float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
            return value
        return parse_float
    return typ


def from_arguments(cls: type, args: argparse.Namespace, section: str | None = None) -> Any:
    """Settings from --config-json, then the options given on the command line (which win)."""
    data: dict = {}
    source = "--config-json"
    if getattr(args, "config_json", None):
        data = load_json_argument(args.config_json, "--config-json")
        if not isinstance(data, dict):
            raise PitaInputError("--config-json: expected a JSON object of settings")
    settings = from_mapping(cls, data, source, prefix=f"{section}." if section else "")
    given = {}
    fields = _fields(cls)
    for name in fields:
        value = getattr(args, name, None) if fields[name].metadata.get("cli", True) else None
        if value is not None:
            given[name] = value
    # options are checked with the same bounds, named by their flag
    for name, value in given.items():
        _check_value("", _flag(name), value, _hints(cls)[name], fields[name].metadata)
    return check_consistent(dataclasses.replace(settings, **given), source)


def check_consistent(settings: Any, source: str = "settings", prefix: str = "") -> Any:
    """Checks across fields of one step's settings."""
    if isinstance(settings, AnnealSettings):
        lo, hi = settings.sigma_min, settings.sigma_max
        if lo is not None and hi is not None and not lo < hi:
            _fail(source, f"{prefix}sigma_min", f"must be below sigma_max ({hi:g}), got {lo:g}")
        if settings.weights != "ais" and settings.gamma_path != "temper_at_sigma_min":
            # settings of the moves on the model's density, which only these two make
            for name, kind, off in (("leapfrog_steps", "HMC moves", 1), ("torsion_moves", "torsion moves", 0)):
                if getattr(settings, name) != off:
                    _fail(source, f"{prefix}{name}", f"{kind} need weights 'ais' or gamma_path 'temper_at_sigma_min' "
                                                     f"(no moves with '{settings.weights}'; set it to {off})")
        if settings.level_ess > 0 and settings.weights != "ais":
            _fail(source, f"{prefix}level_ess", f"refines the levels of weights 'ais' only, not "
                                                f"'{settings.weights}' (set it to 0)")
    if isinstance(settings, TrainSettings):
        s = settings.schedule
        if s.sigma_max is not None and not s.sigma_min < s.sigma_max:
            _fail(source, f"{prefix}schedule.sigma_max", f"must be above sigma_min ({s.sigma_min:g}), "
                                                         f"got {s.sigma_max:g}")
    return settings


def check_seed(seed: int, option: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise PitaInputError(f"{option}: must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return seed


# ---------------------------------------------------------------------------------------------
# JSON schema of config.yaml
# ---------------------------------------------------------------------------------------------
def _property_schema(hint: Any, f: dataclasses.Field, default: Any) -> dict:
    typ, nullable = _base_type(hint)
    meta = f.metadata
    if dataclasses.is_dataclass(typ):
        out = section_schema(typ, default)
        out["default"] = {}
        return out
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}[typ]
    out: dict[str, Any] = {"type": [kind, "null"] if nullable else kind}
    if meta.get("choices"):
        out["enum"] = list(meta["choices"]) + ([None] if nullable else [])
    for key, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
        if meta.get(key) is not None:
            out[word] = meta[key]
    if default is not None or nullable:
        out["default"] = default
    if meta.get("help"):
        out["description"] = meta["help"]
    return out


def section_schema(cls: type, defaults: Any = None) -> dict:
    """Schema of a settings class; `defaults` (an instance) gives the defaults, else cls()."""
    fields, hints = _fields(cls), _hints(cls)
    defaults = cls() if defaults is None else defaults
    props = {name: _property_schema(hints[name], f, getattr(defaults, name)) for name, f in fields.items()}
    return {"type": "object", "additionalProperties": False, "description": (cls.__doc__ or "").strip(),
            "properties": props}


def _without_defaults(schema: Any) -> Any:
    """An override section: same checks, no defaults (validate() must not fill a rung's overrides)."""
    if isinstance(schema, dict):
        return {k: _without_defaults(v) for k, v in schema.items() if k != "default"}
    return schema


def json_schema() -> dict:
    """The JSON schema of a pipeline config (workflow/schemas/config.schema.yaml)."""
    defs = {name: section_schema(cls) for name, cls in SECTIONS.items()}
    defs["reference"]["properties"]["files"] = {
        "type": "object", "default": {}, "additionalProperties": {"type": "string"},
        "description": _fields(ReferenceSettings)["files"].metadata["help"]}
    for key in ("cross_check", "basin_free_energies"):
        defs["reference"]["properties"][key] = {
            "type": "object", "default": {}, "additionalProperties": {"type": "string"},
            "description": _fields(ReferenceSettings)[key].metadata["help"]}
    defs["baselines"]["properties"]["methods"] = {
        "type": "array", "items": {"type": "string", "enum": list(BASELINE_METHODS)}, "minItems": 1,
        "uniqueItems": True, "default": list(BASELINE_METHODS),
        "description": _fields(BaselineSettings)["methods"].metadata["help"]}
    defs["export"]["properties"]["formats"] = {
        "type": "array", "items": {"type": "string", "enum": export_formats()}, "minItems": 1,
        "uniqueItems": True, "default": ["dcd"], "description": _fields(ExportSettings)["formats"].metadata["help"]}
    overrides = {name: _without_defaults(defs[name]) for name in RUNG_SECTIONS}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "PITA pipeline configuration (generated from pita/settings.py by `python -m pita.settings`; "
                       "do not edit by hand). Defaults are filled in by validate().",
        "type": "object",
        "additionalProperties": False,
        "required": ["system", "temperatures"],
        "properties": {
            "run_name": {"type": "string", "pattern": RUN_NAME_PATTERN, "default": "pita",
                         "description": "outputs go to results/<run_name>/ (letters, digits, _ . -; not starting "
                                        "with a dot)"},
            "system": {"description": "a named system (alanine_dipeptide, alanine_dipeptide_amber14, "
                                      "alanine_tripeptide, lj13, lj55) or a molecule spec",
                       "oneOf": [{"type": "string"},
                                 {"type": "object", "required": ["pdb"], "additionalProperties": False,
                                  "properties": {"name": {"type": "string"}, "pdb": {"type": "string"},
                                                 "forcefield": {"type": "array", "items": {"type": "string"},
                                                                "minItems": 1},
                                                 "length_scale": {"type": "number", "exclusiveMinimum": 0}}}]},
            "temperatures": {"description": "the ladder T_0 > T_1 > ... > T_K (K, or reduced units for "
                                            "Lennard-Jones); T_K is the target",
                             "type": "array", "minItems": 2,
                             "items": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TEMPERATURE}},
            "device": {"type": "string", "enum": ["cpu", "cuda", "auto"], "default": "cpu",
                       "description": "where the steps run; with cuda every job that uses the GPU (MD, training, "
                                      "annealing, relaxation, baselines) requests one (resource gpu=1), the others "
                                      "none; auto: CUDA where the job finds one, no request"},
            "gpu_model": {"type": ["string", "null"], "pattern": GPU_MODEL_PATTERN, "default": None,
                          "description": "GPU model the GPU jobs ask for (SLURM --gpus=<model>:1, a name the "
                                         "site's gres knows); null: any GPU. Usually set by the cluster profile"},
            "seed": {"type": "integer", "minimum": 0, "maximum": MAX_CONFIG_SEED, "default": 0},
            "threads": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 1,
                        "description": "threads per job (torch and OpenMM)"},
            **{name: {"$ref": f"#/$defs/{name}", "default": {}} for name in SECTIONS},
            "rungs": {"type": "object", "default": {},
                      "description": "per-rung overrides: rung index -> section -> settings",
                      "propertyNames": {"pattern": RUNG_KEY_PATTERN},
                      "additionalProperties": {"type": "object", "additionalProperties": False,
                                               "properties": {name: {"$ref": f"#/$defs/{name}_override"}
                                                              for name in RUNG_SECTIONS}}},
        },
        "$defs": {**defs, **{f"{name}_override": overrides[name] for name in RUNG_SECTIONS}},
    }


RUN_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
#: what snakemake-executor-plugin-slurm accepts as a GPU model
GPU_MODEL_PATTERN = r"^[A-Za-z0-9_.]+$"


def export_formats() -> list[str]:
    """The formats `pita export` writes (extensions without the dot), in its order."""
    from .commands.export import FORMATS

    return [ext[1:] for ext in FORMATS]
RUNG_KEY_PATTERN = r"^(0|[1-9][0-9]*)$"
MAX_TEMPERATURE = 1.0e6
#: the workflow derives seeds as seed + 1000 k + c, so the config's seed leaves room below MAX_SEED
MAX_CONFIG_SEED = MAX_SEED - 1_000_000


def schema_yaml() -> str:
    import yaml

    header = ("# Generated from pita/settings.py by `python -m pita.settings > workflow/schemas/config.schema.yaml`;\n"
              "# tests/test_settings.py fails when this file and the settings differ.\n")
    return header + yaml.safe_dump(json_schema(), sort_keys=False, width=110)


if __name__ == "__main__":
    sys.stdout.write(schema_yaml())


def replace_nested(settings: Any, dotted: str, value: Any) -> Any:
    """A copy of `settings` with the nested field `dotted` ("model.backbone") set to `value`."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(settings, **{head: value})
    return dataclasses.replace(settings, **{head: replace_nested(getattr(settings, head), rest, value)})
