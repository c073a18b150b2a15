"""`pita train`: fit the score and energy models of one rung to its sample set(s)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import PitaInputError

HELP = "train the rung's score and energy models on a sample set (writes a checkpoint and a losses CSV)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", action="append", required=True, metavar="H5",
                   help="sample set of this rung (repeat to add earlier rungs' sets: needs beta conditioning)")
    p.add_argument("--system", required=True, help="system name or JSON spec (e.g. alanine_dipeptide, lj13)")
    p.add_argument("--out", required=True, help="model checkpoint to write (.pt)")
    p.add_argument("--losses-csv", help="loss curves to write (CSV)")
    p.add_argument("--init", help="previous rung's checkpoint to warm start from")
    p.add_argument("--config-json", help="training settings as a JSON mapping")
    p.add_argument("--config", nargs="+", metavar=("FILE", "SECTION"),
                   help="YAML/JSON file and optional dotted section holding the training settings (e.g. config.yaml train)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--backbone", choices=["mlp", "transformer", "egnn"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", help="resumable training state goes here (default: .pita-work beside --out)")
    p.add_argument("--checkpoint-every", type=int, help="steps between resumable states")
    p.add_argument("--threads", type=int, help="torch CPU threads (e.g. the job's cores; oversubscribed cores slow training many-fold)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_config(args: argparse.Namespace) -> dict:
    config: dict = {}
    if args.config:
        if len(args.config) > 2:
            raise PitaInputError("--config: expected FILE [SECTION]")
        path = Path(args.config[0])
        if not path.exists():
            raise PitaInputError(f"{path}: file not found")
        try:
            import yaml

            data = yaml.safe_load(path.read_text())
        except Exception as exc:  # noqa: BLE001 - any parse problem is a bad input file
            raise PitaInputError(f"{path}: not valid YAML/JSON ({exc.__class__.__name__})") from None
        if len(args.config) == 2:
            for key in args.config[1].split("."):
                if not isinstance(data, dict) or key not in data:
                    raise PitaInputError(f"{path}: section {args.config[1]!r} not found")
                data = data[key]
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PitaInputError(f"{path}: training settings must be a mapping, got {type(data).__name__}")
        config.update(_from_pipeline_section(data))
    if args.config_json:
        try:
            extra = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise PitaInputError(f"--config-json: not valid JSON ({exc.msg})") from None
        if not isinstance(extra, dict):
            raise PitaInputError("--config-json: expected a JSON mapping")
        config = _merge(config, _from_pipeline_section(extra))
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "checkpoint_every": args.checkpoint_every}
    config.update({k: v for k, v in overrides.items() if v is not None})
    if args.backbone:
        config = _merge(config, {"model": {"backbone": args.backbone}})
    return config


def _from_pipeline_section(section: dict) -> dict:
    """The pipeline's `train:` section (config.yaml) -> training settings.

    It holds `backbone` (-> model.backbone), `warm_start` (the workflow's business: it decides
    whether to pass --init) and `options` (further settings, merged in) beside plain settings.
    """
    section = dict(section)
    section.pop("warm_start", None)
    options = section.pop("options", None) or {}
    if not isinstance(options, dict):
        raise PitaInputError(f"train.options: expected a mapping, got {type(options).__name__}")
    backbone = section.pop("backbone", None)
    if backbone is not None:
        section = _merge(section, {"model": {"backbone": backbone}})
    return _merge(section, options)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _system(spec: str):
    from ..systems import load

    text = spec.strip()
    if text.startswith("{"):
        try:
            return load(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PitaInputError(f"--system: not valid JSON ({exc.msg})") from None
    return load(text)


def run(args: argparse.Namespace) -> int:
    from ..provenance import check_output_path
    from ..training import train

    config = _read_config(args)
    check_output_path(args.out, "--out")
    check_output_path(args.losses_csv, "--losses-csv")
    if args.threads is not None:
        if args.threads < 1:
            raise PitaInputError(f"--threads: must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    system = _system(args.system)
    work_dir = Path(args.work_dir) if args.work_dir else Path(args.out).resolve().parent / ".pita-work"
    result = train(args.samples, system, config=config, init=args.init, out=args.out, losses_csv=args.losses_csv,
                   device=args.device, seed=args.seed, work_dir=work_dir,
                   progress=False if args.no_progress else None)
    last = result.history[-1] if result.history else {}
    log.info("wrote %s after %d steps (final loss %s)", args.out, result.step, f"{last.get('loss', float('nan')):.4g}")
    return 0
