"""Spec models for metadata, data sources and features (entities, feature views, label)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, StrictInt, StrictStr, model_validator
from specml.compiler.spec.types import (
    Dtype,
    Duration,
    Identifier,
    RuleError,
    SpecModel,
    SystemName,
)

DTYPES: tuple[str, ...] = get_args(Dtype)
Encoding = Literal["one_hot", "ordinal", "embedding", "native"]
# A category or class value: a string or a whole number, never coerced (YAML `1` stays 1).
CategoryValue = StrictStr | StrictInt
DEFAULT_MAX_CATEGORIES = 1000
# Model families whose libraries split on categories natively: their default encoding is
# `native`; every other family one-hot encodes by default.
TREE_FAMILIES = ("lightgbm", "xgboost")
# Options that only mean something for a categorical field.
CATEGORICAL_OPTIONS = (
    "encoding",
    "categories",
    "max_categories",
    "min_frequency",
    "unknown",
    "missing",
    "embedding_dim",
)


def _repeated(values: list[Any]) -> int | None:
    """The index of the first value listed a second time, or None when each is listed once."""
    seen: set[object] = set()
    for i, value in enumerate(values):
        if value in seen:
            return i
        seen.add(value)
    return None


class Metadata(SpecModel):
    """Who owns this ML system and what it is."""

    name: SystemName = Field(
        description="System name: lowercase letters, digits and '-', used to name every resource.",
        examples=["churn"],
    )
    owner: str = Field(
        min_length=1,
        description="Team or person accountable for the system; shown in alerts.",
        examples=["growth-ml"],
    )
    description: str = Field(
        default="",
        description="One or two sentences on what the system predicts and for whom.",
        examples=["Predicts which customers will cancel in the next 30 days."],
    )
    labels: dict[Identifier, str] = Field(
        default_factory=dict,
        description="Free-form labels copied onto every compiled resource.",
        examples=[{"team": "growth", "cost_center": "cc-42"}],
    )


class FileSource(SpecModel):
    """A table of time-stamped rows in a file (path relative to the spec's folder)."""

    format: Literal["parquet", "csv"] = Field(
        description="File format of the source.", examples=["parquet"]
    )
    path: str = Field(
        min_length=1,
        description="Path to the file, relative to the spec's folder (or absolute, or a URI).",
        examples=["data/customers.parquet"],
    )
    timestamp: Identifier = Field(
        description="Column holding each row's event time (used for point-in-time joins).",
        examples=["event_ts"],
    )
    created_timestamp: Identifier | None = Field(
        default=None,
        description="Optional column with the row's write time, to break ties between versions.",
        examples=["created_ts"],
    )


class DataSection(SpecModel):
    """Where the raw data lives."""

    sources: dict[Identifier, FileSource] = Field(
        min_length=1,
        description="Named data sources; feature views and the label refer to them by name.",
        examples=[
            {
                "customers": {
                    "format": "parquet",
                    "path": "data/customers.parquet",
                    "timestamp": "event_ts",
                }
            }
        ],
    )


class EntityModel(SpecModel):
    """The thing features describe (a customer, a card, a store)."""

    join_keys: list[Identifier] = Field(
        min_length=1,
        description="Columns identifying one entity; the online store is keyed by them.",
        examples=[["customer_id"]],
    )
    dtype: Literal["int64", "string"] = Field(
        default="int64", description="Type of the join key values.", examples=["int64"]
    )
    description: str = Field(
        default="", description="What one entity is.", examples=["A paying customer."]
    )


class FeatureFieldModel(SpecModel):
    """A feature column: its dtype and, when categorical, how the model encodes it (docs/data.md)."""

    # The short form `tenure: int64` is `{dtype: int64}`. Every string field is categorical, an
    # integer field when marked; encoding, imputation and scaling live inside the exported graph.

    dtype: Dtype = Field(description="Column type.", examples=["string"])
    categorical: bool | None = Field(
        default=None,
        description="Treat the values as categories, not quantities. String fields always are; "
        "set true for an integer code (a store id, a product class).",
        examples=[True],
    )
    encoding: Encoding | None = Field(
        default=None,
        description="How categories become numbers. Default per model family: one_hot for "
        "mlp/linear, native (the library's categorical splits) for lightgbm/xgboost; ordinal "
        "(one code per category) and embedding (mlp only) when asked.",
        examples=["one_hot"],
    )
    categories: list[CategoryValue] | None = Field(
        default=None,
        min_length=1,
        description="The vocabulary, in ordinal order. Omitted: learned from the training split "
        "only, most frequent first (ties by value), capped by max_categories and min_frequency.",
        examples=[["Fair", "Good", "Very Good", "Premium", "Ideal"]],
    )
    max_categories: int = Field(
        default=DEFAULT_MAX_CATEGORIES,
        ge=1,
        le=1_000_000,
        description="A learned vocabulary keeps at most this many (most frequent) values; the "
        "rest go to the unknown bucket.",
        examples=[50],
    )
    min_frequency: int = Field(
        default=1,
        ge=1,
        description="Values seen fewer times than this in the training split go to the unknown "
        "bucket (1: keep every value, as scikit-learn does).",
        examples=[5],
    )
    unknown: Literal["bucket", "error"] = Field(
        default="bucket",
        description="A value outside the vocabulary: `bucket` scores it in the unknown bucket "
        "(counted on /metrics), `error` refuses the request with a 400 naming the input.",
        examples=["bucket"],
    )
    missing: Literal["bucket", "unknown", "error"] = Field(
        default="bucket",
        description="A missing value (null or empty string): its own `bucket`, the `unknown` "
        "bucket, or `error` (a 400 naming the input).",
        examples=["bucket"],
    )
    embedding_dim: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Width of the learned embedding (encoding embedding only). Default: "
        "min(50, max(2, round(1.6 * n ** 0.56))), n the vocabulary size plus two buckets "
        "(max_categories when learned).",
        examples=[8],
    )

    @property
    def is_categorical(self) -> bool:
        """Whether the model sees this field as categories (string, or marked categorical)."""
        return self.dtype == "string" or bool(self.categorical)

    @model_validator(mode="after")
    def _categorical_rules(self) -> FeatureFieldModel:
        given = self.model_fields_set
        if self.dtype == "string" and self.categorical is False:
            raise RuleError(
                ("categorical",),
                "a string field is always categorical",
                hint="remove `categorical: false`",
            )
        if self.categorical and self.dtype not in ("int32", "int64", "string"):
            raise RuleError(
                ("categorical",),
                f"categorical: true applies to integer and string fields, not {self.dtype}",
                hint="use dtype int64 for integer codes, or remove `categorical`",
            )
        if not self.is_categorical:
            options = [o for o in CATEGORICAL_OPTIONS if o in given]
            if options:
                raise RuleError(
                    (options[0],),
                    f"{options[0]} applies to categorical fields, but this {self.dtype} field is "
                    "numeric",
                    hint="add `categorical: true` for an integer code, or remove "
                    + ", ".join(options),
                )
            return self
        if self.embedding_dim is not None and self.encoding != "embedding":
            raise RuleError(
                ("embedding_dim",),
                "embedding_dim applies to encoding embedding only",
                hint="add `encoding: embedding`, or remove embedding_dim",
            )
        if self.categories is not None:
            self._check_categories(given)
        return self

    def _check_categories(self, given: set[str]) -> None:
        assert self.categories is not None
        want = str if self.dtype == "string" else int
        for i, value in enumerate(self.categories):
            if not isinstance(value, want):
                kind = "strings" if want is str else "whole numbers"
                raise RuleError(
                    ("categories", i),
                    f"categories of this {self.dtype} field must be {kind}, got {value!r}",
                    hint="quote the value" if want is str else "write the integer codes",
                )
        twice = _repeated(self.categories)
        if twice is not None:
            raise RuleError(
                ("categories", twice),
                f"category {self.categories[twice]!r} is listed twice",
                hint="remove one",
            )
        for option in ("max_categories", "min_frequency"):
            if option in given:
                raise RuleError(
                    (option,),
                    f"{option} caps a learned vocabulary, but categories are declared",
                    hint=f"remove {option}, or remove categories to learn them",
                )


def _short_form(value: Any) -> Any:
    """`cut: string` is `cut: {dtype: string}`."""
    if isinstance(value, str):
        return {"dtype": value}
    if isinstance(value, dict):
        return value
    raise ValueError(
        f"expected a dtype ({', '.join(DTYPES)}) or a mapping with `dtype`, got {value!r}"
    )


FeatureField = Annotated[
    FeatureFieldModel,
    BeforeValidator(_short_form, json_schema_input_type=Dtype | FeatureFieldModel),
]


class FeatureViewModel(SpecModel):
    """A group of features computed from one source for one entity."""

    entity: Identifier = Field(
        description="Name of the entity (under features.entities) these features describe.",
        examples=["customer"],
    )
    source: Identifier = Field(
        description="Name of the data source (under data.sources) the features come from.",
        examples=["customers"],
    )
    ttl: Duration = Field(
        description="How long a feature value stays valid for point-in-time joins and serving.",
        examples=["30d"],
    )
    fields: dict[Identifier, FeatureField] = Field(
        min_length=1,
        description="Feature columns, in model input order: a dtype (`tenure: int64`) or a "
        "mapping with dtype and categorical settings.",
        examples=[
            {"tenure_months": "int64", "plan": {"dtype": "string", "encoding": "one_hot"}},
        ],
    )
    online: bool = Field(
        default=True,
        description="Materialize into the online store for serving.",
        examples=[True],
    )
    description: str = Field(
        default="", description="What the view captures.", examples=["Monthly usage statistics."]
    )


class LabelModel(SpecModel):
    """The column the model learns to predict and, for classification, its classes."""

    # Labels may be strings or integers: the class mapping is declared (`classes`) or learned
    # from the training split (sorted), and stored with the model.

    source: Identifier = Field(
        description="Data source holding the label, entity keys and event time.",
        examples=["customers"],
    )
    field: Identifier = Field(description="Label column.", examples=["churned"])
    classes: list[CategoryValue] | None = Field(
        default=None,
        min_length=2,
        description="Classification only: every class, in the order of the model's outputs. "
        "Omitted: learned from the training split (sorted); a label outside a declared list is "
        "an error at apply.",
        examples=[["Adelie", "Chinstrap", "Gentoo"]],
    )
    positive: CategoryValue | None = Field(
        default=None,
        description="Binary classification only: the class whose probability is the score. "
        "Default: the second class (sorted), as scikit-learn does.",
        examples=["Yes"],
    )

    @model_validator(mode="after")
    def _class_rules(self) -> LabelModel:
        if self.classes is None:
            return self
        twice = _repeated(self.classes)
        if twice is not None:
            raise RuleError(
                ("classes", twice),
                f"class {self.classes[twice]!r} is listed twice",
                hint="list each class once",
            )
        if self.positive is not None and self.positive not in self.classes:
            raise RuleError(
                ("positive",),
                f"positive class {self.positive!r} is not one of classes "
                f"{', '.join(map(repr, self.classes))}",
                hint="name one of the declared classes",
            )
        return self


class FeaturesSection(SpecModel):
    """Entities, feature views and the label: compiled into a Feast feature repo."""

    entities: dict[Identifier, EntityModel] = Field(
        min_length=1,
        description="Named entities.",
        examples=[{"customer": {"join_keys": ["customer_id"], "dtype": "int64"}}],
    )
    views: dict[Identifier, FeatureViewModel] = Field(
        min_length=1,
        description="Named feature views.",
        examples=[
            {
                "customer_stats": {
                    "entity": "customer",
                    "source": "customers",
                    "ttl": "30d",
                    "fields": {"tenure_months": "int64"},
                }
            }
        ],
    )
    label: LabelModel = Field(
        description="The training label.", examples=[{"source": "customers", "field": "churned"}]
    )

    @model_validator(mode="after")
    def _unique_field_names(self) -> FeaturesSection:
        # Feature columns become model inputs by name: two views must not define the same one.
        seen: dict[str, str] = {}
        for view_name, view in self.views.items():
            for field_name in view.fields:
                if field_name in seen:
                    raise RuleError(
                        ("views", view_name, "fields", field_name),
                        f"feature '{field_name}' is defined by both views '{seen[field_name]}' "
                        f"and '{view_name}'",
                        hint="feature names are model inputs and must be unique; rename one",
                    )
                seen[field_name] = view_name
        return self
