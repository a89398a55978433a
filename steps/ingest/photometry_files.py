"""Photometric catalogues replayed from a folder (a local path or an `s3://` prefix), in the archives' own formats.

Files are recognised by name: VOTable (`.vot`, `.votable`, `.xml`), ECSV, CSV, FITS tables (`.fits`, `.fit`, also
gzipped), the Gaia archive's JSON (`{"metadata": [...], "data": [[...]]}`), and zip files of any of these (the
archive's DataLink bundles). Sub-folders are read too; other files (README, LICENSE) are passed over.

Columns are found by the archives' own names, case-insensitively, ignoring punctuation (`[Fe/H]` is `fe_h`) and
accepting a survey suffix as cross-matched tables add them (`source_id_gaiadr3`, `ph_qual_tmass`):
- Gaia DR3 G, BP, RP: `phot_<band>_mean_mag`, with the error 2.5/ln(10) / `phot_<band>_mean_flux_over_error`
  (or flux / flux_error) combined in quadrature with the band's zero-point uncertainty; VizieR's `Gmag`/`e_Gmag`.
- 2MASS J, H, Ks: `j_m`/`j_msigcom`, ... (Gaia archive, IRSA's `k_m`), VizieR's `Jmag`/`e_Jmag`, ...
- AllWISE W1, W2: `w1mpro` with `w1mpro_error` (Gaia archive) or `w1sigmpro` (IRSA), VizieR's `W1mag`/`e_W1mag`.
- parallax: Gaia's `parallax`/`parallax_error`, else VizieR's `Plx`/`e_Plx`, else Hipparcos (`parallax_hip`).
- the pipeline's own names, as the raw photometry table and the prediction API have them: `mag_<band>` with
  `err_<band>` (`mag_G`, `mag_Ks`, `mag_W1`, ...), `parallax`, `parallax_error`, `ebv`, `id`; any may be left out.
- id: the table's `id` where it has one, else a star name (`name`, `star`, `main_id`, `hip`), else the Gaia
  `source_id` (VizieR: `Source`).
- labels: reference Teff, log g, [Fe/H] (`teff`, `logg`, `fe_h`) where the table has them, else Gaia GSP-Phot
  (`teff_gspphot`, `logg_gspphot`, `mh_gspphot`), never a mix within one table; null where a value is missing.
- ebv: read from an `ebv` column where the table has one (no archive catalogue here gives it); NaN means
  "unknown", and preprocessing then leaves magnitudes as observed.

The catalogues' own quality flags, where the table has them, are applied in the raw schema's conventions (NaN
magnitude: no measurement; magnitude with NaN error: an upper limit or a value whose error cannot be trusted, which
preprocessing masks): 2MASS `ph_qual` X (no valid brightness) removes the magnitude, U/E/F (upper limit, poor fit,
no reliable error) its error, as does any `cc_flg` contamination; AllWISE `ph_qual` X removes the magnitude, U/Z
(upper limits) the error, as do the upper-case (likely spurious) `cc_flags` D, P, H, O.

Quarantined (`ingest.photometry`): unreadable files (truncated, corrupt), rows without an identifier, rows with
no band measured at all. Skipped with a logged note, not quarantined, because nothing in them is bad: tables
with no photometric column (the XP spectra and MCMC samples of a DataLink bundle), JSON that is not a table, and
rows repeating an id already read (the first reading is kept). A cell of a numeric column that is not a number
(`abc` in a CSV) is read as missing, that cell alone, with a warning naming it; a column named as the pipeline
names magnitudes for a band it does not read (`mag_V`) is ignored with a warning. A FITS file of several tables is
read from its first table with a band column.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from astropy.table import MaskedColumn, Table
from astropy.units import UnitsWarning

from steps.core.logs import get_logger
from steps.core.quarantine import Quarantine
from steps.core.storage import local_folder, shown_path
from steps.ingest.schemas import PHOTOMETRIC_BANDS, PHOTOMETRY_SCHEMA, STELLAR_LABELS_SCHEMA

if TYPE_CHECKING:
    from steps.ingest.sources import IngestRequest, Ingested

log = get_logger("ingest.photometry")

# File name endings and the reader of each (astropy's format names; json and zip are read here).
TABLE_FORMATS = {".fits.gz": "fits", ".fit.gz": "fits", ".votable": "votable", ".fits": "fits", ".fit": "fits",
                 ".vot": "votable", ".xml": "votable", ".ecsv": "ascii.ecsv", ".csv": "ascii.csv",
                 ".json": "json", ".zip": "zip"}

# Survey suffixes of cross-matched tables; "" is the bare column name.
GAIA = ("", "gaiadr3", "dr3", "gaia")
TMASS = ("", "tmass", "2mass")
WISE = ("", "allwise", "wise")
HIPPARCOS = ("hip", "hipparcos")

# Gaia DR3 photometric zero-point uncertainties, mag (Riello et al. 2021, A&A 649, A3; the archive's
# documentation adds them in quadrature to the flux term of a magnitude error).
GAIA_ZERO_POINT_ERRORS = {"G": 0.0027553202, "BP": 0.0027901700, "RP": 0.0037793818}

# A DataLink product file: `XP_SAMPLED-Gaia DR3 5937083312263887616.fits` and the like.
DATALINK_PRODUCT = re.compile(r"^(?P<product>[A-Z][A-Z_]+)-Gaia (?:E?DR\d)")


def normalise(name: str) -> str:
    """A column name as looked up: lower case, runs of other characters than letters and digits as one `_`."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


class Columns:
    """A table's columns by normalised name: numbers as float arrays (NaN where masked), text as stripped strings."""

    def __init__(self, table: Table):
        self.table = table
        self.rows = len(table)
        self._names: dict[str, str] = {}
        for name in table.colnames:
            self._names.setdefault(normalise(name), name)
        self.not_numbers: dict[str, list[tuple[int, str]]] = {}  # column -> (row, text) of cells read as missing

    def unknown_bands(self) -> list[str]:
        """Columns named as the pipeline names magnitudes and errors (`mag_V`, `err_u`, SDSS's `mag_g`) for a band
        it does not read: most likely a typo, or a band the models cannot use."""
        known = {f"{kind}_{band}" for band in PHOTOMETRIC_BANDS for kind in ("mag", "err")}
        return [name for name in self.table.colnames if name.startswith(("mag_", "err_")) and name not in known]

    def find(self, name: str, suffixes: Sequence[str] = ("",)) -> str | None:
        """The table's column called `name`, bare (suffix "") or with one of the survey `suffixes`, if any."""
        for suffix in suffixes:
            key = f"{name}_{suffix}" if suffix else name
            if key in self._names:
                return self._names[key]
        return None

    def floats(self, name: str, suffixes: Sequence[str] = ("",)) -> np.ndarray | None:
        """A numeric column as float64 with NaN where masked, or None when the table lacks it or it is not numeric."""
        column_name = self.find(name, suffixes)
        return None if column_name is None else self.column_floats(column_name)

    def column_floats(self, column_name: str) -> np.ndarray | None:
        """`floats` of the column called exactly `column_name`."""
        column = self.table[column_name]
        if column.ndim != 1:
            return None
        if column.dtype.kind in "USO":
            return self._parsed(column_name, self.column_texts(column_name))
        if column.dtype.kind not in "iuf":
            return None
        values = np.asarray(column, dtype=np.float64).copy()
        mask = np.ma.getmaskarray(column)
        values[mask] = np.nan
        return values

    def _parsed(self, column_name: str, texts: list[str | None]) -> np.ndarray:
        """The `texts` of a column of numbers read as text (a CSV column with one bad cell is) as floats: a cell that
        is not a number is missing, and noted in `not_numbers`."""
        values, bad = np.full(self.rows, np.nan), []
        for row, text in enumerate(texts):
            if text is None:
                continue
            try:
                values[row] = float(text)
            except ValueError:
                bad.append((row, text))
        if bad:
            self.not_numbers[column_name] = bad
        return values

    def texts(self, name: str, suffixes: Sequence[str] = ("",)) -> list[str | None] | None:
        """A column as stripped strings (integers without a decimal point), None where masked or empty."""
        column_name = self.find(name, suffixes)
        return None if column_name is None else self.column_texts(column_name)

    def column_texts(self, column_name: str) -> list[str | None]:
        """`texts` of the column called exactly `column_name`."""
        column = self.table[column_name]
        mask = np.ma.getmaskarray(column)
        texts: list[str | None] = []
        for value, masked in zip(np.asarray(column), mask):
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            text = "" if masked else (str(int(value)) if column.dtype.kind in "iu" else str(value).strip())
            texts.append(text or None)
        return texts


@dataclass(frozen=True)
class GaiaMeanPhotometry:
    """A Gaia band's mean magnitude; its error from the flux signal-to-noise and the zero-point uncertainty."""

    prefix: str                 # e.g. `phot_g_mean`
    zero_point_error: float     # mag

    def read(self, columns: Columns) -> tuple[np.ndarray, np.ndarray] | None:
        """(magnitudes, errors), or None when the table has no such magnitude column."""
        magnitudes = columns.floats(f"{self.prefix}_mag", GAIA)
        if magnitudes is None:
            return None
        over_error = columns.floats(f"{self.prefix}_flux_over_error", GAIA)
        if over_error is None:
            flux, flux_error = (columns.floats(f"{self.prefix}_{name}", GAIA) for name in ("flux", "flux_error"))
            with np.errstate(divide="ignore", invalid="ignore"):
                over_error = (flux / flux_error if flux is not None and flux_error is not None
                              else np.full(columns.rows, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            flux_term = np.where(over_error > 0, 2.5 / np.log(10) / over_error, np.nan)
        return magnitudes, np.hypot(flux_term, self.zero_point_error)


@dataclass(frozen=True)
class MeasuredColumn:
    """A value and its error under a catalogue's own column names (the first error column the table has)."""

    value: str
    errors: tuple[str, ...]
    suffixes: tuple[str, ...] = ("",)

    def read(self, columns: Columns) -> tuple[np.ndarray, np.ndarray] | None:
        """(values, errors; NaN where the table has no error column), or None when it lacks the value column."""
        values = self.floats(columns, self.value)
        if values is None:
            return None
        for error_name in self.errors:
            errors = self.floats(columns, error_name)
            if errors is not None:
                return values, errors
        return values, np.full(columns.rows, np.nan)

    def floats(self, columns: Columns, name: str) -> np.ndarray | None:
        """The column `name` as floats, found as `Columns.find` finds names (None: the table has none)."""
        return columns.floats(name, self.suffixes)


@dataclass(frozen=True)
class OwnColumn(MeasuredColumn):
    """A value and its error under the pipeline's own names, matched as written: `mag_G` is Gaia's G, while
    `mag_g` (SDSS g) is no band of the raw schema."""

    def floats(self, columns: Columns, name: str) -> np.ndarray | None:
        """The column called exactly `name` as floats (None: the table has none)."""
        return columns.column_floats(name) if name in columns.table.colnames else None


# Where each band may be found, in order of preference; a row takes the first with a finite magnitude. Last, the
# pipeline's own names (`mag_G`, `err_G`), the fields the prediction API takes.
BAND_COLUMNS: dict[str, tuple[GaiaMeanPhotometry | MeasuredColumn, ...]] = {
    "G": (GaiaMeanPhotometry("phot_g_mean", GAIA_ZERO_POINT_ERRORS["G"]), MeasuredColumn("gmag", ("e_gmag",))),
    "BP": (GaiaMeanPhotometry("phot_bp_mean", GAIA_ZERO_POINT_ERRORS["BP"]), MeasuredColumn("bpmag", ("e_bpmag",))),
    "RP": (GaiaMeanPhotometry("phot_rp_mean", GAIA_ZERO_POINT_ERRORS["RP"]), MeasuredColumn("rpmag", ("e_rpmag",))),
    "J": (MeasuredColumn("j_m", ("j_msigcom",), TMASS), MeasuredColumn("jmag", ("e_jmag",), TMASS)),
    "H": (MeasuredColumn("h_m", ("h_msigcom",), TMASS), MeasuredColumn("hmag", ("e_hmag",), TMASS)),
    "Ks": (MeasuredColumn("ks_m", ("ks_msigcom",), TMASS), MeasuredColumn("k_m", ("k_msigcom",), TMASS),
           MeasuredColumn("kmag", ("e_kmag",), TMASS), MeasuredColumn("ksmag", ("e_ksmag",), TMASS)),
    "W1": (MeasuredColumn("w1mpro", ("w1mpro_error", "w1sigmpro"), WISE), MeasuredColumn("w1mag", ("e_w1mag",), WISE)),
    "W2": (MeasuredColumn("w2mpro", ("w2mpro_error", "w2sigmpro"), WISE), MeasuredColumn("w2mag", ("e_w2mag",), WISE)),
}
BAND_COLUMNS = {band: (*candidates, OwnColumn(f"mag_{band}", (f"err_{band}",)))
                for band, candidates in BAND_COLUMNS.items()}
assert tuple(BAND_COLUMNS) == PHOTOMETRIC_BANDS, "band columns must follow the raw schema's band order"

PARALLAX_COLUMNS = (MeasuredColumn("parallax", ("parallax_error",), GAIA), MeasuredColumn("plx", ("e_plx",)))
HIPPARCOS_PARALLAX_COLUMNS = (MeasuredColumn("parallax", ("parallax_error", "e_parallax"), HIPPARCOS),)

ID_COLUMNS = (("id", ("",)), ("name", ("",)), ("star", ("",)), ("star_name", ("",)), ("main_id", ("",)),
              ("object", ("",)),
              ("hip", ("",)), ("source_id", GAIA), ("designation", GAIA),
              ("source", ("",)))                                   # VizieR's name for the Gaia source_id

# Label sets in order of preference: a table's labels all come from the first set it has any column of.
LABEL_SETS = (
    ("reference", {"teff": ("teff",), "logg": ("logg", "log_g"), "feh": ("fe_h", "feh")}),
    ("Gaia GSP-Phot", {"teff": ("teff_gspphot",), "logg": ("logg_gspphot",), "feh": ("mh_gspphot",)}),
)


@dataclass(frozen=True)
class QualityFlags:
    """A survey's per-band quality flag string (one character per band) and what its characters mean."""

    survey: str
    names: tuple[str, ...]
    suffixes: tuple[str, ...]
    bands: tuple[str | None, ...]   # the raw schema's band of each character; None for bands it does not keep
    no_measurement: str             # characters meaning no valid magnitude
    untrusted: str                  # characters meaning the magnitude's error cannot be trusted (or an upper limit)

    def read(self, columns: Columns) -> list[str | None] | None:
        """The flag strings, or None when the table has no such column with strings of this survey's width."""
        for name in self.names:
            texts = columns.texts(name, self.suffixes)
            if texts is not None and all(len(text) == len(self.bands) for text in texts if text):
                return texts
        return None


# 2MASS PSC (Explanatory Supplement IV.4.a, VI.3) and AllWISE (Explanatory Supplement II.2.a) flags.
QUALITY_FLAGS = (
    QualityFlags("2MASS ph_qual", ("ph_qual", "qflg"), TMASS, ("J", "H", "Ks"), "X", "UEF"),
    QualityFlags("2MASS cc_flg", ("cc_flg", "cflg"), TMASS, ("J", "H", "Ks"), "", "pcdsb"),
    QualityFlags("AllWISE ph_qual", ("ph_qual", "qph"), WISE, ("W1", "W2", None, None), "X", "UZ"),
    QualityFlags("AllWISE cc_flags", ("cc_flags", "ccf"), WISE, ("W1", "W2", None, None), "", "DPHO"),
)


class NotPhotometry(ValueError):
    """A readable table without any photometric column: nothing in it for this modality."""


class UnreadableFile(ValueError):
    """A file that should hold a table but cannot be read as one (truncated, corrupt)."""


@dataclass
class CatalogueRows:
    """One table mapped to the raw schemas: photometry rows and their labels, row for row."""

    data: pa.Table
    labels: pa.Table


def photometry_from_table(table: Table, source: str, quarantine: Quarantine) -> CatalogueRows:
    """Map one catalogue table onto the raw photometry and label schemas; bad rows go to `quarantine`.

    Raises `NotPhotometry` when the table has no column of any band (nothing in it is photometry).
    """
    columns = Columns(table)
    magnitudes, errors, found = {}, {}, False
    for band, candidates in BAND_COLUMNS.items():
        magnitudes[band], errors[band], band_found = _coalesce(columns, candidates)
        found |= band_found
    if not found:
        raise NotPhotometry("no photometric column (looked for Gaia, 2MASS and AllWISE magnitude names)")
    _apply_quality_flags(columns, magnitudes, errors, source)
    for name in columns.unknown_bands():
        log.warning("%s: column %s ignored: not a band the pipeline reads (%s)", source, name,
                    ", ".join(PHOTOMETRIC_BANDS))
    parallax, parallax_error, _ = _coalesce(columns, PARALLAX_COLUMNS)
    hipparcos, hipparcos_error, _ = _coalesce(columns, HIPPARCOS_PARALLAX_COLUMNS)
    from_hipparcos = ~np.isfinite(parallax) & np.isfinite(hipparcos)
    if from_hipparcos.any():
        parallax = np.where(from_hipparcos, hipparcos, parallax)
        parallax_error = np.where(from_hipparcos, hipparcos_error, parallax_error)
        log.info("%s: Hipparcos parallax for %d row(s) without a Gaia one", source, from_hipparcos.sum())
    ids = _identifiers(columns)
    labels = _labels(columns, source)
    ebv = columns.floats("ebv")
    ebv = np.full(columns.rows, np.nan) if ebv is None else ebv
    for name, cells in columns.not_numbers.items():
        shown = ", ".join(f"row {row + 1}: {text!r}" for row, text in cells[:3])
        log.warning("%s: %d value(s) of %s are not numbers and are read as missing (%s%s)", source, len(cells), name,
                    shown, ", ..." if len(cells) > 3 else "")

    measured = np.zeros(columns.rows, bool)
    for band in PHOTOMETRIC_BANDS:
        measured |= np.isfinite(magnitudes[band])
    keep = np.ones(columns.rows, bool)
    for row in range(columns.rows):
        if ids[row] is None:
            quarantine.add(f"{source}#{row}", "no identifier (no id, name, hip, source_id or designation)", source)
            keep[row] = False
        elif not measured[row]:
            quarantine.add(ids[row], f"no usable band: {', '.join(PHOTOMETRIC_BANDS)} all missing", source)
            keep[row] = False
    kept_ids = [object_id for object_id, kept in zip(ids, keep) if kept]
    data = pa.table({
        "id": pa.array(kept_ids, pa.string()),
        **{f"{kind}_{band}": pa.array(values[band][keep], pa.float64())
           for band in PHOTOMETRIC_BANDS for kind, values in (("mag", magnitudes), ("err", errors))},
        "parallax": pa.array(parallax[keep], pa.float64()),
        "parallax_error": pa.array(parallax_error[keep], pa.float64()),
        "ebv": pa.array(ebv[keep], pa.float64()),
        "source": pa.array([source] * len(kept_ids), pa.string()),
    }, schema=PHOTOMETRY_SCHEMA)
    label_table = pa.table({"id": pa.array(kept_ids, pa.string()),
                            **{name: pa.array(values[keep], pa.float64(), mask=~np.isfinite(values[keep]))
                               for name, values in labels.items()}}, schema=STELLAR_LABELS_SCHEMA)
    return CatalogueRows(data, label_table)


def _coalesce(columns: Columns, candidates: Sequence[GaiaMeanPhotometry | MeasuredColumn]
              ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per row, the value and error of the first candidate with a finite value; whether any candidate exists."""
    values, errors, found = np.full(columns.rows, np.nan), np.full(columns.rows, np.nan), False
    for candidate in candidates:
        read = candidate.read(columns)
        if read is None:
            continue
        found = True
        take = ~np.isfinite(values) & np.isfinite(read[0])
        values[take], errors[take] = read[0][take], read[1][take]
    return values, errors, found


def _apply_quality_flags(columns: Columns, magnitudes: dict[str, np.ndarray], errors: dict[str, np.ndarray],
                         source: str) -> None:
    """Apply the surveys' flag strings, where the table has them, in the raw schema's conventions (see module)."""
    for flags in QUALITY_FLAGS:
        texts = flags.read(columns)
        if texts is None:
            continue
        affected = []
        for position, band in enumerate(flags.bands):
            if band is None:
                continue
            codes = np.array([text[position] if text else "" for text in texts], dtype=object)
            no_measurement = np.isin(codes, list(flags.no_measurement)) & np.isfinite(magnitudes[band])
            untrusted = np.isin(codes, list(flags.untrusted)) & np.isfinite(errors[band])
            magnitudes[band][no_measurement] = np.nan
            errors[band][no_measurement | untrusted] = np.nan
            if no_measurement.any() or untrusted.any():
                affected.append(f"{band} {int(no_measurement.sum())} removed, {int(untrusted.sum())} untrusted")
        if affected:
            log.info("%s: %s flags applied: %s", source, flags.survey, "; ".join(affected))


def _identifiers(columns: Columns) -> list[str | None]:
    """Per row, the first identifier found among `ID_COLUMNS` (a star name before a Gaia source_id); a table with an
    `id` column, the pipeline's own layout, by that alone (its `source` is where a row came from, not an id)."""
    ids: list[str | None] = [None] * columns.rows
    for name, suffixes in ID_COLUMNS[:1] if columns.find("id") is not None else ID_COLUMNS:
        texts = columns.texts(name, suffixes)
        if texts is not None:
            ids = [current or text for current, text in zip(ids, texts)]
    return ids


def _labels(columns: Columns, source: str) -> dict[str, np.ndarray]:
    """Teff, log g, [Fe/H] from the first label set the table has (NaN where a value is missing)."""
    for origin, names in LABEL_SETS:
        found = {label: next((values for values in map(columns.floats, candidates) if values is not None), None)
                 for label, candidates in names.items()}
        if any(values is not None for values in found.values()):
            present = ", ".join(label for label, values in found.items() if values is not None)
            log.info("%s: labels (%s) from the %s columns", source, present, origin)
            return {label: values if values is not None else np.full(columns.rows, np.nan)
                    for label, values in found.items()}
    return {label: np.full(columns.rows, np.nan) for label in ("teff", "logg", "feh")}


def table_format(path: Path) -> str | None:
    """The reader for a file, by its name's ending (None: not a table file)."""
    name = path.name.lower()
    return next((kind for ending, kind in TABLE_FORMATS.items() if name.endswith(ending)), None)


def read_table(path: Path, kind: str) -> Table:
    """One table file as an astropy Table; `UnreadableFile` when it is truncated or corrupt, `NotPhotometry`
    for JSON that is not the archive's table layout."""
    if path.stat().st_size == 0:  # a download cut short, most often: quarantined as unreadable, named as what it is
        raise UnreadableFile("an empty file (0 bytes)")
    try:
        if kind == "json":
            return _read_archive_json(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnitsWarning)       # survey units astropy does not parse
            warnings.filterwarnings("ignore", message=r".*contains NULL \(undefined\) values")
            warnings.filterwarnings("error", message=r".*truncated")   # astropy only warns on a short FITS file
            if kind == "fits":
                return _read_fits_catalogue(path)
            # NASA archives' CSV files start with '#' comment lines, which astropy's CSV reader takes for data
            options = {"votable": {"use_names_over_ids": True}, "ascii.csv": {"comment": "#"}}.get(kind, {})
            table = Table.read(path, format=kind, **options)
            if kind.startswith("ascii") and kind != "ascii.ecsv":  # an ECSV declares its types; converters are ignored
                table = _ids_as_written(table, path, kind, options)
            return table
    except NotPhotometry:
        raise
    except Exception as error:
        raise UnreadableFile(f"unreadable {kind} file: {type(error).__name__}: {error}") from error


def _differing(first: dict, again: dict) -> str:
    """What a repeated reading of a star measures otherwise than its first ('mag_G 12 there, 12.5 here'), or "": a
    number that differs by more than 1e-6 of itself, or is missing in one reading only."""
    shown = []
    for column, value in first.items():
        other = again.get(column)
        if column in ("id", "source") or not isinstance(value, float) or not isinstance(other, float):
            continue
        if math.isnan(value) and math.isnan(other):
            continue
        if math.isnan(value) or math.isnan(other) or not math.isclose(value, other, rel_tol=1e-6, abs_tol=1e-9):
            shown.append(f"{column} {value:g} there, {other:g} here")
    return "; ".join(shown[:3]) + ("; ..." if len(shown) > 3 else "")


def _ids_as_written(table: Table, path: Path, kind: str, options: dict) -> Table:
    """`table`, read again with its identifier columns as text where the reader took them for numbers: a text
    table's ids are what it writes (0012 stays 0012, and a Gaia source_id keeps all 19 digits, which a float of the
    column loses when one cell is not an integer)."""
    from astropy.io.ascii import convert_numpy

    columns = Columns(table)
    numeric = {found for name, suffixes in ID_COLUMNS if (found := columns.find(name, suffixes)) is not None
               and table[found].dtype.kind in "iuf"}
    if not numeric:
        return table
    return Table.read(path, format=kind, converters={name: [convert_numpy(str)] for name in numeric}, **options)


def _read_fits_catalogue(path: Path) -> Table:
    """The table of a FITS file that holds photometry: its first table extension with a band column, read one at a
    time (a table that cannot be read is passed over while another can), else its first readable table. Naming the
    extension also spares the astropy warning that a multi-table file (an SDSS spec-*.fits: the spectrum, then its
    fits) would print once per file."""
    from astropy.io import fits

    with fits.open(path) as hdus:
        tables = [index for index, hdu in enumerate(hdus) if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU))]
    if not tables:
        raise NotPhotometry("a FITS file without a table (an image, or a 1-D spectrum)")
    if len(tables) < 2:
        return Table.read(path, format="fits", hdu=tables[0])
    first, failure = None, None
    for index in tables:
        try:
            table = Table.read(path, format="fits", hdu=index)
        except Exception as error:  # noqa: BLE001 - raised below if no other table can be read
            failure = failure or error
            continue
        if _has_band_column(table):
            return table
        first = table if first is None else first
    if first is None:
        raise failure
    return first


def _has_band_column(table: Table) -> bool:
    columns = Columns(table)
    return any(candidate.read(columns) is not None for candidates in BAND_COLUMNS.values() for candidate in candidates)


# VOTable datatypes of the Gaia archive's JSON output and the numpy types that hold them.
JSON_DTYPES = {"boolean": bool, "unsignedByte": np.int64, "short": np.int64, "int": np.int64, "long": np.int64,
               "float": np.float64, "double": np.float64, "char": str, "unicodeChar": str}


def _read_archive_json(path: Path) -> Table:
    """The Gaia archive's JSON output, `{"metadata": [{"name", "datatype", ...}], "data": [[row], ...]}`."""
    text = path.read_text()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        lines = [line for line in text.splitlines() if line.strip()]
        if error.msg == "Extra data" and len(lines) > 1 and _is_json(lines[0]):
            raise NotPhotometry(f"JSON lines ({len(lines)} documents, one a line: a light-curve export?), not the "
                                "archive's table layout") from None
        raise
    fields = document.get("metadata") if isinstance(document, dict) else None
    rows = document.get("data") if isinstance(document, dict) else None
    if not isinstance(fields, list) or not isinstance(rows, list):
        raise NotPhotometry("JSON without the archive's metadata/data table layout")
    table_columns = []
    for index, field in enumerate(fields):
        vector = field.get("arraysize") and field.get("datatype") not in ("char", "unicodeChar")
        dtype = object if vector else JSON_DTYPES.get(field.get("datatype"), object)
        values = [row[index] for row in rows]
        fill = "" if dtype is str else (0 if dtype is not object else None)
        table_columns.append(MaskedColumn([fill if value is None else value for value in values],
                                          name=field["name"], dtype=dtype, mask=[value is None for value in values]))
    return Table(table_columns)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class FolderReader:
    """Reads the tables of one folder in name order into the raw schemas, up to `limit` rows (0: all)."""

    def __init__(self, limit: int, quarantine: Quarantine):
        self.limit = limit
        self.quarantine = quarantine
        self.rows_read = 0
        self.first_seen: dict[str, str] = {}
        # id -> where its first reading is: (index in `data`, row in the table as read, row in `data`'s table)
        self.first_rows: dict[str, tuple[int, int, int]] = {}
        self.data: list[pa.Table] = []
        self.labels: list[pa.Table] = []
        self.skipped: list[str] = []  # "file: why" of the files read that hold no photometry
        self.table_files = 0  # table files found by `read_folder`

    @property
    def full(self) -> bool:
        """True once `limit` rows have been read."""
        return 0 < self.limit <= self.rows_read

    def read_folder(self, folder: Path, shown_as: str | None = None) -> None:
        """Every table file under `folder` (name order, sub-folders included), until full; logs name the folder
        `shown_as` (by default its path)."""
        files = sorted(path for path in folder.rglob("*") if path.is_file()
                       and not any(part.startswith(".") for part in path.relative_to(folder).parts))
        passed_over = [shown_path(path, folder) for path in files if table_format(path) is None]
        self.table_files += len(files) - len(passed_over)
        if passed_over:
            log.info("%s: passed over %d file(s) that are not tables: %s", shown_as or folder, len(passed_over),
                     ", ".join(passed_over))
        for path in files:
            if self.full:
                break
            if table_format(path) is not None:
                self.read_file(path, shown_path(path, folder))

    def read_file(self, path: Path, name: str) -> None:
        """One table file (or every table in a zip), quarantining it whole when it cannot be read."""
        kind = table_format(path)
        if kind == "zip":
            self._read_zip(path, name)
            return
        try:
            table = read_table(path, kind)
        except UnreadableFile as error:
            log.warning("%s: quarantined: %s", name, error)
            self.quarantine.add(name, str(error), name)
            return
        except NotPhotometry as error:
            log.info("%s: skipped, not photometry: %s", name, error)
            self.skipped.append(f"{name}: {error}")
            return
        self._add_table(table, name)

    def _read_zip(self, path: Path, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="photometry-zip-") as tmp:
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(tmp)
            except (zipfile.BadZipFile, EOFError, OSError) as error:
                log.warning("%s: quarantined: unreadable zip file: %s", name, error)
                self.quarantine.add(name, f"unreadable zip file: {type(error).__name__}: {error}", name)
                return
            for member in sorted(member for member in Path(tmp).rglob("*") if member.is_file()):
                if self.full:
                    break
                member_name = f"{name}/{shown_path(member, Path(tmp))}"
                if table_format(member) is None:
                    log.info("%s: skipped, not a table file", member_name)
                else:
                    self.read_file(member, member_name)

    def _add_table(self, table: Table, name: str) -> None:
        if self.limit:
            table = table[: self.limit - self.rows_read]
        self.rows_read += len(table)
        quarantined_before = len(self.quarantine)
        try:
            rows = photometry_from_table(table, name, self.quarantine)
        except NotPhotometry as error:
            product = DATALINK_PRODUCT.match(Path(name).name)
            what = f"a Gaia DataLink {product.group('product')} product, " if product else ""
            log.info("%s: skipped, %snot catalogue photometry: %s", name, what, error)
            self.skipped.append(f"{name}: {what}{error}")
            return
        ids = rows.data.column("id").to_pylist()
        fresh, conflicts, here, kept = [], 0, len(self.data), 0
        for row, object_id in enumerate(ids):
            fresh.append(object_id not in self.first_seen)
            if fresh[-1]:
                self.first_seen[object_id] = name
                self.first_rows[object_id] = (here, row, kept)
                kept += 1
                continue
            earlier, read_as, kept_as = self.first_rows[object_id]
            first = rows.data.slice(read_as, 1) if earlier == here else self.data[earlier].slice(kept_as, 1)
            differ = _differing(first.to_pylist()[0], rows.data.slice(row, 1).to_pylist()[0])
            if differ:
                conflicts += 1
                self.quarantine.add(object_id, f"repeats {object_id} of {self.first_seen[object_id]} with other "
                                               f"values ({differ}): the first reading is kept", name)
        repeated = len(ids) - sum(fresh)
        if repeated:
            earlier = sorted({self.first_seen[object_id] for object_id, new in zip(ids, fresh) if not new})
            log.log(logging.WARNING if conflicts else logging.INFO,
                    "%s: %d row(s) repeat ids already read from %s%s; kept the first reading", name, repeated,
                    ", ".join(earlier), f" ({conflicts} with other values: quarantined)" if conflicts else "")
        mask = pa.array(fresh, pa.bool_())
        self.data.append(rows.data.filter(mask))
        self.labels.append(rows.labels.filter(mask))
        log.info("%s: %d row(s) read, %d kept, %d repeated, %d quarantined", name, len(table), sum(fresh),
                 repeated, len(self.quarantine) - quarantined_before)

    def ingested(self) -> Ingested:
        """Everything read so far, as one source result."""
        from steps.ingest.sources import Ingested   # here: steps.ingest.sources imports this module to register it

        data = pa.concat_tables(self.data) if self.data else PHOTOMETRY_SCHEMA.empty_table()
        labels = pa.concat_tables(self.labels) if self.labels else STELLAR_LABELS_SCHEMA.empty_table()
        return Ingested(data.combine_chunks(), labels.combine_chunks(), self.quarantine)


def read_photometry_folder(request: IngestRequest) -> Ingested:
    """The folder reader of the photometry modality: every catalogue table under `request.location`."""
    if not request.location:
        raise ValueError("read_photometry_folder needs request.location, the folder to replay")
    reader = FolderReader(request.samples, Quarantine("ingest.photometry"))
    shown_as = request.shown_as or request.location
    with local_folder(request.location) as folder:
        reader.read_folder(folder, shown_as)
    if not reader.data and not len(reader.quarantine):
        found = (f"the {len(reader.skipped)} table file(s) in it hold none: " + "; ".join(reader.skipped[:3])
                 + ("; ..." if len(reader.skipped) > 3 else "")) if reader.skipped else (
            "it holds no table file (FITS, VOTable, ECSV, CSV, JSON or a zip of them)" if not reader.table_files
            else "")
        raise ValueError(f"{shown_as}: no photometry in it" + (f": {found}" if found else ""))
    return reader.ingested()
