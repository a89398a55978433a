"""The photometric bands of the raw photometry table (Gaia DR3, 2MASS, AllWISE): passbands, extinction
coefficients and saturation limits.

The synthetic source reddens with the same coefficients that preprocessing uses to deredden, and both read them
from here, so the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from steps.ingest.schemas import PHOTOMETRIC_BANDS


@dataclass(frozen=True)
class Band:
    """One passband, approximated as a box between two wavelengths (Angstrom, vacuum).

    `extinction` is R_b = A_b / E(B-V) for a diffuse-ISM (R_V = 3.1) extinction curve; `saturation` is the
    magnitude brighter than which the survey's photometry is unreliable; `faintest` the magnitude fainter than which
    the survey's catalogue holds no measurement, so that a value beyond it is a placeholder (99, 99.999) or no
    magnitude of this band.
    """

    name: str
    survey: str
    wave_min: float
    wave_max: float
    extinction: float
    saturation: float
    faintest: float


# Gaia R_b from Casagrande & VandenBerg (2018, MNRAS 479, L102); 2MASS and WISE R_b from Yuan, Liu & Xiang
# (2013, MNRAS 430, 2188). Box passbands: 2MASS and WISE edges are lambda_iso -+ half the bandwidth
# (Cohen et al. 2003; Jarrett et al. 2011); Gaia edges follow the half-maximum of the DR3 passbands.
# Saturation: Gaia photometry degrades brighter than G ~ 3; 2MASS Read-1 (51 ms) frames saturate near
# J 4.5, H 4.0, Ks 3.5; WISE profile-fit photometry saturates at W1 8.1, W2 6.7 (AllWISE Explanatory Supplement).
# Faintest: a margin past the faintest entries of each catalogue (Gaia DR3 G about 21-23 and BP/RP to about 25 for
# faint sources; 2MASS PSC and AllWISE below 19), so that no detection is lost and the placeholders are caught.
BANDS: dict[str, Band] = {band.name: band for band in (
    Band("G", "gaia", 4000.0, 9500.0, 2.740, 3.0, 26.0),
    Band("BP", "gaia", 3900.0, 6700.0, 3.374, 3.0, 27.0),
    Band("RP", "gaia", 6300.0, 10000.0, 2.035, 3.0, 27.0),
    Band("J", "2mass", 11540.0, 13160.0, 0.72, 4.5, 21.0),
    Band("H", "2mass", 15365.0, 17875.0, 0.46, 4.0, 21.0),
    Band("Ks", "2mass", 20280.0, 22900.0, 0.306, 3.5, 21.0),
    Band("W1", "wise", 30370.0, 37000.0, 0.18, 8.1, 21.0),
    Band("W2", "wise", 40970.0, 51390.0, 0.16, 6.7, 21.0),
)}
assert tuple(BANDS) == PHOTOMETRIC_BANDS, "bands must match the raw schema's band order"


def band_of(column: str, bands: list[str]) -> list[str]:
    """The photometric bands a feature column depends on, by preprocessing's names: `mag_X`/`err_X` -> X, `c_X_Y`
    -> X and Y, `abs_G` -> G."""
    head, _, rest = column.partition("_")
    if head in ("mag", "err", "abs"):
        return [rest] if rest in bands else []
    if head == "c":
        for band in sorted(bands, key=len, reverse=True):
            if rest.startswith(band + "_") and rest[len(band) + 1:] in bands:
                return [band, rest[len(band) + 1:]]
    return []


GAIA_BANDS = tuple(name for name, band in BANDS.items() if band.survey == "gaia")


# Why preprocessing found a band unusable (`mask_<band>`, bits): no measurement, an error that is not one, brighter
# than the band's saturation limit, a catalogue's placeholder for "no value".
MASK_BITS = {"missing": 1, "bad_error": 2, "saturated": 4, "placeholder": 8}


def gaia_bands_only(table: pa.Table, bands: list[str]) -> pa.Table:
    """The feature table as if the stars had no non-Gaia band: every column that uses one (magnitude, error, colour)
    null, its mask "missing" and its saturation flag 0, the photometry of most Gaia stars, whose 2MASS and WISE
    magnitudes are missing or saturated. (A flag left as measured told a model that a star was bright in 2MASS.)"""
    for index, name in enumerate(table.column_names):
        head, _, band = name.partition("_")
        if head in ("mask", "saturated") and band in bands and band not in GAIA_BANDS:
            value = MASK_BITS["missing"] if head == "mask" else 0
            table = table.set_column(index, name, pa.array(np.full(table.num_rows, value, np.uint8)))
        elif any(band not in GAIA_BANDS for band in band_of(name, bands)):
            table = table.set_column(index, name, pa.nulls(table.num_rows, pa.float64()))
    return table
