"""Tuning: a killed search resumes its study (the trial count continues); bad spaces are spec errors."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from specml.compiler import ir
from specml.compiler.api import validate_file
from specml.compiler.errors import SpecError
from specml.runtime.encoding import default_categorical, encode_labels, learn_classes

ROOT = Path(__file__).resolve().parents[2]


def penguin_search(trials: int) -> tuple[ir.Plan, Any, Any, tuple]:
    """A lightgbm Plan on penguins species with a two-parameter search; train and validation."""
    from palmerpenguins import load_penguins

    frame = load_penguins()
    features = tuple(
        ir.FeatureRef(
            view_id="p",
            field=c,
            dtype="string" if frame[c].dtype == object else "float64",
            categorical=default_categorical("native") if frame[c].dtype == object else None,
        )
        for c in frame.columns
        if c not in ("species", "year")
    )
    space = (
        ir.SearchDimension(
            name="model.num_leaves", kind="int", low=4, high=64, log=True, choices=None
        ),
        ir.SearchDimension(
            name="model.learning_rate", kind="float", low=0.02, high=0.3, log=True, choices=None
        ),
    )
    training = ir.Training(
        task="multiclass_classification",
        num_classes=3,
        features=features,
        model=ir.ModelArch(
            type="lightgbm",
            hidden=(),
            dropout=0.0,
            activation="relu",
            batch_norm=False,
            trees=ir.TreeParams(
                n_estimators=60,
                learning_rate=0.1,
                max_depth=-1,
                num_leaves=31,
                min_child_samples=5,
                min_child_weight=None,
                subsample=1.0,
                colsample=1.0,
                reg_alpha=0.0,
                reg_lambda=0.0,
                early_stopping_rounds=10,
            ),
        ),
        hyperparameters=ir.Hyperparameters(
            optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=1, batch_size=64
        ),
        split=ir.Split(method="random", holdout=0.2, validation=0.2),
        seed=3,
        early_stopping=None,
        resources=ir.ComputeResources(cpu=None, memory=None, accelerator="cpu", gpu_count=0),
        primary_metric="accuracy",
        tuning=ir.Tuning(
            trials=trials, timeout_seconds=0, metric="log_loss", direction="minimize", space=space
        ),
    )
    system = ir.SystemMeta(name="penguins", owner="test", description="", labels={})
    plan = ir.Plan.model_construct(training=training, system=system)
    cols = {
        f.field: frame[f.field].astype(object).where(frame[f.field].notna(), None).to_numpy()
        if f.categorical
        else frame[f.field].to_numpy(dtype=np.float32, na_value=np.nan)
        for f in features
    }
    order = np.random.default_rng(0).permutation(len(frame))
    train, val = order[:200], order[200:280]
    classes = learn_classes(
        training, ir.Label(source_id="p", field="species"), frame["species"].to_numpy()[train]
    )
    y = encode_labels(frame["species"].to_numpy(), classes)
    part = lambda idx: ({k: v[idx] for k, v in cols.items()}, y[idx])  # noqa: E731
    return plan, part(train), part(val), classes


def _finished_count(workdir: Path, plan: ir.Plan) -> int:
    """Finished trials in the study file, read with plain sqlite3 while another process writes."""
    import sqlite3

    from specml.runtime.steps.tuning import study_file

    path = study_file(workdir, plan)
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            ).fetchone()
    except sqlite3.Error:  # schema not created yet
        return 0
    return int(row[0])


def _finished(workdir: Path, plan: ir.Plan) -> list[Any]:
    import optuna
    from optuna.trial import TrialState
    from specml.runtime.steps.tuning import study_file, study_name

    storage = f"sqlite:///{study_file(workdir, plan)}"
    study = optuna.load_study(study_name=study_name(plan), storage=storage)
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_killed_search_resumes_its_study_and_the_trial_count_continues(tmp_path: Path) -> None:
    from specml.runtime.steps.tuning import best_record, run_search

    plan, train, val, classes = penguin_search(trials=500)  # more than the kill lets it finish
    (tmp_path / "case.pkl").write_bytes(pickle.dumps((plan, train, val, classes)))
    script = textwrap.dedent(
        f"""
        import pickle
        from pathlib import Path
        from specml.runtime.steps.tuning import run_search
        plan, train, val, classes = pickle.loads(Path({str(tmp_path / "case.pkl")!r}).read_bytes())
        run_search(plan, Path({str(tmp_path)!r}), train, val, classes, "cpu")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while _finished_count(tmp_path, plan) < 4:
            assert proc.poll() is None, "the search process ended before it was killed"
            assert time.monotonic() < deadline, "the search finished no trial in 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _finished(tmp_path, plan)
    done = len(before)
    assert 4 <= done < 500
    resumed = plan.model_copy(
        update={
            "training": plan.training.model_copy(
                update={"tuning": plan.training.tuning.model_copy(update={"trials": done + 3})}  # type: ignore[union-attr]
            )
        }
    )
    study = run_search(resumed, tmp_path, train, val, classes, "cpu")
    after = _finished(tmp_path, plan)
    assert len(after) == done + 3  # three more trials, not a fresh budget of done + 3
    old_numbers = {t.number for t in before}
    new = [t for t in after if t.number not in old_numbers]
    assert len(new) == 3 and min(t.number for t in new) > max(old_numbers)
    record = best_record(resumed, study)
    assert record["trials_finished"] == done + 3
    assert set(record["best_params"]) == {"model.num_leaves", "model.learning_rate"}
    assert 4 <= record["best_params"]["model.num_leaves"] <= 64
    assert (tmp_path / "tuning" / "penguins.db").exists()


def test_best_parameters_reach_the_plan() -> None:
    from specml.runtime.steps.tuning import apply_params

    plan, *_ = penguin_search(trials=1)
    tuned = apply_params(plan, {"model.num_leaves": 7, "model.learning_rate": 0.2})
    assert tuned.training.model.trees.num_leaves == 7  # type: ignore[union-attr]
    assert tuned.training.model.trees.learning_rate == 0.2  # type: ignore[union-attr]
    assert plan.training.model.trees.num_leaves == 31  # type: ignore[union-attr]


SPEC = ROOT / "specs" / "churn.yaml"
SEARCH = """  model: {type: lightgbm}
  tuning:
    trials: 5
    space:
      SPACE
"""


def _spec_with(tmp_path: Path, model: str, space: str) -> Path:
    text = SPEC.read_text()
    start = text.index("  model:")
    end = text.index("\n", start) + 1
    block = SEARCH.replace("model: {type: lightgbm}", model).replace("SPACE", space)
    path = tmp_path / "spec.yaml"
    path.write_text(text[:start] + block + text[end:])
    return path


@pytest.mark.parametrize(
    ("model", "space", "path_tail", "anchor", "fragment"),
    [
        (
            "model: {type: lightgbm}",
            "model.num_leavs: {low: 8, high: 64}",
            "model.num_leavs",
            "{",
            "not a tunable",
        ),
        (
            "model: {type: lightgbm}",
            "model.num_leaves: {low: 64, high: 8}",
            "model.num_leaves.low",
            "64,",
            "must be below",
        ),
        (
            "model: {type: lightgbm}",
            "model.learning_rate: {low: 0, high: 0.3, log: true}",
            "model.learning_rate.low",
            "0,",
            "log-scale",
        ),
        (
            "model: {type: lightgbm}",
            "model.num_leaves: {low: 8.5, high: 64}",
            "model.num_leaves.low",
            "8.5",
            "integer",
        ),
        (
            "model: {type: lightgbm}",
            "model.num_leaves: {choices: []}",
            "model.num_leaves.choices",
            "[]",
            "at least 1",
        ),
        ("model: {type: lightgbm}", "lr: {low: 0.001, high: 0.1}", "lr", "{", "not a tunable"),
        (
            "model: {type: mlp}",
            "model.dropout: {low: 0.1, high: 1.5}",
            "model.dropout.high",
            "1.5",
            "not a valid",
        ),
    ],
)
def test_invalid_search_space_is_a_spec_error_with_line_and_col(
    tmp_path: Path, model: str, space: str, path_tail: str, anchor: str, fragment: str
) -> None:
    spec = _spec_with(tmp_path, model, space)
    with pytest.raises(SpecError) as info:
        validate_file(spec)
    errors = [d for d in info.value.diagnostics if d.severity == "error"]
    [diag] = [d for d in errors if str(d.yaml_path) == f"training.tuning.space.{path_tail}"]
    lines = spec.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == space)
    assert fragment in diag.message
    assert str(diag.yaml_path) == f"training.tuning.space.{path_tail}"
    assert (diag.line, diag.col) == (line, lines[line - 1].index(anchor, 6) + 1)
