"""Cost per method from the workflow's Snakemake benchmarks and the metrics' energy evaluations.

Every rule writes `results/<run>/benchmarks/<job>.tsv` (Snakemake `benchmark:`: columns s, ...,
cpu_time). `cost_table` sums them per method:

* pita: md_seed + every train_k, anneal_k and relax_k job;
* each baseline `<m>`: its baseline_<m> job; smc also counts md_seed, the rung-0 seed set it
  shares with PITA (its evaluations are in smc's n_energy_evals_total, so its time is too);
* evaluation: reference_md_k, evaluate_k, evaluate_baseline_<m> and plan_budget (the baselines'
  budget, planned from the run's settings; no energy evaluations) (shared by all methods, counted
  for none), shown as its own row.

Energy evaluations: PITA's final rung's n_energy_evals_total, each baseline's own total.
wall_time_s is the sum of the jobs' wall times (not the elapsed time of a parallel run);
cpu_hours the sum of Snakemake's cpu_time; gpu_hours the wall time of the jobs that ran with a GPU
requested (`gpu_jobs`: job names as the benchmark files', e.g. md_seed, train_0, baseline_smc; the
workflow lists them when device is cuda: plain MD on OpenMM's CPU platforms requests none).
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import PitaInputError
from .provenance import atomic_write_text

#: job name (benchmark file stem) -> rule
_RULE = re.compile(r"^(md_seed|train|anneal|relax|baseline|plan_budget|reference_md|evaluate_baseline|evaluate|report)"
                   r"(?:_(.+))?$")
PITA_RULES = ("md_seed", "train", "anneal", "relax")
EVALUATION_RULES = ("reference_md", "evaluate", "evaluate_baseline", "plan_budget")
COST_COLUMNS = ["method", "n_energy_evals_total", "wall_time_s", "cpu_hours", "gpu_hours", "jobs", "note"]


def read_benchmark(path: str | os.PathLike) -> dict[str, float]:
    """Wall time `s` and `cpu_time` (seconds) of one Snakemake benchmark tsv (summed over its
    repeats); one line naming the file when it cannot be read."""
    p = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(p.read_text()), delimiter="\t"))
        wall = sum(float(r["s"]) for r in rows)
        cpu = sum(float(r.get("cpu_time") or "nan") for r in rows)
    except (OSError, UnicodeDecodeError, KeyError, ValueError, TypeError) as exc:
        raise PitaInputError(f"{p}: not a Snakemake benchmark file ({exc.__class__.__name__})") from None
    if not rows:
        raise PitaInputError(f"{p}: empty benchmark file")
    return {"s": wall, "cpu_time": cpu}


def _job(path: str | os.PathLike) -> tuple[str, str | None]:
    m = _RULE.match(Path(path).stem)
    if not m:
        raise PitaInputError(f"{path}: benchmark file name is not <rule>[_<rung or method>].tsv of this workflow")
    return m.group(1), m.group(2)


def cost_table(benchmarks: Iterable[str | os.PathLike], rows: Sequence[dict] = (),
               gpu_jobs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per method (pita first, then the baselines, then evaluation) with
    n_energy_evals_total, wall_time_s, cpu_hours, gpu_hours, jobs and a note."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    seed = []
    for path in benchmarks:
        rule, tail = _job(path)
        if rule == "report":
            continue
        job, bench = Path(path).stem, read_benchmark(path)
        if rule in PITA_RULES:
            groups.setdefault("pita", []).append((job, bench))
            if rule == "md_seed":
                seed.append((job, bench))
        elif rule == "baseline":
            groups.setdefault(str(tail), []).append((job, bench))
        else:
            groups.setdefault("evaluation", []).append((job, bench))
    named = {job for jobs in groups.values() for job, _ in jobs}
    unknown = sorted(set(gpu_jobs) - named)
    if unknown:  # e.g. rule names where job names are expected: they would count no GPU time at all
        raise PitaInputError(f"--gpu-jobs: {', '.join(unknown)}: no benchmark file of that job name "
                             f"(job names are the files' stems, e.g. train_0)")
    if "smc" in groups:
        groups["smc"] += seed
    evals: dict[str, int] = {}
    for m in rows:
        method, total = str(m.get("method", "pita")), m.get("n_energy_evals_total")
        if isinstance(total, (int, float)) and not isinstance(total, bool):
            evals[method] = max(int(total), evals.get(method, 0))
    notes = {"pita": "md_seed + train, anneal and relax of every rung",
             "smc": "its baseline job + the md_seed seed set it shares with PITA (evaluations counted too)",
             "evaluation": "reference sets, every evaluate job and the budget plan; shared, counted for no method"}
    order = ["pita"] + sorted(k for k in groups if k not in ("pita", "evaluation")) + ["evaluation"]
    out = []
    for method in order:
        jobs = groups.get(method)
        if not jobs:
            continue
        wall = sum(b["s"] for _, b in jobs)
        cpu = sum(b["cpu_time"] for _, b in jobs)
        gpu = sum(b["s"] for job, b in jobs if job in gpu_jobs)
        out.append({"method": method, "n_energy_evals_total": evals.get(method) if method != "evaluation" else None,
                    "wall_time_s": wall, "cpu_hours": cpu / 3600.0 if math.isfinite(cpu) else None,
                    "gpu_hours": gpu / 3600.0, "jobs": len(jobs),
                    "note": notes.get(method, f"its baseline_{method} job")})
    return out


def write_cost_csv(table: Sequence[dict], path: str | os.PathLike) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COST_COLUMNS)
    for r in table:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in COST_COLUMNS])
    atomic_write_text(path, buf.getvalue())


__all__ = ["read_benchmark", "cost_table", "write_cost_csv", "COST_COLUMNS"]
