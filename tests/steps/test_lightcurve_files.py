"""The light-curve folder reader on every real file in ../shared/data/kepler and rrlyrae_s82, on archive-layout
FITS made at test time, and on deliberately corrupted copies; then the preprocessing of those curves: the
Stripe 82 RR Lyrae periods, and the fast periodogram and binning checked against the libraries' results."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.timeseries import LombScargle

from fixtures.kepler.archive_files import kepler_llc, tess_lc
from steps.core.quarantine import QUARANTINE_TABLE
from steps.ingest import sources
from steps.ingest.__main__ import main as ingest_main
from steps.ingest.lightcurve_files import read_folder, read_lightcurve_folder
from steps.ingest.schemas import DATA_FILES, KEPLER_BENIGN_QUALITY_BITS, LABELS_FILE, SDSS_BANDS
from steps.ingest.sources import IngestRequest
from steps.preprocess.common import RawArtifact
from steps.preprocess.lightcurves import binned_median, lomb_scargle, preprocess_lightcurves

pytestmark = pytest.mark.needs_shared


@pytest.fixture(scope="module")
def kepler_dir(shared_dir) -> Path:
    return shared_dir / "data" / "kepler"


@pytest.fixture(scope="module")
def rrlyrae_dir(shared_dir) -> Path:
    return shared_dir / "data" / "rrlyrae_s82"


@pytest.fixture(scope="module")
def kepler_json(kepler_dir):
    return read_folder(kepler_dir)


@pytest.fixture(scope="module")
def stripe82(rrlyrae_dir):
    return read_folder(rrlyrae_dir)


def preprocessed(ingested, workers: int = 1):
    return preprocess_lightcurves(RawArtifact(Path("."), ingested.data, ingested.labels, False), workers=workers)


# The real files

def test_kepler_json_lines_are_read_with_labels_and_koi_periods(kepler_json):
    labels = kepler_json.labels.to_pandas().set_index("id")
    assert len(labels) == 11                                     # 12 lines, one star listed twice
    assert labels["class"].value_counts().to_dict() == {"transit": 4, "eclipsing_binary": 3, "false_positive": 3}
    assert labels.at["kplr000757450", "period"] == pytest.approx(8.884922995)      # koi_period of K00889.01
    assert labels.at["kplr001718189", "period"] == pytest.approx(21.85362905)      # its first KOI, .01
    data = kepler_json.data.to_pandas().set_index("id")
    flux = data.at["kplr001026032", "flux"]
    assert flux.size == 1556 and np.isnan(flux).sum() == 265 and np.nanmedian(flux) == pytest.approx(1.0)
    assert np.all(np.isfinite(data.at["kplr001026032", "flux_err"]))              # estimated: the export has none
    assert set(data.at["kplr001026032", "band"]) == {"Kepler"}


def test_a_star_listed_twice_with_contradicting_labels_is_kept_once_unlabelled(kepler_json):
    labels = kepler_json.labels.to_pandas().set_index("id")
    assert labels.at["kplr001026957", "class"] is None
    [row] = kepler_json.quarantine.rows
    assert row["id"] == "kplr001026957" and row["source"] == "lightcurves-sample.json:10"
    assert "contradicts 'eclipsing_binary'" in row["reason"] and "kept once, unlabelled" in row["reason"]


def test_stripe82_tables_become_one_multiband_curve_per_star(stripe82):
    assert stripe82.data.num_rows == 483 and len(stripe82.quarantine) == 0
    labels = stripe82.labels.to_pandas().set_index("id")
    assert labels["class"].value_counts().to_dict() == {"RRab": 379, "RRc": 104}
    assert labels.at["S82-RRL-4099", "period"] == pytest.approx(0.641754351271)
    data = stripe82.data.to_pandas().set_index("id")
    band, flux, time = (data.at["S82-RRL-1013184", column] for column in ("band", "flux", "time"))
    assert set(band) == set(SDSS_BANDS) and np.all(np.diff(time) >= 0)
    assert (band == "u").sum() == 53                             # 60 epochs, 7 with no u measurement (-99.99)
    for name in SDSS_BANDS:
        assert np.median(flux[band == name]) == pytest.approx(1.0, rel=1e-4)          # float32 storage
    assert np.all(data.at["S82-RRL-1013184", "quality"] == 0)


def test_stripe82_star_files_extracted_from_the_archive_read_as_from_it(stripe82, rrlyrae_dir, tmp_path):
    with tarfile.open(rrlyrae_dir / "table1.tar.gz") as archive:
        members = [m for m in archive.getmembers() if m.name.endswith(("1013184.dat", "1019544.dat"))]
        archive.extractall(tmp_path, members=members, filter="data")
    shutil.copy(rrlyrae_dir / "table2.dat.gz", tmp_path)
    extracted = read_folder(tmp_path)
    assert extracted.data.column("id").to_pylist() == ["S82-RRL-1013184", "S82-RRL-1019544"]
    whole = stripe82.data.to_pandas().set_index("id")
    for row in extracted.data.to_pylist():
        for column in ("time", "flux", "flux_err", "band"):
            assert list(row[column]) == list(whole.at[row["id"], column])
    assert extracted.labels.column("class").to_pylist() == ["RRab", "RRab"]


def test_a_stripe82_star_file_without_usable_magnitudes_or_cut_mid_line_says_so():
    from steps.ingest.lightcurve_files import UnreadableFile, read_stripe82_star

    row = "10.0 1.0 " + " ".join(f"{51000 + band:.1f} nan 0.02" for band in range(5))
    with pytest.raises(UnreadableFile, match=r"^none of its 60 epochs has, in any of ugriz, a finite time and a "
                                             r"magnitude above 0 and below 40 with an error above 0 and below 10 mag$"):
        read_stripe82_star("\n".join([row] * 60), "1", "1.dat")
    good = "10.0 1.0 " + " ".join(f"{51000 + band:.1f} 17.5 0.02" for band in range(5))
    with pytest.raises(UnreadableFile) as error:
        read_stripe82_star("\n".join([good] * 4 + [good[:40]]), "1", "1.dat")
    assert str(error.value).startswith("unreadable Stripe 82 epoch table: the number of columns changed from 17 to")
    assert "usecols" not in str(error.value)
    with pytest.raises(UnreadableFile, match="^an empty epoch table: no epoch of the star$"):  # was '1 columns'
        read_stripe82_star("\n", "1", "1.dat")


def test_every_real_curve_is_preprocessed_or_quarantined_with_a_reason(kepler_json):
    features = preprocessed(kepler_json)
    assert features.table.num_rows + len(features.quarantine) == kepler_json.data.num_rows
    assert len(features.quarantine) == 0
    table = features.table.to_pandas()
    assert (table["n_bands"] == 1).all() and (table["n_cadences"] > 1000).all()
    eclipsing = table.set_index("id").loc["kplr001433980"]                         # a 1.59-day binary
    assert eclipsing["period"] == pytest.approx(1.592634161, rel=0.01)


def test_rr_lyrae_periods_are_recovered_by_the_multiband_search(rrlyrae_dir):
    """The acceptance figure is measured on all 483 stars by bench/bench_lightcurve_preprocess.py; here 60."""
    features = preprocessed(read_folder(rrlyrae_dir, samples=60), workers=2)
    table = features.table.to_pandas()
    assert len(table) == 60 and len(features.quarantine) == 0
    recovered = np.abs(table["period"] / table["period_true"] - 1) < 0.01
    assert recovered.mean() >= 0.85
    assert (table["n_bands"] == 5).all() and np.isnan(table["bls_period"]).all()
    global_views = np.stack(table["global_view"].to_numpy())
    assert global_views.shape == (60, 201) and np.allclose(global_views.min(axis=1), -1.0)
    assert np.all(np.abs(global_views.argmin(axis=1) - 100) <= 15)                 # minimum light at phase 0
    assert features.spec["classes"] == ["RRab", "RRc"]


# Archive FITS files

def test_kepler_quarters_merge_and_tess_sectors_are_read(tmp_path):
    (tmp_path / "kepler").mkdir()
    (tmp_path / "kepler" / "kplr001026032-2011177032512_llc.fits").write_bytes(kepler_llc(1026032, quarter=9))
    (tmp_path / "kepler" / "kplr001026032-2011271113734_llc.fits").write_bytes(kepler_llc(1026032, quarter=10,
                                                                                            seed=1))
    (tmp_path / "tess2019169103026-s0014-0000000025155310-0150-s_lc.fits").write_bytes(tess_lc(25155310))
    ingested = read_folder(tmp_path)
    data = ingested.data.to_pandas().set_index("id")
    assert data.index.tolist() == ["kplr001026032", "tic25155310"] and len(ingested.quarantine) == 0
    assert data.at["kplr001026032", "time"].size == 3000 and np.all(np.diff(data.at["kplr001026032", "time"]) > 0)
    assert set(data.at["tic25155310", "band"]) == {"TESS"} and data.at["tic25155310", "source"] == "tess"
    assert np.all(data.at["kplr001026032", "quality"][[10, 20]] == [32, 128])      # the archive's flags, as read


def test_benign_kepler_flags_are_those_lightkurve_never_masks():
    from lightkurve.utils import KeplerQualityFlags

    for bit in KEPLER_BENIGN_QUALITY_BITS.values():
        assert bit in KeplerQualityFlags.STRINGS and not bit & KeplerQualityFlags.HARD_BITMASK


# Corrupted copies

def test_corrupted_copies_of_real_files_are_quarantined_with_their_reason(tmp_path, kepler_dir, rrlyrae_dir):
    kepler, rrlyrae = tmp_path / "kepler", tmp_path / "rrlyrae_s82"
    shutil.copytree(kepler_dir, kepler)
    shutil.copytree(rrlyrae_dir, rrlyrae)
    first = json.loads((kepler_dir / "lightcurves-sample.json").read_text().splitlines()[0])
    nan_line = json.dumps({**first, "name": "kplr009999999-2013131215648_llc", "flux": [float("nan")] * 1556})
    with open(kepler / "lightcurves-sample.json", "a") as handle:
        handle.write(nan_line + "\n{\"time\": [1.0, 2.0], \"flux\": [1.0\n")
    (kepler / "kplr001026032-2011177032512_llc.fits").write_bytes(kepler_llc(1026032)[:40000])
    (kepler / "not-a-lightcurve.fits").write_bytes(_image_fits())
    table2 = gzip.decompress((rrlyrae_dir / "table2.dat.gz").read_bytes()).decode()
    (rrlyrae / "table2.dat.gz").write_bytes(gzip.compress((table2 + "77777 ab 0.55\n").encode()))
    _drop_member(rrlyrae / "table1.tar.gz", "table1/4099.dat")

    reasons = {row["id"]: row["reason"] for row in read_folder(kepler).quarantine.rows}
    assert reasons["kplr009999999"].startswith("only 0 of its 1556 points have a finite time and flux")
    assert reasons["lightcurves-sample.json:14"].startswith("unreadable JSON light curve")
    assert reasons["kplr001026032-2011177032512_llc.fits"].startswith("unreadable FITS")
    assert reasons["not-a-lightcurve.fits"].startswith("not a Kepler or TESS light-curve file")
    stripe82 = read_folder(rrlyrae)
    assert {row["id"]: row["reason"] for row in stripe82.quarantine.rows} == {
        "S82-RRL-4099": "label row names no light curve in the folder",
        "S82-RRL-77777": "label row names no light curve in the folder"}
    assert stripe82.data.num_rows == 482



def test_json_that_is_not_a_light_curve_object_is_quarantined_and_the_good_curves_kept(tmp_path, kepler_dir):
    """A JSON line that is a list, a number or null, and a JSON document of another kind (Gaia's cone-search
    answer), are quarantined with their reason instead of stopping the reader."""
    folder = tmp_path / "kepler"
    folder.mkdir()
    sample = (kepler_dir / "lightcurves-sample.json").read_text()
    good = len([line for line in sample.splitlines() if line.strip()])
    (folder / "lightcurves-sample.json").write_text(sample.rstrip("\n") + "\n[1, 2, 3]\n42\nnull\n")
    (folder / "cone_search.json").write_text(json.dumps({"metadata": [{"name": "ra"}], "data": [[1.0]]}, indent=1))

    contents = read_folder(folder)
    reasons = {row["id"]: row["reason"] for row in contents.quarantine.rows}
    assert reasons[f"lightcurves-sample.json:{good + 1}"] == (
        "unreadable JSON light curve: TypeError: a JSON array, not an object with kepid, time and flux")
    assert "a JSON number," in reasons[f"lightcurves-sample.json:{good + 2}"]
    assert "a JSON null," in reasons[f"lightcurves-sample.json:{good + 3}"]
    assert reasons["cone_search.json"].startswith("unreadable JSON light curve: KeyError")
    assert contents.data.num_rows == read_folder(kepler_dir).data.num_rows


def test_a_json_curve_with_nothing_to_estimate_its_noise_from_says_what_it_lacks(tmp_path):
    """One point, a negative or constant flux were all 'no valid cadence: none of its N has a finite time, flux and
    error': the flux was finite, and the error, which the reader estimates from the scatter, was not."""
    time = list(np.arange(200.0) / 48)
    curves = {"one": ([0.0], [1.0]), "negative": (time, [-5.0] * 200), "constant": (time, [7.0] * 200),
              "good": (time, list(1 + 0.001 * np.sin(np.arange(200.0))))}
    (tmp_path / "curves.json").write_text("".join(json.dumps({"kepid": index + 1, "time": t, "flux": f}) + "\n"
                                                  for index, (t, f) in enumerate(curves.values())))
    contents = read_folder(tmp_path)
    assert [row["reason"] for row in contents.quarantine.rows] == [
        "only 1 of its 1 points have a finite time and flux: too few to estimate its noise from",
        "its median flux is -5: a star's flux is positive",
        "its flux does not change from one point to the next: no noise to estimate its errors from (not a measured "
        "light curve)"]
    assert contents.data.num_rows == 1


def _image_fits() -> bytes:
    from astropy.io import fits

    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4))), fits.ImageHDU(np.ones((2, 2)))]).writeto(buffer)
    return buffer.getvalue()


def _drop_member(archive: Path, name: str) -> None:
    members = {}
    with tarfile.open(archive) as source:
        for member in source.getmembers():
            if member.isfile() and member.name != name:
                members[member] = source.extractfile(member).read()
    with tarfile.open(archive, "w:gz") as target:
        for member, data in members.items():
            target.addfile(member, io.BytesIO(data))


# Samples, s3:// folders and the ingest stage

def test_samples_take_the_first_curves_by_id(rrlyrae_dir):
    ingested = read_folder(rrlyrae_dir, samples=5)
    assert ingested.data.column("id").to_pylist() == sorted(ingested.data.column("id").to_pylist())
    assert ingested.data.num_rows == 5 and ingested.labels.num_rows == 5


def test_an_s3_folder_is_read_like_a_local_one(tmp_path, kepler_dir, s3_bucket, s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    client = boto3.client("s3", endpoint_url=s3_server)
    for path in kepler_dir.iterdir():
        client.upload_file(str(path), s3_bucket, f"real/kepler/{path.name}")
    remote = read_lightcurve_folder(IngestRequest("lightcurves", 0, location=f"s3://{s3_bucket}/real/kepler"))
    local = read_folder(kepler_dir)
    assert remote.data.column("id").equals(local.data.column("id")) and remote.labels.equals(local.labels)


def test_the_ingest_stage_replays_a_whole_folder(tmp_path, kepler_dir, monkeypatch):
    monkeypatch.setitem(sources.FOLDER_READERS, "lightcurves", read_lightcurve_folder)
    out = tmp_path / "raw"
    assert ingest_main(["lightcurves", "--source", str(kepler_dir), "--samples", "3", "--out", str(out)]) == 0
    assert pq.read_table(out / DATA_FILES["lightcurves"]).num_rows == 11              # a folder is read whole
    assert pq.read_table(out / LABELS_FILE).column("class").null_count == 1
    assert pq.read_table(out / QUARANTINE_TABLE).column("id").to_pylist() == ["kplr001026957"]


# The fast paths against the libraries

def test_fft_periodogram_finds_astropys_peak_on_a_gapped_kepler_grid():
    rng = np.random.default_rng(3)
    time = 131.5 + np.arange(4400) * 0.0204335
    keep = (rng.random(time.size) > 0.05) & ((time < 160) | (time > 161.2))
    time = time[keep]
    for period in (0.3, 2.7, 11.0):
        flux = 1 + 0.002 * np.sin(2 * np.pi * time / period) + rng.normal(0, 0.001, time.size)
        baseline = time[-1] - time[0]
        found, power = lomb_scargle(time, flux, baseline)
        frequency, reference = LombScargle(time, flux).autopower(minimum_frequency=2 / baseline,
                                                                 maximum_frequency=22.2, samples_per_peak=100)
        assert abs(1 / found - frequency[np.argmax(reference)]) < 0.05 / baseline      # a twentieth of a peak
        assert power == pytest.approx(reference.max(), rel=1e-3)


def test_vectorised_binned_median_matches_a_loop_over_bins():
    rng = np.random.default_rng(4)
    phase, flux = rng.uniform(-0.5, 0.5, 3000), rng.normal(size=3000)
    edges = np.linspace(-0.5, 0.5, 2002)
    expected = [np.median(flux[(phase >= low) & (phase < high)]) if np.any((phase >= low) & (phase < high))
                else np.nan for low, high in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(binned_median(phase, flux, edges), expected)


def test_a_stripe82_archive_cut_short_keeps_the_star_files_before_the_cut(tmp_path, rrlyrae_dir):
    from steps.ingest.lightcurve_files import read_stripe82_table1

    data = (rrlyrae_dir / "table1.tar.gz").read_bytes()
    whole, _ = read_stripe82_table1(data, "table1.tar.gz")
    curves, bad = read_stripe82_table1(data[:200_000], "table1.tar.gz")
    assert 0 < len(curves) < len(whole) and {c.id for c in curves} < {c.id for c in whole}
    [(origin, reason, _)] = bad
    assert origin == "table1.tar.gz"
    assert reason.startswith(f"unreadable archive after {len(curves)} readable star files, which are kept: ")
