"""Answers beyond the labels a model learnt from: flagged, and blanked where users read them.

A regression model answers anything it is given, and a linear or quadratic one answers without bounds: the SED
ridge trained on `make run`'s synthetic stars put a real star with Gaia photometry at 378 +- 4 K and another at
log g -1.7, and a spectral baseline trained on 200 synthetic spectra put an SDSS star at log g 32. No physics
stands behind such an answer, and its uncertainty, calibrated on objects like the training ones, cannot warn.

So each regression model records, per target, the range of its training rows' labels (`label_ranges`, in
`model.json` under `training.label_ranges`), and an answer farther beyond that range than `LABEL_MARGIN` of its
span (in the space the target is fitted in: log10 for Teff) is an extrapolation past anything the model has seen
(`beyond_labels`): the object's `in_domain` becomes False, and where users read answers (the API, `stellar
predict`) the value and its uncertainty are left blank, as survey pipelines null a parameter at the edge of their
grid. Evaluation keeps the answer, so that a model which extrapolates wildly pays for it at the gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from steps.models.transforms import forward_transform, inverse_transform

LABEL_MARGIN = 0.1  # of the training labels' span, in the fitted space, that an answer may lie beyond it
RANGES_KEY = "label_ranges"  # in model.json's `training`


def label_ranges(train: Any, targets: Sequence[str],
                 teff_range: Sequence[float] | None = None) -> dict[str, list[float]]:
    """Per target, [min, max] of the finite labels of the training table `train` (a pyarrow Table): of the rows
    with Teff within `teff_range` where the model learns from those alone. A target with no finite label gets no
    range."""
    def column(name: str) -> np.ndarray:
        return np.asarray(train.column(name).to_numpy(zero_copy_only=False), np.float64)

    rows = np.ones(train.num_rows, bool)
    if teff_range is not None and "teff" in train.column_names:
        with np.errstate(invalid="ignore"):
            rows = (column("teff") >= teff_range[0]) & (column("teff") <= teff_range[1])
    ranges: dict[str, list[float]] = {}
    for target in targets:
        if target not in train.column_names:
            continue
        values = column(target)[rows]
        values = values[np.isfinite(values)]
        if values.size:
            ranges[target] = [float(values.min()), float(values.max())]
    return ranges


def allowed(low: float, high: float, transform: str | None) -> tuple[float, float]:
    """The answers a target's range [low, high] admits: widened by `LABEL_MARGIN` of its span in the fitted space,
    returned in the target's own units."""
    a, b = forward_transform(transform, np.array([low, high]))
    margin = LABEL_MARGIN * (b - a)
    bounds, _ = inverse_transform(transform, np.array([a - margin, b + margin]), np.zeros(2))
    return float(bounds[0]), float(bounds[1])


def beyond_labels(data: dict[str, np.ndarray], ranges: Mapping[str, Sequence[float]],
                  transforms: Mapping[str, str], blank: bool) -> dict[str, np.ndarray]:
    """Flag, in the output columns `data` (per target `t` and `t_err`, and `in_domain`), the answers that lie beyond
    `allowed`; blank them (value and `t_err` NaN) when `blank`. Returns target -> (n,) bool of those answers."""
    found: dict[str, np.ndarray] = {}
    for target, (low, high) in ranges.items():
        if target not in data:
            continue
        values = np.asarray(data[target], np.float64)
        lo, hi = allowed(low, high, transforms.get(target))
        with np.errstate(invalid="ignore"):
            past = np.isfinite(values) & ((values < lo) | (values > hi)) | np.isinf(values)
        if not past.any():
            continue
        found[target] = past
        if blank:
            data[target] = np.where(past, np.nan, values)
            data[f"{target}_err"] = np.where(past, np.nan, np.asarray(data[f"{target}_err"], np.float64))
    if found and "in_domain" in data:
        flags = np.asarray(data["in_domain"], dtype=object).copy()
        flags[np.logical_or.reduce(list(found.values()))] = False
        data["in_domain"] = flags
    return found


def blank_reasons(data: Mapping[str, Any], ranges: Mapping[str, Sequence[float]], transforms: Mapping[str, str],
                  targets: Sequence[str], answered: np.ndarray | None = None) -> list[str | None]:
    """Per row of the output columns `data`, why labels were left blank (`describe`, joined), or None: a label of a
    row the model answered (`answered`, by default the rows with a finite `domain_distance`) is blank only for
    that reason."""
    if answered is None:
        answered = np.isfinite(np.asarray(data.get("domain_distance", []), np.float64))
    answered = np.asarray(answered, bool)
    blank = {t: np.isnan(np.asarray(data[t], np.float64)) & answered for t in targets if t in ranges and t in data}
    reasons: list[str | None] = [None] * len(answered)
    for row in np.flatnonzero(np.logical_or.reduce(list(blank.values()))) if blank else []:
        reasons[row] = "; ".join(describe(t, ranges, transforms) for t in blank if blank[t][row])
    return reasons


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def describe(target: str, ranges: Mapping[str, Sequence[float]], transforms: Mapping[str, str]) -> str:
    """Why a target's answer was left blank, with the training labels' range and the answers it admits."""
    low, high = ranges[target]
    lo, hi = allowed(low, high, transforms.get(target))
    return (f"{target} left blank: the answer lies beyond the training labels ({_number(low)} to {_number(high)}; "
            f"answers from {_number(lo)} to {_number(hi)} are given)")
