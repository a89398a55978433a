"""The raw artifact's tables: file names, exact column schemas, and the archives' flag conventions.

Every source (the synthetic one and the archive connectors) writes these schemas, and preprocessing reads only
these, so a new source needs no change downstream. The flag bits are the archives' own, so a replayed SDSS or
Kepler file and a synthetic one are flagged alike.
"""

from __future__ import annotations

import pyarrow as pa


LABELS_FILE = "labels.parquet"
DATA_FILES = {"spectra": "spectra.parquet", "photometry": "photometry.parquet", "lightcurves": "lightcurves.parquet"}

# Gaia, 2MASS and AllWISE bands, in wavelength order (their passbands are in steps.ingest.bands).
PHOTOMETRIC_BANDS = ("G", "BP", "RP", "J", "H", "Ks", "W1", "W2")

SPECTRA_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("loglam", pa.list_(pa.float64())),   # log10 of vacuum wavelength in Angstrom, observed frame
    ("flux", pa.list_(pa.float32())),     # 1e-17 erg/s/cm^2/A, as SDSS
    ("ivar", pa.list_(pa.float32())),     # inverse variance of flux; 0 where the pixel carries no information
    ("and_mask", pa.list_(pa.int32())),   # SDSS pixel mask bits (SDSS_PIXEL_BITS), ANDed over exposures
    ("z", pa.float64()),                  # heliocentric redshift (radial velocity / c for stars)
    ("source", pa.string()),
])

PHOTOMETRY_SCHEMA = pa.schema(
    [("id", pa.string())]
    + [field for band in PHOTOMETRIC_BANDS
       for field in ((f"mag_{band}", pa.float64()), (f"err_{band}", pa.float64()))]  # Vega mag; NaN if missing
    + [("parallax", pa.float64()), ("parallax_error", pa.float64()),   # mas
       ("ebv", pa.float64()),                                            # E(B-V) along the line of sight, mag
       ("source", pa.string())])

LIGHTCURVES_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("time", pa.list_(pa.float64())),      # days: BKJD for Kepler, BTJD for TESS, MJD for ground-based surveys
    ("flux", pa.list_(pa.float32())),      # relative flux, median near 1 in each band; NaN where no measurement
    ("flux_err", pa.list_(pa.float32())),
    ("quality", pa.list_(pa.int32())),     # Kepler quality bits (KEPLER_QUALITY_BITS); 0 = good
    ("band", pa.list_(pa.string())),       # passband of each cadence: KEPLER_BAND, TESS_BAND or a survey band
    ("source", pa.string()),
])

STELLAR_LABELS_SCHEMA = pa.schema([("id", pa.string()), ("teff", pa.float64()), ("logg", pa.float64()),
                                   ("feh", pa.float64())])
LIGHTCURVE_LABELS_SCHEMA = pa.schema([("id", pa.string()), ("class", pa.string()), ("period", pa.float64())])
# What a star's label can be (wide: white dwarfs, O stars, the most metal-poor stars known): a value outside is a typo
# or a placeholder of the source's, and is left blank at ingest rather than trained on.
LABEL_LIMITS = {"teff": (1000.0, 100000.0, "K"), "logg": (-1.0, 10.0, "dex"), "feh": (-6.0, 2.0, "dex")}

DATA_SCHEMAS = {"spectra": SPECTRA_SCHEMA, "photometry": PHOTOMETRY_SCHEMA, "lightcurves": LIGHTCURVES_SCHEMA}
LABEL_SCHEMAS = {"spectra": STELLAR_LABELS_SCHEMA, "photometry": STELLAR_LABELS_SCHEMA,
                 "lightcurves": LIGHTCURVE_LABELS_SCHEMA}

# Light-curve passbands. Space photometry has one band per mission; a ground-based survey's epochs carry the band
# they were taken in (SDSS ugriz for Stripe 82), and their magnitudes are stored as relative flux per band,
# 10**(-0.4 * (m - median m of the band)), so that every source shares one flux convention.
KEPLER_BAND = "Kepler"
TESS_BAND = "TESS"
SDSS_BANDS = ("u", "g", "r", "i", "z")

# Classes of the synthetic source (the labelled archives' own are read with their files: `lightcurve_files`).
LIGHTCURVE_CLASSES = ("eclipsing_binary", "pulsator", "quiet", "rotator", "transit")

# SDSS spectroscopic pixel mask (SPPIXMASK) bits, as found in `and_mask`: bits 0-12 describe the fibre,
# 16 and up the pixel.
SDSS_PIXEL_BITS = {
    "NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4, "MANYREJECTED": 5,
    "LARGESHIFT": 6, "BADSKYFIBER": 7, "NEARWHOPPER": 8, "WHOPPER": 9, "SMEARIMAGE": 10, "SMEARHIGHSN": 11,
    "SMEARMEDSN": 12,
    "NEARBADPIXEL": 16, "LOWFLAT": 17, "FULLREJECT": 18, "PARTIALREJECT": 19, "SCATTEREDLIGHT": 20,
    "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23, "NODATA": 24, "COMBINEREJ": 25, "BADFLUXFACTOR": 26,
    "BADSKYCHI": 27, "REDMONSTER": 28,
}

# Kepler pipeline quality flags (values as in lightkurve's KeplerQualityFlags) that the synthetic source sets.
KEPLER_QUALITY_BITS = {"CoarsePoint": 4, "Desat": 32, "Argabrightening": 64, "ApertureCosmic": 128,
                       "ImpulsiveOutlier": 2048}
# Kepler flags that mark no fault of the cadence's flux (lightkurve leaves them in even with its "hard" bitmask):
# preprocessing keeps cadences that carry only these, and drops a cadence with any other flag.
KEPLER_BENIGN_QUALITY_BITS = {"ZeroCrossing": 16, "NoFinePoint": 32768, "RollingBandInAperture": 131072,
                              "RollingBandInMask": 262144}
