"""Spec models for serving (format, SLO, batching, replicas) and rollout (shadow, canary)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from specml.compiler.spec.types import (
    Duration,
    Fraction,
    Identifier,
    Percentage,
    Quantity,
    RuleError,
    SpecModel,
    duration_seconds,
)


class SLOModel(SpecModel):
    """Service-level objectives for the endpoint; rollouts are judged against them."""

    p50_latency_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="Median latency objective (ms).", examples=[10]
    )
    p95_latency_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        description="95th-percentile latency objective (ms).",
        examples=[50],
    )
    p99_latency_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        description="99th-percentile latency objective (ms).",
        examples=[120],
    )
    error_rate: Fraction | None = Field(
        default=None,
        description="Highest acceptable share of failed requests (0-1).",
        examples=[0.001],
    )

    @model_validator(mode="after")
    def _ordered(self) -> SLOModel:
        named = [
            (n, v)
            for n, v in (
                ("p50_latency_ms", self.p50_latency_ms),
                ("p95_latency_ms", self.p95_latency_ms),
                ("p99_latency_ms", self.p99_latency_ms),
            )
            if v is not None
        ]
        for (low_name, low), (high_name, high) in zip(named, named[1:], strict=False):
            if low > high:
                raise RuleError(
                    (high_name,),
                    f"{high_name} ({high}) is below {low_name} ({low}); a higher percentile "
                    "cannot be faster",
                    hint=f"raise {high_name} to at least {low}",
                )
        return self


class BatchingModel(SpecModel):
    """Server-side dynamic batching: requests arriving together run as one batch."""

    enabled: bool = Field(default=True, description="Turn dynamic batching on.", examples=[True])
    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Most rows in one batch.", examples=[64]
    )
    max_delay_ms: float = Field(
        default=2,
        ge=0,
        le=1000,
        description="Longest a request waits for a batch to fill (ms).",
        examples=[2],
    )


class ReplicasModel(SpecModel):
    """How many serving replicas to run (autoscaled between min and max)."""

    min: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.", examples=[1])
    max: int = Field(default=1, ge=1, le=1000, description="Most replicas.", examples=[4])

    @model_validator(mode="after")
    def _min_le_max(self) -> ReplicasModel:
        if self.min > self.max:
            raise RuleError(
                ("min",),
                f"serving.replicas.min ({self.min}) is larger than serving.replicas.max ({self.max})",
                hint=f"set max to at least {self.min}",
            )
        return self


class ServingResources(SpecModel):
    """Compute for each serving replica."""

    cpu: Quantity | None = Field(default=None, description="CPU per replica.", examples=["1"])
    memory: Quantity | None = Field(
        default=None, description="Memory per replica.", examples=["2Gi"]
    )
    gpus: int = Field(default=0, ge=0, le=8, description="GPUs per replica.", examples=[0])


class OptimizeModel(SpecModel):
    """Graph optimisation after export, guarded by the holdout metric (mlp/linear only)."""

    quantize: Literal["int8"] = Field(
        description="Dynamic INT8 quantization of weights (onnxruntime).", examples=["int8"]
    )
    max_metric_drop: float = Field(
        default=0.002,
        ge=0,
        le=1,
        description="Largest allowed loss of the primary holdout metric; beyond it the FP32 "
        "graph is served.",
        examples=[0.002],
    )


class ServingSection(SpecModel):
    """How the model is served."""

    format: Literal["onnx"] = Field(
        default="onnx", description="Serving format (ONNX Runtime).", examples=["onnx"]
    )
    slo: SLOModel = Field(
        default_factory=SLOModel,
        description="Service-level objectives.",
        examples=[{"p95_latency_ms": 50, "error_rate": 0.001}],
    )
    batching: BatchingModel = Field(
        default_factory=BatchingModel,
        description="Dynamic batching.",
        examples=[{"max_batch_size": 64, "max_delay_ms": 2}],
    )
    replicas: ReplicasModel = Field(
        default_factory=ReplicasModel, description="Replica range.", examples=[{"min": 1, "max": 4}]
    )
    resources: ServingResources = Field(
        default_factory=ServingResources,
        description="Per-replica compute.",
        examples=[{"cpu": "1", "memory": "2Gi"}],
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Serving processes per replica, sharing one port (default: from the "
        "machine's cores, min(cores, 4), 1 on two cores or fewer).",
        examples=[4],
    )
    optimize: OptimizeModel | None = Field(
        default=None,
        description="Quantize the served graph when the holdout metric allows it.",
        examples=[{"quantize": "int8", "max_metric_drop": 0.002}],
    )

    @model_validator(mode="after")
    def _batch_delay_fits_slo(self) -> ServingSection:
        budget = self.slo.p50_latency_ms or self.slo.p95_latency_ms or self.slo.p99_latency_ms
        if self.batching.enabled and budget is not None and self.batching.max_delay_ms >= budget:
            raise RuleError(
                ("batching", "max_delay_ms"),
                f"serving.batching.max_delay_ms ({self.batching.max_delay_ms}) uses the whole "
                f"latency objective in serving.slo ({budget} ms)",
                hint="lower max_delay_ms well below the latency SLO, or disable batching",
            )
        return self


class ShadowStep(SpecModel):
    """Mirror traffic to the challenger; users only get the champion's answers."""

    shadow: Duration = Field(description="How long to shadow.", examples=["10m"])
    sample: Percentage = Field(
        default=100, gt=0, description="Share of requests mirrored (%).", examples=[100]
    )


class TrafficStep(SpecModel):
    """Send a share of live traffic to the challenger, then hold and analyse."""

    traffic: Percentage = Field(
        gt=0, description="Share of traffic on the challenger (%).", examples=[5]
    )
    hold: Duration | None = Field(
        default=None, description="How long to hold before the next step.", examples=["30m"]
    )


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "shadow" if "shadow" in value else "traffic"
    if isinstance(value, ShadowStep):
        return "shadow"
    if isinstance(value, TrafficStep):
        return "traffic"
    return None


RolloutStepModel = Annotated[
    Annotated[ShadowStep, Tag("shadow")] | Annotated[TrafficStep, Tag("traffic")],
    Discriminator(_step_kind),
]


class AlertCondition(SpecModel):
    """Roll back when this alert reaches critical."""

    alert: Identifier = Field(
        description="Name of an alert under `alerts`.", examples=["feature_drift"]
    )


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "builtin"
    if isinstance(value, dict | AlertCondition):
        return "alert"
    return None


RollbackConditionModel = Annotated[
    Annotated[Literal["slo_breach"], Tag("builtin")] | Annotated[AlertCondition, Tag("alert")],
    Discriminator(_condition_kind),
]


class AnalysisModel(SpecModel):
    """How often the rollout controller checks the challenger, and how many failures it tolerates."""

    interval: Duration = Field(default="1m", description="Time between checks.", examples=["1m"])
    failure_limit: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failed checks in a row that trigger rollback.",
        examples=[3],
    )


class RolloutSection(SpecModel):
    """How a new model reaches production."""

    strategy: Literal["canary", "blue_green"] = Field(
        default="canary",
        description="`canary`: stepwise traffic shift; `blue_green`: switch all traffic at once.",
        examples=["canary"],
    )
    steps: list[RolloutStepModel] = Field(
        min_length=1,
        description="Ordered steps: optional `shadow` steps, then increasing `traffic` steps to 100.",
        examples=[[{"shadow": "10m"}, {"traffic": 5, "hold": "30m"}, {"traffic": 100}]],
    )
    analysis: AnalysisModel = Field(
        default_factory=AnalysisModel,
        description="Analysis cadence.",
        examples=[{"interval": "1m", "failure_limit": 3}],
    )
    rollback_when: list[RollbackConditionModel] = Field(
        default_factory=lambda: list[Any](["slo_breach"]),
        description="Conditions that roll the challenger back: `slo_breach` or `{alert: NAME}`.",
        examples=[["slo_breach", {"alert": "feature_drift"}]],
    )

    @model_validator(mode="after")
    def _steps_ordered(self) -> RolloutSection:
        last = 0.0
        seen_traffic = False
        for i, step in enumerate(self.steps):
            if isinstance(step, ShadowStep):
                if seen_traffic:
                    raise RuleError(
                        ("steps", i),
                        "a shadow step comes after a traffic step",
                        hint="put shadow steps first: shadow is only safe before users see the model",
                    )
                continue
            seen_traffic = True
            if step.traffic <= last:
                raise RuleError(
                    ("steps", i, "traffic"),
                    f"rollout.steps[{i}].traffic ({step.traffic:g}) does not increase on the "
                    f"previous step ({last:g})",
                    hint="traffic steps must strictly increase and end at 100",
                )
            last = step.traffic
        final = self.steps[-1]
        if not isinstance(final, TrafficStep) or final.traffic != 100:
            index = len(self.steps) - 1
            raise RuleError(
                ("steps", index),
                "rollout.steps must end with `traffic: 100`",
                hint="append `- traffic: 100` so the challenger is fully promoted",
            )
        if self.strategy == "blue_green":
            traffic_steps = [s for s in self.steps if isinstance(s, TrafficStep)]
            if len(traffic_steps) != 1:
                raise RuleError(
                    ("strategy",),
                    "rollout.strategy blue_green switches all traffic at once, but rollout.steps "
                    f"has {len(traffic_steps)} traffic steps",
                    hint="use strategy: canary, or keep a single `traffic: 100` step",
                )
        interval = duration_seconds(self.analysis.interval)
        for i, step in enumerate(self.steps):
            held = step.shadow if isinstance(step, ShadowStep) else step.hold
            if held is not None and duration_seconds(held) < interval:
                key = "shadow" if isinstance(step, ShadowStep) else "hold"
                raise RuleError(
                    ("steps", i, key),
                    f"rollout.steps[{i}].{key} ({held}) is shorter than rollout.analysis.interval "
                    f"({self.analysis.interval}), so the step is never analysed",
                    hint="lengthen the step or shorten the analysis interval",
                )
        return self
