"""Sample sets: the HDF5 contract between pipeline steps (see DESIGN.md).

    positions   float32 [N, n_atoms, 3]  nm (reduced units for LJ); [N, dim] for toys in R^d
    energy      float64 [N]              U, kJ/mol (reduced units for LJ)
    forces      float32 [N, n_atoms, 3]  -grad U, optional
    log_weight  float64 [N]              optional importance log-weights
    trajectory  int32 [N], time_ps float64 [N]   optional, MD output

Attributes: system, temperature, units, length_scale, n_energy_evals, n_energy_evals_total,
rung, producing_step, package_version, config_digest, seed, created (+ free-form extras).
Writes go to a temporary file that is renamed at the end; reads validate everything and
raise PitaInputError("<file>: <problem>").
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import PitaInputError
from .provenance import atomic_path

UNITS = ("kJ/mol,nm", "reduced")
REQUIRED_ATTRS = ("system", "temperature", "units", "length_scale", "n_energy_evals", "n_energy_evals_total")
_DTYPES = {
    "positions": np.float32,
    "energy": np.float64,
    "forces": np.float32,
    "log_weight": np.float64,
    "trajectory": np.int32,
    "time_ps": np.float64,
}


class SampleSetError(PitaInputError):
    """A sample set that violates the contract."""


@dataclass
class SampleSet:
    positions: np.ndarray
    energy: np.ndarray
    attrs: dict[str, Any]
    forces: np.ndarray | None = None
    log_weight: np.ndarray | None = None
    trajectory: np.ndarray | None = None
    time_ps: np.ndarray | None = None
    #: free-form extra arrays (diagnostics such as an ESS trace); any shape, stored under /extra
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    # ---- convenience --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def temperature(self) -> float:
        return float(self.attrs["temperature"])

    @property
    def n_atoms(self) -> int | None:
        return int(self.positions.shape[1]) if self.positions.ndim == 3 else None

    def weights(self) -> np.ndarray:
        """Normalised importance weights (uniform when there are no log-weights)."""
        if self.log_weight is None:
            return np.full(len(self), 1.0 / len(self))
        lw = self.log_weight - np.max(self.log_weight)
        w = np.exp(lw)
        return w / w.sum()

    def ess(self) -> float:
        """Kish effective sample size of the weights."""
        w = self.weights()
        return float(1.0 / np.sum(w * w))

    def subset(self, idx: np.ndarray) -> "SampleSet":
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        return SampleSet(
            positions=self.positions[idx], energy=self.energy[idx], attrs=dict(self.attrs),
            forces=pick(self.forces), log_weight=pick(self.log_weight),
            trajectory=pick(self.trajectory), time_ps=pick(self.time_ps), extra=dict(self.extra),
        )

    # ---- validation ---------------------------------------------------------------------
    def validate(self, source: str = "<sample set>") -> "SampleSet":
        def fail(msg: str) -> None:
            raise SampleSetError(f"{source}: {msg}")

        pos = np.asarray(self.positions)
        if pos.ndim not in (2, 3) or (pos.ndim == 3 and pos.shape[2] != 3):
            fail(f"dataset 'positions' must have shape [N, n_atoms, 3] (or [N, dim]), got {list(pos.shape)}")
        n = pos.shape[0]
        if n == 0:
            fail("dataset 'positions' is empty (0 samples)")
        for name in ("energy", "log_weight", "trajectory", "time_ps"):
            arr = getattr(self, name)
            if arr is None:
                continue
            arr = np.asarray(arr)
            if arr.shape != (n,):
                fail(f"dataset '{name}' must have shape [{n}] to match 'positions', got {list(arr.shape)}")
        if self.forces is not None and np.asarray(self.forces).shape != pos.shape:
            fail(f"dataset 'forces' must have shape {list(pos.shape)} like 'positions', got {list(np.asarray(self.forces).shape)}")
        for name in ("positions", "energy", "forces", "time_ps"):
            arr = getattr(self, name)
            if arr is None:
                continue
            bad = ~np.isfinite(np.asarray(arr, dtype=np.float64))
            if bad.any():
                rows = np.unique(np.nonzero(bad)[0])
                fail(f"dataset '{name}' has {rows.size} sample(s) with NaN or infinite values (first at index {rows[0]})")
        if self.log_weight is not None:
            lw = np.asarray(self.log_weight)
            if np.isnan(lw).any() or np.isposinf(lw).any():
                fail("dataset 'log_weight' has NaN or +inf values")
            if not np.isfinite(lw).any():
                fail("dataset 'log_weight' has no finite value (all weights zero)")
        for key in REQUIRED_ATTRS:
            if key not in self.attrs:
                fail(f"attribute '{key}' is missing")
        if self.attrs["units"] not in UNITS:
            fail(f"attribute 'units' is {self.attrs['units']!r}; expected one of {list(UNITS)}")
        try:
            temperature = float(self.attrs["temperature"])
        except (TypeError, ValueError):
            fail(f"attribute 'temperature' is not a number: {self.attrs['temperature']!r}")
        if not np.isfinite(temperature) or temperature <= 0:
            fail(f"attribute 'temperature' must be a positive number, got {temperature}")
        try:
            length_scale = float(self.attrs["length_scale"])
        except (TypeError, ValueError):
            fail(f"attribute 'length_scale' is not a number: {self.attrs['length_scale']!r}")
        if not np.isfinite(length_scale) or length_scale <= 0:
            fail(f"attribute 'length_scale' must be positive, got {length_scale}")
        # counters and the rung are used as integers downstream (totals carried forward, rung + 1)
        for key, minimum in (("n_energy_evals", 0), ("n_energy_evals_total", 0), ("rung", None)):
            if key not in self.attrs:
                continue
            value = self.attrs[key]
            integral = (isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating))
                                                                  and float(value).is_integer()))
            if isinstance(value, (bool, np.bool_)) or not integral:
                fail(f"attribute '{key}' must be an integer, got {value!r}")
            if minimum is not None and value < minimum:
                fail(f"attribute '{key}' must be >= {minimum}, got {value!r}")
        if self.attrs["units"] == "kJ/mol,nm" and pos.ndim == 3:
            # molecular coordinates are nm: anything beyond 1 um is almost surely Angstrom*1e3 or garbage
            extent = float(np.max(np.abs(pos - pos.mean(axis=1, keepdims=True))))
            if extent > 1000.0:
                fail(f"dataset 'positions' spans {extent:.3g} nm from the centroid; expected nm for units 'kJ/mol,nm'")
        return self

    def check_compatible(self, source: str, *, temperature: float | None = None, n_atoms: int | None = None,
                         system: str | None = None, rtol: float = 1e-6) -> "SampleSet":
        """Fail unless the set is at `temperature`, has `n_atoms` and belongs to `system`."""
        if temperature is not None and not np.isclose(self.temperature, float(temperature), rtol=rtol, atol=1e-9):
            raise SampleSetError(
                f"{source}: attribute 'temperature' is {self.temperature:g} but {float(temperature):g} was expected")
        if n_atoms is not None and self.n_atoms != n_atoms:
            raise SampleSetError(f"{source}: dataset 'positions' has {self.n_atoms} atoms but the system has {n_atoms}")
        if system is not None and str(self.attrs.get("system")) != str(system):
            raise SampleSetError(f"{source}: attribute 'system' is {self.attrs.get('system')!r}, expected {system!r}")
        return self

    # ---- I/O ----------------------------------------------------------------------------
    def write(self, path: str | os.PathLike) -> Path:
        """Validate and write atomically (temporary file, then rename)."""
        path = Path(path)
        self.validate(str(path))
        with atomic_path(path, suffix=".h5.tmp") as tmp:
            with h5py.File(tmp, "w") as fh:
                for name, dtype in _DTYPES.items():
                    arr = getattr(self, name)
                    if arr is None:
                        continue
                    fh.create_dataset(name, data=np.asarray(arr, dtype=dtype))
                if self.extra:
                    grp = fh.create_group("extra")
                    for key, arr in self.extra.items():
                        grp.create_dataset(key, data=np.asarray(arr))
                for key, value in self.attrs.items():
                    fh.attrs[key] = _attr_value(value)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, *, temperature: float | None = None, n_atoms: int | None = None,
             system: str | None = None, load_forces: bool = True) -> "SampleSet":
        """Read and validate; optional checks of temperature, atom count and system name."""
        path = Path(path)
        src = str(path)
        if not path.exists():
            raise SampleSetError(f"{src}: file not found")
        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            raise SampleSetError(f"{src}: not a readable HDF5 file ({exc.__class__.__name__})") from None
        with fh:
            for name in ("positions", "energy"):
                if name not in fh:
                    raise SampleSetError(f"{src}: required dataset '{name}' is missing")
            data: dict[str, Any] = {}
            for name, dtype in _DTYPES.items():
                if name not in fh:
                    data[name] = None
                    continue
                if name == "forces" and not load_forces:
                    data[name] = None
                    continue
                ds = fh[name]
                if ds.dtype.kind not in "fiu":
                    raise SampleSetError(f"{src}: dataset '{name}' has non-numeric dtype {ds.dtype}")
                data[name] = np.asarray(ds[()], dtype=dtype)
            extra = {}
            if "extra" in fh:
                for key in fh["extra"]:
                    extra[key] = np.asarray(fh["extra"][key][()])
            attrs = {k: _from_attr(v) for k, v in fh.attrs.items()}
        out = cls(attrs=attrs, extra=extra, **data)
        out.validate(src)
        out.check_compatible(src, temperature=temperature, n_atoms=n_atoms, system=system)
        return out


def _attr_value(value: Any) -> Any:
    if value is None:
        return "null"
    if isinstance(value, (dict, list, tuple)):
        return "json:" + json.dumps(value, default=str)
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


def _from_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    return value


def read_attrs(path: str | os.PathLike) -> dict:
    """Attributes only (cheap), e.g. to pick up n_energy_evals_total."""
    with h5py.File(path, "r") as fh:
        return {k: _from_attr(v) for k, v in fh.attrs.items()}
