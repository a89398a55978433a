"""The light-curve folder reader: archive files of Kepler/TESS and of ground-based surveys, replayed from a folder.

A folder (a local path or an `s3://bucket/prefix`) is searched recursively, and every file is recognised by what it
is, one reader per format, all funnelling into one kind of record (`Curve`) and so into the raw schema:

- Kepler and TESS light-curve FITS as the archives serve them (`kplr*_llc.fits`, `tess*_lc.fits`, or any file that
  lightkurve recognises as a Kepler or TESS light curve): PDCSAP flux and its error, the quality flags, time in
  BKJD/BTJD. The id is `kplr<KIC, 9 digits>` or `tic<TIC>` (from KEPLERID/TICID, else the OBJECT keyword). Several
  files of one star (quarters, sectors) make one curve, each normalised by its own median.
- The JSON-lines export of Kepler light curves (one object per line: `time`, `flux` with NaNs, a `kplr<KIC>` name
  or a `kepid`, and a `label` of eb / conf / fp). It carries no flux errors; each curve's error is estimated from
  its point-to-point scatter.
- The SDSS Stripe 82 RR Lyrae tables (Sesar et al. 2010, as astroML ships them): `table1.tar.gz` holds one file
  (`<id>.dat`, read also where the archive was extracted) per star of ugriz epochs (RA, Dec, then MJD, magnitude,
  error per band; -99.99 or 99.99 for no measurement),
  `table2.dat.gz` the type (ab, c) and period. Magnitudes become relative flux per band,
  10**(-0.4 (m - median m of the band)), with the error propagated.

Labels: the JSON `label` (eb: `eclipsing_binary`, conf: `transit`, a confirmed planet; fp: `false_positive`); the
RR Lyrae type (`RRab`, `RRc`) and period; for Kepler curves without a label of their own, a KOI table
(`koi_cumulative*.csv`, the NASA Exoplanet Archive export) in the folder gives the disposition (CONFIRMED:
`transit`, FALSE POSITIVE: `false_positive`, a CANDIDATE stays unlabelled) and, for any Kepler curve, the period of
the star's first KOI (`.01`, the first signal found). A `labels.csv` (id, class, period) may label any curve.
A missing label value is no fault: the curve is kept with a null label.

Quarantined, with the reason: files that cannot be read (truncated or not light curves), curves with no valid
cadence, label rows (RR Lyrae table 2, labels.csv) naming no light curve of the folder, and repeated records of a
curve already read (kept once; unlabelled when the records' labels disagree). The KOI table is a catalogue of the
whole mission, so its rows for stars not in the folder are not faults.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from steps.core.logs import get_logger
from steps.core.quarantine import LABEL_ROW, Quarantine
from steps.core.statistics import robust_sigma
from steps.core.storage import local_folder, shown_path
from steps.ingest.schemas import (KEPLER_BAND, LIGHTCURVE_LABELS_SCHEMA, LIGHTCURVES_SCHEMA, SDSS_BANDS,
                                  TESS_BAND)
from steps.ingest.tables import list_column

if TYPE_CHECKING:
    from steps.ingest.sources import IngestRequest, Ingested

log = get_logger("ingest.lightcurves")

JSON_LABELS = {"eb": "eclipsing_binary", "conf": "transit", "fp": "false_positive"}
KOI_DISPOSITIONS = {"CONFIRMED": "transit", "FALSE POSITIVE": "false_positive"}
RR_LYRAE_TYPES = {"ab": "RRab", "c": "RRc"}
STRIPE82_PREFIX = "S82-RRL-"
# Stripe 82 table 1 writes -99.99 (and 99.9x with error 99.999) where a band has no measurement.
MAGNITUDE_RANGE = (0.0, 40.0)
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


class UnreadableFile(ValueError):
    """A file that should hold light curves but cannot be read as one; the message says why."""


@dataclass
class Curve:
    """One object's light curve in the raw schema's terms, with its label (None where unknown) and where it came
    from (`origin`: the file, and line or member, for quarantine messages)."""

    id: str
    time: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    quality: np.ndarray
    band: np.ndarray
    source: str
    origin: str
    label: str | None = None
    period: float | None = None

    def valid_cadences(self) -> int:
        """Cadences with a finite time, flux and error and no quality flag."""
        return int(np.count_nonzero(np.isfinite(self.time) & np.isfinite(self.flux) & np.isfinite(self.flux_err)
                                    & (self.quality == 0)))


@dataclass
class FolderContents:
    """What the readers found: curves in reading order, label rows by id, and what had to be set aside."""

    curves: list[Curve] = field(default_factory=list)
    labels: dict[str, tuple[str | None, float | None, str]] = field(default_factory=dict)  # id: class, period, origin
    koi: dict[str, tuple[str | None, float | None]] = field(default_factory=dict)       # kplr id: class, period
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)                 # id, reason, origin


def relative_flux_from_magnitudes(magnitude: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes of one band as flux relative to the band's median, 10**(-0.4 (m - median m)), and the flux error
    (|d flux / d m| times the magnitude error: flux * ln(10) / 2.5 * error)."""
    flux = 10 ** (-0.4 * (magnitude - np.median(magnitude)))
    return flux, flux * np.log(10) / 2.5 * error


def point_to_point_scatter(flux: np.ndarray) -> float:
    """The white-noise level of a densely sampled curve, from successive differences (robust: 1.4826 MAD / sqrt 2),
    which slow variability and transits barely touch."""
    return robust_sigma(np.diff(flux[np.isfinite(flux)])) / math.sqrt(2)


def kepler_id(kic: int | str) -> str:
    """The id of a Kepler target: `kplr` and its KIC number in nine digits, as the archive names its files."""
    return f"kplr{int(kic):09d}"


# FITS light curves (Kepler, TESS)

def import_lightkurve():
    """lightkurve, imported where it is needed (it costs seconds) and without its warning that an optional
    submodule (pixel-level PRF models, which this project does not use) lacks the `oktopus` package."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tpfmodel submodule is not available", category=UserWarning)
        import lightkurve
    return lightkurve


def read_fits_curve(data: bytes, origin: str) -> Curve:
    """A Kepler or TESS light-curve file (bytes), read by lightkurve with no cadence masked, flux normalised by its
    median. Raises `UnreadableFile` for truncated files and FITS files that are not such light curves."""
    lightkurve = import_lightkurve()  # only FITS folders need it
    from astropy.io import fits
    from lightkurve.io.detect import detect_filetype

    with tempfile.NamedTemporaryFile(suffix=".fits") as handle:
        handle.write(data)
        handle.flush()
        try:
            with fits.open(handle.name, memmap=False) as hdus:
                hdus.verify("exception")
                header = hdus[0].header.copy()
                for hdu in hdus:
                    _ = hdu.data   # forces reading every unit, which fails on a truncated file
                kind = detect_filetype(hdus) if len(hdus) > 1 and hasattr(hdus[1], "columns") else None
        except Exception as error:   # astropy raises OSError, ValueError, VerifyError, TypeError, IndexError...
            raise UnreadableFile(f"unreadable FITS: {type(error).__name__}: {error}") from None
        if kind not in ("KeplerLightCurve", "TessLightCurve"):
            raise UnreadableFile(f"not a Kepler or TESS light-curve file (lightkurve sees {kind or 'an unknown kind'})")
        try:
            lc = lightkurve.read(handle.name, quality_bitmask="none")
        except Exception as error:
            raise UnreadableFile(f"lightkurve cannot read it: {type(error).__name__}: {error}") from None
    band = KEPLER_BAND if kind == "KeplerLightCurve" else TESS_BAND
    curve_id = _fits_object_id(header, band)
    time = np.asarray(lc.time.value, dtype=np.float64)
    flux = _filled(lc.flux)
    flux_err = _filled(lc.flux_err)
    quality = np.asarray(lc.quality, dtype=np.int64).astype(np.int32)
    median = np.nanmedian(flux) if np.isfinite(flux).any() else np.nan
    if not np.isfinite(median) or median <= 0:
        flux = np.full(time.size, np.nan)
    else:
        flux, flux_err = flux / median, flux_err / median
    return Curve(curve_id, time, flux, flux_err, quality, np.full(time.size, band, dtype=object),
                 source=band.lower(), origin=origin)


def _filled(column) -> np.ndarray:
    """A lightkurve column (Quantity, maybe masked) as float64 with NaN where masked."""
    values = getattr(column, "value", column)
    return np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)


def _fits_object_id(header, band: str) -> str:
    """`kplr<KIC>` or `tic<TIC>` from the primary header (KEPLERID / TICID, else OBJECT such as 'KIC 1026032')."""
    number_key, prefix = ("KEPLERID", "kplr") if band == KEPLER_BAND else ("TICID", "tic")
    number = header.get(number_key)
    if number is None:
        match = re.search(r"(\d+)", str(header.get("OBJECT", "")))
        if match is None:
            raise UnreadableFile(f"no {number_key} or OBJECT in the primary header to name the target")
        number = match.group(1)
    return kepler_id(number) if prefix == "kplr" else f"tic{int(number)}"


def merge_segments(curves: list[Curve]) -> Curve:
    """Several files of one target (quarters or sectors, each already normalised) as one curve, in time order."""
    if len(curves) == 1:
        return curves[0]
    time = np.concatenate([curve.time for curve in curves])
    order = np.argsort(time, kind="stable")
    joined = {name: np.concatenate([getattr(curve, name) for curve in curves])[order]
              for name in ("flux", "flux_err", "quality", "band")}
    return replace(curves[0], time=time[order], origin=", ".join(curve.origin for curve in curves), **joined)


# The JSON-lines export

JSON_KINDS = {list: "array", int: "number", float: "number", str: "string", bool: "boolean", type(None): "null"}


def read_json_lines(text: str, origin: str) -> tuple[list[Curve], list[tuple[str, str, str]]]:
    """Kepler curves from a JSON-lines export (one light-curve object per line; a file that is one JSON document, an
    object or a list of objects, is read as those records), and (id, reason, origin) for records that cannot be
    used."""
    try:
        document = json.loads(text)
    except ValueError:  # JSON lines of more than one record, or a damaged line: read line by line
        records = [(f"{origin}:{number}", line) for number, line in enumerate(text.splitlines(), start=1)
                   if line.strip()]
    else:
        if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
            records = [(f"{origin}[{index}]", item) for index, item in enumerate(document)]
        else:
            records = [(origin, document)]
    curves, bad = [], []
    for where, record in records:
        try:
            if isinstance(record, str):
                record = json.loads(record)
            if not isinstance(record, dict):
                raise TypeError(f"a JSON {JSON_KINDS.get(type(record), 'value')}, not an object with kepid, time and "
                                "flux")
            curve_id = _json_object_id(record)
            time = np.asarray(record["time"], dtype=np.float64)
            flux = np.asarray(record["flux"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as error:
            bad.append((where, f"unreadable JSON light curve: {type(error).__name__}: {error}", where))
            continue
        if time.shape != flux.shape or time.ndim != 1:
            bad.append((curve_id, f"time and flux differ in shape ({time.shape} and {flux.shape})", where))
            continue
        finite = np.isfinite(flux) & np.isfinite(time)
        median = np.median(flux[finite]) if finite.any() else np.nan
        if finite.sum() < 3:
            bad.append((curve_id, f"only {finite.sum()} of its {flux.size} points have a finite time and flux: too "
                                  "few to estimate its noise from", where))
            continue
        if not median > 0:
            bad.append((curve_id, f"its median flux is {median:g}: a star's flux is positive", where))
            continue
        relative = flux / median
        scatter = point_to_point_scatter(relative)
        if not scatter > 0:
            bad.append((curve_id, "its flux does not change from one point to the next: no noise to estimate its "
                                  "errors from (not a measured light curve)", where))
            continue
        error = np.full(flux.size, scatter)
        label = record.get("label")
        curves.append(Curve(curve_id, time, relative, error, np.zeros(time.size, np.int32),
                            np.full(time.size, KEPLER_BAND, dtype=object), source="kepler", origin=where,
                            label=_json_label(label, curve_id, where)))
    return curves, bad


def _json_object_id(record: dict) -> str:
    """`kplr<KIC>` from the record's `kepid`, else from its archive file name (`kplr001026032-2013131215648_llc`)."""
    if record.get("kepid") is not None:
        return kepler_id(record["kepid"])
    match = re.match(r"kplr(\d+)", str(record.get("name", "")))
    if match is None:
        raise KeyError("neither kepid nor a kplr<KIC> name")
    return kepler_id(match.group(1))


def _json_label(value: object, curve_id: str, where: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in JSON_LABELS:
        log.warning("%s (%s): unknown label %r, kept unlabelled (known: %s)", curve_id, where, value,
                    ", ".join(JSON_LABELS))
        return None
    return JSON_LABELS[value]


# The Stripe 82 RR Lyrae tables

def read_stripe82_star(text: str, star: str, origin: str) -> Curve:
    """One star's file of table 1: per epoch RA, Dec, then (MJD, mag, error) for u, g, r, i, z."""
    if not text.strip():  # NumPy reads it as one empty column, with a warning on stderr
        raise UnreadableFile("an empty epoch table: no epoch of the star")
    try:
        table = np.loadtxt(io.StringIO(text), ndmin=2)
    except ValueError as error:  # NumPy's advice on `usecols` is for its caller, not for the file's owner
        reason = str(error).split("; use `usecols`")[0]
        raise UnreadableFile(f"unreadable Stripe 82 epoch table: {reason}") from None
    if table.shape[1] != 2 + 3 * len(SDSS_BANDS):
        raise UnreadableFile(f"{table.shape[1]} columns, not RA, Dec and (MJD, mag, err) for each of ugriz")
    parts = []
    for index, band in enumerate(SDSS_BANDS):
        time, magnitude, error = table[:, 2 + 3 * index], table[:, 3 + 3 * index], table[:, 4 + 3 * index]
        measured = ((magnitude > MAGNITUDE_RANGE[0]) & (magnitude < MAGNITUDE_RANGE[1]) & (error > 0)
                    & (error < 10) & np.isfinite(time))
        if measured.any():
            flux, flux_err = relative_flux_from_magnitudes(magnitude[measured], error[measured])
            parts.append((time[measured], flux, flux_err, np.full(measured.sum(), band, dtype=object)))
    if not parts:
        raise UnreadableFile(f"none of its {len(table)} epochs has, in any of ugriz, a finite time and a magnitude "
                             f"above {MAGNITUDE_RANGE[0]:g} and below {MAGNITUDE_RANGE[1]:g} with an error above 0 and "
                             "below 10 mag")
    time, flux, flux_err, bands = (np.concatenate([part[column] for part in parts]) for column in range(4))
    order = np.argsort(time, kind="stable")
    return Curve(STRIPE82_PREFIX + star, time[order], flux[order], flux_err[order],
                 np.zeros(time.size, np.int32), bands[order].astype(object), source="sdss-stripe82", origin=origin)


def read_stripe82_table1(data: bytes, origin: str) -> tuple[list[Curve], list[tuple[str, str, str]]]:
    """Every star file (`<id>.dat`) in the table 1 archive, and the members that cannot be read."""
    curves, bad = [], []
    try:  # as a stream, in the archive's order: an archive cut short keeps the members before the cut
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as archive:
            for member in archive:
                if not (member.isfile() and re.fullmatch(r"\d+\.dat", Path(member.name).name)):
                    continue
                star = Path(member.name).stem
                where = f"{origin}:{member.name}"
                try:
                    text = archive.extractfile(member).read().decode()
                except UnicodeDecodeError as error:
                    bad.append((STRIPE82_PREFIX + star, str(error), where))
                    continue
                try:
                    curves.append(read_stripe82_star(text, star, where))
                except UnreadableFile as error:
                    bad.append((STRIPE82_PREFIX + star, str(error), where))
    except (tarfile.TarError, OSError, EOFError) as error:
        kept = f" after {len(curves)} readable star files, which are kept" if curves else ""
        bad.append((origin, f"unreadable archive{kept}: {type(error).__name__}: {error}", origin))
    return sorted(curves, key=lambda curve: curve.id), bad


def read_stripe82_table2(text: str, origin: str) -> dict[str, tuple[str | None, float | None, str]]:
    """Labels of table 2 (`#id type P ...`): RRab / RRc and the period, by curve id."""
    labels = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or line.startswith("#"):
            continue
        kind = RR_LYRAE_TYPES.get(fields[1]) if len(fields) > 1 else None
        period = _positive_float(fields[2]) if len(fields) > 2 else None
        labels[STRIPE82_PREFIX + fields[0]] = (kind, period, f"{origin}:{number}")
    return labels


def _positive_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) and value > 0 else None


# Label tables

def read_koi_table(text: str) -> dict[str, tuple[str | None, float | None]]:
    """Per Kepler target in a KOI table: the class its first KOI's disposition gives and that KOI's period."""
    rows = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
    first: dict[str, dict] = {}
    for row in rows:
        if not row.get("kepid"):
            continue
        curve_id = kepler_id(row["kepid"])
        if curve_id not in first or row.get("kepoi_name", "") < first[curve_id].get("kepoi_name", ""):
            first[curve_id] = row
    return {curve_id: (KOI_DISPOSITIONS.get(row.get("koi_disposition", "")),
                       _positive_float(row.get("koi_period", "")))
            for curve_id, row in first.items()}


def read_labels_csv(text: str, origin: str) -> dict[str, tuple[str | None, float | None, str]]:
    """A `labels.csv` (id, class, period; class or period may be empty) by id."""
    labels = {}
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        if row.get("id"):
            labels[row["id"].strip()] = (row.get("class") or None, _positive_float(row.get("period") or ""),
                                         f"{origin}:{number}")
    return labels


# The folder

def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") and not path.name.endswith(".tar.gz") else data


def scan_folder(folder: Path) -> FolderContents:
    """Read every file of `folder` (recursively, in sorted order) that one of the readers recognises."""
    contents = FolderContents()
    fits_by_id: dict[str, list[Curve]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name, where = path.name.lower(), shown_path(path, folder)
        try:
            if name.endswith(FITS_SUFFIXES):
                curve = read_fits_curve(_read_bytes(path), where)
                fits_by_id.setdefault(curve.id, []).append(curve)
            elif name.endswith(JSON_SUFFIXES):
                curves, bad = read_json_lines(_read_bytes(path).decode(), where)
                contents.curves += curves
                contents.quarantine += bad
            elif re.fullmatch(r"table1\.tar(\.gz)?", name):
                curves, bad = read_stripe82_table1(path.read_bytes(), where)
                contents.curves += curves
                contents.quarantine += bad
            elif re.fullmatch(r"\d+\.dat", name):  # a star's file of table 1, extracted from the archive
                try:
                    contents.curves.append(read_stripe82_star(path.read_text(), path.stem, where))
                except (UnreadableFile, UnicodeDecodeError) as error:
                    contents.quarantine.append((STRIPE82_PREFIX + path.stem, f"{where}: {error}", where))
            elif re.fullmatch(r"table2\.dat(\.gz)?", name):
                contents.labels.update(read_stripe82_table2(_read_bytes(path).decode(), where))
            elif name.startswith("koi") and name.endswith((".csv", ".csv.gz")):
                contents.koi.update(read_koi_table(_read_bytes(path).decode()))
            elif name == "labels.csv":
                contents.labels.update(read_labels_csv(path.read_text(), where))
            else:
                log.debug("%s: not a light-curve format, skipped", where)
        except UnreadableFile as error:
            contents.quarantine.append((where, str(error), where))
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as error:
            contents.quarantine.append((where, f"unreadable: {type(error).__name__}: {error}", where))
    contents.curves += [merge_segments(curves) for curves in fits_by_id.values()]
    return contents


def assemble(contents: FolderContents) -> tuple[list[Curve], list[tuple[str, str, str]]]:
    """Curves ready for the raw tables (labels attached, repeats resolved, unusable ones set aside) and the
    quarantine rows (id, reason, origin)."""
    quarantine = list(contents.quarantine)
    kept: dict[str, Curve] = {}
    contradicted: set[str] = set()
    for curve in contents.curves:
        if curve.id in kept:
            first = kept[curve.id]
            if first.label != curve.label:
                quarantine.append((curve.id, f"repeated record with label {curve.label!r}, which contradicts "
                                             f"{first.label!r} in {first.origin}: the curve is kept once, unlabelled",
                                   curve.origin))
                first.label = None
                contradicted.add(curve.id)
            else:
                quarantine.append((curve.id, f"repeated record of the curve in {first.origin}: kept once",
                                   curve.origin))
        elif curve.valid_cadences() == 0:
            quarantine.append((curve.id, f"no valid cadence: none of its {curve.time.size} has a finite time, flux "
                                         f"and error without a quality flag", curve.origin))
        else:
            kept[curve.id] = curve
    quarantined = {row[0] for row in quarantine}
    for curve_id, (label, period, origin) in contents.labels.items():
        if curve_id in kept:
            curve = kept[curve_id]
            curve.label = label if label is not None else curve.label
            curve.period = period if period is not None else curve.period
        elif curve_id not in quarantined:
            quarantine.append((curve_id, f"{LABEL_ROW} names no light curve in the folder", origin))
    for curve_id, (label, period) in contents.koi.items():
        if curve_id in kept:
            curve = kept[curve_id]
            if curve.label is None and curve_id not in contradicted:
                curve.label = label
            curve.period = curve.period if curve.period is not None else period
    return sorted(kept.values(), key=lambda curve: curve.id), quarantine


def limit(curves: list[Curve], quarantine: list[tuple[str, str, str]],
          samples: int) -> tuple[list[Curve], list[tuple[str, str, str]]]:
    """The first `samples` curves by id (all for 0), and the quarantine rows that sort up to the last one kept
    (those met on the way to it), so that a sample's bad share is that of the records it drew from."""
    if not samples or len(curves) <= samples:
        return curves, quarantine
    curves = curves[:samples]
    return curves, [row for row in quarantine if row[0] <= curves[-1].id]


def curve_tables(curves: list[Curve]) -> tuple[pa.Table, pa.Table]:
    """The raw light-curve table and its labels (one row per curve; null label values where unknown)."""
    data = pa.table({
        "id": pa.array([curve.id for curve in curves], pa.string()),
        "time": list_column([curve.time for curve in curves], pa.float64()),
        "flux": list_column([curve.flux for curve in curves], pa.float32()),
        "flux_err": list_column([curve.flux_err for curve in curves], pa.float32()),
        "quality": list_column([curve.quality for curve in curves], pa.int32()),
        "band": list_column([curve.band for curve in curves], pa.string()),
        "source": pa.array([curve.source for curve in curves], pa.string()),
    }, schema=LIGHTCURVES_SCHEMA)
    labels = pa.Table.from_pylist([{"id": curve.id, "class": curve.label, "period": curve.period}
                                   for curve in curves], schema=LIGHTCURVE_LABELS_SCHEMA)
    return data, labels


def read_folder(folder: Path, samples: int = 0, shown_as: str | None = None) -> Ingested:
    """Every light curve the folder's files hold, at most `samples` of them (first by id; 0 = all); logs name the
    folder `shown_as` (by default its path)."""
    from steps.ingest.sources import Ingested   # here: sources imports the readers to register them

    curves, bad = limit(*assemble(scan_folder(folder)), samples)
    quarantine = Quarantine("ingest.lightcurves")
    for record_id, reason, origin in bad:
        quarantine.add(record_id, reason, origin)
    by_source: dict[str, int] = {}
    for curve in curves:
        by_source[curve.source] = by_source.get(curve.source, 0) + 1
    log.info("%s: %d light curves (%s), %d quarantined", shown_as or folder, len(curves),
             ", ".join(f"{source}: {count}" for source, count in sorted(by_source.items())) or "none",
             len(quarantine))
    data, labels = curve_tables(curves)
    return Ingested(data, labels, quarantine)


def read_lightcurve_folder(request: IngestRequest) -> Ingested:
    """The folder reader of the light-curve modality: Kepler/TESS FITS, Kepler JSON lines and Stripe 82 RR Lyrae
    tables in `request.location` (a path or s3:// prefix), at most `request.samples` curves (0 = all)."""
    if request.location is None:
        raise ValueError("read_lightcurve_folder needs request.location, the folder to replay")
    with local_folder(request.location) as folder:
        return read_folder(folder, request.samples, request.shown_as or request.location)
