"""The API over the registry of a small run: readiness, the three predict routes in both encodings, models, metrics."""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from steps.core.registry import ModelRegistry
from steps.ingest.schemas import PHOTOMETRY_SCHEMA
from steps.models import load_model
from steps.serve.server import create_app
from workflows.predict_cli import predict
from api_helpers import SED_STAR, settings_for, split_rows, wait_ready

OUTPUT_FIELD = {"spectral": "teff_err", "sed": "teff", "lightcurve": "class"}


def test_ready_with_every_production_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {"spectral": "1", "lightcurve": "1", "sed": "1"}


@pytest.mark.parametrize("model", ["spectral", "sed", "lightcurve"])
def test_each_model_answers_with_its_name_and_version_per_object(client, api_home, model):
    rows = split_rows(api_home, model, 3)
    rows[0]["id"] = "star-a"
    response = client.post(f"/v1/{model}:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["version"] == "1"
    assert len(body["predictions"]) == 3
    first = body["predictions"][0]
    assert first["id"] == "star-a" and first["model"] == model and first["version"] == "1"
    assert first[OUTPUT_FIELD[model]] is not None


def test_predictions_equal_the_models_own(client, api_home):
    """What the API answers is what the registered model's SavedModel predicts for the same rows: batching changes
    nothing (the SED route, whose NumPy runtime must agree with the SavedModel, is checked against batch prediction
    below)."""
    rows = split_rows(api_home, "spectral", 6)
    _, path = ModelRegistry.open(str(api_home / "registry")).download("spectral", "1", api_home / "serving")
    expected = load_model(path).predict_records(rows)
    got = client.post("/v1/spectral:predict", json={"instances": rows}).json()["predictions"]
    for mine, theirs in zip(got, expected):
        for key in ("teff", "logg", "feh", "teff_err", "domain_distance"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5)
        assert mine["in_domain"] is theirs["in_domain"] and isinstance(mine["in_domain"], bool)


def test_npz_and_json_give_the_same_answer(client, api_home):
    rows = split_rows(api_home, "spectral", 4)
    buffer = io.BytesIO()
    np.savez(buffer, flux=np.array([r["flux"] for r in rows], np.float32),
             id=np.array(["a", "b", "c", "d"]))
    binary = client.post("/v1/spectral:predict", content=buffer.getvalue(),
                         headers={"content-type": "application/x-npz"})
    assert binary.status_code == 200, binary.text
    as_json = client.post("/v1/spectral:predict", json={"instances": [{"flux": r["flux"]} for r in rows]}).json()
    assert [p["id"] for p in binary.json()["predictions"]] == ["a", "b", "c", "d"]
    for a, b in zip(binary.json()["predictions"], as_json["predictions"]):
        assert a["teff"] == pytest.approx(b["teff"], rel=1e-4)


def test_spectral_continuum_shape_is_optional_and_its_uncovered_blocks_are_null(client, api_home):
    """A spectrum that does not reach some continuum blocks sends them as null (JSON) or NaN (npz): both give the
    same answer; without the shape the model still predicts (from the lines alone); a string is refused."""
    row = split_rows(api_home, "spectral", 1)[0]
    assert len(row["continuum_shape"]) > 3
    partial = dict(row, continuum_shape=row["continuum_shape"][:-3] + [None] * 3)
    as_json = client.post("/v1/spectral:predict", json={"instances": [partial, {"flux": row["flux"]}]})
    assert as_json.status_code == 200, as_json.text
    with_nulls, lines_only = as_json.json()["predictions"]
    assert math.isfinite(with_nulls["teff"]) and math.isfinite(lines_only["teff"])
    shape = np.array([row["continuum_shape"][:-3] + [math.nan] * 3], np.float64)
    buffer = io.BytesIO()
    vectors = {key: np.array([row[key]], np.float32) for key in ("flux", "ivar", "mask") if key in row}
    np.savez(buffer, continuum_shape=shape, **vectors)   # the same inputs: the grid's blue end is masked
    binary = client.post("/v1/spectral:predict", content=buffer.getvalue(),
                         headers={"content-type": "application/x-npz"})
    assert binary.status_code == 200, binary.text
    assert binary.json()["predictions"][0]["teff"] == pytest.approx(with_nulls["teff"], rel=1e-4)
    bad = dict(row, continuum_shape=["warm"] + row["continuum_shape"][1:])
    refused = client.post("/v1/spectral:predict", json={"instances": [bad]})
    assert refused.status_code == 422
    assert "instances[0].continuum_shape[0]: expected a number or null, got a string" in refused.text


def test_sed_takes_missing_bands_as_null_or_absent(client):
    two_bands = {"mag_G": 12.0, "err_G": 0.003, "mag_BP": 12.4, "err_BP": 0.005, "mag_J": None}
    response = client.post("/v1/sed:predict", json={"instances": [SED_STAR, two_bands]})
    assert response.status_code == 200, response.text
    assert all(math.isfinite(p["teff"]) for p in response.json()["predictions"])


def test_sed_answers_as_batch_prediction_does_and_an_object_with_too_few_bands_gets_its_problem(client, api_home, tmp_path):
    """The route preprocesses catalogue photometry as `stellar predict sed` does (saturation, extinction, colours,
    absolute G): the same stars get the same answers from both, and `stellar predict sed` reads a CSV of the
    route's own fields."""
    rows = split_rows(api_home, "sed", 5)
    raw = tmp_path / "stars.parquet"
    columns = {field.name: [row.get(field.name, math.nan) for row in rows] for field in PHOTOMETRY_SCHEMA}
    columns.update(id=[f"s{i}" for i in range(len(rows))], source=["test"] * len(rows))
    pq.write_table(pa.Table.from_pydict(columns, schema=PHOTOMETRY_SCHEMA), raw)
    _, path = ModelRegistry.open(str(api_home / "registry")).download("sed", "1", api_home / "serving")
    expected = predict("sed", path, raw)
    assert (expected["problem"] == "").all()
    # the request's own fields, written as a CSV (no `source`, a field a star lacks left empty), read the same
    sent = tmp_path / "stars.csv"
    pd.DataFrame([{"id": f"s{i}", **row} for i, row in enumerate(rows)]).to_csv(sent, index=False)
    assert "source" not in sent.read_text().splitlines()[0].split(",")
    from_csv = predict("sed", path, sent)
    assert from_csv["id"].tolist() == expected["id"].tolist()
    for key in ("teff", "logg", "feh", "teff_err", "domain_distance"):
        assert from_csv[key].to_numpy() == pytest.approx(expected[key].to_numpy(), rel=1e-9)
    got = client.post("/v1/sed:predict", json={"instances": rows}).json()["predictions"]
    for mine, theirs in zip(got, expected.to_dict("records")):
        for key in ("teff", "logg", "feh", "teff_err", "domain_distance"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4)
    stars = [{"id": "a", **SED_STAR}, {"mag_G": 12.0, "mag_BP": 12.4}, {"id": 7, **SED_STAR}]
    mixed = client.post("/v1/sed:predict", json={"instances": stars})
    assert mixed.status_code == 200, mixed.text
    good, bad, other = mixed.json()["predictions"]
    assert (good["id"], good["problem"], other["id"], other["problem"]) == ("a", None, 7, None)
    assert good["teff"] == other["teff"] and math.isfinite(good["teff"])
    assert bad["id"] is None and bad["teff"] is None and bad["teff_err"] is None and bad["in_domain"] is None
    assert bad["problem"] == ("only 0 usable band(s), fewer than 2 "
                              "(G: no error in (0, 0.5] mag; BP: no error in (0, 0.5] mag)")
    alone = client.post("/v1/sed:predict", json={"instances": [{"ebv": 0.1, "id": "x"}]})
    assert alone.status_code == 422 and alone.json()["detail"].startswith("no object the model can use: "
                                                                          "instances[0] (id 'x'): only 0 usable")
    derived = client.post("/v1/sed:predict", json={"instances": [{**SED_STAR, "c_BP_RP": 0.9}]})
    assert derived.status_code == 422 and "instances[0].c_BP_RP: unknown field" in derived.text


def test_models_lists_versions_inputs_and_metrics(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"spectral", "lightcurve", "sed"}
    spectral = models["spectral"]
    assert spectral["version"] == "1" and spectral["inputs"]["required"] == ["flux"]
    assert spectral["inputs"]["vectors"]["flux"] == spectral["spec"]["grid"]["length"]
    assert spectral["metrics"] and spectral["outputs"] == ["teff", "logg", "feh"]
    assert all(m["domain"]["quantile"] == 0.95 and m["domain"]["threshold"] > 0 for m in models.values())


def test_an_unknown_model_or_route_is_a_404_that_says_what_there_is(client):
    unknown = client.post("/v1/foo:predict", json={"instances": [{"mag_G": 12.0}]})
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == ("no model 'foo': this API serves spectral, lightcurve, sed "
                                        "(POST /v1/<model>:predict)")
    elsewhere = client.get("/v2/models")
    assert elsewhere.status_code == 404 and "no route '/v2/models'" in elsewhere.json()["detail"]
    assert "GET /v1/models" in elsewhere.json()["detail"]


def test_metrics_count_requests_batches_and_versions(client, api_home):
    client.post("/v1/sed:predict", json={"instances": split_rows(api_home, "sed", 3)})
    text = client.get("/metrics").text
    assert 'stellar_api_requests_total{method="POST",route="/v1/sed:predict",status="200"}' in text
    assert 'stellar_api_batch_objects_bucket{le="4.0",model="sed"}' in text
    assert 'stellar_api_model_info{kind="keras-sed-ensemble",model="sed",version="1"} 1.0' in text
    assert "stellar_api_request_duration_seconds_bucket" in text and "stellar_api_ready 1.0" in text


def test_not_ready_without_production(tmp_path, caplog):
    with TestClient(create_app(settings_for(tmp_path))) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while "not serving" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "not serving spectral, lightcurve, sed yet" in caplog.text  # said at start, not only by /readyz
        assert str(tmp_path) in caplog.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["missing"] == ["spectral", "lightcurve", "sed"]
        refused = client.post("/v1/sed:predict", json={"instances": [{"mag_G": 10.0}]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"


def test_openapi_has_the_three_routes_with_bodies_from_the_input_specs(client):
    schema = client.get("/openapi.json").json()
    for model in ("spectral", "lightcurve", "sed"):
        operation = schema["paths"][f"/v1/{model}:predict"]["post"]
        content = operation["requestBody"]["content"]
        assert "application/x-npz" in content and {"422", "413"} <= set(operation["responses"])
    instance = (schema["paths"]["/v1/spectral:predict"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"]["properties"]["instances"]["items"])
    assert instance["required"] == ["flux"] and instance["properties"]["flux"]["minItems"] > 100
    assert "multipart/form-data" in schema["paths"]["/v1/spectral:predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    # /v1/models documents what it answers, and answers that
    import jsonschema

    models = schema["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert models["properties"]["models"]["items"]["required"][:2] == ["name", "version"]
    jsonschema.validate(client.get("/v1/models").json(), models)


def test_runtimes_are_chosen_by_measurement(client):
    """The SED MLP runs in NumPy, the CNNs on their SavedModel."""
    runtimes = {m["name"]: m["runtime"] for m in client.get("/v1/models").json()["models"]}
    assert runtimes == {"sed": "numpy", "spectral": "saved_model", "lightcurve": "saved_model"}


def test_becomes_ready_once_production_versions_appear(api_home, tmp_path):
    """Not ready (503, and predict refused) while the registry has no production; ready once it has, no restart."""
    from steps.core.registry import PRODUCTION

    source = ModelRegistry.open(str(api_home / "registry"))
    target = ModelRegistry.open(str(tmp_path / "registry"))
    with TestClient(create_app(settings_for(tmp_path))) as client:
        assert client.get("/readyz").status_code == 503
        for name in ("spectral", "lightcurve", "sed"):
            _, model_dir = source.download(name, "1", tmp_path / "downloads")
            target.set_alias(name, PRODUCTION, target.register(name, model_dir).version)
        wait_ready(client)
        assert client.get("/readyz").json()["models"] == {"spectral": "1", "lightcurve": "1", "sed": "1"}
        assert client.post("/v1/sed:predict", json={"instances": [SED_STAR]}).status_code == 200


def test_a_spectrum_with_too_few_usable_pixels_gets_its_problem_not_an_answer(client, api_home):
    """Fully masked, or with ivar 0 almost everywhere: preprocessing would have set it aside; sent as arrays, it was
    answered as if it were an average star."""
    good = split_rows(api_home, "spectral", 1)[0]
    length = len(good["flux"])
    masked = {**good, "id": "masked", "mask": [1] * length}
    dark = {**good, "id": "dark", "ivar": [0.0] * (length - length // 4) + [1.0] * (length // 4)}
    response = client.post("/v1/spectral:predict", json={"instances": [{**good, "id": "good"}, masked, dark]})
    assert response.status_code == 200, response.text
    ok, *poor = response.json()["predictions"]
    assert ok["problem"] is None and ok["teff"] is not None
    assert [p["id"] for p in poor] == ["masked", "dark"] and all(p["teff"] is None for p in poor)
    assert poor[0]["problem"] == (f"only 0 of {length} pixels usable (finite flux, mask 0, ivar > 0); a spectrum "
                                  "needs 50% of the grid, as in training")
    assert poor[1]["problem"].startswith(f"only {length // 4} of {length} pixels usable")


def test_head_answers_where_get_does(client):
    for path in ("/healthz", "/readyz", "/v1/models", "/metrics"):
        response = client.head(path)
        assert response.status_code == 200 and not response.content, path


def test_a_request_with_no_object_the_model_can_use_is_refused_naming_each(client, api_home):
    """Every object left out (SED stars with too few bands, spectra with too little of the grid): a 422 naming each,
    as an upload with no readable file is and as `stellar predict` exits non-zero, not a 200 of null answers."""
    response = client.post("/v1/sed:predict", json={"instances": [{"id": "lonely", "mag_G": 12.0, "err_G": 0.003},
                                                                   {"mag_J": 9.0, "err_J": 0.02}]})
    assert response.status_code == 422, response.text
    message = response.json()["detail"]
    assert message.startswith("no object the model can use: instances[0] (id 'lonely'): ")
    assert "; instances[1]: " in message
    good = split_rows(api_home, "spectral", 1)[0]
    masked = {**good, "id": "masked", "mask": [1] * len(good["flux"])}
    response = client.post("/v1/spectral:predict", json={"instances": [masked]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == ("no object the model can use: instances[0] (id 'masked'): only 0 of "
                                         f"{len(good['flux'])} pixels usable (finite flux, mask 0, ivar > 0); a "
                                         "spectrum needs 50% of the grid, as in training")
