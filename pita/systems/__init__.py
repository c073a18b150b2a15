"""Target systems by name or spec: `load("alanine_dipeptide")`, `load("lj13")`,
`load({"pdb": "data/x.pdb", "forcefield": ["amber14-all.xml", "implicit/obc1.xml"]})`.

The same names and specs are what config.yaml uses.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import PitaInputError, brief, finite_number
from .base import System

#: data/ of the source tree (structures shipped with the repository)
DATA_DIR = Path(__file__).resolve().parents[2] / "data"

#: named molecules: PDB in data/, force field files, length scale L (nm)
MOLECULES: dict[str, dict[str, Any]] = {
    "alanine_dipeptide": {
        "pdb": "alanine_dipeptide.pdb",
        "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
        "length_scale": 0.164,
    },
    # the paper's force field: amber14 with OBC1 implicit solvent (a CustomGBForce)
    "alanine_dipeptide_amber14": {
        "pdb": "alanine_dipeptide.pdb",
        "forcefield": ["amber14-all.xml", "implicit/obc1.xml"],
        "length_scale": 0.164,
    },
    "alanine_tripeptide": {
        "pdb": "alanine_tripeptide.pdb",
        "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
        "length_scale": 0.2,
    },
}
ALIASES = {"aldp": "alanine_dipeptide", "ala2": "alanine_dipeptide", "ala3": "alanine_tripeptide",
           "tripeptide": "alanine_tripeptide"}
NAMES = sorted(list(MOLECULES) + ["lj13", "lj55", "gmm"] + list(ALIASES))


def resolve_data_path(path: str | os.PathLike) -> Path:
    """A path as given if it exists, else relative to the repository's data/ folder (a bare
    name, a path inside data/, or one written from the repository root as data/...). A path into
    any other folder is never replaced by a shipped file of the same name: a typo must fail."""
    p = Path(path)
    if _exists(p) or p.is_absolute():
        return p
    candidates = [DATA_DIR / p]
    if len(p.parts) > 1 and p.parts[0] == "data":
        candidates.append(DATA_DIR.joinpath(*p.parts[1:]))
    return next((q for q in candidates if _exists(q)), p)


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: no such file
        return False


LJ_SPEC_KEYS = ("epsilon", "r_m", "oscillator_scale", "length_scale")
GMM_SPEC_KEYS = ("means", "covs", "stds", "weights")


def _spec_keywords(spec: dict, allowed: tuple[str, ...]) -> dict:
    kw = {k: v for k, v in spec.items() if k != "name"}
    for key, value in kw.items():
        if key not in allowed:
            raise PitaInputError(f"system.{key}: unknown key; a {spec['name']} spec has name, {', '.join(allowed)}")
        if key in LJ_SPEC_KEYS and not (finite_number(value) and value > 0):
            raise PitaInputError(f"system.{key}: must be a positive finite number, got {brief(value)}")
    return kw


def from_argument(text: str | dict, option: str = "--system") -> System:
    """A System from a command-line value: a name, inline JSON spec, or a .json spec file."""
    if isinstance(text, dict):
        return load(text)
    stripped = str(text).strip()
    if stripped.startswith("{") or stripped.endswith(".json"):
        from ..settings import load_json_argument

        spec = load_json_argument(stripped, option)
        if not isinstance(spec, dict):
            raise PitaInputError(f"{option}: a JSON system spec must be an object")
        return load(spec)
    return load(stripped)


def load(spec: str | dict, **overrides: Any) -> System:
    """A System from a name ("alanine_dipeptide", "lj13", ...) or a spec dict.

    Spec dicts: {"pdb": ..., "forcefield": [...], "length_scale": ..., "name": ...} for any
    molecule; {"name": "lj13"}; {"name": "gmm", "means": ..., "covs": ..., "weights": ...}.
    Keyword overrides (e.g. backend="openmm", platform="CPU") go to the constructor.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise PitaInputError(f"system: expected a name or a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    name = ALIASES.get(str(spec.get("name", "")), spec.get("name"))
    if "pdb" in spec:
        from .molecule import MolecularSystem

        spec.setdefault("name", Path(str(spec["pdb"])).stem)
        return MolecularSystem.from_spec({**spec, **overrides})
    if name in MOLECULES:
        from .molecule import MolecularSystem

        return MolecularSystem.from_spec({**MOLECULES[name], **spec, "name": name, **overrides})
    if name in ("lj13", "lj55"):
        from .lj import LennardJonesCluster

        n = int(name[2:])
        kw = _spec_keywords(spec, LJ_SPEC_KEYS)
        return LennardJonesCluster(n_particles=n, **kw, **overrides)
    if name == "gmm":
        from .gmm import GaussianMixture

        kw = _spec_keywords(spec, GMM_SPEC_KEYS)
        try:
            return GaussianMixture(**kw, **overrides)
        except (TypeError, ValueError) as exc:
            raise PitaInputError(f"system: not a valid gmm spec ({' '.join(str(exc).split())})") from None
    raise PitaInputError(f"system: unknown system {spec.get('name')!r}; known: {', '.join(NAMES)} or a {{pdb: ..., forcefield: [...]}} spec")


__all__ = ["System", "load", "from_argument", "NAMES", "MOLECULES", "DATA_DIR", "resolve_data_path"]
