"""The micro-batcher alone, on a fake model: concurrent requests share calls, each gets its own rows back, requests
validated against different model objects never share a call, and one failing request fails no other."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from steps.serve.batching import MicroBatcher, ModelCallFailed, Overloaded
from steps.serve.payloads import Batch


class EchoModel:
    """Returns `x * scale` per object and records the size of every call; fails on objects with x < 0."""

    def __init__(self, scale: float = 1.0):
        self.scale, self.calls = scale, []

    def predict_batch(self, arrays):
        self.calls.append(len(arrays["x"]))
        if (arrays["x"] < 0).any():
            raise ValueError("negative")
        return {"y": arrays["x"] * self.scale}


def batch(*values: float) -> Batch:
    return Batch({"x": np.array(values, float)}, len(values), None)


async def _gather(batcher, pairs):
    return await asyncio.gather(*(batcher.predict(model, b) for model, b in pairs), return_exceptions=True)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    model, sizes = EchoModel(), []
    batcher = MicroBatcher("echo", max_objects=8, max_wait_s=0.05, on_batch=lambda _, n, s: sizes.append(n))
    results = asyncio.run(_gather(batcher, [(model, batch(i, i + 0.5)) for i in range(10)]))
    for i, result in enumerate(results):
        assert result["y"].tolist() == [i, i + 0.5]
    assert sum(model.calls) == 20 and max(model.calls) <= 8 and len(model.calls) < 10
    assert sizes == model.calls


def test_a_request_larger_than_the_batch_runs_alone():
    model = EchoModel()
    batcher = MicroBatcher("echo", max_objects=4, max_wait_s=0.01)
    results = asyncio.run(_gather(batcher, [(model, batch(*range(10))), (model, batch(1.0))]))
    assert results[0]["y"].tolist() == list(range(10)) and results[1]["y"].tolist() == [1.0]
    assert model.calls == [10, 1]


def test_requests_for_different_model_objects_never_share_a_call():
    old, new = EchoModel(1.0), EchoModel(10.0)
    batcher = MicroBatcher("echo", max_objects=64, max_wait_s=0.05)
    results = asyncio.run(_gather(batcher, [(old, batch(1.0)), (new, batch(1.0)), (old, batch(2.0))]))
    assert [r["y"].tolist() for r in results] == [[1.0], [10.0], [2.0]]
    assert old.calls == [2] and new.calls == [1]


def test_one_failing_request_fails_alone():
    model = EchoModel()
    batcher = MicroBatcher("echo", max_objects=64, max_wait_s=0.05)
    results = asyncio.run(_gather(batcher, [(model, batch(1.0)), (model, batch(-1.0)), (model, batch(3.0))]))
    assert results[0]["y"].tolist() == [1.0] and results[2]["y"].tolist() == [3.0]
    assert isinstance(results[1], ModelCallFailed)


@pytest.mark.parametrize("wait", [0.0, 0.002])
def test_no_wait_or_short_wait_still_answers_everything(wait):
    model = EchoModel()
    batcher = MicroBatcher("echo", max_objects=16, max_wait_s=wait)
    results = asyncio.run(_gather(batcher, [(model, batch(float(i))) for i in range(50)]))
    assert [r["y"][0] for r in results] == list(range(50))


def test_a_full_queue_is_refused_and_a_failing_callback_costs_no_answer():
    model = EchoModel()
    calls = []

    def flaky(name, objects, seconds):
        calls.append(objects)
        raise RuntimeError("metrics backend down")

    batcher = MicroBatcher("echo", max_objects=4, max_wait_s=0.01, on_batch=flaky, max_queued_objects=5)
    results = asyncio.run(_gather(batcher, [(model, batch(1.0, 2.0, 3.0)), (model, batch(4.0, 5.0)),
                                            (model, batch(6.0)), (model, batch(7.0))]))
    assert results[0]["y"].tolist() == [1.0, 2.0, 3.0] and results[1]["y"].tolist() == [4.0, 5.0]
    assert isinstance(results[2], Overloaded) and isinstance(results[3], Overloaded)
    assert calls == [3, 2]
    later = asyncio.run(_gather(batcher, [(model, batch(8.0))]))
    assert later[0]["y"].tolist() == [8.0]
