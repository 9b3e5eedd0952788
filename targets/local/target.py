"""The local target: runs the Plan's steps in-process on this machine (Feast + torch + MLflow + ONNX).

Promotion policy (after every gate passed and the skew check agreed):
- no champion yet, or the spec has no `rollout`: the new version becomes `champion` at once and is
  published to `<workdir>/serving/current/` (what `specml serve` loads);
- a champion exists and `rollout` is configured: the new version stays `challenger` and is published
  to `<workdir>/serving/challenger/`; the rollout (`specml rollout promote`, or the controller)
  moves the champion alias with `specml.runtime.steps.register.promote`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from specml.compiler.errors import Diagnostic, SpecError, TargetError
from specml.compiler.ir import ArtifactSpec, Plan
from specml.targets.base import EmitResult
from specml.targets.local.errors import GateFailed
from specml.targets.local.state import (
    is_up_to_date,
    load_state,
    plan_changes,
    save_state,
    source_hashes,
    workdir,
)

__all__ = ["ApplyOptions", "ApplyResult", "GateFailed", "LocalTarget", "plan_changes"]


@dataclass
class ApplyOptions:
    """How to apply: serve afterwards, retrain even when up to date, where to print progress."""

    serve: bool = False
    force: bool = False
    console: Any = None  # a rich Console; None: step progress on stderr unless quiet
    quiet: bool = False
    spec_yaml: str | None = None  # the composed spec, logged to the MLflow run (lineage)


@dataclass
class ApplyResult:
    """What an apply did."""

    up_to_date: bool
    run_id: str | None
    workdir: Path
    model_name: str
    model_version: str | None = None
    promoted: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    onnx_max_abs_diff: float | None = None
    skew: dict[str, Any] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    serving_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-able summary for the CLI."""
        if self.up_to_date:
            return {
                "status": "up to date",
                "model": self.model_name,
                "aliases": self.aliases,
                "workdir": str(self.workdir),
            }
        out = {k: v for k, v in asdict(self).items() if k not in ("skew", "gates")}
        out["status"] = "applied"
        out["skew_max_abs_diff"] = self.skew.get("offline_vs_online_max_abs_diff")
        out["gates"] = [
            f"{g['gate']}: {g['value']:.4f} (margin {g['margin']:+.4f})" for g in self.gates
        ]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def _artifact_path(folder: Path, artifact: ArtifactSpec) -> Path:
    """Metrics are JSON files, datasets parquet files, models and other artefacts folders."""
    if artifact.type == "Metrics":
        return folder / f"{artifact.name}.json"
    if artifact.type == "Dataset":
        return folder / f"{artifact.name}.parquet"
    return folder / artifact.name


def _new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class LocalTarget:
    """Runs everything on this machine; state and artefacts under targets.local.workdir."""

    name: ClassVar[str] = "local"
    extra: ClassVar[str] = "local"

    def check(self, plan: Plan) -> list[Diagnostic]:
        """What the local target cannot provide for this Plan (GPU without CUDA, remote data)."""
        out: list[Diagnostic] = []
        res = plan.training.resources
        if res.accelerator == "gpu" and not _cuda_available():
            out.append(
                Diagnostic(
                    "training asks for a GPU but CUDA is not available here; the local target trains "
                    "on CPU",
                    path=("training", "resources", "accelerator"),
                    severity="warning",
                    stage="target",
                    code="no_cuda",
                    hint="set accelerator: auto to silence this",
                )
            )
        if res.gpu_count > 1:
            out.append(
                Diagnostic(
                    f"training asks for {res.gpu_count} GPUs; the local target uses one",
                    path=("training", "resources", "gpus"),
                    severity="warning",
                    stage="target",
                    code="single_gpu",
                )
            )
        if plan.endpoint.resources.gpu_count:
            out.append(
                Diagnostic(
                    "serving.resources.gpus is ignored locally: the local server runs ONNX on CPU",
                    path=("serving", "resources", "gpus"),
                    severity="warning",
                    stage="target",
                    code="cpu_serving",
                )
            )
        for s in plan.features.sources:
            if "://" in s.path:
                out.append(
                    Diagnostic(
                        f"source '{s.id}' is a remote URI ({s.path}); the local target reads local files",
                        path=("data", "sources", s.id, "path"),
                        stage="target",
                        code="remote_source",
                        hint="download the file and point path at it",
                    )
                )
        return out

    def emit(self, plan: Plan, out_dir: Path) -> EmitResult:
        """plan.json and the Feast repo (feature_store.yaml, features.py), byte-for-byte stable."""
        from specml.runtime.steps.features import repo_files

        out = Path(out_dir)
        (out / "feature_repo").mkdir(parents=True, exist_ok=True)
        files = {"plan.json": plan.to_json()}
        paths = {s.id: s.path for s in plan.features.sources}
        files.update({f"feature_repo/{k}": v for k, v in repo_files(plan, paths).items()})
        for name, text in files.items():
            (out / name).write_text(text)
        return EmitResult(
            out_dir=out,
            files=tuple(sorted(files)),
            notes=("feature_repo/features.py: source paths are relative to the spec's folder",),
        )

    def plan_changes(self, plan: Plan, base_dir: Path) -> list[str]:
        """What apply would change against the recorded state (empty: up to date)."""
        return plan_changes(plan, base_dir)

    def serve(
        self,
        plan: Plan,
        base_dir: Path,
        host: str | None = None,
        port: int | None = None,
        model_dir: Path | None = None,
        features_as_of: str | None = None,
    ) -> None:
        """Serve the champion from <workdir>/serving/current (the server lives in serve.py)."""
        from specml.targets.local.serve import serve

        serve(
            plan, base_dir, host=host, port=port, model_dir=model_dir, features_as_of=features_as_of
        )

    def apply(self, plan: Plan, base_dir: Path, options: ApplyOptions | None = None) -> ApplyResult:
        """Run every step in DAG order; stop at a failed gate (GateFailed); record state.json."""
        from specml.runtime.contract import StepContext, run_step
        from specml.runtime.steps.common import data_hash

        options = options or ApplyOptions()
        say = _printer(options)
        errors = [d for d in self.check(plan) if d.severity == "error"]
        if errors:
            raise TargetError(errors)
        base = Path(base_dir).resolve()
        wd = workdir(plan, base)
        state = load_state(wd) or {}
        current_data = data_hash(plan, base)
        if not options.force and is_up_to_date(state, plan, current_data):
            say(f"[green]up to date[/]: {plan.system.name} (spec and data unchanged)")
            done = ApplyResult(
                up_to_date=True,
                run_id=state.get("last_run_id"),
                workdir=wd,
                model_name=plan.registry.name,
                aliases=state.get("aliases", {}),
                model_version=state.get("aliases", {}).get("champion"),
                serving_dir=wd / "serving" / "current",
            )
            return self._maybe_serve(plan, base, options, done, say)
        run_id = _new_run_id()
        run_dir = wd / "runs" / run_id
        ctx = StepContext(workdir=wd, data_dir=base, run_id=run_id, spec_yaml=options.spec_yaml)
        result = ApplyResult(
            up_to_date=False, run_id=run_id, workdir=wd, model_name=plan.registry.name
        )
        record: dict[str, Any] = {
            "run_id": run_id,
            "started": datetime.now(UTC).isoformat(),
            "spec_hash": plan.spec_hash,
            "data_hash": current_data,
        }
        artifacts: dict[str, Path] = {}
        values: dict[str, Any] = {}

        def finish(status: str) -> None:
            record.update(
                status=status,
                finished=datetime.now(UTC).isoformat(),
                step_seconds=result.step_seconds,
            )
            new_state = {
                **state,
                "system": plan.system.name,
                "status": status,
                "last_run_id": run_id,
                "runs": [*state.get("runs", []), record],
            }
            if status == "applied":
                new_state.update(
                    spec_hash=plan.spec_hash,
                    data_hash=current_data,
                    source_hashes=source_hashes(plan, base),
                    plan=plan.model_dump(mode="json"),
                )
            new_state["aliases"] = _aliases(plan, ctx) or state.get("aliases", {})
            new_state["model_versions"] = sorted(
                {
                    *state.get("model_versions", []),
                    *([result.model_version] if result.model_version else []),
                },
                key=int,
            )
            if result.serving_dir is not None and result.model_version is not None:
                new_state["serving"] = {
                    **state.get("serving", {}),
                    result.serving_dir.name: {
                        "version": result.model_version,
                        "path": str(result.serving_dir),
                    },
                }
            save_state(wd, new_state)

        try:
            for step in plan.steps:
                inputs = {name: artifacts[ref] for name, ref in step.inputs.items()}
                outputs = {a.name: _artifact_path(run_dir / step.name, a) for a in step.outputs}
                started = time.perf_counter()
                say(f"[bold]{step.name}[/] ...")
                try:
                    outcome = run_step(step.kind, plan, ctx, inputs, outputs)
                except SpecError:
                    raise
                except Exception as exc:  # a library failure inside a step: name the step
                    raise TargetError(
                        [
                            Diagnostic(
                                f"step {step.name} failed: {type(exc).__name__}: {exc}",
                                stage="target",
                                code="step_failed",
                                hint=f"artefacts so far are in {run_dir}",
                            )
                        ]
                    ) from exc
                result.step_seconds[step.name] = round(time.perf_counter() - started, 3)
                say(f"  [green]done[/] {step.name} in {result.step_seconds[step.name]:.1f}s")
                for a in step.outputs:
                    artifacts[f"{step.name}.{a.name}"] = outputs[a.name]
                values[step.name] = outcome.values
                if step.kind == "evaluate":
                    result.metrics = dict(outcome.metrics)
                    result.gates = list(outcome.values.get("gates", []))
                    record["metrics"] = result.metrics
                    if not outcome.values.get("gate_passed", False):
                        raise GateFailed.from_gates(result.gates, run_id)
                if step.kind == "export_onnx":
                    result.onnx_max_abs_diff = outcome.values.get("onnx_max_abs_diff")
                    result.skew = self._skew(plan, artifacts, say)
                    record["skew"] = result.skew
                if step.kind == "register":
                    result.model_version = str(outcome.values["model_version"])
                    record["model_version"] = result.model_version
                    record["mlflow_run_id"] = outcome.values.get("mlflow_run_id")
            self._promote(plan, ctx, values.get("evaluate", {}), result, say)
        except GateFailed:
            finish("gate_failed")
            raise
        except BaseException:
            finish("failed")
            raise
        finish("applied")
        result.aliases = _aliases(plan, ctx)
        return self._maybe_serve(plan, base, options, result, say)

    def _maybe_serve(
        self, plan: Plan, base: Path, options: ApplyOptions, result: ApplyResult, say: Any
    ) -> ApplyResult:
        """`apply --serve`: print the outcome, then serve the champion until interrupted."""
        if not options.serve:
            return result
        for key, value in result.summary().items():
            print(f"  {key}: {value}", flush=True)
        say(
            f"serving {plan.registry.name} (champion {result.aliases.get('champion')}); "
            "Ctrl-C stops"
        )
        self.serve(plan, base)
        return result

    def _skew(self, plan: Plan, artifacts: dict[str, Path], say: Any) -> dict[str, Any]:
        """Train-serve skew check on the exported model; a disagreement stops the apply."""
        from specml.runtime.steps.skew import check_skew

        onnx_dir = artifacts["export_onnx.onnx_model"]
        try:
            with served_scorer(plan, onnx_dir) as predict_online:
                report = check_skew(
                    plan,
                    onnx_dir,
                    artifacts["train.model"],
                    artifacts["build_training_set.training_set"],
                    predict_online=predict_online,
                )
        except SpecError:
            raise
        except Exception as exc:
            raise TargetError(
                [
                    Diagnostic(
                        f"the train-serve skew check failed to run: {type(exc).__name__}: {exc}",
                        stage="target",
                        code="skew_check_failed",
                        hint=f"the exported model is in {onnx_dir}; nothing was registered",
                    )
                ]
            ) from exc
        say(
            f"  skew check on {report['compared_rows']} entities ({report['stale_rows']} stale "
            f"online, skipped): max |diff| offline vs online store "
            f"{report['offline_vs_online_max_abs_diff']:.2e}, offline vs HTTP server "
            f"{report.get('offline_vs_served_max_abs_diff', float('nan')):.2e}"
        )
        if not report["passed"]:
            raise TargetError(
                [
                    Diagnostic(
                        "train-serve skew: offline and online scoring disagree "
                        f"(features max |diff| {report['feature_max_abs_diff']:.3g}, predictions "
                        f"{report['offline_vs_online_max_abs_diff']:.3g}, served "
                        f"{report.get('offline_vs_served_max_abs_diff', 0.0):.3g}, "
                        f"{report['features_missing_online']} values missing online, "
                        f"tolerance {report['tolerance']}; failed: {', '.join(report['failed'])})",
                        stage="target",
                        code="train_serve_skew",
                        hint="check feature dtypes and TTLs in features.views; nothing was registered",
                    )
                ]
            )
        return report

    def _promote(
        self, plan: Plan, ctx: Any, evaluation: dict[str, Any], result: ApplyResult, say: Any
    ) -> None:
        """Champion now (first model, or no rollout configured), else leave it to the rollout."""
        from specml.runtime.steps.register import promote, publish

        if result.model_version is None:
            return
        had_champion = (
            evaluation.get("champion") is not None
            or _aliases(plan, ctx).get(plan.registry.champion_alias) is not None
        )
        if had_champion and plan.rollout is not None:
            result.serving_dir = publish(plan, ctx, result.model_version, "challenger")
            result.notes.append(
                f"v{result.model_version} is the challenger; the {plan.rollout.strategy} rollout "
                "promotes it (specml rollout promote)"
            )
            say(f"  challenger v{result.model_version} published to {result.serving_dir}")
            return
        result.serving_dir = promote(plan, ctx, result.model_version)
        result.promoted = True
        say(f"  champion v{result.model_version} published to {result.serving_dir}")


@contextlib.contextmanager
def served_scorer(plan: Plan, model_dir: Path) -> Iterator[Any]:
    """The model in `model_dir` behind a real local HTTP server (batching per the Plan, any free
    port); yields `predict(entity_rows) -> np.ndarray` through its predict-by-entity endpoint."""
    import numpy as np
    from specml.runtime.serving.server import ServerConfig, running_server

    batching = plan.endpoint.batching
    config = ServerConfig(
        model_dir=Path(model_dir),
        host="127.0.0.1",
        port=0,
        batching=batching.enabled,
        max_batch_size=batching.max_batch_size,
        max_delay_ms=batching.max_delay_ms,
        features_as_of="materialized",
    )  # TTLs as of the skew check's offline leg
    with running_server(config) as url:

        def predict(rows: list[dict[str, Any]]) -> Any:
            outputs = []
            for start in range(0, len(rows), 1024):
                body = json.dumps({"entities": rows[start : start + 1024]})
                status, _, payload = _post(
                    url, f"/v1/models/{plan.registry.name}/predict-by-entity", body
                )
                if status != 200:
                    raise RuntimeError(f"the server answered {status}: {payload[:300]!r}")
                outputs.append(np.asarray(json.loads(payload)["outputs"]["output"], "float32"))
            return np.concatenate(outputs) if outputs else np.zeros((0, 1), "float32")

        yield predict


def _post(url: str, path: str, body: str) -> tuple[int, dict[str, str], bytes]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _printer(options: ApplyOptions) -> Any:
    """Where progress goes: the given console, else stderr (nothing when quiet)."""
    if options.console is not None:
        return options.console.print
    if options.quiet:
        return lambda *a, **k: None
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True).print


def _aliases(plan: Plan, ctx: Any) -> dict[str, str]:
    """alias -> version for the registered model (empty when nothing is registered)."""
    from mlflow.exceptions import MlflowException
    from specml.runtime.steps.tracking import client

    if ctx.tracking_uri is None and not (Path(ctx.workdir) / "mlflow.db").exists():
        return {}
    try:
        model = client(ctx).get_registered_model(plan.registry.name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in sorted(model.aliases.items())}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
