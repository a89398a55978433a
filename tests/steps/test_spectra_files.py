"""Spectra replayed from folders of real archive files (`../shared/data/{sdss,lamost,miles}`), and their
preprocessing: every real file read (or set aside with its reason), deliberately corrupted copies quarantined,
library labels reaching the labels table, wavelength conventions, and the vectorised resampler against the
per-spectrum reference."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from steps.core.artifacts import read_manifest, sha256_tree
from steps.core.quarantine import QUARANTINE_TABLE, TooManyBadRecords
from steps.core.storage import open_store
from steps.ingest import sources
from steps.ingest.schemas import DATA_FILES, LABELS_FILE, SDSS_PIXEL_BITS, SPECTRA_SCHEMA, STELLAR_LABELS_SCHEMA
from steps.ingest.sources import IngestRequest
from steps.ingest.spectra_files import (
    air_to_vacuum, der_snr_ivar, header_wavelengths, overflowed_teff, read_folder, read_spectra_folder, read_spectrum)
from steps.core.names import FEATURES_FILE
from steps.preprocess.common import RawArtifact
from steps.preprocess.spectra import (
    ResamplingOperator, masked_row_median, output_grid, pixel_extents, preprocess_spectra, resample)

REPO = Path(__file__).resolve().parents[2]
MILES_FILE = "MILES_res2.50_star_{}V.fits.gz"
BIT = {name: 1 << bit for name, bit in SDSS_PIXEL_BITS.items()}


@pytest.fixture(scope="module")
def data_dir(shared_dir) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="module")
def miles(data_dir):
    """The whole MILES folder, read once."""
    return checked(read_folder(data_dir / "miles"))


@pytest.fixture(autouse=True)
def spectra_folder_reader(monkeypatch):
    """The reader registered for folder sources, as `steps.ingest.sources` does."""
    monkeypatch.setitem(sources.FOLDER_READERS, "spectra", read_spectra_folder)


def checked(ingested: sources.Ingested) -> sources.Ingested:
    assert ingested.data.schema.equals(SPECTRA_SCHEMA) and ingested.labels.schema.equals(STELLAR_LABELS_SCHEMA)
    assert ingested.data.column("id").to_pylist() == ingested.labels.column("id").to_pylist()
    return ingested


def rows(ingested: sources.Ingested) -> dict[str, dict]:
    return {row["id"]: row for row in ingested.data.to_pylist()}


def reasons(ingested: sources.Ingested) -> dict[str, str]:
    return {row["id"]: row["reason"] for row in ingested.quarantine.rows}


def write_spectrum(path: Path, flux: np.ndarray, **header) -> Path:
    """A 1-D library spectrum: `flux` in the primary HDU and `header` keywords (the wavelength solution)."""
    hdu = fits.PrimaryHDU(np.asarray(flux, np.float64))
    hdu.header.update(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = fits.HDUList([hdu])
    if path.name.endswith(".gz"):
        buffer = io.BytesIO()
        data.writeto(buffer)
        path.write_bytes(gzip.compress(buffer.getvalue()))
    else:
        data.writeto(path)
    return path


def write_labels(path: Path, header: list[str], table: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)


# Every real file

@pytest.mark.needs_shared
def test_every_shared_spectrum_is_read(data_dir, miles):
    sdss = checked(read_folder(data_dir / "sdss"))
    lamost = checked(read_folder(data_dir / "lamost"))
    assert [len(sdss.quarantine), len(lamost.quarantine), len(miles.quarantine)] == [0, 0, 0]
    assert sdss.data.column("id").to_pylist() == sorted(path.name[:-5] for path in (data_dir / "sdss").glob("*.fits"))
    assert lamost.data.column("id").to_pylist() == [
        "med-58268-HIP95119KP01_sp12-076", "med-58408-TD230151N343645T01_sp01-015",
        "spec-57287-KP193637N444141V03_sp10-161", "spec-58397-EG014118N254444M01_sp03-031"]
    assert miles.data.num_rows == 515 and set(miles.data.column("source").to_pylist()) == {"miles-library"}
    assert set(sdss.data.column("source").to_pylist()) == {"sdss"}
    assert set(lamost.data.column("source").to_pylist()) == {"lamost"}


@pytest.mark.needs_shared
def test_sdss_and_boss_rows_are_the_archive_values(data_dir):
    spectra = rows(read_folder(data_dir / "sdss"))
    with fits.open(data_dir / "sdss" / "spec-0618-52049-0372.fits") as hdus:
        coadd, specobj = hdus["COADD"].data, hdus[2].data[0]
        row = spectra["spec-0618-52049-0372"]
        np.testing.assert_array_equal(row["flux"], coadd["flux"])
        np.testing.assert_array_equal(row["ivar"], coadd["ivar"])
        np.testing.assert_array_equal(row["and_mask"], coadd["and_mask"])
        assert row["z"] == pytest.approx(float(specobj["Z"]))
        # The float32 log-linear grid, restored: within float32 rounding of the file, with uniform 1e-4 dex steps
        # (the file's float32 steps vary by 2e-3 of a pixel).
        np.testing.assert_allclose(row["loglam"], coadd["loglam"], atol=2.4e-7, rtol=0)
        assert np.ptp(np.diff(row["loglam"])) < 1e-12 and np.diff(row["loglam"])[0] == pytest.approx(1e-4, rel=1e-8)
    boss = spectra["spec-7332-56683-0788"]
    assert 3600 < 10 ** boss["loglam"][0] < 3620 and 10380 < 10 ** boss["loglam"][-1] < 10400
    low_snr = spectra["spec-3764-55514-0972"]                                  # the L0 dwarf, S/N about 1
    assert np.median(np.abs(low_snr["flux"]) * np.sqrt(low_snr["ivar"])) < 3


@pytest.mark.needs_shared
def test_lamost_low_and_medium_resolution_layouts(data_dir):
    spectra = rows(read_folder(data_dir / "lamost"))
    low = spectra["spec-58397-EG014118N254444M01_sp03-031"]
    with fits.open(data_dir / "lamost" / "spec-58397-EG014118N254444M01_sp03-031.fits") as hdus:
        header, image = hdus[0].header, hdus[0].data
        assert header["VACUUM"] and low["z"] == pytest.approx(header["Z"])
        np.testing.assert_allclose(low["loglam"], header["COEFF0"] + header["COEFF1"] * np.arange(header["NAXIS1"]),
                                   atol=1e-9)
        np.testing.assert_array_equal(low["flux"], image[0])
    assert np.all((np.asarray(low["and_mask"]) == BIT["NODATA"]) == (np.asarray(low["ivar"]) == 0))

    medium = spectra["med-58408-TD230151N343645T01_sp01-015"]
    with fits.open(data_dir / "lamost" / "med-58408-TD230151N343645T01_sp01-015.fits") as hdus:
        blue, red = hdus["COADD_B"].data, hdus["COADD_R"].data
        assert len(medium["flux"]) == len(blue) + len(red) and medium["z"] == 0.0      # no Z or RV in the header
        and_mask = np.asarray(medium["and_mask"])
        assert np.count_nonzero(and_mask & BIT["FULLREJECT"]) == np.count_nonzero(blue["ANDMASK"] & 1)  # BADCCD
    loglam = np.asarray(medium["loglam"])
    assert np.all(np.diff(loglam) > 0) and 10 ** loglam[len(blue) - 1] < 5400 < 6200 < 10 ** loglam[len(blue)]


@pytest.mark.needs_shared
def test_miles_labels_reach_the_labels_table_and_empty_values_stay_null(data_dir, miles):
    with open(data_dir / "miles" / "labels.csv", newline="") as handle:
        table = {row["miles_id"]: row for row in csv.DictReader(handle)}
    labels = miles.labels.to_pandas().set_index("id")
    assert labels.loc["m0145"].tolist() == [float(table["m0145"][name]) for name in ("teff", "logg", "feh")]
    assert labels.loc["m0443"].isna().all()                                     # no parameters in the table
    assert labels.loc["m0838", "teff"] == 2748.0 and np.isnan(labels.loc["m0838", "feh"])
    assert labels["feh"].isna().sum() == sum(row["feh"] == "" for row in table.values())
    assert sorted(labels.index) == sorted(table)
    # 44 hot stars' Teff had overflowed into the spectral type: HD 886 (B2 IV) is 21,581 K, not 1,581 K
    assert labels.loc["m0011", "teff"] == 21581.0 and (labels["teff"] >= 10000).sum() == 44
    assert labels.loc["m0725", "teff"] == 6165.0                                # "B5", no overflow: as written


@pytest.mark.needs_shared
def test_miles_air_wavelengths_become_vacuum_and_ivar_comes_from_der_snr(data_dir, miles):
    star = rows(miles)["m0145"]
    with fits.open(data_dir / "miles" / "spectra" / MILES_FILE.format("m0145")) as hdus:
        flux, header = hdus[0].data, hdus[0].header
    air = header["CRVAL1"] + header["CDELT1"] * np.arange(flux.size)
    np.testing.assert_allclose(10 ** np.asarray(star["loglam"]), air_to_vacuum(air), rtol=1e-12)
    assert 10 ** star["loglam"][0] - air[0] == pytest.approx(1.01, abs=0.01)   # 3540.5 A in air is 3541.5 in vacuum
    noise = 1.482602 / np.sqrt(6) * np.median(np.abs(2 * flux[2:-2] - flux[:-4] - flux[4:]))
    np.testing.assert_allclose(star["ivar"], 1 / noise**2, rtol=1e-5)          # from the float32 flux
    assert star["z"] == 0.0 and not np.any(star["and_mask"])


@pytest.mark.parametrize(("air", "vacuum"), [(3933.663, 3934.777), (5889.950, 5891.583), (6562.80, 6564.61)])
def test_air_to_vacuum_matches_laboratory_lines(air, vacuum):
    """Ca II K, Na I D2 and H-alpha, air and vacuum wavelengths as tabulated by NIST."""
    assert air_to_vacuum(np.array([air]))[0] == pytest.approx(vacuum, abs=0.003)


def test_der_snr_recovers_a_known_noise():
    rng = np.random.default_rng(3)
    wave = np.linspace(4000, 7000, 30000)
    flux = 10 * (1 - 0.3 * np.exp(-0.5 * ((wave - 5500) / 3) ** 2)) + rng.normal(0, 0.2, wave.size)
    flux[100] = np.nan
    ivar = der_snr_ivar(flux)
    assert ivar[100] == 0 and np.unique(ivar[np.isfinite(flux)]).size == 1
    assert ivar[0] == pytest.approx(1 / 0.2**2, rel=0.03)
    assert not der_snr_ivar(np.ones(100)).any()                                 # no noise: nothing to measure


@pytest.mark.parametrize(("header", "first", "last"), [
    ({"CRVAL1": 3540.5, "CDELT1": 0.9}, 3540.5, 3540.5 + 0.9 * 99),
    ({"CRVAL1": 3541.4, "CDELT1": 0.9, "CRPIX1": 2}, 3540.5, 3540.5 + 0.9 * 99),
    ({"CRVAL1": 354.05, "CD1_1": 0.09, "CUNIT1": "nm"}, 3540.5, 3540.5 + 0.9 * 99),
    ({"CRVAL1": 3.55, "CDELT1": 1e-4, "DC-FLAG": 1}, 10**3.55, 10 ** (3.55 + 99e-4)),
    ({"CRVAL1": 3.55, "CDELT1": 1e-4}, 10**3.55, 10 ** (3.55 + 99e-4)),
    ({"CRVAL1": 4000.0, "CDELT1": 0.5, "CTYPE1": "AWAV-LOG"}, 4000.0, 4000.0 * np.exp(0.5 * 99 / 4000.0)),
])
def test_header_wavelength_solutions(header, first, last):
    wave = header_wavelengths(fits.Header(header), 100)
    assert wave[0] == pytest.approx(first) and wave[-1] == pytest.approx(last)


# Corrupted copies and label tables

@pytest.mark.needs_shared
def test_a_copy_with_a_wrong_wavelength_column_does_not_replace_the_file(tmp_path, data_dir):
    """`bad-linlam.fits`, spec-0618 with Angstroms in its loglam column, sorts before the real file: it was read as
    spec-0618 and the real file set aside as a repeat of it."""
    name = "spec-0618-52049-0372.fits"
    shutil.copy(data_dir / "sdss" / name, tmp_path)
    with fits.open(data_dir / "sdss" / name) as hdus:
        hdus["COADD"].data["loglam"] = 10 ** hdus["COADD"].data["loglam"]
        hdus.writeto(tmp_path / "bad-linlam.fits")
    ingested = checked(read_folder(tmp_path))
    assert list(rows(ingested)) == ["spec-0618-52049-0372"]
    assert ingested.data.column("loglam")[0].as_py()[0] == pytest.approx(3.5812, abs=1e-3)
    assert reasons(ingested) == {"bad-linlam": "bad-linlam.fits: log10 wavelengths 3812-9215 are not those "
                                 "of a star's spectrum (900-60000 A; Angstroms where their log10 belongs?)"}


@pytest.mark.needs_shared
def test_corrupted_copies_are_quarantined_with_their_reason(tmp_path, data_dir):
    sdss, lamost, miles = data_dir / "sdss", data_dir / "lamost", data_dir / "miles" / "spectra"
    folder = tmp_path / "folder"
    (folder / "sdss").mkdir(parents=True)
    truncated = (sdss / "spec-0618-52049-0372.fits").read_bytes()[:500000]
    (folder / "sdss" / "spec-0618-52049-0372.fits").write_bytes(truncated)
    shutil.copy(sdss / "spec-1079-52621-0509.fits", folder / "sdss")
    (folder / "sdss" / "spec-1079-52621-0509.fits.gz").write_bytes(
        gzip.compress((sdss / "spec-1079-52621-0509.fits").read_bytes()))          # the same object again
    with fits.open(sdss / "spec-1123-52882-0065.fits") as hdus:
        zero_ivar = fits.HDUList([hdu.copy() for hdu in hdus[:3]])
        zero_ivar["COADD"].data["ivar"] = 0
        zero_ivar.writeto(folder / "sdss" / "spec-1123-52882-0065.fits")
        galaxy = fits.HDUList([hdu.copy() for hdu in hdus[:3]])
        galaxy[2].data["CLASS"] = "GALAXY"
        galaxy[2].data["PLATE"] = 1124
        galaxy.writeto(folder / "sdss" / "spec-1124-52882-0065.fits")
    packed = (lamost / "spec-57287-KP193637N444141V03_sp10-161.fits.gz").read_bytes()
    (folder / "lamost").mkdir()
    (folder / "lamost" / "spec-57287-KP193637N444141V03_sp10-161.fits.gz").write_bytes(packed[: len(packed) // 2])
    (folder / "notes.fits").write_bytes(b"these are notes, not FITS" * 200)

    library = folder / "miles"
    (library / "spectra").mkdir(parents=True)
    shutil.copy(miles / MILES_FILE.format("m0145"), library / "spectra")
    with fits.open(miles / MILES_FILE.format("m0002")) as hdus:
        header = hdus[0].header
        write_spectrum(library / "spectra" / MILES_FILE.format("m0002"), np.full(header["NAXIS1"], np.nan), **header)
        write_spectrum(library / "spectra" / MILES_FILE.format("m0005"), np.zeros(header["NAXIS1"]), **header)
        write_spectrum(library / "spectra" / MILES_FILE.format("m9000"), hdus[0].data, **header)   # not in labels
    write_labels(library / "labels.csv", ["miles_id", "name", "sptype", "teff", "logg", "feh"], [
        ["m0145", "HD026965", "K1V", 5073.0, 4.19, -0.31], ["m0002", "HD225212", "K3Ibvar", 4167.0, 0.95, 0.02],
        ["m0005", "HD000249", "K1IV", 4717.0, 2.4, -0.35], ["m0999", "HD999999", "G2V", 5800.0, 4.4, ""]])

    ingested = checked(read_folder(folder))
    assert reasons(ingested).pop("notes") == ("notes.fits: unreadable FITS: No SIMPLE card found, this file does not "
                                              "appear to be a valid FITS file")  # not astropy's advice to a caller
    # a file set aside keeps the id it would have given (a library's row id, else the file name without its
    # extensions: a user joins the predictions on it), the file named in the reason
    assert reasons(ingested) | {"notes": "-"} == {
        "spec-57287-KP193637N444141V03_sp10-161": "lamost/spec-57287-KP193637N444141V03_sp10-161.fits.gz: truncated or "
            "corrupt gzip stream: Compressed file ended before the end-of-stream marker was reached",
        "m0002": "miles/spectra/MILES_res2.50_star_m0002V.fits.gz: all flux values are NaN or infinite",
        "m0005": "miles/spectra/MILES_res2.50_star_m0005V.fits.gz: all flux values are zero",
        "m0999": "label row m0999 matches no spectrum file",
        "notes": "-",
        "spec-0618-52049-0372": "sdss/spec-0618-52049-0372.fits: truncated FITS: 500000 bytes where its headers "
                                "promise 535680",
        "sdss/spec-1079-52621-0509.fits.gz":
            "object spec-1079-52621-0509 was already read from sdss/spec-1079-52621-0509.fits",
        "spec-1123-52882-0065": "sdss/spec-1123-52882-0065.fits: inverse variance is zero at every pixel",
        "spec-1124-52882-0065": "sdss/spec-1124-52882-0065.fits: SDSS class GALAXY, not a star",
    }
    assert ingested.data.column("id").to_pylist() == ["m0145", "MILES_res2.50_star_m9000V", "spec-1079-52621-0509"]
    labels = ingested.labels.to_pandas().set_index("id")
    assert labels.loc["m0145"].tolist() == [5073.0, 4.19, -0.31]
    assert labels.loc["MILES_res2.50_star_m9000V"].isna().all()               # kept, unlabelled


def test_a_miles_file_read_alone_is_named_by_its_miles_number(data_dir, tmp_path):
    data = (data_dir / "miles" / "spectra" / MILES_FILE.format("m0145")).read_bytes()
    assert read_spectrum(data, MILES_FILE.format("m0145")).id == "m0145"
    renamed = read_spectrum(data, "my-star.fits.gz")
    assert renamed.id == "my-star"  # no MILES number in the name: the file's name
    other = tmp_path / "MILES_res2.50_star_m0145V.fits"
    flux = 5 + np.random.default_rng(0).normal(0, 0.1, 500)
    write_spectrum(other, flux, CRVAL1=4000.0, CDELT1=1.0)  # not written by MILES: no TPLLIB
    assert read_spectrum(other.read_bytes(), other.name).id == "MILES_res2.50_star_m0145V"


def test_a_gzip_stream_that_would_grow_past_any_spectrum_is_refused_before_it_does():
    from steps.ingest.spectra_files import MAX_SPECTRUM_FILE_BYTES, UnusableSpectrum, gunzipped

    bomb = gzip.compress(bytes(MAX_SPECTRUM_FILE_BYTES + 1))
    with pytest.raises(UnusableSpectrum, match="^more than 64 MiB once decompressed: not one spectrum's file$"):
        read_spectrum(bomb, "bomb.fits.gz")
    assert gunzipped(gzip.compress(b"ab") + gzip.compress(b"cd") + bytes(8)) == b"abcd"  # members, padding


def test_an_unreadable_file_and_a_name_that_is_not_utf8_lose_nothing_else(tmp_path):
    rng = np.random.default_rng(0)
    for name in (b"star-a.fits", b"star-\xff\xfe.fits", b"star-c.fits"):       # one name not UTF-8
        write_spectrum(tmp_path / os.fsdecode(name), 5 + rng.normal(0, 0.1, 500), CRVAL1=4000.0, CDELT1=1.0)
    (tmp_path / "star-d.fits").symlink_to("/proc/self/mem")                      # listed, but reading fails (EIO)
    ingested = checked(read_folder(tmp_path))
    assert set(rows(ingested)) == {"star-a", "star-\\xff\\xfe", "star-c"}
    assert reasons(ingested) == {"star-d.fits": "star-d.fits: unreadable: Input/output error"}
    assert sha256_tree(tmp_path, unreadable_noted=True) != sha256_tree(tmp_path / "star-a.fits")  # a run can key it
    with pytest.raises(OSError):
        sha256_tree(tmp_path)                                                    # an artifact must be read whole


def test_the_label_id_column_is_found_by_content_and_labels_by_alias(tmp_path):
    rng = np.random.default_rng(0)
    solution = {"CRVAL1": 4000.0, "CDELT1": 1.0, "AIRORVAC": "vac"}
    for star in ("HD001234", "HD005678", "BD+302431"):
        write_spectrum(tmp_path / "lib" / f"xsl_res2.50_{star}_merged.fits", 5 + rng.normal(0, 0.1, 500), **solution)
    # The resolution column's single value appears in every name, and HD0012 is a prefix of an id in a name: neither
    # may match. Columns are named as other libraries name them.
    write_labels(tmp_path / "lib" / "labels.csv", ["resolution", "Star", "Teff", "log g", "[Fe/H]"], [
        ["2.50", "HD001234", 5800, 4.4, -0.1], ["2.50", "HD005678", 4900, "", 0.2],
        ["2.50", "BD+302431", 16905, 4.2, ""], ["2.50", "HD0012", 6000, 4.0, 0.0]])
    ingested = checked(read_folder(tmp_path / "lib"))
    assert reasons(ingested) == {"HD0012": "label row HD0012 matches no spectrum file"}
    labels = ingested.labels.to_pandas().set_index("id")
    assert labels.loc["HD001234"].tolist() == [5800.0, 4.4, -0.1]
    assert np.isnan(labels.loc["HD005678", "logg"]) and labels.loc["BD+302431", "teff"] == 16905.0
    assert set(ingested.data.column("source").to_pylist()) == {"lib-library"}
    wave = 10 ** np.asarray(ingested.data.column("loglam")[0].as_py())
    assert wave[0] == pytest.approx(4000.0)                                    # AIRORVAC = vac: not converted


@pytest.mark.parametrize("encoding, delimiter, said", [
    ("latin-1", ",", "labels.csv: read as Windows-1252 (byte 34 is not UTF-8)"),
    ("utf-8", ";", "labels.csv: its columns separated by semicolons"),
    ("utf-8", "\t", "labels.csv: its columns separated by tabs")])
def test_a_labels_table_saved_by_a_spreadsheet_is_read_and_says_how(tmp_path, caplog, encoding, delimiter, said):
    """A Latin-1 name, or semicolons for commas, left every star unlabelled with nothing above INFO to say so."""
    rng = np.random.default_rng(0)
    for star in ("HD001234", "HD005678"):
        write_spectrum(tmp_path / f"{star}.fits", 5 + rng.normal(0, 0.1, 500), CRVAL1=4000.0, CDELT1=1.0)
    rows = [["id", "name", "teff", "logg", "feh"], ["HD001234", "Café", "5800", "4.4", "-0.1"],
            ["HD005678", "Star", "4900", "2.5", "0.2"]]
    (tmp_path / "labels.csv").write_bytes("".join(delimiter.join(row) + "\n" for row in rows).encode(encoding))
    labels = checked(read_folder(tmp_path)).labels.to_pandas().set_index("id")
    assert labels.loc["HD001234"].tolist() == [5800.0, 4.4, -0.1] and labels.loc["HD005678", "teff"] == 4900.0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [said]


def test_a_labels_table_whose_rows_name_no_file_is_a_warning_naming_its_columns(tmp_path, caplog):
    write_spectrum(tmp_path / "HD001234.fits", 5 + np.random.default_rng(0).normal(0, 0.1, 500), CRVAL1=4000.0,
                   CDELT1=1.0)
    write_labels(tmp_path / "labels.csv", ["star", "teff", "logg", "feh"], [["HD9", 5800, 4, 0], ["HD8", 4900, 2, 0]])
    assert checked(read_folder(tmp_path)).labels.column("teff").null_count == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "labels.csv: none of its 2 rows names a spectrum file: no column (star, teff, logg, feh) holds a name like "
        "HD001234"]


def test_a_labels_table_that_labels_no_spectrum_is_a_warning(tmp_path, caplog):
    """A labels.csv with no row for any file was noted at INFO; the run failed later, in split, for another reason."""
    write_spectrum(tmp_path / "lib" / "m0001.fits", np.ones(500), CRVAL1=4000.0, CDELT1=1.0, AIRORVAC="vac")
    write_labels(tmp_path / "lib" / "labels.csv", ["miles_id", "teff", "logg", "feh"], [])
    with caplog.at_level("WARNING"):
        read_folder(tmp_path / "lib")
    assert "labels.csv: 0 label rows, id column None, 0 of 1 files labelled: no spectrum here has labels" in caplog.text


def test_a_labels_table_without_a_label_column_is_a_warning_naming_it(tmp_path, caplog):
    write_spectrum(tmp_path / "lib" / "m0001.fits", np.ones(500), CRVAL1=4000.0, CDELT1=1.0, AIRORVAC="vac")
    write_labels(tmp_path / "lib" / "labels.csv", ["miles_id", "logg", "feh"], [["m0001", 4.4, 0.0]])
    with caplog.at_level("WARNING"):
        read_folder(tmp_path / "lib")
    assert ("labels.csv: no teff column (its columns: miles_id, logg, feh): its spectra have no teff to train on (a "
            "column's name may be any of teff: teff, teffk)") in caplog.text


def test_a_whole_librarys_labels_beside_a_part_of_its_files_ingest(tmp_path):
    """Label rows naming no file of the folder are set aside, but they are no bad objects: a part of a library with
    the library's labels.csv ingests (it failed on the quarantine limit, 18 of 20 records)."""
    from steps.ingest.__main__ import ingest

    rng = np.random.default_rng(0)
    rows = [[f"m{number:04d}", 5000.0 + number, 4.0, 0.0] for number in range(1, 19)]
    for row_id, *_ in rows[:2]:
        write_spectrum(tmp_path / "lib" / f"{row_id}.fits", 5 + rng.normal(0, 0.1, 500), CRVAL1=4000.0, CDELT1=1.0,
                       AIRORVAC="vac")
    write_labels(tmp_path / "lib" / "labels.csv", ["miles_id", "teff", "logg", "feh"], rows)
    ingest("spectra", str(tmp_path / "lib"), 0, 0, tmp_path / "raw")
    quarantined = pq.read_table(tmp_path / "raw" / QUARANTINE_TABLE).column("reason").to_pylist()
    assert len(quarantined) == 16 and all(reason.startswith("label row m00") for reason in quarantined)
    assert pq.read_table(tmp_path / "raw" / DATA_FILES["spectra"]).column("id").to_pylist() == ["m0001", "m0002"]
    (tmp_path / "lib" / "m0003.fits").write_bytes(b"not FITS")  # one bad object of three: over the 20% limit
    with pytest.raises(TooManyBadRecords, match=r"ingest.spectra: 1 of 3 records \(33%\) quarantined"):
        ingest("spectra", str(tmp_path / "lib"), 0, 0, tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()


@pytest.mark.parametrize("spectral_type, teff, restored", [
    ("B2IV           2", 1581.0, 21581.0),      # MILES HD 886
    ("A0 III         1", 137.0, 10137.0),       # the Teff column lost its leading zero too
    ("A              2", 5200.0, 25200.0),      # a type of one letter
    ("08 Ib          3", 274.0, 30274.0),       # O written with a zero
    ("B5", 6165.0, None),                       # no digit set off: a type, not an overflow
    ("K0III          2", 4500.0, None),         # a cool type: not the overflow of a hot star's Teff
    ("B2IV 2", 1581.0, None),                   # one space: part of the type
    ("B2IV           2", 12000.0, None),        # a Teff of five digits already
    ("active         1", 4800.0, None),         # not a spectral type
    ("0              1", 4000.0, None),         # a zero alone is no O type
    (None, 1581.0, None),
])
def test_a_teff_whose_leading_digit_overflowed_into_the_spectral_type_is_restored(spectral_type, teff, restored):
    assert overflowed_teff(spectral_type, teff) == restored


def test_overflowed_teff_is_restored_when_a_library_is_read(tmp_path):
    rng = np.random.default_rng(1)
    solution = {"CRVAL1": 4000.0, "CDELT1": 1.0, "AIRORVAC": "vac"}
    for star in ("m0011", "m0725", "m0145"):
        write_spectrum(tmp_path / "lib" / f"MILES_res2.50_star_{star}V.fits", 5 + rng.normal(0, 0.1, 500),
                       **solution)
    write_labels(tmp_path / "lib" / "labels.csv", ["miles_id", "sptype", "teff", "logg", "feh"], [
        ["m0011", "B2IV           2", 1581.0, 3.86, 0.06], ["m0725", "B5", 6165.0, 4.06, -2.25],
        ["m0145", "G8V", 5073.0, 4.19, -0.31]])
    labels = checked(read_folder(tmp_path / "lib")).labels.to_pandas().set_index("id")
    assert labels["teff"].to_dict() == {"m0011": 21581.0, "m0725": 6165.0, "m0145": 5073.0}
    assert labels.loc["m0011", "logg"] == 3.86                                  # the other labels as written


@pytest.mark.needs_shared
def test_samples_takes_the_first_objects_in_path_order(data_dir):
    ingested = read_folder(data_dir / "sdss", samples=3)
    assert ingested.data.column("id").to_pylist() == [
        "spec-0618-52049-0372", "spec-1079-52621-0509", "spec-1123-52882-0065"]


@pytest.mark.needs_shared
def test_an_s3_folder_is_read_as_the_same_folder_on_disk(tmp_path, data_dir, s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    local = tmp_path / "mini"
    (local / "spectra").mkdir(parents=True)
    for star in ("m0145", "m0443"):
        shutil.copy(data_dir / "miles" / "spectra" / MILES_FILE.format(star), local / "spectra")
    write_labels(local / "labels.csv", ["miles_id", "teff", "logg", "feh"],
                 [["m0145", 5073.0, 4.19, -0.31], ["m0443", "", "", ""]])
    shutil.copy(data_dir / "lamost" / "spec-58397-EG014118N254444M01_sp03-031.fits", local)
    open_store(f"s3://{s3_bucket}").upload_dir(local, "survey/mini")
    remote = checked(read_spectra_folder(IngestRequest("spectra", 0, location=f"s3://{s3_bucket}/survey/mini")))
    on_disk = checked(read_folder(local))
    assert remote.data.equals(on_disk.data) and remote.labels.equals(on_disk.labels)
    assert remote.data.column("source").to_pylist() == ["lamost", "mini-library", "mini-library"]


# Preprocessing of the real files, and the resampler

@pytest.mark.needs_shared
def test_real_spectra_are_preprocessed_or_quarantined_with_a_reason(data_dir, miles):
    survey = [checked(read_folder(data_dir / name)) for name in ("sdss", "lamost")]
    data = pa.concat_tables([ingested.data for ingested in survey] + [miles.data])
    labels = pa.concat_tables([ingested.labels for ingested in survey] + [miles.labels])
    features = preprocess_spectra(RawArtifact(Path("raw"), data, labels, synthetic=False))
    coverage = "pixels usable after masking, resampling and continuum normalisation (the spectrum spans"
    assert reasons(features) == {     # LAMOST medium resolution: two arms, 900 A of 5100 (and a bad blue arm in one)
        "med-58268-HIP95119KP01_sp12-076": f"only 141 of 1024 {coverage} 4900-6873 A in the rest frame, the grid "
                                           "3600-9000 A)",
        "med-58408-TD230151N343645T01_sp01-015": f"only 199 of 1024 {coverage} 4894-6851 A in the rest frame, the "
                                                 "grid 3600-9000 A)"}
    table = features.table.to_pandas().set_index("id")
    assert len(table) == 9 + 2 + 515
    valid = 1 - np.stack(table["mask"].to_numpy())
    flux = np.stack(table["flux"].to_numpy())
    medians = np.array([np.median(row[keep == 1]) for row, keep in zip(flux, valid)])
    assert np.all(np.abs(medians - 1) < 0.15)                                  # continuum-normalised
    miles_ids = table.index.str.startswith("m")
    coverage = valid[miles_ids].mean(axis=1)
    assert np.isclose(np.median(coverage), 0.788, atol=0.001) and coverage.min() > 0.77  # 3541-7412 A of 3600-9000
    assert table.loc["spec-3764-55514-0972", "snr"] < 3 < table.loc["spec-0618-52049-0372", "snr"]  # L0 kept
    assert table.loc["m0145", "teff"] == 5073.0
    # Spectra processed together (in batches sharing a grid) come out as they do one by one.
    for row in (0, 11, 13):                                                    # SDSS, LAMOST LRS, MILES
        alone = preprocess_spectra(RawArtifact(Path("raw"), data.slice(row, 1), labels, synthetic=False)).table
        together = features.table.filter(pc.equal(features.table["id"], alone["id"][0]))
        np.testing.assert_array_equal(alone["mask"][0].values.to_numpy(), together["mask"][0].values.to_numpy())
        for column in ("flux", "ivar"):
            np.testing.assert_allclose(alone[column][0].values.to_numpy(), together[column][0].values.to_numpy(),
                                       rtol=1e-5)


GRIDS = {   # rest-frame loglam: SDSS (log-linear, shifted by a redshift), MILES (linear in air), LAMOST MRS (two arms)
    "sdss": 3.5812 + 1e-4 * np.arange(3838) - np.log10(1 + 1.3e-4),
    "linear": np.log10(air_to_vacuum(3540.5 + 0.9 * np.arange(4300))),
    "arms": np.concatenate([3.6902 + 1e-5 * np.arange(4151), 3.7999 + 1e-5 * np.arange(3726)]),
}


@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_the_sparse_resampler_agrees_with_the_reference_loop_and_conserves_flux(kind):
    out_edges = 10 ** output_grid(1000)[2]
    lower, upper = (10**edge for edge in pixel_extents(GRIDS[kind]))
    operator = ResamplingOperator.build(lower, upper, out_edges)
    rng = np.random.default_rng(7)
    shape = (lower.size, 5)                                                    # pixel-major: 5 spectra
    flux, variance, good = rng.uniform(0.5, 2.0, shape), rng.uniform(0.01, 0.05, shape), rng.random(shape) > 0.03
    variance = np.where(good, variance, 0).astype(np.float32)                # 0 marks the bad pixels
    flux_sum, weight, variance_sum = operator.apply(flux.astype(np.float32), variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        out_flux, out_ivar = flux_sum / weight, weight**2 / variance_sum
    coverage = weight / np.diff(out_edges)[:, None]
    usable_flux, usable_ivar, usable = operator.resampled(flux.astype(np.float32), variance)
    np.testing.assert_array_equal(usable, coverage >= 0.5)
    np.testing.assert_allclose(usable_flux, np.where(usable > 0, out_flux, 0), rtol=1e-6)
    np.testing.assert_allclose(usable_ivar, np.where(usable > 0, out_ivar, 0), rtol=1e-6)
    # The reference takes contiguous pixel edges: compare arm by arm (no output pixel reaches across the gap).
    arms = np.split(np.arange(lower.size), np.flatnonzero(lower[1:] > upper[:-1] * (1 + 1e-12)) + 1)
    assert len(arms) == (2 if kind == "arms" else 1)
    for column in range(shape[1]):
        for arm in arms:
            edges = np.append(lower[arm], upper[arm[-1]])
            ref_flux, ref_variance, ref_coverage = resample(edges, flux[arm, column], variance[arm, column],
                                                            good[arm, column], out_edges)
            covered = ref_coverage > 0
            np.testing.assert_allclose(coverage[covered, column], ref_coverage[covered], rtol=1e-5)
            np.testing.assert_allclose(out_flux[covered, column], ref_flux[covered], rtol=1e-5)
            np.testing.assert_allclose(1 / out_ivar[covered, column], ref_variance[covered], rtol=1e-5)
    # Flux conservation: each good input pixel hands to the grid exactly its integral over the grid's range.
    inside = np.clip(np.minimum(upper, out_edges[-1]) - np.maximum(lower, out_edges[0]), 0, None)
    np.testing.assert_allclose(flux_sum.sum(axis=0), (np.where(good, flux, 0) * inside[:, None]).sum(axis=0),
                               rtol=1e-5)


def test_pixels_beside_a_gap_between_arms_do_not_reach_into_it():
    loglam = np.concatenate([3.69 + 1e-5 * np.arange(100), 3.80 + 1e-5 * np.arange(100)])
    lower, upper = pixel_extents(loglam)
    np.testing.assert_allclose(upper - lower, 1e-5, rtol=1e-6)
    assert np.all(lower[1:] >= upper[:-1] - 1e-12)


def test_masked_row_median_is_the_median_of_the_valid_entries():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(200, 37))
    valid = rng.random((200, 37)) > rng.uniform(0, 1, (200, 1))
    valid[0] = False
    expected = [np.median(row[keep]) if keep.any() else np.nan for row, keep in zip(values, valid)]
    np.testing.assert_array_equal(masked_row_median(values, valid), expected)


# The command

@pytest.mark.needs_shared
def test_ingest_command_reads_a_folder_end_to_end(tmp_path, data_dir):
    folder = tmp_path / "spectra"
    (folder / "library" / "spectra").mkdir(parents=True)
    for name in ("spec-0618-52049-0372.fits", "spec-7332-56683-0788.fits"):
        shutil.copy(data_dir / "sdss" / name, folder)
    shutil.copy(data_dir / "lamost" / "spec-57287-KP193637N444141V03_sp10-161.fits.gz", folder)
    for star in ("m0145", "m0443", "m0838"):
        shutil.copy(data_dir / "miles" / "spectra" / MILES_FILE.format(star), folder / "library" / "spectra")
    with open(data_dir / "miles" / "labels.csv", newline="") as handle:
        table = list(csv.reader(handle))
    write_labels(folder / "library" / "labels.csv", table[0],
                 [row for row in table[1:] if row[0] in ("m0145", "m0443", "m0838", "m0002")])
    out = tmp_path / "raw"
    command = ["-m", "steps.ingest", "spectra", "--source", str(folder), "--samples", "0", "--out", str(out)]
    result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest.counts == {"objects": 6, "quarantined": 1} and not manifest.synthetic
    data = pq.read_table(out / DATA_FILES["spectra"])
    assert data.schema.equals(SPECTRA_SCHEMA)
    assert data.column("id").to_pylist() == ["m0145", "m0443", "m0838", "spec-0618-52049-0372",
                                             "spec-57287-KP193637N444141V03_sp10-161", "spec-7332-56683-0788"]
    labels = pq.read_table(out / LABELS_FILE).to_pandas().set_index("id")
    assert labels.loc["m0145", "teff"] == 5073.0 and labels.loc["spec-0618-52049-0372"].isna().all()
    assert pq.read_table(out / QUARANTINE_TABLE).to_pylist() == [
        {"id": "m0002", "source": "library/labels.csv", "reason": "label row m0002 matches no spectrum file"}]

    features = tmp_path / "features"
    result = subprocess.run([sys.executable, "-m", "steps.preprocess", "spectra", "--in", str(out), "--out",
                             str(features)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(features / FEATURES_FILE).num_rows == 6
    assert json.loads((features / "spec.json").read_text())["grid"]["length"] == 1024


def test_a_folder_without_spectrum_files_says_so_and_names_what_it_holds(tmp_path):
    from steps.ingest.spectra_files import read_folder

    with pytest.raises(ValueError, match=r"no spectrum files \(FITS: .fits, .fit, .fts, gzipped or not\) in it; "
                                         r"it is empty"):
        read_folder(tmp_path)
    for name in ("koi_cumulative.csv", "lightcurves-sample.json", ".hidden"):
        (tmp_path / name).write_text("x")
    with pytest.raises(ValueError, match="it holds 2 other files: koi_cumulative.csv, lightcurves-sample.json$"):
        read_folder(tmp_path, shown_as="the kepler folder")


def test_a_catalogue_in_fits_is_quarantined_as_a_table_not_a_spectrum(tmp_path):
    """A TOPCAT-written catalogue (as the Gaia benchmark stars' file) has a 1-D byte array in front of its table."""
    from steps.ingest.spectra_files import read_folder

    columns = [fits.Column(name="teff", format="E", array=np.full(3, 5000.0)),
               fits.Column(name="mag_G", format="E", array=np.full(3, 9.0))]
    fits.HDUList([fits.PrimaryHDU(np.zeros(16, np.uint8)),
                  fits.BinTableHDU.from_columns(columns, name="Joined")]).writeto(tmp_path / "stars.fits")
    [row] = read_folder(tmp_path).quarantine.rows
    assert row["reason"] == ("stars.fits: a FITS table (3 rows x 2 columns in HDU 'JOINED'), not a spectrum: a "
                             "catalogue is photometry's input")
