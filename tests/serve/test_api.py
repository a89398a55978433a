"""`stellar serve` after a run: the production models load and each answers a prediction."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from steps.serve.server import create_app

MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}


def split_rows(home: Path, model: str, count: int = 2) -> list[dict]:
    """Rows of the last run's test split, as the API takes them (labels dropped)."""
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    record = json.loads((runs[-1] / "run.json").read_text())
    split = home / "artifacts" / record["tasks"]["split-data"]["outputs"]["split"]["key"]
    rows = pq.read_table(split / MODALITY[model] / "test.parquet").slice(0, count).to_pylist()
    labels = {"id", "teff", "logg", "feh", "class", "period_true"}
    return [{k: v for k, v in row.items() if k not in labels and not (isinstance(v, float) and math.isnan(v))}
            for row in rows]


@pytest.fixture(scope="module")
def client(pipeline_home):
    with TestClient(create_app(str(pipeline_home / "registry"), pipeline_home / "serving")) as client:
        yield client


def test_ready_with_every_production_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    served = {m["name"]: m["version"] for m in client.get("/v1/models").json()}
    assert served == {"spectral": "1", "lightcurve": "1", "sed": "1"}


@pytest.mark.parametrize("model, field", [("spectral", "teff_err"), ("sed", "teff"), ("lightcurve", "class")])
def test_each_model_answers(client, pipeline_home, model, field):
    response = client.post(f"/v1/{model}:predict", json={"instances": split_rows(pipeline_home, model)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["version"] == "1"
    assert len(body["predictions"]) == 2 and body["predictions"][0][field] is not None


def test_bad_input_is_a_422_naming_the_field(client):
    response = client.post("/v1/spectral:predict", json={"instances": [{"flux": [1.0, 2.0]}]})
    assert response.status_code == 422 and "flux" in response.text
    assert client.post("/v1/sed:predict", json={"instances": []}).status_code == 422


def test_not_ready_without_production(tmp_path):
    with TestClient(create_app(str(tmp_path / "registry"), tmp_path / "serving")) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["missing"] == ["lightcurve", "sed", "spectral"]
        assert client.post("/v1/sed:predict", json={"instances": [{"mag_G": 10.0}]}).status_code == 503
