"""`specml serve SPEC`: run the local inference server for the Plan's endpoint (blocking).

Serves <workdir>/serving/current (champion) and, when the spec has a rollout, the challenger in
<workdir>/serving/challenger routed by <workdir>/rollout/state.json (`specml rollout run` drives
it); requests are logged to <workdir>/monitor/requests for drift monitoring. Fault injection for
drills: env SPECML_INJECT_LATENCY_MS / SPECML_INJECT_ERROR_RATE (challenger only, off by default).
"""

from __future__ import annotations

from pathlib import Path

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan


def model_dir_for(plan: Plan, base_dir: Path) -> Path:
    """The folder the registry step promotes to: <base_dir>/<workdir>/serving/current."""
    return Path(base_dir) / plan.targets.local.workdir / "serving" / "current"


def server_config(
    plan: Plan,
    base_dir: Path,
    host: str | None = None,
    port: int | None = None,
    model_dir: Path | None = None,
    features_as_of: str = "now",
    **faults: float,
):  # -> specml.runtime.serving.ServerConfig (imported lazily)
    """The ServerConfig the Plan asks for: champion folder, address, batching policy, and with a
    rollout in the spec the challenger folder and the rollout state file that splits traffic;
    `faults` (inject_latency_ms, inject_error_rate) are for drills only."""
    from specml.runtime.monitor.requestlog import request_log_dir
    from specml.runtime.serving.server import ServerConfig

    folder = Path(model_dir) if model_dir is not None else model_dir_for(plan, base_dir)
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
    batching = plan.endpoint.batching
    serving = folder.parent
    rollout = (
        model_dir is None and plan.rollout is not None
    )  # an explicit --model-dir serves just that
    return ServerConfig(
        model_dir=folder,
        host=host or plan.targets.local.host,
        port=plan.targets.local.port if port is None else port,
        batching=batching.enabled,
        max_batch_size=batching.max_batch_size,
        max_delay_ms=batching.max_delay_ms,
        challenger_dir=serving / "challenger" if rollout else None,
        rollout_state=serving.parent / "rollout" / "state.json" if rollout else None,
        request_log_dir=request_log_dir(serving.parent) if model_dir is None else None,
        features_as_of=features_as_of,
        **faults,
    )


def serve(
    plan: Plan,
    base_dir: Path,
    host: str | None = None,
    port: int | None = None,
    model_dir: Path | None = None,
    features_as_of: str | None = None,
) -> None:
    """Serve the Plan's model until SIGINT/SIGTERM (graceful shutdown drains in-flight requests).

    `features_as_of` is the clock feature TTLs are judged against: None/"now" (production),
    "materialized" (the last materialization: demo data from the past) or an ISO time."""
    import logging

    from specml.runtime.serving.model import ModelLoadError
    from specml.runtime.serving.roles import FaultInjection
    from specml.runtime.serving.server import serve_forever

    injected = FaultInjection.from_env()
    config = server_config(
        plan,
        base_dir,
        host,
        port,
        model_dir,
        features_as_of=features_as_of or "now",
        inject_latency_ms=injected.latency_ms,
        inject_error_rate=injected.error_rate,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
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
