"""MLflow plumbing shared by train, evaluate and register: one experiment per system, artefacts under workdir."""

from __future__ import annotations

import contextlib
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext


def client(ctx: StepContext) -> Any:
    """An MlflowClient on the context's tracking URI (tracking and registry in one store)."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # steps log, not draw
    warnings.filterwarnings("ignore", message=".*noload.*")  # MLflow's own SQLAlchemy usage
    from mlflow.tracking import MlflowClient

    Path(ctx.workdir).mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=ctx.mlflow_uri, registry_uri=ctx.mlflow_uri)


def experiment_id(mlflow: Any, plan: Plan, ctx: StepContext) -> str:
    """The system's experiment, created with its artefact store under the workdir."""
    exp = mlflow.get_experiment_by_name(plan.system.name)
    if exp is not None:
        return str(exp.experiment_id)
    location = (Path(ctx.workdir) / "mlartifacts").resolve().as_uri()
    return str(mlflow.create_experiment(plan.system.name, artifact_location=location))


def start_run(plan: Plan, ctx: StepContext, run_name: str) -> str:
    """Create an MLflow run tagged with the spec hash and the pipeline run id; return its id."""
    mlflow = client(ctx)
    tags = {
        "specml.system": plan.system.name,
        "specml.spec_hash": plan.spec_hash,
        "mlflow.runName": run_name,
    }
    if ctx.run_id:
        tags["specml.pipeline_run"] = ctx.run_id
    return str(mlflow.create_run(experiment_id(mlflow, plan, ctx), tags=tags).info.run_id)


def end_run(ctx: StepContext, run_id: str | None, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED (with its end time); never raises over the cause."""
    if not run_id:
        return
    with contextlib.suppress(Exception):  # the step's own outcome matters more than bookkeeping
        client(ctx).set_terminated(run_id, status)


@contextlib.contextmanager
def run_status(ctx: StepContext, run_id: str | None, end: bool = True) -> Iterator[None]:
    """Around a step's work on a run: an error ends it FAILED (an interrupt KILLED), and
    success ends it FINISHED when `end` (a later step may still log to a finished run)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        end_run(ctx, run_id, "KILLED")
        raise
    except BaseException:
        end_run(ctx, run_id, "FAILED")
        raise
    if end:
        end_run(ctx, run_id, "FINISHED")


def log_metrics(
    ctx: StepContext, run_id: str | None, metrics: dict[str, float], step: int = 0
) -> None:
    """Log a batch of metrics at one step (no-op without a run)."""
    if not run_id or not metrics:
        return
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(key=k.replace(":", "."), value=float(v), timestamp=now, step=step)
        for k, v in sorted(metrics.items())
    ]
    client(ctx).log_batch(run_id, metrics=batch)


def log_params(ctx: StepContext, run_id: str, params: dict[str, Any]) -> None:
    """Log parameters (values stringified by MLflow)."""
    from mlflow.entities import Param

    batch = [Param(key=k, value=str(v)[:6000]) for k, v in sorted(params.items())]
    client(ctx).log_batch(run_id, params=batch)


def code_version() -> dict[str, str]:
    """specml's version and, when run from a git checkout, the commit sha."""
    from importlib import metadata

    try:
        version = metadata.version("specml")
    except metadata.PackageNotFoundError:
        version = "unknown"
    out = {"specml_version": version}
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        if sha:
            out["git_sha"] = sha
    except (OSError, subprocess.SubprocessError):
        pass
    return out
