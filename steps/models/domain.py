"""Whether an object is like the objects a model learnt from: `Domain`, the nearest-neighbour check behind the
`domain_distance` and `in_domain` outputs of every model.

A model asked about an object unlike any it was trained on still answers, and its uncertainty cannot warn: that was
calibrated on objects like the training ones. The spectral model, when it trained on 3,500-8,000 K stars only,
put an SDSS B2 star (about 20,000 K) at 7,140 +- 60 K in one run. So the check looks at the inputs instead: an
object's features, as the model reads them (masked entries at the training mean of the entry, weighted as the model
weighs them), are
projected on the leading principal components of the rows the model learnt from (which leaves out noise and the
entries no training row has), and its distance to the nearest of those rows is divided by the `THRESHOLD_QUANTILE`
quantile of their own leave-one-out nearest-neighbour distances. That ratio is `domain_distance`; above 1 the
object is farther from every training object than 95% of the training objects are from their nearest neighbour, and
`in_domain` is False. It is a warning, not a verdict: about 5% of objects like the training ones are flagged too.

An object can also be unlike every training object in ways the leading components do not show, and a spectrum
usually is when it comes from elsewhere: `make run`'s spectral model, trained on synthetic spectra, called 478 of
the 515 MILES spectra like its own, and put their FGK stars a median 234 K off (with the check below it flags 513
of them, and none of its own test spectra; a MILES-trained model flags the same 15 as before). So a spectral model
also measures how much of a spectrum lies off the training spectra's leading components, beyond the spectrum's own
noise (`SpectrumResidual`), against the `RESIDUAL_QUANTILE` quantile of the same figure for training spectra left
out of the fit; and, as a featureless spectrum passes both (its difference from the mean spectrum is the mean's own
lines, which the leading components hold), its line content against the training spectra's `LINES_QUANTILE`
quantile. `domain_distance` is the largest of the ratios (so a little more than 5% of spectra like the training ones
are flagged).

A light curve's class is read from views folded on its period, which look alike whatever the period: a model of RR
Lyrae called Kepler binaries of 16 d RR Lyrae with certainty. So a light-curve model also measures the period against
the range of the training curves' periods (`PeriodRange`), and its ratio joins `domain_distance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from steps.models.features import masked_vectors
from steps.models.inputs import Columns

DOMAIN_COMPONENTS = 64  # most principal components the distance is measured in
DOMAIN_REFERENCE_ROWS = 4000  # most training rows kept as neighbours (a seeded subset beyond)
THRESHOLD_QUANTILE = 0.95  # of the training rows' leave-one-out nearest-neighbour distances: domain_distance 1
CHUNK = 1024  # rows per block of the distance matrix: bounds memory
COLUMNS = ("domain_distance", "in_domain")  # the outputs it adds
ARRAY_NAMES = ("domain_mean", "domain_basis", "domain_reference", "domain_threshold")  # in weights.npz
RESIDUAL_COMPONENTS = 32  # leading components of the training spectra that a spectrum may be made of
RESIDUAL_QUANTILE = 0.99  # of the left-out training spectra's residuals: the residual check's ratio 1
RESIDUAL_FOLDS = 5  # the training spectra are left out a fifth at a time
RESIDUAL_ROWS = 2000  # most training spectra the check is fitted on (a seeded subset beyond)
RESIDUAL_FLOOR = 1e-3  # of the normalised continuum: the smallest residual the check's ratio 1 can stand for
RESIDUAL_COVERAGE = 0.5  # least share of training spectra with a good pixel there for the pixel to count
RESIDUAL_ARRAYS = ("residual_mean", "residual_basis", "residual_threshold")
# The line check: a spectrum's line content is the root mean square of its normalised flux about its own median, less
# its noise variance (`SpectrumResidual._lines`); its ratio is the LINES_QUANTILE quantile of the training spectra's
# line content over the spectrum's: a featureless (flat) spectrum is like no star.
LINES_QUANTILE = 0.001
LINES_ARRAY = "residual_line_floor"
LINES_RATIO_MAX = 100.0  # a spectrum with no line at all (flat) gets this ratio, not infinity (JSON has none)
# The period check of light-curve models: a period more than PERIOD_MARGIN (relative) outside the range of the
# training curves' periods is like no training object's (a Kepler binary of 16 d against RR Lyrae of 0.2-0.9 d, a
# one-day alias of an RR Lyrae); its ratio grows by 1 per PERIOD_MARGIN beyond, in log period. The range leaves out
# the PERIOD_QUANTILE share of the training periods at each end, and at least one (while a curve is left), so that the
# training curves' own wrong periods (aliases) do not widen it.
PERIOD_MARGIN = 0.05
PERIOD_QUANTILE = 0.005
PERIOD_ARRAY = "period_range"
SPECTRUM_COLUMNS = ("flux", "mask", "ivar")  # the normalised flux, its bad-pixel mask, its inverse variance


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


def _seeded_rows(n: int, most: int, seed: int) -> np.ndarray:
    """All of `n` rows, or a sorted seeded subset of `most` of them."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


@dataclass
class SpectrumResidual:
    """The residual check: the training spectra's mean and leading principal directions, and the residual that
    ratio 1 stands for. A spectrum's residual is the root mean square, over its good pixels, of what its leading
    components leave of it, less its noise variance (from `ivar`): the signal no training spectrum is made of."""

    mean: np.ndarray  # (L,) training mean of the normalised flux over the good pixels; NaN: a pixel that does not count
    basis: np.ndarray  # (L, k) orthonormal principal directions
    threshold: float
    line_floor: float | None = None  # the line check's ratio 1 (None: a model saved before it)

    @staticmethod
    def _read(cols: Columns, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, L) flux, noise variance (0 without `ivar`) and bad pixels of a batch."""
        column, mask_column, ivar_column = SPECTRUM_COLUMNS
        flux, bad, ivar = masked_vectors(cols, column, length, mask_column, ivar_column)
        variance = np.zeros_like(flux)
        if ivar is not None:  # an unknown (NaN) inverse variance: no noise to subtract
            known = np.isfinite(ivar) & (ivar > 0) & ~bad
            variance = np.where(known, 1.0 / np.where(known, ivar, 1.0), 0.0)
        return flux, variance, bad

    @staticmethod
    def _residual(flux: np.ndarray, variance: np.ndarray, bad: np.ndarray, mean: np.ndarray,
                  basis: np.ndarray) -> np.ndarray:
        """(n,) residual of each spectrum off `basis` around `mean`, beyond its noise (0 when within it), over the
        good pixels that count."""
        bad = bad | ~np.isfinite(mean)
        variance = np.where(bad, 0.0, variance)
        centred = _centred(flux, bad, np.nan_to_num(mean))
        left = centred - (centred @ basis) @ basis.T
        left[bad] = 0.0
        good = np.maximum((~bad).sum(axis=1), 1)
        return np.sqrt(np.maximum(((left ** 2).sum(axis=1) - variance.sum(axis=1)) / good, 0.0))

    @staticmethod
    def _lines(flux: np.ndarray, variance: np.ndarray, bad: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """(n,) line content: the RMS of the flux about its own median beyond its noise, over the good pixels that
        count, at the upper end of its uncertainty (the mean square less the noise variance, plus twice the noise's
        own scatter of it): a noisy spectrum with shallow lines is not taken for a featureless one."""
        bad = bad | ~np.isfinite(mean) | ~np.isfinite(flux)
        values = np.where(bad, np.nan, flux)
        has = (~bad).any(axis=1)
        median = np.zeros(len(flux))
        median[has] = np.nanmedian(values[has], axis=1)
        variance = np.where(bad, 0.0, variance)
        pixels = np.maximum((~bad).sum(axis=1), 1)
        excess = ((np.where(bad, 0.0, flux - median[:, None]) ** 2).sum(axis=1) - variance.sum(axis=1)) / pixels
        scatter = np.sqrt(2.0 * (variance ** 2).sum(axis=1)) / pixels
        return np.sqrt(np.maximum(excess + 2.0 * scatter, 0.0))

    @staticmethod
    def _fit_basis(centred: np.ndarray, components: int) -> np.ndarray:
        """(L, k) the leading `components` principal directions of centred spectra (fewer when their rank is)."""
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        rank = int((singular > singular[0] * 1e-9).sum()) if singular.size and singular[0] > 0 else 0
        return vt[:min(components, rank)].T

    @classmethod
    def fit(cls, cols: Columns, length: int, seed: int = 0) -> "SpectrumResidual | None":
        """Fit on the training spectra of `cols` (flux on `length` pixels); None when there are too few to leave
        some out."""
        flux, variance, bad = cls._read(cols, length)
        rows = _seeded_rows(len(flux), RESIDUAL_ROWS, seed)
        flux, variance, bad = flux[rows], variance[rows], bad[rows]
        if len(rows) < 2 * RESIDUAL_FOLDS:
            return None
        good = ~bad
        mean = np.where(good, flux, 0.0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
        mean[good.mean(axis=0) < RESIDUAL_COVERAGE] = np.nan  # pixels few training spectra have (beyond their range)
        centred = _centred(flux, bad | ~np.isfinite(mean), np.nan_to_num(mean))
        fold = np.random.default_rng(seed).permutation(len(rows)) % RESIDUAL_FOLDS
        components = min(RESIDUAL_COMPONENTS, int(np.bincount(fold).min()) * (RESIDUAL_FOLDS - 1) - 1)
        left_out = np.empty(len(rows))
        for k in range(RESIDUAL_FOLDS):
            basis = cls._fit_basis(centred[fold != k], components)
            held = fold == k
            left_out[held] = cls._residual(flux[held], variance[held], bad[held], mean, basis)
        threshold = max(float(np.quantile(left_out, RESIDUAL_QUANTILE)), RESIDUAL_FLOOR)
        line_floor = max(float(np.quantile(cls._lines(flux, variance, bad, mean), LINES_QUANTILE)), RESIDUAL_FLOOR)
        return cls(mean, cls._fit_basis(centred, components), threshold, line_floor)

    def ratio(self, cols: Columns) -> np.ndarray:
        """(n,) each spectrum's residual over the threshold, or, where larger, the line floor over its line content
        (a featureless spectrum is like no star)."""
        flux, variance, bad = self._read(cols, len(self.mean))
        ratio = self._residual(flux, variance, bad, self.mean, self.basis) / self.threshold
        if self.line_floor is None:
            return ratio
        lines = self._lines(flux, variance, bad, self.mean)
        return np.maximum(ratio, np.minimum(self.line_floor / np.maximum(lines, 1e-300), LINES_RATIO_MAX))

    def arrays(self) -> dict[str, np.ndarray]:
        """What `weights.npz` keeps of it (`Domain.restore` reads it back)."""
        out = dict(zip(RESIDUAL_ARRAYS, (self.mean, self.basis, np.array([self.threshold]))))
        if self.line_floor is not None:
            out[LINES_ARRAY] = np.array([self.line_floor])
        return out

    def record(self) -> dict[str, Any]:
        """What `model.json` says about it."""
        return {"method": "root mean square of the normalised flux left off the training spectra's leading "
                          "principal components, less the noise variance, over the "
                          f"{RESIDUAL_QUANTILE:.0%} quantile of the same for training spectra left out of the fit",
                "components": int(self.basis.shape[1]), "pixels": int(np.isfinite(self.mean).sum()),
                "quantile": RESIDUAL_QUANTILE, "threshold": self.threshold,
                **({"lines": {"method": "root mean square of the normalised flux about its median, less the noise "
                                        f"variance; ratio 1 at the training spectra's {LINES_QUANTILE:.1%} quantile "
                                        "over it", "floor": self.line_floor}} if self.line_floor is not None else {})}


@dataclass
class PeriodRange:
    """The light-curve models' period check: the range of the periods found in the training curves."""

    low: float
    high: float
    required: bool = False  # every training curve had a period: a curve without one is unlike them all

    @classmethod
    def fit(cls, periods: np.ndarray) -> "PeriodRange | None":
        """From the training curves' periods (days; NaN for curves without one); None when none has a period."""
        periods = np.asarray(periods, np.float64)
        found = periods[np.isfinite(periods) & (periods > 0)]
        if not found.size:
            return None
        found = np.sort(found)
        dropped = min(math.ceil(PERIOD_QUANTILE * len(found)), (len(found) - 1) // 2)
        return cls(float(found[dropped]), float(found[len(found) - 1 - dropped]), bool(found.size == periods.size))

    def ratio(self, cols: Columns) -> np.ndarray:
        """(n,) 0 inside the range widened by PERIOD_MARGIN, beyond it 1 + the distance from the widened range in
        units of log(1 + PERIOD_MARGIN); without a period 0, or infinity where every training curve had one (a
        flat or noisy curve sent without its period looked like the training curves' views)."""
        period = cols.scalar("period")
        with np.errstate(invalid="ignore", divide="ignore"):
            log_period = np.log(np.where(period > 0, period, np.nan))
        low, high = np.log(self.low / (1 + PERIOD_MARGIN)), np.log(self.high * (1 + PERIOD_MARGIN))
        beyond = np.fmax(low - log_period, log_period - high)
        ratio = np.where(np.isfinite(beyond) & (beyond > 0), 1.0 + beyond / np.log1p(PERIOD_MARGIN), 0.0)
        return np.where(np.isfinite(log_period) | (not self.required), ratio, np.inf)

    def arrays(self) -> np.ndarray:
        """What `weights.npz` keeps of it: low, high, and whether a period is required (1) or not (0)."""
        return np.array([self.low, self.high, float(self.required)])

    @classmethod
    def restore(cls, values: np.ndarray) -> "PeriodRange":
        """The check `arrays` saved (a model saved before `required` requires no period)."""
        return cls(float(values[0]), float(values[1]), bool(values[2]) if len(values) > 2 else False)

    def record(self) -> dict[str, Any]:
        """What `model.json` says about it."""
        return {"method": f"the period against the range of the training curves' periods without the "
                          f"{PERIOD_QUANTILE:.1%} (at least one) at each end, widened by {PERIOD_MARGIN:.0%}"
                          + ("; a curve without a period is outside, as every training curve had one"
                             if self.required else ""),
                "low_days": self.low, "high_days": self.high, "period_required": self.required}


@dataclass
class Domain:
    """The fitted check: feature means, principal directions, the training rows projected, and the distance that
    `domain_distance` 1 stands for."""

    mean: np.ndarray  # (p,) training mean of each feature over the rows where it is good
    basis: np.ndarray  # (p, k) orthonormal principal directions of the weighted features, times the weights
    reference: np.ndarray  # (m, k) the training rows projected
    threshold: float
    residual: SpectrumResidual | None = None  # spectral models: the residual check
    period: PeriodRange | None = None  # light-curve models: the period check

    @classmethod
    def fit(cls, values: np.ndarray, bad: np.ndarray | None = None, weights: np.ndarray | None = None,
            seed: int = 0) -> "Domain":
        """Fit on the training rows' features (n, p); `bad` marks entries to count as the feature's mean, and
        `weights` (p,) weigh the features as the model does (the spectral model's continuum weight)."""
        values = np.asarray(values, np.float64)
        bad = _bad_entries(values, bad)
        good = ~bad
        mean = np.where(good, values, 0.0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
        rows = _seeded_rows(len(values), DOMAIN_REFERENCE_ROWS, seed)
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

    def outputs(self, values: np.ndarray, bad: np.ndarray | None, usable: np.ndarray,
                cols: Columns | None = None) -> dict[str, np.ndarray]:
        """The `domain_distance` (NaN) and `in_domain` (None) output columns; blank for unusable objects. With
        the residual check and the objects' inputs `cols`, the distance is the larger of the two ratios."""
        distance = np.full(len(usable), np.nan)
        if usable.any():
            distance[usable] = self.distance(values[usable], None if bad is None else bad[usable])
            if self.residual is not None and cols is not None:
                distance[usable] = np.fmax(distance[usable], self.residual.ratio(cols)[usable])
            if self.period is not None and cols is not None:
                distance[usable] = np.fmax(distance[usable], self.period.ratio(cols)[usable])
        return dict(zip(COLUMNS, (distance, in_domain(distance))))

    def arrays(self) -> dict[str, np.ndarray]:
        """What `weights.npz` keeps of it (`restore` reads it back)."""
        out = dict(zip(ARRAY_NAMES, (self.mean, self.basis, self.reference, np.array([self.threshold]))))
        if self.period is not None:
            out[PERIOD_ARRAY] = self.period.arrays()
        return {**out, **(self.residual.arrays() if self.residual is not None else {})}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray]) -> "Domain | None":
        """The check saved by `arrays`, or None for a model saved without one (a model saved before the residual
        check gets none)."""
        if not all(name in arrays for name in ARRAY_NAMES):
            return None
        mean, basis, reference, threshold = (arrays[name] for name in ARRAY_NAMES)
        residual = None
        if all(name in arrays for name in RESIDUAL_ARRAYS):
            r_mean, r_basis, r_threshold = (arrays[name] for name in RESIDUAL_ARRAYS)
            residual = SpectrumResidual(r_mean, r_basis, float(r_threshold[0]),
                                        float(arrays[LINES_ARRAY][0]) if LINES_ARRAY in arrays else None)
        period = PeriodRange.restore(arrays[PERIOD_ARRAY]) if PERIOD_ARRAY in arrays else None
        return cls(mean, basis, reference, float(threshold[0]), residual, period)

    def record(self) -> dict[str, Any]:
        """What `model.json` says about it."""
        out = {"method": "distance to the nearest training row in the leading principal components, over the "
                         f"{THRESHOLD_QUANTILE:.0%} quantile of the training rows' leave-one-out distances",
               "components": int(self.basis.shape[1]), "reference_rows": int(len(self.reference)),
               "quantile": THRESHOLD_QUANTILE, "threshold": self.threshold}
        if self.residual is not None:
            out["residual"] = self.residual.record()
        if self.period is not None:
            out["period"] = self.period.record()
        return out


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
