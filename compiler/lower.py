"""Lowering: a validated, checked spec becomes the Plan. The only place spec models meet the IR."""

from __future__ import annotations

import hashlib
import json
import re

from specml.compiler import ir
from specml.compiler.metrics import METRICS, PRIMARY_METRIC, metrics_for
from specml.compiler.spec import MLSystem
from specml.compiler.spec.features import TREE_FAMILIES, FeatureFieldModel
from specml.compiler.spec.modeling import LightGBMModel, SearchRange, XGBoostModel
from specml.compiler.spec.monitoring import (
    METRIC_DROP_RE,
    AlertTrigger,
    DriftAlert,
    ErrorRateAlert,
    LatencyAlert,
    MetricDropAlert,
    MetricDropTrigger,
    NewRowsTrigger,
    ScheduleTrigger,
)
from specml.compiler.spec.serving import AlertCondition, ShadowStep
from specml.compiler.spec.targets import RoleArn
from specml.compiler.spec.types import EnvSecret, NamedSecret, duration_seconds

_NUM_CLASSES = {"binary_classification": 2, "regression": 1}


def spec_hash(spec: MLSystem) -> str:
    """sha256 of the canonical validated spec: independent of key order, comments and layout,
    except the order of views and fields, which is the model's input order."""
    input_order = [f"{vn}:{f}" for vn, v in spec.features.views.items() for f in v.fields]
    canonical = json.dumps(
        {"spec": spec.model_dump(mode="json", by_alias=True), "input_order": input_order},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _secret(ref: EnvSecret | NamedSecret | None) -> ir.SecretRef | None:
    if ref is None:
        return None
    if isinstance(ref, EnvSecret):
        return ir.SecretRef(kind="env", name=ref.env)
    return ir.SecretRef(kind="secret", name=ref.secret)


def _seconds(text: str | None) -> int:
    return int(duration_seconds(text)) if text else 0


def _features(spec: MLSystem) -> ir.FeatureRepo:
    data, feats = spec.data, spec.features
    sources = tuple(
        ir.DataSource(
            id=name,
            format=s.format,
            path=s.path,
            timestamp_field=s.timestamp,
            created_timestamp_field=s.created_timestamp,
        )
        for name, s in sorted(data.sources.items())
    )
    entities = tuple(
        ir.Entity(id=name, join_keys=tuple(e.join_keys), dtype=e.dtype, description=e.description)
        for name, e in sorted(feats.entities.items())
    )
    views = tuple(
        ir.FeatureView(
            id=name,
            entity_id=v.entity,
            source_id=v.source,
            ttl_seconds=_seconds(v.ttl),
            # the spec's order: it is the model's input order
            fields=tuple(ir.FeatureField(name=f, dtype=t.dtype) for f, t in v.fields.items()),
            online=v.online,
            description=v.description,
        )
        for name, v in sorted(feats.views.items())
    )
    return ir.FeatureRepo(
        project=re.sub(r"[^a-z0-9_]", "_", spec.metadata.name),
        sources=sources,
        entities=entities,
        views=views,
        label=ir.Label(
            source_id=feats.label.source,
            field=feats.label.field,
            classes=None if feats.label.classes is None else tuple(feats.label.classes),
            positive=feats.label.positive,
        ),
    )


def _embedding_dim(fld: FeatureFieldModel) -> int:
    """fast.ai's rule of thumb, capped at 50: n is the vocabulary plus the two buckets."""
    n = len(fld.categories) + 2 if fld.categories is not None else fld.max_categories
    return max(2, min(50, round(1.6 * n**0.56)))


def _categorical(fld: FeatureFieldModel, family: str) -> ir.Categorical | None:
    """How a model input is encoded; None for a numeric one. Defaults follow the model family."""
    if not fld.is_categorical:
        return None
    encoding = fld.encoding or ("native" if family in TREE_FAMILIES else "one_hot")
    embedding_dim = None
    if encoding == "embedding":
        embedding_dim = fld.embedding_dim or _embedding_dim(fld)
    return ir.Categorical(
        encoding=encoding,
        categories=None if fld.categories is None else tuple(fld.categories),
        max_categories=fld.max_categories,
        min_frequency=fld.min_frequency,
        unknown=fld.unknown,
        missing=fld.missing,
        embedding_dim=embedding_dim,
    )


def _inputs(spec: MLSystem) -> tuple[ir.FeatureRef, ...]:
    """The model's inputs in the spec's order: training.features as listed (a whole view: its
    fields as written), else every view as written."""
    views = spec.features.views
    family = str(spec.training.model.type)
    refs: list[ir.FeatureRef] = []
    seen: set[str] = set()
    selected = spec.training.features or list(views)
    for item in selected:
        view_name, _, field_name = item.partition(":")
        names = [field_name] if field_name else list(views[view_name].fields)
        for name in names:
            key = f"{view_name}:{name}"
            if key not in seen:
                seen.add(key)
                fld = views[view_name].fields[name]
                refs.append(
                    ir.FeatureRef(
                        view_id=view_name,
                        field=name,
                        dtype=fld.dtype,
                        categorical=_categorical(fld, family),
                    )
                )
    return tuple(refs)


def _num_classes(spec: MLSystem) -> int:
    """2 binary, 1 regression; multiclass: training.num_classes, else the declared classes."""
    t, classes = spec.training, spec.features.label.classes
    if t.task != "multiclass_classification":
        return _NUM_CLASSES[t.task]
    if t.num_classes is not None:
        return t.num_classes
    assert classes is not None  # check_spec refuses multiclass with neither
    return len(classes)


def _training(spec: MLSystem) -> ir.Training:
    t = spec.training
    model = t.model
    hidden = tuple(getattr(model, "hidden", ()))
    es = t.early_stopping
    early = None
    if es is not None:
        higher = METRICS[es.metric].higher_is_better if es.metric in METRICS else False
        early = ir.EarlyStopping(
            metric=es.metric,
            mode="max" if higher else "min",
            patience=es.patience,
            min_delta=es.min_delta,
        )
    accel = t.resources.accelerator
    return ir.Training(
        task=t.task,
        num_classes=_num_classes(spec),
        features=_inputs(spec),
        model=ir.ModelArch(
            type=model.type,
            hidden=hidden,
            dropout=getattr(model, "dropout", 0.0),
            activation=getattr(model, "activation", "relu"),
            batch_norm=getattr(model, "batch_norm", False),
            trees=_trees(model),
        ),
        hyperparameters=ir.Hyperparameters(**t.hyperparameters.model_dump()),
        split=ir.Split(**t.split.model_dump()),
        seed=t.seed,
        early_stopping=early,
        resources=ir.ComputeResources(
            cpu=t.resources.cpu,
            memory=t.resources.memory,
            accelerator=accel,
            gpu_count=t.resources.gpus if accel == "gpu" else 0,
        ),
        primary_metric=PRIMARY_METRIC[t.task],
        tuning=_tuning(spec),
    )


def _trees(model: object) -> ir.TreeParams | None:
    if not isinstance(model, LightGBMModel | XGBoostModel):
        return None
    return ir.TreeParams(
        n_estimators=model.n_estimators,
        learning_rate=model.learning_rate,
        max_depth=model.max_depth,
        num_leaves=model.num_leaves,
        min_child_samples=getattr(model, "min_child_samples", None),
        min_child_weight=getattr(model, "min_child_weight", None),
        subsample=model.subsample,
        colsample=model.colsample,
        reg_alpha=model.reg_alpha,
        reg_lambda=model.reg_lambda,
        early_stopping_rounds=model.early_stopping_rounds,
    )


def _tuning(spec: MLSystem) -> ir.Tuning | None:
    t = spec.training
    if t.tuning is None:
        return None
    gate_metrics = [*t.gates.min, *t.gates.max]
    metric = t.tuning.metric or (gate_metrics[0] if gate_metrics else PRIMARY_METRIC[t.task])
    space = []
    for name, dim in sorted(t.tuning.space.items()):
        owner = t.model if name.startswith("model.") else t.hyperparameters
        annotation = type(owner).model_fields[name.removeprefix("model.")].annotation
        if isinstance(dim, SearchRange):
            kind = "int" if annotation is int else "float"
            space.append(
                ir.SearchDimension(
                    name=name, kind=kind, low=dim.low, high=dim.high, log=dim.log, choices=None
                )
            )
        else:
            space.append(
                ir.SearchDimension(
                    name=name,
                    kind="categorical",
                    low=None,
                    high=None,
                    log=False,
                    choices=tuple(dim.choices),
                )
            )
    return ir.Tuning(
        trials=t.tuning.trials,
        timeout_seconds=_seconds(t.tuning.timeout),
        metric=metric,
        direction="maximize" if METRICS[metric].higher_is_better else "minimize",
        space=tuple(space),
    )


def _slices(spec: MLSystem) -> dict[str, object]:
    e = spec.training.evaluation
    if e is None:
        return {}
    gates = [
        ir.SliceGate(metric=m, kind=kind, threshold=v)  # type: ignore[arg-type]
        for kind, table in (
            ("min", e.gates.min),
            ("max", e.gates.max),
            ("max_gap", e.gates.max_gap),
        )
        for m, v in sorted(table.items())
    ]
    return {
        "slices": tuple(
            ir.Slice(
                input_name=s.input_name,
                bins=None if s.bins is None else tuple(s.bins),
            )
            for s in e.slices
        ),
        "slice_gates": tuple(gates),
        "min_slice_rows": e.min_slice_rows,
    }


def _evaluation(spec: MLSystem) -> ir.Evaluation:
    g = spec.training.gates
    gates = [ir.Gate(metric=m, op=">=", threshold=v) for m, v in sorted(g.min.items())]
    gates += [ir.Gate(metric=m, op="<=", threshold=v) for m, v in sorted(g.max.items())]
    beat = None
    if g.must_beat_production is not None:
        m = g.must_beat_production.metric
        beat = ir.ChampionGate(
            metric=m, by=g.must_beat_production.by, higher_is_better=METRICS[m].higher_is_better
        )
    return ir.Evaluation(
        metrics=tuple(metrics_for(spec.training.task)),
        gates=tuple(gates),
        must_beat_production=beat,
        **_slices(spec),  # type: ignore[arg-type]
    )


def _endpoint(spec: MLSystem) -> ir.Endpoint:
    s = spec.serving
    return ir.Endpoint(
        name=spec.metadata.name,
        format=s.format,
        optimize=None
        if s.optimize is None
        else ir.Optimize(quantize=s.optimize.quantize, max_metric_drop=s.optimize.max_metric_drop),
        slo=ir.SLO(**s.slo.model_dump()),
        batching=ir.Batching(**s.batching.model_dump()),
        min_replicas=s.replicas.min,
        max_replicas=s.replicas.max,
        resources=ir.ComputeResources(
            cpu=s.resources.cpu,
            memory=s.resources.memory,
            accelerator="gpu" if s.resources.gpus else "cpu",
            gpu_count=s.resources.gpus,
        ),
        workers=s.workers,
    )


def _rollout(spec: MLSystem) -> ir.Rollout | None:
    r = spec.rollout
    if r is None:
        return None
    steps = []
    for i, step in enumerate(r.steps):
        if isinstance(step, ShadowStep):
            steps.append(
                ir.RolloutStep(
                    index=i,
                    kind="shadow",
                    traffic_percent=0.0,
                    duration_seconds=_seconds(step.shadow),
                    shadow_sample_percent=step.sample,
                )
            )
        else:
            steps.append(
                ir.RolloutStep(
                    index=i,
                    kind="traffic",
                    traffic_percent=step.traffic,
                    duration_seconds=_seconds(step.hold),
                    shadow_sample_percent=0.0,
                )
            )
    conditions = tuple(
        ir.RollbackCondition(kind="alert", alert_id=c.alert)
        if isinstance(c, AlertCondition)
        else ir.RollbackCondition(kind="slo_breach", alert_id=None)
        for c in r.rollback_when
    )
    return ir.Rollout(
        strategy=r.strategy,
        steps=tuple(steps),
        analysis_interval_seconds=_seconds(r.analysis.interval),
        failure_limit=r.analysis.failure_limit,
        rollback_when=conditions,
    )


def _alerts(spec: MLSystem, inputs: tuple[ir.FeatureRef, ...]) -> tuple[ir.Alert, ...]:
    out = []
    for name, a in sorted(spec.alerts.items()):
        features: tuple[str, ...] = ()
        window = for_ = 0
        if isinstance(a, DriftAlert):
            kind = "prediction_drift" if a.on == "prediction" else "drift"
            if a.on == "features":
                features = tuple(f.ref for f in inputs)
            elif isinstance(a.on, list):
                expanded: list[str] = []
                for ref in a.on:
                    view, _, field = ref.partition(":")
                    fields = [field] if field else list(spec.features.views[view].fields)
                    expanded += [f"{view}:{f}" for f in fields if f"{view}:{f}" not in expanded]
                features = tuple(expanded)
            window = _seconds(a.window)
            metric = a.metric
        elif isinstance(a, LatencyAlert):
            kind, metric, for_ = "latency", a.metric, _seconds(a.for_)
        elif isinstance(a, ErrorRateAlert):
            kind, metric, for_ = "error_rate", "error_rate", _seconds(a.for_)
        else:
            assert isinstance(a, MetricDropAlert)
            kind = "metric_drop"
            metric = METRIC_DROP_RE.match(a.metric).group(1)  # type: ignore[union-attr]
            window = _seconds(a.window)
        out.append(
            ir.Alert(
                id=name,
                kind=kind,
                metric=metric,
                features=features,
                warn=a.warn,
                critical=a.critical,
                for_seconds=for_,
                window_seconds=window,
                action=a.action,
                description=a.description,
            )
        )
    return tuple(out)


def _retraining(spec: MLSystem) -> ir.Retraining | None:
    r = spec.retraining
    if r is None:
        return None
    triggers = []
    for t in r.triggers:
        base = {"cron": None, "alert_id": None, "new_rows": None, "metric": None, "by": None}
        if isinstance(t, ScheduleTrigger):
            triggers.append(ir.Trigger(**{**base, "kind": "schedule", "cron": t.schedule}))
        elif isinstance(t, AlertTrigger):
            triggers.append(ir.Trigger(**{**base, "kind": "alert", "alert_id": t.alert}))
        elif isinstance(t, NewRowsTrigger):
            triggers.append(ir.Trigger(**{**base, "kind": "new_rows", "new_rows": t.new_rows}))
        else:
            assert isinstance(t, MetricDropTrigger)
            triggers.append(
                ir.Trigger(
                    **{
                        **base,
                        "kind": "metric_drop",
                        "metric": t.metric_drop.metric,
                        "by": t.metric_drop.by,
                    }
                )
            )
    return ir.Retraining(triggers=tuple(triggers), cooldown_seconds=_seconds(r.cooldown))


_CPU = ir.ComputeResources(cpu=None, memory=None, accelerator="cpu", gpu_count=0)


def _steps(training: ir.Training) -> tuple[ir.Step, ...]:
    """The pipeline DAG; the gate (evaluate) guards export and registration."""
    deterministic_training = training.resources.accelerator == "cpu"

    def step(
        name: ir.StepKind,
        deps: tuple[str, ...],
        inputs: dict[str, str],
        outputs: list[tuple[str, ir.ArtifactType]],
        *,
        cacheable: bool,
        resources: ir.ComputeResources = _CPU,
        retries: int = 1,
        condition: str | None = None,
    ) -> ir.Step:
        return ir.Step(
            name=name,
            kind=name,
            depends_on=deps,
            inputs=inputs,
            outputs=tuple(ir.ArtifactSpec(name=n, type=t) for n, t in outputs),
            resources=resources,
            cacheable=cacheable,
            retries=retries,
            condition=condition,  # type: ignore[arg-type]
        )

    return (
        step("validate_data", (), {}, [("data_report", "Metrics")], cacheable=False),
        step(
            "materialize_features",
            ("validate_data",),
            {},
            [("feature_repo", "Artifact")],
            cacheable=False,
        ),
        step(
            "build_training_set",
            ("materialize_features",),
            {"feature_repo": "materialize_features.feature_repo"},
            [("training_set", "Dataset")],
            cacheable=False,
        ),
        step(
            "train",
            ("build_training_set",),
            {"training_set": "build_training_set.training_set"},
            [("model", "Model"), ("train_metrics", "Metrics")],
            cacheable=deterministic_training,
            resources=training.resources,
        ),
        step(
            "evaluate",
            ("train",),
            {"model": "train.model", "training_set": "build_training_set.training_set"},
            [("eval_metrics", "Metrics")],
            cacheable=True,
        ),
        step(
            "export_onnx",
            ("evaluate",),
            {"model": "train.model", "training_set": "build_training_set.training_set"},
            [("onnx_model", "Model")],
            cacheable=True,
            condition="gate_passed",
        ),
        step(
            "register",
            ("export_onnx",),
            {
                "onnx_model": "export_onnx.onnx_model",
                "model": "train.model",
                "eval_metrics": "evaluate.eval_metrics",
            },
            [("registered_model", "Artifact")],
            cacheable=False,
            retries=0,
            condition="gate_passed",
        ),
    )


def _targets(spec: MLSystem) -> ir.TargetSettings:
    t = spec.targets
    kf = t.kubeflow
    sm = t.sagemaker
    return ir.TargetSettings(
        local=ir.LocalSettings(
            workdir=t.local.workdir,
            port=t.local.port,
            host=t.local.host,
            keep_online_stores=t.local.keep_online_stores,
        ),
        kubeflow=None
        if kf is None
        else ir.KubeflowSettings(
            image=kf.image,
            namespace=kf.namespace,
            pipeline_root=kf.pipeline_root,
            service_account=kf.service_account,
            storage_uri=kf.storage_uri,
            retries=kf.retries,
            image_pull_secret=_secret(kf.image_pull_secret),
            istio=kf.istio,
            prometheus_url=kf.prometheus_url,
            pipelines_host=kf.pipelines_host,
            pipelines_token=_secret(kf.pipelines_token),
        ),
        sagemaker=None
        if sm is None
        else ir.SagemakerSettings(
            region=sm.region,
            instance_type=sm.instance_type,
            training_instance_type=sm.training_instance_type,
            image=sm.image,
            role_arn=sm.role.arn if isinstance(sm.role, RoleArn) else None,
            role_from_stack=getattr(sm.role, "from_stack", None),
            kms_key=_secret(sm.kms_key),
        ),
    )


def lower(spec: MLSystem) -> ir.Plan:
    """Turn a validated, checked spec into the immutable, target-neutral Plan."""
    training = _training(spec)
    return ir.Plan(
        ir_version=ir.IR_VERSION,
        system=ir.SystemMeta(
            name=spec.metadata.name,
            owner=spec.metadata.owner,
            description=spec.metadata.description,
            labels=dict(sorted(spec.metadata.labels.items())),
        ),
        spec_hash=spec_hash(spec),
        features=_features(spec),
        training=training,
        evaluation=_evaluation(spec),
        registry=ir.ModelRegistryEntry(
            name=spec.metadata.name, challenger_alias="challenger", champion_alias="champion"
        ),
        endpoint=_endpoint(spec),
        rollout=_rollout(spec),
        alerts=_alerts(spec, training.features),
        retraining=_retraining(spec),
        notifications=ir.Notifications(
            webhook_url=_secret(spec.notifications.webhook.url)
            if spec.notifications.webhook
            else None,
            log_alerts=True,
            webhook_allow_private=bool(
                spec.notifications.webhook and spec.notifications.webhook.allow_private
            ),
        ),
        steps=_steps(training),
        targets=_targets(spec),
    )
