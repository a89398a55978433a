"""Photometry to model inputs: quality cuts, saturation flags, dereddening, colours and absolute magnitude.

Gaia magnitudes of bright stars are first corrected for saturation with the empirical relations of the Gaia
EDR3 documentation (section 5.5.2; Riello et al. 2021, A&A 649, A3), which DR3 photometry shares, within the
magnitude ranges where they were fitted.

Per band, a measurement is unusable when its magnitude or error is not finite, its error is not positive or
exceeds `MAX_ERROR` (the survey barely detected it), it is brighter than the survey's saturation limit, or it is
fainter than any measurement the survey's catalogue holds or brighter than any star (a placeholder: 99.999, -99). A
NaN error is how the raw table marks an upper limit or a value the catalogue's own flags (2MASS/AllWISE `ph_qual`,
`cc_flg`) say not to trust, so those are masked too. Unusable bands become NaN, with the reason in `mask_<band>`
(bits of `MASK_BITS`).

Magnitudes are corrected for extinction, A_b = R_b E(B-V), with the coefficients in `steps.ingest.bands`, where
the row's E(B-V) is known. Real catalogues often do not give it: such a row is kept with its magnitudes as
observed, and `dereddened` (0/1 per row, also a model feature) says which rows were corrected. Colours are
differences of the magnitudes, NaN where either band is unusable. The absolute G magnitude is given only where the
parallax is measured to better than 20% (parallax / error > 5), so that inverting it is not badly biased.
Rows with fewer than `MIN_USABLE_BANDS` usable bands (no colour at all) are quarantined: one colour already
carries temperature (colour-Teff relations such as Casagrande et al. 2021 use one), while a lone magnitude does not.
Very bright catalogues (the Gaia benchmark stars) keep many rows with only Gaia's three bands, or two.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from steps.core.quarantine import Quarantine
from steps.ingest.bands import BANDS, MASK_BITS
from steps.ingest.schemas import PHOTOMETRIC_BANDS, STELLAR_LABELS_SCHEMA
from steps.preprocess.common import Features, RawArtifact, label_columns

MAX_ERROR = 0.5                 # mag
MIN_BANDS = 3                   # bands a model's band set needs (two colours)
MIN_USABLE_BANDS = 2            # usable bands a row needs (one colour)
MIN_PARALLAX_SNR = 5.0
# A parallax more negative than this many of its errors (or negative with no usable error) is not a distant star's:
# the astrometry is bad, and the parallax counts as unknown. Up to it, a negative parallax says "far", as 0 does.
NEGATIVE_PARALLAX_SIGMA = 3.0
# Brighter than this no star but the Sun is in any band here (Betelgeuse: Ks -4.4): a catalogue's -99 or -9999.
BRIGHTEST_MAGNITUDE = -10.0
COLOURS = (("BP", "RP"), ("G", "BP"), ("G", "RP"), ("G", "J"), ("J", "H"), ("H", "Ks"), ("J", "Ks"), ("G", "Ks"),
           ("Ks", "W1"), ("W1", "W2"))
LABELS = ("teff", "logg", "feh")

# Gaia EDR3/DR3 bright-star saturation corrections, corrected - catalogue magnitude as a cubic polynomial (lowest
# power first) in the magnitude named, valid where that magnitude lies in the range given (EDR3 documentation 5.5.2).
GAIA_SATURATION_CORRECTIONS = {
    "G": ("G", (2.0, 8.0), (-0.09892, 0.059, -0.009775, 0.0004934)),
    "BP": ("G", (2.0, 3.94), (-0.9921, -0.02598, 0.1833, -0.02862)),
    "RP": ("RP", (2.0, 3.45), (-14.94, 14.41, -4.657, 0.503)),
}


def colour_name(blue: str, red: str) -> str:
    """Column name of the colour blue - red, e.g. `c_BP_RP`."""
    return f"c_{blue}_{red}"


def band_masks(mags: np.ndarray, errors: np.ndarray, saturation: np.ndarray, faintest: np.ndarray) -> np.ndarray:
    """`MASK_BITS` flags of measurements (0 = usable): magnitudes and errors (n, bands), each band's saturation limit
    and faintest catalogue magnitude (bands,)."""
    mask = np.where(~np.isfinite(mags), MASK_BITS["missing"], 0)
    with np.errstate(invalid="ignore"):
        bad_error = ~np.isfinite(errors) | (errors <= 0) | (errors > MAX_ERROR)
        placeholder = (mags > faintest) | (mags < BRIGHTEST_MAGNITUDE)
        saturated = (mags < saturation) & ~placeholder
    mask |= np.where(bad_error & np.isfinite(mags), MASK_BITS["bad_error"], 0)
    mask |= np.where(saturated, MASK_BITS["saturated"], 0)
    mask |= np.where(placeholder, MASK_BITS["placeholder"], 0)
    return mask.astype(np.uint8)


def gaia_saturation_corrected(mags: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Gaia bands of `mags` (catalogue magnitudes by band) with the bright-star saturation correction applied
    where its relation is valid; other bands, and magnitudes outside the ranges, unchanged."""
    corrected = dict(mags)
    for band, (argument, (low, high), coefficients) in GAIA_SATURATION_CORRECTIONS.items():
        if band in mags and argument in mags:
            x = mags[argument]
            with np.errstate(invalid="ignore"):
                valid = (x > low) & (x < high)
            c0, c1, c2, c3 = coefficients  # Horner's rule: numpy's polyval costs more than the arithmetic here
            corrected[band] = np.where(valid, mags[band] + (c0 + x * (c1 + x * (c2 + x * c3))), mags[band])
    return corrected


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


def _unusable_bands(masks: dict[str, np.ndarray], bands: tuple[str, ...], row: int) -> str:
    """Why the bands a row has an unusable magnitude in are unusable ("" when it has none)."""
    reasons = []
    for band in bands:
        mask = int(masks[band][row])
        if mask == 0 or mask & MASK_BITS["missing"]:
            continue
        why = [text for bit, text in ((MASK_BITS["bad_error"], f"no error in (0, {MAX_ERROR:g}] mag"),
                                      (MASK_BITS["saturated"], f"brighter than {BANDS[band].saturation:g} mag"),
                                      (MASK_BITS["placeholder"], f"outside [{BRIGHTEST_MAGNITUDE:g}, "
                                                                 f"{BANDS[band].faintest:g}] mag: a placeholder, not "
                                                                 "a measurement"))
               if mask & bit]
        reasons.append(f"{band}: {' and '.join(why)}")
    return f" ({'; '.join(reasons)})" if reasons else ""


@dataclass
class PhotometryColumns:
    """`photometry_columns`' result for n rows: the feature columns by name (NaN where missing), each band's mask,
    whether a row was dereddened, and why each row too poor to use was set aside (row -> reason)."""

    numeric: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    dereddened: np.ndarray
    too_poor: dict[int, str]

    def flags(self) -> dict[str, np.ndarray]:
        """The flag columns beside the numbers: `mask_<band>` (why a band is unusable, `MASK_BITS`),
        `saturated_<band>` (1 where the band is saturated: the one reason that tells of the star, which is bright
        in it) and `dereddened`, as uint8, for training tables and the API alike."""
        return {**{f"mask_{band}": mask.astype(np.uint8) for band, mask in self.masks.items()},
                **{f"saturated_{band}": ((mask & MASK_BITS["saturated"]) != 0).astype(np.uint8)
                   for band, mask in self.masks.items()},
                "dereddened": self.dereddened.astype(np.uint8)}


def _plausible_parallax(parallax: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parallax, error) with NaN for both where the parallax is below 0 by more than NEGATIVE_PARALLAX_SIGMA errors
    or negative with no positive error (see `photometry_columns`)."""
    with np.errstate(invalid="ignore"):
        implausible = (parallax < 0) & ~(-parallax <= NEGATIVE_PARALLAX_SIGMA * np.where(error > 0, error, np.nan))
    return np.where(implausible, np.nan, parallax), np.where(implausible, np.nan, error)


@functools.lru_cache(maxsize=32)
def _band_constants(bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(saturation limit, faintest catalogue magnitude, extinction coefficient) of each band, in order."""
    return tuple(np.array([getattr(BANDS[band], constant) for band in bands])
                 for constant in ("saturation", "faintest", "extinction"))


def photometry_columns(catalogue: dict[str, np.ndarray], bands: tuple[str, ...], deredden: bool) -> PhotometryColumns:
    """The features of catalogue rows (`mag_<band>`, `err_<band>`, `parallax`, `parallax_error`, `ebv` arrays, NaN
    where missing; absent keys count as missing): cleaned, Gaia-saturation-corrected, dereddened magnitudes with
    masks, colours between chosen bands and absolute G. Training (`preprocess_photometry`) and the prediction API
    (`steps.serve.catalogue`) both compute them here. The parallax feature is the measured parallax, or 0 where that
    is negative within NEGATIVE_PARALLAX_SIGMA errors: a true parallax cannot be negative, and fed to a model as it
    is, a negative one lay beyond every training star (`make run`'s ridge put a G = 6 star with -3.2 mas at log g
    -3.3). A parallax further below 0 is bad astrometry: parallax and its error count as missing, and the model
    answers as for a star without one (that star: log g 2.4 +- 0.12 read as 0, 2.8 +- 0.25 as unknown)."""
    n = len(next(iter(catalogue.values())))
    missing = np.full(n, np.nan)
    ebv = catalogue.get("ebv", missing)
    dereddened = np.isfinite(ebv) if deredden else np.zeros(n, dtype=bool)
    extinction_scale = np.where(dereddened, ebv, 0.0)
    observed = {band: np.asarray(catalogue.get(f"mag_{band}", missing), np.float64) for band in PHOTOMETRIC_BANDS}
    desaturated = gaia_saturation_corrected(observed)
    mags = np.stack([observed[band] for band in bands], axis=1)
    errors = np.stack([np.asarray(catalogue.get(f"err_{band}", missing), np.float64) for band in bands], axis=1)
    saturation, faintest, extinction = _band_constants(bands)
    mask = band_masks(mags, errors, saturation, faintest)
    usable = mask == 0
    corrected = np.stack([desaturated[band] for band in bands], axis=1) - extinction * extinction_scale[:, None]
    corrected, errors = np.where(usable, corrected, np.nan), np.where(usable, errors, np.nan)
    columns = {name: values[:, i] for i, band in enumerate(bands)
               for name, values in ((f"mag_{band}", corrected), (f"err_{band}", errors))}
    masks = {band: mask[:, i] for i, band in enumerate(bands)}
    usable_bands = usable.sum(axis=1)
    too_poor = {int(row): f"only {usable_bands[row]} usable band(s), fewer than {MIN_USABLE_BANDS}"
                + _unusable_bands(masks, bands, row) for row in np.flatnonzero(usable_bands < MIN_USABLE_BANDS)}
    parallax, parallax_error = _plausible_parallax(np.asarray(catalogue.get("parallax", missing), np.float64),
                                                   np.asarray(catalogue.get("parallax_error", missing), np.float64))
    colours = {colour_name(blue, red): columns[f"mag_{blue}"] - columns[f"mag_{red}"]
               for blue, red in COLOURS if blue in bands and red in bands}
    numeric = {
        **columns,
        **colours,
        **({"abs_G": absolute_magnitude(columns["mag_G"], parallax, parallax_error)} if "G" in bands else {}),
        "parallax": np.maximum(parallax, 0.0),  # a negative measurement says "far", as 0 does (see the docstring)
        "parallax_error": parallax_error,
    }
    return PhotometryColumns(numeric, masks, dereddened, too_poor)


def preprocess_photometry(raw: RawArtifact, deredden: bool = True,
                          bands: tuple[str, ...] = PHOTOMETRIC_BANDS) -> Features:
    """Cleaned, dereddened magnitudes with masks, colours and absolute G, with labels; poor rows quarantined.

    `bands` chooses the band set (in the archive's order); colours are made only between chosen bands.
    """
    bands = select_bands(bands)
    data = raw.data
    ids = np.array(data.column("id").to_pylist(), dtype=object)
    sources = data.column("source").to_pylist()
    catalogue = {name: data.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                 for name in data.column_names if name not in ("id", "source")}
    made = photometry_columns(catalogue, bands, deredden)
    quarantine = Quarantine("preprocess.photometry")
    for row, reason in made.too_poor.items():
        quarantine.add(ids[row], reason, sources[row])
    kept = np.ones(data.num_rows, dtype=bool)
    kept[list(made.too_poor)] = False
    numeric = made.numeric
    colours = [name for name in numeric if name.startswith("c_")]
    kept_ids = list(ids[kept])
    table = pa.table({
        "id": pa.array(kept_ids, pa.string()),
        **{name: pa.array(values[kept], pa.float64()) for name, values in numeric.items()},
        **{name: pa.array(values[kept], pa.uint8()) for name, values in made.flags().items()},
        **label_columns(kept_ids, raw.labels, STELLAR_LABELS_SCHEMA),
    })
    spec = {
        "modality": "photometry",
        "bands": list(bands),
        "features": [*numeric, *(f"saturated_{band}" for band in bands), "dereddened"],
        "colours": colours,
        "labels": list(LABELS),
        "mask_bits": MASK_BITS,
        "dereddened": deredden,
        "dereddened_column": "dereddened: 1 where magnitudes were corrected with the row's E(B-V), 0 where E(B-V) "
                             "is unknown (or --no-deredden) and magnitudes are as observed",
        "saturation_limits": {band: BANDS[band].saturation for band in bands},
        "faintest_magnitudes": {band: BANDS[band].faintest for band in bands},
        "gaia_saturation_correction": "Gaia EDR3 documentation 5.5.2 (Riello et al. 2021), within its valid ranges",
        "min_usable_bands": MIN_USABLE_BANDS,
        "extinction_coefficients": {band: BANDS[band].extinction for band in bands},
        "missing": "NaN in mag_*, err_*, colours and abs_G; the reason in mask_<band>",
    }
    return Features(table=table, spec=spec, quarantine=quarantine, objects_in=data.num_rows,
                    parameters={"modality": "photometry", "deredden": deredden, "bands": list(bands)})
