"""The spec models: a mirror of the YAML (pydantic v2, closed, frozen). The JSON Schema comes from here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from specml.compiler.spec.features import (
    DataSection,
    EntityModel,
    FeaturesSection,
    FeatureViewModel,
    FileSource,
    LabelModel,
    Metadata,
)
from specml.compiler.spec.monitoring import (
    AlertModel,
    DriftAlert,
    ErrorRateAlert,
    LatencyAlert,
    MetricDropAlert,
    NotificationsSection,
    RetrainingSection,
)
from specml.compiler.spec.serving import RolloutSection, ServingSection, ShadowStep, TrafficStep
from specml.compiler.spec.targets import TargetsSection
from specml.compiler.spec.training import TrainingSection
from specml.compiler.spec.types import SpecModel

API_VERSION = "specml/v1"


class MLSystem(SpecModel):
    """A whole production ML system: features, training, serving, rollout, alerts, retraining."""

    api_version: Literal["specml/v1"] = Field(
        alias="apiVersion", description="Spec format version.", examples=["specml/v1"]
    )
    kind: Literal["MLSystem"] = Field(description="Document kind.", examples=["MLSystem"])
    metadata: Metadata = Field(
        description="Name, owner and labels.", examples=[{"name": "churn", "owner": "growth-ml"}]
    )
    data: DataSection = Field(
        description="Raw data sources.",
        examples=[
            {
                "sources": {
                    "customers": {"format": "parquet", "path": "data/c.parquet", "timestamp": "ts"}
                }
            }
        ],
    )
    features: FeaturesSection = Field(
        description="Entities, feature views and label.",
        examples=[{"label": {"source": "customers", "field": "churned"}}],
    )
    training: TrainingSection = Field(
        description="What to learn and how: task, model, hyperparameters, split and gates.",
        examples=[{"task": "binary_classification", "model": {"type": "mlp"}}],
    )
    serving: ServingSection = Field(
        default_factory=ServingSection,
        description="How the model is served: format, SLO, batching and replicas.",
        examples=[{"slo": {"p95_latency_ms": 50}}],
    )
    rollout: RolloutSection | None = Field(
        default=None,
        description="How a new model reaches production (shadow, canary steps, rollback).",
        examples=[
            {"strategy": "canary", "steps": [{"traffic": 10, "hold": "10m"}, {"traffic": 100}]}
        ],
    )
    alerts: dict[str, AlertModel] = Field(
        default_factory=dict,
        description="Named alerts on drift, latency, errors and model quality.",
        examples=[
            {"feature_drift": {"metric": "psi", "on": "features", "warn": 0.1, "critical": 0.2}}
        ],
    )
    retraining: RetrainingSection | None = Field(
        default=None,
        description="Automatic retraining triggers.",
        examples=[{"triggers": [{"schedule": "0 3 * * 1"}]}],
    )
    notifications: NotificationsSection = Field(
        default_factory=NotificationsSection,
        description="Where alert events are sent.",
        examples=[{"webhook": {"url": {"env": "ALERT_WEBHOOK_URL"}}}],
    )
    targets: TargetsSection = Field(
        default_factory=TargetsSection,
        description="Per-target settings.",
        examples=[{"local": {"workdir": ".specml"}}],
    )


__all__ = [
    "API_VERSION",
    "AlertModel",
    "DataSection",
    "DriftAlert",
    "EntityModel",
    "ErrorRateAlert",
    "FeatureViewModel",
    "FeaturesSection",
    "FileSource",
    "LabelModel",
    "LatencyAlert",
    "MLSystem",
    "Metadata",
    "MetricDropAlert",
    "RetrainingSection",
    "RolloutSection",
    "ServingSection",
    "ShadowStep",
    "SpecModel",
    "TargetsSection",
    "TrafficStep",
    "TrainingSection",
]
