"""`specml serve SPEC`: run the local inference server for the Plan's endpoint (blocking).

Serves <workdir>/serving/current (champion) and, when the spec has a rollout, the challenger in
<workdir>/serving/challenger routed by <workdir>/rollout/state.json (`specml rollout run` drives
it); requests are logged to <workdir>/monitor/requests for drift monitoring. Fault injection for
drills: env SPECML_INJECT_LATENCY_MS / SPECML_INJECT_ERROR_RATE (challenger only, off by default).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.runtime.layout import Workdir
from specml.targets.base import ServeOptions
from specml.targets.local.state import workdir


def model_dir_for(plan: Plan, base_dir: Path) -> Path:
    """The folder the registry step promotes to: <base_dir>/<workdir>/serving/current."""
    return Workdir(workdir(plan, base_dir)).current


def endpoint_config(
    plan: Plan,
    model_dir: Path,
    host: str | None = None,
    port: int | None = None,
    **settings: Any,
):  # -> specml.runtime.serving.ServerConfig (imported lazily)
    """The one Plan -> ServerConfig mapping: the model folder, address and the endpoint's batching
    policy; `settings` are further ServerConfig fields (rollout files, request log, drills)."""
    from specml.runtime.serving.server import ServerConfig

    batching = plan.endpoint.batching
    return ServerConfig(
        model_dir=Path(model_dir),
        host=host or plan.targets.local.host,
        port=plan.targets.local.port if port is None else port,
        batching=batching.enabled,
        max_batch_size=batching.max_batch_size,
        max_delay_ms=batching.max_delay_ms,
        **settings,
    )


def server_config(
    plan: Plan,
    base_dir: Path,
    host: str | None = None,
    port: int | None = None,
    model_dir: Path | None = None,
    features_as_of: str = "now",
    **faults: float,
):  # -> specml.runtime.serving.ServerConfig
    """What `specml serve` runs: the champion and, with a rollout in the spec, the challenger and
    the rollout state that splits traffic; requests logged for monitoring. `faults`
    (inject_latency_ms, inject_error_rate) are for drills only."""
    from specml.runtime.monitor.requestlog import request_log_dir

    options = ServeOptions(host, port, model_dir, features_as_of)
    wd = Workdir(workdir(plan, base_dir))
    folder = Path(options.model_dir) if options.model_dir is not None else wd.current
    missing = [n for n in ("model.onnx", "serving.json") if not (folder / n).is_file()]
    if missing:
        raise TargetError(
            [
                Diagnostic(
                    f"no servable model in {folder} (missing {', '.join(missing)})",
                    path=("targets", "local", "workdir"),
                    hint="run `specml apply SPEC --target local` first, or pass --model-dir",
                    stage="target",
                    code="no_model",
                )
            ]
        )
    own = options.model_dir is None  # an explicit --model-dir serves just that
    rollout = own and plan.rollout is not None
    return endpoint_config(
        plan,
        folder,
        options.host,
        options.port,
        challenger_dir=wd.challenger if rollout else None,
        rollout_state=wd.rollout_state if rollout else None,
        request_log_dir=request_log_dir(wd.root) if own else None,
        features_as_of=options.features_as_of,
        **faults,
    )


def serve(plan: Plan, base_dir: Path, options: ServeOptions | None = None) -> None:
    """Serve the Plan's model until SIGINT/SIGTERM (graceful shutdown drains in-flight requests)."""
    from specml.runtime.serving.model import ModelLoadError
    from specml.runtime.serving.roles import FaultInjection
    from specml.runtime.serving.server import serve_forever

    injected = FaultInjection.from_env()
    options = options or ServeOptions()
    config = server_config(
        plan,
        base_dir,
        options.host,
        options.port,
        options.model_dir,
        options.features_as_of,
        inject_latency_ms=injected.latency_ms,
        inject_error_rate=injected.error_rate,
    )
    # serving.workers: processes on one port (0: from this machine's cores). Only `specml serve`
    # forks workers; in-process servers (skew check, tests) stay one process.
    workers = plan.endpoint.workers
    config = dataclasses.replace(config, workers=0 if workers is None else workers)
    _log_to_stderr()
    try:
        serve_forever(config)
    except ModelLoadError as exc:
        raise TargetError(
            [Diagnostic(str(exc), stage="target", code="bad_model", hint="re-run the export step")]
        ) from None
    except OSError as exc:  # e.g. the port is taken
        raise TargetError(
            [
                Diagnostic(
                    f"cannot serve on {config.host}:{config.port}: {exc.strerror or exc}",
                    path=("targets", "local", "port"),
                    hint="pick another port with --port",
                    stage="target",
                    code="bind_failed",
                )
            ]
        ) from None


def _log_to_stderr() -> None:
    """The server's access and lifecycle log: one line each on stderr."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
