"""Sample sets: the HDF5 contract between pipeline steps (see docs/METHOD.md, section 11).

    positions   float32 [N, n_atoms, 3]  nm (reduced units for LJ); [N, dim] for toys in R^d
    energy      float64 [N]              U, kJ/mol (reduced units for LJ)
    forces      float32 [N, n_atoms, 3]  -grad U, optional
    log_weight  float64 [N]              optional importance log-weights
    trajectory  int32 [N], time_ps float64 [N]   optional, MD output

Attributes: system, temperature, units, length_scale, n_energy_evals, n_energy_evals_total,
rung, producing_step, package_version, config_digest, seed, created (+ free-form extras).
Writes go to a temporary file that is renamed at the end; reads validate everything and
raise PitaInputError("<file>: <problem>"). A read checks the file's structure from the HDF5
metadata first (datasets are datasets, `extra` is a group of datasets, shapes agree, at most
`MAX_VALUES` values in all) and only then reads data, so a small file that declares huge or
inconsistent datasets is refused before anything large is allocated.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import PitaInputError, brief, name_list
from .provenance import atomic_path
from .weights import ess as _ess
from .weights import normalized_weights

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


#: a sample set may hold at most this many values in all its datasets together (positions,
#: energy, forces, ..., extra): 5e8 values is 2-4 GB in memory, far above any set the pipeline
#: writes (1e6 samples of a 22-atom molecule with forces are 1.3e8). Checked from the HDF5
#: metadata before any data is read.
MAX_VALUES = 500_000_000
#: attributes are small: at most this many elements each
MAX_ATTR_VALUES = 1_000_000
#: dtype kinds accepted for the datasets of the contract (float, signed/unsigned integer) and for extra
_NUMERIC_KINDS = "fiu"
_EXTRA_KINDS = "biufcSO"
#: extra arrays with one entry per sample, which `subset` selects with the samples: `ancestor`, the
#: independent draw a sample descends from (FK-SMC and resample-move sets)
PER_SAMPLE_EXTRAS = ("ancestor",)


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
        return normalized_weights(self.log_weight)

    def ess(self) -> float:
        """Kish effective sample size of the weights (`pita.weights.ess`)."""
        return _ess(self.log_weight, n=len(self))

    def subset(self, idx: np.ndarray) -> "SampleSet":
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        n = len(self)
        extra = {k: (pick(v) if k in PER_SAMPLE_EXTRAS and len(v) == n else v) for k, v in self.extra.items()}
        return SampleSet(
            positions=self.positions[idx], energy=self.energy[idx], attrs=dict(self.attrs),
            forces=pick(self.forces), log_weight=pick(self.log_weight),
            trajectory=pick(self.trajectory), time_ps=pick(self.time_ps), extra=extra,
        )

    def lineage(self) -> np.ndarray | None:
        """The `ancestor` label of every sample (which independent draw it descends from), if recorded."""
        anc = self.extra.get("ancestor")
        return None if anc is None or len(anc) != len(self) else np.asarray(anc, dtype=np.int64)

    # ---- validation ---------------------------------------------------------------------
    def validate(self, source: str = "<sample set>") -> "SampleSet":
        def fail(msg: str) -> None:
            raise SampleSetError(f"{source}: {msg}")

        pos = np.asarray(self.positions)
        _check_shapes({name: None if getattr(self, name) is None else np.shape(getattr(self, name))
                       for name in _DTYPES}, fail)
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
        if not isinstance(self.attrs["system"], str) or not self.attrs["system"]:
            fail(f"attribute 'system' must be a non-empty string (the system's name), got {self.attrs['system']!r}")
        if not isinstance(self.attrs["units"], str) or self.attrs["units"] not in UNITS:
            fail(f"attribute 'units' is {self.attrs['units']!r}; expected one of {list(UNITS)}")
        for key, what in (("temperature", "a positive number"), ("length_scale", "positive")):
            try:
                value = float(self.attrs[key])
            except (TypeError, ValueError):
                fail(f"attribute '{key}' is not a number: {self.attrs[key]!r}")
            if not np.isfinite(value) or value <= 0:
                fail(f"attribute '{key}' must be {what}, got {value}")
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
                         system: Any = None, units: str | None = None, rtol: float = 1e-6,
                         system_option: str = "--system") -> "SampleSet":
        """Fail unless the set is at `temperature`, has `n_atoms`, belongs to `system` and is in `units`.

        `system` is a name (compared exactly with the 'system' attribute) or a System object
        (then `check_system`: name, units and atom count). `system_option` names where the
        expected system came from in the message (e.g. "--system" or "config system").
        """
        if temperature is not None and not np.isclose(self.temperature, float(temperature), rtol=rtol, atol=1e-9):
            raise SampleSetError(
                f"{source}: attribute 'temperature' is {self.temperature:g} but {float(temperature):g} was expected")
        if n_atoms is not None and self.n_atoms != n_atoms:
            raise SampleSetError(f"{source}: dataset 'positions' has {self.n_atoms} atoms but the system has {n_atoms}")
        if system is not None:
            if isinstance(system, str):
                self._check_attr(source, "system", system, system_option)
            else:
                self.check_system(source, system, option=system_option)
        if units is not None and self.attrs.get("units") != units:
            raise SampleSetError(f"{source}: attribute 'units' is {self.attrs.get('units')!r} but {units!r} was expected")
        return self

    def _check_attr(self, source: str, key: str, expected: Any, option: str) -> None:
        if self.attrs.get(key) != expected:
            raise SampleSetError(f"{source}: attribute '{key}' is {self.attrs.get(key)!r} but {option} is {expected!r}")

    def check_system(self, source: str, system: Any, *, option: str = "--system") -> "SampleSet":
        """Fail unless the set belongs to `system` (an object with `.name`, `.units`, `.n_atoms`).

        The 'system' attribute must equal `system.name` exactly (systems from a spec may carry
        custom names), the 'units' attribute `system.units`, and the positions must have
        `system.n_atoms` atoms (or, for a density in R^d, shape [N, system.dim]). `option` names
        where the system came from in the message: "<file>: attribute 'system' is 'lj13' but
        --system is 'alanine_dipeptide'".
        """
        name = str(system.name)
        self._check_attr(source, "system", name, option)
        # a molecule's force field (recorded since 2026-12-06): the same name with other energies
        # is another system (e.g. a spec with the shipped PDB and another force field)
        forcefield = getattr(system, "forcefield", None)
        recorded = self.attrs.get("forcefield")
        if recorded is not None and not name_list(recorded):
            raise SampleSetError(f"{source}: attribute 'forcefield' must be a list of force-field file names, got "
                                 f"{brief(recorded)}")
        if forcefield is not None and recorded is not None and list(recorded) != list(forcefield):
            raise SampleSetError(f"{source}: attribute 'forcefield' is {recorded} but {option} {name!r} uses "
                                 f"{list(forcefield)}")
        units = getattr(system, "units", None)
        if units is not None and self.attrs.get("units") != units:
            raise SampleSetError(f"{source}: attribute 'units' is {self.attrs.get('units')!r} but {option} "
                                 f"{name!r} uses {units!r}")
        n_atoms = getattr(system, "n_atoms", None)
        if n_atoms is not None:
            if self.n_atoms != int(n_atoms):
                have = f"{self.n_atoms} atoms" if self.n_atoms is not None else \
                    f"shape {list(np.shape(self.positions))} (no atoms)"
                raise SampleSetError(f"{source}: dataset 'positions' has {have} but {option} {name!r} has "
                                     f"{int(n_atoms)} atoms")
        else:
            dim = getattr(system, "dim", None)
            shape = list(np.shape(self.positions))
            if self.n_atoms is not None or (dim is not None and shape[1] != int(dim)):
                raise SampleSetError(f"{source}: dataset 'positions' has shape {shape} but {option} {name!r} is a "
                                     f"density in R^{dim} (shape [N, {dim}])")
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
             system: Any = None, units: str | None = None, load_forces: bool = True,
             system_option: str = "--system") -> "SampleSet":
        """Read and validate; optional checks of temperature, atom count, system and units.

        `system`: a name (compared with the 'system' attribute) or a System object (name, units
        and atom count, see `check_system`); `system_option` says where it came from in messages.
        The structure, shapes and total size are checked from the HDF5 metadata before any data
        is read (see `MAX_VALUES`).
        """
        path = Path(path)
        src = str(path)
        with _open(path) as fh:
            members = _check_structure(fh, src, load_forces)
            data: dict[str, Any] = {name: None for name in _DTYPES}
            for name, ds in members.items():
                if name in _DTYPES:
                    data[name] = np.asarray(_read_dataset(ds, src, f"dataset '{name}'"), dtype=_DTYPES[name])
            extra = {key[len("extra/"):]: np.asarray(_read_dataset(ds, src, f"dataset '{key}'"))
                     for key, ds in members.items() if key.startswith("extra/")}
            attrs = _read_attrs(fh, src)
        out = cls(attrs=attrs, extra=extra, **data)
        out.validate(src)
        out.check_compatible(src, temperature=temperature, n_atoms=n_atoms, system=system, units=units,
                             system_option=system_option)
        return out


def _check_shapes(shapes: dict[str, tuple | None], fail) -> None:
    """Shapes of the contract's datasets (None: absent) agree; `fail(message)` raises.

    Used on arrays before a write and on HDF5 metadata before a read."""
    pos = shapes["positions"]
    if pos is None or len(pos) not in (2, 3) or (len(pos) == 3 and pos[2] != 3):
        fail(f"dataset 'positions' must have shape [N, n_atoms, 3] (or [N, dim]), got {_shape_text(pos)}")
    n = pos[0]
    if n == 0:
        fail("dataset 'positions' is empty (0 samples)")
    for name in ("energy", "log_weight", "trajectory", "time_ps"):
        shape = shapes.get(name)
        if shape is not None and tuple(shape) != (n,):
            fail(f"dataset '{name}' must have shape [{n}] to match 'positions', got {_shape_text(shape)}")
    forces = shapes.get("forces")
    if forces is not None and tuple(forces) != tuple(pos):
        fail(f"dataset 'forces' must have shape {list(pos)} like 'positions', got {_shape_text(forces)}")


def _shape_text(shape: tuple | None) -> str:
    return "no data (empty dataspace)" if shape is None else str([int(k) for k in shape])


def _open(path: Path) -> h5py.File:
    src = str(path)
    if not path.exists():
        raise SampleSetError(f"{src}: file not found")
    if path.is_dir():
        raise SampleSetError(f"{src}: is a folder, expected an HDF5 sample set")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SampleSetError(f"{src}: not a readable HDF5 file ({exc.__class__.__name__})") from None


def _member(parent: h5py.Group, name: str, src: str, label: str) -> Any:
    """parent[name], or None when absent; a link that cannot be followed is an input error."""
    if name not in parent:
        return None
    try:
        obj = parent.get(name)
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise SampleSetError(f"{src}: {label} cannot be opened ({exc.__class__.__name__})") from None
    if obj is None:
        raise SampleSetError(f"{src}: {label} is a dangling link")
    return obj


def _kind(obj: Any) -> str:
    if isinstance(obj, h5py.Group):
        return "an HDF5 group"
    if isinstance(obj, h5py.Datatype):
        return "a named HDF5 datatype"
    return "a dataset"


def _dataset(parent: h5py.Group, key: str, label: str, kinds: str, src: str) -> h5py.Dataset | None:
    """parent[key] checked from metadata: a dataset (not a group), dtype kind in `kinds`, a dataspace."""
    obj = _member(parent, key, src, f"dataset '{label}'")
    if obj is None:
        return None
    if not isinstance(obj, h5py.Dataset):
        raise SampleSetError(f"{src}: '{label}' is {_kind(obj)}, expected a dataset")
    if obj.dtype.kind not in kinds:
        what = "non-numeric" if kinds == _NUMERIC_KINDS else "unsupported"
        raise SampleSetError(f"{src}: dataset '{label}' has {what} dtype {obj.dtype}")
    if obj.shape is None:
        raise SampleSetError(f"{src}: dataset '{label}' has no data (empty dataspace)")
    return obj


def _check_structure(fh: h5py.File, src: str, load_forces: bool) -> dict[str, h5py.Dataset]:
    """Datasets to read ({"positions": ds, ..., "extra/<key>": ds}) after checking, from metadata
    only, that they are datasets of numeric dtypes with consistent shapes and at most
    `MAX_VALUES` values in all."""
    def fail(msg: str) -> None:
        raise SampleSetError(f"{src}: {msg}")

    members: dict[str, h5py.Dataset] = {}
    shapes: dict[str, tuple | None] = {}
    for name in _DTYPES:
        ds = _dataset(fh, name, name, _NUMERIC_KINDS, src)
        if ds is None and name in ("positions", "energy"):
            fail(f"required dataset '{name}' is missing")
        shapes[name] = None if ds is None else tuple(ds.shape)
        if ds is not None and (name != "forces" or load_forces):
            members[name] = ds
    _check_shapes(shapes, fail)
    grp = _member(fh, "extra", src, "'extra'")
    if grp is not None:
        if not isinstance(grp, h5py.Group):
            fail(f"'extra' is {_kind(grp)}, expected a group of datasets")
        for key in grp:
            members[f"extra/{key}"] = _dataset(grp, key, f"extra/{key}", _EXTRA_KINDS, src)
    total = sum(int(ds.size) for ds in members.values())
    if total > MAX_VALUES:
        big = max(members, key=lambda k: int(members[k].size))
        fail(f"datasets declare {total:,} values in all (largest: '{big}' of shape {_shape_text(members[big].shape)}); "
             f"sample sets are limited to {MAX_VALUES:,} values (pita.samples.MAX_VALUES)")
    return members


def _read_dataset(ds: h5py.Dataset, src: str, label: str) -> np.ndarray:
    try:
        return ds[()]
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise SampleSetError(f"{src}: {label} cannot be read ({exc.__class__.__name__}: {first})") from None


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


def _read_attrs(fh: h5py.File, src: str) -> dict:
    """All attributes of the file, each checked to be small and decodable (PitaInputError otherwise)."""
    out = {}
    for key in fh.attrs:
        try:
            shape = fh.attrs.get_id(key).shape
            if shape is not None and int(np.prod(shape, dtype=np.int64)) > MAX_ATTR_VALUES:
                raise SampleSetError(f"{src}: attribute '{key}' has {int(np.prod(shape, dtype=np.int64)):,} "
                                     f"elements; attributes are limited to {MAX_ATTR_VALUES:,}")
            out[key] = _from_attr(fh.attrs[key])
        except SampleSetError:
            raise
        except (OSError, TypeError, ValueError, KeyError, RuntimeError, UnicodeDecodeError) as exc:
            # json.JSONDecodeError is a ValueError
            raise SampleSetError(f"{src}: attribute '{key}' cannot be read ({exc.__class__.__name__})") from None
    return out


def read_attrs(path: str | os.PathLike) -> dict:
    """Attributes only (cheap), e.g. to pick up n_energy_evals_total; PitaInputError for a bad file."""
    path = Path(path)
    with _open(path) as fh:
        return _read_attrs(fh, str(path))
