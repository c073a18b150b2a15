"""`pita evaluate`: compare a sample set with reference MD at the same temperature.

    pita evaluate --samples rung_3/samples.h5 --reference reference/T300.h5 \
        --system alanine_dipeptide --out results/eval/rung_3

Writes OUT/metrics.json and PNG plots beside it (see pita.evaluate for the definitions).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "evaluate a sample set against reference MD at the same temperature (metrics.json + plots)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="sample set (HDF5) to evaluate; weighted sets use their weights")
    p.add_argument("--reference", required=True, help="reference MD sample set (HDF5) at the same temperature")
    p.add_argument("--system", default=None,
                   help="system name (e.g. alanine_dipeptide, lj13); default: the samples' 'system' attribute")
    p.add_argument("--out", required=True, help="output folder for metrics.json and the plots")
    p.add_argument("--metrics", default=None, help="metrics file path (default OUT/metrics.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling for exact optimal transport")
    p.add_argument("--method", default=None,
                   help="method tag for the report (pita, md, replica_exchange, ...); default: the samples' "
                        "'method' attribute, else pita")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--ot-max-samples", type=int, default=2000,
                   help="support points per set for exact 2-D OT (torus and TICA W2)")
    p.add_argument("--distance-max-samples", type=int, default=5000, help="frames per set for the distance W2")
    p.add_argument("--tica-lag-frames", type=int, default=10, help="TICA lag in frames of the reference trajectories")
    p.add_argument("--tica-lag-ps", type=float, default=None,
                   help="TICA lag in ps (needs time_ps in the reference); overrides --tica-lag-frames")
    p.add_argument("--blocks", type=int, default=10, help="number of blocks for the reference error bars")


def run(args: argparse.Namespace) -> int:
    from ..errors import PitaInputError
    from ..evaluate import evaluate
    from ..provenance import check_output_path
    from ..samples import SampleSet
    from ..systems import load

    for name, value, minimum in (("--ot-max-samples", args.ot_max_samples, 1),
                                 ("--distance-max-samples", args.distance_max_samples, 1),
                                 ("--tica-lag-frames", args.tica_lag_frames, 1), ("--blocks", args.blocks, 2)):
        if value < minimum:
            raise PitaInputError(f"{name}: must be >= {minimum}, got {value}")
    if args.tica_lag_ps is not None and not (0 < args.tica_lag_ps < float("inf")):
        raise PitaInputError(f"--tica-lag-ps: must be positive, got {args.tica_lag_ps}")
    out = Path(args.out)
    metrics_path = Path(args.metrics) if args.metrics else out / "metrics.json"
    check_output_path(out, "--out", folder=True)
    check_output_path(metrics_path, "--metrics")
    samples = SampleSet.read(args.samples, load_forces=False)
    reference = SampleSet.read(args.reference, load_forces=False)
    spec = args.system if args.system is not None else samples.attrs.get("system")
    if spec is None:
        raise PitaInputError(f"{args.samples}: no 'system' attribute; pass --system")
    system = load(spec)
    result = evaluate(
        samples, reference, system, out, metrics_path=metrics_path, plots=not args.no_plots, seed=args.seed,
        samples_path=str(args.samples), reference_path=str(args.reference), method=args.method,
        ot_max_n=args.ot_max_samples, distance_max_n=args.distance_max_samples,
        tica_lag_frames=args.tica_lag_frames, tica_lag_ps=args.tica_lag_ps, n_blocks=args.blocks,
    )
    keys = [k for k in ("energy_w1", "energy_w2", "torus_w2", "rama_kl", "tica_w2", "distance_w2", "ess")
            if result.get(k) is not None]
    log.info("%s: %s", metrics_path, ", ".join(f"{k}={result[k]:.4g}" for k in keys))
    return 0
