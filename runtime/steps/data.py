"""validate_data: every source exists and has the columns and types the Plan expects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    data_hash,
    entity_join_keys,
    need,
    read_source,
    source_path,
    write_json,
)

if TYPE_CHECKING:
    import pandas as pd


def _kind_ok(dtype: str, series: pd.Series) -> bool:
    """Whether a column's pandas dtype can carry the Plan's dtype (ints may widen to floats for nulls)."""
    from pandas.api import types as t

    if dtype in ("int32", "int64"):
        return t.is_integer_dtype(series) or (t.is_float_dtype(series) and series.isna().any())
    if dtype in ("float32", "float64"):
        return t.is_numeric_dtype(series) and not t.is_bool_dtype(series)
    if dtype == "bool":
        return t.is_bool_dtype(series) or t.is_integer_dtype(series)
    return t.is_string_dtype(series) or t.is_object_dtype(series)


def _problem(message: str, hint: str, code: str = "bad_data") -> Diagnostic:
    return Diagnostic(message, hint=hint, stage="target", code=code)


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
                )
            )

    ents = {e.id: e for e in plan.features.entities}
    required: dict[str, dict[str, str]] = {sid: {} for sid in frames}  # source -> column -> dtype
    for view in plan.features.views:
        cols = required.get(view.source_id)
        if cols is None:
            continue
        ent = ents[view.entity_id]
        for key in ent.join_keys:
            cols[key] = "string" if ent.dtype == "string" else "int64"
        for fld in view.fields:
            cols[fld.name] = fld.dtype
    label = plan.features.label
    key_dtype = {
        k: ("string" if e.dtype == "string" else "int64")
        for e in ents.values()
        for k in e.join_keys
    }
    if label.source_id in required:
        for key in entity_join_keys(plan):
            required[label.source_id][key] = key_dtype[key]

    sources: dict[str, Any] = {}
    for source in plan.features.sources:
        df = frames.get(source.id)
        if df is None:
            continue
        ts = source.timestamp_field
        where = f"data.sources.{source.id}"
        if ts not in df:
            problems.append(
                _problem(
                    f"source '{source.id}' has no timestamp column '{ts}'",
                    f"add the column or fix {where}.timestamp",
                    "missing_column",
                )
            )
        elif not t.is_datetime64_any_dtype(df[ts]):
            problems.append(
                _problem(
                    f"source '{source.id}': timestamp column '{ts}' is {df[ts].dtype}, not a datetime",
                    "store event times as timestamps (UTC)",
                    "bad_dtype",
                )
            )
        for col, dtype in sorted(required[source.id].items()):
            if col not in df:
                problems.append(
                    _problem(
                        f"source '{source.id}' has no column '{col}' (expected {dtype})",
                        f"available columns: {', '.join(map(str, df.columns))}",
                        "missing_column",
                    )
                )
            elif not _kind_ok(dtype, df[col]):
                problems.append(
                    _problem(
                        f"source '{source.id}': column '{col}' is {df[col].dtype}, "
                        f"incompatible with {dtype}",
                        "cast the column or change its dtype in the spec",
                        "bad_dtype",
                    )
                )
        if source.id == label.source_id:
            if label.field not in df:
                problems.append(
                    _problem(
                        f"label source '{source.id}' has no label column '{label.field}'",
                        "fix features.label.field",
                        "missing_column",
                    )
                )
            elif plan.training.task != "regression" and df[label.field].notna().any():
                values = df[label.field].dropna()
                bad = (
                    values[
                        (values < 0)
                        | (values >= plan.training.num_classes)
                        | (values != values.round())
                    ]
                    if t.is_numeric_dtype(values)
                    else values
                )
                if len(bad):
                    problems.append(
                        _problem(
                            f"label '{label.field}' has {len(bad)} values outside "
                            f"0..{plan.training.num_classes - 1}",
                            "encode classes as 0..K-1",
                            "bad_label",
                        )
                    )
        if len(df) == 0:
            problems.append(_problem(f"source '{source.id}' is empty", "add rows", "empty_source"))
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
    label_df = frames[label.source_id]
    report = {
        "data_hash": data_hash(plan, ctx.data_dir),
        "sources": sources,
        "label": {
            "field": label.field,
            "rows": int(len(label_df)),
            "missing": int(label_df[label.field].isna().sum()),
            "mean": float(label_df[label.field].mean()),
        },
    }
    write_json(report_path, report)
    metrics = {f"rows_{sid}": float(s["rows"]) for sid, s in sources.items()}
    return StepResult(values={"data_hash": report["data_hash"]}, metrics=metrics)
