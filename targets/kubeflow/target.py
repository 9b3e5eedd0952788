"""The kubeflow target: Plan -> KFP v2 pipeline + KServe InferenceService + PrometheusRule."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.targets.base import EmitResult

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
        from specml.targets.kubeflow.kserve import render_rollout
        from specml.targets.kubeflow.pipeline import compile_pipeline
        from specml.targets.kubeflow.prometheus import render_prometheus_rule
        from specml.targets.kubeflow.readme import render_readme

        diagnostics = self.check(plan)
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            raise TargetError(errors)
        files = {PIPELINE_FILE: compile_pipeline(plan)}
        files.update(render_rollout(plan))
        files[PROMETHEUS_FILE] = render_prometheus_rule(plan)
        files[README_FILE] = render_readme(plan, diagnostics)
        return dict(sorted(files.items()))

    def emit(self, plan: Plan, out_dir: Path) -> EmitResult:
        """Write the compiled files into out_dir; stale rollout manifests are removed."""
        files = self.render(plan)
        out_dir = Path(out_dir)
        rollout_dir = out_dir / "rollout"
        if rollout_dir.is_dir():
            for stale in sorted(rollout_dir.glob("*.yaml")):
                if f"rollout/{stale.name}" not in files:
                    stale.unlink()
        for rel, text in files.items():
            path = out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        notes = tuple(d.render() for d in self.check(plan) if d.severity != "error")
        return EmitResult(out_dir=out_dir, files=tuple(files), notes=notes)
