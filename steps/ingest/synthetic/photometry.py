"""Synthetic Gaia DR3 x 2MASS x AllWISE photometry: the spectral energy distribution of a star of known radius
and distance, integrated through each passband, its colours calibrated on real stars, reddened by dust, and
observed with each survey's noise, detection limit, saturation and cross-match losses."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
from astropy import constants, units

from steps.ingest.bands import BANDS
from steps.ingest.schemas import PHOTOMETRIC_BANDS, PHOTOMETRY_SCHEMA, STELLAR_LABELS_SCHEMA
from steps.ingest.synthetic.objects import SOURCE, Star, draw_star, object_id, object_rng
from steps.ingest.synthetic.stellar_spectrum import rest_frame_spectrum

_G = constants.G.cgs.value
_M_SUN = constants.M_sun.cgs.value
_PARSEC = units.pc.to(units.cm)
_MAS = units.mas.to(units.rad)

# Vega, the zero point of every band's magnitude scale: an A0 V model (9550 K, log g 3.95, [Fe/H] -0.5) of
# limb-darkened angular diameter 3.28 mas (Ciardi et al. 2001). An A0 star then has all colours ~ 0.
VEGA = Star(teff=9550.0, logg=3.95, feh=-0.5, mass=2.1)
VEGA_ANGULAR_DIAMETER_MAS = 3.28

SAMPLE_G_LIMIT = 19.5            # the sample is limited in G, as a Gaia-selected one
DISTANCE_RANGE_PC = (20.0, 2000.0)
REDDENING_PER_KPC = 0.3          # mean E(B-V) per kpc in the Galactic disk
# Per-band noise model: calibration floor (mag), magnitude of a 10-sigma detection, and detection limit.
# Gaia DR3 per-source errors (Riello et al. 2021), 2MASS (Skrutskie et al. 2006), AllWISE 5-sigma depths.
NOISE = {"G": (0.0003, 23.0, 20.7), "BP": (0.001, 20.3, 20.9), "RP": (0.001, 19.7, 20.3),
         "J": (0.02, 15.8, 16.6), "H": (0.02, 15.1, 15.9), "Ks": (0.02, 14.3, 15.1),
         "W1": (0.02, 16.15, 16.9), "W2": (0.02, 15.15, 15.9)}
SURVEY_BANDS = {"gaia_xp": ("BP", "RP"), "2mass": ("J", "H", "Ks"), "wise": ("W1", "W2")}
CROSSMATCH_LOSS = {"gaia_xp": 0.02, "2mass": 0.03, "wise": 0.04}
UPPER_LIMIT_RATE = 0.01          # 2MASS bands reported as upper limits (magnitude with a null error)
# A catalogue's error is estimated from the measured flux, and at one magnitude it varies with the number of
# observations and the sky: the reported error is the noise model at the measured magnitude times a log-normal
# factor of this scatter. Drawn at the true magnitude, it told the models the true magnitude: `make run`'s ridge
# learnt Teff from the errors (four copies of one star with errors 0.003 -> 0.03 mag: 5,491 -> 3,194 K).
ERROR_ESTIMATE_SCATTER = 0.2
# Box passbands through a model spectrum leave the colours bluer than real stars': a 5,772 K dwarf came out at
# BP-RP 0.62 (the Sun's is 0.82), and `make run`'s SED model put stars of solar colour near 4,975 K. Each band's
# magnitude relative to G gets b * (5040/Teff - 5040/9550): zero at Vega's Teff, where colours are zero by the
# definition of the magnitude scale, with b fitted on the Gaia FGK benchmark stars (3,400-6,900 K; scatter about
# the fit 0.02-0.03 mag for BP and RP, 0.05-0.10 for the 15-25 stars with unsaturated 2MASS and W2 magnitudes;
# `bench/calibrate_synthetic_colours.py`). W1, unsaturated in only 2 of them, takes Ks's slope (W2's is 1.5% off it).
COLOUR_SLOPES = {"BP": 0.1223, "RP": -0.3883, "J": -0.8175, "H": -1.2199, "Ks": -1.1410, "W1": -1.1410,
                 "W2": -1.1242}


@functools.cache
def _band_grid(band: str) -> np.ndarray:
    """Wavelengths (Angstrom) sampling a box passband finely enough to resolve molecular bands."""
    return np.linspace(BANDS[band].wave_min, BANDS[band].wave_max, 300)


def _band_fluxes(star: Star, angular_radius_rad: float) -> np.ndarray:
    """Photon-weighted mean flux density at Earth (erg/s/cm^2/A) of `star` in each band."""
    fluxes = []
    for band in PHOTOMETRIC_BANDS:
        wave = _band_grid(band)
        flux = np.pi * rest_frame_spectrum(wave, star) * angular_radius_rad**2
        fluxes.append(np.trapezoid(flux * wave, wave) / np.trapezoid(wave, wave))
    return np.array(fluxes)


@functools.cache
def _vega_fluxes() -> np.ndarray:
    return _band_fluxes(VEGA, 0.5 * VEGA_ANGULAR_DIAMETER_MAS * _MAS)


def model_magnitudes(star: Star) -> np.ndarray:
    """Vega magnitudes of `star` at 10 pc in each band, from the model spectrum through box passbands: radius from
    log g and mass, flux pi*B*(R/d)^2."""
    radius = np.sqrt(_G * star.mass * _M_SUN / 10**star.logg)
    return -2.5 * np.log10(_band_fluxes(star, radius / (10 * _PARSEC)) / _vega_fluxes())


def absolute_magnitudes(star: Star) -> np.ndarray:
    """`model_magnitudes` with each band's colour against G corrected to real stars' (`COLOUR_SLOPES`)."""
    x = 5040.0 / star.teff - 5040.0 / VEGA.teff
    return model_magnitudes(star) + np.array([COLOUR_SLOPES.get(band, 0.0) * x for band in PHOTOMETRIC_BANDS])


def parallax_error_mas(g_mag: float) -> float:
    """Gaia end-of-mission parallax precision as a function of G (Gaia science performance; DR3 is close)."""
    z = 10 ** (0.4 * (max(g_mag, 13.0) - 15.0))
    return np.sqrt(-1.631 + 680.766 * z + 32.732 * z**2) / 1000.0


def _distance_and_reddening(rng: np.random.Generator, absolute_g: float) -> tuple[float, float]:
    """Distance (pc) and E(B-V) of a star in a G-limited sample.

    Distances follow a uniform space density (p ~ d^2); dust grows with distance at a random rate around
    `REDDENING_PER_KPC`. Draws whose reddened G is fainter than the sample limit are rejected, as the
    survey would not have selected them.
    """
    near, far = DISTANCE_RANGE_PC
    far = max(min(far, 10 ** ((SAMPLE_G_LIMIT - absolute_g + 5) / 5)), 2 * near)
    while True:
        distance = float((near**3 + rng.random() * (far**3 - near**3)) ** (1 / 3))
        ebv = distance / 1000 * rng.gamma(2.0, REDDENING_PER_KPC / 2)
        if absolute_g + 5 * np.log10(distance / 10) + BANDS["G"].extinction * ebv <= SAMPLE_G_LIMIT:
            return distance, float(ebv)


def _noise(band: str, mag: float) -> float:
    """1-sigma error (mag) of a measurement of `mag` in `band`: calibration floor, photon noise, and for saturated
    photometry the error of a fit to the PSF wings."""
    floor, ten_sigma, _ = NOISE[band]
    error = np.hypot(floor, 0.1 * 10 ** (0.4 * (mag - ten_sigma)))
    return float(np.hypot(error, 0.05 * max(BANDS[band].saturation - mag, 0.0)))


def synthetic_photometry(seed: int, index: int) -> tuple[dict, dict]:
    """One catalogue row and its labels: (photometry row, labels row)."""
    rng = object_rng(seed, "photometry", index)
    star = draw_star(rng)
    absolute = absolute_magnitudes(star)
    distance, ebv = _distance_and_reddening(rng, absolute[0])
    extinction = np.array([BANDS[band].extinction for band in PHOTOMETRIC_BANDS]) * ebv
    true_mags = absolute + 5 * np.log10(distance / 10) + extinction

    row = {"id": object_id("photometry", index)}
    lost = {band for survey, bands in SURVEY_BANDS.items() if rng.random() < CROSSMATCH_LOSS[survey]
            for band in bands}
    for band, true_mag in zip(PHOTOMETRIC_BANDS, true_mags):
        mag = true_mag + rng.normal(0.0, _noise(band, true_mag))
        error = _noise(band, mag) * rng.lognormal(0.0, ERROR_ESTIMATE_SCATTER)
        if band in ("J", "H", "Ks") and rng.random() < UPPER_LIMIT_RATE:
            error = np.nan
        if mag > NOISE[band][2] or band in lost:
            mag = error = np.nan
        row[f"mag_{band}"], row[f"err_{band}"] = float(mag), float(error)

    plx_error = parallax_error_mas(true_mags[0])
    measured_g = row["mag_G"] if np.isfinite(row["mag_G"]) else true_mags[0]
    reported = parallax_error_mas(measured_g) * rng.lognormal(0.0, ERROR_ESTIMATE_SCATTER)
    row.update(parallax=float(1000.0 / distance + rng.normal(0.0, plx_error)), parallax_error=float(reported),
               ebv=ebv, source=SOURCE)
    labels = {"id": row["id"], "teff": star.teff, "logg": star.logg, "feh": star.feh}
    return row, labels


def generate(samples: int, seed: int) -> dict[str, pa.Table]:
    """`samples` synthetic catalogue rows: the `photometry` and `labels` tables of a raw artifact."""
    pairs = [synthetic_photometry(seed, index) for index in range(samples)]
    return {"photometry": pa.Table.from_pylist([row for row, _ in pairs], schema=PHOTOMETRY_SCHEMA),
            "labels": pa.Table.from_pylist([labels for _, labels in pairs], schema=STELLAR_LABELS_SCHEMA)}
