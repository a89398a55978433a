"""The spaces regression targets are fitted in: `log10` for Teff (its errors scale with it), identity otherwise."""

from __future__ import annotations

import math

import numpy as np

LN10 = math.log(10.0)


def forward_transform(name: str | None, values: np.ndarray) -> np.ndarray:
    """A target in the space the model is fitted in (`log10` or identity); invalid values become NaN."""
    values = np.asarray(values, np.float64)
    if name in (None, "identity"):
        return values
    if name == "log10":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
    raise ValueError(f"unknown target transform {name!r}")


def inverse_transform(name: str | None, values: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A prediction and its 1-sigma back in the target's own units (first-order propagation)."""
    if name in (None, "identity"):
        return values, sigma
    if name == "log10":
        out = 10.0 ** values
        return out, out * LN10 * sigma
    raise ValueError(f"unknown target transform {name!r}")
