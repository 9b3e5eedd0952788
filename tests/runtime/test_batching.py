"""The batching runners: batches split back exactly, and where runs execute (loop or worker)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from specml.runtime.serving import batching
from specml.runtime.serving.batching import DynamicBatcher, UnbatchedRunner


class Recorder:
    """A model: doubles its input; records the thread and the rows of every run."""

    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep
        self.threads: list[str] = []
        self.rows: list[int] = []

    def __call__(self, features: np.ndarray) -> dict[str, np.ndarray]:
        if self.sleep:
            time.sleep(self.sleep)
        self.threads.append(threading.current_thread().name)
        self.rows.append(int(features.shape[0]))
        return {"out": features * 2}


def row(i: int) -> np.ndarray:
    return np.full((1, 3), float(i), np.float32)


@pytest.mark.parametrize("make", [UnbatchedRunner, lambda run: DynamicBatcher(run, 64, 2.0)])
def test_a_fast_model_serving_a_lone_client_runs_on_the_loop(make) -> None:  # noqa: ANN001
    model = Recorder()
    runner = make(model)

    async def lone_client() -> str:
        for i in range(batching._WARMUP_RUNS + 5):
            out = await runner.submit(row(i))
            assert np.array_equal(out["out"], row(i) * 2)
        return threading.current_thread().name

    loop_thread = asyncio.run(lone_client())
    runner.close()
    warmup = model.threads[: batching._WARMUP_RUNS]
    assert all(t.startswith("specml-") for t in warmup)  # timed on the worker first
    assert model.threads[batching._WARMUP_RUNS :] == [loop_thread] * 5


@pytest.mark.parametrize("make", [UnbatchedRunner, lambda run: DynamicBatcher(run, 64, 2.0)])
def test_a_slow_model_always_runs_on_a_worker(make) -> None:  # noqa: ANN001
    model = Recorder(sleep=0.002)  # 2 ms > INLINE_MAX_SECONDS
    runner = make(model)

    async def lone_client() -> None:
        for i in range(batching._WARMUP_RUNS + 3):
            await runner.submit(row(i))

    asyncio.run(lone_client())
    runner.close()
    assert all(t.startswith("specml-") for t in model.threads)


def test_concurrent_requests_are_batched_and_split_back_on_the_worker() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, 64, 5.0)

    async def clients() -> list[dict[str, np.ndarray]]:
        for i in range(batching._WARMUP_RUNS):  # the model is known to be fast
            await batcher.submit(row(i))
        await asyncio.gather(*(batcher.submit(row(i)) for i in range(32)))  # a burst: peak 32
        return await asyncio.gather(*(batcher.submit(row(100 + i)) for i in range(32)))

    outs = asyncio.run(clients())
    batcher.close()
    for i, out in enumerate(outs):
        assert np.array_equal(out["out"], row(100 + i) * 2)  # each client gets its own rows
    assert max(model.rows) > 1  # concurrent requests were coalesced
    # Once concurrency was seen, batches run on the worker (overlapping the loop's parsing).
    assert model.threads[-1].startswith("specml-batch")


def test_errors_reach_every_request_of_the_batch() -> None:
    def broken(features: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("model failed")

    batcher = DynamicBatcher(broken, 64, 1.0)

    async def clients() -> list[object]:
        return await asyncio.gather(
            *(batcher.submit(row(i)) for i in range(5)), return_exceptions=True
        )

    results = asyncio.run(clients())
    batcher.close()
    assert all(isinstance(r, RuntimeError) and "model failed" in str(r) for r in results)
