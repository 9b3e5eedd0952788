"""Hyperparameter search for the train step: Optuna (seeded TPE, median pruner), resumable.

The study lives in SQLite under the workdir (`<workdir>/tuning/<system>.db`), named by the system
and a hash of what is searched (space, metric, family, task), so a killed apply resumes the same
study and its trial count continues, while a changed search starts a new one. Each trial fits the
family on the training split and scores the tuning metric on the validation split; each is an
MLflow child run of the train run. The best parameters are applied to the Plan for the final fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.ir import Plan, SearchDimension
from specml.runtime.steps.common import step_error, take

Split = tuple[Mapping[str, np.ndarray], np.ndarray]


def study_file(workdir: Path, plan: Plan) -> Path:
    """Where the system's studies live: `<workdir>/tuning/<system>.db`."""
    return Path(workdir) / "tuning" / f"{plan.system.name}.db"


def study_name(plan: Plan) -> str:
    """The system's name and a hash of the search: the same search resumes, another starts anew."""
    t = plan.training
    assert t.tuning is not None
    # the budget (trials, timeout) is not part of the name: raising it continues the study
    what = {
        "space": [d.model_dump(mode="json") for d in t.tuning.space],
        "metric": t.tuning.metric,
        "family": t.model.type,
        "task": t.task,
        "inputs": [f.ref for f in t.features],
        "seed": t.seed,
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"{plan.system.name}-{digest}"


def apply_params(plan: Plan, params: Mapping[str, Any]) -> Plan:
    """The Plan with searched values set: `lr`-style hyperparameters, `model.<field>` (tree
    parameters live under model.trees in the Plan)."""
    t = plan.training
    hyper, model, trees = {}, {}, {}
    tree_fields = set(type(t.model.trees).model_fields) if t.model.trees is not None else set()
    for name, value in params.items():
        field = name.removeprefix("model.")
        if not name.startswith("model."):
            hyper[field] = value
        elif field in tree_fields:
            trees[field] = value
        else:
            model[field] = value
    if trees:
        assert t.model.trees is not None
        model["trees"] = t.model.trees.model_copy(update=trees)
    training = t.model_copy(
        update={
            "hyperparameters": t.hyperparameters.model_copy(update=hyper),
            "model": t.model.model_copy(update=model),
        }
    )
    return plan.model_copy(update={"training": training})


def _suggest(trial: Any, dim: SearchDimension) -> Any:
    if dim.kind == "categorical":
        assert dim.choices is not None
        return trial.suggest_categorical(dim.name, list(dim.choices))
    assert dim.low is not None and dim.high is not None
    if dim.kind == "int":
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)


def _close_stale_trials(study: Any) -> None:
    """Trials left RUNNING by a killed process never finish: mark them failed before resuming."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001


def open_study(plan: Plan, workdir: Path) -> Any:
    """Create or load the Plan's study (seeded TPE, median pruner) in the workdir's SQLite file."""
    import optuna

    t = plan.training
    assert t.tuning is not None
    path = study_file(workdir, plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    name = study_name(plan)
    done = 0
    with contextlib.suppress(KeyError):  # no such study yet
        done = len(optuna.load_study(study_name=name, storage=storage).trials)
    # Re-seeding with the trial count keeps a resumed study from replaying its first samples.
    sampler = optuna.samplers.TPESampler(seed=t.seed + done)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=t.tuning.direction,
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
        load_if_exists=True,
    )
    _close_stale_trials(study)
    if not study.trials:
        baseline = spec_values(plan)
        if baseline:  # the spec's own parameters are trial 0: the search can only improve on them
            study.enqueue_trial(baseline)
    return study


def spec_values(plan: Plan) -> dict[str, Any]:
    """The Plan's current value of each searched parameter that lies inside its search range."""
    t = plan.training
    assert t.tuning is not None
    out: dict[str, Any] = {}
    for dim in t.tuning.space:
        field = dim.name.removeprefix("model.")
        if not dim.name.startswith("model."):
            value = getattr(t.hyperparameters, field)
        elif t.model.trees is not None and field in type(t.model.trees).model_fields:
            value = getattr(t.model.trees, field)
        else:
            value = getattr(t.model, field)
        if dim.kind == "categorical":
            ok = value in (dim.choices or ())
        else:
            ok = value is not None and dim.low <= value <= dim.high  # type: ignore[operator]
        if ok:
            out[dim.name] = value
    return out


def finished_trials(study: Any) -> int:
    """Trials that count against the budget: complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_search(
    plan: Plan,
    workdir: Path,
    train: Split,
    validation: Split,
    classes: tuple[str | int, ...] | None,
    device: str,
    on_trial: Any = None,
) -> Any:
    """Run the remaining trials of the Plan's study; return the study."""
    import optuna
    from specml.runtime.families import family_for
    from specml.runtime.steps.metrics import compute_metrics

    t = plan.training
    tuning = t.tuning
    assert tuning is not None
    if len(validation[1]) == 0:
        raise step_error(
            "training.tuning scores trials on the validation split, which is empty",
            hint="set training.split.validation above 0",
            code="tuning",
        )
    study = open_study(plan, workdir)
    family = family_for(plan)

    def objective(trial: optuna.Trial) -> float:
        params = {dim.name: _suggest(trial, dim) for dim in tuning.space}
        trial_plan = apply_params(plan, params)

        def report(step: int, row: dict[str, float]) -> None:
            value = row.get(f"val_{tuning.metric}")
            if value is None:
                return
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        model, _, _ = family.fit(trial_plan, train, validation, classes, device, on_epoch=report)
        output = model.predict(validation[0])
        value = compute_metrics(t.task, validation[1], output, [tuning.metric])[tuning.metric]
        if on_trial is not None:
            on_trial(trial.number, params, value)
        return float(value)

    remaining = tuning.trials - finished_trials(study)
    if remaining > 0:
        study.optimize(  # one trial at a time: the train step's CPU budget is the spec's
            objective,
            n_trials=remaining,
            timeout=tuning.timeout_seconds or None,
            catch=(ValueError, ArithmeticError),
        )
    return study


def best_record(plan: Plan, study: Any) -> dict[str, Any]:
    """What the registry keeps: the best parameters and value, the metric and trial counts."""
    from optuna.trial import TrialState

    tuning = plan.training.tuning
    assert tuning is not None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise step_error(
            f"training.tuning finished no trial of study '{study.study_name}'",
            hint="raise training.tuning.timeout, or look at the failed trials in MLflow",
            code="tuning",
        )
    best = study.best_trial
    return {
        "study": study.study_name,
        "metric": tuning.metric,
        "direction": tuning.direction,
        "best_value": float(best.value),
        "best_trial": int(best.number),
        "best_params": dict(best.params),
        "trials_finished": finished_trials(study),
        "trials_complete": len(complete),
    }


def tuned_plan(
    plan: Plan,
    ctx: Any,
    train: Split,
    validation: Split,
    classes: tuple[str | int, ...] | None,
    device: str,
    parent_run_id: str | None,
) -> tuple[Plan, dict[str, Any]]:
    """The train step's hook: search (trials as MLflow child runs), then the Plan with the best
    parameters and the record to store with the model."""
    logger = _TrialRuns(plan, ctx, parent_run_id)
    study = run_search(plan, ctx.workdir, train, validation, classes, device, logger.log)
    record = best_record(plan, study)
    if parent_run_id:
        from specml.runtime.steps.tracking import log_metrics, log_params

        log_params(ctx, parent_run_id, {f"tuned.{k}": v for k, v in record["best_params"].items()})
        log_metrics(
            ctx,
            parent_run_id,
            {
                f"tuning_best_{record['metric']}": record["best_value"],
                "tuning_trials": record["trials_finished"],
            },
        )
    return apply_params(plan, record["best_params"]), record


class _TrialRuns:
    """Logs each finished trial as an MLflow child run of the train run."""

    def __init__(self, plan: Plan, ctx: Any, parent_run_id: str | None) -> None:
        self.plan, self.ctx, self.parent = plan, ctx, parent_run_id

    def log(self, number: int, params: dict[str, Any], value: float) -> None:
        """One child run: the trial's parameters and its validation metric."""
        if not self.parent:
            return
        from specml.runtime.steps.tracking import client, experiment_id, log_metrics, log_params

        mlflow = client(self.ctx)
        tags = {
            "mlflow.parentRunId": self.parent,
            "mlflow.runName": f"{self.plan.system.name}-trial-{number}",
            "specml.system": self.plan.system.name,
            "specml.tuning_trial": str(number),
        }
        run = mlflow.create_run(experiment_id(mlflow, self.plan, self.ctx), tags=tags)
        run_id = run.info.run_id
        log_params(self.ctx, run_id, params)
        metric = self.plan.training.tuning.metric  # type: ignore[union-attr]
        log_metrics(self.ctx, run_id, {f"val_{metric}": value})
        mlflow.set_terminated(run_id)


def tune(
    plan: Plan,
    ctx: Any,
    columns: Mapping[str, np.ndarray],
    y: np.ndarray,
    splits: Mapping[str, np.ndarray],
    classes: tuple[str | int, ...] | None,
    device: str,
    run_id: str | None,
) -> tuple[Plan, dict[str, Any] | None]:
    """The train step's hook: the Plan unchanged without `training.tuning`, else the searched one
    and its record (stored in the model's metadata, then on the registered version)."""
    if plan.training.tuning is None:
        return plan, None
    rows_train, rows_val = splits["train"], splits["validation"]
    train = (take(columns, rows_train), y[rows_train])
    validation = (take(columns, rows_val), y[rows_val])
    return tuned_plan(plan, ctx, train, validation, classes, device, run_id)


def version_tags(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Registry tags for a model's tuning record: the best parameters, value and study."""
    record = metadata.get("tuning")
    if not record:
        return {}
    tags = {f"specml.tuned.{k}": str(v) for k, v in record["best_params"].items()}
    tags["specml.tuning.study"] = str(record["study"])
    tags[f"specml.tuning.best_{record['metric']}"] = str(record["best_value"])
    tags["specml.tuning.trials"] = str(record["trials_finished"])
    return tags
