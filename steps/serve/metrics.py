"""Prometheus metrics of the API, on a registry of its own (one per app, so tests can run several apps).

Requests by route and status, request latency, objects per model call (the micro-batch sizes), model call time,
the served version of each model, and swaps. `/metrics` renders them in the text exposition format.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ApiMetrics:
    """The API's metric families."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("stellar_api_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("stellar_api_request_duration_seconds", "Time to answer a request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.objects = Counter("stellar_api_predicted_objects", "Objects predicted", ["model", "version"],
                               registry=self.registry)
        self.batch_size = Histogram("stellar_api_batch_objects", "Objects per model call (micro-batch size)",
                                    ["model"], buckets=SIZE_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("stellar_api_batch_duration_seconds", "Time of one model call", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model_info = Gauge("stellar_api_model_info", "The version being served (value 1)",
                                ["model", "version", "kind"], registry=self.registry)
        self.swaps = Counter("stellar_api_model_swaps", "Production versions swapped in", ["model"],
                             registry=self.registry)
        self.ready = Gauge("stellar_api_ready", "1 when every production model is loaded and warmed up",
                           registry=self.registry)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._object_children: dict[tuple[str, str], Any] = {}

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (the labelled children are looked up once, then kept)."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (self.requests.labels(route, method, str(status)),
                                                       self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def count_objects(self, model: str, version: str, objects: int) -> None:
        """Objects predicted for one request."""
        key = (model, version)
        child = self._object_children.get(key)
        if child is None:
            child = self._object_children[key] = self.objects.labels(model, version)
        child.inc(objects)

    def observe_batch(self, model: str, objects: int, seconds: float) -> None:
        """One model call of `objects` objects that took `seconds`."""
        self.batch_size.labels(model).observe(objects)
        self.batch_seconds.labels(model).observe(seconds)

    def served(self, model: str, version: str, kind: str, replaced: tuple[str, str] | None) -> None:
        """A version swapped in for `model`; `replaced` is the (version, kind) it replaced."""
        if replaced is not None:
            self.model_info.remove(model, *replaced)
            self.swaps.labels(model).inc()
        self.model_info.labels(model, version, kind).set(1)

    def withdrawn(self, model: str, version: str, kind: str) -> None:
        """`model` serves no version any more (its production alias was rolled back to none)."""
        self.model_info.remove(model, version, kind)
        self.swaps.labels(model).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
