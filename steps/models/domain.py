"""Whether an object is like the objects a model learnt from: `Domain`, the nearest-neighbour check behind the
`domain_distance` and `in_domain` outputs of every model.

A model asked about an object unlike any it was trained on still answers, and its uncertainty cannot warn: that was
calibrated on objects like the training ones. The spectral model, when it trained on 3,500-8,000 K stars only,
put an SDSS B2 star (about 20,000 K) at 7,140 +- 60 K in one run. So the check looks at the inputs instead: an object's features,
as the model reads them (masked entries at the training mean of the entry, weighted as the model weighs them), are
projected on the leading principal components of the rows the model learnt from (which leaves out noise and the
entries no training row has), and its distance to the nearest of those rows is divided by the `THRESHOLD_QUANTILE`
quantile of their own leave-one-out nearest-neighbour distances. That ratio is `domain_distance`; above 1 the
object is farther from every training object than 95% of the training objects are from their nearest neighbour, and
`in_domain` is False. It is a warning, not a verdict: about 5% of objects like the training ones are flagged too,
and an object can be unlike them in ways the leading components do not show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DOMAIN_COMPONENTS = 64  # most principal components the distance is measured in
DOMAIN_REFERENCE_ROWS = 4000  # most training rows kept as neighbours (a seeded subset beyond)
THRESHOLD_QUANTILE = 0.95  # of the training rows' leave-one-out nearest-neighbour distances: domain_distance 1
CHUNK = 1024  # rows per block of the distance matrix: bounds memory
COLUMNS = ("domain_distance", "in_domain")  # the outputs it adds
ARRAY_NAMES = ("domain_mean", "domain_basis", "domain_reference", "domain_threshold")  # in weights.npz


def _bad_entries(values: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
    """Entries to count as the feature's training mean: those marked `bad`, and every non-finite one."""
    return ~np.isfinite(values) if bad is None else np.asarray(bad, bool) | ~np.isfinite(values)


def _centred(values: np.ndarray, bad: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(n, p) float64 features minus their training mean, the entries to count as the mean at 0 (in place: a
    `np.where` over the batch cost a third of the check's time)."""
    out = np.subtract(values, mean, dtype=np.float64)
    np.putmask(out, bad, 0.0)
    return out


def _nearest(points: np.ndarray, reference: np.ndarray, skip_self: bool = False) -> np.ndarray:
    """(n,) Euclidean distance of each point to its nearest reference row (with `skip_self`, points are the
    reference rows and a row is not its own neighbour)."""
    squares = (reference ** 2).sum(axis=1)
    out = np.empty(len(points))
    for start in range(0, len(points), CHUNK):
        block = points[start:start + CHUNK]
        d2 = (block ** 2).sum(axis=1)[:, None] + squares[None] - 2.0 * block @ reference.T
        if skip_self:
            d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        out[start:start + CHUNK] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


@dataclass
class Domain:
    """The fitted check: feature means, principal directions, the training rows projected, and the distance that
    `domain_distance` 1 stands for."""

    mean: np.ndarray  # (p,) training mean of each feature over the rows where it is good
    basis: np.ndarray  # (p, k) orthonormal principal directions of the weighted features, times the weights
    reference: np.ndarray  # (m, k) the training rows projected
    threshold: float

    @classmethod
    def fit(cls, values: np.ndarray, bad: np.ndarray | None = None, weights: np.ndarray | None = None,
            seed: int = 0) -> "Domain":
        """Fit on the training rows' features (n, p); `bad` marks entries to count as the feature's mean, and
        `weights` (p,) weigh the features as the model does (the spectral model's continuum weight)."""
        values = np.asarray(values, np.float64)
        bad = _bad_entries(values, bad)
        good = ~bad
        mean = np.where(good, values, 0.0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
        rows = np.arange(len(values))
        if len(rows) > DOMAIN_REFERENCE_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), DOMAIN_REFERENCE_ROWS, replace=False))
        weights = np.ones(values.shape[1]) if weights is None else np.asarray(weights, np.float64)
        centred = _centred(values[rows], bad[rows], mean) * weights
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        rank = int((singular > singular[0] * 1e-9).sum()) if singular.size else 0
        directions = vt[:min(DOMAIN_COMPONENTS, max(rank, 1))].T
        reference = centred @ directions
        basis = weights[:, None] * directions  # projects unweighted, centred features
        loo = _nearest(reference, reference, skip_self=True) if len(reference) > 1 else np.zeros(1)
        threshold = float(np.quantile(loo, THRESHOLD_QUANTILE))
        scale = float(np.sqrt((reference ** 2).sum(axis=1).mean())) if reference.size else 1.0
        return cls(mean, basis, reference, max(threshold, 1e-9 * max(scale, 1.0)))

    def distance(self, values: np.ndarray, bad: np.ndarray | None = None) -> np.ndarray:
        """(n,) `domain_distance` of objects' features (n, p)."""
        values = np.asarray(values)
        projected = _centred(values, _bad_entries(values, bad), self.mean) @ self.basis
        return _nearest(projected, self.reference) / self.threshold

    def outputs(self, values: np.ndarray, bad: np.ndarray | None, usable: np.ndarray) -> dict[str, np.ndarray]:
        """The `domain_distance` (NaN) and `in_domain` (None) output columns; blank for unusable objects."""
        distance = np.full(len(usable), np.nan)
        if usable.any():
            distance[usable] = self.distance(values[usable], None if bad is None else bad[usable])
        return dict(zip(COLUMNS, (distance, in_domain(distance))))

    def arrays(self) -> dict[str, np.ndarray]:
        """What `weights.npz` keeps of it (`restore` reads it back)."""
        return dict(zip(ARRAY_NAMES, (self.mean, self.basis, self.reference, np.array([self.threshold]))))

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray]) -> "Domain | None":
        """The check saved by `arrays`, or None for a model saved without one."""
        if not all(name in arrays for name in ARRAY_NAMES):
            return None
        mean, basis, reference, threshold = (arrays[name] for name in ARRAY_NAMES)
        return cls(mean, basis, reference, float(threshold[0]))

    def record(self) -> dict[str, Any]:
        """What `model.json` says about it."""
        return {"method": "distance to the nearest training row in the leading principal components, over the "
                          f"{THRESHOLD_QUANTILE:.0%} quantile of the training rows' leave-one-out distances",
                "components": int(self.basis.shape[1]), "reference_rows": int(len(self.reference)),
                "quantile": THRESHOLD_QUANTILE, "threshold": self.threshold}


def in_domain(distance: np.ndarray) -> np.ndarray:
    """(n,) object array of Python bools: True where `domain_distance` <= 1, False beyond (infinity included),
    None where it is NaN (no prediction)."""
    flags = np.full(len(distance), None, dtype=object)
    known = ~np.isnan(distance)
    flags[known] = (distance[known] <= 1.0).tolist()
    return flags


def outside(flags) -> np.ndarray:
    """(n,) bool of `in_domain` values (a column or a list): True where the object was flagged (False), not where
    it has no prediction (None)."""
    return np.array([flag is False for flag in flags], bool)


def blank(n: int) -> dict[str, np.ndarray]:
    """The domain output columns of a model saved without the check."""
    return dict(zip(COLUMNS, (np.full(n, np.nan), np.full(n, None, dtype=object))))
