"""`pita evaluate`: compare a sample set with reference MD at the same temperature.

    pita evaluate --samples rung_3/samples.h5 --reference reference/T300.h5 \
        --system alanine_dipeptide --out-dir results/eval/rung_3 [--metrics-out FILE]

Writes metrics.json and PNG plots into --out-dir (see pita.evaluate for the definitions).
The settings are config.yaml's evaluate section (pita.settings.EvaluateSettings).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import add_seed, add_system

HELP = "evaluate a sample set against reference MD at the same temperature (metrics.json + plots)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import EvaluateSettings, add_arguments as add_settings

    p.add_argument("--samples", required=True, help="sample set (HDF5) to evaluate; weighted sets use their weights")
    p.add_argument("--reference", required=True, help="reference sample set (HDF5) at the same temperature")
    add_system(p, required=False, help="system name or JSON spec (default: the samples' 'system' attribute)")
    p.add_argument("--out-dir", "--out", dest="out", required=True, help="output folder for metrics.json and the plots")
    p.add_argument("--metrics-out", "--metrics", dest="metrics", default=None,
                   help="metrics file to write (default: OUT_DIR/metrics.json)")
    p.add_argument("--plots-dir", default=None,
                   help="folder for the PNG plots (default: beside the metrics file)")
    add_seed(p, "seed of the subsampling for exact optimal transport")
    p.add_argument("--method", default=None,
                   help="method tag for the report (pita, md, replica_exchange, ...) (default: the samples' "
                        "'method' attribute, else pita)")
    p.add_argument("--diagnostics", nargs="+", default=[], metavar="JSON",
                   help="anneal_diagnostics.json / model_fidelity.json / relax_diagnostics.json of the steps that "
                        "made the samples: their ESS, model-fidelity and acceptance numbers are added to the metrics")
    p.add_argument("--cross-check", default=None, metavar="H5",
                   help="a second reference set at the same temperature: the headline metrics, basin populations "
                        "and free energies against it go under cross_check in metrics.json")
    p.add_argument("--basin-reference", default=None, metavar="JSON",
                   help="basin free energies at this temperature known to a small error (`pita umbrella --combine`): "
                        "the samples' differences from them go under basin_reference in metrics.json")
    add_settings(p, EvaluateSettings)


def read_diagnostics(path: str) -> dict:
    """The ESS and fidelity numbers of a diagnostics JSON (one line naming the file if unreadable)."""
    from ..fidelity import summary_scalars
    from ..report import read_json_object

    data = read_json_object(path, "diagnostics JSON")
    return summary_scalars(data)


def run(args: argparse.Namespace) -> int:
    from .. import steps
    from ..errors import PitaInputError
    from ..provenance import check_output_path
    from ..samples import SampleSet
    from ..settings import EvaluateSettings, from_arguments
    from ..systems import from_argument

    settings = from_arguments(EvaluateSettings, args, section="evaluate")
    out = Path(args.out)
    metrics_path = Path(args.metrics) if args.metrics else out / "metrics.json"
    check_output_path(out, "--out-dir", folder=True)
    check_output_path(metrics_path, "--metrics-out")
    if args.plots_dir is not None:
        check_output_path(args.plots_dir, "--plots-dir", folder=True)
    samples = SampleSet.read(args.samples, load_forces=False)
    reference = SampleSet.read(args.reference, load_forces=False)
    spec = args.system if args.system is not None else samples.attrs.get("system")
    if spec is None:
        raise PitaInputError(f"{args.samples}: no 'system' attribute; pass --system")
    system = from_argument(spec)
    samples.check_system(args.samples, system)
    reference.check_system(args.reference, system)
    cross = None
    if args.cross_check is not None:
        cross = SampleSet.read(args.cross_check, load_forces=False)
        cross.check_system(args.cross_check, system)
    basin_reference = None
    if args.basin_reference is not None:
        from ..evaluate import check_basin_reference
        from ..report import read_json_object

        basin_reference = read_json_object(args.basin_reference, "basin reference JSON")
        # before the metrics are computed: a reference that does not fit costs nothing
        check_basin_reference(basin_reference, args.basin_reference, samples.temperature, system.name)
    extra = {}
    for path in args.diagnostics:
        extra.update(read_diagnostics(path))
    result = steps.evaluate(samples, reference, system, settings, out, metrics_path=metrics_path, seed=args.seed,
                            samples_path=str(args.samples), reference_path=str(args.reference), method=args.method,
                            extra=extra, cross_check=cross, cross_check_path=args.cross_check,
                            basin_reference=basin_reference, basin_reference_path=args.basin_reference,
                            plots_dir=args.plots_dir)
    keys = [k for k in ("energy_w1", "energy_w1_floor", "energy_w2", "torus_w2", "rama_kl", "tica_w2",
                        "distance_w2", "ess") if result.get(k) is not None]
    log.info("%s: %s", metrics_path, ", ".join(f"{k}={result[k]:.4g}" for k in keys))
    return 0
