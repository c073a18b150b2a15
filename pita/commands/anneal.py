"""`pita anneal`: FK-SMC from the diffusion model of rung k to a weighted sample set at T_{k+1}.

    pita anneal --checkpoint model.pt --system alanine_dipeptide --temperature T_next
                --samples-in rung_k.h5 --out weighted.h5 [--diagnostics diag.json]
                [--n-particles N --n-steps S ... | --config-json JSON_OR_FILE]

gamma = T_k / T_{k+1}, T_k the model's temperature (checked against --samples-in, whose
n_energy_evals_total is carried forward). The output holds every surviving particle with
log_weight after the exact final correction log w = A - U/kT_{k+1} + gamma E(x, sigma_min),
the energy U of that correction (one true energy per particle), and the diagnostics (ESS trace,
resampling steps, chirality counts, energy evaluations, time) under /extra and in the JSON file.
The settings are config.yaml's anneal section (pita.settings.AnnealSettings).
"""
from __future__ import annotations

import argparse
import logging

from . import add_device, add_progress, add_rung, add_seed, add_system, add_temperature

HELP = "anneal a rung's diffusion model to the next temperature by FK-SMC (weighted sample set)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import AnnealSettings, add_arguments as add_settings

    p.add_argument("--checkpoint", required=True, help="model checkpoint of rung k (pita train)")
    add_system(p)
    add_temperature(p, "target temperature T_{k+1} (K; reduced units for Lennard-Jones)")
    p.add_argument("--samples-in", dest="samples_in",
                   help="rung k's sample set: source temperature check and cumulative energy evaluations")
    p.add_argument("--out", required=True, help="weighted output sample set (.h5)")
    p.add_argument("--diagnostics", help="diagnostics JSON")
    add_device(p)
    add_seed(p)
    add_rung(p, "rung index of the output (default: the input's rung + 1)")
    add_progress(p, default=False)
    add_settings(p, AnnealSettings)


def run(args: argparse.Namespace) -> int:
    from .. import steps
    from ..device import resolve_device
    from ..models import check_checkpoint_system, load_checkpoint
    from ..provenance import atomic_write_json, check_output_path
    from ..samples import SampleSet
    from ..settings import AnnealSettings, from_arguments
    from ..systems import from_argument

    settings = from_arguments(AnnealSettings, args, section="anneal")
    check_output_path(args.out, "--out")
    check_output_path(args.diagnostics, "--diagnostics")
    device = resolve_device(args.device)
    system = from_argument(args.system)
    model = load_checkpoint(args.checkpoint, device)
    check_checkpoint_system(model, system, args.checkpoint)
    samples_in = None
    if args.samples_in:
        # the whole set is validated (shape, finite values, attributes), not only the attributes used here
        samples_in = SampleSet.read(args.samples_in, load_forces=False)
        samples_in.check_system(args.samples_in, system)
    out, diagnostics = steps.anneal(model, system, args.temperature, settings, checkpoint=args.checkpoint,
                                    samples_in=samples_in, samples_in_source=args.samples_in, seed=args.seed, device=device, rung=args.rung,
                                    progress=args.progress)
    out.write(args.out)
    if args.diagnostics:
        atomic_write_json(args.diagnostics, diagnostics)
    a = out.attrs
    log.info("anneal: wrote %s (%d particles, ESS %.1f = %.2f%%, %d energy evaluations, %.1f s)", args.out,
             len(out), a["ess"], 100 * a["ess_fraction"], a["n_energy_evals"], a["wall_time_s"])
    return 0
