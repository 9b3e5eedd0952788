"""Server lifecycle: build the app from a model folder, serve until SIGINT/SIGTERM, or run it in
the background (`running_server`) for tests, benches and the training skew check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from specml.runtime.serving.app import InferenceApp
from specml.runtime.serving.batching import make_runner
from specml.runtime.serving.http import HttpServer
from specml.runtime.serving.metrics import ServingMetrics
from specml.runtime.serving.model import ServedModel

log = logging.getLogger("specml.serving")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; the local target fills it from the Plan's endpoint."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port
    batching: bool = True
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    max_body_bytes: int = 8 * 1024 * 1024
    feature_repo: str | None = None  # overrides serving.json's feature_repo
    online_features: bool = True  # load the Feast reader when a feature repo is known
    intra_op_threads: int = 0  # ONNX Runtime's default when 0
    grace_seconds: float = 5.0


def build_app(config: ServerConfig) -> InferenceApp:
    """Load the model (and the online feature reader) and wire runner and metrics."""
    model = ServedModel(config.model_dir, config.intra_op_threads)
    metrics = ServingMetrics()
    labels = (model.name, model.version)
    batch_hist = metrics.batch_size.labels(*labels)
    queue_hist = metrics.queue_delay.labels(*labels)
    run_hist = metrics.inference_latency.labels(*labels)

    def observe(rows: int, delays: list[float]) -> None:
        batch_hist.observe(rows)
        for delay in delays:
            queue_hist.observe(delay)

    def run(features):  # type: ignore[no-untyped-def]
        with run_hist.time():
            return model.run(features)

    runner = make_runner(
        run, config.batching, config.max_batch_size, config.max_delay_ms, observe
    )
    reader = None
    repo = config.feature_repo or model.manifest.feature_repo
    if config.online_features and repo:
        if not Path(repo, "feature_store.yaml").is_file():
            log.warning("feature repo %s has no feature_store.yaml: predict-by-entity disabled", repo)
        else:
            from specml.runtime.serving.online_features import OnlineFeatureReader

            reader = OnlineFeatureReader(repo, model.manifest.features)
    log.info(
        "model %s version %s on %s; batching %s",
        model.name,
        model.version,
        model.provider,
        f"on (max {config.max_batch_size} rows, {config.max_delay_ms} ms)"
        if config.batching
        else "off",
    )
    return InferenceApp(model, runner, metrics, reader, config.max_body_bytes)


class ModelServer:
    """An InferenceApp bound to a socket on the current event loop."""

    def __init__(self, config: ServerConfig, app: InferenceApp | None = None) -> None:
        self.config = config
        self.app = app or build_app(config)
        self._http = HttpServer(self.app.handle, config.max_body_bytes)
        self.port: int | None = None

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self.port = await self._http.start(self.config.host, self.config.port)
        log.info("listening on http://%s:%d", self.config.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Drain in-flight requests, close connections and worker threads."""
        await self._http.close(self.config.grace_seconds)
        self.app.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # uvloop is optional: plain asyncio works, a little slower
        return asyncio.new_event_loop()


def serve_forever(config: ServerConfig, ready: threading.Event | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    server = ModelServer(config)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    async def main() -> None:
        port = await server.start()
        print(f"specml serving '{server.app.model.name}' on http://{config.host}:{port}", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
        await server.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class _BackgroundServer:
    """A ModelServer on its own event-loop thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = _new_loop()
        self.server: ModelServer | None = None
        self._started = threading.Event()
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
            return
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self) -> str:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        assert self.server is not None and self.server.port is not None
        return f"http://{self.config.host}:{self.server.port}"

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=self.config.grace_seconds + 5)


@contextlib.contextmanager
def running_server(config: ServerConfig, process: bool = False) -> Iterator[str]:
    """Run the server in the background (a thread, or a child process with `process=True`) and
    yield its base URL, e.g. "http://127.0.0.1:41234"; port 0 picks a free port."""
    if not process:
        background = _BackgroundServer(config)
        url = background.start()
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
        yield line.rsplit(" on ", 1)[1].strip()
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
    return args


def with_port(config: ServerConfig, port: int) -> ServerConfig:
    """A copy of the config on another port."""
    return replace(config, port=port)
