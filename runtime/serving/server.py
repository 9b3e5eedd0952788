"""Server lifecycle: listen at once, load the model folder and the online feature reader in the
background, serve until SIGINT/SIGTERM; or run it in the background (`running_server`) for tests,
benches and the training skew check.

Startup order: serving.json is read (cheap: a bad folder fails before anything listens), the
socket listens, then ONNX Runtime and (when the model has a feature repo) Feast load on a worker
thread. Meanwhile /v2/health/live answers 200, /v2/health/ready, model ready and /ping answer 503,
/metrics answers, and every other route a 503 with Retry-After. Inference works once the model
is in; readiness (and predict-by-entity) waits for the feature reader too. A load failure stops
the server with that error.

Transport: uvicorn with its httptools (llhttp) protocol on the running loop (uvloop when
installed), hardened by asgi.py (limits, strict framing, timeouts: see its docstring), plus the
Open Inference Protocol's gRPC service (grpc_service.py) on `grpc_port` when one is set, both
answered by the same InferenceApp (one batcher per model slot). After loading, the heap built so
far is moved out of the garbage collector's reach (`gc.freeze()`), so collections stay short and
p99.9 is not a GC pause. `workers` > 1 runs that many such processes on one port (workers.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from specml.runtime.serving.app import InferenceApp, _endpoint_of, unavailable
from specml.runtime.serving.asgi import (
    HttpLimits,
    HttpRequest,
    HttpResponse,
    OipAsgi,
    protocol_class,
)
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

    def __init__(
        self,
        config: ServerConfig,
        app: InferenceApp | None = None,
        listen: socket.socket | None = None,
    ) -> None:
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
        self._listen = listen  # a socket bound by the caller (workers share one), else bind here
        self._http: Any = None  # uvicorn.Server
        self._grpc: Any = None  # grpc.aio.Server
        self.port: int | None = None
        self.grpc_port: int | None = None

    async def start(self) -> int:
        """Listen, then load in the background (see `loading`); returns the bound port.

        A worker of several (given the shared socket) loads first: until it accepts, the
        connections go to workers that can answer."""
        if self._listen is not None and self.app is None:
            self.loading = asyncio.get_running_loop().create_task(self._load())
            await asyncio.shield(self.loading)
        sock = self._listen or bind_socket(self.config.host, self.config.port)
        self._http = _uvicorn_server(self.config, self.handle, self._count_failure, self.metrics)
        await self._http.startup(sockets=[sock])
        self.port = int(sock.getsockname()[1])
        log.info("listening on http://%s:%d", self.config.host, self.port)
        if self.config.grpc_port is not None:
            from specml.runtime.serving.grpc_service import start_grpc

            self._grpc, self.grpc_port = await start_grpc(
                self, self.config.host, self.config.grpc_port
            )
            log.info("gRPC on %s:%d", self.config.host, self.grpc_port)
        if self.loading is None and self.app is not None:
            self.app.traffic.start()
        elif self.loading is None:
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
        if self.config.freeze_gc:  # a server process of its own (not a test's thread)
            app.decoder.warm()
            gc.collect()
            gc.freeze()  # what loading built lives as long as the server: never scan it again

    def _count_failure(self, request: HttpRequest) -> None:
        """An unhandled error in a route: a 500 on the champion's series (or a refusal before)."""
        if self.app is None:
            self.metrics.count_refusal(500, "internal_error")
            return
        self.app.traffic.table.champion.count(_endpoint_of(request.path), 500)

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
            body = json.dumps({"ready": False, "reason": self.status}).encode()
            return HttpResponse(503, body, headers={"Retry-After": "1"})
        return unavailable(f"the server is starting ({self.status}); retry shortly")

    async def wait_loaded(self) -> None:
        """Until the model and feature reader are in; raises the load error if loading failed."""
        if self.loading is not None:
            await asyncio.shield(self.loading)

    async def stop(self) -> None:
        """Drain in-flight requests, close connections and worker threads."""
        if self._grpc is not None:
            await self._grpc.stop(self.config.grace_seconds)
        if self._http is not None:
            self._http.force_exit = False
            await self._http.shutdown()
        if self.loading is not None and not self.loading.done():
            self.loading.cancel()
        if self.app is not None:
            self.app.close()


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(
    config: ServerConfig, handle: Any, on_failure: Any, metrics: ServingMetrics
) -> Any:
    """uvicorn configured from the ServerConfig: httptools, no h11, our limits and logging."""
    import uvicorn

    limits = HttpLimits(
        max_body_bytes=config.max_body_bytes,
        max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections,
        idle_timeout_s=config.idle_timeout_s,
        request_timeout_s=config.request_timeout_s,
    )
    settings = uvicorn.Config(
        OipAsgi(handle, on_failure),
        http=protocol_class(limits, metrics.count_refusal),
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        backlog=config.backlog,
        timeout_keep_alive=config.idle_timeout_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=max(1, round(config.grace_seconds)),
    )
    settings.load()
    server = uvicorn.Server(settings)
    server.lifespan = settings.lifespan_class(settings)  # set by uvicorn's serve(), not startup()
    return server


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # uvloop is optional: plain asyncio works, a little slower
        return asyncio.new_event_loop()


def serve_forever(
    config: ServerConfig,
    ready: threading.Event | None = None,
    listen: socket.socket | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; `ready` is set once loaded.
    Raises the load error (e.g. ModelLoadError) when the model or feature reader cannot load.
    With `config.workers` > 1 (0: from the core count) this process supervises that many
    serving processes on one port (workers.py); `listen` is a worker's inherited socket."""
    from specml.runtime.serving.workers import resolve_workers, supervise

    if listen is None and resolve_workers(config.workers) > 1:
        supervise(config)
        return
    server = ModelServer(config, listen=listen)
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
        if listen is None:  # a worker's supervisor announces the address
            announce(server.manifest.model_name, config.host, port, server.grpc_port)
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


def announce(model_name: str, host: str, port: int, grpc_port: int | None) -> None:
    """The first stdout line names the URL (running_server and scripts read it)."""
    print(f"specml serving '{model_name}' on http://{host}:{port}", flush=True)
    if grpc_port is not None:
        print(f"specml gRPC on {host}:{grpc_port}", flush=True)


# Running the server in the background (tests, benches, the skew check) lives in background.py;
# imported last because it builds on ModelServer.
from specml.runtime.serving.background import (  # noqa: E402
    running_server,
    wait_until_ready,
    with_port,
)

__all__ = [
    "ModelServer",
    "ServerConfig",
    "build_app",
    "feature_repo",
    "load_reader",
    "running_server",
    "serve_forever",
    "wait_until_ready",
    "with_port",
]
