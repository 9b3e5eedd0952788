"""Retraining triggers on AWS without Pulumi (imported by `check`): cron in EventBridge's form, and
what EventBridge cannot express, declared."""

from __future__ import annotations

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan
from specml.targets.sagemaker.alarms import alarm_specs
from specml.targets.sagemaker.diagnostics import unsupported

_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _dow(field: str) -> str:
    """A cron day-of-week field (0/7 = Sunday) with day names, as AWS reads numbers differently."""

    def day(token: str) -> str:
        return _DAYS[int(token) % 7] if token.isdigit() else token.upper()

    parts = []
    for item in field.split(","):
        lo, sep, hi = item.partition("-")
        parts.append(f"{day(lo)}-{day(hi)}" if sep else day(lo))
    return ",".join(parts)


def aws_cron(cron: str) -> str | None:
    """`m h dom mon dow` as `cron(m h dom mon dow year)`; None when AWS cannot say it
    (both day fields restricted, or steps on days of the week)."""
    fields = _DESCRIPTORS.get(cron, cron).split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        return None
    if "/" in dow:
        return None
    if dow == "*":
        dow = "?"
    else:
        dom, dow = "?", _dow(dow)
    return f"cron({minute} {hour} {dom} {month} {dow} *)"


def loop_diagnostics(plan: Plan) -> list[Diagnostic]:
    """What the SageMaker loop cannot do for this Plan: each a warning naming its field."""
    if plan.retraining is None:
        return []
    out: list[Diagnostic] = []
    alarmed = {s.source for s in alarm_specs(plan)[0]}

    def warn(message: str, path: tuple[str | int, ...], hint: str, code: str) -> None:
        out.append(unsupported(message, path, hint, code))

    for i, trigger in enumerate(plan.retraining.triggers):
        path = ("retraining", "triggers", i)
        if trigger.kind == "schedule" and aws_cron(trigger.cron or "") is None:
            warn(
                f"cron '{trigger.cron}' has no EventBridge equivalent: no schedule is created",
                path,
                "restrict either the day of month or the day of week, not both",
                "sagemaker_cron_unsupported",
            )
        elif trigger.kind == "alert" and trigger.alert_id not in alarmed:
            warn(
                f"alert '{trigger.alert_id}' has no CloudWatch alarm, so it cannot start the "
                "pipeline",
                path,
                "trigger on a latency, error-rate or drift alert",
                "sagemaker_trigger_unsupported",
            )
        elif trigger.kind in ("new_rows", "metric_drop"):
            warn(
                f"the {trigger.kind} trigger is not emitted: nothing in AWS sees it happen",
                path,
                "use a schedule or a drift alert trigger, or --target local",
                "sagemaker_trigger_unsupported",
            )
    if any(t.kind == "alert" for t in plan.retraining.triggers):
        warn(
            "EventBridge starts the pipeline each time the alarm enters ALARM; "
            "retraining.cooldown is not enforced between those",
            ("retraining", "cooldown"),
            "alarms re-enter ALARM only after recovering, which bounds the rate",
            "sagemaker_cooldown_unsupported",
        )
    return out


def loop_readme(plan: Plan) -> list[str]:
    """README lines: what runs where, what it reads, what it changes; and a request example."""
    import json

    from specml.targets.sagemaker.alarms import drift_period
    from specml.targets.sagemaker.naming import Names

    names = Names.for_plan(plan)
    crons = [t.cron for t in (plan.retraining.triggers if plan.retraining else ()) if t.cron]
    alarmed = {s.source for s in alarm_specs(plan)[0]}
    alerts = [
        t.alert_id
        for t in (plan.retraining.triggers if plan.retraining else ())
        if t.alert_id in alarmed
    ]
    drift = [a.id for a in plan.alerts if a.kind in ("drift", "prediction_drift")]
    lines = [
        "## The loop: what runs where",
        "",
        "| what | runs as | reads | changes |",
        "|---|---|---|---|",
        "| rollout | the endpoint's blue/green guardrails | the rollback alarms | traffic to "
        "the new fleet, rolled back when one fires |",
    ]
    if drift:
        lines.append(
            f"| drift | processing job `python -m specml.runtime drift-job`, every "
            f"{drift_period(plan) // 60} min (EventBridge Scheduler `{names.prefix}-drift`) | "
            "the endpoint's data capture (`s3://<bucketName>/data-capture/`), the reference "
            "beside the champion model | CloudWatch `specml/Drift` `AlertValue{System, Alert}` "
            f"(alarms of {', '.join(f'`{d}`' for d in drift)}) |"
        )
    for cron in crons:
        lines.append(
            f"| retraining | EventBridge Scheduler `{aws_cron(cron)}` (UTC) | - | starts pipeline "
            f"`{names.pipeline}` |"
        )
    for alert_id in alerts:
        lines.append(
            f"| retraining | EventBridge rule on alert `{alert_id}`'s alarm entering ALARM | the "
            f"alarm | starts pipeline `{names.pipeline}` |"
        )
    samples = {"FP32": 1.0, "INT64": 1, "BYTES": "a"}
    record = {f.input_name: samples[f.datatype] for f in plan.training.features}
    lines += [
        "",
        "## Request",
        "",
        "One value per feature, named as in the spec (strings as strings, null = missing); the "
        "container also takes Open Inference Protocol v2 bodies and CSV:",
        "",
        "```sh",
        f"aws sagemaker-runtime invoke-endpoint --endpoint-name {names.endpoint} "
        "--content-type application/json --body '"
        + json.dumps({"instances": [record]})
        + "' --cli-binary-format raw-in-base64-out out.json",
        "```",
    ]
    return lines
