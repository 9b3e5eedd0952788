"""The batching runners: batches of named inputs (numbers and strings) split back exactly, and
where runs execute (loop or worker)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from specml.runtime.serving import batching
from specml.runtime.serving.batching import DynamicBatcher, UnbatchedRunner


class Recorder:
    """A model: doubles its number, echoes its string; records the thread and rows of each run."""

    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep
        self.threads: list[str] = []
        self.rows: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.sleep:
            time.sleep(self.sleep)
        self.threads.append(threading.current_thread().name)
        self.rows.append(int(inputs["x"].shape[0]))
        return {"out": inputs["x"] * 2, "label": inputs["name"].copy()}


def row(i: int, n: int = 1) -> dict[str, np.ndarray]:
    return {
        "x": np.full((n, 1), float(i), np.float32),
        "name": np.array([[f"row-{i}-{k}"] for k in range(n)], dtype=object),
    }


def doubled(i: int, n: int = 1) -> dict[str, np.ndarray]:
    return {"out": row(i, n)["x"] * 2, "label": row(i, n)["name"]}


def same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("make", [UnbatchedRunner, lambda run: DynamicBatcher(run, 64, 2.0)])
def test_a_fast_model_serving_a_lone_client_runs_on_the_loop(make) -> None:  # noqa: ANN001
    model = Recorder()
    runner = make(model)

    async def lone_client() -> str:
        for i in range(batching._WARMUP_RUNS + 5):
            out = await runner.submit(row(i))
            assert same(out, doubled(i))
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
        # requests of 1..3 rows each, so slices of different sizes must map back
        return await asyncio.gather(*(batcher.submit(row(100 + i, 1 + i % 3)) for i in range(32)))

    outs = asyncio.run(clients())
    batcher.close()
    for i, out in enumerate(outs):
        assert same(out, doubled(100 + i, 1 + i % 3))  # each client gets its own rows
    assert max(model.rows) > 1  # concurrent requests were coalesced
    # Once concurrency was seen, batches run on the worker (overlapping the loop's parsing).
    assert model.threads[-1].startswith("specml-batch")


def test_errors_reach_every_request_of_the_batch() -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("model failed")

    batcher = DynamicBatcher(broken, 64, 1.0)

    async def clients() -> list[object]:
        return await asyncio.gather(
            *(batcher.submit(row(i)) for i in range(5)), return_exceptions=True
        )

    results = asyncio.run(clients())
    batcher.close()
    assert all(isinstance(r, RuntimeError) and "model failed" in str(r) for r in results)
