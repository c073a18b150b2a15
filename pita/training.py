"""Training one rung: the score model and the energy model on the rung's sample set(s).

    train(samples, system, config=..., init=prev.pt, out=model.pt, losses_csv=losses.csv, ...)

Data. Positions become flat normalised x~ = (x - centroid)/L (L frozen at rung 0 through the
checkpoint). Identical configurations (duplicates left by resampling) are dropped
(`duplicates: drop`; or kept once with their multiplicity as a weight, `duplicates: count`);
log_weight, when present, weights each sample's loss. Forces give the target-score term
grad(U/kT) = -L F / kT without any energy evaluation. The first sample set is the rung's: its
temperature is the model's. More sets (earlier rungs) need beta conditioning: the model then
sees cond = ln(T_ref / T), T_ref the hottest temperature (or the warm start's).

Model. sd (RMS of a coordinate of x~) and the schedule are measured at rung 0 and carried
along by warm starts. sigma_max defaults to 2 max|x~| over the set (diffusion.estimate_sigma_max).
Energy offset: U/kT ~ E(x, sigma_min) + energy_offset; it is set once before training to
mean(U/kT) - mean(E_init(x0, sigma_min)), so the energy-matching residual starts centred.

Warm start (`init`): weights, sd, L and schedule come from the previous rung's checkpoint.
Without beta conditioning the learned part of the energy and its bias are multiplied by
gamma = T_prev / T (energy_model.learned_scale), i.e.
    E_new(x, sigma) = gamma E_prev(x, sigma) + (1 - gamma) |x|^2 / (2 (sigma^2 + sd^2)),
which is gamma E_prev where the data dominate (U/kT_k = gamma U/kT_{k-1} at sigma_min) and
keeps the exact noise-dominated limit at large sigma. The score model is copied unchanged.

Noise levels: one draw per step from the mixture of EDM's lognormal and a log-uniform on
[sigma_min, sigma_max] (diffusion.SigmaMixture) serves both models, so the energy sees the
whole sampling path and the denoiser's output is reused (stop-gradient) as the distillation
target. Optimiser: Adam with linear warm-up, gradient-norm clipping, EMA weights (saved for
sampling). Random proper rotations (det = +1) of positions and forces for particle systems.

Resume: with a work directory, the full training state (model, EMA, optimiser, generators,
step, loss log) is saved every `checkpoint_every` steps under work_dir/train-<digest>/,
the digest covering the resolved config, the inputs' contents, the warm start, the seed,
the device type and the package version; a restarted job continues from the last state, and a
changed config starts afresh.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import __version__
from .coords import align_to_reference, mean_free_dim, normalize, random_rotations, remove_mean, sample_mean_free_normal
from .diffusion import LogNormalSigma, LogUniformSigma, SigmaMixture, estimate_sigma_max, measure_sd
from .device import resolve_device
from .errors import PitaInputError
from .losses import (DenoisingScoreMatching, EnergyDistillation, EnergyMatching, ForceMatching, HeatEquationResidual,
                     TargetScore)
from .models import DEFAULT_OPTIONS, BACKBONES, PitaModel, load_checkpoint, save_checkpoint
from .models.pita_model import SCORE_SOURCES
from .provenance import atomic_path, base_attrs, config_digest, file_digest
from .samples import SampleSet
from .settings import TRAIN_RUN_CONTROLS, TrainSettings, from_mapping, to_dict

log = logging.getLogger(__name__)

LOSS_NAMES = ("denoising_score_matching", "energy_distillation", "energy_matching", "target_score", "force_matching",
              "heat_equation")

#: the training settings' defaults as a nested dict (declared once, in pita.settings.TrainSettings)
DEFAULT_CONFIG: dict[str, Any] = {k: v for k, v in to_dict(TrainSettings()).items() if k != "warm_start"}
#: settings that do not change the result (left out of the resume digest)
RUN_CONTROLS = TRAIN_RUN_CONTROLS


# ---- configuration ----------------------------------------------------------------------
def resolve_config(user: dict | TrainSettings | None = None, where: str = "config") -> dict:
    """TrainSettings defaults updated by `user` as a nested dict; unknown keys and bad values raise
    PitaInputError naming "<where>: field '<key>'"."""
    settings = user if isinstance(user, TrainSettings) else from_mapping(TrainSettings, user or {}, where)
    s = settings.schedule
    if s.sigma_max is not None and s.sigma_max <= s.sigma_min:
        raise PitaInputError(f"{where}: field 'schedule.sigma_max': must be above sigma_min ({s.sigma_min:g}), "
                             f"got {s.sigma_max:g}")
    b = settings.model.backbone_options
    if b is not None and not all(isinstance(k, str) for k in b):
        raise PitaInputError(f"{where}: field 'model.backbone_options': keys must be option names")
    return {k: v for k, v in to_dict(settings).items() if k not in ("warm_start",)}


# ---- data -------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """Everything a training step draws from, as tensors over the N unique samples."""

    x: torch.Tensor  # (N, D) normalised coordinates x~
    reduced_energy: torch.Tensor  # (N,) U / kT of the sample's own temperature
    reduced_energy_grad: torch.Tensor | None  # (N, D) grad_x~ (U/kT) = -L F / kT, or None
    temperature: torch.Tensor  # (N,) temperature of each sample
    weight: torch.Tensor  # (N,) importance weight, mean 1
    file_index: torch.Tensor  # (N,) which input set
    primary_temperature: float
    n_energy_evals_total: int
    digests: list[str]
    rung: Any = None
    n_read: int = 0
    offset: torch.Tensor | None = None  # (N,) per-sample energy offset, set by the trainer
    cond: torch.Tensor | None = None  # (N,) ln(T_ref / T), set by the trainer
    aligned: bool = False  # configurations superposed on the reference structure

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device) -> "TrainingData":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return TrainingData(**moved)


def _array_digest(s: SampleSet) -> str:
    h = hashlib.sha256()
    for arr in (s.positions, s.energy, s.forces, s.log_weight):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(sorted((k, str(v)) for k, v in s.attrs.items() if k != "created")).encode())
    return h.hexdigest()[:16]


def alignment_reference(cfg: dict, system) -> np.ndarray | None:
    """The structure to align training data to, or None (see DEFAULT_CONFIG["align"])."""
    ref = getattr(system, "reference_positions", None)
    if cfg["align"] == "none" or ref is None or system.n_atoms is None:
        return None
    if cfg["align"] == "auto" and cfg["model"]["backbone"] in ("egnn", "pairnet"):
        return None
    return np.asarray(ref, dtype=np.float64)


def load_training_data(samples: Sequence[str | os.PathLike | SampleSet], system, length_scale: float,
                       duplicates: str = "drop", want_forces: bool = True,
                       align_to: np.ndarray | None = None) -> TrainingData:
    if not samples:
        raise PitaInputError("--samples: no sample set given")
    sets, digests, names = [], [], []
    for item in samples:
        if isinstance(item, SampleSet):
            name = f"<sample set {len(sets)}>"
            s = item.validate(name)
            digests.append(_array_digest(s))
        else:
            name = str(item)
            s = SampleSet.read(item, n_atoms=system.n_atoms)
            digests.append(file_digest(item))
        if system.n_atoms is None and (s.positions.ndim != 2 or s.positions.shape[1] != system.dim):
            raise PitaInputError(f"{name}: dataset 'positions' has shape {list(s.positions.shape)}; "
                                 f"system {system.name} needs [N, {system.dim}]")
        if str(s.attrs.get("system")) != system.name:
            raise PitaInputError(f"{name}: attribute 'system' is {s.attrs.get('system')!r} but training is for {system.name!r}")
        if s.attrs["units"] != system.units:
            raise PitaInputError(f"{name}: attribute 'units' is {s.attrs['units']!r} but {system.name} uses {system.units!r}")
        if not math.isclose(float(s.attrs["length_scale"]), length_scale, rel_tol=1e-6):
            log.warning("%s: length_scale attribute %s differs from the model's L = %s (using L = %s)",
                        name, s.attrs["length_scale"], length_scale, length_scale)
        sets.append(s)
        names.append(name)

    has_forces = all(s.forces is not None for s in sets)
    xs, energies, grads, temps, weights, files = [], [], [], [], [], []
    n_read = 0
    for i, s in enumerate(sets):
        n_read += len(s)
        flat = s.positions.reshape(len(s), -1)
        _, first, counts = np.unique(flat, axis=0, return_index=True, return_counts=True)
        order = np.argsort(first)
        keep, counts = first[order], counts[order]
        if len(keep) < len(s):
            log.info("%s: %d duplicate configurations (%d unique of %d)", names[i], len(s) - len(keep), len(keep), len(s))
        kT = system.kT(s.temperature)
        pos = torch.as_tensor(s.positions[keep], dtype=torch.float64)
        forces = torch.as_tensor(s.forces[keep], dtype=torch.float64) if has_forces and want_forces else None
        if align_to is not None:
            ref = torch.as_tensor(align_to, dtype=torch.float64)
            pos, forces = align_to_reference(pos, ref, forces if forces is not None else pos)
        x = normalize(pos, length_scale) if system.n_atoms is not None else pos / length_scale
        xs.append(x.float())
        energies.append(torch.as_tensor(s.energy[keep], dtype=torch.float64) / kT)
        if has_forces and want_forces:
            f = forces.reshape(len(keep), -1)
            grads.append((-length_scale * f / kT).float())
        w = np.ones(len(keep)) if s.log_weight is None else np.exp(s.log_weight[keep] - np.max(s.log_weight[keep]))
        if duplicates == "count":
            w = w * counts
        w = w / w.sum() * len(keep)  # each set weighs as many as its unique samples
        weights.append(torch.as_tensor(w))
        temps.append(torch.full((len(keep),), s.temperature, dtype=torch.float64))
        files.append(torch.full((len(keep),), i, dtype=torch.long))
    weight = torch.cat(weights)
    return TrainingData(
        x=torch.cat(xs), reduced_energy=torch.cat(energies),
        reduced_energy_grad=torch.cat(grads) if grads else None,
        temperature=torch.cat(temps), weight=(weight / weight.mean()).float(), file_index=torch.cat(files),
        primary_temperature=sets[0].temperature, aligned=align_to is not None,
        n_energy_evals_total=max(int(s.attrs.get("n_energy_evals_total", 0)) for s in sets),
        digests=digests, rung=sets[0].attrs.get("rung"), n_read=n_read,
    )


# ---- model construction -----------------------------------------------------------------
def _atom_types(system) -> list[int] | None:
    """Identical particles (no topology, e.g. Lennard-Jones) share one type; atoms of a molecule get their index."""
    if system.n_atoms is None or getattr(system, "topology", None) is not None:
        return None
    return [0] * int(system.n_atoms)


def build_model(config: dict, system, data: TrainingData, init: PitaModel | None, user_config: dict | None,
                seed: int) -> PitaModel:
    m, s = config["model"], config["schedule"]
    temperatures = sorted(set(data.temperature.tolist()))
    if len(temperatures) > 1 and not m["beta_conditioning"]:
        raise PitaInputError(
            f"--samples: sets at temperatures {', '.join(f'{t:g}' for t in temperatures)} need beta conditioning "
            "(config model.beta_conditioning: true)")
    if init is None:
        sigma_max = s["sigma_max"] if s["sigma_max"] is not None else round(estimate_sigma_max(data.x, system.n_atoms), 2)
        model_config = {
            "dim": int(data.x.shape[1]), "n_atoms": system.n_atoms, "mean_free": bool(system.n_atoms is not None),
            "length_scale": float(system.length_scale), "sd": measure_sd(data.x, system.n_atoms),
            "temperature": data.primary_temperature, "reference_temperature": max(temperatures),
            "beta_conditioning": bool(m["beta_conditioning"]), "energy_offset": 0.0,
            "sigma_min": float(s["sigma_min"]), "sigma_max": float(sigma_max), "rho": float(s["rho"]),
            "score_source": m["score_source"], "backbone": m["backbone"],
            "backbone_options": m["backbone_options"] or dict(DEFAULT_OPTIONS[m["backbone"]]),
            "atom_types": _atom_types(system), "system": system.spec(), "units": system.units, "kB": float(system.kB),
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = PitaModel(model_config)
                for net in (model.score_model.network, model.energy_model.network):
                    if hasattr(net, "set_statistics"):  # pairnet: distances standardised by the data's
                        net.set_statistics(data.x)
                return model
            except (TypeError, ValueError, RuntimeError) as exc:  # e.g. an unknown or negative backbone option
                problem = " ".join(str(exc).split()) or type(exc).__name__
                raise PitaInputError(f"config.model.backbone_options: cannot build the {m['backbone']} backbone with "
                                     f"{model_config['backbone_options']!r} ({problem})") from None

    # warm start: architecture, sd, L and (unless set explicitly) the schedule come from `init`
    user_model = (user_config or {}).get("model", {})
    for key in ("backbone", "backbone_options", "beta_conditioning"):
        # unset, or empty options: the checkpoint's own (as a fresh model takes the backbone's defaults)
        if key in user_model and user_model[key] not in (None, {}) and user_model[key] != init.config[key]:
            raise PitaInputError(f"config.model.{key}: {user_model[key]!r} differs from the --init checkpoint's "
                                 f"{init.config[key]!r}; a warm start keeps the architecture")
    if init.config["n_atoms"] != system.n_atoms or init.config["dim"] != data.x.shape[1]:
        raise PitaInputError(f"--init: checkpoint is for dim {init.config['dim']}, this system has {data.x.shape[1]}")
    user_schedule = (user_config or {}).get("schedule", {})
    model_config = {**init.config, "temperature": data.primary_temperature, "score_source": m["score_source"],
                    **{k: float(user_schedule[k]) for k in ("sigma_min", "sigma_max", "rho")
                       if user_schedule.get(k) is not None}}
    model = PitaModel(model_config)
    model.load_state_dict(init.state_dict())
    if not model.config["beta_conditioning"]:
        gamma = float(init.config["temperature"]) / data.primary_temperature
        with torch.no_grad():
            model.energy_model.learned_scale.mul_(gamma)
            model.energy_model.bias.mul_(gamma)
        log.info("warm start from T = %g: energy's learned part scaled by gamma = %.4g", init.config["temperature"], gamma)
    return model


# ---- the training loop --------------------------------------------------------------------
class Trainer:
    """One optimisation step at a time, with a complete, restorable state."""

    def __init__(self, model: PitaModel, data: TrainingData, config: dict, device: torch.device, seed: int) -> None:
        self.config, self.device = config, device
        self.model = model.to(device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.data = data.to(device)
        mc = self.model.config
        self.n_atoms = mc["n_atoms"]
        self.mean_free_atoms = mc["n_atoms"] if mc["mean_free"] else None
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        self.generator = torch.Generator(device=device).manual_seed(seed)  # batches, sigmas, noise
        self.rotation_generator = torch.Generator().manual_seed(seed + 1)  # rotations (CPU)
        ss = config["sigma_sampling"]
        self.sigma_sampler = SigmaMixture(LogNormalSigma(ss["lognormal_mean"], ss["lognormal_std"]),
                                          LogUniformSigma(mc["sigma_min"], mc["sigma_max"]), ss["loguniform_fraction"])
        self.weights = dict(config["loss_weights"])
        for name in ("target_score", "force_matching"):
            if self.data.reduced_energy_grad is None and self.weights[name] > 0:
                log.warning("no forces in the sample set(s): %s loss disabled", name.replace("_", "-"))
                self.weights[name] = 0.0
        self.denoising_score_matching = DenoisingScoreMatching(mc["sd"])
        self.energy_distillation = EnergyDistillation(mc["sd"])
        self.energy_matching = EnergyMatching()
        self.target_score = TargetScore(config["target_score_max_sigma"])
        self.force_matching = ForceMatching()
        self.heat_equation = HeatEquationResidual(config["heat_equation_group_size"])
        #: score_source energy: one field (the energy) for drift and weights, trained by denoising through it
        self.energy_only = model.config["score_source"] == "energy"
        self.rotate = bool(config["random_rotations"]) and self.n_atoms is not None and not data.aligned
        self.step = 0
        self.history: list[dict] = []
        self._log_sums: dict[str, float] = {}
        self._log_count = 0
        #: seconds spent sampling batches, in forward + backward passes, in clipping + Adam + EMA + logging reads
        self.timings = {"data": 0.0, "forward_backward": 0.0, "optimizer_ema": 0.0}
        self.timing = False

    # -- data and losses --
    def sample_batch(self):
        d, b = self.data, self.config["batch_size"]
        idx = torch.randint(len(d), (b,), generator=self.generator, device=self.device)
        x0 = d.x[idx]
        grad = None if d.reduced_energy_grad is None else d.reduced_energy_grad[idx]
        if self.rotate:
            x0, grad = self.random_rotation(x0, grad)
        cond = None if d.cond is None else d.cond[idx]
        sigma = self.sigma_sampler(b, self.generator, self.device, x0.dtype)
        noise = sample_mean_free_normal(tuple(x0.shape), self.mean_free_atoms, generator=self.generator,
                                        dtype=x0.dtype, device=self.device)
        batch = {"x0": x0, "grad": grad, "reduced_energy": d.reduced_energy[idx], "offset": d.offset[idx],
                 "cond": cond, "weight": d.weight[idx], "sigma": sigma, "noise": noise}
        if self.weights.get("heat_equation", 0.0) > 0:
            batch["heat_equation"] = self.heat_equation_batch()
        return batch

    def random_rotation(self, *vectors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """One random proper rotation per row, applied to every given (B, D) tensor (None passes)."""
        b = vectors[0].shape[0]
        rot = random_rotations(b, generator=self.rotation_generator, dtype=vectors[0].dtype, device=self.device)
        return tuple(None if v is None else (v.reshape(b, self.n_atoms, 3) @ rot.transpose(1, 2)).reshape(b, -1)
                     for v in vectors)

    def heat_equation_batch(self) -> dict:
        """Groups of noised samples, one log-uniform sigma per group, and two probe sets each."""
        d, cfg, mc = self.data, self.config, self.model.config
        G, m = cfg["heat_equation_groups"], cfg["heat_equation_group_size"]
        idx = torch.randint(len(d), (G * m,), generator=self.generator, device=self.device)
        x0 = d.x[idx]
        if self.rotate:
            (x0,) = self.random_rotation(x0)
        lo, hi = math.log(mc["sigma_min"]), math.log(mc["sigma_max"])
        u = torch.rand(G, generator=self.generator, device=self.device, dtype=x0.dtype)
        sigma = torch.exp(lo + (hi - lo) * u).repeat_interleave(m)
        noise = sample_mean_free_normal(tuple(x0.shape), self.mean_free_atoms, generator=self.generator,
                                        dtype=x0.dtype, device=self.device)
        probes = torch.randint(0, 2, (2, *x0.shape), generator=self.generator, device=self.device).to(x0.dtype) * 2 - 1
        if self.mean_free_atoms is not None:  # E[P v v^T P] = P: the trace on the mean-free subspace
            probes = remove_mean(probes.reshape(2 * G * m, -1), self.mean_free_atoms).reshape(probes.shape)
        return {"x": x0 + sigma[:, None] * noise, "sigma": sigma, "probes": probes,
                "cond": None if d.cond is None else d.cond[idx], "weight": d.weight[idx]}

    def loss_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        model, w = self.model, self.weights
        x0, sigma, cond, weight = batch["x0"], batch["sigma"], batch["cond"], batch["weight"]
        x_sigma = x0 + sigma.reshape(-1, 1) * batch["noise"]

        def weighted_mean(per_sample, sample_weight=weight):
            return (per_sample * sample_weight).sum() / sample_weight.sum().clamp_min(1e-12)

        if self.energy_only:
            # the score is -grad E (score_source: energy): the denoising loss trains E directly through
            # D_E = x - sigma^2 grad E, and there is no separate score network to distil from
            _, energy_grad = model.energy_model.grad(x_sigma.detach().requires_grad_(True), sigma, cond,
                                                     create_graph=True)
            denoised = x_sigma - sigma.reshape(-1, 1) ** 2 * energy_grad
        else:
            denoised = model.score_model(x_sigma, sigma, cond)
        terms = {"denoising_score_matching": weighted_mean(self.denoising_score_matching(denoised, x0, sigma))}
        if w["energy_distillation"] > 0 and not self.energy_only:
            _, energy_grad = model.energy_model.grad(x_sigma.detach().requires_grad_(True), sigma, cond, create_graph=True)
            terms["energy_distillation"] = weighted_mean(self.energy_distillation(energy_grad, x_sigma, sigma, denoised))
        if w["energy_matching"] > 0 or w["force_matching"] > 0:
            sigma_min = torch.full_like(sigma, self.model.config["sigma_min"])
            if w["force_matching"] > 0:
                energy, grad_at_data = model.energy_model.grad(x0.detach().requires_grad_(True), sigma_min, cond,
                                                               create_graph=True)
                terms["force_matching"] = weighted_mean(self.force_matching(grad_at_data, batch["grad"]))
            else:
                energy = model.energy_model(x0, sigma_min, cond)
            if w["energy_matching"] > 0:
                terms["energy_matching"] = weighted_mean(
                    self.energy_matching(energy, batch["reduced_energy"], batch["offset"]))
        if w.get("heat_equation", 0.0) > 0:
            he = batch["heat_equation"]
            tau_r = self.heat_equation.residuals(model.energy_model, he["x"], he["sigma"], he["probes"], he["cond"])
            terms["heat_equation"] = self.heat_equation(tau_r, he["weight"])
        if w["target_score"] > 0:
            terms["target_score"] = weighted_mean(self.target_score(denoised, x_sigma, sigma, batch["grad"]),
                                                  weight * self.target_score.mask(sigma))
        return terms

    # -- one step --
    def train_step(self) -> dict[str, float]:
        cfg = self.config
        t0 = self._clock()
        batch = self.sample_batch()
        t1 = self._clock()
        lr = cfg["lr"] * min(1.0, (self.step + 1) / max(1, cfg["lr_warmup_steps"]))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        terms = self.loss_terms(batch)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = self._clock()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg["grad_clip"])
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()},
                  "grad_norm": float(grad_norm)}
        t3 = self._clock()
        self.timings["data"] += t1 - t0
        self.timings["forward_backward"] += t2 - t1
        self.timings["optimizer_ema"] += t3 - t2
        self._log(values, lr)
        return values

    def _clock(self) -> float:
        if self.timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config["ema_decay"], (1.0 + self.step) / (10.0 + self.step))
        for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
            b_ema.copy_(b)

    def _log(self, values: dict[str, float], lr: float) -> None:
        for k, v in values.items():
            self._log_sums[k] = self._log_sums.get(k, 0.0) + v
        self._log_count += 1
        if self.step % self.config["log_every"] == 0 or self.step == self.config["steps"]:
            self.flush_log(lr)

    def flush_log(self, lr: float | None = None) -> None:
        if not self._log_count:
            return
        row = {"step": self.step, **{k: v / self._log_count for k, v in self._log_sums.items()},
               "lr": lr if lr is not None else self.optimizer.param_groups[0]["lr"]}
        self.history.append(row)
        self._log_sums, self._log_count = {}, 0

    # -- state --
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rotation_generator": self.rotation_generator.get_state(),
            "history": self.history,
            "log_sums": self._log_sums,
            "log_count": self._log_count,
            "energy_offset": float(self.model.config["energy_offset"]),
            "offsets": self.data.offset.cpu(),
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rotation_generator.set_state(state["rotation_generator"])
        self.history = list(state["history"])
        self._log_sums = dict(state["log_sums"])
        self._log_count = int(state["log_count"])
        for m in (self.model, self.ema):
            m.config["energy_offset"] = float(state["energy_offset"])
        self.data.offset = state["offsets"].to(self.device)


def set_energy_offsets(model: PitaModel, data: TrainingData, batch_size: int = 4096) -> None:
    """Offsets so that U/kT - offset starts centred on the model's E(x0, sigma_min).

    offset_i = mean over the set of sample i (U/kT) - mean over all data (E_init(x0, sigma_min));
    model.energy_offset is the offset of the primary (first) set: U/kT ~ E(x, sigma_min) + energy_offset.
    """
    c = model.config
    with torch.no_grad():
        energies = []
        for start in range(0, len(data), batch_size):
            x = data.x[start:start + batch_size]
            cond = None if data.cond is None else data.cond[start:start + batch_size]
            sigma = torch.full((x.shape[0],), c["sigma_min"], dtype=x.dtype, device=x.device)
            energies.append(model.energy_model(x, sigma, cond).double())
        model_mean = float(torch.cat(energies).mean())
    offsets = torch.zeros(len(data), dtype=torch.float64, device=data.x.device)
    for i in torch.unique(data.file_index).tolist():
        sel = data.file_index == i
        offsets[sel] = data.reduced_energy[sel].mean() - model_mean
    data.offset = offsets
    c["energy_offset"] = float(offsets[data.file_index == 0][0])


@dataclass
class TrainResult:
    model: PitaModel  # EMA weights
    history: list[dict]
    completed: bool
    step: int
    digest: str
    timings: dict = field(default_factory=dict)


def train(samples: Sequence[str | os.PathLike | SampleSet], system, *, config: dict | None = None,
          init: str | os.PathLike | PitaModel | None = None, out: str | os.PathLike | None = None,
          losses_csv: str | os.PathLike | None = None, device: str | torch.device = "auto", seed: int = 0,
          work_dir: str | os.PathLike | None = None, stop_after: int | None = None,
          callback: Callable[[Trainer], None] | None = None, progress: bool | None = None,
          timing: bool = False, fidelity: Callable[[PitaModel], dict] | None = None) -> TrainResult:
    """Train the rung's models; write `out` (EMA weights + config + provenance) and `losses_csv`.

    stop_after: return after this many steps in total (saving the resumable state), without
    writing outputs (for tests and time-limited jobs). callback(trainer) runs after every step.
    """
    from .systems import System, load

    user_config = to_dict(config) if isinstance(config, TrainSettings) else (config or {})
    cfg = resolve_config(config)
    if not isinstance(system, System):
        system = load(system)
    dev = resolve_device(device)

    init_digest = None
    if init is not None and not isinstance(init, PitaModel):
        init_digest = file_digest(init)
        init = load_checkpoint(init, "cpu")
    elif isinstance(init, PitaModel):
        init_digest = config_digest({k: v.tolist() for k, v in init.state_dict().items()})
    length_scale = float(init.config["length_scale"]) if init is not None else float(system.length_scale)
    want_forces = cfg["loss_weights"]["target_score"] > 0 or cfg["loss_weights"]["force_matching"] > 0
    align_to = alignment_reference(cfg, system)
    if align_to is not None and cfg["model"]["backbone"] not in ("egnn", "pairnet"):
        # a non-invariant model of aligned data lives in one frame while the Boltzmann density is
        # rotation-uniform: the anneal's final weights then carry a chi-square(3)/2 log-weight
        # tail (tests/test_rotations.py); random rotations of unaligned data are exact
        log.warning("aligning configurations to the reference structure (random rotations off): the "
                    "%s model learns one frame, so the anneal's final weights against the rotation-uniform "
                    "target are not exact; use align: none with random_rotations for exact weights",
                    cfg["model"]["backbone"])
    elif align_to is not None:
        log.info("aligning configurations to the reference structure (random rotations off)")
    data = load_training_data(samples, system, length_scale, cfg["duplicates"], want_forces, align_to)
    run_key = {
        "config": {k: v for k, v in cfg.items() if k not in RUN_CONTROLS},
        "system": system.spec(), "samples": data.digests, "init": init_digest, "seed": int(seed),
        "device": dev.type, "version": __version__,
    }
    digest = config_digest(run_key)

    def new_trainer() -> Trainer:
        model = build_model(cfg, system, data, init, user_config, seed)
        if model.config["beta_conditioning"]:
            data.cond = torch.log(model.config["reference_temperature"] / data.temperature).float()
        set_energy_offsets(model, data)
        trainer = Trainer(model, data, cfg, dev, seed)
        trainer.timing = timing
        return trainer

    trainer = new_trainer()
    state_path = Path(work_dir) / f"train-{digest}" / "state.pt" if work_dir is not None else None
    if state_path is not None and state_path.exists():
        try:
            trainer.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
            log.info("resuming from %s at step %d", state_path, trainer.step)
        except Exception as exc:  # noqa: BLE001 - an unreadable state is discarded, not fatal
            log.warning("%s: cannot resume (%s); starting afresh", state_path, exc)
            trainer = new_trainer()

    def save_state() -> None:
        if state_path is not None:
            with atomic_path(state_path, suffix=".pt.tmp") as tmp:
                torch.save(trainer.state_dict(), tmp)

    total = cfg["steps"] if stop_after is None else min(cfg["steps"], int(stop_after))
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg["steps"], initial=trainer.step, desc="train", unit="step",
               disable=None if progress is None else not progress)
    try:
        while trainer.step < total:
            values = trainer.train_step()
            bar.update(1)
            if trainer.step % cfg["log_every"] == 0:
                bar.set_postfix(loss=f"{values['loss']:.4g}")
            if trainer.step % cfg["checkpoint_every"] == 0 and trainer.step < cfg["steps"]:
                save_state()
            if trainer.step % max(1, cfg["steps"] // 10) == 0:  # a log line every 10%, for batch jobs
                log.info("step %d/%d: %s", trainer.step, cfg["steps"],
                         ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float)))
            if callback is not None:
                callback(trainer)
    finally:
        bar.close()

    completed = trainer.step >= cfg["steps"]
    if not completed:
        save_state()
        return TrainResult(trainer.ema, trainer.history, False, trainer.step, digest, dict(trainer.timings))
    trainer.flush_log()
    ema = trainer.ema.cpu()
    ema.meta = {
        **base_attrs("train", cfg, seed),
        "config_digest": digest,
        "training_config": cfg,
        "system": system.spec(),
        "temperature": ema.config["temperature"],
        "length_scale": ema.config["length_scale"],
        "sd": ema.config["sd"],
        "energy_offset": ema.config["energy_offset"],
        "schedule": ema.schedule.as_dict(),
        "steps": trainer.step,
        "rung": data.rung,
        "samples": [str(s) if not isinstance(s, SampleSet) else "<in memory>" for s in samples],
        "sample_digests": data.digests,
        "n_samples_read": data.n_read,
        "n_samples_unique": len(data),
        "init_digest": init_digest,
        "n_energy_evals": 0,
        "n_energy_evals_total": data.n_energy_evals_total,
    }
    if fidelity is not None:  # held-out diagnostics of the finished model, kept in the checkpoint
        ema.meta["fidelity"] = fidelity(ema)
    if out is not None:
        save_checkpoint(out, ema)
    if losses_csv is not None:
        write_losses_csv(losses_csv, trainer.history)
    if state_path is not None and state_path.exists():
        state_path.unlink()
        try:
            state_path.parent.rmdir()
        except OSError:
            pass
    return TrainResult(ema, trainer.history, True, trainer.step, digest, dict(trainer.timings))


def write_losses_csv(path: str | os.PathLike, history: list[dict]) -> None:
    columns = ["step", "loss", *LOSS_NAMES, "grad_norm", "lr"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", restval="")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    with atomic_path(path, suffix=".csv.tmp") as tmp:
        tmp.write_text(buf.getvalue())
