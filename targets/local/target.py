"""The local target: runs the Plan's steps in-process on this machine (Feast + torch + MLflow + ONNX).

Apply lives in apply.py, serving in serve.py, rollouts in rollout.py, monitoring in monitor.py; this
class is the `OperableTarget` the CLI talks to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.runtime.layout import Workdir
from specml.targets import base
from specml.targets.base import EmitResult
from specml.targets.local.apply import ApplyOptions, ApplyResult
from specml.targets.local.errors import GateFailed
from specml.targets.local.state import load_state, plan_changes, workdir

__all__ = ["ApplyOptions", "ApplyResult", "GateFailed", "LocalTarget", "plan_changes"]


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

    def apply(
        self, plan: Plan, base_dir: Path, options: base.ApplyOptions | None = None
    ) -> ApplyResult:
        """Run every step in DAG order; stop at a failed gate (GateFailed); record state.json."""
        from specml.targets.local.apply import apply, printer
        from specml.targets.local.promotion import finish_pending

        options = options or ApplyOptions()
        if options.dry_run:
            raise TargetError(
                [
                    Diagnostic(
                        "the local target has no dry run: it applies on this machine",
                        hint="`specml plan SPEC --target local` shows what apply would change",
                        stage="usage",
                        code="usage",
                    )
                ]
            )
        errors = [d for d in self.check(plan) if d.severity == "error"]
        if errors:
            raise TargetError(errors)
        finish_pending(plan, Path(base_dir))  # a promotion a crash left half done, first
        result = apply(plan, base_dir, options)
        if getattr(options, "serve", False):
            for key, value in result.summary().items():
                print(f"  {key}: {value}", flush=True)
            printer(options)(
                f"serving {plan.registry.name} (champion {result.aliases.get('champion')}); "
                "Ctrl-C stops"
            )
            self.serve(plan, base_dir)
        return result

    def serve(self, plan: Plan, base_dir: Path, options: base.ServeOptions | None = None) -> None:
        """Serve the champion from <workdir>/serving/current (the server lives in serve.py); a
        promotion a crash left half done is completed first, so it serves the registry's champion."""
        from specml.targets.local.promotion import finish_pending
        from specml.targets.local.serve import serve

        finish_pending(plan, Path(base_dir))
        serve(plan, Path(base_dir), options or base.ServeOptions())

    def recorded_plan(self, plan: Plan, base_dir: Path) -> Path:
        """<workdir>/state.json: its `plan` is the last successfully applied Plan."""
        return Workdir(workdir(plan, base_dir)).state_file

    def plan_changes(self, plan: Plan, base_dir: Path) -> list[str]:
        """What apply would change against the recorded state (empty: up to date)."""
        return plan_changes(plan, base_dir)

    def history(self, plan: Plan, base_dir: Path) -> base.History:
        """The applies recorded in state.json (newest first) and the registry's aliases."""
        state = load_state(workdir(plan, base_dir)) or {}
        return base.History(list(reversed(state.get("runs", []))), state.get("aliases", {}))

    def rollout(
        self, plan: Plan, base_dir: Path, options: base.RolloutOptions
    ) -> base.RolloutReport:
        """Show, promote, roll back or drive the rollout (targets/local/rollout.py)."""
        from specml.targets.local.rollout import operate

        return operate(plan, Path(base_dir), options)

    def monitor(self, plan: Plan, base_dir: Path, options: base.MonitorOptions) -> dict[str, Any]:
        """One monitoring pass (targets/local/monitor.py); its summary."""
        from specml.targets.local.monitor import monitor_once

        return monitor_once(plan, Path(base_dir), options).summary

    def ingest_labels(self, plan: Plan, base_dir: Path, label_file: Path | None) -> dict[str, Any]:
        """Join delayed labels (a file, or those POSTed to the server) to the request log."""
        from specml.targets.local.labels import ingest_labels

        return ingest_labels(plan, Path(base_dir), label_file)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
