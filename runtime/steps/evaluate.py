"""evaluate: the Plan's metrics on the holdout, its gates, and the challenger-vs-champion check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    feature_matrix,
    feature_refs,
    label_vector,
    need,
    read_training_set,
    split_indices,
    write_json,
)
from specml.runtime.steps.metrics import compute_metrics
from specml.runtime.steps.tracking import client, log_metrics


def holdout(plan: Plan, training_set: Path) -> tuple[Any, Any, Any]:
    """(holdout frame, features [N,F] float32, labels) of a training set, per the Plan's split."""
    frame = read_training_set(training_set)
    rows = frame.iloc[split_indices(plan, frame)["holdout"]].reset_index(drop=True)
    return rows, feature_matrix(plan, rows), label_vector(plan, rows)


def champion_version(plan: Plan, ctx: StepContext) -> Any | None:
    """The registered model version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    mlflow = client(ctx)
    try:
        return mlflow.get_model_version_by_alias(plan.registry.name, plan.registry.champion_alias)
    except MlflowException:
        return None


def _champion_metric(
    plan: Plan, ctx: StepContext, version: Any, x: Any, y: Any, metric: str
) -> tuple[float | None, str]:
    """The champion's metric on this holdout (re-scored with its ONNX) or, failing that, as logged."""
    import json

    mlflow = client(ctx)
    try:
        folder = Path(mlflow.download_artifacts(version.run_id, "model", str(ctx.workdir / "tmp")))
        manifest = json.loads((folder / "serving.json").read_text())
        if manifest["features"] == feature_refs(plan):
            import onnxruntime as ort

            sess = ort.InferenceSession(
                str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
            )
            out = sess.run([manifest["output_name"]], {manifest["input_name"]: x})[0]
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
    from specml.runtime.modeling import load_model, predict

    model, meta = load_model(plan, need(inputs, "model", "evaluate"))
    _, x, y = holdout(plan, need(inputs, "training_set", "evaluate"))
    metric_names = sorted(set(plan.evaluation.metrics) | {g.metric for g in plan.evaluation.gates})
    metrics = compute_metrics(plan.training.task, y, predict(model, x), metric_names)
    gates = gate_report(plan, metrics)
    champion: dict[str, Any] | None = None
    beat = plan.evaluation.must_beat_production
    if beat is not None:
        version = champion_version(plan, ctx)
        if version is not None:
            value, how = _champion_metric(plan, ctx, version, x, y, beat.metric)
            if value is not None:
                threshold = value + beat.by if beat.higher_is_better else value - beat.by
                op = ">=" if beat.higher_is_better else "<="
                mine = metrics[beat.metric]
                margin = mine - threshold if beat.higher_is_better else threshold - mine
                row = {
                    "gate": f"{beat.metric} {op} champion v{version.version} {'+' if beat.higher_is_better else '-'} {beat.by}",
                    "metric": beat.metric,
                    "op": op,
                    "threshold": threshold,
                    "value": mine,
                    "margin": margin,
                    "passed": margin >= 0,
                    "must_beat_production": True,
                }
                gates.append(row)
                champion = {
                    "version": str(version.version),
                    "run_id": version.run_id,
                    beat.metric: value,
                    "source": how,
                }
    passed = all(g["passed"] for g in gates)
    run_id = meta.get("mlflow_run_id")
    log_metrics(ctx, run_id, {f"holdout_{k}": v for k, v in metrics.items()})
    report = {
        "metrics": metrics,
        "gates": gates,
        "gate_passed": passed,
        "champion": champion,
        "holdout_rows": int(len(y)),
        "mlflow_run_id": run_id,
    }
    write_json(need(outputs, "eval_metrics", "evaluate"), report)
    return StepResult(
        values={"gate_passed": passed, "gates": gates, "champion": champion}, metrics=metrics
    )
