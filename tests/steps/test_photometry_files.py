"""Photometry replayed from folders of real archive files (`../shared/data/gaia`), and its preprocessing: every
real file read or set aside with its reason, corrupted copies quarantined, labels reaching the features, and the
preprocessing of real catalogues (no E(B-V), bright saturated stars)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from steps.core.artifacts import ArtifactWriter, read_manifest
from steps.core.quarantine import QUARANTINE_TABLE
from steps.ingest import sources
from steps.ingest.bands import BANDS
from steps.ingest.__main__ import ingest
from steps.ingest.photometry_files import read_photometry_folder, read_table
from steps.ingest.schemas import DATA_FILES, LABELS_FILE, PHOTOMETRIC_BANDS, PHOTOMETRY_SCHEMA, STELLAR_LABELS_SCHEMA
from steps.ingest.sources import IngestRequest
from steps.ingest.synthetic import photometry as synthetic_photometry
from steps.preprocess.__main__ import main as preprocess_main
from steps.core.names import FEATURES_FILE, SPEC_FILE
from steps.preprocess.common import read_raw
from steps.preprocess.photometry import MASK_BITS, gaia_saturation_corrected, preprocess_photometry

BENCHMARK_FILE = "gbs_v3_tmass_gaiadr3_hip_allwise_all_lite.fits"
ARCHIVE_VOTABLE = "1710099405832VAL-result.vot"


@pytest.fixture(scope="module")
def gaia_dir(shared_dir) -> Path:
    return shared_dir / "data" / "gaia"


@pytest.fixture(autouse=True)
def photometry_folder_reader(monkeypatch):
    """The reader registered for folder sources, as `steps.ingest.sources` does."""
    monkeypatch.setitem(sources.FOLDER_READERS, "photometry", read_photometry_folder)


def read_folder(location: Path | str, samples: int = 0) -> sources.Ingested:
    ingested = read_photometry_folder(IngestRequest("photometry", samples, location=str(location)))
    assert ingested.data.schema.equals(PHOTOMETRY_SCHEMA) and ingested.labels.schema.equals(STELLAR_LABELS_SCHEMA)
    assert ingested.data.column("id").to_pylist() == ingested.labels.column("id").to_pylist()
    return ingested


# The real files

def test_archive_formats_are_read_and_the_datalink_bundle_is_skipped(gaia_dir, caplog):
    ingested = read_folder(gaia_dir / "archive_formats")
    ids = ingested.data.column("id").to_pylist()
    assert len(ids) == 52 == len(set(ids)) and len(ingested.quarantine) == 0   # 2 VOTable + 5 ECSV + 45 new JSON
    assert "cone_search.json: 5 row(s) repeat ids already read from 1712337806100O-result.ecsv" in caplog.text
    assert "a Gaia DataLink XP_SAMPLED product, not catalogue photometry" in caplog.text
    votable = Table.read(gaia_dir / "archive_formats" / ARCHIVE_VOTABLE, format="votable", use_names_over_ids=True)
    star = ingested.data.to_pandas().set_index("id").loc[str(votable["source_id"][0])]
    assert star["mag_G"] == pytest.approx(float(votable["phot_g_mean_mag"][0]))
    flux_term = 2.5 / np.log(10) / float(votable["phot_g_mean_flux_over_error"][0])
    assert star["err_G"] == pytest.approx(np.hypot(flux_term, 0.0027553202))
    assert star["parallax"] == pytest.approx(float(votable["parallax"][0])) and np.isnan(star["ebv"])
    assert np.isnan(star[["mag_J", "mag_W1"]].astype(float)).all()           # archive responses without 2MASS/WISE
    labels = ingested.labels.to_pandas()
    assert labels["teff"].notna().sum() == 19 and "from the Gaia GSP-Phot columns" in caplog.text


def test_benchmark_stars_keep_reference_labels_and_only_stars_without_photometry_are_quarantined(gaia_dir, caplog):
    ingested = read_folder(gaia_dir / "benchmark_stars")
    assert ingested.data.num_rows == 190
    assert [(row["id"], row["reason"]) for row in ingested.quarantine.rows] == [
        (star, "no usable band: G, BP, RP, J, H, Ks, W1, W2 all missing") for star in ("HIP71681", "HIP71683")]
    labels = ingested.labels.to_pandas().set_index("id")
    assert labels.loc["HIP101345"].tolist() == pytest.approx([5514.0, 3.95, 0.05])   # Soubiran et al. (2023)
    assert labels["teff"].notna().all() and "labels (teff, logg, feh) from the reference columns" in caplog.text

    catalogue = read_table(gaia_dir / "benchmark_stars" / BENCHMARK_FILE, "fits")
    data = ingested.data.to_pandas().set_index("id")
    without_gaia = [hip for hip, gaia in zip(catalogue["hip"], catalogue["source_id_gaiadr3"].mask) if gaia]
    star = catalogue[catalogue["hip"] == without_gaia[0]][0]
    assert data.loc[without_gaia[0], "parallax"] == pytest.approx(star["parallax_hip"])  # Hipparcos stands in
    assert data.loc["HIP101345", "mag_Ks"] == pytest.approx(3.999) and np.isnan(data.loc["HIP101345", "err_Ks"])
    # 2MASS ph_qual of HIP101345 is DDE: the Ks fit was poor, so its error is not trusted


@pytest.mark.parametrize("folder, objects, ingest_quarantined, features, preprocess_quarantined", [
    ("archive_formats", 52, 0, 52, 0),
    ("benchmark_stars", 190, 2, 171, 19),
])
def test_every_real_gaia_file_goes_through_ingest_and_preprocess(gaia_dir, tmp_path, folder, objects,
                                                                  ingest_quarantined, features,
                                                                  preprocess_quarantined):
    ingest("photometry", str(gaia_dir / folder), 0, 0, tmp_path / "raw")
    assert read_manifest(tmp_path / "raw").counts == {"objects": objects, "quarantined": ingest_quarantined}
    assert preprocess_main(["photometry", "--in", str(tmp_path / "raw"), "--out", str(tmp_path / "features")]) == 0
    manifest = read_manifest(tmp_path / "features")
    assert manifest.counts == {"objects_in": objects, "objects_out": features, "quarantined": preprocess_quarantined}
    table = pq.read_table(tmp_path / "features" / FEATURES_FILE).to_pandas()
    spec = json.loads((tmp_path / "features" / SPEC_FILE).read_text())
    assert set(spec["features"]) <= set(table.columns) and "dereddened" in spec["features"]
    assert (table["dereddened"] == 0).all()                           # no E(B-V) in these catalogues
    quarantine = pq.read_table(tmp_path / "features" / QUARANTINE_TABLE).to_pandas()
    assert quarantine["reason"].str.fullmatch(r"only [01] usable band\(s\), fewer than 2 \(.*brighter than.*\)").all()
    if folder == "benchmark_stars":
        masks = table[[f"mask_{band}" for band in PHOTOMETRIC_BANDS]].to_numpy()
        assert not (masks == 0).all(axis=1).any()                     # no star usable in all 8 bands
        wise = table[["mask_W1", "mask_W2"]].to_numpy()                # brighter than W1 8.1, W2 6.7, or unmatched
        assert (wise & (MASK_BITS["saturated"] | MASK_BITS["missing"]) > 0).all()
        assert table.set_index("id").loc["HIP101345", "teff"] == 5514.0            # labels reach the features


# Defects and edge cases

def test_corrupted_copies_are_quarantined_and_intact_files_still_read(gaia_dir, tmp_path):
    folder = tmp_path / "corrupted"
    folder.mkdir()
    for name, keep in ((BENCHMARK_FILE, 100_000), (ARCHIVE_VOTABLE, 15_000), ("1712337806100O-result.ecsv", 15_000),
                       ("cone_search.json", 50_000), ("gaia_dr3_source_id_5937083312263887616_dl_products_fits.zip",
                                                      10_000)):
        source = next(gaia_dir.rglob(name))
        (folder / f"truncated-{name}").write_bytes(source.read_bytes()[:keep])
    shutil.copy(gaia_dir / "archive_formats" / ARCHIVE_VOTABLE, folder / "intact.vot")
    ingested = read_folder(folder)
    assert ingested.data.num_rows == 2 and set(ingested.data.column("source").to_pylist()) == {"intact.vot"}
    reasons = {row["id"]: row["reason"] for row in ingested.quarantine.rows}
    assert sorted(reasons) == sorted(path.name for path in folder.glob("truncated-*"))
    assert reasons[f"truncated-{BENCHMARK_FILE}"].startswith("unreadable fits file: ")
    assert "truncated" in reasons[f"truncated-{BENCHMARK_FILE}"]
    assert reasons[f"truncated-{ARCHIVE_VOTABLE}"].startswith("unreadable votable file: ")
    assert reasons["truncated-cone_search.json"].startswith("unreadable json file: JSONDecodeError")
    assert reasons["truncated-gaia_dr3_source_id_5937083312263887616_dl_products_fits.zip"].startswith(
        "unreadable zip file: BadZipFile")


def test_rows_without_a_band_or_an_identifier_are_quarantined(tmp_path):
    (tmp_path / "gaia.csv").write_text(
        "source_id,phot_g_mean_mag,phot_g_mean_flux_over_error,phot_bp_mean_mag,phot_rp_mean_mag,parallax\n"
        "101,12.5,900.0,12.9,11.9,3.2\n"
        "102,,,,,1.1\n"
        ",13.0,800.0,13.4,12.4,2.0\n")
    ingested = read_folder(tmp_path)
    assert ingested.data.column("id").to_pylist() == ["101"]
    assert [(row["id"], row["reason"]) for row in ingested.quarantine.rows] == [
        ("102", "no usable band: G, BP, RP, J, H, Ks, W1, W2 all missing"),
        ("gaia.csv#2", "no identifier (no id, name, hip, source_id or designation)")]
    assert np.isnan(ingested.data.column("err_BP").to_numpy()[0])    # no flux_over_error column: error unknown


def test_survey_quality_flags_are_applied_in_the_raw_schema_conventions(tmp_path):
    (tmp_path / "crossmatch.csv").write_text(
        "name,j_m,j_msigcom,h_m,h_msigcom,ks_m,ks_msigcom,ph_qual_tmass,cc_flg,"
        "w1mpro,w1mpro_error,w2mpro,w2mpro_error,ph_qual_allwise,cc_flags\n"
        "clean,10.1,0.02,9.8,0.02,9.7,0.02,AAA,000,9.6,0.02,9.6,0.02,AAAA,0000\n"
        "flagged,10.1,0.02,9.8,0.02,9.7,0.02,AXE,c00,9.6,0.02,9.6,0.02,AZAA,0D00\n")
    data = read_folder(tmp_path).data.to_pandas().set_index("id")
    assert not data.loc["clean"].drop("source").astype(float).filter(regex="^(mag|err)_(J|H|Ks|W1|W2)$").isna().any()
    flagged = data.loc["flagged"]
    assert flagged["mag_J"] == 10.1 and np.isnan(flagged["err_J"])    # cc_flg c: confusion-contaminated
    assert np.isnan(flagged["mag_H"]) and np.isnan(flagged["err_H"])  # ph_qual X: no valid brightness
    assert flagged["mag_Ks"] == 9.7 and np.isnan(flagged["err_Ks"])   # ph_qual E: poor profile fit
    assert np.isnan(flagged["err_W2"]) and flagged["err_W1"] == 0.02  # AllWISE Z (W2) and spurious D (W2)


def test_vizier_column_names_are_understood(tmp_path):
    vizier = {"Source": [4583627001381815936], "Gmag": [7.01], "e_Gmag": [0.003], "BPmag": [9.27],
              "e_BPmag": [0.009], "RPmag": [5.61], "e_RPmag": [0.005], "Jmag": [3.9], "e_Jmag": [0.25],
              "Kmag": [2.7], "e_Kmag": [0.3], "W1mag": [2.5], "e_W1mag": [0.2], "Plx": [2.3], "e_Plx": [0.03],
              "[Fe/H]": [-0.2]}
    Table(vizier).write(tmp_path / "vizier.ecsv", format="ascii.ecsv")
    ingested = read_folder(tmp_path)
    row = ingested.data.to_pandas().iloc[0]
    assert row["id"] == "4583627001381815936"
    assert (row["mag_G"], row["err_BP"], row["mag_J"], row["mag_Ks"], row["err_W1"], row["parallax_error"]) == (
        7.01, 0.009, 3.9, 2.7, 0.2, 0.03)
    assert ingested.labels.column("feh").to_pylist() == [-0.2] and ingested.labels.column("teff").null_count == 1


def test_the_pipelines_own_column_names_are_understood(tmp_path):
    """A CSV of the prediction API's fields (`mag_<band>`, `err_<band>`, `parallax`, `ebv`, `id`), some left out:
    its `id` wins over `source`, its E(B-V) is kept, a band it lacks is missing."""
    (tmp_path / "mine.csv").write_text("id,source,mag_G,err_G,mag_BP,err_BP,mag_Ks,parallax,parallax_error,ebv\n"
                                       "star-1,my survey,11.2,0.003,11.7,0.004,9.1,4.5,0.02,0.12\n")
    ingested = read_folder(tmp_path)
    row = ingested.data.to_pandas().iloc[0]
    assert row["id"] == "star-1"
    assert (row["mag_G"], row["err_G"], row["mag_BP"], row["mag_Ks"], row["parallax"], row["ebv"]) == (
        11.2, 0.003, 11.7, 9.1, 4.5, 0.12)
    assert np.isnan(row["err_Ks"]) and np.isnan(row["mag_RP"]) and np.isnan(row["mag_W1"])


def test_a_cell_that_is_not_a_number_loses_only_itself_and_unknown_bands_are_named(tmp_path, caplog):
    """One bad cell makes a CSV column text: the other rows keep their G; the bad cell is missing and named, as is
    a column for a band the pipeline does not read."""
    (tmp_path / "typo.csv").write_text("id,mag_G,err_G,mag_BP,err_BP,mag_V\n"
                                       "a,11.2,0.003,11.7,0.004,11.5\nb,abc,0.003,11.8,0.004,11.6\n"
                                       "c,11.4,0.003,11.9,0.004,11.7\n")
    with caplog.at_level("WARNING"):
        data = read_folder(tmp_path).data.to_pandas().set_index("id")
    assert data.loc["a", "mag_G"] == 11.2 and data.loc["c", "mag_G"] == 11.4 and np.isnan(data.loc["b", "mag_G"])
    assert data.loc["b", "mag_BP"] == 11.8
    assert "typo.csv: 1 value(s) of mag_G are not numbers and are read as missing (row 2: 'abc')" in caplog.text
    assert "typo.csv: column mag_V ignored: not a band the pipeline reads" in caplog.text
    (tmp_path / "typo.csv").unlink()
    (tmp_path / "one.csv").write_text("id,mag_G,err_G,mag_BP,err_BP\na,11.2x,0.003,11.7,0.004\n")  # no G number at all
    with caplog.at_level("WARNING"):
        assert np.isnan(read_folder(tmp_path).data.to_pandas()["mag_G"].iloc[0])
    assert "one.csv: 1 value(s) of mag_G are not numbers and are read as missing (row 1: '11.2x')" in caplog.text


def test_sdss_magnitudes_are_not_taken_for_gaia_bands(tmp_path, caplog):
    """The pipeline's names are matched as written: SDSS's `mag_g` is not Gaia's `mag_G`."""
    (tmp_path / "sdss.csv").write_text("id,mag_u,mag_g,mag_r,mag_G,err_G\ns1,18.1,16.9,16.4,16.5,0.003\n")
    with caplog.at_level("WARNING"):
        row = read_folder(tmp_path).data.to_pandas().iloc[0]
    assert row["mag_G"] == 16.5 and np.isnan(row["mag_BP"])
    assert all(f"column {name} ignored" in caplog.text for name in ("mag_u", "mag_g", "mag_r"))


def test_a_fits_file_of_several_tables_is_read_from_the_one_with_photometry(tmp_path, capfd):
    """The catalogue may follow another table (an SDSS spec-*.fits holds two of neither): the table with a band
    column is read, and astropy's "hdu= was not specified" warning is not printed once per file."""
    from astropy.io import fits

    notes = fits.BinTableHDU(Table({"note": ["observed twice"]}))
    catalogue = fits.BinTableHDU(Table({"id": ["a"], "mag_G": [11.2], "err_G": [0.003], "mag_BP": [11.7],
                                        "err_BP": [0.004]}))
    fits.HDUList([fits.PrimaryHDU(), notes, catalogue]).writeto(tmp_path / "two.fits")
    fits.HDUList([fits.PrimaryHDU(), notes, notes.copy()]).writeto(tmp_path / "none.fits")
    ingested = read_folder(tmp_path)
    assert ingested.data.to_pandas().set_index("id").loc["a", "mag_G"] == 11.2 and ingested.data.num_rows == 1
    assert "hdu= was not specified" not in capfd.readouterr().err

    (tmp_path / "two.fits").unlink()  # the catalogue first, then a table that cannot be read: the catalogue counts
    (tmp_path / "none.fits").unlink()
    bad = fits.TableHDU.from_columns([fits.Column(name="n", format="I5", array=np.array([12345, 23456]))])
    fits.HDUList([fits.PrimaryHDU(), catalogue, bad]).writeto(tmp_path / "then_bad.fits")
    data = (tmp_path / "then_bad.fits").read_bytes()
    at = data.rfind(b"1234523456")
    (tmp_path / "then_bad.fits").write_bytes(data[:at] + b"abcdeXYZ!?" + data[at + 10:])
    ingested = read_folder(tmp_path)
    assert ingested.data.column("id").to_pylist() == ["a"] and len(ingested.quarantine) == 0


def test_a_table_with_an_id_column_names_rows_by_it_alone(tmp_path):
    """Its `source` says where a row came from: a row without an id is quarantined, not named after it."""
    (tmp_path / "mine.csv").write_text("id,source,mag_G,err_G,mag_BP,err_BP\na,my survey,11.2,0.003,11.7,0.004\n"
                                       ",my survey,12.2,0.003,12.7,0.004\n")
    ingested = read_folder(tmp_path)
    assert ingested.data.column("id").to_pylist() == ["a"]
    assert [row["reason"] for row in ingested.quarantine.rows] == [
        "no identifier (no id, name, hip, source_id or designation)"]


def test_identifiers_of_a_text_table_are_kept_as_written(tmp_path):
    """Gaia source_ids are 19 digits, beyond a float's 16: one id the CSV reader cannot take for an integer (1e5) made
    it read the column as floats, and two neighbouring stars came out with one id; 0012 came out as 12."""
    ids = ["4472832130942575872", "4472832130942575873", "5853498713190525696", "0012", "1e5"]
    (tmp_path / "gaia.csv").write_text("source_id,phot_g_mean_mag,phot_g_mean_flux_over_error,phot_bp_mean_mag,"
                                       "phot_rp_mean_mag,parallax\n"
                                       + "".join(f"{star},12.5,900.0,12.9,11.9,3.2\n" for star in ids))
    assert read_folder(tmp_path).data.column("id").to_pylist() == ids


def test_a_file_name_that_is_not_utf8_is_read_and_named_with_escapes(tmp_path):
    (tmp_path / os.fsdecode(b"cat_\xe9.csv")).write_text("mag_G,err_G,mag_BP,err_BP\n11.2,0.003,11.7,0.004\n"
                                                         "12.2,0.003,x,y\n")
    (tmp_path / "good.csv").write_text("id,mag_G,err_G\nb,10.0,0.003\n")
    ingested = read_folder(tmp_path)
    assert ingested.data.column("id").to_pylist() == ["b"]
    assert [row["source"] for row in ingested.quarantine.rows] == ["cat_\\xe9.csv"] * 2


def test_json_that_is_not_a_table_is_passed_over_not_quarantined(tmp_path, caplog, gaia_dir):
    (tmp_path / "status.json").write_text(json.dumps({"status": "ERROR", "message": "query timed out"}))
    with pytest.raises(ValueError, match="no photometry in it: the 1 table file"):  # alone, it leaves nothing
        read_folder(tmp_path)
    shutil.copy(gaia_dir / "archive_formats" / "1712337806100O-result.ecsv", tmp_path / "gaia.ecsv")
    ingested = read_folder(tmp_path)
    assert ingested.data.num_rows > 0 and len(ingested.quarantine) == 0
    assert "status.json: skipped, not photometry" in caplog.text


def test_a_folder_without_photometry_says_what_each_file_is(tmp_path, shared_dir):
    """An empty folder, or one of another modality's files, is one error naming each file and why it holds none."""
    for name in ("koi_cumulative.csv", "lightcurves-sample.json"):
        shutil.copy(shared_dir / "data" / "kepler" / name, tmp_path / name)
    shutil.copy(next((shared_dir / "data" / "miles").rglob("*.fits.gz")), tmp_path / "star.fits.gz")
    with pytest.raises(ValueError) as error:
        read_folder(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: no photometry in it: the 3 table file(s) in it hold none: koi_cumulative.csv: no photometric "
        "column (looked for Gaia, 2MASS and AllWISE magnitude names); lightcurves-sample.json: JSON lines (12 "
        "documents, one a line: a light-curve export?), not the archive's table layout; star.fits.gz: a FITS file "
        "without a table (an image, or a 1-D spectrum)")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="no photometry in it: it holds no table file"):
        read_folder(tmp_path / "sub")


def test_samples_limit_the_rows_read(gaia_dir):
    ingested = read_folder(gaia_dir / "archive_formats", samples=3)
    assert ingested.data.num_rows == 3
    assert ingested.data.column("source").to_pylist() == [ARCHIVE_VOTABLE] * 2 + ["1712337806100O-result.ecsv"]


def test_an_s3_folder_is_read_like_a_local_one(gaia_dir, s3_server, s3_bucket, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    client = boto3.client("s3", endpoint_url=s3_server)
    for name in (ARCHIVE_VOTABLE, "1712337806100O-result.ecsv"):
        client.upload_file(str(gaia_dir / "archive_formats" / name), s3_bucket, f"replay/gaia/{name}")
    remote = read_folder(f"s3://{s3_bucket}/replay/gaia")
    local = read_folder(gaia_dir / "archive_formats", samples=7)
    assert remote.data.to_pandas().equals(local.data.to_pandas())


# Preprocessing of real catalogues

def test_rows_without_reddening_are_kept_as_observed_and_flagged(tmp_path):
    tables = synthetic_photometry.generate(6, 3)
    data = tables["photometry"].to_pandas()
    data.loc[[1, 4], "ebv"] = np.nan
    with ArtifactWriter(tmp_path / "raw", stage="ingest.photometry", synthetic=True) as writer:
        writer.write_table(DATA_FILES["photometry"], pa.Table.from_pandas(data, schema=PHOTOMETRY_SCHEMA,
                                                                          preserve_index=False))
        writer.write_table(LABELS_FILE, tables["labels"])
    raw = read_raw(tmp_path / "raw", "photometry")
    features = preprocess_photometry(raw)
    assert len(features.quarantine) == 0
    table = features.table.to_pandas().set_index("id")
    assert table["dereddened"].tolist() == [1, 0, 1, 1, 0, 1]
    for row, scale in ((1, 0.0), (0, data.loc[0, "ebv"])):           # E(B-V) unknown: magnitudes as observed
        raw_row, processed = data.loc[row], table.loc[data.loc[row, "id"]]
        usable = [band for band in PHOTOMETRIC_BANDS if processed[f"mask_{band}"] == 0]
        assert len(usable) >= 3
        assert [processed[f"mag_{band}"] for band in usable] == pytest.approx(
            [raw_row[f"mag_{band}"] - BANDS[band].extinction * scale for band in usable])
    assert (preprocess_photometry(raw, deredden=False).table.column("dereddened").to_pylist() == [0] * 6)


def test_gaia_bright_star_saturation_correction():
    observed = {"G": np.array([3.0, 5.0, 9.0, 1.5]), "BP": np.array([3.5, 5.4, 9.4, 2.0]),
                "RP": np.array([2.5, 4.5, 8.5, 1.0]), "J": np.array([2.0, 4.0, 8.0, 0.5])}
    corrected = gaia_saturation_corrected(observed)
    # EDR3 documentation 5.5.2: G within 2 < G < 8, BP within 2 < G < 3.94, RP within 2 < RP < 3.45
    assert corrected["G"] - observed["G"] == pytest.approx([0.00343, 0.01338, 0.0, 0.0], abs=5e-5)
    assert corrected["BP"] - observed["BP"] == pytest.approx([-0.1930, 0.0, 0.0, 0.0], abs=5e-4)
    assert corrected["RP"] - observed["RP"] == pytest.approx([-0.1617, 0.0, 0.0, 0.0], abs=5e-4)
    assert corrected["J"] is observed["J"]


def test_a_star_read_again_with_other_values_is_quarantined_and_an_identical_repeat_is_not(tmp_path):
    """A repeated id was dropped with an INFO line whatever it held: `stellar predict sed` wrote 59 rows for 60
    inputs and said nothing of the conflicting measurement."""
    header = "id,mag_G,err_G,mag_BP,err_BP\n"
    (tmp_path / "a.csv").write_text(header + "s1,12.0,0.003,12.4,0.005\ns2,13.0,0.003,13.4,0.005\n"
                                    "s1,12.5,0.003,12.4,0.005\n")
    (tmp_path / "b.csv").write_text(header + "s2,13.0,0.003,13.4,0.005\n")          # the same measurement again
    ingested = read_folder(tmp_path)
    assert ingested.data.column("id").to_pylist() == ["s1", "s2"]
    assert ingested.data.column("mag_G").to_pylist() == [12.0, 13.0]                 # the first readings
    assert [(row["id"], row["reason"], row["source"]) for row in ingested.quarantine.rows] == [
        ("s1", "repeats s1 of a.csv with other values (mag_G 12 there, 12.5 here): the first reading is kept",
         "a.csv")]


@pytest.mark.needs_shared
def test_the_api_makes_every_feature_of_a_catalogue_row_as_training_does(gaia_dir, tmp_path):
    """The API computes an SED model's inputs from raw catalogue photometry (`steps.serve.catalogue.preprocessed`);
    it left out `saturated_<band>`, which the ridge reads, so 159 of 171 Gaia benchmark stars (most saturated in
    2MASS) got other answers from the API than from `stellar predict sed` (up to 189 K)."""
    from steps.serve.catalogue import preprocessed
    from steps.serve.payloads import Batch, FieldSpec, InputSpec

    ingested = read_folder(gaia_dir / "benchmark_stars")
    raw = ingested.data
    with ArtifactWriter(tmp_path / "raw", stage="ingest.photometry") as writer:
        writer.write_table(DATA_FILES["photometry"], raw)
        writer.write_table(LABELS_FILE, ingested.labels)
    features = preprocess_photometry(read_raw(tmp_path / "raw", "photometry"))
    names = features.spec["features"]
    arrays = {name: raw.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
              for name in raw.column_names if name not in ("id", "source")}
    inputs = InputSpec("sed", [FieldSpec(name, None, False, -1e30, 1e30) for name in names], True, len(raw))
    served = preprocessed(Batch(arrays, len(raw), raw.column("id").to_pylist()), inputs, features.spec)
    assert served.ids == features.table.column("id").to_pylist() and set(served.arrays) == set(names)
    assert any(name.startswith("saturated_") for name in names)
    assert features.table.column("saturated_J").to_numpy().sum() > 100   # the benchmark stars are bright
    for name in names:
        np.testing.assert_array_equal(served.arrays[name], features.table.column(name).to_numpy(
            zero_copy_only=False).astype(np.float64), err_msg=name)
