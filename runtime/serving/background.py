"""The server in the background: on an event-loop thread of this process, or as a child process
(`running_server`), for tests, benches and the training side's skew check."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from specml.runtime.serving.loading import ServerConfig
from specml.runtime.serving.server import ModelServer, _new_loop


class _BackgroundServer:
    """A ModelServer on its own event-loop thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = _new_loop()
        self.server: ModelServer | None = None
        self._started = threading.Event()
        self._loaded = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="specml-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            # the test or bench process owns the heap, not the server: no gc.freeze() here
            self.server = ModelServer(replace(self.config, freeze_gc=False))
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to the caller of start()
            self._error = exc
            self._started.set()
            self._loaded.set()
            return
        if self.server.loading is None:
            self._loaded.set()
        else:
            self.server.loading.add_done_callback(self._on_loaded)
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def _on_loaded(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here; start() re-raises server.load_error
        self._loaded.set()

    def start(self, wait_ready: bool = True) -> str:
        """Listen (and, with `wait_ready`, load) before returning the base URL."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        assert self.server is not None and self.server.port is not None
        if wait_ready:
            self._loaded.wait()
            if self.server.load_error is not None:
                self.stop()
                raise self.server.load_error
        return f"http://{self.config.host}:{self.server.port}"

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=self.config.grace_seconds + 5)


def wait_until_ready(url: str, timeout_s: float = 120.0, alive: Any = None) -> None:
    """Poll GET /v2/health/ready until 200; `alive()` False (e.g. the process exited) or the
    timeout raises RuntimeError."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
            try:
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {url} stopped before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server at {url} was not ready after {timeout_s:g} s")
        time.sleep(0.05)


# A multiprocess-metrics folder in this process's environment (importing feast sets one, shared
# by everything that inherits it) must not reach a server process: its counters would be summed
# with those of every other process writing there. Our own workers get a folder of their own.
_MULTIPROC_VARS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def _server_env() -> dict[str, str]:
    """The environment of a server subprocess: ours, less any shared metrics folder."""
    env = {k: v for k, v in os.environ.items() if k not in _MULTIPROC_VARS}
    env["FEAST_USAGE"] = "False"
    return env


@contextlib.contextmanager
def running_server(
    config: ServerConfig, process: bool = False, wait_ready: bool = True
) -> Iterator[str]:
    """Run the server in the background (a thread, or a child process with `process=True`) and
    yield its base URL, e.g. "http://127.0.0.1:41234", once ready (model and feature reader
    loaded; `wait_ready=False`: as soon as it listens); port 0 picks a free port."""
    if not process:
        background = _BackgroundServer(config)
        url = background.start(wait_ready)
        try:
            yield url
        finally:
            background.stop()
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "specml.runtime.serving", *_cli_args(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=_server_env(),
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # the "specml serving ... on URL" line
        if " on http://" not in line:
            raise RuntimeError(f"server process failed to start (exit {child.poll()}): {line!r}")
        url = line.rsplit(" on ", 1)[1].strip()
        if wait_ready:
            wait_until_ready(url, alive=lambda: child.poll() is None)
        yield url
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=config.grace_seconds + 10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _cli_args(config: ServerConfig) -> list[str]:
    args = [
        str(config.model_dir),
        "--host", config.host,
        "--port", str(config.port),
        "--max-batch-size", str(config.max_batch_size),
        "--max-delay-ms", str(config.max_delay_ms),
        "--max-body-bytes", str(config.max_body_bytes),
        "--intra-op-threads", str(config.intra_op_threads),
        "--workers", str(config.workers),
        "--max-header-bytes", str(config.max_header_bytes),
        "--max-connections", str(config.max_connections),
        "--idle-timeout-s", str(config.idle_timeout_s),
        "--request-timeout-s", str(config.request_timeout_s),
    ]  # fmt: skip
    if config.grpc_port is not None:
        args += ["--grpc-port", str(config.grpc_port)]
    if not config.batching:
        args.append("--no-batching")
    if config.feature_repo:
        args += ["--feature-repo", config.feature_repo]
    if not config.online_features:
        args.append("--no-online-features")
    optional = {
        "--challenger-dir": config.challenger_dir,
        "--rollout-state": config.rollout_state,
        "--request-log-dir": config.request_log_dir,
        "--inject-seed": config.inject_seed,
    }
    args += [
        part for flag, value in optional.items() if value is not None for part in (flag, str(value))
    ]
    args += [
        "--state-poll-ms",
        str(config.state_poll_ms),
        "--features-as-of",
        config.features_as_of,
    ]
    if config.inject_latency_ms:
        args += ["--inject-latency-ms", str(config.inject_latency_ms)]
    if config.inject_error_rate:
        args += ["--inject-error-rate", str(config.inject_error_rate)]
    return args


def with_port(config: ServerConfig, port: int) -> ServerConfig:
    """A copy of the config on another port."""
    return replace(config, port=port)
