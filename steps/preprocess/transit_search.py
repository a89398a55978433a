"""Box Least Squares transit search, coarse to fine: a Fourier-folded BLS over a coarse period grid proposes
candidates, and astropy's BoxLeastSquares on the full curve decides between them and refines the winner.

Folding a curve at each trial period costs a pass over every cadence, and a one-quarter Kepler curve needs
thousands of trial periods: that is where astropy's full search spends ~200 ms. Here the curve is binned onto a
regular time grid and Fourier-transformed once (z = flux + i * count per time bin, zero-padded). The fold of z at
frequency nu is a periodic function of phase whose Fourier coefficients are exactly Z(k nu), so the running
integral of the fold, at `nb` phases, is one inverse FFT of length `nb` of Z(k nu) / (2 pi i k) for |k| < nb / 2
(with Z(k nu) looked up on the oversampled FFT grid). Box sums of flux and counts over any phase interval are
differences of that running integral: the coarse search costs a few operations per phase bin and trial period
instead of per cadence and trial period. Truncating the harmonics smooths the fold on the scale of a phase bin,
which a search for boxes at least one bin wide tolerates; the candidates are then scored exactly by astropy.
"""

from __future__ import annotations

import numpy as np
from astropy.timeseries import BoxLeastSquares, BoxLeastSquaresResults
from scipy.signal import find_peaks

BLS_PERIOD_RANGE = (0.4, 15.0)           # days; the longest still shows two events in a 30-day curve
BLS_DURATIONS = np.array([0.03, 0.05, 0.09, 0.16, 0.27])   # days: 0.7 to 6.5 hours
BLS_OVERSAMPLE = 3               # phase bins per shortest duration: ~half a Kepler cadence, finer adds nothing
COARSE_PHASE_DAYS = 0.05         # coarse search: widest phase bin, about two and a half Kepler long cadences
COARSE_GRID_FACTOR = 5           # coarse search: trial frequencies this many times sparser than the fine grid
FFT_OVERSAMPLE = 4               # zero padding: Z(k nu) read off a grid this many times finer than 1 / baseline
COARSE_CANDIDATES = 5            # coarse periodogram peaks that astropy scores on the full curve
MIN_BOX_SHARE = 0.3              # a coarse box must hold this share of the cadences a uniform phase coverage puts in it
FINE_POINTS = 41                 # final refinement: astropy at this many periods across +-2 fine grid steps


def bls_frequency_grid(baseline: float, factor: float = 1.0) -> np.ndarray:
    """BLS trial frequencies (1/day), spaced so that across the baseline the fold drifts by `factor` times a
    typical dip duration at that period (13 h (P / 1 yr)^(1/3) / 2, for a Sun-like star): d f = a f^(2/3) with
    a = factor * duration(1 / f) * f^(1/3) / baseline, hence f^(1/3) rises by a / 3 per step."""
    low, high = 1 / BLS_PERIOD_RANGE[1], 1 / BLS_PERIOD_RANGE[0]
    rate = factor * 0.5 * 13 / 24 * (1 / 365.25) ** (1 / 3) / baseline
    steps = int(np.ceil((high ** (1 / 3) - low ** (1 / 3)) / (rate / 3)))
    return (low ** (1 / 3) + rate / 3 * np.arange(steps + 1)) ** 3


def _phase_bins(periods: np.ndarray) -> np.ndarray:
    """Phase bins per trial period: the next size in {8, 12, 16, 24, 32, ...} giving bins at most
    COARSE_PHASE_DAYS wide, so that trial periods share few distinct FFT lengths."""
    wanted = np.maximum(np.ceil(periods / COARSE_PHASE_DAYS), 8)
    power = 2.0 ** np.floor(np.log2(wanted))
    return np.where(wanted <= power, power, np.where(wanted <= 1.5 * power, 1.5 * power, 2 * power)).astype(np.int64)


def coarse_bls_power(time: np.ndarray, flux: np.ndarray, frequencies: np.ndarray, cadence: float) -> np.ndarray:
    """The best coarse BLS statistic (chi-square improvement of a box dip over a constant, times the flux
    variance of one cadence) at each trial frequency (1/day), over box durations BLS_DURATIONS and all phases.
    The curve is binned on a time grid of whole cadences (`cadence`: the typical spacing), so that the cadence
    count per time bin is even and its spectrum has no beat lines to imprint on the folds.

    Only dips count. A box's cadence count is floored at MIN_BOX_SHARE of what uniform phase coverage would put in
    it, so boxes lying mostly in gaps (few cadences, and the truncated harmonics' ripple) cannot score high; the
    (total - count) term of the statistic takes that expected count: the candidates are scored exactly later.
    """
    step = cadence * max(1.0, np.floor(COARSE_PHASE_DAYS / 2 / cadence))    # whole cadences: even counts per step
    sample = np.rint((time - time[0]) / step).astype(np.int64)
    size = int(sample[-1]) + 1
    length = 1 << int(np.ceil(np.log2(FFT_OVERSAMPLE * size)))
    binned = np.zeros(length, np.complex64)
    binned[:size] = np.bincount(sample, flux - flux.mean(), size) + 1j * np.bincount(sample, minlength=size)
    spectrum = np.fft.fft(binned)
    total = float(time.size)

    periods = 1 / frequencies
    bins = _phase_bins(periods)
    power = np.zeros(frequencies.size)
    for size_bins in np.unique(bins):
        trials = np.flatnonzero(bins == size_bins)
        # the inverse FFT's layout: harmonics 0, 1, ..., nb/2 - 1, (nb/2), -(nb/2 - 1), ..., -1; the constant and
        # the Nyquist term get weight 0, harmonic k gets 1 / k (the 1 / (2 pi i) is applied after the transform)
        half = size_bins // 2
        harmonic = np.concatenate([np.arange(half + 1), np.arange(-half + 1, 0)])
        weight = np.zeros(size_bins, np.float32)
        weight[1:half], weight[half + 1:] = 1 / harmonic[1:half], 1 / harmonic[half + 1:]
        lookup = np.rint(np.outer(frequencies[trials] * step * length, harmonic)).astype(np.int64) % length
        running = np.fft.ifft(spectrum[lookup] * weight, axis=1)
        # times -i nb / (2 pi): the running integrals of flux (real part) and cadence count (imaginary part)
        flux_part = running.imag * (size_bins / (2 * np.pi))
        count_part = running.real * (-size_bins / (2 * np.pi))
        widths = np.unique(np.maximum(np.rint(BLS_DURATIONS * size_bins / np.median(periods[trials])), 1))
        widths = widths[widths < half].astype(np.int64)
        wrapped_flux = np.concatenate([flux_part, flux_part[:, :widths[-1]]], axis=1)
        wrapped_count = np.concatenate([count_part, count_part[:, :widths[-1]]], axis=1)
        best = np.zeros(trials.size, np.float32)
        for width in widths:
            expected = total * width / size_bins
            dip = np.minimum(wrapped_flux[:, width:width + size_bins] - flux_part, 0)
            count = wrapped_count[:, width:width + size_bins] - count_part
            np.maximum(count + expected, MIN_BOX_SHARE * expected, out=count)
            np.multiply(dip, dip, out=dip)
            np.divide(dip, count, out=dip)
            np.maximum(best, dip.max(axis=1) * (total / (total - expected)), out=best)
        power[trials] = best
    return power


def coarse_candidates(power: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` highest local maxima of a coarse periodogram (its maximum if it has none)."""
    peaks, _ = find_peaks(np.concatenate([[-np.inf], power, [-np.inf]]))
    peaks -= 1
    return peaks[np.argsort(power[peaks])[::-1][:count]] if peaks.size else np.array([int(np.argmax(power))])


def transit_search(model: BoxLeastSquares, time: np.ndarray, flux: np.ndarray, baseline: float,
                   cadence: float) -> tuple[BoxLeastSquaresResults, int]:
    """astropy's BLS result at the best period found coarse to fine, with its index: COARSE_CANDIDATES peaks of
    the Fourier-folded coarse search, each scored by astropy on the fine grid within half a coarse step, then the
    winner refined at FINE_POINTS periods across +-2 fine steps."""
    fine = bls_frequency_grid(baseline)
    coarse = bls_frequency_grid(baseline, COARSE_GRID_FACTOR)
    candidates = coarse[coarse_candidates(coarse_bls_power(time, flux, coarse, cadence), COARSE_CANDIDATES)]
    positions = np.searchsorted(fine, candidates)
    reach = COARSE_GRID_FACTOR // 2 + 1                   # fine steps from a coarse trial to the next one's middle
    near = np.unique(np.clip((positions[:, None] + np.arange(-reach, reach + 1)).ravel(), 0, fine.size - 1))
    scored = model.power(1 / fine[near], BLS_DURATIONS, oversample=BLS_OVERSAMPLE)
    best = int(near[np.argmax(scored.power)])
    neighbours = fine[max(best - 2, 0):best + 3]
    result = model.power(1 / np.linspace(neighbours[0], neighbours[-1], FINE_POINTS), BLS_DURATIONS,
                         oversample=BLS_OVERSAMPLE)
    return result, int(np.argmax(result.power))
