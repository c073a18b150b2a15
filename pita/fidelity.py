"""Does the model carry the result? Fidelity of a rung's models on held-out samples.

Three families of numbers, each a known failure mode of a learned sampler:

* energy fidelity: the spread of gamma E(x, sigma_min) - U(x)/kT_{k+1} over held-out samples x of
  rung k. For samples that were exactly right this is the spread of the final log-weights
  (U/kT_{k+1} = gamma U/kT_k), so exp(-spread^2) is roughly the final ESS/N it allows; also the
  squared correlation R^2 of E(., sigma_min) with U/kT_k.
* score/energy consistency: |s + grad E| / |s| on noised held-out samples, per band of sigma
  along the sampling path. The drift uses s and the weights use E: where they disagree, the
  weights correct a path that the drift did not follow.
* heat-equation residual: the spread over noised held-out samples, at one sigma per band, of
  tau r = sigma^2 (dE/dtau - (laplacian E - |grad E|^2)/2), tau = sigma^2. The noised data's
  -log density has the same r at every x; at gamma = 1 with the score -grad E the FK log-weight
  rate is r, so this spread, per unit ln tau, is what the path weights accumulate band by band.
  Beside the sd, a robust spread (1.4826 times the median absolute deviation, the sd for a normal
  bulk): a few noised samples with a pair squeezed far inside the data's shortest distance, where
  the model has seen almost no training data, can carry the sd alone.
* generated samples at gamma = 1 (no annealing): the model's own samples against the data:
  RMS bond-length error (against the data's own thermal spread of bond lengths), median U
  minus the data's median U in kT, and the fraction of wrong chirality. These cost one true
  energy per sample, and their path ESS (no resampling; a consistent model keeps it near 1); they
  are counted apart (`generated.n_energy_evals` of the report, never added to the run's totals),
  like reference MD. A generation whose every particle diverges is reported (`failed`), not raised:
  it must not cost the rung its trained model.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from .coords import sample_mean_free_normal

log = logging.getLogger(__name__)

#: sigma bands (normalised units) of the score/energy consistency check
SIGMA_BANDS = ((0.01, 0.03), (0.03, 0.1), (0.1, 0.3), (0.3, 1.0), (1.0, 3.0), (3.0, 10.0))


@torch.no_grad()
def energies(model: Any, x: torch.Tensor, sigma: float, batch: int = 2048) -> torch.Tensor:
    """E(x, sigma) of the model, in batches, as float64 (no graph)."""
    out = [model.energy(x[i:i + batch], sigma).double() for i in range(0, x.shape[0], batch)]
    return torch.cat(out)


def energy_fidelity(model: Any, x: torch.Tensor, reduced_energy: torch.Tensor, gamma: float = 1.0) -> dict:
    """Spread of gamma (E(x, sigma_min) - U/kT_k) and R^2 of E against U/kT_k on samples x (N, D)."""
    e = energies(model, x, model.config["sigma_min"])
    u = reduced_energy.to(e)
    r = e - u
    corr = torch.corrcoef(torch.stack([e, u]))[0, 1].item() if len(e) > 2 else float("nan")
    return {"n": int(len(e)), "residual_sd": float(r.std()), "log_weight_sd": float(gamma * r.std()),
            "gamma": float(gamma), "r2": float(corr**2) if math.isfinite(corr) else float("nan")}


def _path_bands(model: Any, bands) -> list[tuple[float, float]]:
    """The bands below the model's sigma_max, the last one cut there."""
    smax = float(model.config["sigma_max"])
    return [(lo, min(hi, smax)) for lo, hi in bands if lo < smax]


def score_consistency(model: Any, x0: torch.Tensor, n_atoms: int | None, bands=SIGMA_BANDS, per_band: int = 256,
                      seed: int = 0) -> list[dict]:
    """Median |s + grad E| / |s| over noised samples, per sigma band (log-uniform sigma in each band)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for lo, hi in _path_bands(model, bands):
        idx = torch.randint(len(x0), (per_band,), generator=gen)
        x = x0[idx].double().cpu()
        sigma = torch.exp(torch.empty(per_band, dtype=torch.float64).uniform_(math.log(lo), math.log(hi), generator=gen))
        eps = sample_mean_free_normal(tuple(x.shape), n_atoms, generator=gen, dtype=x.dtype)
        xs = (x + sigma[:, None] * eps).to(x0.dtype).to(model.device)
        sig = sigma.to(x0.dtype).to(model.device)
        s = model.score(xs, sig).detach()
        g = -model.energy_score(xs, sig).detach()
        ratio = (s + g).norm(dim=-1) / s.norm(dim=-1).clamp_min(1e-12)
        out.append({"sigma_lo": lo, "sigma_hi": hi, "median_ratio": float(ratio.median()),
                    "mean_ratio": float(ratio.mean())})
    return out


def heat_equation_residual(model: Any, x0: torch.Tensor, n_atoms: int | None, bands=SIGMA_BANDS,
                           per_band: int = 128, seed: int = 0, keep_frames: bool = False) -> list[dict]:
    """Spread over noised samples of tau r at sigma = the band's geometric middle (exact laplacian): sd,
    robust sd (1.4826 MAD) and the fraction of samples more than 5 robust sd from the median.
    keep_frames: each band also carries its noised frames `x` and their `tau_r` (tensors, for diagnosis)."""
    from .fksmc import divergence
    from .losses import HeatEquationResidual

    gen = torch.Generator(device="cpu").manual_seed(seed)
    energy_model = model.energy_model
    out = []
    for lo, hi in _path_bands(model, bands):
        sigma = math.sqrt(lo * hi)
        idx = torch.randint(len(x0), (per_band,), generator=gen)
        eps = sample_mean_free_normal((per_band, x0.shape[1]), n_atoms, generator=gen, dtype=torch.float64)
        xs = (x0[idx].double().cpu() + sigma * eps).to(x0.dtype).to(model.device).requires_grad_(True)
        sg = torch.full((per_band,), sigma, dtype=x0.dtype, device=model.device, requires_grad=True)
        with torch.enable_grad():
            energy = energy_model(xs, sg)
            gx, gs = torch.autograd.grad(energy.sum(), (xs, sg), create_graph=True)
            lap = divergence(gx, xs, "exact", n_atoms=n_atoms)
        tau_r = HeatEquationResidual.rate(sigma**2, gs / (2 * sigma), lap, gx).detach().double()
        dev = (tau_r - tau_r.median()).abs()
        robust = 1.4826 * float(dev.median())
        out.append({"sigma": sigma, "sigma_lo": lo, "sigma_hi": hi, "sd_tau_r": float(tau_r.std()),
                    "robust_sd_tau_r": robust, "tail_fraction": float((dev > 5 * robust).double().mean())})
        if keep_frames:
            out[-1].update(x=xs.detach().cpu(), tau_r=tau_r.cpu())
    return out


def bond_pairs(system: Any) -> np.ndarray | None:
    top = getattr(system, "topology", None)
    if top is None or not hasattr(top, "bonds"):
        return None
    pairs = [(a.index, b.index) for a, b in top.bonds]
    return np.asarray(pairs, dtype=np.int64) if pairs else None


def bond_lengths(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(N, n_bonds) bond lengths of configurations (N, n_atoms, 3)."""
    return np.linalg.norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], axis=-1)


def generated_quality(model: Any, system: Any, data_positions: np.ndarray, data_energy: np.ndarray,
                      temperature: float, n_samples: int = 256, n_steps: int = 100, seed: int = 0,
                      device: Any = "cpu") -> dict:
    """The model's own samples at gamma = 1 (drift only, no resampling) against data at `temperature`."""
    from .chirality import ChiralityChecker
    from .fksmc import AllParticlesDiverged, anneal

    try:
        res = anneal(model, 1.0, n_samples, n_steps, resample_threshold=0.0, system=system, temperature=temperature,
                     fix_chirality=False, seed=seed, device=device, divergence_method="hutchinson")
    except AllParticlesDiverged as err:  # every particle diverged: a diagnosis, not a reason to lose the trained model
        log.warning("fidelity: generation at gamma = 1 failed (%s)", err)
        return {"n": int(n_samples), "n_steps": int(n_steps), "n_energy_evals": 0, "n_finite": 0,
                "path_ess_fraction": 0.0, "failed": str(err)}
    pos = res.positions.detach().cpu().numpy() if res.positions is not None else None
    out: dict[str, Any] = {"n": int(n_samples), "n_steps": int(n_steps), "n_energy_evals": int(res.n_energy_evals),
                           "n_finite": 0 if pos is None else int(len(pos)),
                           "path_ess_fraction": float(res.ess_path) / max(int(n_samples), 1)}
    if pos is None or len(pos) == 0:
        return out
    kT = system.kT(temperature)
    out["median_energy_minus_data_kT"] = float((np.median(res.energy) - np.median(data_energy)) / kT)
    pairs = bond_pairs(system)
    if pairs is not None:
        ref = bond_lengths(data_positions, pairs)
        mean = ref.mean(0)
        out["bond_rms_error_pm"] = float(np.sqrt(((bond_lengths(pos, pairs) - mean) ** 2).mean()) * 1000)
        out["bond_rms_data_pm"] = float(np.sqrt(((ref - mean) ** 2).mean()) * 1000)
    if getattr(system, "topology", None) is not None and getattr(system, "reference_positions", None) is not None:
        checker = ChiralityChecker.from_system(system)
        if checker.n_centers:
            out["wrong_chirality_fraction"] = float(1.0 - np.mean(np.asarray(checker.is_correct(pos))))
    return out


def held_out_data(samples: Any, system: Any, model: Any) -> dict:
    """A SampleSet as the fidelity checks take it: normalised x, U/kT, raw positions and energies."""
    from .coords import normalize

    L = float(model.config["length_scale"])
    pos = torch.as_tensor(samples.positions, dtype=torch.float64)
    x = normalize(pos, L) if system.n_atoms is not None else pos / L
    return {"x": x.float(), "reduced_energy": torch.as_tensor(samples.energy / system.kT(samples.temperature)),
            "positions": samples.positions if system.n_atoms is not None else None, "energy": samples.energy}


def model_fidelity(model: Any, system: Any, held_out: Any, *, next_temperature: float | None = None,
                   n_generated: int = 256, generation_steps: int = 100, seed: int = 0, device: Any = "cpu") -> dict:
    """All three families on the held-out TrainingData-like object (x, reduced_energy) and its raw set."""
    x, u = held_out["x"], held_out["reduced_energy"]
    T = float(model.config["temperature"])
    gamma = 1.0 if next_temperature is None else T / float(next_temperature)
    n_atoms = model.config["n_atoms"] if model.config["mean_free"] else None
    report = {"temperature": T, "next_temperature": next_temperature,
              "energy": energy_fidelity(model, x.to(model.device), u.to(model.device), gamma),
              "score_energy_consistency": score_consistency(model, x.to(model.device), n_atoms, seed=seed),
              "heat_equation_residual": heat_equation_residual(model, x.to(model.device), n_atoms, seed=seed)}
    if n_generated > 0 and held_out.get("positions") is not None:
        report["generated"] = generated_quality(model, system, held_out["positions"], held_out["energy"], T,
                                                n_samples=n_generated, n_steps=generation_steps, seed=seed,
                                                device=device)
    return report


def summary_scalars(diagnostics: dict) -> dict:
    """Flat `model_*` / `ess_*` / `relax_*` numbers for metrics.json and the report, from a
    model_fidelity.json ({"fidelity": ...}), an anneal_diagnostics.json (has "ess_final") or a
    relax_diagnostics.json (has "ess_in": the MALA and torsion-move acceptance of the relaxation)."""
    out: dict[str, Any] = {}
    if "ess_in" in diagnostics:  # a relaxation (Langevin records no acceptance, torsion moves do)
        if diagnostics.get("accept_rate") is not None:
            out["relax_accept"] = float(diagnostics["accept_rate"])
        if diagnostics.get("torsion_moves") and diagnostics.get("torsion_accept_rate") is not None:
            out["relax_torsion_accept"] = float(diagnostics["torsion_accept_rate"])
    if "ess_final" in diagnostics:
        n = max(int(diagnostics.get("n_particles_out") or 1), 1)
        out["ess_final_fraction"] = float(diagnostics["ess_final"]) / n
        out["ess_path_fraction"] = float(diagnostics.get("ess_path", float("nan"))) / n
        for key in ("n_ancestors", "ess_ancestors"):
            if diagnostics.get(key) is not None:
                out[key] = float(diagnostics[key])
        if diagnostics.get("ess_reweight_previous_fraction") is not None:
            out["ess_reweight_previous_fraction"] = float(diagnostics["ess_reweight_previous_fraction"])
    fid = diagnostics.get("fidelity")
    if isinstance(fid, dict):
        e = fid.get("energy") or {}
        out.update(model_energy_r2=e.get("r2"), model_energy_residual_sd=e.get("residual_sd"),
                   model_log_weight_sd=e.get("log_weight_sd"))
        for prefix, key, field in (("model_score_energy_gap", "score_energy_consistency", "median_ratio"),
                                   ("model_heat_residual", "heat_equation_residual", "sd_tau_r"),
                                   ("model_heat_residual_robust", "heat_equation_residual", "robust_sd_tau_r")):
            bands = fid.get(key) or []
            for name, lo, hi in (("lt_0.1", 0.0, 0.1), ("0.1_1", 0.1, 1.0), ("gt_1", 1.0, math.inf)):
                vals = [b[field] for b in bands if lo <= b["sigma_lo"] < hi and b.get(field) is not None]
                if vals:
                    out[f"{prefix}_{name}"] = float(np.mean(vals))
        g = fid.get("generated") or {}
        for key, name in (("bond_rms_error_pm", "model_bond_rms_error_pm"), ("bond_rms_data_pm", "model_bond_rms_data_pm"),
                          ("median_energy_minus_data_kT", "model_generated_dU_kT"),
                          ("wrong_chirality_fraction", "model_generated_wrong_chirality"),
                          ("path_ess_fraction", "model_generated_path_ess")):
            if g.get(key) is not None:
                out[name] = g[key]
    return {k: v for k, v in out.items() if v is not None}
