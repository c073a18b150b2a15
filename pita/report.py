"""Collect every rung's metrics.json into summary.csv and one self-contained HTML report.

* `summary.csv`: one row per metrics.json (rung), columns `KEY_COLUMNS` first (rung, method,
  system, temperature, the headline metrics, energy evaluations, wall time), then every other
  scalar key in alphabetical order, then the metrics file's path.
* `report.html`: no external resources: CSS inline, plots embedded as base64 PNG (paths in a
  metrics.json's `plots` list are relative to that file). Sections: headline table, a
  method comparison (rows tagged by `method`: pita / md / replica_exchange / ...; a metrics.json
  without `method` counts as pita; with baselines, first a table of PITA's final rung beside
  them at the target temperature with their energy evaluations), then one section per rung with
  a per-residue Ramachandran table (molecules: one row per residue of `per_residue`), its plots
  (one Ramachandran plot per residue) and all its values.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import __version__
from .errors import PitaInputError, brief, finite_number
from .provenance import atomic_write_text, check_output_path, now_iso
from .settings import BASELINE_METHODS

log = logging.getLogger(__name__)

#: leading columns of summary.csv (those present in at least one metrics.json)
KEY_COLUMNS = [
    "rung", "method", "system", "temperature", "n_samples", "weighted", "ess", "ess_fraction",
    "energy_w1", "energy_w1_floor", "energy_n_effective", "energy_w2", "torus_w2", "rama_kl", "tica_w2",
    "distance_w2",
    "dF_alpha_R", "dF_alpha_R_ref", "dF_alpha_R_ref_err", "dF_alpha_L", "dF_alpha_L_ref", "dF_alpha_L_ref_err",
    "dF_diff_max_abs", "rama_kl_max", "torus_w2_max_residue",
    "chirality_wrong_fraction", "n_energy_evals", "n_energy_evals_total", "n_energy_evals_budget",
    "swap_acceptance_mean", "wall_time_s", "eval_wall_time_s",
    "ess_path_fraction", "ess_final_fraction", "ess_reweight_previous_fraction", "n_ancestors", "ess_ancestors",
    "model_log_weight_sd", "model_energy_r2", "model_bond_rms_error_pm", "relax_accept", "relax_torsion_accept",
]
#: metrics shown as value ± se (metrics.json's <key>_se, pita.evaluate.bootstrap_errors)
SE_KEYS = ("energy_w1", "energy_w2", "torus_w2", "rama_kl", "tica_w2", "distance_w2", "dF_alpha_R", "dF_alpha_L",
           "p_C7eq", "p_alpha_R", "p_alpha_L")
KEY_COLUMNS = [c for k in KEY_COLUMNS for c in ((k, f"{k}_se") if k in SE_KEYS else (k,))]
#: columns of the headline and method-comparison tables in the HTML report
HEADLINE = ["energy_w1", "energy_w1_floor", "energy_w2", "torus_w2", "rama_kl", "tica_w2", "distance_w2",
            "dF_alpha_R", "dF_alpha_L", "dF_diff_max_abs", "ess", "chirality_wrong_fraction", "n_energy_evals_total",
            "wall_time_s"]
#: columns of the PITA-vs-baselines table at the target temperature
#: (wall time: the method's whole cost from the benchmarks, pita.cost; not the last step's wall_time_s)
BASELINE_COLUMNS = HEADLINE[:-2] + ["n_energy_evals_total", "n_energy_evals_budget", "swap_acceptance_mean",
                                    "method_wall_time_s", "method_cpu_hours"]
#: columns of the "does the model carry the result?" table: the anneal's ESS (path, after the exact
#: final correction, and the trivial proposal: the previous rung reweighted) and the fidelity of the
#: model behind the rung (pita.fidelity)
MODEL_COLUMNS = ["ess_path_fraction", "ess_final_fraction", "ess_reweight_previous_fraction", "n_ancestors",
                 "ess_ancestors", "model_log_weight_sd",
                 "model_energy_r2", "model_score_energy_gap_lt_0.1", "model_score_energy_gap_0.1_1",
                 "model_score_energy_gap_gt_1", "model_bond_rms_error_pm", "model_bond_rms_data_pm",
                 "model_generated_dU_kT", "model_generated_wrong_chirality", "model_heat_residual_lt_0.1",
                 "model_heat_residual_0.1_1", "model_heat_residual_gt_1", "model_heat_residual_robust_lt_0.1",
                 "model_heat_residual_robust_0.1_1", "model_heat_residual_robust_gt_1", "model_generated_path_ess"]
#: order of methods in that table (pita_annealed: the anneal's weighted set before relaxation;
#: smc_bridged: smc's final bridged set before its relaxation)
METHOD_ORDER = {"pita": 0, "pita_annealed": 1, "md": 2, "replica_exchange": 3, "smc": 4, "smc_bridged": 5}
#: columns of the before/after-relaxation table: what the anneal delivers, what the relaxation makes of it
RELAXATION_COLUMNS = ["energy_w1", "energy_w1_floor", "torus_w2", "rama_kl", "dF_alpha_R", "dF_alpha_L", "ess",
                      "n_energy_evals_total", "relax_accept", "relax_torsion_accept"]
#: columns of the per-residue Ramachandran table of a rung (metrics.json's per_residue)
RESIDUE_COLUMNS = ["rama_kl", "torus_w2", "p_C7eq", "p_alpha_R", "p_alpha_L", "dF_alpha_R", "dF_alpha_L"]
#: non-scalar or bookkeeping keys left out of the CSV body
_SKIP = {"plots", "residues", "per_residue", "_path"}


def load_metrics(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read metrics.json files; each dict gets `_path`. PitaInputError names a bad file."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise PitaInputError(f"{p}: metrics file not found")
        try:
            m = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PitaInputError(f"{p}: not a readable JSON metrics file ({exc})") from None
        if not isinstance(m, dict):
            raise PitaInputError(f"{p}: expected a JSON object of metrics")
        _check_metrics(m, p)
        m.setdefault("method", "pita")
        m["_path"] = str(p)
        for block in ("cross_check", "basin_reference"):  # summary.csv: a block's scalars as <block>_<key>
            if isinstance(m.get(block), dict):
                m.update({f"{block}_{k}": v for k, v in m[block].items() if _scalar(v)})
        out.append(m)
    if not out:
        raise PitaInputError("--metrics: no metrics files given")
    return out


#: keys of a metrics file that are not numbers (everything else in KEY_COLUMNS is a number or null)
_TEXT_KEYS = {"method", "system", "weighted"}


def _check_metrics(m: dict, path: Path) -> None:
    """What the report sorts, compares and formats must have its type: the rung an integer, the
    temperature a positive number, a method name, and every metric of the summary a number or null."""
    if "temperature" not in m or not (finite_number(m["temperature"]) and m["temperature"] > 0):
        raise PitaInputError(f"{path}: 'temperature' must be a positive number, got {brief(m.get('temperature'))}")
    rung = m.get("rung")
    if rung is not None and (isinstance(rung, bool) or not isinstance(rung, int)):
        raise PitaInputError(f"{path}: 'rung' must be an integer, got {brief(rung)}")
    if not isinstance(m.get("method", "pita"), str):
        raise PitaInputError(f"{path}: 'method' must be a name, got {brief(m.get('method'))}")
    for key in KEY_COLUMNS:
        value = m.get(key)
        if key in _TEXT_KEYS or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PitaInputError(f"{path}: '{key}' must be a number or null, got {brief(value)}")


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def summary_columns(rows: Sequence[dict]) -> list[str]:
    keys = {k for m in rows for k, v in m.items() if _scalar(v) and k not in _SKIP}
    head = [k for k in KEY_COLUMNS if k in keys]
    rest = sorted(keys - set(head))
    return head + rest + ["metrics_file"]


def write_summary_csv(rows: Sequence[dict], path: str | os.PathLike) -> list[str]:
    """One row per metrics dict; returns the column names. Missing values are empty cells."""
    cols = summary_columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for m in rows:
        vals = []
        for c in cols:
            v = m.get("_path") if c == "metrics_file" else m.get(c)
            vals.append("" if v is None else v)
        w.writerow(vals)
    atomic_write_text(path, buf.getvalue())
    return cols


# ------------------------------------------------------------------------------------ HTML
def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def _cell(m: dict, key: str) -> str:
    v = m.get(key)
    err = m.get(f"{key}_ref_err") if key.startswith("dF_") else None
    text = _fmt(v)
    se = m.get(f"{key}_se")
    if v is not None and isinstance(se, (int, float)) and not isinstance(se, bool):
        text += f" ± {_fmt(se)}"
    if key.startswith("dF_") and m.get(f"{key}_ref") is not None:
        text += f" (ref {_fmt(m.get(f'{key}_ref'))}" + (f" ± {_fmt(err)}" if err is not None else "") + ")"
    return html.escape(text)


def _table(rows: Sequence[dict], cols: Sequence[str], lead: Sequence[str] = ("rung", "method", "temperature")) -> str:
    present = [c for c in cols if any(m.get(c) is not None for m in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in list(lead) + present)
    body = []
    for m in rows:
        tds = [f"<td>{html.escape(_fmt(m.get(c)))}</td>" for c in lead]
        tds += [f"<td>{_cell(m, c)}</td>" for c in present]
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"/>' \
           f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"


def _ess_figure(rows: Sequence[dict]) -> str:
    """ESS/N per rung (log scale): path weights, after the exact final correction, and reweighting
    the previous rung's samples; plus the model's log-weight spread. Embedded PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda m: m.get("rung") or 0)
    labels = [f"{m.get('rung')}: {_fmt(m.get('temperature'))}" for m in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.2))
    series = (("ess_path_fraction", "path (A)"), ("ess_final_fraction", "after final correction"),
              ("ess_reweight_previous_fraction", "reweighting previous rung"))
    width = 0.8 / len(series)
    for i, (key, name) in enumerate(series):
        vals = [m.get(key) if isinstance(m.get(key), (int, float)) else float("nan") for m in rows]
        ax.bar([j + (i - 1) * width for j in range(len(rows))], vals, width, label=name)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylabel("ESS / N")
    ax.legend(fontsize=7)
    sd = [m.get("model_log_weight_sd") if isinstance(m.get("model_log_weight_sd"), (int, float)) else float("nan")
          for m in rows]
    bx.plot(range(len(rows)), sd, "o-")
    bx.set_xticks(range(len(rows)), labels)
    bx.set_ylabel("model log-weight sd (held out)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img alt="ess per rung" src="data:image/png;base64,{data}"/>'
            "<figcaption>ESS per rung and the model's log-weight spread</figcaption></figure>")


# ------------------------------------------------------------------------ report figures
def _plain_figure(**kw: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: str | os.PathLike) -> None:
    from .provenance import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON object from `path`; one line naming the file if it is unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PitaInputError(f"{path}: not a readable {what} ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise PitaInputError(f"{path}: expected a JSON object")
    return data


def _rung_of_path(path: str | os.PathLike) -> str:
    import re

    m = re.search(r"rung_(\d+)", str(path))
    return m.group(1) if m else Path(path).parent.name


def ess_traces_figure(diagnostics: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """ESS/N along each rung's FK-SMC (anneal_diagnostics.json's ess_trace), resampling steps
    marked, log scale; one line per rung."""
    fig = _plain_figure(figsize=(7.5, 4))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.9)
    ax = fig.add_subplot()
    for c, path in enumerate(diagnostics):
        d = read_json_object(path)
        frac = [float(v) for v in d.get("ess_trace") or []]  # already ESS/N, one value per level
        if not frac:
            continue
        color = f"C{c % 10}"
        ax.plot(range(len(frac)), frac, "-", color=color, label=f"rung {_rung_of_path(path)} "
                f"({len(d.get('resample_steps') or [])} resamplings, final ESS/N {_fmt(d.get('ess_final_fraction'))})")
        steps = [s for s in d.get("resample_steps") or [] if 0 <= s < len(frac)]
        ax.plot(steps, [frac[s] for s in steps], "v", color=color, ms=4)
    ax.set_yscale("log")
    ax.set_xlabel("FK-SMC level")
    ax.set_ylabel("ESS / N (markers: resampling)")
    ax.set_title("ESS along the anneal, per rung")
    if ax.lines:
        ax.legend(fontsize=7)
    _save_png(fig, out)


def losses_figure(losses: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """Training loss (total and each term) against step, one panel per rung (losses.csv)."""
    n = max(len(losses), 1)
    fig = _plain_figure(figsize=(4.2 * n, 3.6))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
    for c, path in enumerate(losses):
        try:
            rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise PitaInputError(f"{path}: not a readable losses CSV ({exc.__class__.__name__})") from None
        ax = fig.add_subplot(1, n, c + 1)
        cols = [k for k in (rows[0] if rows else {}) if k not in ("step", "grad_norm", "lr")]
        for k in cols:
            pts = [(float(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]
            pts = [(s, v) for s, v in pts if math.isfinite(v) and v > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if k == "loss" else "--", label=k,
                        lw=2 if k == "loss" else 1)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.set_title(f"rung {_rung_of_path(path)}")
        if ax.lines:
            ax.legend(fontsize=6)
    _save_png(fig, out)


def accuracy_figure(rows: Sequence[dict], out: str | os.PathLike) -> None:
    """Torus W2 and energy W1 (± se) against the energy evaluations spent (log x): PITA's rungs
    (labelled with their temperature) and the baselines at the target."""
    fig = _plain_figure(figsize=(9, 3.8))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.28)
    for c, key in enumerate(("torus_w2", "energy_w1")):
        ax = fig.add_subplot(1, 2, c + 1)
        methods = sorted({str(m.get("method", "pita")) for m in rows}, key=lambda k: (METHOD_ORDER.get(k, 9), k))
        for j, method in enumerate(methods):
            pts = [m for m in rows if str(m.get("method", "pita")) == method
                   and isinstance(m.get(key), (int, float)) and isinstance(m.get("n_energy_evals_total"), (int, float))
                   and m["n_energy_evals_total"] > 0]
            pts.sort(key=lambda m: m["n_energy_evals_total"])
            if not pts:
                continue
            x = [m["n_energy_evals_total"] for m in pts]
            y = [m[key] for m in pts]
            e = [m.get(f"{key}_se") if isinstance(m.get(f"{key}_se"), (int, float)) else 0.0 for m in pts]
            ax.errorbar(x, y, yerr=e, fmt="o-" if method == "pita" else "s", color=f"C{j % 10}", capsize=3,
                        label=method)
            if method == "pita":
                for m, xx, yy in zip(pts, x, y):
                    ax.annotate(f"{_fmt(m.get('temperature'))}", (xx, yy), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("energy evaluations (n_energy_evals_total)")
        ax.set_ylabel(key + (" (rad)" if key == "torus_w2" else " (kT)"))
        ax.set_title(f"{key} against cost (PITA rungs: T)")
        if ax.lines or ax.collections:
            ax.legend(fontsize=7)
    _save_png(fig, out)


def _figure_html(path: str | os.PathLike, caption: str) -> str:
    p = Path(path)
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(p.name)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _cost_html(cost: Sequence[dict]) -> str:
    from .cost import COST_COLUMNS

    head = "".join(f"<th>{html.escape(c)}</th>" for c in COST_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in COST_COLUMNS) + "</tr>"
                   for r in cost)
    return ("<h2>Cost per method</h2><p class='note'>From the Snakemake benchmarks of every job: wall_time_s is the "
            "sum of the method's jobs' wall times (not the elapsed time of a parallel run), cpu_hours their CPU "
            "time, gpu_hours the wall time of jobs that ran with a GPU requested; n_energy_evals_total is PITA's "
            "final rung's total and each baseline's own. Evaluation (reference sets, evaluate jobs) is shared and "
            f"counted for no method.</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _cross_check_html(rows: Sequence[dict]) -> str:
    with_cc = [m for m in rows if isinstance(m.get("cross_check"), dict)]
    if not with_cc:
        return ""
    cols = ["energy_w1", "torus_w2", "rama_kl", "tica_w2", "dF_alpha_R", "dF_alpha_L"]
    parts = []
    for m in with_cc:
        cc = m["cross_check"]
        parts.append({"method": m.get("method"), "rung": m.get("rung"), "temperature": m.get("temperature"),
                      "reference": m.get("reference"), "cross-check reference": cc.get("reference"),
                      **{c: cc.get(c) for c in cols}, **{f"{c}_ref": cc.get(f"{c}_ref") for c in cols},
                      **{f"{c}_ref_err": cc.get(f"{c}_ref_err") for c in cols}})
    return ("<h2>Cross-check against a second reference</h2><p class='note'>The same samples against "
            "<code>reference.cross_check</code> (no bootstrap): where the two references disagree (e.g. a basin "
            "one of them never visits), read the metric against the one that samples it.</p>"
            + _table(parts, ["cross-check reference"] + cols, lead=("method", "rung", "temperature")))


def _basin_reference_html(rows: Sequence[dict]) -> str:
    """Every set's basin free energies against reference.basin_free_energies (umbrella sampling + MBAR)."""
    with_br = [m for m in rows if isinstance(m.get("basin_reference"), dict)]
    if not with_br:
        return ""
    parts = []
    for m in sorted(with_br, key=lambda m: (METHOD_ORDER.get(str(m.get("method")), 9), str(m.get("rung")))):
        br = m["basin_reference"]
        row = {"method": m.get("method"), "rung": m.get("rung"), "temperature": m.get("temperature")}
        for b in ("alpha_R", "alpha_L"):
            row[f"dF_{b}"] = br.get(f"dF_{b}")
            row[f"dF_{b}_ref"] = br.get(f"dF_{b}_ref")
            row[f"dF_{b}_ref_err"] = br.get(f"dF_{b}_ref_se")
            row[f"dF_{b}_diff"] = br.get(f"dF_{b}_diff")
            row[f"dF_{b}_diff_se"] = br.get(f"dF_{b}_diff_se")
            row[f"z_{b}"] = br.get(f"dF_{b}_z")
        parts.append(row)
    cols = ["dF_alpha_R", "dF_alpha_R_diff", "z_alpha_R", "dF_alpha_L", "dF_alpha_L_diff", "z_alpha_L"]
    return ("<h2>Basin free energies against the umbrella-sampling reference</h2><p class='note'>"
            "<code>reference.basin_free_energies</code>: umbrella sampling on the (phi, psi) grid unbiased with MBAR "
            "(<code>pita umbrella</code>), a second estimate by a method independent of the reference set's. "
            "diff = samples − reference ± both errors in quadrature; z = diff / that error.</p>"
            + _table(parts, cols, lead=("method", "rung", "temperature")))


def _residue_table(m: dict) -> str:
    """Per-residue Ramachandran metrics (one row per residue; p_* with the reference's in brackets)."""
    per = m.get("per_residue")
    if not isinstance(per, dict) or not per:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["residue"] + RESIDUE_COLUMNS)
    body = []
    for lab, res in per.items():
        res = res if isinstance(res, dict) else {}
        tds = [f"<td>{html.escape(str(lab))}</td>"]
        for c in RESIDUE_COLUMNS:
            text = _cell(res, c)
            if c.startswith("p_") and res.get(f"{c}_ref") is not None:
                text += html.escape(f" (ref {_fmt(res.get(f'{c}_ref'))})")
            tds.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<h3>Ramachandran per residue</h3><table class='residues'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _rung_section(m: dict) -> str:
    unit = " K" if m.get("units", "kJ/mol,nm") == "kJ/mol,nm" else " (reduced units)"
    title = f"Rung {_fmt(m.get('rung'))} — {m.get('method', 'pita')}, T = {_fmt(m.get('temperature'))}{unit}"
    items = [(k, v) for k, v in sorted(m.items()) if k not in ("plots", "_path", "per_residue")]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in items)
    imgs = []
    base = Path(m["_path"]).parent
    for name in m.get("plots") or []:
        p = base / name
        if p.exists():
            imgs.append(_image(p))
        else:
            log.warning("%s: plot %s listed but missing", m["_path"], p)
    return (f"<section><h2>{html.escape(title)}</h2><p class='path'>{html.escape(m['_path'])}</p>"
            f"{_residue_table(m)}<div class='plots'>{''.join(imgs)}</div>"
            f"<details><summary>all values</summary><table class='kv'>{rows}</table></details></section>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th{background:#f2f2f2}
table.kv th{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}
img{max-width:680px;border:1px solid #eee}
.path{color:#777;font-size:0.8em}
.note{color:#555}
.warn{color:#a00}
"""


def _baseline_table(rows: Sequence[dict]) -> str:
    """PITA's final rung beside the baselines at the target (coldest) temperature: metrics,
    energy evaluations spent and the budget they were given, swap acceptance."""
    temps = [m.get("temperature") for m in rows if m.get("temperature") is not None]
    if not temps:
        return ""
    target = min(temps)
    at = [m for m in rows if m.get("temperature") is not None and math.isclose(m["temperature"], target)]
    at.sort(key=lambda m: (METHOD_ORDER.get(str(m.get("method")), 9), str(m.get("method")), -(m.get("rung") or 0)))
    unit = " K" if at and at[0].get("units", "kJ/mol,nm") == "kJ/mol,nm" else ""
    return (f"<h3>PITA and baselines at the target temperature T = {html.escape(_fmt(target))}{unit}</h3>"
            "<p class='note'>Baselines spend at most n_energy_evals_budget: the PITA run's evaluations as "
            "planned from its settings before it ran (`pita budget`: the rung-0 set, then per rung one "
            "evaluation per annealed particle and the relaxation's steps), or, with baselines.budget: spent, "
            "its final rung's n_energy_evals_total; swap_acceptance_mean is replica exchange's overall swap "
            "acceptance.</p>" + _budget_check(at)
            + _table(at, BASELINE_COLUMNS, lead=("method", "rung", "temperature")))


def _budget_check(at: Sequence[dict]) -> str:
    """What PITA spent against the budget its baselines were given, when the two differ: more (a
    relaxation ran the bridge, which a planned budget leaves out, or the budget came from other
    settings) is not equal cost; fewer (particles dropped before their final correction) gives the
    baselines a little more than PITA spent."""
    spent = [m.get("n_energy_evals_total") for m in at if m.get("method", "pita") == "pita"]
    budgets = [m.get("n_energy_evals_budget") for m in at if m.get("method") in BASELINE_METHODS]
    spent = [int(v) for v in spent if isinstance(v, (int, float)) and not isinstance(v, bool)]
    budgets = [int(v) for v in budgets if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not spent or not budgets:
        return ""
    pita, budget = max(spent), min(budgets)
    if pita > budget:
        return (f"<p class='warn'><b>Not at equal cost:</b> PITA spent {pita} energy evaluations, more than the "
                f"{budget} its baselines were given (a relaxation ran the bridge, whose cost a planned budget "
                f"leaves out, or the budget was planned from other settings; baselines.budget: spent gives them "
                f"the run's own total).</p>")
    if pita < max(budgets):
        return (f"<p class='note'>PITA spent {pita} energy evaluations, {max(budgets) - pita} fewer than the budget "
                f"planned from its settings (particles dropped before their final correction); the baselines "
                f"could spend up to {max(budgets)}.</p>")
    return ""


def _relaxation_table(rows: Sequence[dict]) -> str:
    """Per rung, the anneal's weighted set (method pita_annealed) above the relaxed set made from it."""
    annealed = {m.get("rung"): m for m in rows if m.get("method") == "pita_annealed"}
    relaxed = sorted((m for m in rows if m.get("method", "pita") == "pita" and m.get("rung") in annealed),
                     key=lambda m: m.get("rung") or 0)
    pairs = []
    for m in relaxed:
        pairs += [annealed[m.get("rung")], m]
    if not pairs:
        return ""
    # the no-model counterpart at the target: smc's final bridged set and its relaxed set
    final = pairs[-1]
    pairs += [m for method in ("smc_bridged", "smc") for m in rows
              if m.get("method") == method and m.get("temperature") is not None
              and final.get("temperature") is not None and math.isclose(m["temperature"], final["temperature"])]
    return ("<h2>Before and after relaxation</h2><p class='note'>Per rung, the anneal's weighted set (the learned "
            "sampler's own result, after the exact final correction; pita_annealed) and the relaxed set made "
            "from it (pita). The relaxation's MCMC moves at the rung's temperature can move particles between "
            "basins; where they decorrelate them completely, the relaxed set's basin free energies are the "
            "relaxation's, whatever the anneal delivered, and only the pita_annealed row measures the "
            "model. At the target, the no-model baseline's two sets follow: smc's bridged set (adaptive "
            "tempering with the true energy from its own previous rung, before its relaxation; smc_bridged) "
            "and its relaxed set (smc). pita_annealed against smc_bridged is what the learned proposal "
            "delivers against tempering without a model, before the relaxation both share.</p>"
            + _table(pairs, RELAXATION_COLUMNS))


def render_html(rows: Sequence[dict], title: str = "PITA evaluation report", cost: Sequence[dict] | None = None,
                figures: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report as one HTML string (plots embedded); `cost`: pita.cost.cost_table rows;
    `figures`: (PNG path, caption) shown after the summary."""
    methods = sorted({str(m.get("method", "pita")) for m in rows})
    pita_rows = [m for m in rows if m.get("method", "pita") == "pita"] or list(rows)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>Generated {html.escape(now_iso())} by pita {html.escape(__version__)} from "
        f"{len(rows)} metrics file(s). Energies in kT; free-energy differences Delta F = -ln(p_basin/p_C7eq) "
        "in kT with the reference value and its block-averaging error in brackets; W2 on the torus in radians; "
        "± is the bootstrap standard error of the value (samples and reference resampled).</p>",
        "<h2>Summary</h2>",
        _table(pita_rows, HEADLINE),
    ]
    if len(methods) > 1:
        parts.append(_baseline_table(rows))
    if cost:
        parts.append(_cost_html(cost))
    parts.append(_cross_check_html(rows))
    parts.append(_basin_reference_html(rows))
    if figures:
        parts.append("<div class='plots'>" + "".join(_figure_html(p, c) for p, c in figures) + "</div>")
    model_rows = [m for m in pita_rows if any(m.get(c) is not None for c in MODEL_COLUMNS)]
    if model_rows:
        parts += ["<h2>Does the model carry the result?</h2>",
                  "<p class='note'>Per rung, from the anneal that made it and the model behind it (held-out "
                  "samples of the previous rung): ESS/N of the path weights, after the exact final correction, "
                  "and of simply reweighting the previous rung's samples (the trivial proposal the model must "
                  "beat); the spread of the final log-weights a perfect sample would get "
                  "(gamma E(x, sigma_min) - U/kT); R^2 of E against U/kT; the median |s + grad E| / |s| "
                  "(drift vs weights) by sigma band; and the model's own samples at gamma = 1: RMS bond-length "
                  "error (pm; the data's own spread beside it), median energy minus the data's (kT), wrong "
                  "chirality.</p>",
                  _table(model_rows, MODEL_COLUMNS, lead=("rung", "temperature")), _ess_figure(model_rows)]
    parts.append(_relaxation_table(rows))
    parts.append("<h2>Methods compared</h2>")
    if len(methods) > 1:
        order = sorted(rows, key=lambda m: (-(m.get("temperature") or 0), str(m.get("method"))))
        parts.append(_table(order, HEADLINE, lead=("temperature", "method", "rung")))
    else:
        parts.append(f"<p class='note'>Only method '{html.escape(methods[0])}' so far; baselines "
                     "(metrics.json with \"method\": \"md\" / \"replica_exchange\") appear here "
                     "when passed to <code>pita report</code>.</p>")
    parts += [_rung_section(m) for m in rows]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def check_report_outputs(out_html: str | os.PathLike | None, summary_csv: str | os.PathLike | None) -> None:
    """PitaInputError (one line) unless every output can be written: a file path, not a folder,
    in a writable folder, and not both options naming the same file."""
    check_output_path(out_html, "--out")
    check_output_path(summary_csv, "--summary")
    if out_html is not None and summary_csv is not None and \
            Path(out_html).resolve() == Path(summary_csv).resolve():
        raise PitaInputError(f"--summary {summary_csv}: the same file as --out")


def write_report(metrics_paths: Iterable[str | os.PathLike], out_html: str | os.PathLike | None = None,
                 summary_csv: str | os.PathLike | None = None, title: str = "PITA evaluation report", *,
                 diagnostics: Sequence[str | os.PathLike] = (), losses: Sequence[str | os.PathLike] = (),
                 benchmarks: Sequence[str | os.PathLike] = (), gpu_jobs: Sequence[str] = (),
                 cost_csv: str | os.PathLike | None = None, ess_plot: str | os.PathLike | None = None,
                 losses_plot: str | os.PathLike | None = None,
                 accuracy_plot: str | os.PathLike | None = None) -> list[dict]:
    """Read metrics files, write summary CSV and/or HTML report (atomically); returns the rows.

    Optional: `benchmarks` (Snakemake benchmark tsv files) -> the cost table (`cost_csv`, and in
    the HTML; the target rows get method_wall_time_s / method_cpu_hours of their whole method);
    `ess_plot` from the anneal `diagnostics`, `losses_plot` from `losses` (losses.csv per rung),
    `accuracy_plot` (accuracy against energy evaluations). Both main output paths are checked
    before anything is read or written (PitaInputError naming the option), so a bad --out never
    leaves a fresh summary.csv behind.
    """
    check_report_outputs(out_html, summary_csv)
    for path, option in ((cost_csv, "--cost"), (ess_plot, "--ess-plot"), (losses_plot, "--losses-plot"),
                         (accuracy_plot, "--accuracy-plot")):
        check_output_path(path, option)
    rows = load_metrics(metrics_paths)
    cost = None
    if benchmarks:
        from .cost import cost_table

        cost = cost_table(benchmarks, rows, gpu_jobs)
        by_method = {c["method"]: c for c in cost}
        temps = [m["temperature"] for m in rows if isinstance(m.get("temperature"), (int, float))]
        target = min(temps) if temps else None
        for m in rows:  # the whole method's cost beside its result at the target
            c = by_method.get(str(m.get("method", "pita")))
            if c is not None and target is not None and isinstance(m.get("temperature"), (int, float)) \
                    and math.isclose(m["temperature"], target):
                m["method_wall_time_s"], m["method_cpu_hours"] = c["wall_time_s"], c["cpu_hours"]
    figures = []
    if ess_plot is not None and diagnostics:
        ess_traces_figure(diagnostics, ess_plot)
        figures.append((ess_plot, "ESS/N along each rung's anneal (markers: resampling steps)"))
    if losses_plot is not None and losses:
        losses_figure(losses, losses_plot)
        figures.append((losses_plot, "training losses per rung"))
    if accuracy_plot is not None:
        accuracy_figure(rows, accuracy_plot)
        figures.append((accuracy_plot, "accuracy against energy evaluations (± bootstrap se)"))
    if cost is not None and cost_csv is not None:
        from .cost import write_cost_csv

        write_cost_csv(cost, cost_csv)
    page = render_html(rows, title, cost=cost, figures=figures) if out_html is not None else None
    if summary_csv is not None:
        write_summary_csv(rows, summary_csv)
        log.info("wrote %s", summary_csv)
    if page is not None:
        atomic_write_text(out_html, page)
        log.info("wrote %s", out_html)
    return rows


__all__ = ["check_report_outputs", "load_metrics", "write_summary_csv", "summary_columns", "render_html", "write_report", "KEY_COLUMNS"]
