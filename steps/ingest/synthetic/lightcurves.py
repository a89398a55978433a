"""Synthetic Kepler long-cadence light curves of five kinds of star, with the defects of real ones.

Each curve is ~30 days (or `baseline_days`: ~90 for a Kepler quarter) at the 29.4-minute Kepler cadence, in the
Kepler band, with a mid-campaign downlink gap, and carries:
- its astrophysical signal: a planetary transit (trapezoid dips, duration from the period and stellar density),
  an eclipsing binary (primary and secondary eclipses, ellipsoidal variation), a pulsator (an RR Lyrae-like
  sawtooth or a multi-mode delta Scuti / gamma Dor-like star), a spotted rotator (spots that grow and decay,
  with differential rotation), or a quiet star;
- granulation-like red noise and white noise at a Kepler-like precision;
- instrument systematics: a slow drift, thermal settling after the gap, reaction-wheel desaturation jumps,
  cosmic rays and other flagged cadences (Kepler quality bits), and missing (NaN) fluxes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from astropy import constants, units
from scipy.signal import lfilter

from steps.ingest.schemas import (KEPLER_BAND, KEPLER_QUALITY_BITS, LIGHTCURVE_CLASSES, LIGHTCURVE_LABELS_SCHEMA,
                                  LIGHTCURVES_SCHEMA)
from steps.ingest.synthetic.objects import SOURCE, object_id, object_rng
from steps.ingest.tables import list_column

CADENCE_DAYS = 29.4244 / 1440           # Kepler long cadence
BASELINE_DAYS = 30.0
DESAT_INTERVAL_DAYS = 3.0               # reaction-wheel momentum dumps
_G = constants.G.cgs.value
_R_SUN = constants.R_sun.cgs.value
_M_SUN = constants.M_sun.cgs.value
_DAY = units.day.to(units.s)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(10 ** rng.uniform(np.log10(low), np.log10(high)))


def _time_grid(rng: np.random.Generator, baseline_days: float) -> tuple[np.ndarray, float]:
    """Cadence times (BKJD days) with the monthly downlink gap, and the time the gap ends."""
    start = rng.uniform(131.5, 1400.0)
    time = start + CADENCE_DAYS * np.arange(int(baseline_days / CADENCE_DAYS))
    gap_start = start + rng.uniform(10.0, 20.0)
    gap_end = gap_start + rng.uniform(0.5, 1.5)
    return time[(time < gap_start) | (time >= gap_end)], gap_end


def trapezoid(phase_days: np.ndarray, duration: float, ingress: float) -> np.ndarray:
    """A dip of unit depth: 1 inside the flat bottom, linear through ingress/egress, 0 outside.

    `phase_days` is the time from mid-eclipse; `duration` the total (first to fourth contact) length.
    """
    distance = np.abs(phase_days)
    return np.clip((duration / 2 - distance) / max(ingress, 1e-9), 0.0, 1.0)


def _time_from_epoch(time: np.ndarray, epoch: float, period: float) -> np.ndarray:
    """Time to the nearest event at `epoch + k * period`, in days, within [-period/2, period/2)."""
    return (time - epoch + period / 2) % period - period / 2


def transit(rng: np.random.Generator, time: np.ndarray) -> tuple[np.ndarray, float]:
    """A transiting planet: depth 300-20000 ppm, period 0.7-10 d, duration from Kepler's third law.

    Duration ~ 13 h (P / 1 yr)^(1/3) (rho / rho_sun)^(-1/3) sqrt(1 - b^2) for a circular orbit.
    """
    period = _log_uniform(rng, 0.7, 10.0)
    depth = _log_uniform(rng, 300e-6, 20000e-6)
    density = rng.uniform(0.5, 2.0)
    impact = rng.uniform(0.0, 0.9)
    duration = 13 / 24 * (period / 365.25) ** (1 / 3) * density ** (-1 / 3) * np.sqrt(1 - impact**2)
    ingress = min(duration * np.sqrt(depth) / (1 - impact**2), duration / 2)
    epoch = time[0] + rng.uniform(0, period)
    return -depth * trapezoid(_time_from_epoch(time, epoch, period), duration, ingress), period


def eclipsing_binary(rng: np.random.Generator, time: np.ndarray) -> tuple[np.ndarray, float]:
    """A detached or close binary: primary 1-40% deep, a shallower secondary, and ellipsoidal variation
    that grows as (R1 + R2) / a shrinks the orbit."""
    period = _log_uniform(rng, 0.6, 10.0)
    mass = rng.uniform(1.0, 3.0) * _M_SUN
    radii = rng.uniform(1.2, 3.0) * _R_SUN
    separation = (_G * mass * (period * _DAY) ** 2 / (4 * np.pi**2)) ** (1 / 3)
    fill = min(radii / separation, 0.6)
    duration = period / np.pi * np.arcsin(fill)
    primary = _log_uniform(rng, 0.01, 0.4)
    secondary = primary * rng.uniform(0.05, 0.9)
    secondary_phase = 0.5 if rng.random() < 0.7 else 0.5 + rng.uniform(-0.05, 0.05)   # eccentric orbits
    epoch = time[0] + rng.uniform(0, period)
    ingress = duration * rng.uniform(0.2, 0.5)
    flux = -primary * trapezoid(_time_from_epoch(time, epoch, period), duration, ingress)
    flux -= secondary * trapezoid(_time_from_epoch(time, epoch + secondary_phase * period, period), duration,
                                  ingress)
    ellipsoidal = rng.uniform(0.0, 0.3) * fill**3
    flux -= ellipsoidal * np.cos(4 * np.pi * (time - epoch) / period)
    return flux, period


def pulsator(rng: np.random.Generator, time: np.ndarray) -> tuple[np.ndarray, float]:
    """An RR Lyrae-like star (fast rise, slow decline: a damped Fourier sawtooth, 0.45-0.9 d, 20-45%) or a
    delta Scuti / gamma Dor-like star (0.05-1 d, a fundamental with a harmonic plus a weaker independent mode)."""
    if rng.random() < 0.4:
        period = rng.uniform(0.45, 0.9)
        amplitude = rng.uniform(0.2, 0.45)
        phase = 2 * np.pi * ((time - time[0]) / period + rng.random())
        orders = np.arange(1, 9)
        terms = (0.75 ** (orders - 1) / orders)[:, None] * np.sin(orders[:, None] * phase[None, :])
        flux = terms.sum(axis=0)
        return amplitude * flux / np.ptp(flux), period
    period = _log_uniform(rng, 0.05, 1.0)
    amplitude = _log_uniform(rng, 0.001, 0.05)
    phase = 2 * np.pi * ((time - time[0]) / period + rng.random())
    flux = amplitude * (np.sin(phase) + rng.uniform(0.1, 0.4) * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
    second = period * rng.uniform(0.6, 0.85)
    flux += amplitude * rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * ((time - time[0]) / second + rng.random()))
    return flux, period


def rotator(rng: np.random.Generator, time: np.ndarray) -> tuple[np.ndarray, float]:
    """A spotted star rotating in 1-15 d: 2-3 spots, each darkening the star while on the visible hemisphere,
    growing and decaying over weeks, at latitudes rotating up to 5% slower than the equator."""
    period = _log_uniform(rng, 1.0, 15.0)
    amplitude = _log_uniform(rng, 0.001, 0.03)
    flux = np.zeros_like(time)
    for _ in range(rng.integers(2, 4)):
        spot_period = period * (1 + rng.uniform(0.0, 0.05))
        peak, lifetime = rng.uniform(time[0], time[-1]), rng.uniform(10.0, 40.0)
        visibility = np.clip(np.cos(2 * np.pi * ((time - time[0]) / spot_period + rng.random())), 0.0, None)
        flux -= amplitude * rng.uniform(0.3, 1.0) * np.exp(-(((time - peak) / lifetime) ** 2)) * visibility
    return flux, period


def quiet(rng: np.random.Generator, time: np.ndarray) -> tuple[np.ndarray, float]:
    """No periodic signal: only the noise every star gets."""
    return np.zeros_like(time), np.nan


SIGNALS = {"transit": transit, "eclipsing_binary": eclipsing_binary, "pulsator": pulsator, "rotator": rotator,
           "quiet": quiet}
assert tuple(sorted(SIGNALS)) == LIGHTCURVE_CLASSES


def _red_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Granulation-like correlated noise: an AR(1) process with a 1-12 hour correlation time."""
    rho = np.exp(-CADENCE_DAYS / rng.uniform(1 / 24, 0.5))
    innovations = rng.normal(0.0, sigma * np.sqrt(1 - rho**2), size)
    innovations[0] = rng.normal(0.0, sigma)      # start in the stationary state
    return lfilter([1.0], [1.0, -rho], innovations)


def _systematics(rng: np.random.Generator, time: np.ndarray, gap_end: float) -> np.ndarray:
    """Multiplicative instrument trend: a quadratic drift and thermal settling after the downlink gap."""
    span = (time - time[0]) / (time[-1] - time[0])
    drift = rng.uniform(-0.003, 0.003) * span + rng.uniform(-0.003, 0.003) * span**2
    after_gap = time >= gap_end
    settling = np.where(after_gap, -rng.uniform(0, 0.003) * np.exp(-(time - gap_end) / rng.uniform(0.2, 1.0)), 0.0)
    return 1 + drift + settling


def _flag_cadences(rng: np.random.Generator, time: np.ndarray, flux: np.ndarray, gap_end: float,
                   sigma: float) -> np.ndarray:
    """Kepler quality flags, with the flux defects that go with them (applied to `flux` in place)."""
    quality = np.zeros(time.size, dtype=np.int32)
    for dump in np.arange(time[0] + rng.uniform(0, DESAT_INTERVAL_DAYS), time[-1], DESAT_INTERVAL_DAYS):
        index = np.searchsorted(time, dump)
        if index < time.size:
            quality[index] |= KEPLER_QUALITY_BITS["Desat"]
            flux[index] += rng.normal(0.0, 10 * sigma)
    recovering = (time >= gap_end) & (time < gap_end + 0.1)
    quality[recovering] |= KEPLER_QUALITY_BITS["CoarsePoint"]
    cosmic = rng.choice(time.size, size=rng.poisson(3), replace=False)
    quality[cosmic] |= KEPLER_QUALITY_BITS["ApertureCosmic"]
    flux[cosmic] += rng.uniform(5, 30, cosmic.size) * sigma
    outliers = rng.choice(time.size, size=rng.poisson(2), replace=False)
    quality[outliers] |= KEPLER_QUALITY_BITS["ImpulsiveOutlier"]
    flux[outliers] += rng.choice([-1, 1], outliers.size) * rng.uniform(5, 20, outliers.size) * sigma
    if rng.random() < 0.2:
        start = rng.integers(0, time.size - 10)
        quality[start:start + rng.integers(3, 10)] |= KEPLER_QUALITY_BITS["Argabrightening"]
    return quality


def synthetic_lightcurve(seed: int, index: int, baseline_days: float = BASELINE_DAYS) -> tuple[dict, dict]:
    """One observed light curve and its label: (light-curve row, labels row)."""
    rng = object_rng(seed, "lightcurves", index)
    kind = LIGHTCURVE_CLASSES[rng.integers(len(LIGHTCURVE_CLASSES))]
    time, gap_end = _time_grid(rng, baseline_days)
    signal, period = SIGNALS[kind](rng, time)
    sigma = _log_uniform(rng, 50e-6, 1000e-6)
    flux = (1 + signal + _red_noise(rng, time.size, sigma * rng.uniform(0.2, 1.0))) * _systematics(rng, time, gap_end)
    flux += rng.normal(0.0, sigma, time.size)
    quality = _flag_cadences(rng, time, flux, gap_end, sigma)
    flux[rng.random(time.size) < 0.005] = np.nan
    flux[(quality != 0) & (rng.random(time.size) < 0.5)] = np.nan
    flux_err = np.full(time.size, sigma) * rng.uniform(0.98, 1.02, time.size)

    curve_id = object_id("lightcurves", index)
    row = {"id": curve_id, "time": time, "flux": flux.astype(np.float32), "flux_err": flux_err.astype(np.float32),
           "quality": quality, "source": SOURCE}
    return row, {"id": curve_id, "class": kind, "period": period}


def single_band_column(lengths: list[int], band: str) -> pa.ListArray:
    """A `band` column for curves taken in one band throughout, with `lengths` cadences each."""
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.repeat(pa.scalar(band), int(offsets[-1])))


def generate(samples: int, seed: int, baseline_days: float = BASELINE_DAYS) -> dict[str, pa.Table]:
    """`samples` synthetic light curves: the `lightcurves` and `labels` tables of a raw artifact."""
    pairs = [synthetic_lightcurve(seed, index, baseline_days) for index in range(samples)]
    rows = [row for row, _ in pairs]
    columns = {
        "id": pa.array([row["id"] for row in rows], pa.string()),
        "time": list_column([row["time"] for row in rows], pa.float64()),
        "flux": list_column([row["flux"] for row in rows], pa.float32()),
        "flux_err": list_column([row["flux_err"] for row in rows], pa.float32()),
        "quality": list_column([row["quality"] for row in rows], pa.int32()),
        "band": single_band_column([row["time"].size for row in rows], KEPLER_BAND),
        "source": pa.array([row["source"] for row in rows], pa.string()),
    }
    return {"lightcurves": pa.table(columns, schema=LIGHTCURVES_SCHEMA),
            "labels": pa.Table.from_pylist([labels for _, labels in pairs], schema=LIGHTCURVE_LABELS_SCHEMA)}
