"""`specml serve SPEC`: run the local inference server for the Plan's endpoint (blocking)."""

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
):  # -> specml.runtime.serving.ServerConfig (imported lazily)
    """The ServerConfig the Plan asks for: model folder, address, batching policy."""
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
    return ServerConfig(
        model_dir=folder,
        host=host or plan.targets.local.host,
        port=plan.targets.local.port if port is None else port,
        batching=batching.enabled,
        max_batch_size=batching.max_batch_size,
        max_delay_ms=batching.max_delay_ms,
    )


def serve(
    plan: Plan,
    base_dir: Path,
    host: str | None = None,
    port: int | None = None,
    model_dir: Path | None = None,
) -> None:
    """Serve the Plan's model until SIGINT/SIGTERM (graceful shutdown drains in-flight requests)."""
    import logging

    from specml.runtime.serving.model import ModelLoadError
    from specml.runtime.serving.server import serve_forever

    config = server_config(plan, base_dir, host, port, model_dir)
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
