"""The light-curve period searches against astropy's: the coarse-to-fine BLS against BoxLeastSquares over the full
grid, and the FFT Lomb-Scargle against LombScargle."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.timeseries import BoxLeastSquares, LombScargle

from steps.preprocess.lightcurves import LS_MIN_PERIOD, lomb_scargle, lomb_scargle_power
from steps.preprocess.transit_search import (BLS_DURATIONS, BLS_OVERSAMPLE, COARSE_GRID_FACTOR, bls_frequency_grid,
                                             coarse_bls_power, transit_search)

CADENCE = 29.4 / 60 / 24      # Kepler long cadence, days
NOISE = 4e-4


def quarter_times(rng: np.random.Generator) -> np.ndarray:
    """A one-quarter Kepler-like cadence grid: 90 days, a 2-day gap for the data downlink, 3% of cadences lost."""
    time = np.arange(0.0, 90.0, CADENCE)
    keep = ((time < 40) | (time > 42)) & (rng.random(time.size) > 0.03)
    return time[keep]


def transit_curve(period: float, depth: float, duration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A flattened curve with box transits and white noise."""
    rng = np.random.default_rng(seed)
    time = quarter_times(rng)
    epoch = rng.uniform(0, period)
    in_transit = np.abs((time - epoch + period / 2) % period - period / 2) < duration / 2
    return time, 1 + rng.normal(0, NOISE, time.size) - depth * in_transit


TRANSITS = [(0.93, 1500e-6, 0.06, 1), (3.31, 700e-6, 0.10, 2), (7.73, 1200e-6, 0.15, 3), (12.4, 2500e-6, 0.21, 4)]


@pytest.mark.parametrize("period, depth, duration, seed", TRANSITS)
def test_transit_search_finds_what_astropy_full_search_finds(period, depth, duration, seed):
    time, flux = transit_curve(period, depth, duration, seed)
    baseline = float(time[-1] - time[0])
    model = BoxLeastSquares(time, flux, dy=np.full(time.size, NOISE))
    full = model.power(1 / bls_frequency_grid(baseline), BLS_DURATIONS, oversample=BLS_OVERSAMPLE)
    library_period = float(full.period[np.argmax(full.power)])

    result, best = transit_search(model, time, flux, baseline, CADENCE)
    ours = float(result.period[best])
    assert abs(library_period / period - 1) < 0.01
    assert abs(ours / library_period - 1) < 1e-3, (ours, library_period)
    assert result.power[best] >= 0.99 * full.power.max()        # refined at least as high as the full grid's peak


@pytest.mark.parametrize("period, depth, duration, seed", TRANSITS)
def test_coarse_statistic_is_the_chi_square_improvement_astropy_finds(period, depth, duration, seed):
    """At the trial nearest the true frequency, the Fourier-folded statistic (in flux variance units) is close to
    astropy's depth S/N squared there: the fold, the box sums and the normalisation are right."""
    time, flux = transit_curve(period, depth, duration, seed)
    coarse = bls_frequency_grid(float(time[-1] - time[0]), COARSE_GRID_FACTOR)
    nearest = coarse[[np.argmin(np.abs(coarse - 1 / period))]]
    ours = coarse_bls_power(time, flux, nearest, CADENCE)[0] / NOISE**2
    library = BoxLeastSquares(time, flux, dy=np.full(time.size, NOISE)).power(
        1 / nearest, BLS_DURATIONS, oversample=BLS_OVERSAMPLE, objective="snr")
    assert 0.6 < ours / library.depth_snr[0] ** 2 < 1.2, (ours, library.depth_snr[0] ** 2)


def test_coarse_statistic_peaks_at_the_transit_period_not_elsewhere():
    time, flux = transit_curve(2.47, 1000e-6, 0.09, 5)
    coarse = bls_frequency_grid(float(time[-1] - time[0]), COARSE_GRID_FACTOR)
    power = coarse_bls_power(time, flux, coarse, CADENCE)
    assert abs(1 / coarse[np.argmax(power)] / 2.47 - 1) < 0.01
    noise_only = coarse_bls_power(time, 1 + np.random.default_rng(6).normal(0, NOISE, time.size), coarse, CADENCE)
    assert power.max() > 4 * noise_only.max()


def test_lomb_scargle_power_is_astropys():
    rng = np.random.default_rng(8)
    time = quarter_times(rng)
    flux = 1 + 1e-3 * np.sin(2 * np.pi * time / 1.73) + rng.normal(0, NOISE, time.size)
    frequencies = np.linspace(0.05, 3.0, 400)
    library = LombScargle(time, flux).power(frequencies, method="slow")
    assert np.allclose(lomb_scargle_power(time, flux, frequencies), library, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("true_period, regular", [(1.73, True), (0.213, True), (5.9, False)])
def test_lomb_scargle_peak_is_astropys(true_period, regular):
    rng = np.random.default_rng(9)
    time = quarter_times(rng)
    if not regular:                                       # off the cadence grid: astropy's fast method is used
        time = np.sort(rng.uniform(0, 90, time.size))
    flux = 1 + 5e-4 * np.sin(2 * np.pi * time / true_period) + rng.normal(0, NOISE, time.size)
    baseline = float(time[-1] - time[0])
    period, power = lomb_scargle(time, flux, baseline)
    frequency, library_power = LombScargle(time, flux).autopower(
        minimum_frequency=2 / baseline, maximum_frequency=1 / LS_MIN_PERIOD, samples_per_peak=50)
    best = int(np.argmax(library_power))
    assert abs(1 / period - frequency[best]) < 1 / (20 * baseline)     # a twentieth of the peak's width
    assert power == pytest.approx(library_power[best], rel=1e-3)


def test_a_sparse_curve_too_short_for_a_period_search_says_how_many_epochs_it_has():
    from steps.preprocess.lightcurves import MIN_BAND_EPOCHS, MIN_EPOCHS, process_sparse_curve

    time = np.array([1.0, 2.0, 3.0])
    features = process_sparse_curve(time, np.ones(3), np.full(3, 0.01), np.array(["g", "r", "r"], dtype=object),
                                    64, 32)
    assert features.reason == (f"3 valid measurements, 0 of them in bands with at least {MIN_BAND_EPOCHS} each: a sparse "
                               f"period search needs {MIN_EPOCHS}")
