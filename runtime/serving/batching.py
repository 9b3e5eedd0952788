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
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

RunFn = Callable[[np.ndarray], dict[str, np.ndarray]]
# observe(batch_rows, queue_delays_seconds) — hooked to the Prometheus histograms
ObserveFn = Callable[[int, list[float]], None]


def _no_observe(rows: int, delays: list[float]) -> None:
    return None


class UnbatchedRunner:
    """Batching disabled: every request is its own session.run on a worker thread."""

    def __init__(self, run: RunFn, observe: ObserveFn = _no_observe, threads: int = 4) -> None:
        self._run = run
        self._observe = observe
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="specml-infer")

    async def submit(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Run one request's rows and return its outputs."""
        self._observe(int(features.shape[0]), [0.0])
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, features)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    features: np.ndarray
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
        self._run = run
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_delay = max(0.0, float(max_delay_ms)) / 1000.0
        self._observe = observe
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="specml-batch")
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._outstanding = 0  # submitted, not yet answered
        self._peak = 1  # most outstanding requests seen at a submit since the last batch started
        self._last_peak = 1
        self._draining = False
        self._filled: asyncio.Event | None = None

    async def submit(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Queue one request's rows; resolves with its own slice of the batch outputs."""
        loop = asyncio.get_running_loop()
        pending = _Pending(features, loop.create_future())
        self._queue.append(pending)
        self._queued_rows += int(features.shape[0])
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
        rows = int(batch[0].features.shape[0])
        while self._queue and rows + self._queue[0].features.shape[0] <= self.max_batch_size:
            item = self._queue.popleft()
            rows += int(item.features.shape[0])
            batch.append(item)
        self._queued_rows -= rows
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                await self._wait_for_companions()
                batch = self._take_batch()
                self._last_peak, self._peak = self._peak, len(self._queue) + len(batch)
                start = time.perf_counter()
                if len(batch) == 1:
                    features = batch[0].features
                else:
                    features = np.concatenate([p.features for p in batch], axis=0)
                self._observe(int(features.shape[0]), [start - p.enqueued for p in batch])
                try:
                    outputs = await loop.run_in_executor(self._pool, self._run, features)
                except Exception as exc:  # the model failed: every request in the batch hears it
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                offset = 0
                for p in batch:
                    rows = int(p.features.shape[0])
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
