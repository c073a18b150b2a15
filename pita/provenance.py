"""Provenance: config digests and the attributes every output file records."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
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


def system_identity(system: Any) -> dict:
    """What, besides its name, identifies the system a set was made for: a molecule's force field
    (SampleSet.check_system compares it when recorded)."""
    forcefield = getattr(system, "forcefield", None)
    return {} if forcefield is None else {"forcefield": [str(f) for f in forcefield]}


def base_attrs(step: str, config: Any = None, seed: int | None = None) -> dict:
    """Attributes common to every output: producing step, version, digest, seed, time."""
    return {
        "producing_step": step,
        "package_version": __version__,
        "config_digest": config_digest(config if config is not None else {}),
        "seed": -1 if seed is None else int(seed),
        "created": now_iso(),
    }


#: temporaries are named ".<output name>.<host>-<pid>.<random><suffix>" beside the output
_TMP_TAG = re.compile(r"(?P<host>[A-Za-z0-9-]{0,32})-(?P<pid>[0-9]+)\.[A-Za-z0-9_]{6,}(?:\..*)?")


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never guess about special pids
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep
    return True


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries that `atomic_path` left beside `path` and whose writer is gone.

    Only files named exactly like this output's temporaries count (".<name>.<host>-<pid>.<random>
    <suffix>", so another output in the same folder is never touched), only those written on this
    host (a pid from another machine of a shared file system cannot be checked), and only those
    whose process no longer exists (a writer killed by SIGKILL or a lost node; a running writer
    keeps its file).
    """
    path = Path(path)
    prefix = f".{path.name}."
    host = _host_tag()
    out = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return out
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = _TMP_TAG.fullmatch(entry.name[len(prefix):])
        if m is None or m["host"] != host or not entry.is_file(follow_symlinks=False):
            continue
        if not _pid_alive(int(m["pid"])):
            out.append(Path(entry.path))
    return out


def _fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file or (where the OS allows opening one) a folder; silently skipped where it cannot."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # e.g. Windows cannot open a folder
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failing writer leaves no file at `path` and removes its temporary. The temporary is
    fsynced before the rename and the folder after it, so a crash never leaves a renamed but
    empty output. A writer killed outright (SIGKILL) cannot remove its temporary: the next
    write of the same output removes those of dead writers (`stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs should get the usual permissions (0666 minus the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        _fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent, directory=True)


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
