"""The served models: the registry's `production` version of each, loaded, warmed up, and swapped when it moves.

`ServedModels.refresh()` reads each model's `production` alias; for a version it does not serve yet it downloads
the model, loads it beside the one being served, warms it up (every batch size up to `batch_max_objects`, so
no micro-batch pays for a first call), and only then replaces the served one — a single reference assignment, so every
request sees either the old model or the new one. Requests already validated against the old model keep their
reference to it and finish on it. `watch()` calls `refresh()` every `interval` seconds; a failed load leaves the
serving model in place and is reported by `/readyz` and the log; an alias rolled back to no version withdraws the
model (503, as before its first promotion), while a registry that cannot be read keeps it serving. A Keras model
runs on the faster of its SavedModel and a NumPy evaluation of its layers (`steps.models.keras.runtime`), measured
at load.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steps.core.logs import get_logger
from steps.core.names import MODEL_NAMES
from steps.core.registry import PRODUCTION, ModelRegistry, RegistryError, VersionRecord
from steps.models import load_model
from steps.serve.catalogue import CATALOGUE_MODELS, catalogue_inputs
from steps.serve.payloads import InputSpec

log = get_logger("serve")


@dataclass(eq=False)
class LoadedModel:
    """One loaded, warmed-up model version: what a request is validated against and predicted with."""

    name: str
    version: str
    predictor: Any
    inputs: InputSpec  # the model's own inputs
    record: VersionRecord
    loaded_at: float = field(default_factory=time.time)
    request_inputs: InputSpec | None = None  # what a JSON or npz body holds, when not the model's inputs (SED)

    def __post_init__(self) -> None:
        if self.request_inputs is None:
            self.request_inputs = (catalogue_inputs(self.inputs.max_objects)
                                   if self.name in CATALOGUE_MODELS else self.inputs)

    def predict_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output columns (targets and 1-sigma errors, or class and probabilities) for decoded input columns."""
        return self.predictor.predict_columns(arrays)

    def warm_up(self, max_objects: int) -> None:
        """Call the model once at every batch size up to `max_objects` (compiled graph and kernels ready)."""
        example = _example_inputs(self.inputs)
        for size in range(1, max_objects + 1):
            self.predict_batch({name: np.repeat(value, size, axis=0) for name, value in example.items()})

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/models` says about it."""
        predictor = self.predictor
        outputs = (list(predictor.targets) if predictor.task == "regression" else list(predictor.classes))
        return {"name": self.name, "version": self.version, "kind": predictor.kind, "task": predictor.task,
                "runtime": getattr(predictor, "runtime", "numpy"),
                "outputs": outputs, "inputs": self.request_inputs.describe(), "spec": predictor.spec,
                "domain": predictor.info.get("domain"),
                "metrics": self.record.metrics, "verdict": self.record.verdict.get("passed"),
                "registered_at": self.record.created_at,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}


def _example_inputs(inputs: InputSpec) -> dict[str, np.ndarray]:
    """One valid object: vectors of ones (mask and ivar zero), scalars mid-range (or 1 when not bounded)."""
    out = {}
    for name, spec in inputs.fields.items():
        if spec.length is not None:
            out[name] = np.zeros((1, spec.length)) if name in ("mask", "ivar") else np.ones((1, spec.length))
        else:
            middle = (spec.low + spec.high) / 2 if spec.bounded else 1.0
            out[name] = np.array([round(middle) if spec.integer else middle])
    return out


def _settle_garbage() -> None:
    """Collect what the replaced models left (their reference cycles), then freeze the rest: the served models'
    objects (TensorFlow's are many) are never again scanned by a garbage-collection pass during a request."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServedModels:
    """The current `LoadedModel` per name, and why a name has none."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path, max_objects: int, batch_max_objects: int,
                 on_swap: Callable[[LoadedModel | None, LoadedModel | None], None] | None = None):
        self.registry = registry
        self.cache_dir = Path(cache_dir)
        self.max_objects = max_objects
        self.batch_max_objects = batch_max_objects
        self.on_swap = on_swap
        self.current: dict[str, LoadedModel] = {}
        self.errors: dict[str, str] = {}
        self.unpromoted: set[str] = set()  # models whose alias record says they have no production version
        self._failed: dict[str, str] = {}  # name -> the version that failed to load
        self.registry_problem: str | None = None  # why the registry cannot be read now (the loaded versions serve)

    def get(self, name: str) -> LoadedModel | None:
        """The model serving `name` now (None when none is loaded)."""
        return self.current.get(name)

    @property
    def ready(self) -> bool:
        """Every model with a production version has it loaded and warmed up, and there is at least one. A model
        without one (refused by the gates, or rolled back to none) must not take the others out of a Service."""
        current, unpromoted = dict(self.current), set(self.unpromoted)
        return bool(current) and all(name in current or name in unpromoted for name in MODEL_NAMES)

    def refresh(self) -> list[str]:
        """Load and swap in every model whose production version changed; return the names swapped."""
        swapped, unreadable, absent = [], [], []
        for name in MODEL_NAMES:
            try:
                record = self.registry.resolve(name, PRODUCTION)
            except (RegistryError, OSError, ValueError) as error:
                if self._has_no_production(name):
                    self.unpromoted.add(name)
                    self._withdraw(name, str(error))
                elif name not in self.current:
                    self.errors[name] = str(error)
                    absent.append(name)
                else:  # a registry that cannot be read now: keep serving, and say so
                    unreadable.append(f"{name}: {error}")
                continue
            self.unpromoted.discard(name)
            serving = self.current.get(name)
            if serving is not None and serving.version == record.version:
                continue
            if self._failed.get(name) == record.version:  # tried already; wait for the alias to move
                continue
            try:
                loaded = self._load(name, record)
            except Exception as error:  # a broken version must not take the API down: keep serving the old one
                self._failed[name] = record.version
                self.errors[name] = f"version {record.version} failed to load: {error}"
                log.exception("%s version %s failed to load; still serving %s", name, record.version,
                              serving.version if serving else "nothing")
                continue
            self._failed.pop(name, None)
            self.current[name] = loaded
            self.errors.pop(name, None)
            swapped.append(name)
            log.info("%s: now serving version %s%s", name, record.version,
                     f" (was {serving.version})" if serving else "")
            if self.on_swap is not None:
                self.on_swap(loaded, serving)
            del loaded, serving
        if self.current:  # a registry of some models only: those it never held do not keep the others unready
            self.unpromoted.update(name for name in absent if self._never_registered(name))
        self._note_registry(unreadable)
        if swapped:
            _settle_garbage()
        return swapped

    def _note_registry(self, unreadable: list[str]) -> None:
        """Log once when the registry stops being readable for served models, and when it is back; /readyz shows
        `registry_problem` meanwhile (promotions and rollbacks do not reach the API then)."""
        if unreadable and self.registry_problem is None:
            self.registry_problem = (f"{self.registry.store.uri} cannot be read since "
                                     f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ({unreadable[0]}): "
                                     "serving the versions loaded before; promotions and rollbacks are not seen")
            log.warning("the registry %s", self.registry_problem)
        elif not unreadable and self.registry_problem is not None:
            log.info("the registry %s can be read again", self.registry.store.uri)
            self.registry_problem = None

    def _has_no_production(self, name: str) -> bool:
        """Whether `name`'s alias record says it has no production version (never promoted, or rolled back to
        none); False where the registry or the record cannot be read (the other models are still looked at)."""
        try:
            return self.registry.alias_unset(name, PRODUCTION)
        except (RegistryError, OSError, ValueError):
            return False

    def _never_registered(self, name: str) -> bool:
        """Whether the registry holds no version of `name` at all (False where it cannot be read). Only asked of a
        model that is not served while others are: a registry folder that is gone for a while, or an empty one,
        looks the same, and must neither withdraw what serves nor call an empty registry ready."""
        try:
            return not self.registry.versions(name)
        except (RegistryError, OSError, ValueError):
            return False

    def _withdraw(self, name: str, why: str) -> None:
        """Stop serving `name` (its alias record has no production version: never promoted, or rolled back to
        none): its requests are answered 503 with `why`."""
        self.errors[name] = why
        self._failed.pop(name, None)
        withdrawn = self.current.pop(name, None)
        if withdrawn is None:
            return
        log.warning("%s: version %s withdrawn, no production version left: %s", name, withdrawn.version, why)
        if self.on_swap is not None:
            self.on_swap(None, withdrawn)
        del withdrawn
        _settle_garbage()

    def _load(self, name: str, record: VersionRecord) -> LoadedModel:
        started = time.perf_counter()
        record = self.registry.latest(name, record.version)  # its latest evaluation's metrics and verdict
        _, path = self.registry.download(name, record.version, self.cache_dir)
        predictor = load_model(path)
        if predictor.name != name:
            raise ValueError(f"{path} holds a {predictor.name!r} model, not {name!r}")
        if hasattr(predictor, "use_fastest_runtime"):
            log.info("%s version %s runs on %s", name, record.version, predictor.use_fastest_runtime())
        loaded = LoadedModel(name, record.version, predictor, InputSpec.of(predictor, self.max_objects), record)
        loaded.warm_up(self.batch_max_objects)
        log.info("%s version %s loaded and warmed up in %.2f s", name, record.version, time.perf_counter() - started)
        return loaded

    async def watch(self, interval_s: float) -> None:
        """Refresh every `interval_s` seconds, off the event loop, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # keep watching: the registry may be back at the next tick
                log.exception("reading the registry failed")
