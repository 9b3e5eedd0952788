"""Spec models for training: task, model, hyperparameters, split, resources and gates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from specml.compiler.metrics import METRICS, PRIMARY_METRIC, metrics_for
from specml.compiler.spec.modeling import (
    EvaluationModel,
    LightGBMModel,
    TuningModel,
    XGBoostModel,
    check_space,
)
from specml.compiler.spec.types import Quantity, RuleError, SpecModel

Task = Literal["binary_classification", "multiclass_classification", "regression"]


class MLPModel(SpecModel):
    """A multi-layer perceptron (torch)."""

    type: Literal["mlp"] = Field(description="Model family.", examples=["mlp"])
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [64, 32],
        min_length=1,
        max_length=16,
        description="Width of each hidden layer, input side first.",
        examples=[[64, 32]],
    )
    dropout: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout after each hidden layer.", examples=[0.1]
    )
    activation: Literal["relu", "gelu", "tanh"] = Field(
        default="relu", description="Hidden-layer activation.", examples=["relu"]
    )
    batch_norm: bool = Field(
        default=False, description="Batch normalisation after each hidden layer.", examples=[False]
    )


class LinearModel(SpecModel):
    """A linear / logistic model (torch): a strong, fast baseline."""

    type: Literal["linear"] = Field(description="Model family.", examples=["linear"])


ModelChoice = Annotated[
    MLPModel | LinearModel | LightGBMModel | XGBoostModel,
    Field(
        discriminator="type",
        description="The model to train; `type` picks the family.",
        examples=[{"type": "mlp", "hidden": [64, 32], "dropout": 0.1}],
    ),
]


class Hyperparameters(SpecModel):
    """Optimiser settings."""

    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adam", description="Optimiser.", examples=["adamw"]
    )
    lr: float = Field(default=1e-3, gt=0, le=10, description="Learning rate.", examples=[0.001])
    weight_decay: float = Field(
        default=0.0, ge=0, le=1, description="L2 weight decay.", examples=[0.0001]
    )
    epochs: int = Field(default=20, ge=1, le=10000, description="Training epochs.", examples=[20])
    batch_size: int = Field(
        default=256, ge=1, le=1_000_000, description="Rows per optimiser step.", examples=[512]
    )


class EarlyStoppingModel(SpecModel):
    """Stop training when the validation metric stops improving."""

    metric: str = Field(
        default="loss",
        description="Validation metric to watch: `loss` or a metric of the task.",
        examples=["loss", "roc_auc"],
    )
    patience: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Epochs without improvement before stopping.",
        examples=[3],
    )
    min_delta: float = Field(
        default=0.0,
        ge=0,
        description="Smallest change that counts as improvement.",
        examples=[0.001],
    )


class SplitModel(SpecModel):
    """How rows are split into train / validation / holdout."""

    method: Literal["time", "random"] = Field(
        default="time",
        description="`time`: the latest rows are the holdout (no leakage from the future).",
        examples=["time"],
    )
    holdout: float = Field(
        default=0.2,
        gt=0,
        le=0.5,
        description="Share of rows held out for the gates.",
        examples=[0.2],
    )
    validation: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="Share of the training rows used for early stopping.",
        examples=[0.1],
    )


class TrainingResources(SpecModel):
    """Compute for the training step."""

    accelerator: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="`auto`: a GPU when the machine has one, else CPU; `gpu`: require one.",
        examples=["auto"],
    )
    gpus: int = Field(
        default=1, ge=0, le=16, description="GPUs to request when a GPU is used.", examples=[1]
    )
    cpu: Quantity | None = Field(
        default=None, description="CPU request (Kubernetes quantity).", examples=["4"]
    )
    memory: Quantity | None = Field(
        default=None, description="Memory request (Kubernetes quantity).", examples=["8Gi"]
    )


class MustBeatProduction(SpecModel):
    """The challenger must beat the current champion on the holdout."""

    metric: str = Field(description="Metric to compare.", examples=["roc_auc"])
    by: float = Field(
        default=0.0,
        ge=0,
        description="Required margin in the metric's better direction.",
        examples=[0.005],
    )


class Gates(SpecModel):
    """Evaluation gates on the holdout: a model that fails one is never registered or promoted."""

    min: dict[str, float] = Field(
        default_factory=dict,
        description="Metrics that must be at least this value (higher-is-better metrics).",
        examples=[{"roc_auc": 0.8}],
    )
    max: dict[str, float] = Field(
        default_factory=dict,
        description="Metrics that must be at most this value (lower-is-better metrics).",
        examples=[{"rmse": 12.5}],
    )
    must_beat_production: MustBeatProduction | None = Field(
        default=None,
        description="Compare against the model currently in production.",
        examples=[{"metric": "roc_auc", "by": 0.005}],
    )


class TrainingSection(SpecModel):
    """What to learn and how."""

    task: Task = Field(description="The learning task.", examples=["binary_classification"])
    num_classes: int | None = Field(
        default=None,
        ge=3,
        le=10000,
        description="Number of classes (multiclass_classification only); may be omitted when "
        "features.label.classes lists them.",
        examples=[5],
    )
    features: list[str] | None = Field(
        default=None,
        description="Model inputs as `view` or `view:field`; all features of all views if omitted.",
        examples=[["customer_stats", "usage:logins_7d"]],
    )
    model: ModelChoice
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Optimiser settings: optimizer, learning rate, epochs and batch size.",
        examples=[{"lr": 0.001, "epochs": 20, "batch_size": 512}],
    )
    split: SplitModel = Field(
        default_factory=SplitModel,
        description="Train / validation / holdout split.",
        examples=[{"method": "time", "holdout": 0.2}],
    )
    early_stopping: EarlyStoppingModel | None = Field(
        default=None,
        description="Stop early when the validation metric stalls.",
        examples=[{"metric": "loss", "patience": 3}],
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Random seed (training is deterministic on CPU).",
        examples=[7],
    )
    resources: TrainingResources = Field(
        default_factory=TrainingResources,
        description="Compute for training.",
        examples=[{"accelerator": "auto"}],
    )
    gates: Gates = Field(
        default_factory=Gates,
        description="Holdout gates a model must pass to be registered.",
        examples=[{"min": {"roc_auc": 0.8}}],
    )
    tuning: TuningModel | None = Field(
        default=None,
        description="Hyperparameter search (Optuna); the best trial's parameters are trained.",
        examples=[{"trials": 20, "space": {"model.num_leaves": {"low": 15, "high": 255}}}],
    )
    evaluation: EvaluationModel | None = Field(
        default=None,
        description="Holdout slices: metrics per slice and slice gates.",
        examples=[{"slices": [{"feature": "plan_type"}], "gates": {"max_gap": {"roc_auc": 0.05}}}],
    )

    @model_validator(mode="after")
    def _task_rules(self) -> TrainingSection:
        # multiclass without num_classes is fine when features.label.classes lists them: the
        # check stage, which sees both sections, decides.
        if self.task != "multiclass_classification" and self.num_classes is not None:
            raise RuleError(
                ("num_classes",),
                f"training.num_classes only applies to multiclass_classification, "
                f"not to training.task {self.task}",
                hint="remove num_classes",
            )
        allowed = metrics_for(self.task)
        for bound, table in (("min", self.gates.min), ("max", self.gates.max)):
            for metric in table:
                _check_metric(self.task, metric, ("gates", bound, metric), allowed)
                info = METRICS[metric]
                if (bound == "min") != info.higher_is_better:
                    other = "max" if bound == "min" else "min"
                    better = "higher" if info.higher_is_better else "lower"
                    raise RuleError(
                        ("gates", bound, metric),
                        f"{metric} is {better}-is-better, so a gates.{bound} bound on it "
                        "would pass worse models",
                        hint=f"move it to training.gates.{other}",
                    )
        beat = self.gates.must_beat_production
        if beat is not None:
            _check_metric(
                self.task, beat.metric, ("gates", "must_beat_production", "metric"), allowed
            )
        if self.early_stopping is not None and self.early_stopping.metric != "loss":
            _check_metric(
                self.task,
                self.early_stopping.metric,
                ("early_stopping", "metric"),
                ["loss", *allowed],
            )
        self._search_and_slice_rules(allowed)
        return self

    def _search_and_slice_rules(self, allowed: list[str]) -> None:
        if self.tuning is not None:
            check_space(self.tuning, self.model, self.hyperparameters)
            if self.split.validation == 0:
                raise RuleError(
                    ("tuning",),
                    "training.tuning scores trials on the validation split, but "
                    "training.split.validation is 0",
                    hint="set training.split.validation to e.g. 0.1",
                )
            if self.tuning.metric is not None:
                _check_metric(self.task, self.tuning.metric, ("tuning", "metric"), allowed)
        if self.evaluation is not None:
            g = self.evaluation.gates
            for bound, table in (("min", g.min), ("max", g.max), ("max_gap", g.max_gap)):
                for metric in table:
                    _check_metric(
                        self.task, metric, ("evaluation", "gates", bound, metric), allowed
                    )
            if (g.min or g.max or g.max_gap) and not self.evaluation.slices:
                raise RuleError(
                    ("evaluation", "gates"),
                    "training.evaluation.gates needs training.evaluation.slices to gate",
                    hint="add `slices: [{feature: NAME}]`",
                )

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.task]


def _check_metric(task: str, metric: str, subpath: tuple[str, ...], allowed: list[str]) -> None:
    if metric in allowed:
        return
    from specml.compiler.errors import did_you_mean

    if metric in METRICS:
        raise RuleError(
            subpath,
            f"metric '{metric}' does not fit training.task {task}",
            hint=f"metrics for {task}: {', '.join(allowed)}",
        )
    guess = did_you_mean(metric, allowed)
    raise RuleError(
        subpath,
        f"unknown metric '{metric}'",
        hint=f"did you mean '{guess}'?" if guess else f"metrics for {task}: {', '.join(allowed)}",
    )
