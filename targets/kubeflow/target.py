"""The kubeflow target: Plan -> KFP v2 pipeline, KServe InferenceService, PrometheusRule, and the
in-cluster loop (rollout controller, monitor service, Istio mirror)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.targets.base import (
    ApplyOptions,
    EmitResult,
    History,
    MonitorOptions,
    RolloutOptions,
    RolloutReport,
    ServeOptions,
)

PIPELINE_FILE = "pipeline.yaml"
PROMETHEUS_FILE = "prometheusrule.yaml"
README_FILE = "README.md"


class KubeflowTarget:
    """Compiles a Plan for Kubeflow Pipelines (kfp SDK), KServe and the Prometheus operator."""

    name: ClassVar[str] = "kubeflow"
    extra: ClassVar[str] = "kubeflow"

    def check(self, plan: Plan) -> list[Diagnostic]:
        """Errors that stop compilation and warnings for what KFP/KServe cannot express."""
        from specml.targets.kubeflow.checks import check_plan

        return check_plan(plan)

    def render(self, plan: Plan) -> dict[str, str]:
        """Every output file (relative path -> text), without writing anything."""
        from specml.targets.kubeflow.controller import render_controller
        from specml.targets.kubeflow.kserve import render_rollout
        from specml.targets.kubeflow.monitor import render_monitor
        from specml.targets.kubeflow.pipeline import compile_pipeline
        from specml.targets.kubeflow.prometheus import render_prometheus_rule
        from specml.targets.kubeflow.readme import render_readme

        diagnostics = self.check(plan)
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            raise TargetError(errors)
        files = {PIPELINE_FILE: compile_pipeline(plan)}
        files.update(render_rollout(plan))
        files.update(render_controller(plan))
        files.update(render_monitor(plan))
        files[PROMETHEUS_FILE] = render_prometheus_rule(plan)
        files[README_FILE] = render_readme(plan, diagnostics)
        return dict(sorted(files.items()))

    def emit(self, plan: Plan, out_dir: Path) -> EmitResult:
        """Write the compiled files into out_dir; stale rollout manifests are removed."""
        files = self.render(plan)
        out_dir = Path(out_dir)
        for folder in ("rollout", "controller", "monitor"):
            if (out_dir / folder).is_dir():
                for stale in sorted((out_dir / folder).glob("*.yaml")):
                    if f"{folder}/{stale.name}" not in files:
                        stale.unlink()
        for rel, text in files.items():
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        notes = tuple(d.render() for d in self.check(plan) if d.severity != "error")
        return EmitResult(out_dir=out_dir, files=tuple(files), notes=notes)

    def apply(self, plan: Plan, base_dir: Path, options: ApplyOptions | None = None) -> Any:
        """Upload + run the pipeline, set recurring runs, server-side-apply the manifests."""
        from specml.runtime.files import write_atomic
        from specml.targets.kubeflow.apply import apply_plan

        report = apply_plan(plan, self.render(plan), options)
        if not (options is not None and options.dry_run):
            write_atomic(self.recorded_plan(plan, base_dir), plan.to_json())
        return report

    def recorded_plan(self, plan: Plan, base_dir: Path) -> Path:
        """The Plan of the last (non-dry-run) kubeflow apply from this folder."""
        return Path(base_dir) / plan.targets.local.workdir / "kubeflow" / "plan.json"

    def plan_changes(self, plan: Plan, base_dir: Path) -> list[str]:
        """Nothing beyond the Plan: the cluster's own state is not read by `plan`."""
        return []

    def history(self, plan: Plan, base_dir: Path) -> History:
        """KFP keeps the runs: no local history."""
        return History(records=(), aliases={})

    def serve(self, plan: Plan, base_dir: Path, options: ServeOptions | None = None) -> None:
        """KServe serves in the cluster."""
        raise _in_cluster("serve", "KServe serves the InferenceService after `specml apply`")

    def rollout(self, plan: Plan, base_dir: Path, options: RolloutOptions) -> RolloutReport:
        """`status`: the in-cluster controller's state, read from the InferenceService; the
        controller alone drives the rollout, so promote, rollback and run are refused."""
        from specml.targets.kubeflow.rollout import rollout_status

        if options.action != "status":
            raise _not_supported(plan, options.action)
        doc = rollout_status(plan, options.endpoints.get("kubernetes"))
        if doc is None:
            return RolloutReport(status=None)
        return RolloutReport(
            status=doc["status"], document=doc, challenger_version=doc["challenger_version"]
        )

    def monitor(self, plan: Plan, base_dir: Path, options: MonitorOptions) -> dict[str, Any]:
        """The monitor service runs in the cluster."""
        raise _in_cluster("monitor", "the monitor Deployment exports drift gauges to Prometheus")

    def ingest_labels(self, plan: Plan, base_dir: Path, label_file: Path | None) -> dict[str, Any]:
        """Delayed labels are not joined in the cluster."""
        raise _in_cluster("labels", "export specml_model_metric_drop from your label pipeline")


def _not_supported(plan: Plan, action: str) -> TargetError:
    """A usage error (exit 2): the controller reads no requests, so nothing can be asked of it."""
    from specml.targets.kubeflow.controller import controller_name
    from specml.targets.kubeflow.manifests import namespace

    controller, ns = controller_name(plan), namespace(plan)
    return TargetError(
        [
            Diagnostic(
                f"`specml rollout {action}` is not supported on kubeflow: the rollout controller "
                "in the cluster drives the rollout on its own and takes no requests",
                hint=(
                    "`specml rollout status SPEC --target kubeflow` shows where it stands; to "
                    f"decide by hand, stop the controller (`kubectl -n {ns} scale deployment "
                    f"{controller} --replicas=0`) and apply rollout/rollback.yaml or the next "
                    "rollout/step-*.yaml"
                ),
                stage="usage",
                code="usage",
            )
        ]
    )


def _in_cluster(command: str, hint: str) -> TargetError:
    return TargetError(
        [
            Diagnostic(
                f"`specml {command}` is not run from here for the kubeflow target: it runs in "
                "the cluster",
                hint=hint,
                stage="target",
                code="kubeflow_in_cluster",
            )
        ]
    )
