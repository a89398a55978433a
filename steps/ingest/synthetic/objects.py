"""Per-object identity and randomness for the synthetic source, and the stellar population it draws from.

Each object gets its own random stream, seeded by (seed, modality, index). An object therefore depends only on
its own index: asking for 200 objects gives the 100 of a 100-object run first, unchanged, and next week's larger
sample keeps every earlier id with the same data, as a growing archive would.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

SOURCE = "synthetic"
ID_PREFIX = {"spectra": "synth-spec", "photometry": "synth-phot", "lightcurves": "synth-lc"}

SOLAR_TEFF = 5772.0          # K (IAU 2015 nominal)
SOLAR_LOGG = 4.438           # cgs
GIANT_FRACTION = 0.25


def object_id(modality: str, index: int) -> str:
    """The stable id of the object at `index` (0-based) of a modality: `synth-spec-000001`, ..."""
    return f"{ID_PREFIX[modality]}-{index + 1:06d}"


def object_rng(seed: int, modality: str, index: int) -> np.random.Generator:
    """The random stream of one object, independent of how many objects are drawn."""
    stream = zlib.crc32(modality.encode())
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


@dataclass(frozen=True)
class Star:
    """Fundamental parameters of one synthetic star."""

    teff: float     # K
    logg: float     # log10 of surface gravity in cm/s^2
    feh: float      # [Fe/H], dex
    mass: float     # solar masses


def draw_star(rng: np.random.Generator) -> Star:
    """Draw a star from a simple Hertzsprung-Russell population: dwarfs with some giants.

    Dwarfs (3500-9500 K, log-uniform in Teff) follow main-sequence scalings: Teff ~ M^0.6 and R ~ M^0.8, so
    log g falls from ~4.7 for M dwarfs to ~4.2 for A stars, and up to 0.3 dex lower for stars evolved within the
    main sequence. Giants (a quarter) lie on a red-giant branch from (3800 K, log g 1.0) to (5200 K, 3.5) with
    0.2 dex scatter and masses of 0.9-2 M_sun. [Fe/H] ~ N(-0.2, 0.35), the solar neighbourhood's spread, clipped
    to [-2.5, 0.5].
    """
    if rng.random() < GIANT_FRACTION:
        teff = rng.uniform(3800.0, 5200.0)
        logg = float(np.clip(1.0 + 2.5 * (teff - 3800.0) / 1400.0 + rng.normal(0.0, 0.2), 0.5, 3.8))
        mass = rng.uniform(0.9, 2.0)
    else:
        teff = 10 ** rng.uniform(np.log10(3500.0), np.log10(9500.0))
        mass = (teff / SOLAR_TEFF) ** (1 / 0.6)
        log_radius = 0.8 * np.log10(mass) + rng.uniform(0.0, 0.15)
        logg = SOLAR_LOGG + np.log10(mass) - 2 * log_radius
    feh = float(np.clip(rng.normal(-0.2, 0.35), -2.5, 0.5))
    return Star(teff=float(teff), logg=float(logg), feh=feh, mass=float(mass))
