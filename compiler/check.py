"""Cross-reference and semantic checks on a validated spec; every problem is collected."""

from __future__ import annotations

import re

from specml.compiler.compose import Composed
from specml.compiler.errors import Diagnostic, Severity, YamlPath, did_you_mean
from specml.compiler.metrics import metrics_for
from specml.compiler.spec import MLSystem
from specml.compiler.spec.features import TREE_FAMILIES
from specml.compiler.spec.monitoring import (
    METRIC_DROP_RE,
    AlertTrigger,
    DriftAlert,
    ErrorRateAlert,
    LatencyAlert,
    MetricDropAlert,
    MetricDropTrigger,
)
from specml.compiler.spec.serving import AlertCondition


class _Checker:
    def __init__(self, spec: MLSystem, composed: Composed) -> None:
        self.spec = spec
        self.composed = composed
        self.diagnostics: list[Diagnostic] = []

    def report(
        self,
        path: YamlPath,
        message: str,
        hint: str | None = None,
        severity: Severity = "error",
        code: str = "reference",
    ) -> None:
        self.diagnostics.append(
            self.composed.diagnostic(
                path, message, hint=hint, code=code, stage="check", severity=severity
            )
        )

    def ref(self, path: YamlPath, kind: str, name: str, known: list[str], where: str) -> bool:
        if name in known:
            return True
        guess = did_you_mean(name, known)
        hint = (
            f"did you mean '{guess}'?"
            if guess
            else (
                f"defined {kind}s: {', '.join(sorted(known))}"
                if known
                else f"define it under {where}"
            )
        )
        self.report(path, f"unknown {kind} '{name}' (not defined under {where})", hint)
        return False

    # ---- features -------------------------------------------------------------------------
    def features(self) -> None:
        sources = list(self.spec.data.sources)
        entities = list(self.spec.features.entities)
        for name, view in self.spec.features.views.items():
            base = ("features", "views", name)
            self.ref((*base, "entity"), "entity", view.entity, entities, "features.entities")
            self.ref((*base, "source"), "data source", view.source, sources, "data.sources")
        label = self.spec.features.label
        self.ref(
            ("features", "label", "source"), "data source", label.source, sources, "data.sources"
        )
        owners = self.field_owners()
        if label.field in owners:
            self.report(
                ("features", "label", "field"),
                f"the label '{label.field}' is also a feature of view '{owners[label.field]}': "
                "the model would see the answer",
                hint="remove it from the view's fields",
                code="leakage",
            )
        used_entities = {v.entity for v in self.spec.features.views.values()}
        for name in entities:
            if name not in used_entities:
                self.report(
                    ("features", "entities", name),
                    f"entity '{name}' is not used by any view",
                    severity="warning",
                    code="unused",
                )
        used_sources = {v.source for v in self.spec.features.views.values()} | {label.source}
        for name in sources:
            if name not in used_sources:
                self.report(
                    ("data", "sources", name),
                    f"data source '{name}' is not used",
                    severity="warning",
                    code="unused",
                )

    def field_owners(self) -> dict[str, str]:
        return {f: vn for vn, v in self.spec.features.views.items() for f in v.fields}

    def feature_ref(self, path: YamlPath, ref: str) -> None:
        views = self.spec.features.views
        view_name, _, field_name = ref.partition(":")
        if not self.ref(path, "feature view", view_name, list(views), "features.views"):
            return
        if field_name and field_name not in views[view_name].fields:
            guess = did_you_mean(field_name, list(views[view_name].fields))
            self.report(
                path,
                f"view '{view_name}' has no feature '{field_name}'",
                hint=f"did you mean '{view_name}:{guess}'?"
                if guess
                else f"its features: {', '.join(views[view_name].fields)}",
            )

    def training(self) -> None:
        training = self.spec.training
        for i, ref in enumerate(training.features or []):
            self.feature_ref(("training", "features", i), ref)
        inputs = self.input_fields()
        if not inputs:
            self.report(("training", "features"), "training has no input features")
        self.encodings()
        self.label_classes()

    def encodings(self) -> None:
        """Each explicit encoding fits training.model's family (native: trees; embedding: mlp)."""
        family = str(self.spec.training.model.type)
        for view_name, view in self.spec.features.views.items():
            for field_name, fld in view.fields.items():
                path = ("features", "views", view_name, "fields", field_name, "encoding")
                if fld.encoding == "native" and family not in TREE_FAMILIES:
                    self.report(
                        path,
                        f"encoding native is the tree libraries' own categorical splits, but "
                        f"training.model is {family}",
                        hint="use one_hot, ordinal or embedding, or a lightgbm/xgboost model",
                        code="encoding",
                    )
                if fld.encoding == "embedding" and family != "mlp":
                    self.report(
                        path,
                        f"encoding embedding needs training.model mlp, not {family}",
                        hint="use one_hot or ordinal"
                        + (" (or native)" if family in TREE_FAMILIES else ""),
                        code="encoding",
                    )

    def label_classes(self) -> None:
        """features.label.classes / positive against training.task and training.num_classes."""
        label, training = self.spec.features.label, self.spec.training
        task, classes = training.task, label.classes
        if classes is not None and task == "regression":
            self.report(
                ("features", "label", "classes"),
                "features.label.classes applies to classification, not to regression",
                hint="remove classes",
                code="classes",
            )
        if classes is not None and task == "binary_classification" and len(classes) != 2:
            self.report(
                ("features", "label", "classes"),
                f"binary_classification has 2 classes, but features.label.classes lists "
                f"{len(classes)}",
                hint="list the two classes, or use task multiclass_classification",
                code="classes",
            )
        if label.positive is not None and task != "binary_classification":
            self.report(
                ("features", "label", "positive"),
                f"features.label.positive applies to binary_classification, not to {task}",
                hint="remove positive",
                code="classes",
            )
        if task != "multiclass_classification":
            return
        if classes is None and training.num_classes is None:
            self.report(
                ("training", "num_classes"),
                "training.task is multiclass_classification but training.num_classes is missing",
                hint="add `num_classes: N` (N >= 3) under training, or list the classes in "
                "features.label.classes",
                code="classes",
            )
        elif classes is not None and len(classes) < 3:
            self.report(
                ("features", "label", "classes"),
                f"multiclass_classification needs at least 3 classes, features.label.classes "
                f"lists {len(classes)}",
                hint="use task binary_classification for two classes",
                code="classes",
            )
        elif (
            classes is not None
            and training.num_classes is not None
            and training.num_classes != len(classes)
        ):
            self.report(
                ("training", "num_classes"),
                f"training.num_classes is {training.num_classes}, but features.label.classes "
                f"lists {len(classes)} classes",
                hint="remove num_classes (the classes list sets it), or make them agree",
                code="classes",
            )

    def model_options(self) -> None:
        training, optimize = self.spec.training, self.spec.serving.optimize
        if optimize is not None and training.model.type in TREE_FAMILIES:
            self.report(
                ("serving", "optimize", "quantize"),
                f"serving.optimize.quantize int8 applies to mlp/linear graphs, not to "
                f"training.model {training.model.type} (tree ensembles have no weights to quantize)",
                hint="remove serving.optimize",
                code="unsupported",
            )
        if training.evaluation is None:
            return
        fields = [f for _, f in self.input_fields()]
        for i, s in enumerate(training.evaluation.slices):
            if s.input_name not in fields:
                guess = did_you_mean(s.input_name, fields)
                self.report(
                    ("training", "evaluation", "slices", i, "feature"),
                    f"slice feature '{s.feature}' is not a model input",
                    hint=f"did you mean '{guess}'?" if guess else f"inputs: {', '.join(fields)}",
                )

    def input_fields(self) -> list[tuple[str, str]]:
        views = self.spec.features.views
        selected = self.spec.training.features
        if selected is None:  # the spec's order: views as written, fields as written
            return [(vn, f) for vn in views for f in views[vn].fields]
        out: list[tuple[str, str]] = []
        for ref in selected:
            view_name, _, field_name = ref.partition(":")
            if view_name not in views:
                continue
            names = [field_name] if field_name else list(views[view_name].fields)
            out.extend((view_name, f) for f in names if f in views[view_name].fields)
        return out

    # ---- monitoring ------------------------------------------------------------------------
    def alerts(self) -> None:
        task = self.spec.training.task
        allowed = metrics_for(task)
        slo = self.spec.serving.slo
        for name, alert in self.spec.alerts.items():
            base = ("alerts", name)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
                self.report(
                    base, f"alert name '{name}' must be letters, digits and '_'", code="name"
                )
            if isinstance(alert, DriftAlert) and isinstance(alert.on, list):
                for i, ref in enumerate(alert.on):
                    self.feature_ref((*base, "on", i), ref)
            if isinstance(alert, MetricDropAlert):
                metric = METRIC_DROP_RE.match(alert.metric).group(1)  # type: ignore[union-attr]
                if metric not in allowed:
                    guess = did_you_mean(metric, allowed)
                    self.report(
                        (*base, "metric"),
                        f"'{alert.metric}' watches '{metric}', which is not a metric of {task}",
                        hint=f"did you mean '{guess}_drop'?"
                        if guess
                        else f"metrics for {task}: {', '.join(allowed)}",
                        code="metric",
                    )
            if isinstance(alert, LatencyAlert):
                objective = getattr(slo, alert.metric)
                if (
                    objective is not None
                    and alert.critical is not None
                    and alert.critical < objective
                ):
                    self.report(
                        (*base, "critical"),
                        f"critical {alert.metric} alert ({alert.critical:g} ms) is below "
                        f"serving.slo.{alert.metric} ({objective:g} ms): it would page while the "
                        "SLO is met",
                        hint=f"set critical to at least {objective:g}, or lower the SLO",
                        code="threshold",
                    )
            if (
                isinstance(alert, ErrorRateAlert)
                and slo.error_rate is not None
                and alert.critical is not None
                and alert.critical < slo.error_rate
            ):
                self.report(
                    (*base, "critical"),
                    f"critical error_rate alert ({alert.critical:g}) is below "
                    f"serving.slo.error_rate ({slo.error_rate:g})",
                    hint=f"set critical to at least {slo.error_rate:g}",
                    code="threshold",
                )
            if alert.action == "rollback" and self.spec.rollout is None:
                self.report(
                    (*base, "action"),
                    "action rollback needs a `rollout` section to roll back",
                    hint="add a rollout section or use action: notify",
                    code="action",
                )
            if alert.action == "retrain" and self.spec.retraining is None:
                self.report(
                    (*base, "action"),
                    "action retrain, but the spec has no `retraining` section",
                    hint="add `retraining: {triggers: [{alert: " + name + "}]}`",
                    severity="warning",
                    code="action",
                )

    def rollout(self) -> None:
        rollout = self.spec.rollout
        if rollout is None:
            return
        alerts = list(self.spec.alerts)
        slo = self.spec.serving.slo
        has_slo = any(
            v is not None
            for v in (slo.p50_latency_ms, slo.p95_latency_ms, slo.p99_latency_ms, slo.error_rate)
        )
        for i, cond in enumerate(rollout.rollback_when):
            path = ("rollout", "rollback_when", i)
            if isinstance(cond, AlertCondition):
                self.ref((*path, "alert"), "alert", cond.alert, alerts, "alerts")
            elif cond == "slo_breach" and not has_slo:
                self.report(
                    path,
                    "rollback on slo_breach, but serving.slo sets no objective",
                    hint="add e.g. `serving.slo.p95_latency_ms: 50`",
                    code="slo",
                )

    def retraining(self) -> None:
        retraining = self.spec.retraining
        if retraining is None:
            return
        alerts = list(self.spec.alerts)
        allowed = metrics_for(self.spec.training.task)
        for i, trigger in enumerate(retraining.triggers):
            path = ("retraining", "triggers", i)
            if isinstance(trigger, AlertTrigger):
                self.ref((*path, "alert"), "alert", trigger.alert, alerts, "alerts")
            if isinstance(trigger, MetricDropTrigger) and trigger.metric_drop.metric not in allowed:
                guess = did_you_mean(trigger.metric_drop.metric, allowed)
                self.report(
                    (*path, "metric_drop", "metric"),
                    f"'{trigger.metric_drop.metric}' is not a metric of {self.spec.training.task}",
                    hint=f"did you mean '{guess}'?" if guess else f"metrics: {', '.join(allowed)}",
                    code="metric",
                )

    def run(self) -> list[Diagnostic]:
        self.features()
        self.training()
        self.model_options()
        self.alerts()
        self.rollout()
        self.retraining()
        return self.diagnostics


def check_spec(spec: MLSystem, composed: Composed) -> list[Diagnostic]:
    """All cross-reference and semantic problems (errors and warnings), in file order."""
    found = _Checker(spec, composed).run()
    return sorted(found, key=lambda d: (d.file or "", d.line or 0, d.col or 0))
