"""Several serving processes on one port: a light supervisor binds the HTTP socket, starts
`workers` processes (spawned, so none inherits a half-initialised ONNX Runtime) that each accept
on it with their own event loop, model and batcher, and restarts any that dies unexpectedly.

- Load balancing: the kernel hands each new connection to one worker's accept; gRPC workers bind
  the same port with SO_REUSEPORT (gRPC's default), the supervisor holding it reserved.
- /metrics: every worker runs prometheus_client's multiprocess mode in a folder of this server's
  own (PROMETHEUS_MULTIPROC_DIR), so any worker's /metrics is the exact sum over all of them;
  a dead worker's live gauges are dropped, its counters kept.
- A worker that cannot load the model exits 1: the supervisor then stops the others and raises.
- SIGTERM / SIGINT: forwarded to every worker, which drains its in-flight requests and exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from typing import Any

from specml.runtime.serving.loading import ServerConfig
from specml.runtime.serving.model import ModelLoadError, ServingManifest

log = logging.getLogger("specml.serving.workers")
MAX_WORKERS_DEFAULT = 4
LOAD_FAILED = 1


def resolve_workers(workers: int) -> int:
    """`workers`, or for 0 the default from this machine's cores: min(cores, 4), 1 on <= 2 cores
    (with two cores one serving process already keeps both busy: the loop and ONNX Runtime)."""
    if workers > 0:
        return workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(cores, MAX_WORKERS_DEFAULT)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this process when its parent dies (a supervisor killed with -9
    must not leave workers serving on its port); exits at once if the parent is already gone."""
    import contextlib
    import ctypes

    # not Linux (no prctl): the supervisor's own stop() still ends its workers
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # os._exit: no SystemExit for a pool initializer to log
        os._exit(0)


def _worker_main(config: ServerConfig, listen: socket.socket, parent: int) -> None:
    """One worker process: serve on the inherited socket until SIGTERM (or its parent dies)."""
    import sys

    from specml.runtime.serving.server import serve_forever

    die_with_parent(parent)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        serve_forever(config, listen=listen)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: cannot serve {config.model_dir}: {exc}", file=sys.stderr, flush=True)
        sys.exit(LOAD_FAILED)


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: keeps the gRPC port ours for the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Starts, watches and stops the worker processes of one server."""

    def __init__(self, config: ServerConfig) -> None:
        from specml.runtime.serving.server import bind_socket

        self.count = resolve_workers(config.workers)
        self.listen = bind_socket(config.host, config.port, config.backlog)
        self.grpc_reservation = (
            _reserve_port(config.host, config.grpc_port) if config.grpc_port is not None else None
        )
        grpc_port = self.grpc_reservation.getsockname()[1] if self.grpc_reservation else None
        self.config = replace(config, workers=1, grpc_port=grpc_port)
        self.metrics_dir = tempfile.mkdtemp(prefix="specml-metrics-")
        self.processes: list[Any] = []
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False

    @property
    def port(self) -> int:
        return int(self.listen.getsockname()[1])

    def _spawn(self) -> Any:
        # The worker reads PROMETHEUS_MULTIPROC_DIR when it first imports prometheus_client,
        # which happens while it unpickles its arguments: the variable must be in its environment.
        # (both names: prometheus_client reads one, Feast, when it loads, the other).
        names = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
        previous = {name: os.environ.get(name) for name in names}
        os.environ.update(dict.fromkeys(names, self.metrics_dir))
        try:
            process = self._context.Process(
                target=_worker_main,
                args=(self.config, self.listen, os.getpid()),
                name="specml-worker",
            )
            process.start()
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return process

    def start(self) -> None:
        """Start every worker."""
        self.processes = [self._spawn() for _ in range(self.count)]
        log.info("%d workers on port %d", self.count, self.port)

    def watch(self) -> None:
        """Until stopped: restart crashed workers; raise if one could not load the model."""
        from prometheus_client import multiprocess

        while not self._stopping:
            time.sleep(0.2)
            for i, process in enumerate(self.processes):
                if process.is_alive() or self._stopping:
                    continue
                multiprocess.mark_process_dead(process.pid, self.metrics_dir)
                if process.exitcode == LOAD_FAILED:
                    self.stop()
                    raise ModelLoadError(
                        f"a worker could not load {self.config.model_dir} (see its error above)"
                    )
                log.warning(
                    "worker %d exited (%s); starting another", process.pid, process.exitcode
                )
                self.processes[i] = self._spawn()

    def request_stop(self, *_: Any) -> None:
        """Signal handler: leave `watch`."""
        self._stopping = True

    def stop(self) -> None:
        """SIGTERM every worker, wait for their drain, kill stragglers, remove the metrics folder."""
        self._stopping = True
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + self.config.grace_seconds + 5
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.listen.close()
        if self.grpc_reservation is not None:
            self.grpc_reservation.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def supervise(config: ServerConfig) -> None:
    """Run the workers until SIGINT/SIGTERM (see the module docstring)."""
    from specml.runtime.serving.server import announce

    manifest = ServingManifest.load(config.model_dir / "serving.json")
    supervisor = Supervisor(config)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.request_stop)
    supervisor.start()
    announce(manifest.model_name, config.host, supervisor.port, supervisor.config.grpc_port)
    try:
        supervisor.watch()
    finally:
        supervisor.stop()
