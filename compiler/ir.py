"""The IR: one fully resolved, immutable, target-neutral Plan. Only `lower` builds it.

Every target (local included) consumes this and nothing else. Nothing optional is ambiguous:
defaults are filled, references are ids, durations are seconds, lists are in a stable order.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

IR_VERSION = "1"

Dtype = Literal["int32", "int64", "float32", "float64", "bool", "string"]
Task = Literal["binary_classification", "multiclass_classification", "regression"]
Accelerator = Literal["auto", "cpu", "gpu"]
AlertAction = Literal["notify", "rollback", "retrain"]
StepKind = Literal[
    "validate_data",
    "materialize_features",
    "build_training_set",
    "train",
    "evaluate",
    "export_onnx",
    "register",
]
ArtifactType = Literal["Dataset", "Model", "Metrics", "Artifact"]


class IRNode(BaseModel):
    """Base for IR nodes: frozen, closed."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SecretRef(IRNode):
    """A reference to a secret; the value never appears in a spec, a Plan or compiled output."""

    kind: Literal["env", "secret"]
    name: str


class SystemMeta(IRNode):
    name: str
    owner: str
    description: str
    labels: dict[str, str]


class DataSource(IRNode):
    id: str
    format: Literal["parquet", "csv"]
    path: str  # as written in the spec, relative to the spec's folder unless absolute
    timestamp_field: str
    created_timestamp_field: str | None


class Entity(IRNode):
    id: str
    join_keys: tuple[str, ...]
    dtype: Dtype
    description: str


class FeatureField(IRNode):
    name: str
    dtype: Dtype


class FeatureView(IRNode):
    id: str
    entity_id: str
    source_id: str
    ttl_seconds: int
    fields: tuple[FeatureField, ...]
    online: bool
    description: str


class Label(IRNode):
    """The label column and its class mapping (classification); index i of the model's class
    outputs is `classes[i]`."""

    source_id: str
    field: str
    # Declared class names/values in index order; None: learned from the training split (sorted,
    # numbers numerically, strings lexically) and stored with the model.
    classes: tuple[str | int, ...] | None = None
    # Binary only: the class whose probability is the model's score (`output`). None: the second
    # of the (declared or learned) classes, as scikit-learn does.
    positive: str | int | None = None


class Categorical(IRNode):
    """How a categorical model input becomes numbers; the encoding lives inside the exported
    graph, so every server takes raw values (strings as BYTES, integer codes as INT64)."""

    # Resolved per model family: one_hot (linear, mlp), embedding (mlp, asked for), ordinal,
    # native (lightgbm/xgboost: the library's own categorical splits over ordinal codes).
    encoding: Literal["one_hot", "ordinal", "embedding", "native"]
    # Declared vocabulary (its order is the ordinal order); None: learned from the training split
    # only, most frequent first, ties by value.
    categories: tuple[str | int, ...] | None
    max_categories: int  # a learned vocabulary keeps at most this many values
    min_frequency: int  # values seen fewer times in the training split go to the unknown bucket
    unknown: Literal["bucket", "error"]  # an unseen value: the unknown bucket, or a 400
    missing: Literal["bucket", "unknown", "error"]  # null/"": its own bucket, unknown's, or a 400
    embedding_dim: int | None  # encoding == "embedding" only


class FeatureRef(IRNode):
    """One model input: `view:field`, in the model's input order (the spec's order)."""

    view_id: str
    field: str
    dtype: Dtype
    categorical: Categorical | None = None  # None: a numeric input (imputed, maybe scaled)

    @property
    def ref(self) -> str:
        return f"{self.view_id}:{self.field}"

    @property
    def input_name(self) -> str:
        """The served model's input name: the field name (unique across views)."""
        return self.field

    @property
    def datatype(self) -> Literal["FP32", "INT64", "BYTES"]:
        """Open Inference Protocol datatype of this input: strings BYTES, integer categoricals
        INT64, every numeric input FP32 (NaN = missing)."""
        if self.categorical is None:
            return "FP32"
        return "BYTES" if self.dtype == "string" else "INT64"


class FeatureRepo(IRNode):
    project: str  # a Feast-safe project name
    sources: tuple[DataSource, ...]
    entities: tuple[Entity, ...]
    views: tuple[FeatureView, ...]
    label: Label


class TreeParams(IRNode):
    """Gradient-boosted tree parameters (lightgbm, xgboost), defaults resolved per family."""

    n_estimators: int  # most boosting rounds; early stopping usually stops sooner
    learning_rate: float
    max_depth: int  # lightgbm: -1 no limit; xgboost: 0 no limit
    num_leaves: int  # lightgbm num_leaves; xgboost max_leaves (0 no limit)
    min_child_samples: int | None  # lightgbm only
    min_child_weight: float | None  # xgboost only
    subsample: float
    colsample: float
    reg_alpha: float
    reg_lambda: float
    early_stopping_rounds: int  # on the validation split


class ModelArch(IRNode):
    type: Literal["mlp", "linear", "lightgbm", "xgboost"]
    hidden: tuple[int, ...]  # empty for linear and trees
    dropout: float
    activation: Literal["relu", "gelu", "tanh"]
    batch_norm: bool
    trees: TreeParams | None = None  # lightgbm / xgboost only


class Hyperparameters(IRNode):
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int


class EarlyStopping(IRNode):
    metric: str
    mode: Literal["min", "max"]
    patience: int
    min_delta: float


class Split(IRNode):
    method: Literal["time", "random"]
    holdout: float
    validation: float


class ComputeResources(IRNode):
    cpu: str | None  # Kubernetes quantity, e.g. "2" or "500m"
    memory: str | None  # e.g. "4Gi"
    accelerator: Accelerator
    gpu_count: int  # 0 unless accelerator is gpu/auto and GPUs are asked for


class SearchDimension(IRNode):
    """One searched parameter: `lr`-style hyperparameter or `model.<field>`."""

    name: str
    kind: Literal["int", "float", "categorical"]
    low: float | None
    high: float | None
    log: bool
    choices: tuple[float | int | str | bool, ...] | None


class Tuning(IRNode):
    """Optuna search (TPE, median pruner) run by the train step before the final fit."""

    trials: int
    timeout_seconds: int  # 0: no time limit
    metric: str  # validation metric optimised
    direction: Literal["maximize", "minimize"]
    space: tuple[SearchDimension, ...]


class Training(IRNode):
    task: Task
    num_classes: int  # 2 for binary, N for multiclass, 1 for regression
    features: tuple[FeatureRef, ...]
    model: ModelArch
    hyperparameters: Hyperparameters
    split: Split
    seed: int
    early_stopping: EarlyStopping | None
    resources: ComputeResources
    primary_metric: str
    tuning: Tuning | None = None


class Gate(IRNode):
    metric: str
    op: Literal[">=", "<="]
    threshold: float


class ChampionGate(IRNode):
    """The challenger must beat production's metric by `by` (in the metric's better direction)."""

    metric: str
    by: float
    higher_is_better: bool


class Slice(IRNode):
    """Holdout slices by one model input: each category, or numeric bins (edges)."""

    input_name: str
    bins: tuple[float, ...] | None  # None: one slice per value


class SliceGate(IRNode):
    metric: str
    kind: Literal["min", "max", "max_gap"]  # per-slice bound, or best-minus-worst gap
    threshold: float


class Evaluation(IRNode):
    metrics: tuple[str, ...]  # every metric to compute on the holdout
    gates: tuple[Gate, ...]
    must_beat_production: ChampionGate | None
    slices: tuple[Slice, ...] = ()
    slice_gates: tuple[SliceGate, ...] = ()
    min_slice_rows: int = 30  # smaller slices are reported, not gated


class ModelRegistryEntry(IRNode):
    name: str
    challenger_alias: str
    champion_alias: str


class SLO(IRNode):
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    error_rate: float | None


class Batching(IRNode):
    enabled: bool
    max_batch_size: int
    max_delay_ms: float


class Optimize(IRNode):
    """Post-training graph optimisation, kept only if the holdout metric holds."""

    quantize: Literal["int8"]
    max_metric_drop: float  # on the task's primary metric, in its better direction


class Endpoint(IRNode):
    name: str
    format: Literal["onnx"]
    optimize: Optimize | None = None
    slo: SLO
    batching: Batching
    min_replicas: int
    max_replicas: int
    resources: ComputeResources
    workers: int | None = None  # processes per replica; None: from the serving machine's cores


class RolloutStep(IRNode):
    index: int
    kind: Literal["shadow", "traffic"]
    traffic_percent: float  # 0 for shadow: users only get the champion's answers
    duration_seconds: int  # shadow duration, or the hold after a traffic change (0: none)
    shadow_sample_percent: float  # share of requests mirrored (shadow steps), else 0


class RollbackCondition(IRNode):
    kind: Literal["slo_breach", "alert"]
    alert_id: str | None


class Rollout(IRNode):
    strategy: Literal["canary", "blue_green"]
    steps: tuple[RolloutStep, ...]
    analysis_interval_seconds: int
    failure_limit: int
    rollback_when: tuple[RollbackCondition, ...]


class Alert(IRNode):
    id: str
    kind: Literal["drift", "prediction_drift", "latency", "error_rate", "metric_drop"]
    metric: str  # psi | ks | p50/p95/p99_latency_ms | error_rate | a model metric (metric_drop)
    features: tuple[str, ...]  # `view:field` refs for drift alerts, else empty
    warn: float | None
    critical: float | None
    for_seconds: int
    window_seconds: int
    action: AlertAction
    description: str


class Trigger(IRNode):
    kind: Literal["schedule", "alert", "new_rows", "metric_drop"]
    cron: str | None
    alert_id: str | None
    new_rows: int | None
    metric: str | None
    by: float | None


class Retraining(IRNode):
    triggers: tuple[Trigger, ...]
    cooldown_seconds: int


class Notifications(IRNode):
    webhook_url: SecretRef | None
    log_alerts: bool
    # the webhook may resolve to a private, loopback or link-local host (never cloud metadata)
    webhook_allow_private: bool = False


class ArtifactSpec(IRNode):
    name: str
    type: ArtifactType


class Step(IRNode):
    """One node of the pipeline DAG; `inputs` are `step.output` references."""

    name: str
    kind: StepKind
    depends_on: tuple[str, ...]
    inputs: dict[str, str]  # input name -> "producer_step.output_name"
    outputs: tuple[ArtifactSpec, ...]
    resources: ComputeResources
    cacheable: bool  # deterministic given its inputs
    retries: int
    condition: Literal["gate_passed"] | None  # run only when the evaluate gate passed


class LocalSettings(IRNode):
    workdir: str
    port: int
    host: str
    keep_online_stores: int


class KubeflowSettings(IRNode):
    image: str
    namespace: str
    pipeline_root: str | None
    service_account: str | None
    storage_uri: str | None
    retries: int
    image_pull_secret: SecretRef | None
    istio: bool = False
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    pipelines_host: str | None = None
    pipelines_token: SecretRef | None = None


class SagemakerSettings(IRNode):
    region: str
    instance_type: str
    training_instance_type: str
    image: str | None
    role_arn: str | None
    role_from_stack: str | None
    kms_key: SecretRef | None


class TargetSettings(IRNode):
    local: LocalSettings
    kubeflow: KubeflowSettings | None
    sagemaker: SagemakerSettings | None


class Plan(IRNode):
    """The whole system, resolved: metadata, the step DAG and every declared resource."""

    ir_version: str
    system: SystemMeta
    spec_hash: str  # sha256 of the canonical (key-order independent) validated spec
    features: FeatureRepo
    training: Training
    evaluation: Evaluation
    registry: ModelRegistryEntry
    endpoint: Endpoint
    rollout: Rollout | None
    alerts: tuple[Alert, ...]
    retraining: Retraining | None
    notifications: Notifications
    steps: tuple[Step, ...]  # topological order
    targets: TargetSettings

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, stable indentation, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.model_validate_json(text)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def alert(self, alert_id: str) -> Alert:
        for a in self.alerts:
            if a.id == alert_id:
                return a
        raise KeyError(alert_id)

    def rollback_alert_ids(self) -> frozenset[str]:
        """Ids of the alerts whose firing rolls the rollout back (`rollout.rollback_when`)."""
        if self.rollout is None:
            return frozenset()
        return frozenset(
            c.alert_id for c in self.rollout.rollback_when if c.kind == "alert" and c.alert_id
        )

    def slo_breach_rolls_back(self) -> bool:
        """Whether an SLO breach rolls the rollout back."""
        return self.rollout is not None and any(
            c.kind == "slo_breach" for c in self.rollout.rollback_when
        )

    @property
    def class_names(self) -> tuple[str | int, ...] | None:
        """Declared class names in index order (classification), or None when learned."""
        return self.features.label.classes
