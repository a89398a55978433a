"""Dynamic micro-batching: concurrent requests for one model share one call of its compiled graph.

A request's decoded `Batch` waits in the model's queue; the batcher takes the first waiting request, waits at most
`max_wait_s` for others while fewer than `max_objects` objects are queued, and runs them as one batch on the
model's inference thread (the event loop never blocks on a model). With no wait (the default), a batch is what
queued while the model was busy with the previous one. Requests are only batched with requests that
were validated against the same loaded model, so a request in flight during a hot swap finishes on the version
it was checked against. If a shared call fails, each request of it is run alone, so one request cannot fail
another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steps.core.logs import get_logger
from steps.serve.payloads import Batch

Outputs = dict[str, np.ndarray]
log = get_logger("serve")


class ModelCallFailed(RuntimeError):
    """The model raised on a request that passed validation: a server fault (HTTP 500), logged with its trace."""


class Overloaded(RuntimeError):
    """More objects are queued for the model than the batcher holds (HTTP 503, retry later)."""


@dataclass
class _Waiting:
    model: Any
    batch: Batch
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """One model's request queue and inference thread; `await predict(model, batch)` gives the batch's outputs."""

    def __init__(self, name: str, max_objects: int, max_wait_s: float,
                 on_batch: Callable[[str, int, float], None] | None = None, max_queued_objects: int = 65536):
        self.name = name
        self.max_objects = max_objects
        self.max_wait_s = max_wait_s
        self.max_queued_objects = max_queued_objects
        self.on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._waiting: list[_Waiting] = []
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    async def predict(self, model: Any, batch: Batch) -> Outputs:
        """The model's output columns for `batch`, computed together with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._waiting and self._queued_objects() + batch.n > self.max_queued_objects:
            raise Overloaded(f"{self._queued_objects()} objects already queued for the {self.name} model")
        if self._runner is None or self._runner.done():
            self._arrived = asyncio.Event()
            self._runner = loop.create_task(self._run(), name=f"batcher-{self.name}")
        future = loop.create_future()
        self._waiting.append(_Waiting(model, batch, future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Finish what is queued, then stop the runner and the inference thread."""
        while self._waiting and self._runner is not None and not self._runner.done():
            await asyncio.sleep(0.005)
        if self._runner is not None:
            self._runner.cancel()
        for item in self._waiting:
            _set_exception(item.future, ModelCallFailed(f"the {self.name} model was shut down"))
        await asyncio.to_thread(self._executor.shutdown, True)

    def _queued_objects(self) -> int:
        return sum(item.batch.n for item in self._waiting)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self.max_wait_s
            while self._queued_objects() < self.max_objects and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            group = self._take()
            try:
                await loop.run_in_executor(self._executor, self._compute, loop, group)
            except Exception as error:  # the runner must survive: fail this group, serve the next
                log.exception("%s: a batch could not be run", self.name)
                for item in group:
                    _set_exception(item.future, ModelCallFailed(f"the {self.name} model failed: {error}"))

    def _take(self) -> list[_Waiting]:
        """The first waiting request and those after it on the same model, up to `max_objects` objects."""
        first = self._waiting[0]
        group, kept, count = [first], [], first.batch.n
        for item in self._waiting[1:]:
            if item.model is first.model and count + item.batch.n <= self.max_objects:
                group.append(item)
                count += item.batch.n
            else:
                kept.append(item)
        self._waiting = kept
        return group

    def _compute(self, loop: asyncio.AbstractEventLoop, group: list[_Waiting]) -> None:
        """Run one group (inference thread) and hand each request its rows."""
        started = time.perf_counter()
        try:
            results = _split(group[0].model.predict_batch(_concatenate([item.batch for item in group])),
                             [item.batch.n for item in group])
        except Exception:  # isolate the request that breaks the shared call
            if len(group) > 1:
                for item in group:
                    self._compute(loop, [item])
                return
            log.exception("%s: the model call failed on a batch of %d objects", self.name, group[0].batch.n)
            loop.call_soon_threadsafe(_set_exception, group[0].future,
                                      ModelCallFailed(f"the {self.name} model failed on this request"))
            return
        if self.on_batch is not None:
            try:
                self.on_batch(self.name, sum(item.batch.n for item in group), time.perf_counter() - started)
            except Exception:  # metrics must never cost a request its answer
                log.exception("%s: recording a batch failed", self.name)
        for item, result in zip(group, results):
            loop.call_soon_threadsafe(_set_result, item.future, result)


def _concatenate(batches: list[Batch]) -> dict[str, np.ndarray]:
    """One set of columns for several batches; a field some lack is NaN (missing) for their objects."""
    if len(batches) == 1:
        return batches[0].arrays
    names = list(dict.fromkeys(name for batch in batches for name in batch.arrays))
    out = {}
    for name in names:
        shape = next(batch.arrays[name].shape[1:] for batch in batches if name in batch.arrays)
        out[name] = np.concatenate([batch.arrays[name] if name in batch.arrays
                                    else np.full((batch.n, *shape), np.nan) for batch in batches])
    return out


def _split(outputs: Outputs, sizes: list[int]) -> list[Outputs]:
    bounds = np.cumsum([0, *sizes])
    return [{name: values[start:stop] for name, values in outputs.items()}
            for start, stop in zip(bounds[:-1], bounds[1:])]


def _set_result(future: asyncio.Future, result: Outputs) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
