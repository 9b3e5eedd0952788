"""Large request bodies are decoded in a helper process, off the event loop and off its GIL.

Parsing a megabyte of JSON holds the GIL for tens of milliseconds: on the loop, or on a thread of
the same process, that stalls every other request (four clients sending 1.6 MB bodies pushed
small requests' p50 to hundreds of milliseconds). So a body of `LARGE_BODY_BYTES` or more is
decompressed, parsed and validated in a spawned helper process, which returns the decoded
request (numpy arrays: cheap to send back) or the refusal; a small body is decoded inline (a
hand-off would cost more than the parse). The helper starts on first use (or `warm()`), one per
serving process; if it dies, the next large body starts another.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from specml.runtime.serving.tensors import ProtocolError

log = logging.getLogger("specml.serving")
LARGE_BODY_BYTES = 64 * 1024


def _guarded(decode: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    # A ProtocolError's status does not survive pickling: send it back as plain values.
    try:
        return ("decoded", decode(*args))
    except ProtocolError as exc:
        return ("refused", exc.status, exc.message)


def _ready() -> bool:
    return True


def _helper_init(parent: int) -> None:
    from specml.runtime.serving.workers import die_with_parent

    die_with_parent(parent)


class BodyDecoder:
    """Runs a decode function inline (small body) or in the helper process (large body)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _helper(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_helper_init,
                initargs=(os.getpid(),),
            )
        return self._pool

    def warm(self) -> None:
        """Start the helper now (in the background) so the first large body does not wait."""
        self._helper().submit(_ready)

    async def run(self, size: int, decode: Callable[..., Any], *args: Any) -> Any:
        """`decode(*args)`, where `size` (the body's length) says."""
        if size < LARGE_BODY_BYTES:
            return decode(*args)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._helper(), _guarded, decode, *args)
        except BrokenProcessPool:
            log.warning("the body decoding helper died; decoding on a thread and restarting it")
            self._pool = None
            outcome = await loop.run_in_executor(None, _guarded, decode, *args)
        if outcome[0] == "refused":
            raise ProtocolError(outcome[2], outcome[1])
        return outcome[1]

    def close(self) -> None:
        """Stop the helper."""
        if self._pool is not None:
            # An idle helper does not always see the shutdown sentinel, and the interpreter
            # joins it at exit: end it (concurrent.futures has no public way before 3.14).
            helpers = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in helpers:
                process.terminate()
            self._pool = None
