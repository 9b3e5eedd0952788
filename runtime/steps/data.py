"""validate_data: every source exists and holds the columns, types and values the Plan expects.

What only the rows can tell (a missing label, classes that disagree with the spec, an empty
table, a feature with no value, infinities) is reported here too, each problem a Diagnostic with
the YAML path of the spec field it concerns, so the CLI points at that line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from specml.compiler.errors import Diagnostic, TargetError, YamlPath, did_you_mean
from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.encoding import class_value
from specml.runtime.steps.common import (
    class_sort_key,
    data_hash,
    need,
    read_source,
    shown,
    source_path,
    write_json,
)

if TYPE_CHECKING:
    import pandas as pd


def _kind_ok(dtype: str, series: pd.Series) -> bool:
    """Whether a column's pandas dtype can carry the Plan's dtype (ints may widen to floats for nulls)."""
    import pandas as pd
    from pandas.api import types as t

    if dtype in ("int32", "int64"):
        return t.is_integer_dtype(series) or (t.is_float_dtype(series) and series.isna().any())
    if dtype in ("float32", "float64"):
        return t.is_numeric_dtype(series) and not t.is_bool_dtype(series)
    if dtype == "bool":
        return t.is_bool_dtype(series) or t.is_integer_dtype(series)
    return (
        t.is_string_dtype(series)
        or t.is_object_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def _problem(message: str, hint: str, code: str, path: YamlPath) -> Diagnostic:
    return Diagnostic(message, path=path, hint=hint, stage="target", code=code)


class _Column:
    """A column the Plan reads from a source: its dtype and the spec field that names it."""

    def __init__(self, dtype: str, path: YamlPath, numeric_feature: bool = False) -> None:
        self.dtype, self.path, self.numeric_feature = dtype, path, numeric_feature


def _required(plan: Plan, sources: set[str]) -> dict[str, dict[str, _Column]]:
    """source -> column -> what the Plan expects of it (join keys, feature fields)."""
    ents = {e.id: e for e in plan.features.entities}
    numeric = {(r.view_id, r.field) for r in plan.training.features if r.categorical is None}
    required: dict[str, dict[str, _Column]] = {sid: {} for sid in sources}
    for view in plan.features.views:
        cols = required.get(view.source_id)
        if cols is None:
            continue
        ent = ents[view.entity_id]
        for key in ent.join_keys:
            cols[key] = _Column(
                "string" if ent.dtype == "string" else "int64",
                ("features", "entities", ent.id, "join_keys"),
            )
        for fld in view.fields:
            cols[fld.name] = _Column(
                fld.dtype,
                ("features", "views", view.id, "fields", fld.name),
                (view.id, fld.name) in numeric,
            )
    label_src = plan.features.label.source_id
    if label_src in required:
        views = {v.id: v for v in plan.features.views}
        for ref in plan.training.features:
            ent = ents[views[ref.view_id].entity_id]
            for key in ent.join_keys:
                required[label_src].setdefault(
                    key,
                    _Column(
                        "string" if ent.dtype == "string" else "int64",
                        ("features", "entities", ent.id, "join_keys"),
                    ),
                )
    return required


def _column_problems(
    source_id: str, df: pd.DataFrame, columns: dict[str, _Column]
) -> list[Diagnostic]:
    """Missing columns, wrong dtypes, features with no value, infinities."""
    import numpy as np

    problems = []
    for col, want in sorted(columns.items()):
        if col not in df:
            close = did_you_mean(col, map(str, df.columns))
            problems.append(
                _problem(
                    f"source '{source_id}' has no column '{col}' (expected {want.dtype})",
                    f"did you mean '{close}'?"
                    if close
                    else f"available columns: {', '.join(map(str, df.columns))}",
                    "missing_column",
                    want.path,
                )
            )
            continue
        if not _kind_ok(want.dtype, df[col]):
            problems.append(
                _problem(
                    f"source '{source_id}': column '{col}' is {df[col].dtype}, "
                    f"incompatible with {want.dtype}",
                    "cast the column or change its dtype in the spec",
                    "bad_dtype",
                    want.path,
                )
            )
            continue
        if len(df) and want.path[:2] == ("features", "views") and df[col].isna().all():
            problems.append(
                _problem(
                    f"source '{source_id}': feature column '{col}' has no value in any row",
                    "fill the column or drop the field from the view",
                    "empty_feature",
                    want.path,
                )
            )
        elif want.numeric_feature:
            values = df[col].to_numpy(dtype="float64", na_value=np.nan)
            infinite = int(np.isinf(values).sum())
            if infinite:
                problems.append(
                    _problem(
                        f"source '{source_id}': feature column '{col}' has {infinite} infinite "
                        f"value(s) (e.g. {values[np.isinf(values)][0]})",
                        "replace infinities (a ratio over zero?) with a number or a null",
                        "infinite_values",
                        want.path,
                    )
                )
    return problems


def _label_problems(plan: Plan, df: pd.DataFrame) -> list[Diagnostic]:
    """The label: present, never missing, fit for the task, its classes as declared."""
    import numpy as np
    from pandas.api import types as t

    label = plan.features.label
    field = ("features", "label", "field")
    if label.field not in df:
        close = did_you_mean(label.field, map(str, df.columns))
        return [
            _problem(
                f"label source '{label.source_id}' has no label column '{label.field}'",
                f"did you mean '{close}'?" if close else "fix features.label.field",
                "missing_column",
                field,
            )
        ]
    values = df[label.field]
    problems = []
    missing = int(values.isna().sum())
    if missing:
        problems.append(
            _problem(
                f"label '{label.field}' is missing in {missing} of {len(values)} rows",
                "drop unlabelled rows from the label source (or fill them)",
                "missing_label",
                field,
            )
        )
    present = values.dropna()
    task = plan.training.task
    if task == "regression":
        if not (t.is_numeric_dtype(values) and not t.is_bool_dtype(values)):
            problems.append(
                _problem(
                    f"label '{label.field}' is {values.dtype}: regression needs numbers",
                    "use a classification task, or point features.label.field at a number",
                    "bad_label",
                    field,
                )
            )
        elif np.isinf(present.to_numpy(dtype="float64")).any():
            problems.append(
                _problem(
                    f"label '{label.field}' has infinite values",
                    "drop or fix those rows",
                    "bad_label",
                    field,
                )
            )
        return problems
    if t.is_float_dtype(values) and (present != present.round()).any():
        return [
            *problems,
            _problem(
                f"label '{label.field}' has fractional values: classification needs classes",
                "use task regression, or store class names / integer codes",
                "bad_label",
                field,
            ),
        ]
    seen = sorted({class_value(v) for v in present.tolist()}, key=class_sort_key)
    declared = None if label.classes is None else [class_value(c) for c in label.classes]
    if declared is not None:
        names = {str(d) for d in declared}  # YAML "1" and a stored 1 are the same class
        unknown = [v for v in seen if str(v) not in names]
        if unknown:
            problems.append(
                _problem(
                    f"label '{label.field}' has values {shown(unknown)} that are not among the "
                    f"declared classes {shown(declared)}",
                    "add them to features.label.classes, or drop those rows",
                    "bad_label",
                    ("features", "label", "classes"),
                )
            )
    elif task == "binary_classification" and len(seen) > 2:
        problems.append(
            _problem(
                f"binary_classification needs 2 classes; label '{label.field}' has {len(seen)}: "
                f"{shown(seen)}",
                "use task multiclass_classification with num_classes",
                "bad_label",
                ("training", "task"),
            )
        )
    elif task == "multiclass_classification" and len(seen) != plan.training.num_classes:
        problems.append(
            _problem(
                f"training.num_classes is {plan.training.num_classes} but label "
                f"'{label.field}' has {len(seen)} classes: {shown(seen)}",
                f"set training.num_classes: {len(seen)} or declare features.label.classes",
                "classes_mismatch",
                ("training", "num_classes"),
            )
        )
    return problems


def _label_report(plan: Plan, df: pd.DataFrame) -> dict[str, Any]:
    label = plan.features.label
    values = df[label.field]
    out: dict[str, Any] = {
        "field": label.field,
        "rows": int(len(df)),
        "missing": int(values.isna().sum()),
    }
    if plan.training.task == "regression":
        out["mean"] = float(values.mean())
    else:
        counts = values.dropna().map(class_value).value_counts()
        out["classes"] = {
            str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: class_sort_key(kv[0]))
        }
    return out


def validate_data(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
) -> StepResult:
    """Check sources, timestamps, join keys, fields and the label; write the data_report JSON."""
    from pandas.api import types as t

    report_path = need(outputs, "data_report", "validate_data")
    problems: list[Diagnostic] = []
    frames: dict[str, pd.DataFrame] = {}
    for source in plan.features.sources:
        try:
            frames[source.id] = read_source(source, ctx.data_dir)
        except TargetError as exc:
            problems += exc.diagnostics
        except Exception as exc:  # unreadable file: report it with the others
            problems.append(
                _problem(
                    f"cannot read source '{source.id}': {exc}",
                    f"check {source_path(source, ctx.data_dir)}",
                    "bad_data",
                    ("data", "sources", source.id, "path"),
                )
            )
    required = _required(plan, set(frames))
    label = plan.features.label
    sources: dict[str, Any] = {}
    for source in plan.features.sources:
        df = frames.get(source.id)
        if df is None:
            continue
        ts = source.timestamp_field
        where: YamlPath = ("data", "sources", source.id)
        if len(df) == 0:
            problems.append(
                _problem(f"source '{source.id}' is empty", "add rows", "empty_source", where)
            )
        if ts not in df:
            close = did_you_mean(ts, map(str, df.columns))
            problems.append(
                _problem(
                    f"source '{source.id}' has no timestamp column '{ts}'",
                    f"did you mean '{close}'?"
                    if close
                    else f"add the column or fix data.sources.{source.id}.timestamp",
                    "missing_column",
                    (*where, "timestamp"),
                )
            )
        elif not t.is_datetime64_any_dtype(df[ts]):
            problems.append(
                _problem(
                    f"source '{source.id}': timestamp column '{ts}' is {df[ts].dtype}, not a datetime",
                    "store event times as timestamps (UTC)",
                    "bad_dtype",
                    (*where, "timestamp"),
                )
            )
        problems += _column_problems(source.id, df, required[source.id])
        if source.id == label.source_id and len(df):
            problems += _label_problems(plan, df)
        stats: dict[str, Any] = {
            "rows": int(len(df)),
            "path": str(source_path(source, ctx.data_dir)),
        }
        if ts in df and t.is_datetime64_any_dtype(df[ts]) and len(df):
            stats["min_timestamp"] = df[ts].min().isoformat()
            stats["max_timestamp"] = df[ts].max().isoformat()
        stats["null_rate"] = {
            c: float(df[c].isna().mean())
            for c in sorted(required[source.id])
            if c in df and len(df)
        }
        sources[source.id] = stats

    if problems:
        raise TargetError(problems)
    report = {
        "data_hash": data_hash(plan, ctx.data_dir),
        "sources": sources,
        "label": _label_report(plan, frames[label.source_id]),
    }
    write_json(report_path, report)
    metrics = {f"rows_{sid}": float(s["rows"]) for sid, s in sources.items()}
    return StepResult(values={"data_hash": report["data_hash"]}, metrics=metrics)
