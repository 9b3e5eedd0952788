"""Plan.endpoint.slo + Plan.alerts -> a prometheus-operator PrometheusRule (PromQL alerts).

Which series the expressions read (documented in the README this target writes):
- latency and errors: the Knative queue-proxy in front of every KServe (serverless) predictor,
  whatever its runtime: `revision_app_request_latencies_bucket` (histogram, milliseconds) and
  `revision_app_request_count` (counter, label `response_code_class`), selected by
  `namespace_name` and `service_name=~"<isvc>-predictor.*"`.
- drift and model-metric alerts: gauges the specml monitor exports (`specml monitor`):
  `specml_feature_<psi|ks>{system, feature}`, `specml_prediction_<psi|ks>{system}` and
  `specml_model_metric_drop{system, metric}` (drop of a model metric versus its registered value).
"""

from __future__ import annotations

from typing import Any

from specml.compiler.ir import Alert, Plan
from specml.targets.kubeflow.manifests import (
    common_annotations,
    common_labels,
    dump_manifest,
    namespace,
    prom_duration,
)

API_VERSION = "monitoring.coreos.com/v1"
KIND = "PrometheusRule"
LATENCY_BUCKET = "revision_app_request_latencies_bucket"  # milliseconds
REQUEST_COUNT = "revision_app_request_count"
FEATURE_DRIFT = "specml_feature_{metric}"
PREDICTION_DRIFT = "specml_prediction_{metric}"
METRIC_DROP = "specml_model_metric_drop"
DEFAULT_WINDOW_SECONDS = 300  # rate window when an alert declares none
SEVERITIES = (("warn", "warning"), ("critical", "critical"))
QUANTILES = {"p50_latency_ms": 0.5, "p95_latency_ms": 0.95, "p99_latency_ms": 0.99}


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.replace("-", "_").split("_"))


# The rollout controller binds this to the challenger's Knative revision (runtime/rollout/kubernetes).
REVISION_MATCHER = 'revision_name=~"$revision"'


def _selector(plan: Plan, revision: bool = False) -> str:
    sel = f'namespace_name="{namespace(plan)}", service_name=~"{plan.endpoint.name}-predictor.*"'
    return f"{sel}, {REVISION_MATCHER}" if revision else sel


def latency_expr(plan: Plan, quantile: float, window_seconds: int, revision: bool = False) -> str:
    """The latency quantile in milliseconds over the predictor's request histogram."""
    window = prom_duration(window_seconds or DEFAULT_WINDOW_SECONDS)
    return (
        f"histogram_quantile({quantile:g}, sum by (le) "
        f"(rate({LATENCY_BUCKET}{{{_selector(plan, revision)}}}[{window}])))"
    )


def error_ratio_expr(plan: Plan, window_seconds: int, revision: bool = False) -> str:
    """Share of requests answered with a 5xx, over the window."""
    window = prom_duration(window_seconds or DEFAULT_WINDOW_SECONDS)
    sel = _selector(plan, revision)
    return (
        f'sum(rate({REQUEST_COUNT}{{{sel}, response_code_class="5xx"}}[{window}])) / '
        f"clamp_min(sum(rate({REQUEST_COUNT}{{{sel}}}[{window}])), 1e-9)"
    )


def _regex_alternatives(values: tuple[str, ...]) -> str:
    specials = set(r".^$*+?()[]{}|\\")
    return "|".join("".join(f"\\\\{c}" if c in specials else c for c in v) for v in values)


def alert_expr(plan: Plan, alert: Alert) -> str:
    """The PromQL whose value is compared with the alert's thresholds."""
    system = f'system="{plan.system.name}"'
    if alert.kind == "latency":
        return latency_expr(plan, QUANTILES[alert.metric], alert.window_seconds)
    if alert.kind == "error_rate":
        return error_ratio_expr(plan, alert.window_seconds)
    if alert.kind == "drift":
        features = _regex_alternatives(alert.features)
        name = FEATURE_DRIFT.format(metric=alert.metric)
        return f'max by (feature) ({name}{{{system}, feature=~"{features}"}})'
    if alert.kind == "prediction_drift":
        return f"max({PREDICTION_DRIFT.format(metric=alert.metric)}{{{system}}})"
    # metric_drop: how far the live model metric fell below its registered value
    return f'max({METRIC_DROP}{{{system}, metric="{alert.metric}"}})'


def requests_expr(plan: Plan, window_seconds: int) -> str:
    """Requests the challenger's revision answered over the window (the controller's traffic gate)."""
    window = prom_duration(window_seconds)
    return f"sum(increase({REQUEST_COUNT}{{{_selector(plan, revision=True)}}}[{window}]))"


def analysis_window(plan: Plan) -> int:
    """The rate window of SLO rules and controller queries: one analysis interval, >= 1 minute."""
    interval = plan.rollout.analysis_interval_seconds if plan.rollout else DEFAULT_WINDOW_SECONDS
    return max(interval, 60)  # a rate() window needs several scrapes


def retrain_alert_ids(plan: Plan) -> frozenset[str]:
    """Alerts that are retraining triggers (`retraining.triggers: [{alert: ID}]`)."""
    if plan.retraining is None:
        return frozenset()
    return frozenset(
        t.alert_id for t in plan.retraining.triggers if t.kind == "alert" and t.alert_id
    )


def _rule(
    name: str, expr: str, for_seconds: int, labels: dict[str, str], annotations: dict[str, str]
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_seconds > 0:
        rule["for"] = prom_duration(for_seconds)
    rule["labels"] = labels
    rule["annotations"] = annotations
    return rule


def alert_rules(plan: Plan) -> list[dict[str, Any]]:
    """One alerting rule per alert and severity (warn -> warning, critical -> critical)."""
    rollback_ids = plan.rollback_alert_ids()
    retrain_ids = retrain_alert_ids(plan)
    rules = []
    for alert in plan.alerts:
        base = alert_expr(plan, alert)
        for field, severity in SEVERITIES:
            threshold = getattr(alert, field)
            if threshold is None:
                continue
            labels = {
                "severity": severity,
                "specml_system": plan.system.name,
                "specml_alert": alert.id,
                "specml_action": alert.action,
                "specml_rollback": "true" if alert.id in rollback_ids else "false",
                "specml_retrain": "true"
                if alert.id in retrain_ids and severity == "critical"
                else "false",
            }
            unit = " ms" if alert.kind == "latency" else ""
            annotations = {
                "summary": f"{plan.system.name}: {alert.id} ({alert.metric}) at or above "
                f"{threshold:g}{unit}",
                "description": alert.description
                or f"specml alert '{alert.id}' ({alert.kind}); action: {alert.action}.",
            }
            rules.append(
                _rule(
                    f"{_camel(plan.system.name)}{_camel(alert.id)}{_camel(severity)}",
                    f"{base} >= {threshold:g}",  # a level is reached AT its threshold
                    alert.for_seconds,
                    labels,
                    annotations,
                )
            )
    return rules


def slo_rules(plan: Plan) -> list[dict[str, Any]]:
    """One critical rule per SLO objective; it holds for the rollout's analysis budget."""
    slo = plan.endpoint.slo
    rollout = plan.rollout
    hold = (
        rollout.analysis_interval_seconds * rollout.failure_limit
        if rollout
        else DEFAULT_WINDOW_SECONDS
    )
    window = analysis_window(plan)
    rolls_back = plan.slo_breach_rolls_back()
    labels = {
        "severity": "critical",
        "specml_system": plan.system.name,
        "specml_alert": "slo_breach",
        "specml_action": "rollback" if rolls_back else "notify",
        "specml_rollback": "true" if rolls_back else "false",
        "specml_retrain": "false",
    }
    rules = []
    for field, quantile in QUANTILES.items():
        objective = getattr(slo, field)
        if objective is None:
            continue
        rules.append(
            _rule(
                f"{_camel(plan.system.name)}SLO{_camel(field.removesuffix('_latency_ms'))}Latency",
                f"{latency_expr(plan, quantile, window)} > {objective:g}",
                hold,
                dict(labels),
                {
                    "summary": f"{plan.system.name}: {field} above the SLO of {objective:g} ms",
                    "description": f"serving.slo.{field} is {objective:g} ms.",
                },
            )
        )
    if slo.error_rate is not None:
        rules.append(
            _rule(
                f"{_camel(plan.system.name)}SLOErrorRate",
                f"{error_ratio_expr(plan, window)} > {slo.error_rate:g}",
                hold,
                dict(labels),
                {
                    "summary": f"{plan.system.name}: error rate above the SLO of {slo.error_rate:g}",
                    "description": f"serving.slo.error_rate is {slo.error_rate:g}.",
                },
            )
        )
    return rules


def retrain_rules(plan: Plan) -> list[dict[str, Any]]:
    """One rule per metric-drop retraining trigger, for the Alertmanager webhook to act on."""
    if plan.retraining is None:
        return []
    rules = []
    for trigger in plan.retraining.triggers:
        if trigger.kind != "metric_drop" or trigger.metric is None or trigger.by is None:
            continue
        expr = f'max({METRIC_DROP}{{system="{plan.system.name}", metric="{trigger.metric}"}})'
        labels = {
            "severity": "critical",
            "specml_system": plan.system.name,
            "specml_alert": f"metric_drop:{trigger.metric}",
            "specml_action": "retrain",
            "specml_rollback": "false",
            "specml_retrain": "true",
        }
        rules.append(
            _rule(
                f"{_camel(plan.system.name)}Retrain{_camel(trigger.metric)}Drop",
                f"{expr} >= {trigger.by:g}",
                0,
                labels,
                {
                    "summary": f"{plan.system.name}: {trigger.metric} dropped by {trigger.by:g} "
                    "or more",
                    "description": "retraining.triggers metric_drop: starts a pipeline run.",
                },
            )
        )
    return rules


def controller_queries(plan: Plan) -> dict[str, Any]:
    """What the rollout controller asks Prometheus: the rules' expressions, on the challenger."""
    window = analysis_window(plan)
    slo = plan.endpoint.slo
    figures = {
        field: latency_expr(plan, q, window, revision=True)
        for field, q in QUANTILES.items()
        if getattr(slo, field) is not None
    }
    if slo.error_rate is not None:
        figures["error_rate"] = error_ratio_expr(plan, window, revision=True)
    return {
        "figures": figures,
        "requests": requests_expr(plan, window),
        "alerts": {
            alert_id: alert_expr(plan, plan.alert(alert_id))
            for alert_id in sorted(plan.rollback_alert_ids())
        },
    }


def prometheus_rule(plan: Plan) -> dict[str, Any]:
    """The PrometheusRule object: an `slo` group and an `alerts` group."""
    groups = []
    slo = slo_rules(plan)
    if slo:
        groups.append({"name": f"{plan.system.name}.slo", "rules": slo})
    alerts = alert_rules(plan) + retrain_rules(plan)
    if alerts:
        groups.append({"name": f"{plan.system.name}.alerts", "rules": alerts})
    labels = common_labels(plan)
    labels["role"] = "alert-rules"
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": f"{plan.system.name}-alerts",
            "namespace": namespace(plan),
            "labels": labels,
            "annotations": common_annotations(plan),
        },
        "spec": {"groups": groups},
    }


def render_prometheus_rule(plan: Plan) -> str:
    """The PrometheusRule as YAML text."""
    header = "Generated by specml; do not edit."
    return dump_manifest(prometheus_rule(plan), header=header)
