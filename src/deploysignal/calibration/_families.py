"""Calibration products of families C, D and E, computed from the calibration split only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["family_extras", "median_heuristic"]


def median_heuristic(reference: np.ndarray, max_rows: int = 600) -> float:
    """Median pairwise Euclidean distance of the (first ``max_rows``) complete reference rows.

    Uses calibration data only, so the bandwidth is fixed before any canary tick is seen.
    """
    from scipy.spatial.distance import pdist  # scipy.spatial: most of a gate's start otherwise (a compiled config records the bandwidth)

    ref = np.asarray(reference, dtype=float)
    ref = ref[~np.isnan(ref).any(axis=1)][:max_rows]
    if ref.shape[0] < 2:
        return math.sqrt(2.0 * max(ref.shape[1], 1))
    med = float(np.median(pdist(ref)))
    return med if med > 1e-9 else 1.0


def family_extras(reference: dict[str, list[list[float]]] | dict[str, np.ndarray], k: int) -> dict[str, Any]:
    """``CompiledConfig.extras``: family C's random-Fourier-feature bandwidth (median heuristic on the
    calibration rows of all tiers, in tier order)."""
    parts = [np.asarray(v, dtype=float).reshape(-1, k) for _, v in sorted(reference.items())]
    rows = np.concatenate(parts) if parts else np.empty((0, k))
    return {"C": {"bandwidth": median_heuristic(rows)}}
