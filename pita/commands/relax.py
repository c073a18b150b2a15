"""`pita relax`: resample a weighted set by its weights (or bridge) and relax it at T with the true forces.

    pita relax --samples weighted.h5 --system alanine_dipeptide --temperature T --out relaxed.h5
               [--checkpoint model.pt] [--diagnostics relax.json]
               [--method mala|langevin --n-steps S --torsion-moves K ... | --config-json JSON_OR_FILE]

MALA (default) is exact: its step size (nm^2 for molecules) adapts during the burn-in (default
half of the steps) only. Langevin runs BAOAB with --step-size as the timestep (ps for molecules).
The bridge (a resample-move SMC from the model's density exp(-gamma E(x~, sigma_min)) to the
target) needs the checkpoint that produced the weighted set; with --bridge auto it runs when
ESS/N < --bridge-ess-threshold. Torsion moves are Metropolis rotations about rotatable bonds
(exact), interleaved with the steps after burn-in. The output is unweighted, with energies and
forces; n_energy_evals_total = input's total + this step. Settings: config.yaml's relax section.
"""
from __future__ import annotations

import argparse
import logging

from . import add_device, add_rung, add_seed, add_system, add_temperature

HELP = "resample a weighted set (bridging when its ESS is tiny) and relax it with MALA or Langevin at T"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import RelaxSettings, add_arguments as add_settings

    p.add_argument("--samples", required=True, help="weighted sample set (pita anneal output)")
    add_system(p)
    add_temperature(p, "temperature of the set (K; reduced units for Lennard-Jones)")
    p.add_argument("--out", required=True, help="unweighted output sample set (.h5)")
    p.add_argument("--checkpoint", help="model checkpoint that produced the weighted set (for the bridge)")
    p.add_argument("--diagnostics", help="diagnostics JSON")
    add_device(p, default="cpu")
    add_seed(p)
    add_rung(p, "rung index of the output (default: the input's)")
    add_settings(p, RelaxSettings)


def run(args: argparse.Namespace) -> int:
    from .. import steps
    from ..device import resolve_device
    from ..provenance import atomic_write_json, check_output_path
    from ..samples import SampleSet
    from ..settings import RelaxSettings, from_arguments
    from ..systems import from_argument

    settings = from_arguments(RelaxSettings, args, section="relax")
    check_output_path(args.out, "--out")
    check_output_path(args.diagnostics, "--diagnostics")
    device = resolve_device(args.device)
    system = from_argument(args.system)
    samples = SampleSet.read(args.samples, temperature=args.temperature)
    samples.check_system(args.samples, system)
    model = None
    if args.checkpoint and settings.bridge != "never":
        from ..models import check_checkpoint_system, load_checkpoint

        model = load_checkpoint(args.checkpoint, device)
        check_checkpoint_system(model, system, args.checkpoint)
    out, d = steps.relax(samples, system, args.temperature, settings, model=model, source=args.samples,
                         seed=args.seed, device=device, rung=args.rung)
    out.write(args.out)
    if args.diagnostics:
        atomic_write_json(args.diagnostics, d)
    log.info("relax: wrote %s (%d samples; input ESS %.1f; bridge %s; %s; %d energy evaluations, total %d)",
             args.out, len(out), d["ess_in"], d["bridge"],
             f"acceptance {d['accept_rate']:.2f}" if "accept_rate" in d else f"dt {d.get('dt')}",
             d["n_energy_evals"], d["n_energy_evals_total"])
    return 0
