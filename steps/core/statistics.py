"""Robust statistics every stage uses (ingest's noise levels, preprocessing's clipping, the models' metrics)."""

from __future__ import annotations

import math

import numpy as np

MAD_TO_SIGMA = 1.4826  # the median absolute deviation of Gaussian noise times this is its standard deviation


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 * MAD of the finite values (NaN when there are none)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))
