"""`pita relax`: resample a weighted set by its weights (or bridge) and relax it at T with the true forces.

    pita relax --samples weighted.h5 --system alanine_dipeptide --temperature T --out relaxed.h5
               [--method mala|langevin] [--n-steps 100] [--step-size S] [--burn-in B]
               [--bridge auto|never|always] [--bridge-ess-threshold 0.01] [--checkpoint model.pt]
               [--n-out N] [--batch-size B] [--torsion-moves K] [--torsion-max-angle-deg 180]
               [--diagnostics relax.json] [--seed 0]

MALA (default) is exact: its step size (nm^2 for molecules) adapts during the burn-in (default
half of the steps) only. Langevin runs BAOAB with --step-size as the timestep (ps for
molecules; default 1 fs) and --friction (1/ps). The bridge (a resample-move SMC from the
model's density exp(-gamma E(x~, sigma_min)) to the target) needs the checkpoint that produced
the weighted set; with --bridge auto it runs when ESS/N < --bridge-ess-threshold.
--torsion-moves K interleaves K Metropolis rotations about rotatable bonds (pita/torsions.py:
exact, they change phi/psi by large angles) per particle with the post-burn-in steps.
The output is unweighted, with energies and forces; n_energy_evals_total = input's total + this step.
"""
from __future__ import annotations

import argparse
import logging
import math

from ..errors import PitaInputError

HELP = "resample a weighted set (bridging when its ESS is tiny) and relax it with MALA or Langevin at T"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="weighted sample set (pita anneal output)")
    p.add_argument("--system", required=True, help="system name or JSON spec")
    p.add_argument("--temperature", required=True, type=float, help="temperature of the set (K; reduced for LJ)")
    p.add_argument("--out", required=True, help="unweighted output sample set (.h5)")
    p.add_argument("--method", choices=["mala", "langevin"], default="mala")
    p.add_argument("--n-steps", dest="n_steps", type=int, default=100)
    p.add_argument("--step-size", dest="step_size", type=float,
                   help="MALA initial step size (position units^2) or Langevin timestep (ps / reduced)")
    p.add_argument("--burn-in", dest="burn_in", type=int, help="MALA steps with step-size adaptation (default n_steps/2)")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction (1/ps)")
    p.add_argument("--bridge", choices=["auto", "never", "always"], default="auto")
    p.add_argument("--bridge-ess-threshold", dest="bridge_ess_threshold", type=float, default=0.01,
                   help="with --bridge auto: bridge when ESS/N of the input is below this")
    p.add_argument("--bridge-mala-steps", dest="bridge_mala_steps", type=int, default=10)
    p.add_argument("--checkpoint", help="model checkpoint that produced the weighted set (for the bridge)")
    p.add_argument("--n-out", dest="n_out", type=int, help="output size (default: input size)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="configurations per energy call")
    p.add_argument("--device", default="cpu", help="device of the energies, moves and the bridge's model (cpu, cuda)")
    p.add_argument("--torsion-moves", dest="torsion_moves", type=int, default=0,
                   help="Metropolis torsion moves per particle, interleaved with the steps after burn-in (molecules)")
    p.add_argument("--torsion-max-angle-deg", dest="torsion_max_angle_deg", type=float, default=180.0,
                   help="torsion moves draw the angle from U(-a, a)")
    p.add_argument("--rung", type=int, help="rung index of the output (default: the input's)")
    p.add_argument("--diagnostics", help="diagnostics JSON")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from .. import systems
    from ..provenance import atomic_write_json, base_attrs, check_output_path
    from ..relax import model_potential, relax
    from ..samples import SampleSet
    from .anneal import _system_spec

    if args.temperature <= 0 or not math.isfinite(args.temperature):
        raise PitaInputError(f"--temperature: must be positive, got {args.temperature}")
    for name, value, minimum in (("--n-steps", args.n_steps, 0), ("--burn-in", args.burn_in, 0),
                                 ("--bridge-mala-steps", args.bridge_mala_steps, 0), ("--n-out", args.n_out, 1),
                                 ("--batch-size", args.batch_size, 1), ("--torsion-moves", args.torsion_moves, 0)):
        if value is not None and value < minimum:
            raise PitaInputError(f"{name}: must be >= {minimum}, got {value}")
    if args.step_size is not None and not (0 < args.step_size < math.inf):
        raise PitaInputError(f"--step-size: must be positive, got {args.step_size}")
    if not (0 < args.torsion_max_angle_deg <= 180):
        raise PitaInputError(f"--torsion-max-angle-deg: must be in (0, 180], got {args.torsion_max_angle_deg}")
    if not (0 <= args.friction < math.inf):
        raise PitaInputError(f"--friction: must be >= 0, got {args.friction}")
    if not (0 <= args.bridge_ess_threshold <= 1):
        raise PitaInputError(f"--bridge-ess-threshold: must be in [0, 1], got {args.bridge_ess_threshold}")
    check_output_path(args.out, "--out")
    check_output_path(args.diagnostics, "--diagnostics")
    system = systems.load(_system_spec(args.system))
    samples = SampleSet.read(args.samples, temperature=args.temperature, n_atoms=system.n_atoms)
    phi0_fn, A = None, None
    if args.checkpoint and args.bridge != "never":
        from ..models import load_checkpoint

        model = load_checkpoint(args.checkpoint, args.device)
        gamma = float(samples.attrs.get("gamma", float(model.temperature) / args.temperature))
        sigma_min = float(samples.attrs.get("sigma_min", model.sigma_min))
        n_atoms = model.n_atoms if model.mean_free else None
        phi0_fn = model_potential(model, gamma, sigma_min, float(samples.attrs.get("length_scale", model.length_scale)),
                                  n_atoms, args.batch_size)
        if "log_weight_path" in samples.extra and len(samples.extra["log_weight_path"]) == len(samples):
            A = samples.extra["log_weight_path"]
    elif args.bridge == "always":
        raise PitaInputError("--bridge always: needs --checkpoint (the model that produced the weighted set)")
    settings = dict(samples=str(args.samples), system=system.spec(), temperature=args.temperature, method=args.method,
                    n_steps=args.n_steps, step_size=args.step_size, burn_in=args.burn_in, friction=args.friction,
                    bridge=args.bridge, bridge_ess_threshold=args.bridge_ess_threshold,
                    bridge_mala_steps=args.bridge_mala_steps, n_out=args.n_out, torsion_moves=args.torsion_moves,
                    torsion_max_angle_deg=args.torsion_max_angle_deg, input_digest=samples.attrs.get("config_digest"))
    attrs = base_attrs("relax", settings, args.seed)
    attrs.update(system=system.name, units=system.units, length_scale=float(samples.attrs["length_scale"]),
                 rung=args.rung if args.rung is not None else samples.attrs.get("rung", -1))
    for k in ("ess", "ess_fraction", "n_resamples", "wall_time_s", "checkpoint", "n_mirrored",
              "n_dropped_chirality", "n_dropped_nonfinite", "gamma", "source_temperature", "sigma_min"):
        samples.attrs.pop(k, None)
    res = relax(samples, system, args.temperature, method=args.method, n_steps=args.n_steps, step_size=args.step_size,
                n_burnin=args.burn_in, friction=args.friction, bridge_mode=args.bridge,
                bridge_ess_threshold=args.bridge_ess_threshold, bridge_mala_steps=args.bridge_mala_steps,
                phi0_fn=phi0_fn, log_weight_path=A, n_out=args.n_out, batch_size=args.batch_size, seed=args.seed,
                torsion_moves=args.torsion_moves, torsion_max_angle=math.radians(args.torsion_max_angle_deg),
                device=args.device,
                attrs=attrs)
    _keep_data_enantiomer(res, system)
    if len(res.samples) == 0:
        raise PitaInputError(f"{args.samples}: no finite configuration left after relaxation")
    res.samples.attrs["input_ess"] = float(res.diagnostics["ess_in"])
    res.samples.write(args.out)
    if args.diagnostics:
        atomic_write_json(args.diagnostics, res.diagnostics)
    d = res.diagnostics
    log.info("relax: wrote %s (%d samples; input ESS %.1f; bridge %s; %s; %d energy evaluations, total %d)",
             args.out, len(res.samples), d["ess_in"], d["bridge"],
             f"acceptance {d['accept_rate']:.2f}" if "accept_rate" in d else f"dt {d.get('dt')}",
             d["n_energy_evals"], d["n_energy_evals_total"])
    return 0


def _keep_data_enantiomer(res, system) -> None:
    """The force field cannot tell L from D, so moves at high T (or from poor starts) can
    invert a centre: before the next rung trains on this set, mirror the particles that a
    mirror fixes (U is mirror symmetric, F(-x) = -F(x)) and drop the rest, counting both."""
    if getattr(system, "topology", None) is None or getattr(system, "reference_positions", None) is None:
        return
    import numpy as np

    from ..chirality import ChiralityChecker

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
        log.warning("relax: %d sample(s) ended in the mirror enantiomer (mirrored back), %d with mixed chirality (dropped)",
                    n_mirrored, n_dropped)
