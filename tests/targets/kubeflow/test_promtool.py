"""The emitted rules checked by Prometheus itself: `promtool check rules` and `promtool test rules`.

promtool comes with Debian's `prometheus` package (.ci/run installs it). For every critical rule
of every example spec, a generated unit test feeds the series the rule reads (the gauges the
monitor exports, or Knative's request histogram and counter) and shows that the alert
- fires once its condition has held for its `for:` (and is still pending one minute earlier),
- does not fire when the value stays just below the threshold.
Gauge-fed rules are tested AT the threshold (alerts compare with >=, like the local monitor);
rate-fed ones (latency quantiles, error ratios) 5 % above and below it, as rate() extrapolation
makes an exact equality a float coin toss. SLO rules compare strictly (>), like the controller.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeflow_testlib import GOLDEN_SPECS, plan_for, rendered
from specml.compiler.ir import Plan
from specml.targets.kubeflow.prometheus import QUANTILES

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus (.ci/run does)"
)
STEP_MINUTES = 1
PER_MINUTE = 1_000_000.0  # requests per minute in the rate-fed series


def _groups(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load(rendered(name)["prometheusrule.yaml"])["spec"]["groups"]


def _rules(name: str) -> list[dict[str, Any]]:
    return [r for g in _groups(name) for r in g["rules"]]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _write_rules(name: str, folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _groups(name)}, sort_keys=False))
    return path


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_promtool_check_rules_accepts_the_emitted_rules(name: str, tmp_path: Path) -> None:
    rules = _write_rules(name, tmp_path)
    out = _promtool("check", "rules", str(rules), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules(name))} rules found" in out.stdout


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path: Path) -> None:
    groups = _groups("fraud")
    groups[0]["rules"][0]["expr"] = "sum(rate(x[5m]) > 1"  # unbalanced parenthesis
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    out = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert out.returncode != 0 and "parse error" in (out.stdout + out.stderr)


def _minutes(duration: str | None) -> int:
    if not duration:
        return 0
    total, number = 0, ""
    for ch in duration:
        if ch.isdigit():
            number += ch
        else:
            total += int(number) * {"s": 0, "m": 1, "h": 60, "d": 1440}[ch]
            number = ""
    return total


def _source(plan: Plan, rule: dict[str, Any]) -> tuple[str, str, float]:
    """(series kind, figure, threshold) for a rule: what to feed it and where it fires."""
    labels = rule["labels"]
    threshold = float(rule["expr"].rsplit(" ", 1)[1])
    alert_id = labels["specml_alert"]
    if alert_id == "slo_breach":
        if "histogram_quantile" in rule["expr"]:
            q = rule["expr"].split("(", 2)[1].split(",")[0]
            return "latency", q, threshold
        return "error_rate", "error_rate", threshold
    if alert_id.startswith("metric_drop:"):
        return "metric_drop", alert_id.split(":", 1)[1], threshold
    alert = plan.alert(alert_id)
    if alert.kind == "latency":
        return "latency", f"{QUANTILES[alert.metric]:g}", threshold
    return alert.kind, alert.metric if alert.kind != "metric_drop" else alert.metric, threshold


def _series(plan: Plan, rule: dict[str, Any], value: float) -> tuple[list[dict], dict[str, str]]:
    """Input series making the rule's expression equal `value`, and the labels the alert keeps."""
    kind, figure, _ = _source(plan, rule)
    system = plan.system.name
    assert plan.targets.kubeflow is not None
    ns, revision = plan.targets.kubeflow.namespace, f"{plan.endpoint.name}-predictor-00001"
    knative = f'namespace_name="{ns}", service_name="{revision}", revision_name="{revision}"'
    n = 40
    if kind == "drift":
        alert = plan.alert(rule["labels"]["specml_alert"])
        feature = alert.features[0]
        series = f'specml_feature_{figure}{{system="{system}", feature="{feature}"}}'
        return [{"series": series, "values": f"{value!r}x{n}"}], {"feature": feature}
    if kind == "prediction_drift":
        series = f'specml_prediction_{figure}{{system="{system}", column="prediction"}}'
        return [{"series": series, "values": f"{value!r}x{n}"}], {}
    if kind == "metric_drop":
        metric = (
            figure
            if rule["labels"]["specml_alert"].startswith("metric_drop:")
            else (plan.alert(rule["labels"]["specml_alert"]).metric)
        )
        series = f'specml_model_metric_drop{{system="{system}", metric="{metric}"}}'
        return [{"series": series, "values": f"{value!r}x{n}"}], {}
    if kind == "latency":
        q = float(figure)
        bucket = "revision_app_request_latencies_bucket"
        below = q * PER_MINUTE  # the quantile's rank lands exactly on the le=value boundary
        return [
            {"series": f'{bucket}{{{knative}, le="{value!r}"}}', "values": f"0+{below!r}x{n}"},
            {"series": f'{bucket}{{{knative}, le="+Inf"}}', "values": f"0+{PER_MINUTE!r}x{n}"},
        ], {}
    errors = value * PER_MINUTE
    count = "revision_app_request_count"
    return [
        {
            "series": f'{count}{{{knative}, response_code_class="5xx"}}',
            "values": f"0+{errors!r}x{n}",
        },
        {
            "series": f'{count}{{{knative}, response_code_class="2xx"}}',
            "values": f"0+{PER_MINUTE - errors!r}x{n}",
        },
    ], {}


def _case(plan: Plan, rule: dict[str, Any], value: float, fires: bool) -> dict[str, Any]:
    series, kept = _series(plan, rule, value)
    rate_fed = _source(plan, rule)[0] in ("latency", "error_rate")
    start = STEP_MINUTES if rate_fed else 0  # rate() needs two samples
    fire_at = start + _minutes(rule.get("for"))
    expected = [
        {
            "exp_labels": {**kept, **rule["labels"]},
            "exp_annotations": rule["annotations"],
        }
    ]
    checks = [
        {
            "eval_time": f"{fire_at}m",
            "alertname": rule["alert"],
            "exp_alerts": expected if fires else [],
        }
    ]
    if fires and fire_at > start:  # one evaluation earlier it is only pending
        checks.append(
            {"eval_time": f"{fire_at - 1}m", "alertname": rule["alert"], "exp_alerts": []}
        )
    return {"interval": f"{STEP_MINUTES}m", "input_series": series, "alert_rule_test": checks}


def _unit_tests(plan: Plan, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tests = []
    for rule in rules:
        if rule["labels"]["severity"] != "critical":
            continue
        kind, _, threshold = _source(plan, rule)
        strict = rule["expr"].rsplit(" ", 2)[1] == ">"
        if kind in ("latency", "error_rate"):
            above, below = threshold * 1.05, threshold * 0.95
        else:
            assert not strict, rule["alert"]  # alerts reach a level AT the threshold
            above, below = threshold, threshold - max(abs(threshold) * 0.01, 1e-6)
        tests.append(_case(plan, rule, above, fires=True))
        tests.append(_case(plan, rule, below, fires=False))
    return tests


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_each_critical_rule_fires_at_its_threshold_after_its_for(name: str, tmp_path: Path) -> None:
    plan = plan_for(name)
    rules = _rules(name)
    _write_rules(name, tmp_path)
    tests = _unit_tests(plan, rules)
    assert len(tests) == 2 * sum(r["labels"]["severity"] == "critical" for r in rules)
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yaml"],
                "evaluation_interval": f"{STEP_MINUTES}m",
                "tests": tests,
            },
            sort_keys=False,
        )
    )
    out = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_test_fails_when_a_rule_does_not_fire(tmp_path: Path) -> None:
    """The generated tests can fail: a rule whose threshold was raised misses its firing check."""
    plan = plan_for("fraud")
    rules = _rules("fraud")
    tests = _unit_tests(plan, rules)
    groups = _groups("fraud")
    for group in groups:
        for rule in group["rules"]:
            if rule["labels"]["severity"] == "critical":
                op_threshold = rule["expr"].rsplit(" ", 1)
                rule["expr"] = f"{op_threshold[0]} {float(op_threshold[1]) * 2:g}"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    out = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert out.returncode != 0 and "FAILED" in (out.stdout + out.stderr)
