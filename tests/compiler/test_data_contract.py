"""Data contracts: `validate --data` checks every column the spec names against the sources'
schemas, each problem at the spec's FILE:LINE:COL; `plan` does too when the sources exist."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from specml.compiler.api import check_data, locate_diagnostics, validate_file
from specml.compiler.errors import Diagnostic
from typer.testing import CliRunner

SPEC = """\
apiVersion: specml/v1
kind: MLSystem
metadata: {name: shop, owner: team-ml}
data:
  sources:
    customers: {format: parquet, path: customers.parquet, timestamp: event_ts}
    usage: {format: csv, path: usage.csv, timestamp: event_ts}
features:
  entities:
    customer: {join_keys: [customer_id], dtype: int64}
  views:
    profile:
      entity: customer
      source: customers
      ttl: 30d
      fields:
        plan: string
        tenure: int64
        spend: {dtype: float32}
    activity:
      entity: customer
      source: usage
      ttl: 7d
      fields: {logins: int64, region: string}
  label: {source: customers, field: churned}
training:
  task: binary_classification
  model: {type: mlp}
"""
runner = CliRunner()


def _customers(**change: Any) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "event_ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
            "plan": ["basic", "pro", "basic"],
            "tenure": [3, 14, 7],
            "spend": [9.5, 30.0, 12.25],
            "churned": [False, True, False],
        }
    )
    for name, values in change.items():
        if values is None:
            frame = frame.drop(columns=[name])
        else:
            frame[name] = values
    return frame


def _usage_csv(**change: Any) -> str:
    frame = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "event_ts": ["2024-01-01T10:00:00Z", "2024-01-02T11:30:00Z", "2024-01-03T09:15:00Z"],
            "logins": [4, 0, 9],
            "region": ["eu", "us", "eu"],
        }
    )
    for name, values in change.items():
        if values is None:
            frame = frame.drop(columns=[name])
        else:
            frame[name] = values
    return frame.to_csv(index=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec with good data beside it: a parquet source and a csv source."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    _customers().to_parquet(tmp_path / "customers.parquet")
    (tmp_path / "usage.csv").write_text(_usage_csv())
    return tmp_path / "spec.yaml"


def _check(spec: Path, **kw: Any) -> list[Diagnostic]:
    return check_data(validate_file(spec), **kw)


def _only_error(found: list[Diagnostic]) -> Diagnostic:
    errors = [d for d in found if d.severity == "error"]
    assert len(errors) == 1, [d.render() for d in found]
    return errors[0]


def _at(d: Diagnostic, spec: Path, line: int, col: int, path: str) -> None:
    assert (d.file, d.line, d.col, d.yaml_path) == (str(spec), line, col, path), d.render()


def test_good_data_passes(project: Path) -> None:
    assert _check(project) == []


def test_missing_column_points_at_the_field_with_did_you_mean(project: Path) -> None:
    _customers(tenure=None, tenure_m=[3, 14, 7]).to_parquet(project.parent / "customers.parquet")
    d = _only_error(_check(project))
    _at(d, project, 18, 9, "features.views.profile.fields.tenure")
    assert "feature 'tenure' is not a column of data source 'customers'" in d.message
    assert d.hint == "did you mean 'tenure_m'?"


def test_string_field_over_a_numeric_column(project: Path) -> None:
    _customers(plan=[1, 2, 1]).to_parquet(project.parent / "customers.parquet")
    d = _only_error(_check(project))
    _at(d, project, 17, 15, "features.views.profile.fields.plan")
    assert "declared string, but column 'plan' of data source 'customers' is int64" in d.message
    assert "categorical: true" in (d.hint or "")


def test_numeric_field_over_a_text_column_points_at_its_dtype(project: Path) -> None:
    _customers(spend=["a", "b", "c"]).to_parquet(project.parent / "customers.parquet")
    d = _only_error(_check(project))
    _at(d, project, 19, 24, "features.views.profile.fields.spend.dtype")
    assert "declared float32" in d.message and "is string" in d.message
    assert "dtype: string" in (d.hint or "")


def test_int_field_over_a_float_column_warns_and_a_category_code_fails(project: Path) -> None:
    """pandas stores ints with missing values as floats: a numeric int field still trains (a
    warning), an integer category code cannot (an error)."""
    _customers(tenure=[3.5, 14.0, None]).to_parquet(project.parent / "customers.parquet")
    (d,) = _check(project)
    _at(d, project, 18, 17, "features.views.profile.fields.tenure")
    assert d.severity == "warning"
    assert "declared int64, but column 'tenure' of data source 'customers' is double" in d.message
    spec = project.with_name("codes.yaml")
    spec.write_text(SPEC.replace("tenure: int64", "tenure: {dtype: int64, categorical: true}"))
    d = _only_error(_check(spec))
    _at(d, spec, 18, 25, "features.views.profile.fields.tenure.dtype")
    assert "Int64" in (d.hint or "")


def test_parquet_timestamp_that_is_text(project: Path) -> None:
    _customers(event_ts=["2024-01-01"] * 3).to_parquet(project.parent / "customers.parquet")
    d = _only_error(_check(project))
    _at(d, project, 6, 70, "data.sources.customers.timestamp")
    assert "timestamp column 'event_ts' of data source 'customers' is string" in d.message


def test_csv_timestamp_that_does_not_parse(project: Path) -> None:
    (project.parent / "usage.csv").write_text(_usage_csv(event_ts=["soon", "later", "never"]))
    d = _only_error(_check(project))
    _at(d, project, 7, 54, "data.sources.usage.timestamp")
    assert "does not parse as times" in d.message


def test_missing_timestamp_column(project: Path) -> None:
    (project.parent / "usage.csv").write_text(_usage_csv(event_ts=None))
    d = _only_error(_check(project))
    _at(d, project, 7, 54, "data.sources.usage.timestamp")
    assert "timestamp column 'event_ts' is not a column of data source 'usage'" in d.message


def test_missing_label(project: Path) -> None:
    _customers(churned=None, churn=[0, 1, 0]).to_parquet(project.parent / "customers.parquet")
    d = _only_error(_check(project))
    _at(d, project, 25, 37, "features.label.field")
    assert "label 'churned' is not a column of data source 'customers'" in d.message
    assert d.hint == "did you mean 'churn'?"


def test_string_label_for_regression(project: Path) -> None:
    _customers(churned=["Yes", "No", "No"]).to_parquet(project.parent / "customers.parquet")
    spec = project.with_name("reg.yaml")
    spec.write_text(SPEC.replace("binary_classification", "regression"))
    d = _only_error(_check(spec))
    _at(d, spec, 25, 37, "features.label.field")
    assert "regression needs a numeric label" in d.message and "is string" in d.message


def test_declared_classes_that_cannot_occur_in_the_label_column(project: Path) -> None:
    _customers(churned=[0, 1, 0]).to_parquet(project.parent / "customers.parquet")
    spec = project.with_name("classes.yaml")
    spec.write_text(SPEC.replace("field: churned}", "field: churned, classes: [No, Yes]}"))
    d = _only_error(_check(spec))
    _at(d, spec, 25, 55, "features.label.classes")
    assert "classes 'No', 'Yes' cannot occur: label column 'churned' is int64" in d.message


def test_positive_class_that_cannot_occur_in_the_label_column(project: Path) -> None:
    spec = project.with_name("positive.yaml")
    spec.write_text(SPEC.replace("field: churned}", "field: churned, positive: 'Yes'}"))
    _customers(churned=[0, 1, 0]).to_parquet(project.parent / "customers.parquet")
    d = _only_error(_check(spec))
    _at(d, spec, 25, 56, "features.label.positive")
    assert "positive class 'Yes' cannot occur: label column 'churned' is int64" in d.message
    _customers(churned=["No", "Yes", "No"]).to_parquet(project.parent / "customers.parquet")
    assert _check(spec) == []


def test_join_key_missing_from_a_view_source(project: Path) -> None:
    (project.parent / "usage.csv").write_text(_usage_csv(customer_id=None))
    d = _only_error(_check(project))
    _at(d, project, 10, 28, "features.entities.customer.join_keys[0]")
    assert "join key 'customer_id' is not a column of data source 'usage'" in d.message
    assert "view 'activity'" in d.message


def test_join_key_of_the_wrong_dtype(project: Path) -> None:
    (project.parent / "usage.csv").write_text(_usage_csv(customer_id=["a", "b", "c"]))
    d = _only_error(_check(project))
    _at(d, project, 10, 28, "features.entities.customer.join_keys[0]")
    assert "is int64, but column 'customer_id' of data source 'usage' is string" in d.message


def test_missing_source_is_an_error_for_validate_and_skipped_by_plan(project: Path) -> None:
    (project.parent / "usage.csv").unlink()
    d = _only_error(_check(project))
    _at(d, project, 7, 32, "data.sources.usage.path")
    assert "data source 'usage' not found" in d.message
    assert _check(project, require_sources=False) == []


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail instead of hanging: a FIFO opened for reading blocks forever."""

    def expire(*_: Any) -> None:
        raise TimeoutError("blocked on a non-regular file")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("kind", ["fifo", "folder", "dev_zero"])
def test_non_regular_source_is_refused_unopened(project: Path, kind: str, deadline: None) -> None:
    target = project.parent / "usage.csv"
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
        path, what = "usage.csv", "a named pipe (FIFO)"
    elif kind == "folder":
        target.mkdir()
        path, what = "usage.csv", "a folder"
    else:
        path, what = "/dev/zero", "a character device"
    spec = project.with_name("odd.yaml")
    spec.write_text(SPEC.replace("path: usage.csv,", f"path: {path},"))
    for require in (True, False):
        d = _only_error(_check(spec, require_sources=require))
        _at(d, spec, 7, 32, "data.sources.usage.path")
        assert f"is {what}, not a regular file" in d.message


def test_cli_validate_data_and_plan_report_file_line_col(project: Path, deadline: None) -> None:
    from specml.cli.main import app

    assert runner.invoke(app, ["validate", "--data", str(project)]).exit_code == 0
    _customers(tenure=None).to_parquet(project.parent / "customers.parquet")
    assert runner.invoke(app, ["validate", str(project)]).exit_code == 0  # schema only
    result = runner.invoke(app, ["validate", "--data", str(project)])
    assert result.exit_code == 1, result.output
    assert f"{project}:18:9" in result.output and "Traceback" not in result.output
    (project.parent / "usage.csv").unlink()
    os.mkfifo(project.parent / "usage.csv")
    result = runner.invoke(app, ["plan", str(project)])
    assert result.exit_code == 1, result.output
    assert f"{project}:7:32" in result.output and "not a regular file" in result.output


def test_csv_contract_reads_only_the_head(project: Path) -> None:
    """A csv's schema comes from its first block: a bad value far below it is left to apply."""
    rows = ["customer_id,event_ts,logins,region"]
    rows += [f"{i},2024-01-01T00:00:00Z,{i % 7},eu" for i in range(90_000)]
    rows.append("90000,2024-01-01T00:00:00Z,lots,eu")
    (project.parent / "usage.csv").write_text("\n".join(rows) + "\n")
    assert (project.parent / "usage.csv").stat().st_size > 2 * (1 << 20)
    assert _check(project) == []


def test_locate_diagnostics_gives_apply_errors_a_spec_position(project: Path) -> None:
    validated = validate_file(project)
    found = locate_diagnostics(
        [
            Diagnostic("the label has NaN in 3 rows", path=("features", "label", "field")),
            Diagnostic(
                "feature 'spend' is constant",
                path=("features", "views", "profile", "fields", "spend"),
            ),
            Diagnostic("no path: left alone"),
        ],
        validated,
    )
    assert [(d.file, d.line, d.col) for d in found] == [
        (str(project), 25, 30),
        (str(project), 19, 9),
        (None, None, None),
    ]


@pytest.mark.parametrize("example", ["churn", "demand", "fraud"])
def test_demo_data_of_each_example_meets_its_contract(example: str, tmp_path: Path) -> None:
    """What `specml demo-data` writes is what the spec declares (same checker as validate)."""
    import shutil

    from specml.compiler.lower import lower
    from specml.runtime.demo_data import write_demo_data

    root = Path(__file__).resolve().parents[2]
    spec = tmp_path / f"{example}.yaml"
    shutil.copy(root / "specs" / f"{example}.yaml", spec)
    validated = validate_file(spec)
    assert check_data(validated)[0].code == "missing_source"  # nothing written yet
    write_demo_data(lower(validated.spec), tmp_path, rows=200)
    assert check_data(validated) == []


@pytest.mark.parametrize("content", [b"customer_id,event_ts\n1,2024-01-01\n", b"", b"PAR1garbage"])
def test_a_source_that_is_not_what_its_format_says(project: Path, content: bytes) -> None:
    (project.parent / "customers.parquet").write_bytes(content)
    d = _only_error(_check(project))
    _at(d, project, 6, 40, "data.sources.customers.path")
    assert "cannot read the schema of data source 'customers' (parquet)" in d.message


def test_a_spec_path_of_dev_zero_is_refused_without_reading_it_all(deadline: None) -> None:
    from specml.compiler.errors import LoadError

    with pytest.raises(LoadError) as info:
        validate_file("/dev/zero")
    assert "larger than" in info.value.diagnostics[0].message
