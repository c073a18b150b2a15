"""Device choice, in one place: "auto" is CUDA when available, else the CPU."""
from __future__ import annotations

import torch

from .errors import PitaInputError


def resolve_device(device: str | torch.device | None = "auto", option: str = "--device") -> torch.device:
    """A torch.device from cpu, cuda, cuda:N or auto (None = auto); CUDA without a GPU is an input error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PitaInputError(f"{option}: not a device: {device!r} (cpu, cuda, cuda:N or auto)") from None
    if dev.type not in ("cpu", "cuda"):
        raise PitaInputError(f"{option}: unsupported device {device!r} (cpu, cuda, cuda:N or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PitaInputError(f"{option}: {device!r} requested but CUDA is not available")
    return dev
