"""evaluate: the Plan's metrics on the holdout, its gates, and the challenger-vs-champion check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    class_indices,
    feature_columns,
    label_values,
    model_metadata,
    need,
    read_json,
    read_training_set,
    split_indices,
    write_json,
)
from specml.runtime.steps.metrics import compute_metrics
from specml.runtime.steps.tracking import client, log_metrics, run_status


def holdout(
    plan: Plan, training_set: Path, classes: tuple[str | int, ...] | None
) -> tuple[Any, dict[str, Any], Any]:
    """(holdout frame, raw feature columns, labels as class indices or values), per the split."""
    return holdout_of(plan, read_training_set(training_set), classes)


def holdout_of(
    plan: Plan, frame: Any, classes: tuple[str | int, ...] | None
) -> tuple[Any, dict[str, Any], Any]:
    """`holdout` of an already-read training-set frame."""
    rows = frame.iloc[split_indices(plan, frame)["holdout"]].reset_index(drop=True)
    return rows, feature_columns(plan, rows), class_indices(plan, label_values(plan, rows), classes)


def load_trained(plan: Plan, folder: Path) -> tuple[Any, dict[str, Any]]:
    """The trained model in a model folder (through its family) and its metadata."""
    from specml.runtime.families import family_for

    return family_for(plan).load(plan, Path(folder)), model_metadata(Path(folder))


def champion_version(plan: Plan, ctx: StepContext) -> Any | None:
    """The registered model version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    mlflow = client(ctx)
    try:
        return mlflow.get_model_version_by_alias(plan.registry.name, plan.registry.champion_alias)
    except MlflowException:
        return None


def _champion_metric(
    plan: Plan,
    ctx: StepContext,
    version: Any,
    columns: dict[str, Any],
    y: Any,
    classes: tuple[str | int, ...] | None,
    metric: str,
) -> tuple[float | None, str]:
    """The champion's metric on this holdout (re-scored with its ONNX graph through its named
    inputs, when it takes this model's inputs and classes) or, failing that, as logged."""
    from specml.runtime.steps.export import (
        MANIFEST,
        ONNX_FILE,
        manifest_inputs,
        onnx_predict,
        onnx_session,
    )

    mlflow = client(ctx)
    try:
        folder = Path(mlflow.download_artifacts(version.run_id, "model", str(ctx.workdir / "tmp")))
        manifest = read_json(folder / MANIFEST)
        same_classes = manifest.get("classes") == (None if classes is None else list(classes))
        if manifest.get("inputs") == manifest_inputs(plan) and same_classes:
            out = onnx_predict(onnx_session(folder / ONNX_FILE), columns)
            return compute_metrics(plan.training.task, y, out, [metric])[metric], "rescored"
    except Exception:  # fall back to the metric logged when the champion was evaluated
        pass
    logged = mlflow.get_run(version.run_id).data.metrics.get(f"holdout_{metric}")
    return (None if logged is None else float(logged)), "logged"


def gate_report(plan: Plan, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """One row per min/max gate: metric, op, threshold, value, margin (>0 passes by), passed."""
    rows = []
    for gate in plan.evaluation.gates:
        value = metrics[gate.metric]
        margin = value - gate.threshold if gate.op == ">=" else gate.threshold - value
        rows.append(
            {
                "gate": f"{gate.metric} {gate.op} {gate.threshold}",
                "metric": gate.metric,
                "op": gate.op,
                "threshold": gate.threshold,
                "value": value,
                "margin": margin,
                "passed": margin >= 0,
            }
        )
    return rows


def evaluate(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
) -> StepResult:
    """Score the holdout, apply the gates; values['gate_passed'] says whether to ship."""
    model, meta = load_trained(plan, need(inputs, "model", "evaluate"))
    run_id = meta.get("mlflow_run_id")
    with run_status(ctx, run_id, end=False):
        rows, columns, y = holdout(plan, need(inputs, "training_set", "evaluate"), model.classes)
        report = evaluation_report(plan, ctx, model, rows, columns, y)
        report["mlflow_run_id"] = run_id
        log_metrics(ctx, run_id, {f"holdout_{k}": v for k, v in report["metrics"].items()})
        if run_id:  # the run ends FINISHED either way; whether it may ship is this tag
            client(ctx).set_tag(run_id, "specml.gate_passed", str(report["gate_passed"]).lower())
        from specml.runtime.explain import importance_mlflow_metrics
        from specml.runtime.slices import slice_mlflow_metrics

        log_metrics(ctx, run_id, slice_mlflow_metrics(report["slices"]))
        log_metrics(ctx, run_id, importance_mlflow_metrics(report["feature_importance"]))
        write_json(need(outputs, "eval_metrics", "evaluate"), report)
    return StepResult(
        values={
            "gate_passed": report["gate_passed"],
            "gates": report["gates"],
            "champion": report["champion"],
        },
        metrics=report["metrics"],
    )


def evaluation_report(
    plan: Plan, ctx: StepContext, model: Any, rows: Any, columns: dict[str, Any], y: Any
) -> dict[str, Any]:
    """The holdout report: metrics, min/max gates, the champion gate and the verdict."""
    metric_names = sorted(set(plan.evaluation.metrics) | {g.metric for g in plan.evaluation.gates})
    output = model.predict(columns)
    metrics = compute_metrics(plan.training.task, y, output, metric_names)
    gates = gate_report(plan, metrics)
    from specml.runtime.explain import feature_importance
    from specml.runtime.slices import evaluate_slices

    slices, slice_gates = evaluate_slices(plan, columns, y, output)
    gates += slice_gates
    champion: dict[str, Any] | None = None
    beat = plan.evaluation.must_beat_production
    if beat is not None:
        version = champion_version(plan, ctx)
        if version is not None:
            value, how = _champion_metric(
                plan, ctx, version, columns, y, model.classes, beat.metric
            )
            if value is not None:
                threshold = value + beat.by if beat.higher_is_better else value - beat.by
                op = ">=" if beat.higher_is_better else "<="
                mine = metrics[beat.metric]
                margin = mine - threshold if beat.higher_is_better else threshold - mine
                sign = "+" if beat.higher_is_better else "-"
                gates.append(
                    {
                        "gate": f"{beat.metric} {op} champion v{version.version} {sign} {beat.by}",
                        "metric": beat.metric,
                        "op": op,
                        "threshold": threshold,
                        "value": mine,
                        "margin": margin,
                        "passed": margin >= 0,
                        "must_beat_production": True,
                        "champion_value": value,
                    }
                )
                champion = {
                    "version": str(version.version),
                    "run_id": version.run_id,
                    beat.metric: value,
                    "source": how,
                }
    return {
        "metrics": metrics,
        "gates": gates,
        "gate_passed": all(g["passed"] for g in gates),
        "champion": champion,
        "holdout_rows": int(len(y)),
        "slices": slices,
        "feature_importance": feature_importance(plan, model, columns, y),
    }
