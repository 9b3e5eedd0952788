"""Server lifecycle: listen at once, load the model folder and the online feature reader in the
background, serve until SIGINT/SIGTERM; or run it in the background (`running_server`) for tests,
benches and the training skew check.

Startup order: serving.json is read (cheap: a bad folder fails before anything listens), the
socket listens, then ONNX Runtime and (when the model has a feature repo) Feast load on a worker
thread. Meanwhile /v2/health/live answers 200, /v2/health/ready, model ready and /ping answer 503,
/metrics answers, and every other route a 503 with Retry-After. Inference works once the model
is in; readiness (and predict-by-entity) waits for the feature reader too. A load failure stops
the server with that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from specml.runtime.serving.app import InferenceApp, unavailable
from specml.runtime.serving.http import HttpRequest, HttpResponse, HttpServer
from specml.runtime.serving.loading import (  # re-exported: callers import them from here
    ServerConfig,
    build_app,
    feature_repo,
    load_reader,
)
from specml.runtime.serving.metrics import CONTENT_TYPE, ServingMetrics
from specml.runtime.serving.model import ModelLoadError, ServingManifest

log = logging.getLogger("specml.serving")


class ModelServer:
    """The HTTP server on the current event loop: listens first, loads in the background."""

    def __init__(self, config: ServerConfig, app: InferenceApp | None = None) -> None:
        self.config = config
        folder = Path(config.model_dir)
        if app is None and not (folder / "model.onnx").is_file():
            raise ModelLoadError(f"no model.onnx in {folder}")
        self.manifest = app.model.manifest if app else ServingManifest.load(folder / "serving.json")
        self.metrics = app.metrics if app else ServingMetrics()
        self.app = app  # None until the model is loaded
        self.status = "ready" if app else "loading the model"
        self.load_error: BaseException | None = None
        self.loading: asyncio.Task[None] | None = None
        self._http = HttpServer(self.handle, config.max_body_bytes)
        self.port: int | None = None

    async def start(self) -> int:
        """Listen, then load in the background (see `loading`); returns the bound port."""
        self.port = await self._http.start(self.config.host, self.config.port)
        log.info("listening on http://%s:%d", self.config.host, self.port)
        if self.app is not None:
            self.app.traffic.start()
        else:
            self.loading = asyncio.get_running_loop().create_task(self._load())
        return self.port

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            app = await loop.run_in_executor(None, build_app, self.config, self.metrics, False)
            repo = feature_repo(self.config, app.model.manifest)
            if repo is not None:
                app.features_pending = "the online feature store is still loading; retry shortly"
            self.app = app
            app.traffic.start()
            if repo is not None:
                self.status = "loading the online feature store"
                reader = await loop.run_in_executor(
                    None, load_reader, self.config, repo, app.model.manifest
                )
                app.set_features(reader)
        except Exception as exc:
            what = "the online feature store" if self.app is not None else "the model"
            error = (
                exc
                if isinstance(exc, ModelLoadError)
                else ModelLoadError(f"{what} failed to load: {type(exc).__name__}: {exc}")
            )
            self.load_error = error
            self.status = f"failed to load: {error}"
            if self.app is not None:
                self.app.features_pending = str(error)
            log.error("cannot serve %s: %s", self.config.model_dir, error)
            raise error from exc
        self.status = "ready"
        log.info("ready in %.2f s", time.perf_counter() - started)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """The app's answer once loaded; until then health, metrics and 503s."""
        app = self.app
        if app is not None:
            return await app.handle(request)
        path = request.path.rstrip("/")
        if path == "/v2/health/live":
            return HttpResponse(200, b'{"live":true}')
        if path == "/metrics":
            return HttpResponse(200, self.metrics.render(), CONTENT_TYPE)
        if path in ("/v2/health/ready", "/ping") or (
            path.startswith("/v2/models/") and path.endswith("/ready")
        ):
            response = unavailable(f"not ready: {self.status}")
            response.body = json.dumps({"ready": False, "reason": self.status}).encode()
            return response
        return unavailable(f"the server is starting ({self.status}); retry shortly")

    async def wait_loaded(self) -> None:
        """Until the model and feature reader are in; raises the load error if loading failed."""
        if self.loading is not None:
            await asyncio.shield(self.loading)

    async def stop(self) -> None:
        """Drain in-flight requests, close connections and worker threads."""
        await self._http.close(self.config.grace_seconds)
        if self.loading is not None and not self.loading.done():
            self.loading.cancel()
        if self.app is not None:
            self.app.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # uvloop is optional: plain asyncio works, a little slower
        return asyncio.new_event_loop()


def serve_forever(config: ServerConfig, ready: threading.Event | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; `ready` is set once loaded.
    Raises the load error (e.g. ModelLoadError) when the model or feature reader cannot load."""
    server = ModelServer(config)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    def loaded(task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            stop.set()  # a server that cannot load exits (with that error) rather than idle
        elif ready is not None:
            ready.set()

    async def main() -> None:
        port = await server.start()
        print(
            f"specml serving '{server.manifest.model_name}' on http://{config.host}:{port}",
            flush=True,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if server.loading is not None:
            server.loading.add_done_callback(loaded)
        elif ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
        await server.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    if server.load_error is not None:
        raise server.load_error


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
            self.server = ModelServer(self.config)
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
        env={**os.environ, "FEAST_USAGE": "False"},
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
    ]  # fmt: skip
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
