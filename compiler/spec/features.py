"""Spec models for metadata, data sources and features (entities, feature views, label)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from specml.compiler.spec.types import (
    Dtype,
    Duration,
    Identifier,
    RuleError,
    SpecModel,
    SystemName,
)


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
    fields: dict[Identifier, Dtype] = Field(
        min_length=1,
        description="Feature columns and their types.",
        examples=[{"tenure_months": "int64", "monthly_spend": "float32"}],
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
    """The column the model learns to predict."""

    source: Identifier = Field(
        description="Data source holding the label, entity keys and event time.",
        examples=["customers"],
    )
    field: Identifier = Field(description="Label column.", examples=["churned"])


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
