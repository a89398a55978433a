"""The prediction API: FastAPI on uvicorn, serving the registry's production models.

Routes:
- `POST /v1/spectral:predict`, `POST /v1/lightcurve:predict`, `POST /v1/sed:predict`: a batch of objects as JSON
  (`{"instances": [...]}`) or as NumPy `.npz` (`application/x-npz`), or, for spectra, spectrum FITS files
  (`multipart/form-data`, field `file`); for the SED model, catalogue photometry (`catalogue`: magnitudes, errors,
  parallax, E(B-V)), preprocessed as the training data was. The answer has, per object, the prediction, its 1-sigma
  uncertainty (or class probabilities) and the model name and version that made it.
- `GET /v1/models`: the served versions, their input specs and evaluation metrics.
- `GET /healthz` (alive), `GET /readyz` (every production model loaded and warmed up), `GET /metrics`
  (Prometheus), and the OpenAPI schema and docs, whose request bodies are generated from the served models' input
  specs.

Requests are validated against the model's input spec (`payloads`), micro-batched (`batching`) and run through the
model's compiled graph on an inference thread; `production` is watched and swapped without dropping a request
(`models`). Bad input is a 422 that names the field; too large a body is a 413; no response ever carries a trace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from steps.core.logs import get_logger
from steps.core.registry import ModelRegistry
from steps.serve.batching import MicroBatcher, ModelCallFailed, Overloaded
from steps.serve.catalogue import CATALOGUE_MODELS, preprocessed
from steps.serve.metrics import ApiMetrics
from steps.serve.middleware import ApiMiddleware
from steps.serve.models import MODEL_NAMES, LoadedModel, ServedModels
from steps.serve.payloads import NPZ_MEDIA_TYPE, Batch, InvalidInput, PayloadTooLarge
from steps.serve.settings import ServeSettings
from steps.serve.uploads import FILE_FIELD, FITS_MEDIA_TYPE, decode_spectra_files, with_usable_pixels

log = get_logger("serve")
JSON = "application/json"
FILE_UPLOAD_MODELS = ("spectral",)
INLINE_JSON_BYTES = 256 * 1024
ERROR_SCHEMA = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON)


def _not_found(path: str) -> str:
    """What a 404 says: the model names where the path asks a model for predictions, else where the routes are."""
    served = ", ".join(MODEL_NAMES)
    if path.startswith("/v1/") and path.endswith(":predict"):
        name = path.removeprefix("/v1/").removesuffix(":predict")
        return f"no model {name[:64]!r}: this API serves {served} (POST /v1/<model>:predict)"
    return f"no route {path[:200]!r}: POST /v1/<model>:predict ({served}), GET /v1/models; every route in /docs"


def _error(status: int, detail: str, request: Request | None = None, headers: dict[str, str] | None = None):
    if request is not None:
        request.state.error = detail[:200]
    return _json({"detail": detail}, status, headers)


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The API for `settings` (default: from the environment); models load in the background after start-up."""
    settings = settings or ServeSettings()
    if settings.inference_threads:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(settings.inference_threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    metrics = ApiMetrics()

    def on_swap(loaded: LoadedModel | None, replaced: LoadedModel | None) -> None:
        if loaded is None:
            metrics.withdrawn(replaced.name, replaced.version, replaced.predictor.kind)
        else:
            metrics.served(loaded.name, loaded.version, loaded.predictor.kind,
                           (replaced.version, replaced.predictor.kind) if replaced else None)

    served = ServedModels(ModelRegistry.open(settings.registry, settings.s3_endpoint), settings.cache_dir,
                          settings.max_objects, settings.batch_max_objects, on_swap)
    # read at each scrape, as /readyz reads it: a model found unpromoted changes readiness without any swap
    metrics.ready.set_function(lambda: 1.0 if served.ready else 0.0)
    batchers: dict[str, MicroBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batchers.update({name: MicroBatcher(name, settings.batch_max_objects, settings.batch_max_wait_ms / 1000,
                                            metrics.observe_batch, settings.queue_max_objects)
                         for name in MODEL_NAMES})
        async def load_then_watch() -> None:
            try:
                await asyncio.to_thread(served.refresh)
            except Exception:  # the watcher tries again at its next tick
                log.exception("loading the production models failed")
            missing = [name for name in MODEL_NAMES if name not in served.current]
            if missing:
                log.warning("not serving %s yet: %s. /readyz answers 503 until each has a production version in "
                            "%s that loads (stellar run, or stellar models promote); checked every %g s",
                            ", ".join(missing),
                            "; ".join(f"{name}: {served.errors.get(name, 'not loaded')}" for name in missing),
                            settings.registry, settings.reload_interval_s)
            await served.watch(settings.reload_interval_s)

        watcher = asyncio.create_task(load_then_watch(), name="registry-watch")
        yield
        watcher.cancel()
        for batcher in batchers.values():
            await batcher.close()

    app = FastAPI(title="stellar-pipeline prediction API", version="1", lifespan=lifespan,
                  description="Predictions of the production spectral, light-curve and SED models.")
    app.state.served, app.state.settings, app.state.metrics = served, settings, metrics

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> Response:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=error)
        return _error(500, "internal error (logged on the server)", request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        router_404 = error.status_code == 404 and error.detail == "Not Found"  # no route matched; keep others' own
        detail = _not_found(request.url.path) if router_404 else str(error.detail)
        return _error(error.status_code, detail, request, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        return _error(422, f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", request)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Not every model is ready"}})
    async def readyz() -> Response:
        """Ready when every model with a production version has it loaded and warmed up (`unpromoted`: the models
        whose registry record says they have none), and one at least is; `errors` says why a version is not
        (still serving the previous one, when there is one)."""
        current = dict(served.current)  # one view: the watcher thread may swap or withdraw a model meanwhile
        unpromoted = sorted(served.unpromoted)
        versions = {name: model.version for name, model in current.items()}
        problems = {"errors": dict(served.errors)} if served.errors else {}
        if unpromoted:
            problems["unpromoted"] = unpromoted
        if served.registry_problem:
            problems["registry"] = served.registry_problem
        missing = [name for name in MODEL_NAMES if name not in current and name not in unpromoted]
        if current and not missing:
            return _json({"status": "ready", "models": versions, **problems})
        return _json({"status": "not ready", "missing": missing, "models": versions, **problems}, 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models", tags=["models"])
    async def models() -> Response:
        """The served models: version, kind, outputs, input spec, evaluation metrics and gate verdict."""
        current = dict(served.current)  # one view (see readyz)
        return _json({"models": [current[name].describe() for name in MODEL_NAMES if name in current]})

    def predict_route(name: str) -> Callable:
        async def predict(request: Request) -> Response:
            model = served.get(name)
            if model is None:
                return _error(503, f"the {name} model is not loaded: "
                                   f"{served.errors.get(name, 'loading, or no production version yet')}",
                              request, {"Retry-After": "5"})
            try:
                batch = await _decode(request, name, model)
            except InvalidInput as error:
                return _error(422, str(error), request)
            except PayloadTooLarge as error:
                return _error(413, str(error), request)
            except _UnsupportedMediaType as error:
                return _error(415, str(error), request)
            request.state.model, request.state.version, request.state.objects = name, model.version, batch.requested
            try:
                outputs = await batchers[name].predict(model, batch)
            except Overloaded as error:
                return _error(503, f"overloaded: {error}; retry shortly", request, {"Retry-After": "1"})
            except ModelCallFailed as error:
                return _error(500, str(error), request)
            metrics.count_objects(name, model.version, batch.n)
            blanked = model.predictor.blank_reasons(outputs) if model.predictor.task == "regression" else None
            return _json(_predictions(name, model.version, outputs, batch, blanked))

        predict.__name__ = f"predict_{name}"
        predict.__doc__ = (f"Predict with the production {name} model: a batch of objects in, per object the "
                           "prediction, its uncertainty, and the model name and version out.")
        return predict

    probes = (("/healthz", healthz), ("/readyz", readyz), ("/metrics", prometheus), ("/v1/models", models))
    for path, endpoint in probes:  # HEAD answers as GET does, without the body (health checkers use it)
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    for name in MODEL_NAMES:
        app.add_api_route(f"/v1/{name}:predict", predict_route(name), methods=["POST"], tags=["predict"],
                          name=f"predict_{name}", summary=f"Predict with the production {name} model",
                          response_class=Response)

    app.openapi = lambda: _openapi(app, served)
    app.add_middleware(ApiMiddleware, metrics=metrics, routes={route.path for route in app.routes},
                       max_body_bytes=settings.max_body_bytes,
                       token=settings.token.get_secret_value() if settings.token else None,
                       access_log=settings.access_log)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "HEAD", "POST"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Request-ID", "Retry-After"])  # readable by browser clients
    return app


class _UnsupportedMediaType(ValueError):
    """A body in an encoding the route does not take (HTTP 415)."""


async def _decode(request: Request, name: str, model: LoadedModel) -> Batch:
    """The request's objects, validated against `model`'s request spec, from whichever encoding it came in, as the
    model's inputs (an SED body is catalogue photometry, preprocessed here as in training)."""
    media_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if media_type == FITS_MEDIA_TYPE and name in FILE_UPLOAD_MODELS:
        try:
            form = await request.form(max_files=model.inputs.max_objects, max_fields=16)
        except Exception as error:  # malformed multipart framing
            raise InvalidInput(f"body: not a readable multipart form ({type(error).__name__})") from None
        files = [(upload.filename or f"{FILE_FIELD}[{i}]", await upload.read())
                 for i, upload in enumerate(form.getlist(FILE_FIELD)) if hasattr(upload, "read")]
        return await asyncio.to_thread(decode_spectra_files, files, model.inputs, model.predictor.spec)
    if media_type in (JSON, ""):
        body = await request.body()
        if len(body) > INLINE_JSON_BYTES:  # a big body is parsed off the event loop, which keeps answering
            batch = await asyncio.to_thread(model.request_inputs.decode_json, body)
        else:
            batch = model.request_inputs.decode_json(body)
    elif media_type == NPZ_MEDIA_TYPE:
        batch = await asyncio.to_thread(model.request_inputs.decode_npz, await request.body())
    else:
        accepted = [JSON, NPZ_MEDIA_TYPE] + ([FITS_MEDIA_TYPE] if name in FILE_UPLOAD_MODELS else [])
        raise _UnsupportedMediaType(f"content-type {media_type!r} is not accepted here (use {', '.join(accepted)})")
    if name in CATALOGUE_MODELS:
        return preprocessed(batch, model.inputs, model.predictor.spec).with_something_usable()
    return with_usable_pixels(batch).with_something_usable() if name in FILE_UPLOAD_MODELS else batch


def _predictions(name: str, version: str, outputs: dict[str, Any], batch: Batch,
                 blanked: list[str | None] | None = None) -> dict[str, Any]:
    """The response body: one object per requested object, in request order. A regression model's objects each have
    a `problem`: null, or why the model could not use the object (its outputs are then null: where the request's
    objects are made into the model's inputs, SED photometry and FITS uploads) or why labels were left blank
    (`blanked`, one per object the model was called on: beyond its training labels). The columns are the model
    call's (an optional output, a light curve's period, is there when its input is); the model was called on at
    least one object (`Batch.with_something_usable`)."""
    columns = list(outputs)
    rows = iter([dict(zip(columns, row)) for row in zip(*(outputs[column].tolist() for column in columns))])
    reasons = iter(blanked if blanked is not None else [None] * batch.n)
    if not batch.reports_problems:
        ids = batch.ids or [None] * batch.n
        predictions = [{"id": object_id, **next(rows), **({"problem": next(reasons)} if blanked is not None else {})}
                       for object_id in ids]
    else:
        ids = batch.requested_ids or [None] * batch.requested
        predictions = [{"id": object_id, **dict.fromkeys(columns), "problem": batch.left_out[index]}
                       if index in batch.left_out else {"id": object_id, **next(rows), "problem": next(reasons)}
                       for index, object_id in enumerate(ids)]
    return {"model": name, "version": version,
            "predictions": [{**prediction, "model": name, "version": version} for prediction in predictions]}


def _openapi(app: FastAPI, served: ServedModels) -> dict[str, Any]:
    """The OpenAPI schema, with each predict route's request body generated from the model being served."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    errors = {"401": "Missing or wrong bearer token (when auth is on)", "413": "Body or batch over the limits",
              "415": "Unsupported content type", "422": "Invalid input: the message names the field",
              "500": "Server fault (logged; no trace in the response)",
              "503": "The model is not loaded yet, or too many objects are queued (see Retry-After)"}
    for name in MODEL_NAMES:
        model = served.get(name)
        operation = schema["paths"][f"/v1/{name}:predict"]["post"]
        body = (model.request_inputs.request_schema() if model is not None
                else {"type": "object", "required": ["instances"],
                      "properties": {"instances": {"type": "array", "minItems": 1, "items": {"type": "object"}}}})
        content = {JSON: {"schema": body}, NPZ_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}
        if name in FILE_UPLOAD_MODELS:
            content[FITS_MEDIA_TYPE] = {"schema": {
                "type": "object", "required": [FILE_FIELD],
                "properties": {FILE_FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}}}}
        operation["requestBody"] = {"required": True, "content": content}
        operation["responses"] = {"200": {"description": "One prediction per object",
                                          "content": {JSON: {"schema": _response_schema(model)}}},
                                  **{code: {"description": text, "content": {JSON: {"schema": ERROR_SCHEMA}}}
                                     for code, text in errors.items()}}
    schema["paths"]["/v1/models"]["get"]["responses"]["200"]["content"][JSON]["schema"] = MODELS_SCHEMA
    return schema


_OBJECT = {"type": "object"}
MODELS_SCHEMA = {  # GET /v1/models: `LoadedModel.describe` of each served model
    "type": "object", "required": ["models"],
    "properties": {"models": {"type": "array", "items": {
        "type": "object",
        "required": ["name", "version", "kind", "task", "runtime", "outputs", "inputs", "spec", "metrics"],
        "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "kind": {"type": "string"},
            "task": {"enum": ["regression", "classification"]}, "runtime": {"type": "string"},
            "outputs": {"type": "array", "items": {"type": "string"}},
            "inputs": _OBJECT, "spec": _OBJECT, "domain": {"type": ["object", "null"]}, "metrics": _OBJECT,
            "verdict": {"type": ["boolean", "null"]}, "registered_at": {"type": ["string", "null"]},
            "loaded_at": {"type": "string"}}}}}}


def _response_schema(model: LoadedModel | None) -> dict[str, Any]:
    number = {"type": ["number", "null"]}
    properties: dict[str, Any] = {"id": {"type": ["string", "integer", "null"]}, "model": {"type": "string"},
                                  "version": {"type": "string"}}
    if model is not None and model.predictor.task == "regression":
        for target in model.predictor.targets:
            properties[target] = properties[f"{target}_err"] = number
        properties["problem"] = {"type": ["string", "null"]}
    elif model is not None:
        properties["class"] = {"type": ["string", "null"]}
        properties.update({f"p_{c}": number for c in model.predictor.classes})
        properties["period"] = number
    if model is not None:
        properties["domain_distance"] = number
        properties["in_domain"] = {"type": ["boolean", "null"]}
    prediction = {"type": "object", "properties": properties, "required": ["model", "version"]}
    return {"type": "object", "required": ["model", "version", "predictions"],
            "properties": {"model": {"type": "string"}, "version": {"type": "string"},
                           "predictions": {"type": "array", "items": prediction}}}


def listen_problem(host: str, port: int) -> tuple[str, str] | None:
    """("host" or "port", the setting at fault; why uvicorn could not listen on host:port), or None. Checked before
    the models load: uvicorn finds out only after loading and warming them (13 s with TensorFlow). The socket is
    made as uvicorn's (address reuse; an IPv6 one IPv6-only, as uvloop makes it)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        return "host", f"cannot resolve {host}: {error.strerror}"
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
    except OSError as error:
        at_fault = "port" if error.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
        return at_fault, f"cannot listen on {host}:{port}: {error.strerror or error}"
    return None


def serve(settings: ServeSettings) -> int:
    """Run the API with uvicorn until stopped; SIGTERM lets in-flight requests finish first."""
    import uvicorn

    for key, value in settings.model_dump(exclude_unset=True).items():
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            os.environ[f"STELLAR_API_{key.upper()}"] = (secret() if secret else
                                                       orjson.dumps(value).decode() if isinstance(value, list)
                                                       else str(value))
    uvicorn.run("steps.serve.server:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, loop="uvloop", http="httptools", access_log=False,
                timeout_graceful_shutdown=settings.graceful_shutdown_s, log_level="info")
    return 0
