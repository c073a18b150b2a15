"""Provenance: config digests and the attributes every output file records."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_digest(obj: Any) -> str:
    """sha256 (first 16 hex digits) of a canonical JSON dump: equal settings, equal digest."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()[:16]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def base_attrs(step: str, config: Any = None, seed: int | None = None) -> dict:
    """Attributes common to every output: producing step, version, digest, seed, time."""
    return {
        "producing_step": step,
        "package_version": __version__,
        "config_digest": config_digest(config if config is not None else {}),
        "seed": -1 if seed is None else int(seed),
        "created": now_iso(),
    }


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A killed or failing writer leaves no file at `path` (and removes its temporary).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs should get the usual permissions (0666 minus the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_output_path(path: str | os.PathLike | None, option: str, folder: bool = False) -> None:
    """Fail early (PitaInputError) when an output cannot be written: `path` is a folder (or, with
    `folder`, a file), or a file stands where a parent folder should be, or the folder is read-only.

    Run before the work so that a step never fails half-way through writing its outputs.
    """
    from .errors import PitaInputError

    if path is None:
        return
    p = Path(path)
    if p.is_dir() and not folder:
        raise PitaInputError(f"{option} {p}: is a folder, expected a file path")
    if p.exists() and not p.is_dir() and folder:
        raise PitaInputError(f"{option} {p}: is a file, expected a folder")
    parent = p if folder else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PitaInputError(f"{option} {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PitaInputError(f"{option} {p}: folder {parent} is not writable")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_canonical(obj), indent=2, sort_keys=True, default=str) + "\n")
