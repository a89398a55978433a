"""One pure-ASGI layer in front of the app: body size limit, bearer-token auth, metrics and the access log.

Pure ASGI (no `BaseHTTPMiddleware`), because it runs on every request and must cost microseconds:
- a request body over `max_body_bytes` is refused with 413 before the app sees it (by its Content-Length, or while
  it streams in);
- with a token configured, `/v1/*` needs `Authorization: Bearer <token>` (401 otherwise); `/healthz`, `/readyz`,
  `/metrics` and the docs never do;
- every request is counted and timed by route, and logged as one JSON line (method, path, status, duration,
  sizes, model, version, object count, request id); never its body or headers.
"""

from __future__ import annotations

import hmac
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from steps.serve.metrics import ApiMetrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def access_logger() -> logging.Logger:
    """The `stellar.access` logger: bare JSON lines on stderr."""
    logger = logging.getLogger("stellar.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class ApiMiddleware:
    """Limits, auth, metrics and access logging for every HTTP request."""

    def __init__(self, app: Callable, metrics: ApiMetrics, routes: set[str], max_body_bytes: int,
                 token: str | None, access_log: bool):
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.token = token.encode() if token else None
        self.log = access_logger() if access_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        outcome = {"status": 500, "bytes": 0}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
            await send(message)

        body_size = 0
        try:
            path = scope["path"]
            if self.token is not None and path.startswith("/v1/") and not self._authorised(headers):
                await _respond(send_counted, 401, "a bearer token is required: Authorization: Bearer <token>",
                               [(b"www-authenticate", b"Bearer")])
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(headers, receive)
                if body is None:
                    await _respond(send_counted, 413, f"request body larger than {self.max_body_bytes} bytes")
                    return
                body_size = len(body)
                receive = _replay(body, receive)
            await self.app(scope, receive, send_counted)
        finally:
            self._record(scope, started, outcome, body_size, request_id)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        """`Authorization: Bearer <token>` (the scheme in any case, RFC 7235) with the configured token."""
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    def _record(self, scope: Scope, started: float, outcome: dict[str, int], body_size: int, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = outcome["status"]
        self.metrics.count_request(route, scope["method"], status, elapsed)
        if self.log is not None:
            state = scope.get("state", {})
            entry = {"event": "access", "method": scope["method"], "path": path, "status": status,
                     "ms": round(elapsed * 1000, 3), "in": body_size, "out": outcome["bytes"],
                     "client": (scope.get("client") or ("", 0))[0], "id": request_id}
            for key in ("model", "version", "objects", "error"):
                if key in state:
                    entry[key] = state[key]
            self.log.info(orjson.dumps(entry).decode())


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then passes through (disconnects)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _respond(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
