"""Folder replay of spectra in the archives' own file formats, into the raw spectra schema.

A folder (a local path, or an `s3://` prefix copied to a temporary directory first) is walked recursively in
sorted order, and every FITS file in it (`.fits`, `.fit`, `.fts`, optionally gzipped) is recognised by its content:

- SDSS / BOSS `spec-PLATE-MJD-FIBER.fits` (SDSS-I/II ~3800-9200 A and BOSS ~3600-10400 A alike): HDU `COADD`
  holds flux, loglam, ivar and and_mask, HDU 2 (`SPECOBJ` or `SPALL`) the pipeline's Z, CLASS, PLATE, MJD, FIBERID.
  The id is `spec-PLATE-MJD-FIBER`.
- LAMOST low resolution (`spec-*.fits[.gz]`): a primary image whose rows are flux, ivar, wavelength, and-mask,
  or-mask, with Z in the header. LAMOST medium resolution (`med-*.fits[.gz]`): binary tables `COADD_B` and
  `COADD_R` (FLUX, IVAR, LOGLAM, ANDMASK, ORMASK), the two arms joined in wavelength order. The id is the file name
  without its extensions (LAMOST names are unique per spectrum).
- A *labelled spectral library*: 1-D FITS spectra whose header carries the wavelength solution (linear
  CRVAL1/CDELT1/CRPIX1, IRAF log-linear with DC-FLAG = 1, FITS `-LOG` axes, or log10 values in CRVAL1), beside a
  `labels.csv` in the same folder or one above. The column of `labels.csv` whose values appear in the file names
  (at character-class boundaries: `m0145` in `MILES_res2.50_star_m0145V.fits.gz`, not `m014`) is found by content,
  and teff/logg/feh are taken from the columns named so or by a common alias (`Teff`, `log g`, `[Fe/H]`, `FeH`...).
  A Teff whose leading digit overflowed into the spectral-type column before it is restored (`overflowed_teff`).
  The id is the label id found in the name (the file name when none is); the source is `<folder>-library`.
  Libraries carry no error array: each spectrum gets one inverse variance, from its DER_SNR noise estimate
  (Stoehr et al. 2008), and z = 0 (library spectra are published in the rest frame).

Every spectrum leaves here on the raw schema's terms: log10 of *vacuum* wavelengths in Angstrom in the observed
frame (air wavelengths are converted: a header saying VACUUM, AIRORVAC or CTYPE1 AWAV/WAVE decides, and a library
header saying nothing is taken as air, the convention of ground-based optical libraries such as MILES), float32
flux and ivar (ivar 0 where flux is not finite), SDSS pixel-mask bits (LAMOST bits mapped onto them; NODATA where
ivar is 0 in formats without SDSS bits), and z. Labels come from the library table or, for survey files, from
TEFF/LOGG/FEH header keywords where present (null otherwise; SDSS's ELODIE_* template values are not labels).

What cannot be used is quarantined with a reason, never silently dropped: unreadable or truncated files, layouts
that are none of the above, non-stellar survey classes, all-NaN or all-zero flux, zero ivar everywhere, duplicate
objects, and label rows that match no file. An unusable file is recorded under its library row's id where a
labels.csv names it, else under its name without extensions (`spec-0618-52049-0372`, the id a survey file gives)
where no other file of the folder has that name, else under its path; the reason names the file.
A file that matches no label row is kept with null labels.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from astropy.io import fits

from steps.core.logs import get_logger
from steps.core.quarantine import LABEL_ROW, Quarantine
from steps.core.storage import local_folder, shown_path
from steps.ingest.schemas import SDSS_PIXEL_BITS, SPECTRA_SCHEMA, STELLAR_LABELS_SCHEMA
from steps.ingest.tables import list_column

if TYPE_CHECKING:
    from steps.ingest.sources import IngestRequest, Ingested

log = get_logger("ingest.spectra")

SPEED_OF_LIGHT_KMS = 299792.458
FITS_SUFFIXES = (".fits", ".fit", ".fts")
LABELS_CSV = "labels.csv"
MILES_STAR = re.compile(r"star_(m\d{4})[A-Za-z]?$")  # MILES file names: MILES_res2.50_star_m0145V
LABELS = ("teff", "logg", "feh")
# Column names accepted for each label, compared after lower-casing and dropping all but letters, digits and '/':
# 'Teff' and 'T_eff' -> 'teff', '[Fe/H]' -> 'fe/h', 'Fe_H' -> 'feh', 'log g' and 'log(g)' -> 'logg'. In order of
# preference: [M/H] stands in for [Fe/H] only where a table has no [Fe/H].
LABEL_ALIASES = {"teff": ("teff", "teffk"), "logg": ("logg", "loggcgs"),
                 "feh": ("feh", "fe/h", "fehdex", "m/h", "mh", "metallicity")}
SPECTRAL_TYPE_ALIASES = ("sptype", "spectraltype", "spt", "spectype", "mktype")  # normalised as LABEL_ALIASES
# A table written with a 4-character Teff column pushes the leading digit of a Teff of 10,000 K or more into the end
# of the spectral-type column before it: MILES's labels.csv has "B2IV           2" and 1581 for HD 886, a B2 star of
# 21,581 K, and 43 more such rows, O, B and A stars and hot subdwarfs by their types. The digit is set off by two
# or more spaces, after a type of class O, B or A (an upper-case letter followed by a digit, a space or nothing;
# O may be written as a zero followed by its subclass, as in "07Ia"): "active  1" or "0  1" are no such overflow.
OVERFLOWED_TEFF = re.compile(r"^(?P<type>(?:[OBA](?=[\d\s.]|$)|0(?=\d))\S*(?:\s\S+)*)\s{2,}(?P<digits>\d)$")
# Catalogue values at or below this are the archives' "no value" sentinels (-999, -9999), not measurements.
MISSING_SENTINEL = -999.0
NODATA = 1 << SDSS_PIXEL_BITS["NODATA"]
# LAMOST pixel-mask bits (LAMOST data release documentation: BADCCD, BADPROFILE, NOSKY, BRIGHTSKY, BADCENTER,
# NODATA as bits 0-5) and the SDSS bits that mean the same for a pixel.
LAMOST_TO_SDSS_BITS = {0: "FULLREJECT", 1: "FULLREJECT", 2: "NOSKY", 3: "BRIGHTSKY", 4: "BADTRACE", 5: "NODATA"}
DER_SNR_SCALE = 1.482602 / np.sqrt(6.0)
# Wavelengths (A) a star's spectrum may span, far ultraviolet to mid-infrared: beyond, the wavelength solution is wrong.
WAVELENGTH_LIMITS = (900.0, 60000.0)
# The most a spectrum file may hold once decompressed: SDSS spec files with every exposure are a few MB.
MAX_SPECTRUM_FILE_BYTES = 64 * 2**20


class UnusableSpectrum(ValueError):
    """A file that yields no usable spectrum; the message is the quarantine reason."""


@dataclass
class Spectrum:
    """One spectrum on the raw schema's terms, with its labels (None where unknown)."""

    id: str
    loglam: np.ndarray          # float64, log10 vacuum Angstrom, observed frame, increasing
    flux: np.ndarray            # float32
    ivar: np.ndarray            # float32
    and_mask: np.ndarray        # int32, SDSS pixel bits
    z: float
    source: str
    labels: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(LABELS))


@dataclass(frozen=True)
class LibraryEntry:
    """What a spectral library's layout says about one of its files: source name, object id and labels."""

    source: str
    object_id: str
    labels: dict[str, float | None]


# Wavelengths

def air_to_vacuum(wavelength_air: np.ndarray) -> np.ndarray:
    """Vacuum wavelengths (Angstrom) of air wavelengths (Angstrom), valid above 2000 A.

    The refractive index is the IAU standard of Morton (2000, ApJS 130, 403; Edlen 1966 with Birch & Downs 1994),
    in the inverse form (a function of the air wavelength) of N. Piskunov used by VALD, which inverts Morton's
    vacuum-to-air formula to 1e-11 relative over 3000-10000 A.
    """
    wavenumber_squared = (1e4 / np.asarray(wavelength_air, np.float64)) ** 2
    index = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - wavenumber_squared)
             + 1.599740894897e-4 / (38.92568793293 - wavenumber_squared))
    return wavelength_air * index


def exact_log_grid(loglam: np.ndarray) -> np.ndarray:
    """A log-linear grid that an archive stored in float32, restored in float64.

    SDSS and LAMOST store log10 wavelengths of an exact log-linear grid in float32, which jitters pixel widths by
    up to a float32 rounding step (1% of a LAMOST medium-resolution pixel). When the stored values lie within two
    float32 rounding steps of a straight line in pixel index, the line is returned; otherwise the values as stored.
    """
    loglam = np.asarray(loglam, np.float64)
    if loglam.size < 3 or not np.isfinite(loglam).all():
        return loglam
    index = np.arange(loglam.size, dtype=np.float64)
    slope, intercept = np.polyfit(index, loglam, 1)
    line = intercept + slope * index
    tolerance = 2 * float(np.spacing(np.float32(np.max(np.abs(loglam)))))
    return line if np.max(np.abs(line - loglam)) <= tolerance else loglam


def _in_air(header: fits.Header, default: bool) -> bool:
    """Whether a header's wavelengths are in air: VACUUM, AIRORVAC, then CTYPE1 (AWAV air, WAVE vacuum) decide."""
    if "VACUUM" in header:
        return not bool(header["VACUUM"])
    medium = str(header.get("AIRORVAC", "")).strip().lower()
    if medium.startswith(("air", "vac")):
        return medium.startswith("air")
    axis = str(header.get("CTYPE1", "")).strip().upper()
    if axis.startswith(("AWAV", "WAVE")):
        return axis.startswith("AWAV")
    return default


def _vacuum_loglam(loglam: np.ndarray, header: fits.Header, default_air: bool) -> np.ndarray:
    """log10 vacuum wavelengths of log10 wavelengths in the medium the header states (or `default_air`)."""
    return np.log10(air_to_vacuum(10**loglam)) if _in_air(header, default_air) else loglam


UNIT_TO_ANGSTROM = {"angstrom": 1.0, "a": 1.0, "aa": 1.0, "nm": 10.0, "um": 1e4, "micron": 1e4, "m": 1e10}


def header_wavelengths(header: fits.Header, size: int) -> np.ndarray:
    """Wavelengths (Angstrom, as the header's medium has them) of the `size` pixels of a 1-D spectrum's axis 1.

    Linear: CRVAL1 + CDELT1 (or CD1_1) * (p - CRPIX1). Logarithmic: FITS `WAVE-LOG`/`AWAV-LOG` axes (Greisen et al.
    2006: CRVAL1 * exp(CDELT1 (p - CRPIX1) / CRVAL1)), IRAF DC-FLAG = 1 (log10 Angstrom), or, with no unit given,
    a CRVAL1 below 5 (no optical spectrum starts at 5 A, so it is log10 Angstrom).
    """
    try:
        reference = float(header["CRVAL1"])
        step = float(header["CDELT1"] if "CDELT1" in header else header["CD1_1"])
    except (KeyError, ValueError, TypeError) as error:
        raise UnusableSpectrum(f"1-D spectrum without a wavelength solution in its header ({error})") from None
    offset = np.arange(size, dtype=np.float64) + 1.0 - float(header.get("CRPIX1", 1.0))
    axis = str(header.get("CTYPE1", "")).strip().upper()
    unit = str(header.get("CUNIT1", "")).strip().lower()
    if unit and unit not in UNIT_TO_ANGSTROM:
        raise UnusableSpectrum(f"wavelength unit CUNIT1={header['CUNIT1']!r} is not one this reader knows")
    scale = UNIT_TO_ANGSTROM.get(unit, 1.0)
    if axis.endswith("-LOG"):
        return scale * reference * np.exp(step * offset / reference)
    if header.get("DC-FLAG") == 1 or (not unit and reference < 5.0):
        return 10 ** (reference + step * offset)
    return scale * (reference + step * offset)


# Noise and labels

def der_snr_ivar(flux: np.ndarray) -> np.ndarray:
    """One inverse variance for a spectrum without errors, from the DER_SNR noise (Stoehr et al. 2008).

    noise = 1.482602 / sqrt(6) * median |2 f_i - f_(i-2) - f_(i+2)| over the finite, non-zero pixels: the
    median absolute second difference, which a smooth stellar spectrum leaves to the pixel-to-pixel noise. The
    result is 1 / noise^2 at every finite pixel and 0 elsewhere, and 0 everywhere when no noise can be measured.
    """
    usable = flux[np.isfinite(flux) & (flux != 0)].astype(np.float64)
    if usable.size < 5:
        return np.zeros(flux.size, np.float32)
    noise = DER_SNR_SCALE * np.median(np.abs(2.0 * usable[2:-2] - usable[:-4] - usable[4:]))
    if not noise > 0:
        return np.zeros(flux.size, np.float32)
    return np.where(np.isfinite(flux), 1.0 / noise**2, 0.0).astype(np.float32)


def label_value(value: object) -> float | None:
    """A label as a float, or None where it is empty, not a number, not finite, or a "no value" sentinel."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if np.isfinite(number) and number > MISSING_SENTINEL else None


def overflowed_teff(spectral_type: str | None, teff: float | None) -> float | None:
    """The Teff a label row meant when its leading digit overflowed into the spectral type (`OVERFLOWED_TEFF`):
    "B2IV           2" and 1581 -> 21581.0; None when the row shows no such overflow."""
    match = OVERFLOWED_TEFF.match(str(spectral_type or "").strip())
    if match is None or teff is None or not 0 <= teff < 10000:
        return None
    return float(match["digits"]) * 10000 + teff


def _header_labels(header: fits.Header) -> dict[str, float | None]:
    """Stellar parameters a survey file's header states (TEFF, LOGG, FEH or FE_H), None where it states none."""
    keys = {"teff": ("TEFF",), "logg": ("LOGG",), "feh": ("FEH", "FE_H")}
    return {label: next((label_value(header[key]) for key in names if key in header), None)
            for label, names in keys.items()}


# Opening files

def gunzipped(data: bytes, limit: int = MAX_SPECTRUM_FILE_BYTES) -> bytes:
    """The decompressed bytes of a gzip stream (its members one after another), or UnusableSpectrum when it is
    corrupt, cut short, or would grow past `limit` bytes: a few hundred kilobytes of zeros can declare gigabytes,
    and a served API reads files that anyone sends."""
    out, rest = bytearray(), data
    while rest:
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += stream.decompress(rest, limit + 1 - len(out))
        except zlib.error as error:
            raise UnusableSpectrum(f"truncated or corrupt gzip stream: {error}") from None
        if len(out) > limit:
            raise UnusableSpectrum(f"more than {limit / 2**20:g} MiB once decompressed: not one spectrum's file")
        if not stream.eof:
            raise UnusableSpectrum("truncated or corrupt gzip stream: Compressed file ended before the end-of-stream "
                                   "marker was reached")
        rest = stream.unused_data.lstrip(b"\0")  # gzip allows padding between and after members
    return bytes(out)


def open_fits(data: bytes) -> fits.HDUList:
    """All HDUs of a FITS file's bytes (gzip or not), or UnusableSpectrum naming why they cannot be read.

    A file shorter than its headers promise is truncated; astropy only warns about that (and not at all inside a
    gzip stream), so the promised length is checked here.
    """
    if data[:2] == b"\x1f\x8b":
        data = gunzipped(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # truncation is checked below; header dialect warnings are not errors
        try:
            hdus = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False)
        except (OSError, ValueError, EOFError) as error:
            # astropy's advice to the caller of fits.open ("try with ignore_missing_simple=True") is no user's
            raise UnusableSpectrum(f"unreadable FITS: {str(error).partition('. If this is really')[0]}") from None
    promised = max(info["datLoc"] + info["datSpan"] for info in (hdu.fileinfo() for hdu in hdus))
    if promised > len(data):
        raise UnusableSpectrum(f"truncated FITS: {len(data)} bytes where its headers promise {promised}")
    return hdus


def read_spectrum(data: bytes, name: str, library: LibraryEntry | None = None) -> Spectrum:
    """The spectrum in a FITS file's bytes, its layout recognised by content; `library` names and labels a
    library spectrum. Raises UnusableSpectrum with the reason when there is none to use."""
    hdus = open_fits(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # astropy's notes on non-standard headers; the content is checked
            spectrum = _read_layout(hdus, name, library)
    except UnusableSpectrum:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as error:   # a missing column, HDU or keyword
        raise UnusableSpectrum(f"malformed {_layout_name(hdus)} file: {type(error).__name__}: {error}") from None
    _check(spectrum)
    return spectrum


def _layout_name(hdus: fits.HDUList) -> str:
    """SDSS (a COADD table), LAMOST (its telescope in the header), or FITS (anything else)."""
    if "COADD" in hdus:
        return "SDSS"
    if str(hdus[0].header.get("TELESCOP", "")).strip().upper() == "LAMOST":
        return "LAMOST"
    return "FITS"


def _read_layout(hdus: fits.HDUList, name: str, library: LibraryEntry | None) -> Spectrum:
    """The spectrum, by the reader of its layout; a 1-D primary image is a library spectrum."""
    layout = _layout_name(hdus)
    if layout == "SDSS":
        return read_sdss(hdus, name)
    if layout == "LAMOST":
        return read_lamost(hdus, name)
    primary = hdus[0]
    tables = [hdu for hdu in hdus[1:] if isinstance(hdu, fits.BinTableHDU)]
    if tables and "CRVAL1" not in primary.header:  # a catalogue (TOPCAT keeps its metadata as 1-D bytes in front)
        table = tables[0]
        raise UnusableSpectrum(f"a FITS table ({table.header.get('NAXIS2', 0)} rows x {len(table.columns)} columns "
                               f"in HDU {table.name or 1!r}), not a spectrum: a catalogue is photometry's input")
    if primary.data is not None and primary.data.ndim == 1:
        return read_library_spectrum(hdus, library or _unlabelled_entry(name, primary.header))
    raise UnusableSpectrum("not a spectrum layout this reader knows (SDSS/BOSS spec, LAMOST, or a 1-D spectrum "
                           "with a wavelength solution in its header)")


def _stem(name: str) -> str:
    """A file name without its directories and FITS/gzip extensions."""
    base = name.rsplit("/", 1)[-1]
    base = base[:-3] if base.lower().endswith(".gz") else base
    return base[: -len(Path(base).suffix)] if Path(base).suffix.lower() in FITS_SUFFIXES else base


def _unlabelled_entry(name: str, header: fits.Header) -> LibraryEntry:
    """A 1-D spectrum with no labels.csv above it: named by its file, its source by its folder; a MILES star (its
    header's TPLLIB) by its MILES number, as MILES's labels.csv names it (`m0145` for
    `MILES_res2.50_star_m0145V.fits.gz`), so that one file sent alone gets the id its library folder gives it."""
    folder = Path(name).parent.name or "spectral"
    stem = _stem(name)
    star = MILES_STAR.search(stem) if str(header.get("TPLLIB", "")).strip().upper() == "MILES" else None
    return LibraryEntry(f"{folder}-library", star.group(1) if star else stem, dict.fromkeys(LABELS))


# The formats

def read_sdss(hdus: fits.HDUList, name: str) -> Spectrum:
    """An SDSS-I/II or BOSS `spec` file: the COADD table and the pipeline's redshift and class from HDU 2."""
    coadd = hdus["COADD"].data
    columns = {column.lower(): column for column in coadd.columns.names}
    flux = np.asarray(coadd[columns["flux"]], np.float32)
    and_mask = (np.asarray(coadd[columns["and_mask"]], np.int32) if "and_mask" in columns
                else np.zeros(flux.size, np.int32))
    loglam = _vacuum_loglam(exact_log_grid(coadd[columns["loglam"]]), hdus[0].header, default_air=False)
    specobj = hdus[2].data[0] if len(hdus) > 2 and isinstance(hdus[2], fits.BinTableHDU) else None
    fields = {column.upper(): column for column in specobj.array.names} if specobj is not None else {}
    spectrum_class = str(specobj[fields["CLASS"]]).strip() if "CLASS" in fields else ""
    if spectrum_class and spectrum_class.upper() != "STAR":
        raise UnusableSpectrum(f"SDSS class {spectrum_class}, not a star")
    if {"PLATE", "MJD", "FIBERID"} <= fields.keys():
        plate, mjd, fiber = (int(specobj[fields[key]]) for key in ("PLATE", "MJD", "FIBERID"))
        spectrum_id = f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}"
    else:
        spectrum_id = _stem(name)
    z = float(specobj[fields["Z"]]) if "Z" in fields else 0.0
    return Spectrum(spectrum_id, loglam, flux, np.asarray(coadd[columns["ivar"]], np.float32), and_mask, z, "sdss",
                    _header_labels(hdus[0].header))


def read_lamost(hdus: fits.HDUList, name: str) -> Spectrum:
    """A LAMOST low-resolution (primary image rows) or medium-resolution (COADD_B + COADD_R tables) spectrum."""
    header = hdus[0].header
    spectrum_class = str(header.get("CLASS", "")).strip()
    if spectrum_class and spectrum_class.upper() != "STAR":
        raise UnusableSpectrum(f"LAMOST class {spectrum_class}, not a star")
    arms = [hdus[arm].data for arm in ("COADD_B", "COADD_R") if arm in hdus]
    if arms:
        loglam = np.concatenate([exact_log_grid(arm["LOGLAM"]) for arm in arms])
        flux, ivar, lamost_mask = (np.concatenate([np.asarray(arm[column]) for arm in arms])
                                   for column in ("FLUX", "IVAR", "ANDMASK"))
        order = np.argsort(loglam, kind="stable")
        loglam, flux, ivar, lamost_mask = loglam[order], flux[order], ivar[order], lamost_mask[order]
    elif hdus[0].data is not None and hdus[0].data.ndim == 2 and hdus[0].data.shape[0] >= 3:
        rows = hdus[0].data
        flux, ivar = rows[0], rows[1]
        loglam = exact_log_grid(np.log10(rows[2].astype(np.float64)))
        lamost_mask = rows[3] if rows.shape[0] > 3 else np.zeros(flux.size)
    else:
        raise UnusableSpectrum("LAMOST file with neither a flux/ivar/wavelength primary image (low resolution) nor "
                               "COADD_B/COADD_R tables (medium resolution)")
    loglam = _vacuum_loglam(loglam, header, default_air=False)
    ivar = np.asarray(ivar, np.float32)
    and_mask = _lamost_to_sdss_mask(np.asarray(lamost_mask).astype(np.int64))
    return Spectrum(_stem(name), loglam, np.asarray(flux, np.float32), ivar, and_mask, _lamost_redshift(header),
                    "lamost", _header_labels(header))


def _lamost_to_sdss_mask(lamost_mask: np.ndarray) -> np.ndarray:
    """SDSS pixel bits (LAMOST_TO_SDSS_BITS) of a LAMOST pixel mask."""
    sdss_mask = np.zeros(lamost_mask.size, np.int32)
    for lamost_bit, sdss_name in LAMOST_TO_SDSS_BITS.items():
        sdss_mask |= np.where(lamost_mask & (1 << lamost_bit), 1 << SDSS_PIXEL_BITS[sdss_name], 0).astype(np.int32)
    return sdss_mask


def _lamost_redshift(header: fits.Header) -> float:
    """The pipeline's Z, else a radial velocity RV (km/s) as z, else 0 (medium-resolution headers carry neither).
    HELIO_RV is the heliocentric correction already applied, not the star's velocity, and is not used."""
    z = label_value(header.get("Z"))
    if z is not None and z > -1:
        return z
    velocity = label_value(header.get("RV"))
    return velocity / SPEED_OF_LIGHT_KMS if velocity is not None else 0.0


def read_library_spectrum(hdus: fits.HDUList, entry: LibraryEntry) -> Spectrum:
    """A 1-D library spectrum: wavelengths from the header (air unless it says vacuum), DER_SNR inverse variance,
    rest frame (z = 0), labels from the library's table."""
    header = hdus[0].header
    flux = np.asarray(hdus[0].data, np.float32)
    wavelength = header_wavelengths(header, flux.size)
    if _in_air(header, default=True):
        wavelength = air_to_vacuum(wavelength)
    loglam = np.log10(wavelength)
    if loglam.size > 1 and loglam[0] > loglam[-1]:
        loglam, flux = loglam[::-1].copy(), flux[::-1].copy()
    ivar = der_snr_ivar(flux)
    return Spectrum(entry.object_id, loglam, flux, ivar, np.zeros(flux.size, np.int32), 0.0, entry.source,
                    dict(entry.labels))


def _check(spectrum: Spectrum) -> None:
    """Raise UnusableSpectrum when a spectrum read cleanly but carries nothing usable; otherwise zero the ivar of
    non-finite flux and flag NODATA where ivar is 0 (the SDSS convention, for formats without SDSS bits)."""
    sizes = {spectrum.loglam.size, spectrum.flux.size, spectrum.ivar.size, spectrum.and_mask.size}
    if len(sizes) != 1 or spectrum.flux.size < 2:
        raise UnusableSpectrum(f"wavelength, flux, ivar and mask lengths differ or are too short: {sorted(sizes)}")
    finite = np.isfinite(spectrum.flux)
    if not finite.any():
        raise UnusableSpectrum("all flux values are NaN or infinite")
    if not spectrum.flux[finite].any():
        raise UnusableSpectrum("all flux values are zero")
    spectrum.ivar = np.where(finite & np.isfinite(spectrum.ivar) & (spectrum.ivar > 0), spectrum.ivar,
                             np.float32(0)).astype(np.float32)
    if not spectrum.ivar.any():
        raise UnusableSpectrum("inverse variance is zero at every pixel" + (
            " (DER_SNR measured no noise)" if spectrum.source.endswith("-library") else ""))
    if not (np.isfinite(spectrum.loglam).all() and (np.diff(spectrum.loglam) > 0).all()):
        raise UnusableSpectrum("wavelengths are not finite and strictly increasing")
    low, high = spectrum.loglam[0], spectrum.loglam[-1]
    if low < np.log10(WAVELENGTH_LIMITS[0]) or high > np.log10(WAVELENGTH_LIMITS[1]):
        hint = "; Angstroms where their log10 belongs?" if low > np.log10(WAVELENGTH_LIMITS[1]) else ""
        raise UnusableSpectrum(f"log10 wavelengths {low:.4g}-{high:.4g} are not those of a star's spectrum "
                               f"({WAVELENGTH_LIMITS[0]:g}-{WAVELENGTH_LIMITS[1]:g} A{hint})")
    if spectrum.source != "sdss":
        spectrum.and_mask = np.where(spectrum.ivar == 0, spectrum.and_mask | NODATA, spectrum.and_mask)


# Labelled libraries

def _normalised_column(name: str) -> str:
    """A column name as LABEL_ALIASES spells them: lower case, letters, digits and '/' only."""
    return re.sub(r"[^a-z0-9/]", "", name.casefold())


def _name_candidates(stem: str) -> set[str]:
    """Every substring of a file stem that starts and ends at a change of character class (letters, digits,
    other), case-folded: the strings an id written into the name can be."""
    bounds = [0] + [match.end() for match in re.finditer(r"[A-Za-z]+|\d+|[^A-Za-z\d]+", stem)]
    return {stem[start:stop].casefold() for i, start in enumerate(bounds) for stop in bounds[i + 1:]}


@dataclass
class LabelTable:
    """A library's labels.csv: the id column found by content, labels by id, and what could not be matched."""

    path: str
    id_column: str | None
    labels: dict[str, dict[str, float | None]]      # row id -> labels
    matches: dict[str, str]                          # file stem -> row id
    duplicate_rows: list[str]
    restored_teff: dict[str, tuple[float, float]] = field(default_factory=dict)  # row id -> (as written, restored)
    missing_labels: list[str] = field(default_factory=list)  # labels with no column (LABEL_ALIASES)
    columns: list[str] = field(default_factory=list)
    rows: int = 0                                    # data rows in the table
    dialect: list[str] = field(default_factory=list)  # how it was read where it is not UTF-8 with commas

    @property
    def unmatched_rows(self) -> list[str]:
        """Row ids that no file name contains, in table order."""
        matched = set(self.matches.values())
        return [row_id for row_id in self.labels if row_id not in matched]


def read_label_table(path: Path, name: str, stems: Sequence[str]) -> LabelTable:
    """Read a library's labels.csv and match its rows to the file stems of the library.

    The id column is the one whose values name the most files one-to-one (a column whose single value appears in
    every name, such as a resolution, counts once). A file whose name holds several of its values takes the longest.
    """
    text, dialect = _label_text(path.read_bytes())
    delimiter = _delimiter(text)
    if delimiter != ",":
        dialect.append(f"its columns separated by {DELIMITER_NAMES[delimiter]}")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns, rows = list(reader.fieldnames or []), list(reader)
    candidates = {stem: _name_candidates(stem) for stem in stems}
    id_column, matches, best = None, {}, 0
    for column in columns:
        values = {str(row[column] or "").strip().casefold() for row in rows} - {""}
        column_matches = {stem: max(found, key=lambda value: (len(value), value))
                          for stem, names in candidates.items() if (found := names & values)}
        if len(set(column_matches.values())) > best:
            id_column, matches, best = column, column_matches, len(set(column_matches.values()))
    by_alias = {_normalised_column(column): column for column in columns}
    sources = {label: next((by_alias[alias] for alias in aliases if alias in by_alias), None)
               for label, aliases in LABEL_ALIASES.items()}
    spectral_type = next((by_alias[alias] for alias in SPECTRAL_TYPE_ALIASES if alias in by_alias), None)
    restored: dict[str, tuple[float, float]] = {}
    labels: dict[str, dict[str, float | None]] = {}
    originals: dict[str, str] = {}
    duplicates = []
    for row in rows if id_column else ():
        row_id = str(row[id_column] or "").strip()
        if not row_id:
            continue
        if row_id.casefold() in originals:
            duplicates.append(row_id)
            continue
        originals[row_id.casefold()] = row_id
        labels[row_id] = {label: label_value(row[column]) if column else None for label, column in sources.items()}
        teff = overflowed_teff(row[spectral_type], labels[row_id]["teff"]) if spectral_type else None
        if teff is not None:
            restored[row_id] = (labels[row_id]["teff"], teff)
            labels[row_id]["teff"] = teff
    return LabelTable(name, id_column, labels, {stem: originals[value] for stem, value in matches.items()},
                      duplicates, restored, [label for label, column in sources.items() if column is None], columns,
                      len(rows), dialect)


DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _label_text(data: bytes) -> tuple[str, list[str]]:
    """A labels table's text: UTF-8 (a byte-order mark dropped), else Windows-1252, as spreadsheets save it (a
    name with an accent made the whole table unreadable, and every star unlabelled); how it was read, if not UTF-8."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        return data.decode("cp1252", errors="replace"), [f"read as Windows-1252 (byte {error.start} is not UTF-8)"]


def _delimiter(text: str) -> str:
    """The separator of a labels table: a comma, unless its header holds none and a semicolon, a tab or a bar
    (spreadsheets in many locales save CSV with semicolons)."""
    header = text.lstrip().partition("\n")[0]
    if "," in header:
        return ","
    return max((";", "\t", "|"), key=header.count) if any(c in header for c in ";\t|") else ","


def _library_entries(folder: Path, files: Sequence[Path], quarantine: Quarantine) -> dict[Path, LibraryEntry]:
    """Library entries of the files under each labels.csv (the nearest one above a file), quarantining label rows
    that match no file and repeated rows."""
    tables = sorted(folder.rglob(LABELS_CSV), key=lambda path: path.relative_to(folder).as_posix())
    roots = {table.parent: table for table in tables}
    members: dict[Path, list[Path]] = {root: [] for root in roots}
    for path in files:
        root = next((parent for parent in path.parents if parent in roots), None)
        if root is not None:
            members[root].append(path)
    entries = {}
    for root, table_path in roots.items():
        name = shown_path(table_path, folder)
        source = f"{(root if root != folder else folder).name}-library"
        try:
            table = read_label_table(table_path, name, [_stem(path.name) for path in members[root]])
        except (OSError, csv.Error) as error:
            log.warning("%s: unreadable labels table (its spectra are read unlabelled): %s", name, error)
            quarantine.add(name, f"unreadable labels table: {error}", name)
            continue
        if table.dialect:
            log.warning("%s: %s", name, "; ".join(table.dialect))
        for row_id in table.unmatched_rows:
            quarantine.add(row_id, f"{LABEL_ROW} {row_id} matches no spectrum file", name)
        for row_id in table.duplicate_rows:
            quarantine.add(row_id, f"{LABEL_ROW} {row_id} repeats an earlier row of the same id", name)
        for path in members[root]:
            row_id = table.matches.get(_stem(path.name))
            entries[path] = LibraryEntry(source, row_id or _stem(path.name),
                                         table.labels[row_id] if row_id else dict.fromkeys(LABELS))
        labelled = sum(_stem(path.name) in table.matches for path in members[root])
        if table.id_column is None and table.rows:
            examples = ", ".join(_stem(path.name) for path in members[root][:3]) or "(no spectrum file beside it)"
            log.warning("%s: none of its %d rows names a spectrum file: no column (%s) holds a name like %s",
                        name, table.rows, ", ".join(table.columns), examples)
        else:
            log.log(logging.INFO if labelled else logging.WARNING,
                    "%s: %d label rows, id column %r, %d of %d files labelled%s", name, len(table.labels),
                    table.id_column, labelled, len(members[root]),
                    "" if labelled else ": no spectrum here has labels to train on (is it the library's labels table?)")
        if table.missing_labels:
            log.warning("%s: no %s column (its columns: %s): its spectra have no %s to train on (a column's name may "
                        "be any of %s)", name, " or ".join(table.missing_labels), ", ".join(table.columns),
                        " or ".join(table.missing_labels),
                        "; ".join(f"{label}: {', '.join(LABEL_ALIASES[label])}" for label in table.missing_labels))
        if table.restored_teff:
            shown = ", ".join(f"{row_id} {written:g} -> {teff:g} K"
                              for row_id, (written, teff) in list(table.restored_teff.items())[:3])
            log.info("%s: Teff of %d rows restored from the digit that overflowed into the spectral type (%s%s)",
                     name, len(table.restored_teff), shown, ", ..." if len(table.restored_teff) > 3 else "")
    return entries


# The folder reader

def _is_fits_name(name: str) -> bool:
    """A FITS file name, gzipped or not (hidden files are not read)."""
    lower = name.lower()
    lower = lower[:-3] if lower.endswith(".gz") else lower
    return lower.endswith(FITS_SUFFIXES) and not name.startswith(".")


def read_folder(folder: Path, samples: int = 0, shown_as: str | None = None) -> Ingested:
    """Every spectrum in a local folder (recursively, in sorted path order), at most `samples` of them (0 = all);
    logs name the folder `shown_as` (by default its path)."""
    from steps.ingest.sources import Ingested   # here, not at the top: sources imports this module to register it

    folder = Path(folder)
    quarantine = Quarantine("ingest.spectra")
    everything = sorted((path for path in folder.rglob("*") if path.is_file()),
                        key=lambda path: path.relative_to(folder).as_posix())
    files = [path for path in everything if _is_fits_name(path.name)]
    if not files:
        names = [shown_path(path, folder) for path in everything if not path.name.startswith(".")]
        held = (f"it holds {len(names)} other file{'s' if len(names) != 1 else ''}: {', '.join(names[:5])}"
                + (", ..." if len(names) > 5 else "")) if names else "it is empty"
        raise ValueError(f"{shown_as or folder}: no spectrum files (FITS: {', '.join(FITS_SUFFIXES)}, gzipped or not) "
                         f"in it; {held}")
    entries = _library_entries(folder, files, quarantine)
    stems = Counter(_stem(path.name) for path in files)
    spectra: list[Spectrum] = []
    read_from: dict[str, str] = {}
    for path in files:
        if samples and len(spectra) >= samples:
            break
        name = shown_path(path, folder)
        try:
            content = path.read_bytes()
        except OSError as error:  # a file listed but not readable: the others are
            quarantine.add(name, f"{name}: unreadable: {error.strerror or error}", name)
            continue
        try:
            spectrum = read_spectrum(content, name, entries.get(path))
        except UnusableSpectrum as error:  # under the id its file would give, where no other file could give it
            entry = entries.get(path)
            record_id = entry.object_id if entry else _stem(name) if stems[_stem(path.name)] == 1 else name
            quarantine.add(record_id, f"{name}: {error}" if record_id != name else str(error), name)
            continue
        if spectrum.id in read_from:
            quarantine.add(name, f"object {spectrum.id} was already read from {read_from[spectrum.id]}", name)
            continue
        read_from[spectrum.id] = name
        spectra.append(spectrum)
    by_source = Counter(spectrum.source for spectrum in spectra)
    log.info("%s: %d spectra (%s), %s", shown_as or folder, len(spectra),
             ", ".join(f"{source}: {count}" for source, count in sorted(by_source.items())) or "none",
             quarantine.summary())
    data, labels = spectra_tables(spectra)
    return Ingested(data, labels, quarantine)


def read_spectra_folder(request: IngestRequest) -> Ingested:
    """The folder reader of the spectra modality: SDSS/BOSS, LAMOST and labelled-library files in
    `request.location` (a path or s3:// prefix), at most `request.samples` objects (0 = all)."""
    if request.location is None:
        raise ValueError("read_spectra_folder needs request.location, the folder to replay")
    with local_folder(request.location) as folder:
        return read_folder(folder, request.samples, request.shown_as or request.location)


def spectra_tables(spectra: Sequence[Spectrum]) -> tuple[pa.Table, pa.Table]:
    """The raw spectra table and the labels table (one row per spectrum, null where unknown)."""
    data = pa.table({
        "id": pa.array([spectrum.id for spectrum in spectra], pa.string()),
        "loglam": list_column([spectrum.loglam for spectrum in spectra], pa.float64()),
        "flux": list_column([spectrum.flux for spectrum in spectra], pa.float32()),
        "ivar": list_column([spectrum.ivar for spectrum in spectra], pa.float32()),
        "and_mask": list_column([spectrum.and_mask for spectrum in spectra], pa.int32()),
        "z": pa.array([spectrum.z for spectrum in spectra], pa.float64()),
        "source": pa.array([spectrum.source for spectrum in spectra], pa.string()),
    }, schema=SPECTRA_SCHEMA)
    labels = pa.Table.from_pylist([{"id": spectrum.id, **spectrum.labels} for spectrum in spectra],
                                  schema=STELLAR_LABELS_SCHEMA)
    return data, labels
