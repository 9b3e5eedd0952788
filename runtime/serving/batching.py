"""Dynamic batching: concurrent requests are coalesced into one session.run, results split back.

The policy (`DynamicBatcher`): one batch is in flight at a time, on a worker thread, so the event
loop stays free. While it runs, new requests queue. When the worker is free it takes the queue:
- if no request arrived while another was outstanding during the previous cycle (a lone client,
  or a lightly loaded server) it runs the queue at once, so such clients pay no batching delay;
- otherwise it waits until the queue holds as many requests as were outstanding at the previous
  cycle's peak (the concurrent clients it has seen are back) or `max_batch_size` rows, but never
  longer than `max_delay_ms` after the oldest queued request arrived.
A batch never exceeds `max_batch_size` rows, except that one request larger than that runs alone.
`UnbatchedRunner` is the batching-disabled path: each request runs alone on a thread pool.
A request is the model's input dict (input name -> [n, 1] array, numeric or strings): a batch
concatenates each input, and every output (class labels too) is split back by rows.

Both measure how long the model's runs take (on the worker, so the handoff is not counted). Once
that is known and a run takes less than `INLINE_MAX_SECONDS`, a request with nothing else in
flight (a lone client) runs on the event loop itself: handing such a run to a thread and back
costs more than the run (tens of microseconds of wakeups per request on a small MLP). Under
concurrency runs stay on the worker, where they overlap with the loop parsing the next requests;
a slower model, or one that slows down, always runs there.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Inputs = dict[str, np.ndarray]
RunFn = Callable[[Inputs], dict[str, np.ndarray]]
# observe(batch_rows, queue_delays_seconds) — hooked to the Prometheus histograms
ObserveFn = Callable[[int, list[float]], None]


# A run this short is cheaper on the loop than a thread handoff (SPECML_INLINE_MAX_US; 0: never).
INLINE_MAX_SECONDS = float(os.environ.get("SPECML_INLINE_MAX_US", "100")) / 1e6
_WARMUP_RUNS = 16  # runs timed on the worker before a run may stay on the loop
_EMA_WEIGHT = 0.1


def _no_observe(rows: int, delays: list[float]) -> None:
    return None


def _rows(inputs: Inputs) -> int:
    return int(next(iter(inputs.values())).shape[0])


def _concatenate(parts: list[Inputs]) -> Inputs:
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


class _Placement:
    """Where a run goes: the event loop for fast models (see the module docstring), else a pool."""

    def __init__(self, run: RunFn, pool: ThreadPoolExecutor) -> None:
        self._run = run
        self._pool = pool
        self._runs = 0
        self._seconds = 0.0  # moving average of one run's time

    def _timed(self, features: Inputs) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            return self._run(features)
        finally:
            took = time.perf_counter() - start
            self._runs += 1
            weight = max(_EMA_WEIGHT, 1.0 / self._runs)
            self._seconds += weight * (took - self._seconds)

    @property
    def inline(self) -> bool:
        """Runs stay on the loop (measured fast enough)."""
        return self._runs >= _WARMUP_RUNS and self._seconds < INLINE_MAX_SECONDS

    async def call(self, features: Inputs, alone: bool) -> dict[str, np.ndarray]:
        """Run once: on the loop when fast and `alone` (nothing else is in flight, so no overlap
        of parsing with inference is lost), else on the pool."""
        if alone and self.inline:
            return self._timed(features)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._timed, features)


class UnbatchedRunner:
    """Batching disabled: every request is its own session.run on a worker thread."""

    def __init__(self, run: RunFn, observe: ObserveFn = _no_observe, threads: int = 4) -> None:
        self._observe = observe
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="specml-infer")
        self._placement = _Placement(run, self._pool)
        self._in_flight = 0

    async def submit(self, features: Inputs) -> dict[str, np.ndarray]:
        """Run one request's rows and return its outputs."""
        self._observe(_rows(features), [0.0])
        alone = self._in_flight == 0
        self._in_flight += 1
        try:
            return await self._placement.call(features, alone)
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    features: Inputs
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Coalesces concurrent requests (see the module docstring for the policy)."""

    def __init__(
        self,
        run: RunFn,
        max_batch_size: int,
        max_delay_ms: float,
        observe: ObserveFn = _no_observe,
    ) -> None:
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000.0
        self._observe = observe
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specml-batch")
        self._placement = _Placement(run, self._pool)
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._outstanding = 0  # submitted, not yet answered
        self._peak = 1  # most outstanding requests seen at a submit since the last batch started
        self._last_peak = 1
        self._draining = False
        self._filled: asyncio.Event | None = None

    async def submit(self, features: Inputs) -> dict[str, np.ndarray]:
        """Queue one request's rows; resolves with its own slice of the batch outputs."""
        loop = asyncio.get_running_loop()
        pending = _Pending(features, _rows(features), loop.create_future())
        self._queue.append(pending)
        self._queued_rows += pending.rows
        self._outstanding += 1
        if self._outstanding > self._peak:
            self._peak = self._outstanding
        if self._filled is not None and self._is_full():
            self._filled.set()
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        try:
            return await pending.future
        finally:
            self._outstanding -= 1

    def _is_full(self) -> bool:
        target = min(self.max_batch_size, self._last_peak)
        return len(self._queue) >= target or self._queued_rows >= self.max_batch_size

    async def _wait_for_companions(self) -> None:
        if self._last_peak <= 1 or self.max_delay == 0 or self._is_full():
            return
        deadline = self._queue[0].enqueued + self.max_delay
        timeout = deadline - time.perf_counter()
        if timeout <= 0:
            return
        self._filled = asyncio.Event()
        try:
            await asyncio.wait_for(self._filled.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._filled = None

    def _take_batch(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            item = self._queue.popleft()
            rows += item.rows
            batch.append(item)
        self._queued_rows -= rows
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._wait_for_companions()
                batch = self._take_batch()
                self._last_peak, self._peak = self._peak, len(self._queue) + len(batch)
                start = time.perf_counter()
                if len(batch) == 1:
                    features = batch[0].features
                else:
                    features = _concatenate([p.features for p in batch])
                self._observe(sum(p.rows for p in batch), [start - p.enqueued for p in batch])
                try:
                    # A lone client's request (no companions seen) may run on the loop.
                    outputs = await self._placement.call(features, self._last_peak <= 1)
                except Exception as exc:  # the model failed: every request in the batch hears it
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                offset = 0
                for p in batch:
                    rows = p.rows
                    if not p.future.done():
                        p.future.set_result(
                            {k: v[offset : offset + rows] for k, v in outputs.items()}
                        )
                    offset += rows
        finally:
            self._draining = False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_runner(
    run: RunFn,
    enabled: bool,
    max_batch_size: int,
    max_delay_ms: float,
    observe: ObserveFn = _no_observe,
) -> DynamicBatcher | UnbatchedRunner:
    """The runner the Plan's endpoint.batching asks for."""
    if enabled and max_batch_size > 1:
        return DynamicBatcher(run, max_batch_size, max_delay_ms, observe)
    return UnbatchedRunner(run, observe)
