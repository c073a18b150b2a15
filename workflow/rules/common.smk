# Shared helpers: config validation, per-rung settings, paths and resources.
import json

from snakemake.utils import validate

from pita.config import check_config, rung_settings
from pita.errors import PitaInputError


validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config, source="config")
except PitaInputError as exc:
    raise WorkflowError(str(exc))


TEMPS = [float(t) for t in config["temperatures"]]
K = len(TEMPS) - 1
RUN = f"results/{config['run_name']}"
SYSTEM = config["system"]
SYSTEM_ARG = json.dumps(SYSTEM) if isinstance(SYSTEM, dict) else SYSTEM
USE_GPU = config["device"] == "cuda"


wildcard_constraints:
    rung=r"\d+",
    later=r"[1-9]\d*",
    method="md|replica_exchange",


def temperature(w, offset=0):
    return TEMPS[int(w.rung) + offset]


def settings(section, offset=0):
    """Params function: the resolved settings of `section` for this rule's rung only."""
    return lambda w: rung_settings(config, int(getattr(w, "rung", getattr(w, "later", 0))) + offset, section)


def settings_json(section, offset=0):
    get = settings(section, offset)
    return lambda w: json.dumps(get(w), sort_keys=True)


def gpu_resources():
    return {"gpu": 1} if USE_GPU else {}


def all_outputs():
    outs = [f"{RUN}/report.html", f"{RUN}/summary.csv"]
    outs += [f"{RUN}/rung_{k}/samples.h5" for k in range(K + 1)]
    return outs


def cli_flags(values, skip=()):
    """Settings dict -> command-line flags: n_samples=5 -> --n-samples 5, minimize=False -> --no-minimize."""
    parts = []
    for key, value in sorted(values.items()):
        if key in skip or value is None or isinstance(value, (dict, list)):
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def step_flags(section, offset=0, skip=()):
    get = settings(section, offset)
    return lambda w: cli_flags(get(w), skip=skip)


def previous_checkpoint(w):
    """Warm start: rung k starts from rung k-1's model when configured."""
    k = int(w.rung)
    if k > 0 and rung_settings(config, k, "train").get("warm_start", True):
        return f"{RUN}/rung_{k - 1}/model.pt"
    return []


def reference_file(k):
    """A configured reference set for T_k, if any (reference.files maps temperature -> path)."""
    files = (config.get("reference") or {}).get("files") or {}
    for temp, path in files.items():
        if abs(float(temp) - TEMPS[k]) < 1e-9:
            return path
    return None


# baselines (config `baselines`, rules in baselines.smk)
BASELINES = config.get("baselines") or {}
BASELINE_METHODS = list(BASELINES.get("methods") or []) if BASELINES.get("enabled") else []


def baseline_settings(method):
    """The `baselines` section as `pita baseline --config-json` settings for one method."""
    skip = {"enabled", "methods"} | ({"engine"} if method == "replica_exchange" else set())
    return {k: v for k, v in BASELINES.items() if k not in skip}


def baseline_metrics():
    """The baselines' metrics.json files the report shows beside PITA's (none when disabled)."""
    return [f"{RUN}/baselines/{m}/metrics.json" for m in BASELINE_METHODS]
