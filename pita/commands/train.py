"""`pita train`: fit the score and energy models of one rung to its sample set(s).

    pita train --samples rung_0/samples.h5 --system alanine_dipeptide --out rung_0/model.pt
               [--init rung_-1/model.pt] [--steps N --batch-size B --lr LR ... | --config-json JSON_OR_FILE]

The settings are those of config.yaml's train section (pita.settings.TrainSettings, nested
sections model, schedule, sigma_sampling, loss_weights given through --config-json); options on
the command line win. Training resumes from the last saved state in --work-dir.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import add_device, add_progress, add_seed, add_system, integer, positive_float
from ..errors import PitaInputError

HELP = "train the rung's score and energy models on a sample set (writes a checkpoint and a losses CSV)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import BACKBONES, TrainSettings, add_arguments as add_settings

    p.add_argument("--samples", action="append", required=True, metavar="H5",
                   help="sample set of this rung (repeat to add earlier rungs' sets: needs beta conditioning)")
    add_system(p)
    p.add_argument("--out", required=True, help="model checkpoint to write (.pt)")
    p.add_argument("--losses-csv", help="loss curves to write (CSV)")
    p.add_argument("--init", help="previous rung's checkpoint to warm start from")
    p.add_argument("--next-temperature", type=positive_float,
                   help="the next rung's temperature: the fidelity report gives the final log-weight spread at "
                        "gamma = T / T_next (default: gamma = 1)")
    p.add_argument("--diagnostics", help="model fidelity on the held-out samples (JSON)")
    p.add_argument("--backbone", choices=BACKBONES, help="network (sets model.backbone)")
    add_device(p)
    add_seed(p)
    p.add_argument("--work-dir", help="resumable training state goes here (default: .pita-work beside --out)")
    p.add_argument("--threads", type=integer,
                   help="torch CPU threads (e.g. the job's cores; oversubscribed cores slow training many-fold)")
    add_progress(p)
    add_settings(p, TrainSettings)


def run(args: argparse.Namespace) -> int:
    from .. import steps
    from ..provenance import check_output_path
    from ..settings import TrainSettings, from_arguments, replace_nested
    from ..systems import from_argument

    settings = from_arguments(TrainSettings, args, section="train")
    if args.backbone:
        settings = replace_nested(settings, "model.backbone", args.backbone)
    check_output_path(args.out, "--out")
    check_output_path(args.losses_csv, "--losses-csv")
    check_output_path(args.diagnostics, "--diagnostics")
    work_dir = Path(args.work_dir) if args.work_dir else Path(args.out).resolve().parent / ".pita-work"
    check_output_path(work_dir, "--work-dir", folder=True)
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            raise PitaInputError(f"--threads: must be in [1, 1024], got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    system = from_argument(args.system)
    # (the sets are read, and checked against the system, by the training's data loader)
    result = steps.train(args.samples, system, settings, init=args.init, out=args.out, losses_csv=args.losses_csv,
                         device=args.device, seed=args.seed, work_dir=work_dir, progress=args.progress,
                         next_temperature=args.next_temperature, diagnostics=args.diagnostics)
    last = result.history[-1] if result.history else {}
    log.info("wrote %s after %d steps (final loss %s)", args.out, result.step, f"{last.get('loss', float('nan')):.4g}")
    return 0
