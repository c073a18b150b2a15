"""`PitaModel`: what sampling uses, and its checkpoint format.

A PitaModel holds a score model (preconditioned denoiser) and an energy model that share the
metadata of one rung: all inputs are flat normalised coordinates x~ (B, D) (pita/coords.py),
sigma of shape (B,) (a float is broadcast).

    energy(x, sigma) -> (B,)   E(x, sigma); E(x, sigma_min) + energy_offset ~ U(L x~) / (k_B T)
    score(x, sigma)  -> (B, D) the score sampling uses, from `score_source`:
                         "score"  -> (D(x, sigma) - x) / sigma^2 (the score model; default)
                         "energy" -> -grad_x E(x, sigma) (the energy model alone)
    energy_score(x, sigma)      -grad_x E, whatever score_source says
    denoise(x, sigma)           the score model's D

Attributes: n_atoms (None in R^d), dim, mean_free, length_scale L, sd, temperature (of the
rung the model was trained on), reference_temperature and beta_conditioning (a model trained
on several rungs sees cond = ln(T_ref / T) and takes `temperature=`), energy_offset, the
schedule (sigma_min, sigma_max, rho), score_source, system (spec dict), units, kB.

Checkpoint: a dict of plain Python types and tensors, loadable with torch.load(weights_only=True):
    {"format": "pita-model", "format_version": 1, "config": {...}, "state_dict": {...}, "meta": {...}}
`config` rebuilds the network; `meta` is provenance (config digest, seed, version, energy
evaluation counts, training settings).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..coords import remove_mean
from ..diffusion import EDMSchedule
from ..errors import PitaInputError, brief, name_list
from ..provenance import atomic_path
from .backbones import DEFAULT_OPTIONS, make_backbone
from .preconditioning import EnergyModel, ScoreModel

CHECKPOINT_FORMAT = "pita-model"
CHECKPOINT_VERSION = 1
SCORE_SOURCES = ("score", "energy")

REQUIRED_CONFIG = ("dim", "n_atoms", "sd", "temperature", "sigma_min", "sigma_max")
CONFIG_DEFAULTS: dict[str, Any] = {
    "mean_free": None,  # default: n_atoms is not None
    "length_scale": 1.0,
    "reference_temperature": None,  # default: temperature
    "beta_conditioning": False,
    "energy_offset": 0.0,
    "rho": 7.0,
    "score_source": "score",
    "backbone": "mlp",
    "backbone_options": None,  # default: DEFAULT_OPTIONS[backbone]
    "atom_types": None,
    "system": None,
    "units": "reduced",
    "kB": 1.0,
}


def plain(obj: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain Python (what weights_only loading accepts)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def complete_config(config: dict) -> dict:
    missing = [k for k in REQUIRED_CONFIG if k not in config]
    if missing:
        raise ValueError(f"model config: missing {', '.join(missing)}")
    cfg = {**CONFIG_DEFAULTS, **plain(config)}
    if cfg["mean_free"] is None:
        cfg["mean_free"] = cfg["n_atoms"] is not None
    if cfg["reference_temperature"] is None:
        cfg["reference_temperature"] = cfg["temperature"]
    if cfg["backbone_options"] is None:
        cfg["backbone_options"] = dict(DEFAULT_OPTIONS.get(cfg["backbone"], {}))
    if cfg["score_source"] not in SCORE_SOURCES:
        raise ValueError(f"model config: score_source must be one of {SCORE_SOURCES}, got {cfg['score_source']!r}")
    return cfg


class PitaModel(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = complete_config(config)
        c = self.config
        n_atoms = c["n_atoms"] if c["mean_free"] else None

        def backbone(output: str) -> nn.Module:
            options = dict(c["backbone_options"])
            if c["backbone"] == "pairnet":
                options["sd"] = c["sd"]  # it standardises distances in x~ units: undoes c_in
            return make_backbone(c["backbone"], c["dim"], c["n_atoms"], output, with_cond=c["beta_conditioning"],
                                 atom_types=c["atom_types"], **options)

        self.score_model = ScoreModel(backbone("vector"), c["sd"], n_atoms)
        self.energy_model = EnergyModel(backbone("scalar"), c["sd"], n_atoms)
        self.meta: dict[str, Any] = {}

    # ---- metadata -----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # metadata attributes (temperature, sd, sigma_max, ...) read through to the config
        try:
            return super().__getattr__(name)
        except AttributeError:
            config = self.__dict__.get("config", {})
            if name in config:
                return config[name]
            raise

    @property
    def schedule(self) -> EDMSchedule:
        c = self.config
        return EDMSchedule(c["sigma_min"], c["sigma_max"], c["rho"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def condition(self, batch: int, temperature: float | None, like: torch.Tensor) -> torch.Tensor | None:
        """cond = ln(T_ref / T) for beta-conditioned models, None otherwise."""
        if not self.config["beta_conditioning"]:
            if temperature is not None and not math.isclose(float(temperature), self.config["temperature"], rel_tol=1e-6):
                raise ValueError(f"this model is trained at T = {self.config['temperature']:g} only (no beta conditioning)")
            return None
        t = self.config["temperature"] if temperature is None else float(temperature)
        return torch.full((batch,), math.log(self.config["reference_temperature"] / t), dtype=like.dtype, device=like.device)

    def _sigma(self, sigma, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(x.shape[0])

    # ---- the sampling interface -----------------------------------------------------------
    def energy(self, x: torch.Tensor, sigma, temperature: float | None = None) -> torch.Tensor:
        sigma = self._sigma(sigma, x)
        return self.energy_model(x, sigma, self.condition(x.shape[0], temperature, x))

    def energy_score(self, x: torch.Tensor, sigma, temperature: float | None = None) -> torch.Tensor:
        """-grad_x E; stays differentiable in x when x requires grad (for divergences)."""
        sigma = self._sigma(sigma, x)
        _, g = self.energy_model.grad(x, sigma, self.condition(x.shape[0], temperature, x),
                                      create_graph=x.requires_grad)
        return -g

    def denoise(self, x: torch.Tensor, sigma, temperature: float | None = None) -> torch.Tensor:
        sigma = self._sigma(sigma, x)
        return self.score_model(x, sigma, self.condition(x.shape[0], temperature, x))

    def score(self, x: torch.Tensor, sigma, temperature: float | None = None) -> torch.Tensor:
        if self.config["score_source"] == "energy":
            return self.energy_score(x, sigma, temperature)
        sigma = self._sigma(sigma, x)
        return self.score_model.score(x, sigma, self.condition(x.shape[0], temperature, x))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Onto the mean-free subspace (identity in R^d)."""
        return remove_mean(x, self.config["n_atoms"] if self.config["mean_free"] else None)


def save_checkpoint(path: str | os.PathLike, model: PitaModel, meta: dict | None = None,
                    state_dict: dict | None = None) -> Path:
    """Write model weights (or `state_dict`, e.g. EMA weights) + config + meta atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": plain(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in (state_dict or model.state_dict()).items()},
        "meta": plain({**model.meta, **(meta or {})}),
    }
    path = Path(path)
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        torch.save(payload, tmp)
    return path


def _check_config(config: Any, src: str) -> None:
    """The metadata a checkpoint's config must carry, with sane values (PitaInputError otherwise)."""
    if not isinstance(config, dict):
        raise PitaInputError(f"{src}: checkpoint 'config' is {type(config).__name__}, expected a mapping")

    def positive(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise PitaInputError(f"{src}: checkpoint config '{key}' must be a positive finite number, got {value!r}")

    def count(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PitaInputError(f"{src}: checkpoint config '{key}' must be a positive integer, got {value!r}")

    missing = [k for k in REQUIRED_CONFIG if k not in config]
    if missing:
        raise PitaInputError(f"{src}: checkpoint config is missing {', '.join(missing)}")
    count("dim", config["dim"])
    if config["n_atoms"] is not None:
        count("n_atoms", config["n_atoms"])
        if config["dim"] != 3 * config["n_atoms"]:
            raise PitaInputError(f"{src}: checkpoint config 'dim' is {config['dim']} but 3 * n_atoms is "
                                 f"{3 * config['n_atoms']}")
    for key in ("sd", "temperature", "sigma_min", "sigma_max", "length_scale", "reference_temperature", "kB", "rho"):
        if config.get(key) is not None:
            positive(key, config[key])
    if not config["sigma_min"] < config["sigma_max"]:
        raise PitaInputError(f"{src}: checkpoint config needs sigma_min < sigma_max, got {config['sigma_min']} "
                             f"and {config['sigma_max']}")
    units = config.get("units")
    if units is not None and not isinstance(units, str):
        raise PitaInputError(f"{src}: checkpoint config 'units' must be a string, got {units!r}")


def _check_weights(state_dict: Any, src: str) -> None:
    """Every entry is a tensor, floating ones finite."""
    if not isinstance(state_dict, dict):
        raise PitaInputError(f"{src}: checkpoint 'state_dict' is {type(state_dict).__name__}, expected a mapping")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise PitaInputError(f"{src}: checkpoint weight {key!r} is {type(value).__name__}, not a tensor")
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise PitaInputError(f"{src}: checkpoint weight {key!r} has {bad} NaN or infinite value(s)")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> PitaModel:
    """Rebuild a PitaModel from `save_checkpoint` output (torch.load with weights_only=True).

    Refuses (PitaInputError, one line naming the file) anything that is not such a checkpoint:
    a folder, another file type or pickle, a newer format, a config without sane metadata,
    weights with NaN/inf or weights that do not fit the config. Whether the checkpoint is for
    the system at hand is `check_checkpoint_system`'s job.
    """
    src = str(path)
    p = Path(path)
    if not p.exists():
        raise PitaInputError(f"{src}: file not found")
    if p.is_dir():
        raise PitaInputError(f"{src}: is a folder, expected a model checkpoint file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad input file
        raise PitaInputError(f"{src}: not a loadable model checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PitaInputError(f"{src}: not a PITA model checkpoint (no format {CHECKPOINT_FORMAT!r})")
    version = payload.get("format_version", -1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise PitaInputError(f"{src}: checkpoint format_version must be an integer, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise PitaInputError(f"{src}: checkpoint format version {version} is newer than this package reads")
    _check_config(payload.get("config"), src)
    _check_weights(payload.get("state_dict"), src)
    meta = payload.get("meta", {})
    if not isinstance(meta, dict):
        raise PitaInputError(f"{src}: checkpoint 'meta' is {type(meta).__name__}, expected a mapping")
    try:
        model = PitaModel(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise PitaInputError(f"{src}: checkpoint does not match its model config "
                             f"({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    model.meta = dict(meta)
    return model.to(device).eval()


def checkpoint_system_name(model: PitaModel) -> str | None:
    """The system name a checkpoint records (config 'system': a spec mapping or a name), or None."""
    spec = model.config.get("system")
    if isinstance(spec, dict):
        spec = spec.get("name")
    return None if spec is None else str(spec)


def check_checkpoint_system(model: PitaModel, system: Any, path: str | os.PathLike, *,
                            option: str = "--system") -> PitaModel:
    """Refuse (PitaInputError naming `path`) a checkpoint trained for another system than `system`.

    Compares what the checkpoint records with the system object (`.name`, `.units`, `.n_atoms`,
    `.dim`, `.mean_free`, `.length_scale`): the system name exactly (when recorded; systems from a
    spec may carry custom names), the units, the coordinate layout (atom count, or the dimension
    of a density in R^d, and whether coordinates are mean-free) and the length scale L that
    normalises coordinates (relative tolerance 1e-6). `option` says in the message where the
    system came from. Returns the model.
    """
    src = str(path)
    c = model.config
    name = str(getattr(system, "name", "system"))
    recorded = checkpoint_system_name(model)
    if recorded is not None and recorded != name:
        raise PitaInputError(f"{src}: checkpoint is for system {recorded!r} but {option} is {name!r}")
    recorded_ff = c.get("system", {}).get("forcefield") if isinstance(c.get("system"), dict) else None
    if recorded_ff is not None and not name_list(recorded_ff):
        raise PitaInputError(f"{src}: the checkpoint's system.forcefield must be a list of file names, got "
                             f"{brief(recorded_ff)}")
    forcefield = getattr(system, "forcefield", None)
    if recorded_ff is not None and forcefield is not None and list(recorded_ff) != list(forcefield):
        raise PitaInputError(f"{src}: checkpoint was trained with force field {list(recorded_ff)} but {option} "
                             f"{name!r} uses {list(forcefield)}")
    units = getattr(system, "units", None)
    if units is not None and c.get("units") is not None and c["units"] != units:
        raise PitaInputError(f"{src}: checkpoint has units {c['units']!r} but {option} {name!r} uses {units!r}")
    model_atoms = c["n_atoms"] if c["mean_free"] else None
    sys_atoms = getattr(system, "n_atoms", None)
    sys_mean_free = bool(getattr(system, "mean_free", sys_atoms is not None))
    if sys_atoms is not None and sys_mean_free:
        if model_atoms != sys_atoms:
            have = f"{model_atoms} atoms" if model_atoms is not None else f"dimension {c['dim']} (no atoms)"
            raise PitaInputError(f"{src}: checkpoint is for {have} but {option} {name!r} has {sys_atoms} atoms")
    elif model_atoms is not None:
        raise PitaInputError(f"{src}: checkpoint is for {model_atoms} mean-free atoms but {option} {name!r} is not "
                             "a particle system")
    sys_dim = getattr(system, "dim", None)
    if sys_dim is not None and int(sys_dim) != int(c["dim"]):
        raise PitaInputError(f"{src}: checkpoint has dimension {c['dim']} but {option} {name!r} has {int(sys_dim)}")
    L = getattr(system, "length_scale", None)
    if L is not None and not math.isclose(float(c["length_scale"]), float(L), rel_tol=1e-6):
        raise PitaInputError(f"{src}: checkpoint has length scale {float(c['length_scale']):g} but {option} {name!r} "
                             f"uses {float(L):g}")
    return model
