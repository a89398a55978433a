"""Helpers of the API tests: settings over a home, an app client once ready, split rows as a client sends them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from steps.serve.server import create_app
from steps.serve.settings import ServeSettings

MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}
# One star as a client of the SED route sends it: catalogue magnitudes with their errors, and the parallax.
SED_STAR = {"mag_G": 12.0, "err_G": 0.003, "mag_BP": 12.4, "err_BP": 0.005, "mag_RP": 11.5, "err_RP": 0.005,
            "mag_J": 10.9, "err_J": 0.02, "parallax": 4.0, "parallax_error": 0.05}


def settings_for(home: Path, **overrides) -> ServeSettings:
    """Settings serving `home`'s registry, no access log, quick registry polling."""
    values = {"registry": str(home / "registry"), "cache_dir": home / "serving", "access_log": False,
              "reload_interval_s": 0.2, **overrides}
    return ServeSettings(**values)


def wait_ready(client: TestClient, timeout: float = 180.0) -> None:
    """Poll /readyz until every model is loaded (the app loads them in the background)."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.1)


@contextmanager
def ready_client(settings: ServeSettings) -> Iterator[TestClient]:
    """A TestClient on an app for `settings`, once every model is ready."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def split_rows(home: Path, model: str, count: int = 2) -> list[dict]:
    """Rows of the run's test split as a client sends them, missing values left out (or null inside a vector, as
    JSON has no NaN: the continuum-shape blocks a spectrum does not reach): the production model's inputs, or for
    the SED model, the same stars' catalogue photometry as ingested (the route preprocesses it)."""
    from steps.core.registry import ModelRegistry
    from steps.models import load_model

    _, model_dir = ModelRegistry.open(str(home / "registry")).download(model, "production", home / "serving")
    fields = load_model(model_dir).input_fields
    wanted = {*fields["required"], *fields["optional"]}
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    tasks = json.loads((runs[-1] / "run.json").read_text())["tasks"]
    split = home / "artifacts" / tasks[f"split-{MODALITY[model]}"]["outputs"]["split"]["key"]
    rows = pq.read_table(split / MODALITY[model] / "test.parquet").slice(0, count).to_pylist()
    if model == "sed":
        raw = home / "artifacts" / tasks["ingest-gaia-photometry"]["outputs"]["raw"]["key"] / "photometry.parquet"
        catalogue = {row["id"]: row for row in pq.read_table(raw).to_pylist()}
        rows = [catalogue[row["id"]] for row in rows]
        wanted = {name for name in rows[0] if name.startswith(("mag_", "err_"))} | {"parallax", "parallax_error", "ebv"}

    def nan_free(value):
        return [None if isinstance(v, float) and math.isnan(v) else v for v in value] if isinstance(value, list) else value

    return [{k: nan_free(v) for k, v in row.items() if k in wanted and v is not None
             and not (isinstance(v, float) and math.isnan(v))} for row in rows]


@contextmanager
def live_server(settings: ServeSettings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread, once every model is ready; yields its URL."""
    import threading

    import httpx
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not (server.started and server.servers):
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, httpx.get(f"{url}/readyz").json()
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(60)
