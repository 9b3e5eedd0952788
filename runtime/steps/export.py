"""export_onnx: the trained model (encoders, imputation, scaling included) to one ONNX graph with
one named input per feature, a parity check against the trained model, and the serving manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    LABEL_OUTPUT,
    OUTPUT_NAME,
    entity_join_keys,
    feature_refs,
    need,
    read_training_set,
    step_error,
    write_json,
)
from specml.runtime.steps.tracking import run_status

ONNX_FILE = "model.onnx"
MANIFEST = "serving.json"
MANIFEST_FORMAT = 2
PARITY_TOLERANCE = 1e-5


def manifest_inputs(plan: Plan) -> list[dict[str, Any]]:
    """The served model's inputs, in the Plan's order: name, datatype, shape [-1, 1], ref."""
    return [
        {"name": r.input_name, "datatype": r.datatype, "shape": [-1, 1], "ref": r.ref}
        for r in plan.training.features
    ]


def serving_manifest(
    plan: Plan,
    feature_repo: str | None,
    version: str | None = None,
    classes: tuple[str | int, ...] | None = None,
    positive_class: str | int | None = None,
    vocabularies: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """serving.json (format 2), the contract with the model server: `inputs` (one per feature,
    in the Plan's order: name, datatype FP32/INT64/BYTES, shape [-1, 1], ref), `classes` (index
    order) and `positive_class`, each categorical input's vocabulary and unknown/missing policy,
    and (as in format 1) features, entity_join_keys and feature_repo for predict-by-entity."""
    refs = feature_refs(plan)
    vocab = vocabularies or {}
    categorical = {
        r.input_name: {
            "vocabulary": list(vocab.get(r.input_name, r.categorical.categories or ())),
            "unknown": r.categorical.unknown,
            "missing": r.categorical.missing,
            "encoding": r.categorical.encoding,
        }
        for r in plan.training.features
        if r.categorical is not None
    }
    return {
        "format": MANIFEST_FORMAT,
        "model_name": plan.registry.name,
        "model_version": version,
        "task": plan.training.task,
        "num_classes": plan.training.num_classes,
        "input_name": None,
        "inputs": manifest_inputs(plan),
        "output_name": OUTPUT_NAME,
        "label_output": None if classes is None else LABEL_OUTPUT,
        "classes": None if classes is None else list(classes),
        "positive_class": positive_class,
        "categorical": categorical,
        "features": refs,
        "entity_join_keys": entity_join_keys(plan),
        "feature_repo": feature_repo,
        "feature_service_refs": refs,
    }


def parity_tolerance_for(plan: Plan, expected: Any) -> float:
    """Max abs difference allowed between the trained model and its ONNX graph: 1e-5, scaled by
    the output's magnitude for regression (a float32 value near 1000 rounds by 6e-5 alone)."""
    import numpy as np

    if plan.training.task != "regression" or expected.size == 0:
        return PARITY_TOLERANCE
    return PARITY_TOLERANCE * max(1.0, float(np.nanmax(np.abs(expected))))


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for a model file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_predict(session: Any, columns: dict[str, Any], output: str = OUTPUT_NAME) -> Any:
    """Score raw columns (input name -> 1-D) with an ONNX session: the named output."""
    from specml.runtime.families.parity import onnx_feed

    return session.run([output], onnx_feed(session, columns))[0]


def export_onnx(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
) -> StepResult:
    """Export model.onnx, check it against the trained model on holdout rows plus unseen-category
    and missing-value rows (any difference above tolerance fails the export), write serving.json."""
    import numpy as np
    from specml.runtime.families.parity import check_parity, parity_rows
    from specml.runtime.steps.evaluate import holdout_of, load_trained

    model, meta = load_trained(plan, need(inputs, "model", "export_onnx"))
    training_set = need(inputs, "training_set", "export_onnx")
    folder = need(outputs, "onnx_model", "export_onnx")
    with run_status(ctx, meta.get("mlflow_run_id"), end=False):
        frame = read_training_set(training_set)  # read once: the holdout and the drift reference
        _, columns, y_holdout = holdout_of(plan, frame, model.classes)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)
        model.export_onnx(folder / ONNX_FILE)
        rows = parity_rows(plan, model, columns)
        expected = model.predict(columns)
        if plan.training.task == "regression":
            # one bound scaled by the largest value (float32 rounding of the target's scale)
            want = np.asarray(model.predict(rows), dtype=np.float64)
            got = np.asarray(onnx_predict(onnx_session(folder / ONNX_FILE), rows), np.float64)
            tolerance = parity_tolerance_for(plan, want)
            max_diff = float(np.max(np.abs(want - got), initial=0.0))
            max_diff = max_diff if got.shape == want.shape else float("inf")
        else:  # probabilities, and the `label` output's class names
            tolerance = PARITY_TOLERANCE
            max_diff = float(check_parity(model, folder / ONNX_FILE, rows, tolerance))
        if not max_diff <= tolerance:
            (folder / ONNX_FILE).unlink(missing_ok=True)
            raise step_error(
                f"the ONNX graph and the trained model disagree on the parity rows (holdout, "
                f"unseen categories, missing values): max abs diff {max_diff:.3g} > "
                f"{tolerance:.3g}",
                hint="nothing was registered; an operator or an encoder exports differently",
                code="onnx_parity",
                path=("training", "model"),
            )
        manifest = serving_manifest(
            plan,
            meta.get("feature_repo"),
            classes=model.classes,
            positive_class=meta.get("positive_class"),
            vocabularies=model_vocabularies(model, meta),
        )
        from specml.runtime.quantize import guard_int8

        optimized = guard_int8(plan, folder / ONNX_FILE, columns, y_holdout)
        if optimized is not None:  # serving.optimize: which graph is served, and why
            manifest["optimize"] = optimized
        from specml.runtime.families.tree_booster import EXPLAIN_FILES, export_explainer

        if plan.training.model.type in EXPLAIN_FILES:  # trees: per-request contributions
            manifest["explain"] = export_explainer(model, folder)
        write_json(folder / MANIFEST, manifest)
        from specml.runtime.monitor.reference import write_training_reference

        write_training_reference(plan, frame, expected, folder)
    return StepResult(
        values={
            "onnx_max_abs_diff": max_diff,
            "onnx_tolerance": tolerance,
            "rows_checked": int(len(next(iter(rows.values()), ()))),
        },
        metrics={"onnx_max_abs_diff": max_diff},
    )


def model_vocabularies(model: Any, meta: dict[str, Any]) -> dict[str, list[Any]]:
    """Each categorical input's vocabulary (learned or declared) as the trained model holds it."""
    return {name: list(v.values) for name, v in model.vocabularies.items()}
