"""Photometry to model inputs: quality cuts, dereddening, colours and absolute magnitude.

Per band, a measurement is unusable when its magnitude or error is not finite, its error is not positive or
exceeds `MAX_ERROR` (the survey barely detected it), or it is brighter than the survey's saturation limit.
Unusable bands become NaN, with the reason in `mask_<band>` (bits of `MASK_BITS`). Magnitudes are corrected for
extinction, A_b = R_b E(B-V), with the coefficients in `steps.ingest.bands`. Colours are differences of
corrected magnitudes, NaN where either band is unusable. The absolute G magnitude is given only where the
parallax is measured to better than 20% (parallax / error > 5), so that inverting it is not badly biased.
Rows with fewer than `MIN_BANDS` usable bands are quarantined.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from steps.core.quarantine import Quarantine
from steps.ingest.bands import BANDS
from steps.ingest.schemas import PHOTOMETRIC_BANDS, STELLAR_LABELS_SCHEMA
from steps.preprocess.common import Features, RawArtifact, label_columns

MAX_ERROR = 0.5                 # mag
MIN_BANDS = 3
MIN_PARALLAX_SNR = 5.0
MASK_BITS = {"missing": 1, "bad_error": 2, "saturated": 4}
COLOURS = (("BP", "RP"), ("G", "BP"), ("G", "RP"), ("G", "J"), ("J", "H"), ("H", "Ks"), ("J", "Ks"), ("G", "Ks"),
           ("Ks", "W1"), ("W1", "W2"))
LABELS = ("teff", "logg", "feh")


def colour_name(blue: str, red: str) -> str:
    """Column name of the colour blue - red, e.g. `c_BP_RP`."""
    return f"c_{blue}_{red}"


def band_masks(mags: np.ndarray, errors: np.ndarray, band: str) -> np.ndarray:
    """`MASK_BITS` flags of one band's measurements (0 = usable)."""
    mask = np.where(~np.isfinite(mags), MASK_BITS["missing"], 0)
    with np.errstate(invalid="ignore"):
        bad_error = ~np.isfinite(errors) | (errors <= 0) | (errors > MAX_ERROR)
        saturated = mags < BANDS[band].saturation
    mask |= np.where(bad_error & np.isfinite(mags), MASK_BITS["bad_error"], 0)
    mask |= np.where(saturated, MASK_BITS["saturated"], 0)
    return mask.astype(np.uint8)


def absolute_magnitude(mag: np.ndarray, parallax: np.ndarray, parallax_error: np.ndarray) -> np.ndarray:
    """M = m + 5 log10(parallax / 100 mas) where parallax / error > MIN_PARALLAX_SNR, else NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precise = (parallax_error > 0) & (parallax / parallax_error > MIN_PARALLAX_SNR)
        return np.where(precise, mag + 5 * np.log10(np.where(precise, parallax, 1.0) / 100.0), np.nan)


def select_bands(bands: tuple[str, ...]) -> tuple[str, ...]:
    """The chosen bands in the archive's order; ValueError naming the problem when unknown or too few."""
    unknown = [band for band in bands if band not in PHOTOMETRIC_BANDS]
    if unknown or len(set(bands)) < MIN_BANDS:
        raise ValueError(f"bands {','.join(bands)}: need at least {MIN_BANDS} of {','.join(PHOTOMETRIC_BANDS)}"
                         + (f"; unknown: {','.join(unknown)}" if unknown else ""))
    return tuple(band for band in PHOTOMETRIC_BANDS if band in bands)


def preprocess_photometry(raw: RawArtifact, deredden: bool = True,
                          bands: tuple[str, ...] = PHOTOMETRIC_BANDS) -> Features:
    """Cleaned, dereddened magnitudes with masks, colours and absolute G, with labels; poor rows quarantined.

    `bands` chooses the band set (in the archive's order); colours are made only between chosen bands.
    """
    bands = select_bands(bands)
    data = raw.data
    ids = np.array(data.column("id").to_pylist(), dtype=object)
    sources = data.column("source").to_pylist()
    ebv = data.column("ebv").to_numpy(zero_copy_only=False)
    columns: dict[str, np.ndarray] = {}
    usable_bands = np.zeros(data.num_rows, dtype=int)
    for band in bands:
        mags = data.column(f"mag_{band}").to_numpy(zero_copy_only=False).astype(np.float64)
        errors = data.column(f"err_{band}").to_numpy(zero_copy_only=False).astype(np.float64)
        mask = band_masks(mags, errors, band)
        usable = mask == 0
        corrected = mags - BANDS[band].extinction * ebv if deredden else mags
        columns[f"mag_{band}"] = np.where(usable, corrected, np.nan)
        columns[f"err_{band}"] = np.where(usable, errors, np.nan)
        columns[f"mask_{band}"] = mask
        usable_bands += usable

    quarantine = Quarantine("preprocess.photometry")
    no_reddening = ~np.isfinite(ebv) if deredden else np.zeros(data.num_rows, dtype=bool)
    too_few = usable_bands < MIN_BANDS
    for row in np.flatnonzero(no_reddening | too_few):
        reason = (f"only {usable_bands[row]} usable band(s), fewer than {MIN_BANDS}" if too_few[row]
                  else "E(B-V) missing, cannot deredden")
        quarantine.add(ids[row], reason, sources[row])
    kept = ~(no_reddening | too_few)

    parallax = data.column("parallax").to_numpy(zero_copy_only=False)
    parallax_error = data.column("parallax_error").to_numpy(zero_copy_only=False)
    pairs = [(blue, red) for blue, red in COLOURS if blue in bands and red in bands]
    colours = {colour_name(blue, red): columns[f"mag_{blue}"] - columns[f"mag_{red}"] for blue, red in pairs}
    numeric = {
        **{name: columns[name] for band in bands for name in (f"mag_{band}", f"err_{band}")},
        **colours,
        **({"abs_G": absolute_magnitude(columns["mag_G"], parallax, parallax_error)} if "G" in bands else {}),
        "parallax": parallax,
        "parallax_error": parallax_error,
    }
    kept_ids = list(ids[kept])
    table = pa.table({
        "id": pa.array(kept_ids, pa.string()),
        **{name: pa.array(values[kept], pa.float64()) for name, values in numeric.items()},
        **{f"mask_{band}": pa.array(columns[f"mask_{band}"][kept], pa.uint8()) for band in bands},
        **label_columns(kept_ids, raw.labels, STELLAR_LABELS_SCHEMA),
    })
    spec = {
        "modality": "photometry",
        "bands": list(bands),
        "features": [*numeric, *(f"mask_{band}" for band in bands)],
        "colours": list(colours),
        "labels": list(LABELS),
        "mask_bits": MASK_BITS,
        "dereddened": deredden,
        "extinction_coefficients": {band: BANDS[band].extinction for band in bands},
        "missing": "NaN in mag_*, err_*, colours and abs_G; the reason in mask_<band>",
    }
    return Features(table=table, spec=spec, quarantine=quarantine, objects_in=data.num_rows,
                    parameters={"modality": "photometry", "deredden": deredden, "bands": list(bands)})
