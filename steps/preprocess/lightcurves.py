"""Light curves to model inputs: cleaned, detrended, period-searched, and folded into global and local views.

For each curve:
1. cadences with a quality flag or a non-finite value are dropped; curves left with fewer than `MIN_CADENCES`
   are quarantined;
2. the flux is divided by its median and detrended per continuous segment (gaps over `SEGMENT_GAP_DAYS`) by a
   robust quadratic, which removes drifts and jumps between segments but keeps periodic signals; a second,
   flattened copy is further divided by a running median over `FLATTEN_WINDOW_DAYS`, removing slow variability
   so that short dips stand out for the transit search;
3. upward outliers (cosmic rays, flares: over `OUTLIER_SIGMA` robust sigma above the flattened curve) are cut,
   dips are kept;
4. the period is searched twice: Lomb-Scargle on the detrended flux for smooth periodic variables, and Box
   Least Squares on the flattened flux for transits and eclipses, each on a coarse grid refined around its
   peak; when odd and even BLS events differ in depth (an eclipsing binary with a shallower secondary) the BLS
   period is doubled. `choose_period` then decides between the two candidates;
5. the detrended flux is folded at that period with the deepest dip at phase 0 and binned by median into a
   global view (the whole phase) and a local view (two dip durations either side), empty bins interpolated;
   both are shifted to median 0 and divided by the global view's depth, so the dip bottom is -1.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from astropy.timeseries import BoxLeastSquares, LombScargle
from scipy.ndimage import median_filter
from scipy.stats import skew

from steps.core.quarantine import Quarantine
from steps.ingest.schemas import LIGHTCURVE_CLASSES, LIGHTCURVE_LABELS_SCHEMA
from steps.ingest.tables import column_arrays, list_column
from steps.preprocess.common import Features, RawArtifact, label_columns

MIN_CADENCES = 100
DEFAULT_GLOBAL_LENGTH = 201
DEFAULT_LOCAL_LENGTH = 61
SEGMENT_GAP_DAYS = 0.5
FLATTEN_WINDOW_DAYS = 1.0
OUTLIER_SIGMA = 4.0
LS_MIN_PERIOD = 0.045                    # days; just above the Nyquist period of Kepler long cadence
LS_SAMPLES_PER_PEAK = 5
BLS_PERIOD_RANGE = (0.4, 15.0)           # days; the longest still shows two events in a 30-day curve
BLS_DURATIONS = np.array([0.03, 0.05, 0.09, 0.16, 0.27])   # days: 0.7 to 6.5 hours
BLS_OVERSAMPLE = 3               # phase bins per shortest duration: ~half a Kepler cadence, finer adds nothing
ODD_EVEN_SIGMA = 3.0             # dips differ in depth when apart by this many standard errors...
ODD_EVEN_FRACTION = 0.15         # ...and by this share of the deeper, so sampling effects at high S/N do not count
HARMONIC_TOLERANCE = 0.02        # relative: how close to n times the LS period a BLS period counts as its multiple
SCORE_BINS = 100                 # bins across the shorter candidate period when scoring folds
FEATURES = ("period", "ls_period", "ls_power", "bls_period", "bls_power", "bls_depth", "amplitude", "std", "skew",
            "n_cadences")


@dataclass
class CurveFeatures:
    """What one curve turns into: the views and the scalar features (None `reason` means usable)."""

    reason: str | None
    global_view: np.ndarray | None = None
    local_view: np.ndarray | None = None
    scalars: dict[str, float] | None = None


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 times the median absolute deviation: the standard deviation of Gaussian noise, ignoring outliers."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


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


def lomb_scargle(time: np.ndarray, flux: np.ndarray, baseline: float) -> tuple[float, float]:
    """(period, normalised power) of the highest Lomb-Scargle peak, refined on a 20x finer local grid (there by
    direct summation, exact and cheapest for few frequencies)."""
    periodogram = LombScargle(time, flux)
    frequency, power = periodogram.autopower(minimum_frequency=2 / baseline, maximum_frequency=1 / LS_MIN_PERIOD,
                                             samples_per_peak=LS_SAMPLES_PER_PEAK)
    best = int(np.argmax(power))
    step = frequency[1] - frequency[0]
    fine = np.linspace(frequency[best] - step, frequency[best] + step, 41)
    fine_power = periodogram.power(fine, method="slow")
    best_fine = int(np.argmax(fine_power))
    return float(1 / fine[best_fine]), float(fine_power[best_fine])


def bls_frequency_grid(baseline: float) -> np.ndarray:
    """BLS trial frequencies: spaced so that across the baseline the fold drifts by less than a typical dip
    duration at that period (13 h (P / 1 yr)^(1/3) / 2, for a Sun-like star), i.e. d ln f = duration / baseline."""
    low, high = 1 / BLS_PERIOD_RANGE[1], 1 / BLS_PERIOD_RANGE[0]
    frequencies = [low]
    while frequencies[-1] < high:
        duration = 0.5 * 13 / 24 * (1 / frequencies[-1] / 365.25) ** (1 / 3)
        frequencies.append(frequencies[-1] * (1 + duration / baseline))
    return np.array(frequencies)


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
    """The best BLS period with its depth S/N, depth, duration and mid-event time, refined around the peak and
    doubled when odd and even events differ in depth (`events_differ`).

    The flux's robust scatter serves as every point's uncertainty, so the depth S/N reflects the noise actually
    present (red noise included), not the nominal photometric errors.
    """
    model = BoxLeastSquares(time, flux, dy=np.full(time.size, max(robust_sigma(flux), 1e-12)))
    frequencies = bls_frequency_grid(baseline)
    coarse = model.power(1 / frequencies, BLS_DURATIONS, oversample=BLS_OVERSAMPLE)
    best = int(np.argmax(coarse.power))
    neighbours = frequencies[max(best - 2, 0):best + 3]
    fine_periods = 1 / np.linspace(neighbours[0], neighbours[-1], 41)
    result = model.power(fine_periods, BLS_DURATIONS, oversample=BLS_OVERSAMPLE)
    best = int(np.argmax(result.power))
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


def process_curve(time: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, quality: np.ndarray,
                  global_length: int, local_length: int) -> CurveFeatures:
    """Features of one light curve (see the module docstring), or the reason it cannot be used."""
    if not (time.size == flux.size == flux_err.size == quality.size):
        return CurveFeatures(f"malformed: time/flux/flux_err/quality lengths "
                             f"{time.size}/{flux.size}/{flux_err.size}/{quality.size}")
    good = (quality == 0) & np.isfinite(time) & np.isfinite(flux) & np.isfinite(flux_err)
    if good.sum() < MIN_CADENCES:
        return CurveFeatures(f"only {good.sum()} valid cadences, fewer than {MIN_CADENCES}")
    order = np.argsort(time[good], kind="stable")
    time, flux = time[good][order], flux[good][order]
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
    bls = box_least_squares(time, flat, baseline)
    period = choose_period(time, detrended, flat, ls_period, bls)

    epoch, duration = fold_alignment(time, detrended, period)
    phase = np.mod((time - epoch) / period + 0.5, 1.0) - 0.5
    global_view = _fill_empty(binned_median(phase, detrended, np.linspace(-0.5, 0.5, global_length + 1)), True)
    half_width = min(2 * duration / period, 0.5)
    local_view = _fill_empty(binned_median(phase, detrended, np.linspace(-half_width, half_width, local_length + 1)),
                             False)
    centre = float(np.median(global_view))
    depth = centre - float(global_view.min())
    scale = depth if depth > 0 else max(robust_sigma(detrended), 1e-12)
    low, high = np.percentile(detrended, [5, 95])
    scalars = {"period": period, "ls_period": ls_period, "ls_power": ls_power, "bls_period": bls["period"],
               "bls_power": bls["power"], "bls_depth": bls["depth"], "amplitude": float(high - low),
               "std": float(np.std(detrended)), "skew": float(skew(detrended)), "n_cadences": time.size}
    return CurveFeatures(None, (global_view - centre) / scale, (local_view - centre) / scale, scalars)


def _process_row(args: tuple) -> CurveFeatures:
    return process_curve(*args)


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def preprocess_lightcurves(raw: RawArtifact, global_length: int = DEFAULT_GLOBAL_LENGTH,
                           local_length: int = DEFAULT_LOCAL_LENGTH, workers: int = 1) -> Features:
    """Views and period features of every usable curve, with its class and period label; bad curves quarantined.

    Curves are independent, so `workers` processes share them; the result does not depend on how many.
    """
    data = raw.data
    ids = data.column("id").to_pylist()
    sources = data.column("source").to_pylist()
    rows = list(zip(column_arrays(data.column("time"), np.float64), column_arrays(data.column("flux"), np.float64),
                    column_arrays(data.column("flux_err"), np.float64), column_arrays(data.column("quality"), np.int64),
                    [global_length] * data.num_rows, [local_length] * data.num_rows))
    if workers > 1 and len(rows) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
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
                          pa.int64() if name == "n_cadences" else pa.float64()) for name in FEATURES},
        "class": labels["class"],
        "period_true": labels["period"],
    })
    spec = {
        "modality": "lightcurves",
        "global_length": global_length,
        "local_length": local_length,
        "features": list(FEATURES),
        "classes": sorted(LIGHTCURVE_CLASSES),
        "views": {"global": "median-binned fold over phase [-0.5, 0.5), deepest dip at phase 0",
                  "local": "median-binned fold over two dip durations either side of the dip"},
        "normalisation": "views minus the global view's median, divided by its depth (dip bottom at -1)",
        "labels": ["class", "period_true"],
    }
    return Features(table=table, spec=spec, quarantine=quarantine, objects_in=data.num_rows,
                    parameters={"modality": "lightcurves", "global_length": global_length,
                                "local_length": local_length})

