"""A rest-frame model of a stellar spectrum: a Planck continuum times the absorption of real spectral features.

Feature strengths follow the physics a spectral classifier relies on: hydrogen Balmer lines peak near 9000 K (A
stars); Ca II H&K, the G band and metal lines strengthen towards cooler stars and scale with 10**[Fe/H];
TiO bands appear below ~4200 K; pressure-broadened wings (Balmer, Mg b, Na D) grow with surface gravity while the
Ca II triplet strengthens in giants. Lines are pseudo-Voigt profiles (Thompson, Cox & Hastings 1987) whose
Gaussian core is the instrumental resolution and whose Lorentzian wings carry the pressure broadening; the
absorption is applied as exp(-optical depth), so strong lines saturate rather than go below zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import constants

from steps.ingest.synthetic.objects import Star

_H = constants.h.cgs.value
_C = constants.c.cgs.value
_K_B = constants.k_B.cgs.value
SDSS_RESOLUTION = 2000.0         # lambda / FWHM of SDSS/BOSS spectrographs, roughly 1800-2200 across the range
TIO_DEGRADATION = 120.0          # Angstrom over which a TiO band fades redward of its head


def planck_lambda(wave: np.ndarray, teff: float) -> np.ndarray:
    """Planck's B_lambda at `wave` (Angstrom) in erg/s/cm^2/A/sr."""
    wave_cm = np.asarray(wave, dtype=np.float64) * 1e-8
    return 2 * _H * _C**2 / wave_cm**5 / np.expm1(_H * _C / (wave_cm * _K_B * teff)) * 1e-8


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Vacuum wavelength of an air wavelength (Angstrom), with the refractive index of Piskunov's VALD formula.

    Line lists are tabulated in air; SDSS wavelengths are in vacuum.
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    s2 = (1e4 / wave_air) ** 2
    index = (1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
             + 1.599740894897e-4 / (38.92568793293 - s2))
    return wave_air * index


@dataclass(frozen=True)
class Line:
    """One absorption feature: `kind` selects how its strength depends on the star."""

    name: str
    wave_air: float     # Angstrom
    kind: str           # balmer, ca2_hk, ca2_triplet, mg_b, na_d, fe1
    tau: float          # central optical depth at the strength peak of its kind
    gamma: float        # Lorentzian half-width (Angstrom) at the reference gravity of its kind


LINES = (
    Line("H-alpha", 6562.80, "balmer", 1.2, 4.0), Line("H-beta", 4861.33, "balmer", 1.1, 6.0),
    Line("H-gamma", 4340.47, "balmer", 1.0, 8.0), Line("H-delta", 4101.74, "balmer", 0.9, 10.0),
    Line("H-epsilon", 3970.07, "balmer", 0.7, 10.0),
    Line("Ca II K", 3933.66, "ca2_hk", 2.5, 1.5), Line("Ca II H", 3968.47, "ca2_hk", 2.0, 1.5),
    Line("Ca II 8498", 8498.02, "ca2_triplet", 0.5, 1.0), Line("Ca II 8542", 8542.09, "ca2_triplet", 0.9, 1.0),
    Line("Ca II 8662", 8662.14, "ca2_triplet", 0.8, 1.0),
    Line("Mg b1", 5183.60, "mg_b", 0.7, 0.8), Line("Mg b2", 5172.68, "mg_b", 0.6, 0.8),
    Line("Mg b4", 5167.32, "mg_b", 0.5, 0.8),
    Line("Na D2", 5889.95, "na_d", 0.8, 0.8), Line("Na D1", 5895.92, "na_d", 0.6, 0.8),
    Line("Fe I 4045", 4045.81, "fe1", 0.35, 0.3), Line("Fe I 4063", 4063.59, "fe1", 0.30, 0.3),
    Line("Fe I 4071", 4071.74, "fe1", 0.30, 0.3), Line("Fe I 4383", 4383.54, "fe1", 0.35, 0.3),
    Line("Fe I 4404", 4404.75, "fe1", 0.30, 0.3), Line("Fe I 4957", 4957.60, "fe1", 0.20, 0.3),
    Line("Fe I 5269", 5269.54, "fe1", 0.30, 0.3), Line("Fe I 5328", 5328.04, "fe1", 0.25, 0.3),
    Line("Fe I 5371", 5371.49, "fe1", 0.20, 0.3), Line("Fe I 5397", 5397.13, "fe1", 0.20, 0.3),
    Line("Fe I 5405", 5405.77, "fe1", 0.20, 0.3), Line("Fe I 5429", 5429.70, "fe1", 0.20, 0.3),
    Line("Fe I 6495", 6494.98, "fe1", 0.15, 0.3),
)
LINE_WAVES = air_to_vacuum(np.array([line.wave_air for line in LINES]))

G_BAND = (air_to_vacuum(4305.0), 12.0, 0.35)   # CH band: centre, Gaussian sigma (A), optical depth at its peak
# TiO band heads (air, Angstrom) and their optical depths in an M2-3 dwarf; each band fades redward of its head.
TIO_HEADS = air_to_vacuum(np.array([4761.0, 4954.0, 5167.0, 5448.0, 5847.0, 6159.0, 6651.0, 7054.0, 7589.0,
                                    8432.0]))
TIO_TAU = np.array([0.3, 0.35, 0.4, 0.4, 0.4, 0.5, 0.45, 0.6, 0.4, 0.3])


def _metal_strength(teff: float) -> float:
    """Neutral-metal line strength relative to the Sun: more neutral atoms in cooler atmospheres (capped)."""
    return min((5800.0 / teff) ** 3, 4.0)


def _line_strengths(star: Star) -> tuple[np.ndarray, np.ndarray]:
    """Central optical depth and Lorentzian half-width (Angstrom) of every line in `LINES` for `star`."""
    teff, logg, metals = star.teff, star.logg, 10 ** star.feh
    balmer = np.exp(-0.5 * ((np.log10(teff) - np.log10(9000.0)) / 0.13) ** 2)
    tau_factor = {
        "balmer": balmer,
        "ca2_hk": metals * np.exp(-0.5 * ((teff - 5000.0) / 2200.0) ** 2),
        "ca2_triplet": np.sqrt(metals) * np.clip((7500.0 - teff) / 2500.0, 0.15, 1.0) * (1 + 0.25 * (4.5 - logg)),
        "mg_b": metals * _metal_strength(teff),
        "na_d": metals * _metal_strength(teff) * 10 ** (0.2 * (logg - 4.4)),
        "fe1": metals * _metal_strength(teff),
    }
    gamma_factor = {
        "balmer": 10 ** (0.5 * (logg - 4.0)) * np.clip(teff / 9000.0, 0.3, 1.0) ** 2,
        "ca2_hk": 10 ** (0.3 * (logg - 4.4)),
        "ca2_triplet": 10 ** (0.3 * (logg - 4.4)),
        "mg_b": 10 ** (0.5 * (logg - 4.4)),
        "na_d": 10 ** (0.5 * (logg - 4.4)),
        "fe1": 10 ** (0.3 * (logg - 4.4)),
    }
    tau = np.array([line.tau * tau_factor[line.kind] for line in LINES])
    gamma = np.array([line.gamma * gamma_factor[line.kind] for line in LINES])
    return tau, gamma


def pseudo_voigt(offset: np.ndarray, fwhm_gauss: np.ndarray, fwhm_lorentz: np.ndarray) -> np.ndarray:
    """Thompson-Cox-Hastings pseudo-Voigt profile, normalised to 1 at its centre (arrays broadcast)."""
    fg, fl = fwhm_gauss, fwhm_lorentz
    fwhm = (fg**5 + 2.69269 * fg**4 * fl + 2.42843 * fg**3 * fl**2 + 4.47163 * fg**2 * fl**3
            + 0.07842 * fg * fl**4 + fl**5) ** 0.2
    ratio = fl / fwhm
    eta = 1.36603 * ratio - 0.47719 * ratio**2 + 0.11116 * ratio**3
    x2 = (2 * offset / fwhm) ** 2
    return eta / (1 + x2) + (1 - eta) * np.exp(-np.log(2) * x2)


def optical_depth(wave: np.ndarray, star: Star, resolution: float = SDSS_RESOLUTION) -> np.ndarray:
    """Total absorption optical depth at rest-frame vacuum wavelengths `wave` (Angstrom) for `star`."""
    wave = np.asarray(wave, dtype=np.float64)
    tau_lines, gamma = _line_strengths(star)
    offset = wave[:, None] - LINE_WAVES[None, :]
    profile = pseudo_voigt(offset, LINE_WAVES / resolution, 2 * gamma)
    tau = profile @ tau_lines

    center, sigma, g_band_tau = G_BAND
    g_band = g_band_tau * 10 ** star.feh * np.exp(-0.5 * ((star.teff - 5000.0) / 800.0) ** 2)
    tau += g_band * np.exp(-0.5 * ((wave - center) / sigma) ** 2)

    tio = max((4200.0 - star.teff) / 700.0, 0.0) ** 1.5
    if tio > 0:
        redward = wave[:, None] - TIO_HEADS[None, :]
        onset = 0.5 * (1 + np.tanh(redward / (TIO_HEADS / resolution)))   # the head, blurred by the resolution
        tau += (onset * np.exp(-np.clip(redward, 0, None) / TIO_DEGRADATION)) @ (tio * TIO_TAU)
    return tau


def rest_frame_spectrum(wave: np.ndarray, star: Star, resolution: float = SDSS_RESOLUTION) -> np.ndarray:
    """Surface brightness (erg/s/cm^2/A/sr) of `star` at rest-frame vacuum wavelengths `wave` (Angstrom)."""
    return planck_lambda(wave, star.teff) * np.exp(-optical_depth(wave, star, resolution))
