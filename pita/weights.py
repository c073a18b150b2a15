"""Importance weights: the one implementation of normalisation, Kish ESS and systematic resampling.

Everything that weighs or resamples particles (FK-SMC annealing, the relax bridge, sample sets,
metrics, `pita export --resample`) calls these functions; the old names (`pita.fksmc.ess`,
`pita.fksmc.systematic_resample`, `pita.metrics.kish_ess`, `SampleSet.ess`) are thin aliases.

Inputs are log-weights as a numpy array or a torch tensor (any device, any float dtype); the
arithmetic is float64 in numpy. Conventions for values that are not finite:

* ``-inf`` and ``NaN`` count as zero weight (a dropped particle);
* ``+inf`` entries share all the weight equally (the limit of a weight that dominates);
* when every weight is zero, `normalized_weights` is uniform (nothing to prefer) while `ess` is 0.

Systematic resampling draws ONE uniform u and takes the particle under each of the n points
(u + k) / n, k = 0..n-1, on the cumulative weights: particle i is drawn floor(n w_i) or
ceil(n w_i) times (lowest variance of the standard schemes, unbiased counts).
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["normalized_weights", "ess", "systematic_resample", "systematic_indices"]


def _torch() -> Any:
    """The torch module if something has imported it (a tensor cannot exist otherwise), else None.

    numpy-only callers (metrics, sample sets) thus never pay for importing torch."""
    return sys.modules.get("torch")


def _is_torch(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _log_weights(log_weight: Any) -> np.ndarray:
    """Flat float64 numpy copy of log-weights (torch tensors are detached and moved to the CPU)."""
    if _is_torch(log_weight):
        log_weight = log_weight.detach().to("cpu", _torch().float64).numpy()
    return np.asarray(log_weight, dtype=np.float64).reshape(-1)


def _normalized(lw: np.ndarray) -> tuple[np.ndarray, bool]:
    """(normalised weights, whether any weight is positive) of flat float64 log-weights."""
    n = lw.size
    if n == 0:
        return np.zeros(0), False
    top = np.isposinf(lw)
    if top.any():
        w = top.astype(np.float64)
        return w / w.sum(), True
    finite = np.isfinite(lw)
    if not finite.any():
        return np.full(n, 1.0 / n), False
    w = np.zeros(n)
    w[finite] = np.exp(lw[finite] - lw[finite].max())
    return w / w.sum(), True


def normalized_weights(log_weight: Any) -> Any:
    """exp(log_weight - max), normalised to sum 1, in the input's library (torch: float64, same device)."""
    w, _ = _normalized(_log_weights(log_weight))
    if _is_torch(log_weight):
        return _torch().from_numpy(w).to(log_weight.device)
    return w


def ess(log_weight: Any, n: int | None = None) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of log-weights (numpy or torch).

    ``None`` means equal weights: the ESS is then ``n`` (which must be given). All weights
    zero gives 0.0.
    """
    if log_weight is None:
        if n is None:
            raise ValueError("ess: give log-weights or n")
        return float(n)
    w, positive = _normalized(_log_weights(log_weight))
    if not positive:
        return 0.0
    return float(1.0 / np.dot(w, w))


def _systematic(w: np.ndarray, n_out: int, u: float) -> np.ndarray:
    """Indices (n_out,) under the points (u + k) / n_out on the cumulative normalised weights `w`."""
    if n_out < 0:
        raise ValueError(f"systematic resampling: n_out must be >= 0, got {n_out}")
    if w.size == 0:
        raise ValueError("systematic resampling: no particles to draw from")
    cdf = np.cumsum(w)
    cdf[-1] = 1.0  # guard against round-off
    idx = np.searchsorted(cdf, (u + np.arange(n_out, dtype=np.float64)) / n_out, side="right")
    return np.minimum(idx, w.size - 1)


def _uniform(generator: Any) -> float:
    """One U(0, 1) draw from a numpy Generator, a torch Generator, or torch's global generator (None)."""
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    import torch

    return float(torch.rand((), generator=generator, dtype=torch.float64))


def systematic_resample(log_weight: Any, n_out: int | None = None, generator: Any = None) -> Any:
    """Ancestor indices (n_out,) by systematic resampling of log-weights (default n_out: as many as given).

    `generator`: a ``numpy.random.Generator``, a ``torch.Generator`` or None (torch's global one).
    Returns int64 indices in the input's library (a torch tensor on the input's device).
    """
    w, _ = _normalized(_log_weights(log_weight))
    n = int(w.size if n_out is None else n_out)
    idx = _systematic(w, n, _uniform(generator))
    if _is_torch(log_weight):
        return _torch().from_numpy(idx.astype(np.int64)).to(log_weight.device)
    return idx.astype(np.int64)


def systematic_indices(weights: np.ndarray, n_out: int, rng: Any) -> np.ndarray:
    """Systematic resampling of plain non-negative weights (normalised here): numpy int64 indices."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("systematic resampling: weights must be finite, non-negative and not all zero")
    return _systematic(w / w.sum(), int(n_out), _uniform(rng)).astype(np.int64)
