"""Spectra uploaded as the archives' own FITS files: read, preprocessed as in training, predicted; a bad file gets its
problem beside the others' predictions, and a request with no readable file is a 422 naming each."""

from __future__ import annotations

import gzip

import pytest

pytestmark = pytest.mark.needs_shared


FGK_DWARFS = ("spec-4961-55719-0378.fits", "spec-7332-56683-0788.fits")  # F4 V, G8 V (the data's readme.txt)
M1_DWARF = "spec-0618-52049-0372.fits"  # about 3,700 K: cooler than any star of the synthetic training set


def _files(shared_dir, count: int = 2, names=FGK_DWARFS):
    paths = [shared_dir / "data" / "sdss" / name for name in names[:count]]
    return [("file", (path.name, path.read_bytes(), "application/fits")) for path in paths]


def test_sdss_spec_files_are_predicted_with_their_ids(client, shared_dir):
    files = _files(shared_dir)
    response = client.post("/v1/spectral:predict", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for (_, (name, _, _)), prediction in zip(files, predictions):
        assert prediction["id"] == name.removesuffix(".fits") and prediction["problem"] is None
        assert 2000 < prediction["teff"] < 60000 and prediction["teff_err"] > 0


def test_a_teff_beyond_the_training_labels_is_null_with_its_reason(client, shared_dir):
    response = client.post("/v1/spectral:predict", files=_files(shared_dir, 1, (M1_DWARF,)))
    assert response.status_code == 200, response.text
    prediction, = response.json()["predictions"]
    assert prediction["teff"] is None and prediction["teff_err"] is None and prediction["in_domain"] is False
    assert prediction["problem"].startswith("teff left blank: the answer lies beyond the training labels (")
    assert "problem" in client.get("/openapi.json").json()["paths"]["/v1/spectral:predict"]["post"]["responses"][
        "200"]["content"]["application/json"]["schema"]["properties"]["predictions"]["items"]["properties"]


def test_a_bad_file_gets_its_problem_and_the_good_ones_their_predictions(client, shared_dir):
    (_, (name, data, kind)), (_, (other, other_data, _)) = _files(shared_dir, 2)
    lamost = shared_dir / "data" / "lamost" / "med-58268-HIP95119KP01_sp12-076.fits.gz"
    response = client.post("/v1/spectral:predict", files=[
        ("file", (name, data, kind)), ("file", ("half.fits", data[: len(data) // 2], kind)),
        ("file", (lamost.name, lamost.read_bytes(), kind)), ("file", (other, other_data, kind))])
    assert response.status_code == 200, response.text
    first, half, medium, last = response.json()["predictions"]
    assert first["id"] == name.removesuffix(".fits") and first["problem"] is None and first["teff"] > 2000
    assert last["id"] == other.removesuffix(".fits") and last["problem"] is None and last["teff"] > 2000
    assert half["id"] == "half.fits" and half["teff"] is None and "'half.fits': truncated" in half["problem"]
    assert medium["teff"] is None and "only 141 of 1024 pixels usable" in medium["problem"]


def test_a_library_spectrum_that_stops_short_of_the_grid_is_predicted(client, shared_dir):
    """MILES ends at 7410 A, so the continuum blocks redder than that are not covered (NaN): an optional field's
    gaps, predicted as in training, not refused."""
    path = shared_dir / "data" / "miles" / "spectra" / "MILES_res2.50_star_m0002V.fits.gz"
    response = client.post("/v1/spectral:predict", files=[("file", (path.name, path.read_bytes(), "application/fits"))])
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert 2000 < prediction["teff"] < 60000 and prediction["teff_err"] > 0
    assert prediction["id"] == "m0002"  # its MILES number, as the library's labels.csv names it


def test_a_truncated_or_foreign_file_is_a_422_naming_it(client, shared_dir):
    (_, (name, data, kind)), = _files(shared_dir, 1)
    truncated = client.post("/v1/spectral:predict", files=[("file", (name, data[: len(data) // 2], kind))])
    assert truncated.status_code == 422 and name in truncated.json()["detail"]
    assert "truncated" in truncated.json()["detail"]
    foreign = client.post("/v1/spectral:predict", files=[("file", ("notes.txt", b"just text", "text/plain"))])
    assert foreign.status_code == 422 and "notes.txt" in foreign.json()["detail"]
    empty = client.post("/v1/spectral:predict", files=[("other", ("x.fits", data, kind))])
    assert empty.status_code == 422 and "no file uploaded" in empty.json()["detail"]


def test_a_small_file_that_decompresses_to_gigabytes_is_a_quick_422(client, shared_dir):
    """0.4 MB of gzip declaring 400 MB of zeros: the server read it whole (5 GB more memory, 18 s) before."""
    header = b"SIMPLE  =                    T" + b" " * 50 + b"BITPIX  =                  -32" + b" " * 49
    header += b"NAXIS   =                    1" + b" " * 49 + b"NAXIS1  =            100000000" + b" " * 49
    header = (header + b"END" + b" " * 77).ljust(2880, b" ")
    bomb = gzip.compress(header + bytes(100 * 2**20), compresslevel=9)
    assert len(bomb) < 2**20
    (good,) = _files(shared_dir, 1)
    response = client.post("/v1/spectral:predict", files=[("file", ("bomb.fits.gz", bomb, "application/gzip")), good])
    assert response.status_code == 200, response.text
    problem, prediction = response.json()["predictions"]
    assert problem["problem"] == "file 'bomb.fits.gz': more than 64 MiB once decompressed: not one spectrum's file"
    assert prediction["teff"] is not None


def test_files_are_only_taken_by_the_spectral_model(client, shared_dir):
    response = client.post("/v1/sed:predict", files=_files(shared_dir, 1))
    assert response.status_code == 415


def test_two_files_of_one_object_keep_their_places(client, shared_dir):
    (_, (name, data, kind)), = _files(shared_dir, 1)
    response = client.post("/v1/spectral:predict", files=[
        ("file", ("bad-a.fits", data[:1000], kind)), ("file", ("bad-b.fits", b"", kind)), ("file", (name, data, kind)),
        ("file", ("copy.fits", data, kind))])
    assert response.status_code == 200, response.text
    bad_a, bad_b, good, copy = response.json()["predictions"]
    assert (bad_a["id"], bad_b["id"]) == ("bad-a.fits", "bad-b.fits") and bad_a["teff"] is bad_b["teff"] is None
    assert good["id"] == copy["id"] == name.removesuffix(".fits") and good["teff"] == copy["teff"] > 2000


def test_a_spectrum_whose_normalised_flux_is_extreme_is_predicted_as_batch_prediction_does(client, shared_dir):
    """The SDSS L0 dwarf (S/N about 1) normalises to -53,221 at a pixel, which the model clips: the upload was a 422
    for every file sent with it, while `stellar predict` answered it."""
    names = ("spec-3764-55514-0972.fits", *FGK_DWARFS)
    response = client.post("/v1/spectral:predict", files=_files(shared_dir, 3, names))
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["predictions"]] == [name.removesuffix(".fits") for name in names]
    assert all(p["problem"] is None or "left blank" in p["problem"] for p in response.json()["predictions"])
