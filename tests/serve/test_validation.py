"""Bad input per endpoint: a 422 naming the field and the problem (413 over the limits, 415 for other encodings),
never a 500, never a trace."""

from __future__ import annotations

import io

import numpy as np
import pytest

from api_helpers import SED_STAR, ready_client, settings_for, split_rows


def _spectrum(api_home, **changes):
    row = split_rows(api_home, "spectral", 1)[0]
    row.update(changes)
    return row


def _length(api_home) -> int:
    return len(split_rows(api_home, "spectral", 1)[0]["flux"])


CASES = [  # (model, instances builder, words the message must contain)
    ("spectral", lambda h: [{"flux": [1.0, 2.0]}], ["instances[0].flux", "expected", "got 2"]),
    ("spectral", lambda h: [{"ivar": [1.0] * _length(h)}], ["flux", "missing"]),
    ("spectral", lambda h: [_spectrum(h, flux=[1.0] * (_length(h) - 1) + [None])], ["flux[", "got null"]),
    ("spectral", lambda h: [_spectrum(h, flux=["x"] * _length(h))], ["flux[0]", "got a string"]),
    ("spectral", lambda h: [_spectrum(h, flux=[1e9] * _length(h))], ["flux[0]", "outside the physical range"]),
    ("spectral", lambda h: [_spectrum(h, ivar=[-1.0] * _length(h))], ["ivar[0]", "outside the physical range"]),
    ("spectral", lambda h: [_spectrum(h, mask=[0.5] * _length(h))], ["mask[0]", "whole number"]),
    ("spectral", lambda h: [_spectrum(h, redshift=0.1)], ["instances[0].redshift", "unknown field"]),
    ("spectral", lambda h: [_spectrum(h), 7], ["instances[1]", "expected an object"]),
    ("sed", lambda h: [{"mag_U": 12.0}], ["instances[0].mag_U", "unknown field"]),
    ("sed", lambda h: [{"mag_G": "bright"}], ["mag_G", "expected a number or null"]),
    ("sed", lambda h: [{"mag_G": True}], ["mag_G", "boolean"]),
    ("sed", lambda h: [{"mag_G": None}], ["instances[0]", "no input has a value"]),
    ("sed", lambda h: [{"mag_G": 12.0, "id": {"a": 1}}], ["instances[0].id", "64-bit integer"]),
    ("lightcurve", lambda h: [{"global_view": [0.0] * 3, "local_view": [0.0] * 3}], ["global_view", "expected"]),
    ("lightcurve", lambda h: [{**split_rows(h, "lightcurve", 1)[0], "period": -2.0}], ["period", "physical range"]),
    ("lightcurve", lambda h: [{**split_rows(h, "lightcurve", 1)[0], "global_view": None}], ["global_view", "missing"]),
]


@pytest.mark.parametrize("model, instances, words", CASES,
                         ids=[f"{m}-{'-'.join(w)[:40]}" for m, _, w in CASES])
def test_bad_instances_are_a_422_naming_field_and_problem(client, api_home, model, instances, words):
    response = client.post(f"/v1/{model}:predict", json={"instances": instances(api_home)})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail
    assert "Traceback" not in response.text


def test_sed_takes_magnitudes_and_errors_as_archives_give_them(client):
    """99 (with an error of 99) for no measurement, a negative error: the band is masked, as `stellar predict sed`
    masks it, and the star answered from its other bands; the batch is not refused."""
    j99 = {**SED_STAR, "id": "j99", "mag_J": 99.0, "err_J": 99.0}
    response = client.post("/v1/sed:predict", json={"instances": [{**SED_STAR, "id": "ok"}, j99,
                                                                  {"id": "g", "mag_G": 12.0, "err_G": -0.1}]})
    assert response.status_code == 200, response.text
    ok, masked, alone = response.json()["predictions"]
    assert ok["problem"] is None and masked["problem"] is None and masked["teff"] is not None
    assert alone["teff"] is None and alone["problem"].startswith("only 0 usable band(s)")
    assert "G: no error in (0, 0.5] mag" in alone["problem"]


@pytest.mark.parametrize("body, words", [
    (b"{not json", ["body", "not valid JSON"]),
    (b"[1, 2]", ["body", "instances"]),
    (b'{"instances": []}', ["instances", "empty batch"]),
    (b'{"instances": {"flux": 1}}', ["instances", "expected a list"]),
    (b'{"instances": [{"mag_G": 1}], "extra": 1}', ["body", "unknown field 'extra'"]),
    (b'{"instances": [{"mag_G": 1e999}]}', ["instances[0].mag_G", "inf is not a finite number"]),  # the field named
    (b'{"instances": [{"mag_G": -Infinity}]}', ["instances[0].mag_G", "-inf is not a finite number"]),
    # what Python's parser would take but orjson does not, in a body with a NaN: still not JSON for the API
    (b'{"instances": [{"mag_G": NaN, "id": "x"', ["body", "not valid JSON"]),
    (b'{"instances": [{"mag_G": NaN, "err_G": 1' + b"0" * 400 + b'}]}', ["body", "not valid JSON"]),
    (b'{"instances": [{"mag_G": NaN, "id": "\\ud800"}]}', ["body", "not valid JSON"]),
    ('{"instances": [{"mag_G": NaN}]}'.encode("utf-16"), ["body", "not valid JSON"]),
    (b'\xef\xbb\xbf{"instances": [{"mag_G": NaN}]}', ["body", "not valid JSON"]),
])
def test_malformed_bodies_are_a_422(client, body, words):
    response = client.post("/v1/sed:predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert all(word in response.json()["detail"] for word in words), response.json()


def test_npz_problems_name_the_array(client, api_home):
    length = _length(api_home)

    def npz(**arrays):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return client.post("/v1/spectral:predict", content=buffer.getvalue(),
                           headers={"content-type": "application/x-npz"})

    assert f"flux: expected a 2-D array of shape (objects, {length}), here (2, {length}); got (2, {length - 1})" \
        in npz(flux=np.ones((2, length - 1))).json()["detail"]
    assert f"got ({length},): one object is shape (1, {length})" in npz(flux=np.ones(length)).json()["detail"]
    assert "one object" not in npz(flux=np.ones(length - 7)).json()["detail"]
    assert "first axis" in npz(flux=np.ones((2, length)), ivar=np.ones((3, length))).json()["detail"]
    nan = np.ones((1, length))
    nan[0, 5] = np.nan
    assert "instances[0].flux[5]" in npz(flux=nan).json()["detail"]
    assert "unknown field" in npz(flux=np.ones((1, length)), colour=np.ones(1)).json()["detail"]
    # as in JSON: a boolean is not a number, and an id has at most 256 characters
    assert "flux: expected numbers, got an array of bool" in npz(flux=np.ones((1, length), bool)).json()["detail"]
    long_id = npz(flux=np.ones((2, length)), id=np.array(["short", "x" * 300]))
    assert long_id.status_code == 422 and "id[1]: 300 characters, more than the 256" in long_id.json()["detail"]
    garbage = client.post("/v1/spectral:predict", content=b"PK\x03\x04garbage",
                          headers={"content-type": "application/x-npz"})
    assert garbage.status_code == 422 and "not a readable .npz" in garbage.json()["detail"]


def test_other_encodings_are_a_415(client):
    response = client.post("/v1/sed:predict", content=b"mag_G=12", headers={"content-type": "text/csv"})
    assert response.status_code == 415 and "application/json" in response.json()["detail"]


def test_limits_are_a_413(api_home):
    with ready_client(settings_for(api_home, max_body_bytes=4096, max_objects=3)) as client:
        big = client.post("/v1/sed:predict", json={"instances": [{"mag_G": 12.0, "id": "x" * 5000}]})
        assert big.status_code == 413 and "4096 bytes" in big.json()["detail"]
        many = client.post("/v1/sed:predict", json={"instances": [{"mag_G": 12.0}] * 4})
        assert many.status_code == 413 and "more than the 3" in many.json()["detail"]
        chunked = client.post("/v1/sed:predict", content=iter([b'{"instances": [', b" " * 5000, b"]}"]),
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert client.post("/v1/sed:predict", json={"instances": [SED_STAR] * 3}).status_code == 200


def test_npz_bombs_and_broken_archives_are_refused_without_unpacking(client, api_home):
    length = _length(api_home)
    bomb = io.BytesIO()
    np.savez_compressed(bomb, flux=np.zeros((20000, length)))
    refused = client.post("/v1/spectral:predict", content=bomb.getvalue(), headers={"content-type": "application/x-npz"})
    assert refused.status_code == 413 and "uncompressed" in refused.json()["detail"]
    good = io.BytesIO()
    np.savez_compressed(good, flux=np.ones((1, length)))
    broken = bytearray(good.getvalue())
    broken[60:90] = b"\x00" * 30
    answer = client.post("/v1/spectral:predict", content=bytes(broken), headers={"content-type": "application/x-npz"})
    assert answer.status_code == 422, answer.text


def test_numbers_written_as_strings_are_refused(client, api_home):
    flux = [2.5] * _length(api_home)
    flux[3] = "2.5"
    response = client.post("/v1/spectral:predict", json={"instances": [{"flux": flux}]})
    assert response.status_code == 422 and "flux[3]" in response.json()["detail"]


def test_json_nan_as_python_writes_it_is_null(client, api_home):
    """`json.dumps` (and requests' `json=`) write a missing value as NaN, which strict JSON has not: in a number field
    it is read as null, and named where a value is required."""
    import json

    star = {**SED_STAR, "mag_J": None, "err_J": None}
    with_null = client.post("/v1/sed:predict", json={"instances": [star]})
    body = json.dumps({"instances": [{**star, "mag_J": float("nan"), "err_J": float("nan")}]})
    assert "NaN" in body
    with_nan = client.post("/v1/sed:predict", content=body, headers={"content-type": "application/json"})
    assert with_null.status_code == with_nan.status_code == 200, with_nan.text
    assert with_nan.json()["predictions"] == with_null.json()["predictions"]
    flux = [1.0] * _length(api_home)
    flux[3] = float("nan")
    body = json.dumps({"instances": [{"flux": flux}]})
    response = client.post("/v1/spectral:predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "instances[0].flux[3]" in response.json()["detail"], response.text


def test_npz_takes_nan_as_missing_in_optional_fields(client):
    buffer = io.BytesIO()
    np.savez(buffer, mag_G=np.array([12.0, 13.0]), err_G=np.array([0.003, 0.003]), mag_J=np.array([np.nan, 11.5]),
             err_J=np.array([np.nan, 0.02]), mag_BP=np.array([12.4, 13.5]), err_BP=np.array([0.005, 0.005]))
    response = client.post("/v1/sed:predict", content=buffer.getvalue(), headers={"content-type": "application/x-npz"})
    assert response.status_code == 200, response.text


def test_a_light_curve_without_its_optional_period_is_answered(client, api_home):
    row = split_rows(api_home, "lightcurve", 1)[0]
    buffer = io.BytesIO()
    np.savez(buffer, global_view=np.array([row["global_view"]]), local_view=np.array([row["local_view"]]))
    response = client.post("/v1/lightcurve:predict", content=buffer.getvalue(),
                           headers={"content-type": "application/x-npz"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["class"]
