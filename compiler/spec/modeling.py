"""Spec models for tree families (LightGBM, XGBoost), hyperparameter search and evaluation slices."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, model_validator
from specml.compiler.spec.types import Duration, RuleError, SpecModel


class _TreeModel(SpecModel):
    """Parameters every gradient-boosted tree family shares."""

    n_estimators: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Most boosting rounds (trees); early stopping on the validation split "
        "usually stops sooner.",
        examples=[500],
    )
    learning_rate: float = Field(
        default=0.05, gt=0, le=1, description="Shrinkage per tree.", examples=[0.05]
    )
    subsample: float = Field(
        default=1.0, gt=0, le=1, description="Share of rows sampled per tree.", examples=[0.8]
    )
    colsample: float = Field(
        default=1.0, gt=0, le=1, description="Share of features sampled per tree.", examples=[0.8]
    )
    reg_alpha: float = Field(default=0.0, ge=0, description="L1 regularisation.", examples=[0.0])
    early_stopping_rounds: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Stop after this many rounds without improvement on the validation split.",
        examples=[50],
    )


class LightGBMModel(_TreeModel):
    """Gradient-boosted trees (LightGBM); string and integer categoricals use native splits."""

    type: Literal["lightgbm"] = Field(description="Model family.", examples=["lightgbm"])
    num_leaves: int = Field(
        default=31, ge=2, le=131_072, description="Most leaves per tree.", examples=[31]
    )
    max_depth: int = Field(
        default=-1, ge=-1, le=64, description="Deepest tree; -1: no limit.", examples=[-1]
    )
    min_child_samples: int = Field(
        default=20, ge=1, le=1_000_000, description="Fewest rows in a leaf.", examples=[20]
    )
    reg_lambda: float = Field(default=0.0, ge=0, description="L2 regularisation.", examples=[0.0])


class XGBoostModel(_TreeModel):
    """Gradient-boosted trees (XGBoost, `hist`); string and integer categoricals use native splits."""

    type: Literal["xgboost"] = Field(description="Model family.", examples=["xgboost"])
    max_depth: int = Field(
        default=6, ge=0, le=64, description="Deepest tree; 0: no limit.", examples=[6]
    )
    num_leaves: int = Field(
        default=0, ge=0, le=131_072, description="Most leaves per tree; 0: no limit.", examples=[0]
    )
    min_child_weight: float = Field(
        default=1.0,
        ge=0,
        description="Smallest hessian sum in a leaf (rows, for squared error).",
        examples=[1.0],
    )
    reg_lambda: float = Field(default=1.0, ge=0, description="L2 regularisation.", examples=[1.0])


class SearchRange(SpecModel):
    """A numeric range to search: integers when the parameter is an integer."""

    low: float = Field(description="Smallest value tried.", examples=[0.001])
    high: float = Field(description="Largest value tried.", examples=[0.1])
    log: bool = Field(default=False, description="Sample on a log scale.", examples=[True])

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.low >= self.high:
            raise RuleError(
                ("low",),
                f"low ({self.low}) must be below high ({self.high})",
                hint="swap them, or use `choices` for a single value",
            )
        if self.log and self.low <= 0:
            raise RuleError(
                ("low",),
                f"a log-scale range needs low > 0, got {self.low}",
                hint="raise low above 0, or drop `log: true`",
            )
        return self


class SearchChoices(SpecModel):
    """A list of values to search."""

    choices: list[float | int | str | bool] = Field(
        min_length=1, description="Values tried.", examples=[[16, 32, 64]]
    )


def _dimension_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "choices" if "choices" in value else "range"
    return "choices" if isinstance(getattr(value, "choices", None), list) else "range"


SearchDimension = Annotated[
    Annotated[SearchRange, Tag("range")] | Annotated[SearchChoices, Tag("choices")],
    Discriminator(_dimension_kind),
]


class TuningModel(SpecModel):
    """Hyperparameter search with Optuna (TPE sampler, median pruner), resumable."""

    trials: int = Field(default=20, ge=1, le=100_000, description="Trials to run.", examples=[20])
    timeout: Duration | None = Field(
        default=None, description="Stop starting trials after this long.", examples=["1h"]
    )
    metric: str | None = Field(
        default=None,
        description="Validation metric to optimise; default: the first gate metric, else the "
        "task's primary metric. Its direction comes from the metric.",
        examples=["roc_auc"],
    )
    space: dict[str, SearchDimension] = Field(
        min_length=1,
        description="What to search: a hyperparameter (`lr`, `epochs`, `batch_size`, "
        "`weight_decay`; mlp/linear) or a model parameter (`model.num_leaves`, "
        "`model.dropout`, ...) mapped to `{low, high, log}` or `{choices: [...]}`.",
        examples=[{"model.num_leaves": {"low": 15, "high": 255, "log": True}}],
    )


TUNABLE_HYPERPARAMETERS = ("lr", "weight_decay", "epochs", "batch_size", "optimizer")
_NOT_TUNABLE = {"type", "hidden"}


def tunable_names(model: SpecModel) -> list[str]:
    """Names a search space may use for this model family."""
    names = [f"model.{n}" for n in type(model).model_fields if n not in _NOT_TUNABLE]
    if model.type in ("mlp", "linear"):  # type: ignore[attr-defined]
        names = [*TUNABLE_HYPERPARAMETERS, *names]
    return names


def check_space(tuning: TuningModel, model: SpecModel, hyper: SpecModel) -> None:
    """Each searched name exists for the model family and each bound or choice is a valid value."""
    from specml.compiler.errors import did_you_mean

    known = tunable_names(model)
    for name, dim in tuning.space.items():
        path: tuple[str | int, ...] = ("tuning", "space", name)
        if name not in known:
            guess = did_you_mean(name, known)
            raise RuleError(
                path,
                f"'{name}' is not a tunable parameter of training.model {model.type}",  # type: ignore[attr-defined]
                hint=f"did you mean '{guess}'?" if guess else f"tunable: {', '.join(known)}",
            )
        owner: BaseModel = model if name.startswith("model.") else hyper
        field = name.removeprefix("model.")
        annotation = type(owner).model_fields[field].annotation
        if isinstance(dim, SearchRange):
            if annotation is int and not (dim.low.is_integer() and dim.high.is_integer()):
                raise RuleError(
                    (*path, "low"),
                    f"{name} is an integer, but the range {dim.low}..{dim.high} is not",
                    hint="use whole-number bounds",
                )
            if annotation not in (int, float):
                raise RuleError(
                    path,
                    f"{name} is not numeric: search it with `choices`",
                    hint=f"e.g. {name}: {{choices: [...]}}",
                )
            values: list[tuple[tuple[str | int, ...], Any]] = [
                ((*path, "low"), dim.low),
                ((*path, "high"), dim.high),
            ]
        else:
            values = [((*path, "choices", i), v) for i, v in enumerate(dim.choices)]
        for where, value in values:
            if annotation is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            try:
                type(owner).model_validate({**owner.model_dump(), field: value})
            except ValidationError as exc:
                raise RuleError(
                    where,
                    f"{value!r} is not a valid {name}: {exc.errors()[0]['msg']}",
                    hint="keep the search inside the parameter's valid range",
                ) from None


class SliceModel(SpecModel):
    """A way to cut the holdout into slices: by each value of a categorical feature, or by bins."""

    feature: str = Field(
        description="A model input: its field name (or `view:field`).", examples=["plan_type"]
    )
    bins: list[float] | None = Field(
        default=None,
        min_length=1,
        description="Edges for a numeric feature: `[a, b]` gives `< a`, `[a, b)` and `>= b`.",
        examples=[[12, 36]],
    )

    @property
    def input_name(self) -> str:
        """The model input this slices on: the field name, without a `view:` prefix."""
        return self.feature.partition(":")[2] or self.feature

    @model_validator(mode="after")
    def _increasing(self) -> SliceModel:
        if self.bins is not None and any(
            a >= b for a, b in zip(self.bins, self.bins[1:], strict=False)
        ):
            raise RuleError(("bins",), "bins must be strictly increasing", hint="sort the edges")
        return self


class SliceGates(SpecModel):
    """Gates applied to every slice: a minimum per slice and a maximum gap between slices."""

    min: dict[str, float] = Field(
        default_factory=dict,
        description="Every slice must reach at least this value (higher-is-better metrics).",
        examples=[{"roc_auc": 0.7}],
    )
    max: dict[str, float] = Field(
        default_factory=dict,
        description="Every slice must stay at most this value (lower-is-better metrics).",
        examples=[{"rmse": 20}],
    )
    max_gap: dict[str, float] = Field(
        default_factory=dict,
        description="Largest allowed difference between the best and the worst slice.",
        examples=[{"roc_auc": 0.05}],
    )


class EvaluationModel(SpecModel):
    """Extra holdout evaluation: metrics per slice and slice (fairness) gates."""

    slices: list[SliceModel] = Field(
        default_factory=list,
        description="Slices of the holdout; every metric is reported per slice.",
        examples=[[{"feature": "plan_type"}, {"feature": "tenure_months", "bins": [12, 36]}]],
    )
    min_slice_rows: int = Field(
        default=30,
        ge=1,
        description="Slices with fewer holdout rows are reported but not gated.",
        examples=[30],
    )
    gates: SliceGates = Field(
        default_factory=SliceGates,
        description="Gates per slice; a failing slice blocks registration.",
        examples=[{"max_gap": {"roc_auc": 0.05}}],
    )
