# Shared helpers: the config checked before any job, per-rung settings, paths and resources.
# Every value that reaches a shell command is quoted with Snakemake's `:q` (shlex quoting);
# settings travel as one JSON object per job (--config-json), never as hand-built flags.
import json
import os
from types import SimpleNamespace

from snakemake.utils import validate

from pita.config import check_config, check_unique_keys, rung_settings
from pita.errors import PitaInputError
from pita.settings import ResourceSettings, from_mapping


# one line naming the field for any problem, before the schema's own (longer) messages
try:
    check_unique_keys(workflow.configfiles)
    check_config(config, source=", ".join(str(f) for f in workflow.configfiles) or "config")
except PitaInputError as exc:
    raise WorkflowError(str(exc))
validate(config, schema="../schemas/config.schema.yaml")


TEMPS = [float(t) for t in config["temperatures"]]
K = len(TEMPS) - 1
RUN = f"results/{config['run_name']}"
SYSTEM_ARG = json.dumps(config["system"]) if isinstance(config["system"], dict) else config["system"]
USE_GPU = config["device"] == "cuda"
GPU_MODEL = config.get("gpu_model")
#: runtime and memory per rule (config `resources`, defaults from pita.settings.ResourceSettings)
RESOURCES = from_mapping(ResourceSettings, config.get("resources"), "config", prefix="resources.")
EXPORT = config.get("export") or {}


wildcard_constraints:
    rung=r"\d+",
    later=r"[1-9]\d*",
    method="md|replica_exchange|smc",


def rung_of(w):
    return int(getattr(w, "rung", getattr(w, "later", 0)))


def settings_json(section, drop=()):
    """Params function: this rule's rung's `section` settings (as the user gave them) as JSON,
    without the keys in `drop` (workflow-only keys that must not rerun the step)."""
    return lambda w: json.dumps({k: v for k, v in rung_settings(config, rung_of(w), section).items() if k not in drop},
                                sort_keys=True)


def cross_check_args(w, input):
    """--cross-check PATH when reference.cross_check names a second reference at this rung's T."""
    return ["--cross-check", input.cross_check] if input.cross_check else []


def basin_reference_args(w, input):
    """--basin-reference PATH when reference.basin_free_energies names one at this rung's T."""
    return ["--basin-reference", input.basin_reference] if input.basin_reference else []


def temperature(w):
    return TEMPS[rung_of(w)]


def job_seed(offset):
    """A distinct seed per step and rung, derived from the config's seed."""
    return lambda w: config["seed"] + 1000 * rung_of(w) + offset


def md_uses_gpu(settings):
    """Whether MD with these settings (md_seed, reference, baselines: engine, platform) runs on the
    GPU under device: cuda: the torch engine does, and OpenMM does unless a CPU platform is named."""
    return not (settings.get("engine", "auto") == "openmm" and settings.get("platform", "auto") in ("Reference", "CPU"))


def _per_job(uses_gpu):
    """`uses_gpu` (a bool, or a function of the wildcards) as a function of the wildcards."""
    return uses_gpu if callable(uses_gpu) else (lambda w: bool(uses_gpu))


def job_device(uses_gpu=True):
    """Params function: the --device of a job: cuda when it uses the GPU (and so requests one), cpu
    for a job of a cuda run that needs none (it may land on a node without a GPU), else the config's."""
    uses = _per_job(uses_gpu)
    return lambda w: "cuda" if USE_GPU and uses(w) else ("cpu" if USE_GPU else config["device"])


def job_resources(rule, uses_gpu=False):
    """A rule's resources, the one place they are made: runtime (minutes) and mem_mb from config
    `resources`; cpus_per_task = the job's threads (SLURM's --cpus-per-task; a profile's default
    cannot override it); with device: cuda, gpu=1 for each job that uses the GPU (gpu_model with it
    when configured) and gpu=0 for the others. `uses_gpu`: a bool or a function of the wildcards."""
    r = getattr(RESOURCES, rule)
    out = {"runtime": r.runtime, "mem_mb": r.mem_mb, "cpus_per_task": lambda wildcards, threads: threads}
    if USE_GPU:
        uses = _per_job(uses_gpu)
        out["gpu"] = lambda wildcards: 1 if uses(wildcards) else 0
        if GPU_MODEL:
            # None leaves the resource out: only GPU jobs name a model
            out["gpu_model"] = lambda wildcards: GPU_MODEL if uses(wildcards) else None
    return out


def export_rungs():
    """The rungs whose samples the export rule writes as trajectories (config `export`)."""
    if not EXPORT.get("enabled", True):
        return []
    return list(range(K + 1)) if EXPORT.get("rungs", "final") == "all" else [K]


def export_files(rung):
    """The export of one rung: a trajectory per configured format, and the PDB topology."""
    base = f"{RUN}/export/rung_{rung}"
    return [f"{base}.{fmt}" for fmt in EXPORT.get("formats", ["dcd"])] + [f"{base}.topology.pdb"]


def all_outputs():
    outs = [f"{RUN}/report.html", f"{RUN}/summary.csv"]
    outs += [f"{RUN}/rung_{k}/samples.h5" for k in range(K + 1)]
    outs += [f for k in export_rungs() for f in export_files(k)]
    return outs


def previous_checkpoint(w):
    """Warm start: rung k starts from rung k-1's model when configured."""
    k = int(w.rung)
    if k > 0 and rung_settings(config, k, "train").get("warm_start", True):
        return f"{RUN}/rung_{k - 1}/model.pt"
    return []


def reference_file(k, key="files"):
    """A configured reference set for T_k, if any (reference.files maps temperature -> path;
    key="cross_check": the second reference the rung is also evaluated against; key="basin_free_energies":
    the precise basin free energies its sets are compared with)."""
    files = (config.get("reference") or {}).get(key) or {}
    for temp, path in files.items():
        if abs(float(temp) - TEMPS[k]) < 1e-9:
            return path
    return None


#: the chain md_seed -> train -> anneal -> relax -> ... is the run's critical path: when a core frees,
#: its next job goes before the evaluations and baselines that run beside it; the baselines (long
#: jobs) go before the evaluations (short ones, which fill the cores at the end)
CHAIN_PRIORITY = 10
BASELINE_PRIORITY = 5


# baselines (config `baselines`, rules in baselines.smk)
BASELINES = config.get("baselines") or {}


# which jobs run on the GPU under device: cuda (the others request none and get --device cpu)
MD_SEED_GPU = md_uses_gpu(rung_settings(config, 0, "md_seed"))


def reference_uses_gpu(w):
    """Reference MD as md_uses_gpu; a configured reference set is only checked (no MD, no GPU)."""
    k = rung_of(w)
    return reference_file(k) is None and md_uses_gpu(rung_settings(config, k, "reference"))


def baseline_uses_gpu(w):
    """Replica exchange and smc run batched torch; plain MD as md_uses_gpu."""
    return w.method != "md" or md_uses_gpu(BASELINES)

BASELINE_METHODS = list(BASELINES.get("methods") or []) if BASELINES.get("enabled") else []


def baseline_metrics():
    """The baselines' metrics.json files the report shows beside PITA's (none when disabled)."""
    files = [f"{RUN}/baselines/{m}/metrics.json" for m in BASELINE_METHODS]
    # smc's bridged set before its relaxation, beside PITA's annealed set (rule evaluate_smc_bridged)
    return files + ([f"{RUN}/baselines/smc/bridged_metrics.json"] if "smc" in BASELINE_METHODS else [])


#: seed offsets of the baselines (seed + 1000 K + offset)
BASELINE_SEED_OFFSET = {"md": 11, "replica_exchange": 12, "smc": 13}


#: the baselines' budget: planned from the run's settings (rule plan_budget; the baselines run beside
#: PITA) or what the final rung spent (they wait for the whole run); config baselines.budget
BUDGET_FILE = f"{RUN}/baselines/budget.json" if BASELINES.get("budget", "planned") == "planned" else f"{RUN}/rung_{K}/samples.h5"


def rung_sections_json(section, keys=None):
    """One section's settings of every rung 1..K (per-rung overrides resolved) as one JSON object;
    `keys`: only these settings (the others take their defaults where it is read)."""
    rungs = {str(k): rung_settings(config, k, section) for k in range(1, K + 1)}
    if keys is not None:
        rungs = {k: {key: s[key] for key in keys if key in s} for k, s in rungs.items()}
    return json.dumps(rungs, sort_keys=True)


def baseline_inputs(w):
    """The budget (BUDGET_FILE) and, for smc, the rung-0 seed set that PITA started from."""
    inputs = {"budget": BUDGET_FILE}
    if w.method == "smc":
        inputs["seed_set"] = f"{RUN}/rung_0/samples.h5"
    return inputs


def baseline_smc_args(w, input, output):
    """smc's own options: the seed set, the PITA run's relax settings of rungs 1..K (per-rung
    overrides resolved) as one JSON object and its pre-relaxation output; none for the other baselines."""
    if w.method != "smc":
        return []
    return ["--seed-set", input.seed_set, "--relax-json", rung_sections_json("relax"),
            "--pre-relaxation-out", output.pre_relaxation]


def gpu_jobs():
    """The jobs that request a GPU when device is cuda, named as their benchmark files: their wall
    time is GPU time in the cost table. The same predicates as the rules' job_resources, so an MD
    job on OpenMM's CPU platforms, or a reference that is only checked, counts none."""
    jobs = ["md_seed"] if MD_SEED_GPU else []
    jobs += [f"reference_md_{k}" for k in range(K + 1) if reference_uses_gpu(SimpleNamespace(rung=str(k)))]
    jobs += [f"train_{k}" for k in range(K)]
    jobs += [f"{rule}_{k}" for k in range(1, K + 1) for rule in ("anneal", "relax")]
    jobs += [f"baseline_{m}" for m in BASELINE_METHODS if baseline_uses_gpu(SimpleNamespace(method=m))]
    return jobs


def cost_benchmarks():
    """Benchmark files of every job the cost table sums (pita.cost): PITA's steps, the baselines,
    and the shared evaluation (reference sets, evaluate jobs)."""
    b = f"{RUN}/benchmarks"
    files = [f"{b}/md_seed.tsv"]
    files += [f"{b}/train_{k}.tsv" for k in range(K)]
    files += [f"{b}/{rule}_{k}.tsv" for k in range(1, K + 1) for rule in ("anneal", "relax")]
    files += [f"{b}/baseline_{m}.tsv" for m in BASELINE_METHODS]
    files += [f"{b}/reference_md_{k}.tsv" for k in range(K + 1)]
    files += [f"{b}/evaluate_{k}.tsv" for k in range(K + 1)]
    files += [f"{b}/evaluate_annealed_{k}.tsv" for k in range(1, K + 1)]
    files += [f"{b}/evaluate_baseline_{m}.tsv" for m in BASELINE_METHODS]
    files += [f"{b}/evaluate_baseline_smc_bridged.tsv"] if "smc" in BASELINE_METHODS else []
    files += [f"{b}/plan_budget.tsv"] if BASELINE_METHODS and BUDGET_FILE.endswith(".json") else []
    return files
