"""A FastAPI app over the model registry's production versions.

Routes: `GET /healthz`, `GET /readyz`, `GET /v1/models`, and one `POST /v1/<model>:predict` per model, each
taking `{"instances": [...]}` with the fields of the model's input spec.
"""

from __future__ import annotations

import math
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from steps.core.logs import get_logger
from steps.core.registry import PRODUCTION, ModelRegistry, RegistryError
from steps.models import load_model

MODEL_NAMES = ("spectral", "lightcurve", "sed")
log = get_logger("serve")


class PredictRequest(BaseModel):
    """A batch of objects to predict."""

    instances: list[dict[str, Any]] = Field(min_length=1, max_length=4096)


class ServedModels:
    """The loaded production models, keyed by name; swapped whole under a lock."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path):
        self.registry = registry
        self.cache_dir = cache_dir
        self.models: dict[str, tuple[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the production version of every model that has one."""
        loaded, errors = {}, {}
        for name in MODEL_NAMES:
            try:
                record, path = self.registry.download(name, PRODUCTION, self.cache_dir)
                loaded[name] = (record.version, load_model(path))
                log.info("loaded %s version %s", name, record.version)
            except (RegistryError, OSError, ValueError) as error:
                errors[name] = str(error)
                log.warning("%s not loaded: %s", name, error)
        with self._lock:
            self.models, self.errors = loaded, errors

    def get(self, name: str) -> tuple[str, Any]:
        with self._lock:
            if name not in self.models:
                raise HTTPException(503, f"model {name!r} is not loaded: {self.errors.get(name, 'no production')}")
            return self.models[name]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def create_app(registry_uri: str, cache_dir: Path) -> FastAPI:
    """The app, with its models loaded at start-up."""
    served = ServedModels(ModelRegistry.open(registry_uri), Path(cache_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served.load()
        yield

    app = FastAPI(title="stellar-pipeline prediction API", lifespan=lifespan)
    app.state.served = served

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready when every model has a loaded production version."""
        missing = sorted(set(MODEL_NAMES) - set(served.models))
        if missing:
            return JSONResponse({"status": "not ready", "missing": missing, "errors": served.errors}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/v1/models")
    def models() -> list[dict[str, Any]]:
        """The served models: name, version and input spec."""
        return [{"name": name, "version": version, "spec": model.spec}
                for name, (version, model) in sorted(served.models.items())]

    def predict(name: str, request: PredictRequest) -> dict[str, Any]:
        version, model = served.get(name)
        try:
            predictions = model.predict_records(request.instances)
        except (KeyError, ValueError, TypeError) as error:
            raise HTTPException(422, f"instances: {error}") from None
        return {"model": name, "version": version,
                "predictions": [{key: _clean(value) for key, value in row.items()} for row in predictions]}

    def route_for(name: str):
        def route(request: PredictRequest) -> dict[str, Any]:
            return predict(name, request)
        return route

    for name in MODEL_NAMES:
        app.add_api_route(f"/v1/{name}:predict", route_for(name), methods=["POST"], name=f"predict_{name}",
                          summary=f"Predict with the production {name} model")
    return app


def serve(registry_uri: str, cache_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(registry_uri, cache_dir), host=host, port=port, log_level="info")
    return 0
