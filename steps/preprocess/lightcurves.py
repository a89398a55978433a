"""Light curves to model inputs: cleaned, period-searched, and folded into global and local views.

Two kinds of curve arrive in one raw schema, told apart by their cadences: dense single-band space photometry
(Kepler, TESS: thousands of cadences a few minutes apart) and sparse multi-band survey epochs (SDSS Stripe 82: some
fifty epochs per band over years, in several bands). Each has its own path to the same outputs.

Dense curves:
1. cadences with a fault flag (any but KEPLER_BENIGN_QUALITY_BITS in the Kepler band) or a non-finite value are
   dropped; curves left with fewer than `MIN_CADENCES` are quarantined;
2. the flux is divided by its median and detrended per continuous segment (gaps over `SEGMENT_GAP_DAYS`) by a
   robust quadratic, which removes drifts and jumps between segments but keeps periodic signals; a second,
   flattened copy is further divided by a running median over `FLATTEN_WINDOW_DAYS`, removing slow variability
   so that short dips stand out for the transit search;
3. upward outliers (cosmic rays, flares: over `OUTLIER_SIGMA` robust sigma above the flattened curve) are cut,
   dips are kept;
4. the period is searched twice: Lomb-Scargle on the detrended flux for smooth periodic variables (exact, by FFT of
   the curve laid on its cadence grid, then refined by direct sums), and Box Least Squares on the flattened flux
   for transits and eclipses (coarse to fine: a Fourier-folded search over a sparse period grid proposes peaks,
   astropy's BoxLeastSquares scores them on the full curve and refines the best, see `transit_search`); when odd
   and even BLS events differ in depth (an eclipsing binary with a shallower secondary) the BLS period is doubled.
   `choose_period` then decides between the two candidates;
5. the detrended flux is folded at that period with the deepest dip at phase 0 and binned by median into a
   global view (the whole phase) and a local view (two dip durations either side), empty bins interpolated;
   both are shifted to median 0 and divided by the global view's depth, so the dip bottom is -1.

Sparse multi-band curves (`multiband_period`): each band is standardised (minus its median, over its 5-95%
range), a Lomb-Scargle periodogram of all bands together on a fine grid over `SPARSE_PERIOD_RANGE` proposes
candidate peaks, and each candidate is refined and scored by the chi-square of a multi-band model: one shape of
`MULTIBAND_HARMONICS` Fourier harmonics common to all bands, plus an offset per band. The harmonics are what tell
a true period from its daily aliases (f +- 1/day), which a sinusoid fits about as well when every epoch falls at
the same hour of the night; the candidates include those aliases explicitly. A period whose odd harmonics are not
significant is halved (`period_is_doubled`). The views fold every band's standardised flux at that period, merged,
minimum light at phase 0; each view point is the median of the epochs within `SPARSE_WINDOW_HALF_WIDTH` in phase
(bins as narrow as a dense curve's would mostly be empty), and the local view spans `SPARSE_LOCAL_HALF_WIDTH` of
phase around the minimum. BLS features are NaN: boxes mean nothing at this sampling.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.timeseries import BoxLeastSquares, LombScargle
from scipy import stats
from scipy.ndimage import median_filter
from scipy.signal import find_peaks
from scipy.stats import skew

from steps.core.processes import worker_pool
from steps.core.quarantine import Quarantine
from steps.core.statistics import robust_sigma
from steps.ingest.schemas import (KEPLER_BAND, KEPLER_BENIGN_QUALITY_BITS, LIGHTCURVE_CLASSES,
                                  LIGHTCURVE_LABELS_SCHEMA)
from steps.ingest.tables import column_arrays, list_column
from steps.preprocess.common import Features, RawArtifact, label_columns
from steps.preprocess.transit_search import BLS_DURATIONS, BLS_OVERSAMPLE, BLS_PERIOD_RANGE, transit_search

MIN_CADENCES = 100
DEFAULT_GLOBAL_LENGTH = 201
DEFAULT_LOCAL_LENGTH = 61
SEGMENT_GAP_DAYS = 0.5
FLATTEN_WINDOW_DAYS = 1.0
OUTLIER_SIGMA = 4.0
LS_MIN_PERIOD = 0.045                    # days; just above the Nyquist period of Kepler long cadence
LS_SAMPLES_PER_PEAK = 5
ODD_EVEN_SIGMA = 3.0             # dips differ in depth when apart by this many standard errors...
ODD_EVEN_FRACTION = 0.15         # ...and by this share of the deeper, so sampling effects at high S/N do not count
HARMONIC_TOLERANCE = 0.02        # relative: how close to n times the LS period a BLS period counts as its multiple
SCORE_BINS = 100                 # bins across the shorter candidate period when scoring folds
REGULAR_GRID_TOLERANCE = 0.25   # cadences: times this close to a regular grid are laid on it for the FFT periodogram
LS_REFINE_POINTS = 11            # direct-sum frequencies across +-1 coarse step around the FFT periodogram's peak

SPARSE_CADENCE_DAYS = 0.5        # a median spacing of epochs over this (or several bands) makes a curve sparse
MIN_EPOCHS = 20                  # valid epochs a sparse curve needs in all...
MIN_BAND_EPOCHS = 5              # ...and a band needs to take part (fewer cannot fix its offset and scale)
SPARSE_PERIOD_RANGE = (0.1, 3.0)  # days: RR Lyrae (0.2-1 d), delta Scuti to short-period binaries and Cepheids
SPARSE_SAMPLES_PER_PEAK = 3      # candidate grid: frequency step 1 / (3 baseline)
SPARSE_CANDIDATES = 8            # periodogram peaks refined by the multi-band model
MULTIBAND_HARMONICS = 5          # Fourier harmonics of the common shape: an RR Lyrae ab's sawtooth needs ~5
REFINE_HALF_WIDTH = 1.0          # candidate refinement: +- this / baseline in frequency...
REFINE_STEP = 0.05               # ...in steps of this / baseline (the 5th harmonic's peak is 1 / (5 baseline) wide)
CALIBRATION_FLOOR = 0.02         # relative flux error added in quadrature: ground-based calibration (~0.02 mag)
DOUBLING_FALSE_ALARM = 1e-3      # odd harmonics must be this significant (F test) for a period not to be halved
SIDEREAL_DAY_FREQUENCY = 1.0027379   # cycles per day: surveys observing at a fixed sidereal time alias at this
SPARSE_LOCAL_HALF_WIDTH = 0.2    # phase either side of minimum light in a sparse curve's local view
SPARSE_WINDOW_HALF_WIDTH = 0.025  # phase: a sparse view's point is the median of the epochs this close (~5% of them)

FEATURES = ("period", "ls_period", "ls_power", "bls_period", "bls_power", "bls_depth", "amplitude", "std", "skew",
            "fourier_r21", "fourier_r31", "n_cadences", "n_bands")
FOURIER_HARMONICS = 3      # terms of the Fourier decomposition whose amplitude ratios R21, R31 describe the shape
FOURIER_RATIO_MAX = 10.0   # R21, R31 are capped: a curve with a negligible fundamental (equal eclipses) has no scale


@dataclass
class CurveFeatures:
    """What one curve turns into: the views and the scalar features (None `reason` means usable)."""

    reason: str | None
    global_view: np.ndarray | None = None
    local_view: np.ndarray | None = None
    scalars: dict[str, float] | None = None


def segments(time: np.ndarray) -> list[slice]:
    """Slices of `time` (sorted) between gaps longer than SEGMENT_GAP_DAYS."""
    breaks = np.flatnonzero(np.diff(time) > SEGMENT_GAP_DAYS) + 1
    bounds = np.concatenate([[0], breaks, [time.size]])
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


def detrend(time: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Flux divided by a robust polynomial per segment (quadratic, or lower for short segments)."""
    trend = np.empty_like(flux)
    for part in segments(time):
        t, f = time[part], flux[part]
        span = t[-1] - t[0]
        degree = 2 if span > 5 else 1 if span > 1 else 0
        x = (t - t[0]) / max(span, 1e-9)
        keep = np.ones(t.size, dtype=bool)
        for _ in range(3):
            coefficients = np.polyfit(x[keep], f[keep], degree)
            residual = f - np.polyval(coefficients, x)
            keep = np.abs(residual) < 3 * max(robust_sigma(residual[keep]), 1e-12)
            if keep.sum() <= degree + 1:
                break
        trend[part] = np.polyval(coefficients, x)
    return flux / trend


def flatten(time: np.ndarray, flux: np.ndarray, cadence: float) -> np.ndarray:
    """Flux divided by its running median over FLATTEN_WINDOW_DAYS, per segment."""
    window = max(int(round(FLATTEN_WINDOW_DAYS / cadence)) | 1, 3)
    flat = np.empty_like(flux)
    for part in segments(time):
        flat[part] = flux[part] / median_filter(flux[part], size=min(window, flux[part].size), mode="nearest")
    return flat


def binned_median(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Median of `y` in each bin of `x` between `edges` (NaN for empty bins), without a loop over bins."""
    bins = np.searchsorted(edges, x, side="right") - 1
    inside = (bins >= 0) & (bins < edges.size - 1)
    bins, y = bins[inside], y[inside]
    order = np.lexsort((y, bins))
    bins, y = bins[order], y[order]
    counts = np.bincount(bins, minlength=edges.size - 1)
    starts = np.cumsum(counts) - counts
    filled = counts > 0
    lower = starts[filled] + (counts[filled] - 1) // 2
    upper = starts[filled] + counts[filled] // 2
    median = np.full(edges.size - 1, np.nan)
    median[filled] = 0.5 * (y[lower] + y[upper])
    return median


def _fill_empty(view: np.ndarray, periodic: bool) -> np.ndarray:
    """Linear interpolation over empty (NaN) bins, wrapping around in phase for a periodic view."""
    empty = np.isnan(view)
    if empty.all():
        return np.zeros_like(view)
    index = np.arange(view.size)
    view = view.copy()
    view[empty] = np.interp(index[empty], index[~empty], view[~empty], period=view.size if periodic else None)
    return view


def fold_score(time: np.ndarray, flux: np.ndarray, period: float, bin_width: float) -> float:
    """Adjusted R^2 of a binned-mean model of the fold at `period`, with bins `bin_width` days wide.

    Scoring every candidate at the same time resolution and charging each bin as a parameter makes folds at P
    and P/2 comparable: the longer fold wins only when its extra bins explain more than chance would (as for an
    eclipsing binary whose two eclipses differ).
    """
    bins = int(np.clip(round(period / bin_width), 2, time.size // 4))
    index = np.minimum((np.mod(time / period, 1.0) * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    means = np.bincount(index, flux, minlength=bins) / np.maximum(counts, 1)
    residual = np.sum((flux - means[index]) ** 2)
    total = np.sum((flux - flux.mean()) ** 2)
    parameters = int(np.count_nonzero(counts))
    if total <= 0 or time.size <= parameters:
        return 0.0
    return float(1 - (residual / (time.size - parameters)) / (total / (time.size - 1)))


def regular_grid_index(time: np.ndarray, cadence: float) -> np.ndarray | None:
    """Each time's index on the grid `time[0] + k * cadence`, or None when some time is off it by more than
    REGULAR_GRID_TOLERANCE cadences (barycentric drift of Kepler's clock over a quarter stays well inside)."""
    index = np.rint((time - time[0]) / cadence).astype(np.int64)
    if np.any(np.abs(time - time[0] - index * cadence) > REGULAR_GRID_TOLERANCE * cadence):
        return None
    return index


def lomb_scargle_power(time: np.ndarray, flux: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """The floating-mean Lomb-Scargle power (astropy's 'standard' normalisation: 1 - chi2 / chi2 of a constant) at
    `frequencies`, by direct sums: exact, for a few frequencies."""
    elapsed = time - time[0]
    if frequencies.size > 2 and np.allclose(np.diff(frequencies), frequencies[1] - frequencies[0]):
        # evenly spaced: exp(-i w_k t) = exp(-i w_0 t) exp(-i dw t)^k, two exponentials instead of one per frequency
        step = np.exp(-2j * np.pi * (frequencies[1] - frequencies[0]) * elapsed)
        first = np.exp(-2j * np.pi * frequencies[0] * elapsed)
        rotation = np.cumprod(np.vstack([first, np.broadcast_to(step, (frequencies.size - 1, time.size))]), axis=0)
    else:
        rotation = np.exp(-2j * np.pi * frequencies[:, None] * elapsed[None, :])
    return _power_from_sums(rotation.mean(axis=1), (rotation * rotation).mean(axis=1),
                            rotation @ (flux - flux.mean()) / time.size, np.var(flux))


def _power_from_sums(first: np.ndarray, second: np.ndarray, data: np.ndarray, variance: float) -> np.ndarray:
    """Lomb-Scargle power from the mean of exp(-i w t) (`first`), of exp(-2i w t) (`second`) and of
    (y - mean y) exp(-i w t) (`data`): the fit of a sinusoid and a constant solved as a 2x2 system, with no tau."""
    cc = 0.5 * (1 + second.real) - first.real ** 2
    ss = 0.5 * (1 - second.real) - first.imag ** 2
    cs = -0.5 * second.imag - first.real * -first.imag
    yc, ys = data.real, -data.imag
    determinant = cc * ss - cs ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        power = (yc ** 2 * ss - 2 * yc * ys * cs + ys ** 2 * cc) / (variance * determinant)
    return np.where(determinant > 1e-12, power, 0.0)


def _real_transform_at(half: np.ndarray, index: np.ndarray, length: int) -> np.ndarray:
    """The DFT of a real series of `length` at any `index`, from its half spectrum (`rfft`): X[-j] = conj(X[j])."""
    index = index % length
    mirrored = index > length // 2
    return np.where(mirrored, np.conj(half[np.where(mirrored, length - index, 0)]),
                    half[np.minimum(index, length // 2)])


def lomb_scargle(time: np.ndarray, flux: np.ndarray, baseline: float) -> tuple[float, float]:
    """(period, normalised power) of the highest Lomb-Scargle peak between 2 / baseline and 1 / LS_MIN_PERIOD.

    On a regular cadence grid (Kepler, TESS) the sums over cadences at LS_SAMPLES_PER_PEAK frequencies per peak
    width are exact discrete Fourier transforms of the curve laid on the grid (zeros in gaps, zero-padded), and
    those at twice a frequency are the same transform's values at twice the index, modulo its length: two FFTs
    give the whole periodogram. Elsewhere astropy's fast method does. The peak is then refined by direct sums on
    a grid 5 times finer.
    """
    cadence = float(np.median(np.diff(time)))
    index = regular_grid_index(time, cadence)
    low, high = 2 / baseline, 1 / LS_MIN_PERIOD
    if index is not None and high < 0.5 / cadence:
        length = int(2 ** np.ceil(np.log2(LS_SAMPLES_PER_PEAK * (index[-1] + 1))))
        step = 1 / (length * cadence)
        bins = np.arange(int(np.ceil(low / step)), int(high / step) + 1)
        weights, weighted = np.zeros(length), np.zeros(length)
        weights[index] = 1.0 / time.size
        weighted[index] = (flux - flux.mean()) / time.size
        transform_weights, transform_flux = np.fft.rfft(weights), np.fft.rfft(weighted)
        power = _power_from_sums(transform_weights[bins], _real_transform_at(transform_weights, 2 * bins, length),
                                 transform_flux[bins], np.var(flux))
        frequency = bins * step
    else:
        frequency, power = LombScargle(time, flux).autopower(minimum_frequency=low, maximum_frequency=high,
                                                             samples_per_peak=LS_SAMPLES_PER_PEAK)
    best = int(np.argmax(power))
    step = frequency[1] - frequency[0]
    fine = np.linspace(frequency[best] - step, frequency[best] + step, LS_REFINE_POINTS)
    fine_power = lomb_scargle_power(time, flux, fine)
    best_fine = int(np.argmax(fine_power))
    return float(1 / fine[best_fine]), float(fine_power[best_fine])


def events_differ(time: np.ndarray, flux: np.ndarray, long_period: float, count: int, epoch: float,
                  duration: float) -> bool:
    """Whether the `count` dips evenly spaced through `long_period`, the first at `epoch`, differ in depth.

    Depths are mean out-of-dip minus mean in-dip flux, with errors from the robust scatter. They differ when the
    deepest and shallowest are apart by ODD_EVEN_SIGMA errors and by ODD_EVEN_FRACTION of the deeper: the
    sign of a period that is really `long_period` (unequal eclipses, or a transit that a shorter period's
    harmonics only imitate), rather than `long_period / count`.
    """
    spacing = long_period / count
    offsets = [(np.mod((time - epoch - event * spacing) / long_period + 0.5, 1.0) - 0.5) * long_period
               for event in range(count)]
    in_dip = np.abs(np.array(offsets)) < duration / 2                     # events x cadences
    out_of_dip = ~in_dip.any(axis=0)
    counts = in_dip.sum(axis=1)
    if counts.min() == 0 or not out_of_dip.any():
        return False
    depths = flux[out_of_dip].mean() - (in_dip @ flux) / counts
    errors = robust_sigma(flux) * np.sqrt(1 / counts + 1 / out_of_dip.sum())
    deepest, shallowest = int(np.argmax(depths)), int(np.argmin(depths))
    difference = depths[deepest] - depths[shallowest]
    return bool(difference > ODD_EVEN_SIGMA * np.hypot(errors[deepest], errors[shallowest])
                and difference > ODD_EVEN_FRACTION * abs(depths[deepest]))


def box_least_squares(time: np.ndarray, flux: np.ndarray, baseline: float) -> dict[str, float]:
    """The best BLS period with its depth S/N, depth, duration and mid-event time, searched coarse to fine
    (`transit_search`) and doubled when odd and even events differ in depth (`events_differ`).

    The flux's robust scatter serves as every point's uncertainty, so the depth S/N reflects the noise actually
    present (red noise included), not the nominal photometric errors.
    """
    model = BoxLeastSquares(time, flux, dy=np.full(time.size, max(robust_sigma(flux), 1e-12)))
    result, best = transit_search(model, time, flux, baseline, float(np.median(np.diff(time))))
    period, duration, epoch = float(result.period[best]), float(result.duration[best]), float(result.transit_time[best])
    if 2 * period <= baseline / 2 and events_differ(time, flux, 2 * period, 2, epoch, duration):
        result = model.power([2 * period], BLS_DURATIONS, oversample=BLS_OVERSAMPLE)
        best = 0
    return {"period": float(result.period[best]), "power": float(result.depth_snr[best]),
            "depth": float(result.depth[best]), "duration": float(result.duration[best]),
            "epoch": float(result.transit_time[best])}


def choose_period(time: np.ndarray, detrended: np.ndarray, flat: np.ndarray, ls_period: float,
                  bls: dict[str, float]) -> float:
    """The period to fold at, from the Lomb-Scargle and BLS candidates.

    When the BLS period is n times the LS period (within HARMONIC_TOLERANCE), the two see the same signal and
    the question is which is its true period: the n dips inside the BLS period are alike for a pulsator (LS
    is right; BLS, whose boxes cannot fit its short cycles, settles on a multiple), but differ for a transit
    or unequal eclipses (BLS is right; LS locks onto a harmonic). Unrelated candidates are compared by
    `fold_score` on the detrended flux.
    """
    ratio = bls["period"] / ls_period
    multiple = max(int(round(ratio)), 1)
    if abs(ratio / multiple - 1) < HARMONIC_TOLERANCE:
        if multiple == 1:
            return ls_period
        differ = events_differ(time, flat, bls["period"], multiple, bls["epoch"], bls["duration"])
        return bls["period"] if differ else ls_period
    bin_width = min(ls_period, bls["period"]) / SCORE_BINS
    ls_score, bls_score = (fold_score(time, detrended, period, bin_width) for period in (ls_period, bls["period"]))
    return bls["period"] if bls_score > ls_score else ls_period


def fold_alignment(time: np.ndarray, flux: np.ndarray, period: float) -> tuple[float, float]:
    """(time of the deepest box-shaped dip, its duration) at a fixed `period`, for centring the views."""
    durations = period * np.array([0.01, 0.02, 0.04, 0.08, 0.16, 0.3])
    durations = durations[durations > np.median(np.diff(time))]
    result = BoxLeastSquares(time, flux).power([period], durations if durations.size else [0.3 * period])
    return float(result.transit_time[0]), float(result.duration[0])


def usable_cadences(time: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, quality: np.ndarray,
                    band_codes: np.ndarray, band_names: tuple[str, ...]) -> np.ndarray:
    """Cadences with finite values and no fault flag: in the Kepler band the KEPLER_BENIGN_QUALITY_BITS do not
    count as faults; in any other band every flag does."""
    benign = sum(KEPLER_BENIGN_QUALITY_BITS.values())
    kepler = np.array([name == KEPLER_BAND for name in band_names], dtype=bool)[band_codes]
    fault = np.where(kepler, quality & ~benign, quality) != 0
    return ~fault & np.isfinite(time) & np.isfinite(flux) & np.isfinite(flux_err)


def is_sparse(time: np.ndarray, band_codes: np.ndarray) -> bool:
    """A survey's epochs rather than a space mission's cadences: several bands, or epochs days apart."""
    return bool(np.unique(band_codes).size > 1 or np.median(np.diff(time)) > SPARSE_CADENCE_DAYS)


def process_curve(time: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, quality: np.ndarray,
                  band_codes: np.ndarray, band_names: tuple[str, ...], global_length: int,
                  local_length: int, transit_search: bool = True) -> CurveFeatures:
    """Features of one light curve (see the module docstring), or the reason it cannot be used.

    Without `transit_search` a dense curve gets no BLS search (its BLS features are NaN and it is folded at the
    Lomb-Scargle period): the outputs of lightkurve's clean-flatten-periodogram-fold-bin chain, for comparison.
    """
    if not (time.size == flux.size == flux_err.size == quality.size == band_codes.size):
        return CurveFeatures(f"malformed: time/flux/flux_err/quality/band lengths "
                             f"{time.size}/{flux.size}/{flux_err.size}/{quality.size}/{band_codes.size}")
    good = usable_cadences(time, flux, flux_err, quality, band_codes, band_names)
    order = np.argsort(time[good], kind="stable")
    time, flux, flux_err, band_codes = (values[good][order] for values in (time, flux, flux_err, band_codes))
    if time.size >= 2 and is_sparse(time, band_codes):
        return process_sparse_curve(time, flux, flux_err, band_codes, global_length, local_length)
    time, first = np.unique(time, return_index=True)  # a cadence given twice (joined curves overlap) counts once
    repeated = flux.size - time.size
    if time.size < MIN_CADENCES:
        return CurveFeatures(f"only {time.size} valid cadences, fewer than {MIN_CADENCES}"
                             + (f" ({repeated} more repeat a time already read)" if repeated else ""))
    return process_dense_curve(time, flux[first], global_length, local_length, transit_search)


def process_dense_curve(time: np.ndarray, flux: np.ndarray, global_length: int, local_length: int,
                        transit_search: bool = True) -> CurveFeatures:
    """Features of a dense single-band curve (valid cadences only, in time order)."""
    median = np.median(flux)
    if not median > 0:
        return CurveFeatures(f"median flux {median} is not positive")
    cadence = float(np.median(np.diff(time)))
    detrended = detrend(time, flux / median)
    flat = flatten(time, detrended, cadence)
    keep = flat - 1 < OUTLIER_SIGMA * robust_sigma(flat)
    time, detrended, flat = time[keep], detrended[keep], flat[keep]
    if time.size < MIN_CADENCES:
        return CurveFeatures(f"only {time.size} cadences left after outlier removal, fewer than {MIN_CADENCES}")
    baseline = float(time[-1] - time[0])
    if baseline < 2 * BLS_PERIOD_RANGE[0]:
        return CurveFeatures(f"baseline of {baseline:.2f} d is too short for a period search")

    ls_period, ls_power = lomb_scargle(time, detrended, baseline)
    if transit_search:
        bls = box_least_squares(time, flat, baseline)
        period = choose_period(time, detrended, flat, ls_period, bls)
    else:
        bls, period = {"period": np.nan, "power": np.nan, "depth": np.nan}, ls_period

    epoch, duration = fold_alignment(time, detrended, period)
    phase = np.mod((time - epoch) / period + 0.5, 1.0) - 0.5
    half_width = min(2 * duration / period, 0.5)
    global_view, local_view = folded_views(phase, detrended, global_length, local_length, half_width)
    low, high = np.percentile(detrended, [5, 95])
    r21, r31 = fourier_ratios(time, detrended, np.ones(time.size), np.zeros(time.size, np.int64), period)
    scalars = {"period": period, "ls_period": ls_period, "ls_power": ls_power, "bls_period": bls["period"],
               "bls_power": bls["power"], "bls_depth": bls["depth"], "amplitude": float(high - low),
               "std": float(np.std(detrended)), "skew": float(skew(detrended)), "fourier_r21": r21,
               "fourier_r31": r31, "n_cadences": time.size, "n_bands": 1}
    return CurveFeatures(None, global_view, local_view, scalars)


def folded_views(phase: np.ndarray, flux: np.ndarray, global_length: int, local_length: int,
                 local_half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Global and local views of a fold (phase in [-0.5, 0.5), the dip at 0), median-binned, empty bins
    interpolated, normalised by `normalised_views`."""
    global_view = _fill_empty(binned_median(phase, flux, np.linspace(-0.5, 0.5, global_length + 1)), True)
    local_view = _fill_empty(binned_median(phase, flux, np.linspace(-local_half_width, local_half_width,
                                                                     local_length + 1)), False)
    return normalised_views(global_view, local_view, flux)


def normalised_views(global_view: np.ndarray, local_view: np.ndarray,
                     flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both views shifted to the global view's median and divided by its depth, so the dip bottom is -1 (by the
    flux's robust scatter where there is no dip)."""
    centre = float(np.median(global_view))
    depth = centre - float(global_view.min())
    scale = depth if depth > 0 else max(robust_sigma(flux), 1e-12)
    return (global_view - centre) / scale, (local_view - centre) / scale


# Sparse multi-band curves

def windowed_median(phase: np.ndarray, flux: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The median of the epochs within SPARSE_WINDOW_HALF_WIDTH in phase (wrapping around) of each centre: the
    view of a sparse fold, whose few epochs would leave most narrow bins empty. A window with no epoch is
    interpolated from its neighbours."""
    distance = np.mod(phase[None, :] - centres[:, None] + 0.5, 1.0) - 0.5
    inside = np.abs(distance) <= SPARSE_WINDOW_HALF_WIDTH
    view = np.full(centres.size, np.nan)
    occupied = inside.any(axis=1)
    view[occupied] = np.nanmedian(np.where(inside[occupied], flux[None, :], np.nan), axis=1)
    return _fill_empty(view, periodic=False)


def standardise_bands(flux: np.ndarray, flux_err: np.ndarray,
                      band_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each band minus its median, divided by its 5-95% range, with the errors (CALIBRATION_FLOOR added in
    quadrature) scaled alike: one light-curve shape then serves every band. Returns (flux, error, range)."""
    bands = int(band_index.max()) + 1
    order = np.argsort(band_index, kind="stable")
    starts = np.searchsorted(band_index[order], np.arange(bands))
    groups = np.split(flux[order], starts[1:])
    medians = np.array([np.median(group) for group in groups])
    ranges = np.array([max(np.subtract(*np.percentile(group, [95, 5])), 1e-9) for group in groups])
    error = np.hypot(flux_err, CALIBRATION_FLOOR * np.abs(flux))
    return (flux - medians[band_index]) / ranges[band_index], error / ranges[band_index], ranges


def fourier_ratios(time: np.ndarray, flux: np.ndarray, weight: np.ndarray, band_index: np.ndarray,
                   period: float) -> tuple[float, float]:
    """The amplitude ratios R21 = A2/A1 and R31 = A3/A1 of a `FOURIER_HARMONICS`-term Fourier series at `period`,
    common to all bands on top of one offset per band, fitted by weighted least squares (Simon & Lee 1981): near 0
    for a sinusoid (RRc, most spotted stars), ~0.5 for a sawtooth (RRab); at most FOURIER_RATIO_MAX. NaN where
    the fit is degenerate."""
    bands = int(band_index.max()) + 1
    angle = 2 * np.pi * time / period
    columns = [np.eye(bands)[band_index]]
    for k in range(1, FOURIER_HARMONICS + 1):
        columns += [np.cos(k * angle)[:, None], np.sin(k * angle)[:, None]]
    design = np.hstack(columns)
    root = np.sqrt(weight)
    coefficients, _, rank, _ = np.linalg.lstsq(design * root[:, None], flux * root, rcond=None)
    if rank < design.shape[1]:
        return math.nan, math.nan
    amplitudes = np.hypot(coefficients[bands::2], coefficients[bands + 1::2])
    if not amplitudes[0] > 0:
        return math.nan, math.nan
    ratios = np.minimum(amplitudes[1:3] / amplitudes[0], FOURIER_RATIO_MAX)
    return float(ratios[0]), float(ratios[1])


def multiband_chi2_reduction(time: np.ndarray, flux: np.ndarray, weight: np.ndarray, band_index: np.ndarray,
                             frequencies: np.ndarray, harmonics: int) -> np.ndarray:
    """How much a shape of `harmonics` Fourier terms common to all bands, on top of one offset per band, lowers
    the chi-square below that of the offsets alone, at each frequency.

    The model's normal equations need, per band, the weighted sums of exp(i m w t) for m up to twice the
    harmonics (products of two harmonics are harmonics of their sum and difference) and, over all bands, those
    of y exp(i m w t); the band offsets are projected out of the Fourier columns. Everything is a batch of small
    linear systems, one per frequency.
    """
    bands = int(band_index.max()) + 1
    membership = np.zeros((time.size, bands))
    membership[np.arange(time.size), band_index] = weight
    band_weight = membership.sum(axis=0)
    centred = flux - (np.bincount(band_index, weight * flux, bands) / band_weight)[band_index]
    rotation = np.exp(2j * np.pi * frequencies[:, None] * (time - time[0])[None, :])
    powers = [np.ones_like(rotation), rotation]
    for _ in range(2, 2 * harmonics + 1):
        powers.append(powers[-1] * rotation)
    per_band = np.stack(powers) @ membership                                  # m x F x bands
    total = per_band.sum(axis=-1)                                             # m x F
    data = np.stack(powers[1:harmonics + 1]) @ (weight * centred)             # harmonics x F

    order = np.arange(1, harmonics + 1)
    difference, summed = np.abs(order[:, None] - order[None, :]), order[:, None] + order[None, :]
    sign = np.sign(order[:, None] - order[None, :])[..., None]
    t_difference, t_sum = total[difference], total[summed]                    # harmonics x harmonics x F
    gram = np.empty((frequencies.size, 2 * harmonics, 2 * harmonics))
    gram[:, :harmonics, :harmonics] = np.moveaxis(0.5 * (t_difference.real + t_sum.real), -1, 0)
    gram[:, harmonics:, harmonics:] = np.moveaxis(0.5 * (t_difference.real - t_sum.real), -1, 0)
    cos_sin = np.moveaxis(0.5 * (t_sum.imag - sign * t_difference.imag), -1, 0)
    gram[:, :harmonics, harmonics:] = cos_sin
    gram[:, harmonics:, :harmonics] = np.swapaxes(cos_sin, 1, 2)
    columns = np.concatenate([per_band[1:harmonics + 1].real, per_band[1:harmonics + 1].imag])   # 2h x F x bands
    gram -= np.einsum("ifb,jfb->fij", columns / band_weight, columns)
    gram += 1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(2 * harmonics)
    projections = np.concatenate([data.real, data.imag]).T                    # F x 2h
    solution = np.linalg.solve(gram, projections[..., None])[..., 0]
    return np.einsum("fi,fi->f", solution, projections)


def offsets_chi2(flux: np.ndarray, weight: np.ndarray, band_index: np.ndarray) -> float:
    """The chi-square of a constant per band: what `multiband_chi2_reduction` reduces."""
    means = np.bincount(band_index, weight * flux) / np.bincount(band_index, weight)
    return float(np.sum(weight * (flux - means[band_index]) ** 2))


def period_is_doubled(time: np.ndarray, flux: np.ndarray, weight: np.ndarray, band_index: np.ndarray,
                      frequency: float, reduction: float, baseline: float) -> tuple[bool, float]:
    """Whether the best frequency is half the true one: folded at twice its period a signal repeats, so the odd
    harmonics fit only noise. Returns (halved?, the refined double frequency), by an F test of what the odd
    harmonics add to the chi-square reduction, at DOUBLING_FALSE_ALARM."""
    double = 2 * frequency + np.arange(-2, 3) * REFINE_STEP / (2 * baseline)
    double_reduction = multiband_chi2_reduction(time, flux, weight, band_index, double, MULTIBAND_HARMONICS)
    best = int(np.argmax(double_reduction))
    odd_terms = 2 * ((MULTIBAND_HARMONICS + 1) // 2)
    dof = time.size - 2 * MULTIBAND_HARMONICS - (int(band_index.max()) + 1)
    residual = offsets_chi2(flux, weight, band_index) - reduction
    if dof <= 0 or residual <= 0:
        return False, frequency
    statistic = ((reduction - double_reduction[best]) / odd_terms) / (residual / dof)
    return bool(stats.f.sf(statistic, odd_terms, dof) > DOUBLING_FALSE_ALARM), float(double[best])


def multiband_period(time: np.ndarray, flux: np.ndarray, flux_err: np.ndarray,
                     band_index: np.ndarray) -> dict[str, float]:
    """The period of a sparse multi-band curve (see the module docstring), with the candidates' periodogram peak
    (`ls_period`, `ls_power`) and the phase of minimum light of the fitted shape (`epoch`)."""
    standard, error, _ = standardise_bands(flux, flux_err, band_index)
    weight = 1 / error ** 2
    baseline = float(time[-1] - time[0])
    low, high = 1 / SPARSE_PERIOD_RANGE[1], 1 / SPARSE_PERIOD_RANGE[0]
    grid = np.arange(low, high, 1 / (SPARSE_SAMPLES_PER_PEAK * baseline))
    band_means = np.bincount(band_index, weight * standard) / np.bincount(band_index, weight)
    power = LombScargle(time, standard - band_means[band_index], error, fit_mean=False,
                        center_data=False).power(grid, method="fast")
    peaks, _ = find_peaks(power)
    peaks = peaks[np.argsort(power[peaks])[::-1][:SPARSE_CANDIDATES]] if peaks.size else [int(np.argmax(power))]
    candidates = np.unique(np.concatenate([grid[peaks] + alias * SIDEREAL_DAY_FREQUENCY for alias in (-1, 0, 1)]))
    candidates = candidates[(candidates > low) & (candidates < high)]
    offsets = np.arange(-REFINE_HALF_WIDTH, REFINE_HALF_WIDTH + REFINE_STEP / 2, REFINE_STEP) / baseline
    trial = (candidates[:, None] + offsets[None, :]).ravel()
    reduction = multiband_chi2_reduction(time, standard, weight, band_index, trial, MULTIBAND_HARMONICS)
    best = int(np.argmax(reduction))
    frequency = float(trial[best])
    doubled, double = period_is_doubled(time, standard, weight, band_index, frequency, float(reduction[best]),
                                        baseline)
    if doubled and double < high:
        frequency = double
    top = int(peaks[0])
    return {"period": 1 / frequency, "ls_period": float(1 / grid[top]), "ls_power": float(power[top])}


def process_sparse_curve(time: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, band_codes: np.ndarray,
                         global_length: int, local_length: int) -> CurveFeatures:
    """Features of a sparse (multi-band) curve: valid epochs only, in time order."""
    codes, band_index, counts = np.unique(band_codes, return_inverse=True, return_counts=True)
    enough = counts >= MIN_BAND_EPOCHS
    kept = enough[band_index]
    if kept.sum() < MIN_EPOCHS:
        return CurveFeatures(f"{time.size} valid measurements, {kept.sum()} of them in bands with at least "
                             f"{MIN_BAND_EPOCHS} each: a sparse period search needs {MIN_EPOCHS}")
    time, flux, flux_err = time[kept], flux[kept], flux_err[kept]
    band_index = np.cumsum(enough)[band_index[kept]] - 1
    baseline = float(time[-1] - time[0])
    if baseline < 2 * SPARSE_PERIOD_RANGE[1]:
        return CurveFeatures(f"baseline of {baseline:.2f} d is too short for a period search up to "
                             f"{SPARSE_PERIOD_RANGE[1]} d")
    search = multiband_period(time, flux, flux_err, band_index)
    period = search["period"]
    standard, standard_err, ranges = standardise_bands(flux, flux_err, band_index)
    r21, r31 = fourier_ratios(time, standard, 1 / standard_err ** 2, band_index, period)
    phase = np.mod(time / period + 0.5, 1.0) - 0.5
    global_centres = (np.arange(global_length) + 0.5) / global_length - 0.5
    minimum = global_centres[int(np.argmin(windowed_median(phase, standard, global_centres)))]
    phase = np.mod(phase - minimum + 0.5, 1.0) - 0.5
    local_centres = np.linspace(-SPARSE_LOCAL_HALF_WIDTH, SPARSE_LOCAL_HALF_WIDTH, local_length)
    global_view, local_view = normalised_views(windowed_median(phase, standard, global_centres),
                                               windowed_median(phase, standard, local_centres), standard)
    band_std = np.array([np.std(flux[band_index == band]) for band in range(ranges.size)])
    scalars = {"period": period, "ls_period": search["ls_period"], "ls_power": search["ls_power"],
               "bls_period": np.nan, "bls_power": np.nan, "bls_depth": np.nan,
               "amplitude": float(np.median(ranges)), "std": float(np.median(band_std)),
               "skew": float(skew(standard)), "fourier_r21": r21, "fourier_r31": r31, "n_cadences": time.size,
               "n_bands": int(ranges.size)}
    return CurveFeatures(None, global_view, local_view, scalars)


def _process_row(args: tuple) -> CurveFeatures:
    """`process_curve` in a worker; an error of one curve's is its quarantine reason, not the end of the stage."""
    try:
        return process_curve(*args)
    except (ArithmeticError, ValueError, IndexError) as error:
        return CurveFeatures(f"preprocessing failed on this curve: {type(error).__name__}: {error}")


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def band_code_arrays(column: pa.ChunkedArray | pa.Array) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """The rows of the `band` column as small integer codes into one tuple of band names: comparing and grouping
    codes is cheap, and the strings are read once per table rather than once per cadence."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array.values)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = array.offsets.to_numpy()
    return ([codes[start:stop] for start, stop in zip(offsets[:-1], offsets[1:])],
            tuple(encoded.dictionary.to_pylist()))


def label_classes(labels: pa.Table | None) -> list[str]:
    """The classes a model of these features predicts: those the labels name, or the synthetic source's when
    there are no labels."""
    named = set(labels.column("class").drop_null().to_pylist()) if labels is not None else set()
    return sorted(named or LIGHTCURVE_CLASSES)


def preprocess_lightcurves(raw: RawArtifact, global_length: int = DEFAULT_GLOBAL_LENGTH,
                           local_length: int = DEFAULT_LOCAL_LENGTH, workers: int = 1) -> Features:
    """Views and period features of every usable curve, with its class and period label; bad curves quarantined.

    Curves are independent, so `workers` processes share them; the result does not depend on how many.
    """
    data = raw.data
    ids = data.column("id").to_pylist()
    sources = data.column("source").to_pylist()
    band_codes, band_names = band_code_arrays(data.column("band"))
    rows = list(zip(column_arrays(data.column("time"), np.float64), column_arrays(data.column("flux"), np.float64),
                    column_arrays(data.column("flux_err"), np.float64), column_arrays(data.column("quality"), np.int64),
                    band_codes, [band_names] * data.num_rows, [global_length] * data.num_rows,
                    [local_length] * data.num_rows))
    if workers > 1 and len(rows) > 1:
        with worker_pool(workers) as pool:
            results = list(pool.map(_process_row, rows, chunksize=max(1, len(rows) // (4 * workers))))
    else:
        results = [_process_row(row) for row in rows]

    quarantine = Quarantine("preprocess.lightcurves")
    kept = []
    for row, result in enumerate(results):
        if result.reason is not None:
            quarantine.add(ids[row], result.reason, sources[row])
        else:
            kept.append(row)
    kept_ids = [ids[row] for row in kept]
    labels = label_columns(kept_ids, raw.labels, LIGHTCURVE_LABELS_SCHEMA)
    table = pa.table({
        "id": pa.array(kept_ids, pa.string()),
        "global_view": list_column([results[row].global_view for row in kept], pa.float32()),
        "local_view": list_column([results[row].local_view for row in kept], pa.float32()),
        **{name: pa.array([results[row].scalars[name] for row in kept],
                          pa.int64() if name in ("n_cadences", "n_bands") else pa.float64()) for name in FEATURES},
        "class": labels["class"],
        "period_true": labels["period"],
    })
    spec = {
        "modality": "lightcurves",
        "global_length": global_length,
        "local_length": local_length,
        "features": list(FEATURES),
        "classes": label_classes(raw.labels),
        "views": {"global": "median-binned fold over phase [-0.5, 0.5), deepest dip (sparse curves: minimum light) "
                            "at phase 0; sparse multi-band curves fold every band standardised, merged",
                  "local": "median-binned fold over two dip durations either side of the dip (sparse curves: "
                           f"+-{SPARSE_LOCAL_HALF_WIDTH} in phase)"},
        "normalisation": "views minus the global view's median, divided by its depth (dip bottom at -1)",
        "labels": ["class", "period_true"],
    }
    return Features(table=table, spec=spec, quarantine=quarantine, objects_in=data.num_rows,
                    parameters={"modality": "lightcurves", "global_length": global_length,
                                "local_length": local_length})

