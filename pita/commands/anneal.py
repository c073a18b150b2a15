"""`pita anneal`: FK-SMC from the diffusion model of rung k to a weighted sample set at T_{k+1}.

    pita anneal --checkpoint model.pt --system alanine_dipeptide --temperature T_next
                --samples-in rung_k.h5 --out weighted.h5 [--diagnostics diag.json]
                [--n-particles 1000] [--n-steps 200] [--resample-threshold 1.0]
                [--stop-resample-sigma 0.0] [--divergence exact|hutchinson] [--probes 1]
                [--weights continuous|discrete] [--drift pita|tempered|score|energy] [--noise-scale L]
                [--score-source score|energy] [--schedule SMIN SMAX RHO] [--batch-size B] [--device cpu|cuda] [--seed 0]
                [--forces] [--no-chirality-fix]

gamma = T_k / T_{k+1}, T_k the model's temperature (checked against --samples-in, whose
n_energy_evals_total is carried forward). The output holds every surviving particle with
log_weight after the exact final correction, energy U from that correction (one true
energy per particle; forces with --forces), and the diagnostics (ESS trace, resampling
steps, chirality counts, energy evaluations, time) under /extra and in the JSON file.
"""
from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import torch

from ..errors import PitaInputError

HELP = "anneal a rung's diffusion model to the next temperature by FK-SMC (weighted sample set)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model checkpoint of rung k (pita train)")
    p.add_argument("--system", required=True, help="system name or JSON spec")
    p.add_argument("--temperature", required=True, type=float, help="target temperature T_{k+1} (K; reduced for LJ)")
    p.add_argument("--samples-in", dest="samples_in",
                   help="rung k's sample set: source temperature check and cumulative energy evaluations")
    p.add_argument("--out", required=True, help="weighted output sample set (.h5)")
    p.add_argument("--diagnostics", help="diagnostics JSON")
    p.add_argument("--n-particles", dest="n_particles", type=int, default=1000)
    p.add_argument("--n-steps", dest="n_steps", type=int, default=200)
    p.add_argument("--resample-threshold", dest="resample_threshold", type=float, default=1.0,
                   help="resample when ESS/N < this (1.0: every step, as in the paper; 0: never)")
    p.add_argument("--stop-resample-sigma", dest="stop_resample_sigma", type=float, default=0.0,
                   help="no resampling below this sigma (weights keep accumulating)")
    p.add_argument("--divergence", choices=["exact", "hutchinson"], default="exact")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per step")
    p.add_argument("--probe", choices=["rademacher", "gaussian"], default="rademacher")
    p.add_argument("--weights", choices=["continuous", "discrete"], default="continuous",
                   help="continuous FK rate (DESIGN.md) or the exact discrete-time step weights")
    p.add_argument("--drift", choices=["pita", "tempered", "score", "energy"], default="pita",
                   help="pita: u = gamma (g^2/2)(s - grad E) (DESIGN.md); tempered: u = (1 + L^2 gamma)(g^2/2) s with "
                        "noise L g, exact for Gaussians (far lower weight variance; pita/fksmc.py)")
    p.add_argument("--noise-scale", dest="noise_scale", type=float,
                   help="noise L g instead of g (default: 1, or gamma^-1/2 with --drift tempered)")
    p.add_argument("--score-source", dest="score_source", choices=["score", "energy"], default="score",
                   help="score field of the drift: the score network, or -grad E of the energy network")
    p.add_argument("--time-derivative", dest="time_derivative", choices=["finite_difference", "autograd"],
                   default="finite_difference")
    p.add_argument("--schedule", dest="sigma_override", nargs=3, type=float, metavar=("SMIN", "SMAX", "RHO"),
                   help="override the model's schedule (sigma_min sigma_max rho)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="particles per network pass")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rung", type=int, help="rung index of the output (default: input's rung + 1)")
    p.add_argument("--forces", action="store_true", help="also store the true forces of every particle")
    p.add_argument("--no-chirality-fix", dest="chirality_fix", action="store_false")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PitaInputError(f"--device: {name} requested but CUDA is not available")
    return name


def run(args: argparse.Namespace) -> int:
    from .. import systems
    from ..fksmc import anneal
    from ..models import load_checkpoint
    from ..provenance import atomic_write_json, base_attrs, check_output_path, file_digest
    from ..samples import SampleSet

    if args.temperature <= 0 or not math.isfinite(args.temperature):
        raise PitaInputError(f"--temperature: must be positive, got {args.temperature}")
    for name, value, minimum in (("--n-particles", args.n_particles, 1), ("--n-steps", args.n_steps, 1),
                                 ("--probes", args.probes, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < minimum:
            raise PitaInputError(f"{name}: must be >= {minimum}, got {value}")
    if not (0.0 <= args.resample_threshold <= 1.0):
        raise PitaInputError(f"--resample-threshold: must be in [0, 1], got {args.resample_threshold}")
    if args.stop_resample_sigma < 0 or not math.isfinite(args.stop_resample_sigma):
        raise PitaInputError(f"--stop-resample-sigma: must be >= 0, got {args.stop_resample_sigma}")
    if args.noise_scale is not None and not (args.noise_scale > 0 and math.isfinite(args.noise_scale)):
        raise PitaInputError(f"--noise-scale: must be positive and finite, got {args.noise_scale}")
    if args.sigma_override:
        smin, smax, rho = args.sigma_override
        if not (0 < smin < smax < math.inf and 0 < rho < math.inf):
            raise PitaInputError(f"--schedule: need 0 < SMIN < SMAX and RHO > 0, got {smin:g} {smax:g} {rho:g}")
    check_output_path(args.out, "--out")
    check_output_path(args.diagnostics, "--diagnostics")
    device = _device(args.device)
    model = load_checkpoint(args.checkpoint, device)
    system = systems.load(_system_spec(args.system))
    T_k = float(model.temperature)
    T_next = float(args.temperature)
    prev_total, rung_in = 0, None
    if args.samples_in:
        # the whole set is validated (shape, finite values, attributes), not only the attributes used here
        s_in = SampleSet.read(args.samples_in, n_atoms=system.n_atoms, load_forces=False)
        prev_total = int(s_in.attrs["n_energy_evals_total"])
        rung_in = s_in.attrs.get("rung")
        T_in = s_in.temperature
        if not math.isclose(T_in, T_k, rel_tol=1e-6):
            raise PitaInputError(f"{args.samples_in}: temperature {T_in:g} differs from the model's {T_k:g} ({args.checkpoint})")
    model_n = getattr(model, "n_atoms", None) if getattr(model, "mean_free", False) else None
    if system.n_atoms != model_n and not (system.n_atoms is None and model_n is None):
        raise PitaInputError(f"{args.checkpoint}: model has n_atoms={model_n} but system {system.name} has {system.n_atoms}")
    gamma = T_k / T_next
    L = float(getattr(model, "length_scale", system.length_scale))
    sched = {}
    if args.sigma_override:
        sched = dict(zip(("sigma_min", "sigma_max", "rho"), args.sigma_override))
    settings = dict(checkpoint=file_digest(args.checkpoint), system=system.spec(), temperature=T_next, source_temperature=T_k,
                    gamma=gamma, n_particles=args.n_particles, n_steps=args.n_steps,
                    resample_threshold=args.resample_threshold, stop_resample_sigma=args.stop_resample_sigma,
                    divergence=args.divergence, probes=args.probes, probe=args.probe, weights=args.weights,
                    drift=args.drift, noise_scale=args.noise_scale, score_source=args.score_source,
                    time_derivative=args.time_derivative, schedule=sched, chirality_fix=args.chirality_fix)
    log.info("anneal: T %g -> %g (gamma %.4f), %d particles x %d steps on %s", T_k, T_next, gamma,
             args.n_particles, args.n_steps, device)
    res = anneal(model, gamma, args.n_particles, args.n_steps, divergence_method=args.divergence,
                 n_probes=args.probes, probe=args.probe, resample_threshold=args.resample_threshold,
                 stop_resample_sigma=args.stop_resample_sigma, weights=args.weights, drift=args.drift,
                 noise_scale=args.noise_scale, score_source=args.score_source,
                 time_derivative=args.time_derivative, batch_size=args.batch_size, system=system,
                 temperature=T_next, length_scale=L, fix_chirality=args.chirality_fix,
                 compute_forces=args.forces, seed=args.seed, device=device, progress=args.progress, **sched)
    if len(res.log_weight) == 0:
        raise PitaInputError(f"{args.checkpoint}: no particle survived the annealing (all NaN/inf or wrong chirality)")
    diag = res.diagnostics()
    diag.update(source_temperature=T_k, temperature=T_next, gamma=gamma, n_energy_evals_total=prev_total + res.n_energy_evals)
    attrs = base_attrs("anneal", settings, args.seed)
    rung = args.rung if args.rung is not None else (int(rung_in) + 1 if rung_in is not None else -1)
    attrs.update(system=system.name, temperature=T_next, units=system.units, length_scale=L, rung=rung,
                 n_energy_evals=int(res.n_energy_evals), n_energy_evals_total=prev_total + int(res.n_energy_evals),
                 source_temperature=T_k, gamma=gamma, sigma_min=float(res.settings["sigma_min"]),
                 ess=float(res.ess_final), ess_fraction=float(res.ess_final / len(res.log_weight)),
                 n_mirrored=res.n_mirrored, n_dropped_chirality=res.n_dropped_chirality,
                 n_dropped_nonfinite=res.n_dropped_nonfinite, n_resamples=res.n_resamples,
                 wall_time_s=float(res.wall_time_s), checkpoint=str(args.checkpoint))
    extra = {
        "ess_trace": np.asarray(res.ess_trace, dtype=np.float64),
        "sigmas": np.asarray(res.sigmas, dtype=np.float64),
        "resample_steps": np.asarray(res.resample_steps, dtype=np.int64),
        "log_weight_path": np.asarray(res.log_weight_path, dtype=np.float64),
        "model_energy": np.asarray(res.model_energy, dtype=np.float64),
    }
    pos = res.positions.detach().cpu().numpy()
    out = SampleSet(positions=pos.astype(np.float32), energy=np.asarray(res.energy, dtype=np.float64), attrs=attrs,
                    forces=None if res.forces is None else res.forces.detach().cpu().numpy().astype(np.float32),
                    log_weight=np.asarray(res.log_weight, dtype=np.float64), extra=extra)
    out.write(args.out)
    if args.diagnostics:
        atomic_write_json(args.diagnostics, diag)
    log.info("anneal: wrote %s (%d particles, ESS %.1f = %.2f%%, %d energy evaluations, %.1f s)", args.out,
             len(out), res.ess_final, 100 * res.ess_final / len(out), res.n_energy_evals, res.wall_time_s)
    return 0


def _system_spec(text: str):
    import json
    from pathlib import Path

    t = text.strip()
    if t.startswith("{"):
        try:
            return json.loads(t)
        except json.JSONDecodeError as exc:
            raise PitaInputError(f"--system: not valid JSON ({exc.msg})") from None
    p = Path(t)
    if p.suffix == ".json" and p.exists():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise PitaInputError(f"{p}: not valid JSON ({exc.msg})") from None
    return t
