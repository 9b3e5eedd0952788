"""train: the Plan's model family on raw feature columns, early stopping on validation, MLflow logging."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    INT_MISSING,
    OUTPUT_NAME,
    class_indices,
    entity_join_keys,
    feature_columns,
    feature_path,
    feature_refs,
    label_values,
    model_classes,
    need,
    read_training_set,
    split_indices,
    step_error,
    take,
    write_json,
)
from specml.runtime.steps.features import training_set_repo
from specml.runtime.steps.tracking import log_metrics, log_params, run_status, start_run

if TYPE_CHECKING:
    import numpy as np

Columns = dict[str, "np.ndarray"]


def training_device(plan: Plan) -> str:
    """'cuda' when the Plan allows a GPU (auto/gpu) and CUDA exists, else 'cpu'."""
    if plan.training.resources.accelerator == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:  # a tree-only install trains on CPU
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_training_features(plan: Plan, columns: Columns) -> None:
    """A feature entirely missing or constant in the training split is an error naming the field."""
    import numpy as np

    problems = []
    for ref in plan.training.features:
        values = columns[ref.input_name]
        if ref.datatype == "FP32":
            present = values[~np.isnan(values)]
        elif ref.datatype == "INT64":
            present = values[values != INT_MISSING]
        else:
            present = np.array([v for v in values if v not in (None, "")], dtype=object)
        if present.size == 0:
            problems.append((ref, "is entirely missing in the training split"))
        elif present.size > 1 and len(set(present.tolist())) == 1:
            problems.append((ref, f"is constant ({present.tolist()[0]!r}) in the training split"))
    if problems:
        from specml.compiler.errors import TargetError

        diagnostics = [
            d
            for ref, what in problems
            for d in step_error(
                f"feature '{ref.ref}' {what}: it cannot inform the model",
                hint="fix the source column or drop the field from training.features",
                code="useless_feature",
                path=feature_path(plan, ref.ref),
            ).diagnostics
        ]
        raise TargetError(diagnostics)


def prepare(
    plan: Plan, frame: Any
) -> tuple[Columns, np.ndarray, dict[str, np.ndarray], tuple[str | int, ...] | None]:
    """Raw columns, label (class indices or values), split rows and the model's classes."""
    columns = feature_columns(plan, frame)
    splits = split_indices(plan, frame)
    raw = label_values(plan, frame)
    classes = model_classes(plan, raw[splits["train"]])
    return columns, class_indices(plan, raw, classes), splits, classes


def fit_family(
    plan: Plan,
    columns: Columns,
    y: np.ndarray,
    splits: dict[str, np.ndarray],
    classes: tuple[str | int, ...] | None,
    device: str,
    on_epoch: Any = None,
) -> tuple[Any, list[dict[str, float]], int]:
    """Fit the Plan's model family on the train split (early stopping on validation)."""
    from specml.runtime.families import family_for

    train_rows, val_rows = splits["train"], splits["validation"]
    return family_for(plan).fit(
        plan,
        (take(columns, train_rows), y[train_rows]),
        (take(columns, val_rows), y[val_rows]),
        classes,
        device,
        on_epoch,
    )


def train(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
) -> StepResult:
    """Fit the model; write the model folder (weights + metadata) and train_metrics JSON."""
    ts_path = need(inputs, "training_set", "train")
    model_dir = need(outputs, "model", "train")
    frame = read_training_set(ts_path)
    columns, y, splits, classes = prepare(plan, frame)
    check_training_features(plan, take(columns, splits["train"]))
    device = training_device(plan)
    run_id = start_run(plan, ctx, run_name=f"{plan.system.name}-{ctx.run_id or 'run'}")
    t = plan.training
    with run_status(ctx, run_id):
        log_params(
            ctx,
            run_id,
            {
                **{f"hp.{k}": v for k, v in t.hyperparameters.model_dump().items()},
                **{f"model.{k}": v for k, v in t.model.model_dump().items()},
                "seed": t.seed,
                "split.method": t.split.method,
                "split.holdout": t.split.holdout,
                "split.validation": t.split.validation,
                "task": t.task,
                "device": device,
                "n_features": len(columns),
                "rows.train": len(splits["train"]),
                "rows.validation": len(splits["validation"]),
                "rows.holdout": len(splits["holdout"]),
                **class_params(classes),
            },
        )
        from specml.runtime.steps.tuning import tune

        plan, tuning = tune(plan, ctx, columns, y, splits, classes, device, run_id)
        started = time.perf_counter()
        model, history, best_epoch = fit_family(
            plan,
            columns,
            y,
            splits,
            classes,
            device,
            on_epoch=lambda e, row: log_metrics(ctx, run_id, row, step=e),
        )
        seconds = time.perf_counter() - started
        metadata: dict[str, Any] = {
            "features": feature_refs(plan),
            "inputs": [r.input_name for r in t.features],
            "entity_join_keys": entity_join_keys(plan),
            "output_name": OUTPUT_NAME,
            "task": t.task,
            "num_classes": t.num_classes,
            "classes": None if classes is None else list(classes),
            "positive_class": positive_class(plan, classes),
            "model_type": t.model.type,
            "mlflow_run_id": run_id,
            "spec_hash": plan.spec_hash,
            "feature_repo": training_set_repo(ts_path),
            "device": device,
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "seed": t.seed,
            "tuning": tuning,
        }
        model.save(model_dir, metadata)
        final = {
            **(history[-1] if history else {}),
            "best_epoch": float(best_epoch),
            "epochs_run": float(len(history)),
            "train_seconds": seconds,
        }
        write_json(
            need(outputs, "train_metrics", "train"),
            {"metrics": final, "history": history, "device": device, "mlflow_run_id": run_id},
        )
        log_metrics(
            ctx,
            run_id,
            {"train_seconds": seconds, "best_epoch": best_epoch, "epochs_run": len(history)},
        )
    return StepResult(values={"mlflow_run_id": run_id, "device": device}, metrics=final)


def positive_class(plan: Plan, classes: tuple[str | int, ...] | None) -> str | int | None:
    """Binary: the class whose probability is the score (the second of the model's classes)."""
    if plan.training.task != "binary_classification" or not classes:
        return None
    return classes[-1]


def class_params(classes: tuple[str | int, ...] | None) -> dict[str, Any]:
    """MLflow params recording the class mapping (index -> name)."""
    if classes is None:
        return {}
    import json

    return {
        "label.classes": json.dumps(list(classes)),
        **{f"label.class.{i}": c for i, c in enumerate(classes)},
    }
