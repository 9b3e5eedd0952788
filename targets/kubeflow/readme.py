"""The README.md written beside the compiled files: how to submit, deploy, roll out and roll back."""

from __future__ import annotations

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan
from specml.targets.kubeflow import prometheus
from specml.targets.kubeflow.controller import controller_name, needs_webhook, webhook_url
from specml.targets.kubeflow.kserve import (
    ROLLBACK_MANIFEST,
    RUNTIME,
    needs_monitor,
    shadow_mirror_name,
    storage_uri,
    traffic_steps,
)
from specml.targets.kubeflow.manifests import human_duration, namespace
from specml.targets.kubeflow.monitor import monitor_name
from specml.targets.kubeflow.pipeline import DEFAULT_DATA_DIR, default_workdir

# What differs when the compiled file runs under kfp.local (checked against kfp 2.17).
_KFP_LOCAL_NOTES = (
    "kfp.local notes (kfp 2.17, tested with it; `specml[kubeflow]` pins it):",
    "",
    "- `SubprocessRunner(use_venv=False)` runs every step with the current interpreter, which "
    "needs `specml[local,kubeflow]`; the image is not used (kfp warns about it). kfp's default "
    "`use_venv=True` gives each step a fresh venv, and the components install nothing into it "
    "(no specml, no kfp), so use `use_venv=False`.",
    "- CPU/memory requests and limits and the GPU accelerator are ignored locally (kfp warns); "
    "retries and the evaluate gate are honoured; caching only with "
    "`kfp.local.init(..., enable_caching=True)`.",
    "- The gate is the evaluate step's single return value (output key `Output`): kfp.local "
    "resolves only `<task>-Output` in conditions, a named output would keep the gate closed.",
    "- Without a `tracking_uri`, MLflow is an sqlite store under `workdir`, which every local "
    "step shares.",
)


def _kfp_cron(cron: str) -> str:
    """KFP's cron has a leading seconds field; `@weekly`-style descriptors pass through."""
    return cron if cron.startswith("@") else f"0 {cron}"


def _loop_section(plan: Plan) -> list[str]:
    """What runs where, what it reads and what it changes."""
    settings = plan.targets.kubeflow
    assert settings is not None
    rows = [
        "## The loop: what runs where",
        "",
        "| what | runs as | reads | changes |",
        "|---|---|---|---|",
        f"| training | KFP run of `pipeline.yaml` (`specml apply`, schedules, webhook) | "
        f"sources, MLflow | registers `{plan.registry.name}` in MLflow |",
        f"| serving | InferenceService `{plan.endpoint.name}` ({RUNTIME}) | the ONNX model at "
        "`storageUri` | - |",
    ]
    if plan.rollout is not None:
        rows.append(
            f"| rollout | Deployment `{controller_name(plan)}` "
            "(`python -m specml.runtime rollout-controller`, the local target's controller) | "
            f"Prometheus at `{settings.prometheus_url}`: the SLO and rollback-alert expressions "
            "of prometheusrule.yaml, on the new revision | the InferenceService: "
            "`canaryTrafficPercent` and the `specml.io/rollout-state` annotation, one PATCH "
            "per step |"
        )
    if needs_monitor(plan):
        rows.append(
            f"| drift | Deployment `{monitor_name(plan)}` "
            "(`python -m specml.runtime monitor-service`) | the predictor's payload logger "
            "(CloudEvents), the training reference beside the model | gauges "
            f"`{prometheus.FEATURE_DRIFT.format(metric='psi')}`, "
            f"`{prometheus.PREDICTION_DRIFT.format(metric='psi')}` ... scraped by Prometheus |"
        )
    if needs_webhook(plan):
        rows.append(
            f"| retraining on alerts | the controller's webhook `{webhook_url(plan)}` | "
            "Alertmanager (controller/alertmanagerconfig.yaml routes "
            '`specml_retrain="true"` alerts) | starts a KFP run of the newest pipeline version, '
            f"at most once per {human_duration(plan.retraining.cooldown_seconds if plan.retraining else 0)} |"
        )
    return rows


def _rollout_section(plan: Plan) -> list[str]:
    lines = ["## Rollout (KServe canary, driven in the cluster)", ""]
    if plan.rollout is None:
        return [*lines, "No rollout: `inferenceservice.yaml` deploys at 100 %."]
    rollout = plan.rollout
    lines += [
        f"`{controller_name(plan)}` drives it: every "
        f"{human_duration(rollout.analysis_interval_seconds)} it asks Prometheus for the new "
        "revision's figures; after each hold with the analysis passing it PATCHes the next "
        f"`canaryTrafficPercent`; {rollout.failure_limit} failed analyses in a row (SLO breach "
        "or a rollback alert critical: "
        + ", ".join(
            "any SLO" if c.kind == "slo_breach" else f"`{c.alert_id}`"
            for c in rollout.rollback_when
        )
        + ") set it to 0 (rollback). It keeps its state on the InferenceService (annotation "
        "`specml.io/rollout-state`), so a restarted pod resumes at the same step with the same "
        "hold left, and it refuses an InferenceService not annotated "
        f"`specml.io/rollout-controller: {plan.system.name}`.",
        "",
        "| # | traffic to the new revision | hold |",
        "|---|---|---|",
    ]
    for i, step in enumerate(traffic_steps(plan), start=1):
        traffic = (
            f"shadow: {step.shadow_sample_percent:g} % mirrored (Istio), users on the old one"
            if step.kind == "shadow"
            else "100 % (promote)"
            if step.traffic_percent >= 100
            else f"{step.traffic_percent:g} %"
        )
        lines.append(f"| {i} | {traffic} | {human_duration(step.duration_seconds)} |")
    mirror = shadow_mirror_name(plan)
    if mirror is not None:
        lines += [
            "",
            f"The shadow step's mirror is the VirtualService `{mirror}`: the controller sets its "
            "`mirrorPercentage` to 0 when the rollout leaves shadow (next step, promotion or "
            "rollback); its Role may patch that one VirtualService and nothing else of Istio.",
        ]
    lines += [
        "",
        "Status: `specml rollout status SPEC --target kubeflow` (step, traffic, last analysis, "
        "history, read from the InferenceService; `--endpoint kubernetes=URL` or the kubeconfig). "
        f"By hand (the controller scaled to 0): the same steps are `rollout/step-*.yaml`; "
        f"`kubectl apply -f {ROLLBACK_MANIFEST}` rolls back.",
    ]
    return lines


def _request_example(plan: Plan) -> list[str]:
    """An Open Inference Protocol request: one named input per feature, with its datatype."""
    import json

    samples = {"FP32": 1.0, "INT64": 1, "BYTES": "a"}
    body = {
        "inputs": [
            {
                "name": f.input_name,
                "shape": [1, 1],
                "datatype": f.datatype,
                "data": [samples[f.datatype]],
            }
            for f in plan.training.features
        ]
    }
    outputs = "`output` (scores)" + (
        " and `label` (class names)" if plan.training.task != "regression" else ""
    )
    return [
        "Request (Open Inference Protocol v2, one input per feature, named as in the spec, "
        f"strings as BYTES; the answer has {outputs}):",
        "",
        "```bash",
        f"curl -H 'Content-Type: application/json' "
        f"http://<ingress>/v2/models/{plan.endpoint.name}/infer -d '" + json.dumps(body) + "'",
        "```",
    ]


def _alerts_section(plan: Plan) -> list[str]:
    lines = [
        "## Alerts (prometheusrule.yaml)",
        "",
        "Latency and error SLOs read the Knative queue-proxy series of the predictor: "
        f"`{prometheus.LATENCY_BUCKET}` (milliseconds) and `{prometheus.REQUEST_COUNT}`. "
        "Drift alerts read gauges the monitor service exports (monitor/monitor.yaml); "
        "model-metric alerts read a gauge your delayed-label job exports:",
        "",
        f"- `{prometheus.FEATURE_DRIFT.format(metric='psi')}{{system, feature}}` / "
        f"`{prometheus.FEATURE_DRIFT.format(metric='ks')}{{system, feature}}`: "
        "per-feature drift (feature = `view:field`)",
        f"- `{prometheus.PREDICTION_DRIFT.format(metric='psi')}{{system, column}}`: drift of the "
        "scores (column `prediction`, or `prediction:<k>` per class)",
        f"- `{prometheus.METRIC_DROP}{{system, metric}}`: drop of a model metric versus its "
        "registered value",
        "",
        "| alert | expression | warning | critical | for | action |",
        "|---|---|---|---|---|---|",
    ]
    for alert in plan.alerts:
        warn = "-" if alert.warn is None else f"{alert.warn:g}"
        crit = "-" if alert.critical is None else f"{alert.critical:g}"
        expr = prometheus.alert_expr(plan, alert).replace("|", "\\|")  # a table cell
        lines.append(
            f"| {alert.id} | `{expr}` | {warn} | {crit} | "
            f"{human_duration(alert.for_seconds)} | {alert.action} |"
        )
    return lines


def render_readme(plan: Plan, diagnostics: list[Diagnostic]) -> str:
    """The README.md text for this Plan (deterministic)."""
    name, ns = plan.system.name, namespace(plan)
    settings = plan.targets.kubeflow
    assert settings is not None
    cron = [t.cron for t in (plan.retraining.triggers if plan.retraining else ()) if t.cron]
    lines = [
        f"# {name} on Kubeflow",
        "",
        "Generated by `specml compile --target kubeflow` (do not edit; recompile).",
        "",
        "| file | what |",
        "|---|---|",
        "| `pipeline.yaml` | KFP v2 pipeline: "
        + " -> ".join(s.name for s in plan.steps)
        + " (export and register only when the evaluate gate passed) |",
        "| `inferenceservice.yaml` | KServe InferenceService, first rollout step |",
        "| `rollout/*.yaml` | later rollout steps and the rollback (by hand), the Istio mirror |",
        "| `prometheusrule.yaml` | SLO and alert rules (prometheus-operator) |",
        "| `controller/*.yaml` | the plan (ConfigMap), the rollout controller (Deployment, RBAC) "
        "and the Alertmanager route to its retraining webhook |",
        "| `monitor/monitor.yaml` | the drift monitor (Deployment, Service, ServiceMonitor) |",
        "",
        "`specml apply SPEC --target kubeflow` does all of it: uploads the pipeline (a version per "
        "spec hash), starts a run, sets the recurring runs, and server-side-applies every manifest "
        "(field manager `specml`); `--dry-run` lists the actions. The KFP endpoint: "
        "`--kfp-host`, `KF_PIPELINES_ENDPOINT` or `targets.kubeflow.pipelines_host`.",
        "",
        *_loop_section(plan),
        "",
        "## Train: submit the pipeline",
        "",
        f"The steps run in `{settings.image}`, which must have `specml[kubeflow]` installed "
        "(the components import `specml.runtime` and `kfp`; nothing is pip-installed at run time).",
        "",
        "```python",
        "import kfp",
        "",
        'client = kfp.Client(host="https://<kubeflow>/pipeline")',
        "client.create_run_from_pipeline_package(",
        '    "pipeline.yaml",',
        "    arguments={",
        '        "tracking_uri": "http://mlflow.<namespace>:5000",  # shared MLflow (registry)',
        f'        "workdir": "{default_workdir(plan)}",  # scratch; a shared PVC path if mounted',
        f'        "data_dir": "{DEFAULT_DATA_DIR}",  # base of relative data source paths',
        "    },",
        f'    namespace="{ns}",',
        f'    experiment_name="{name}",',
        *(
            [f'    service_account="{settings.service_account}",']
            if settings.service_account
            else []
        ),
        ")",
        "```",
        "",
        "Parameters: `plan_json` (defaults to this spec's Plan), `workdir`, `data_dir`, "
        "`tracking_uri` (empty: an sqlite MLflow store under `workdir`, which only works when every "
        "step shares that folder, e.g. `kfp.local`).",
    ]
    if cron:
        lines += [
            "",
            "Scheduled retraining (`retraining.triggers`): "
            + ", ".join(
                f'`client.create_recurring_run(experiment_id, "{name}-retrain", '
                f'cron_expression="{_kfp_cron(c)}", pipeline_package_path="pipeline.yaml")`'
                for c in cron
            )
            + " (KFP cron has a leading seconds field; `specml apply` sets these).",
        ]
    lines += [
        "",
        "Run it on one machine with `kfp.local` (the same compiled file):",
        "",
        "```python",
        "import kfp.local",
        "from kfp import components",
        "",
        "kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False))",
        'pipeline = components.load_component_from_file("pipeline.yaml")',
        'pipeline(workdir="/tmp/w", data_dir=".")  # runs the whole DAG in subprocesses',
        "```",
        "",
        *_KFP_LOCAL_NOTES,
        "",
        "## Serve",
        "",
        f"`kubectl apply -n {ns} -f prometheusrule.yaml -f controller/ -f monitor/ "
        "-f inferenceservice.yaml` (or `specml apply`)",
        "",
        f"The predictor serves ONNX with the `{RUNTIME}` runtime (protocol v2) from "
        f"`{storage_uri(plan)}`: copy the model the `export_onnx` step wrote (registered in MLflow "
        f"as `{plan.registry.name}`) to `<storageUri>/{plan.endpoint.name}/1/model.onnx` "
        "(Triton's model repository layout), with the drift reference files the export wrote "
        "beside it (the monitor reads them from there).",
        "",
        *_request_example(plan),
        "",
        *_rollout_section(plan),
        "",
        *_alerts_section(plan),
    ]
    if diagnostics:
        lines += ["", "## What this target does not do for this spec", ""]
        for d in diagnostics:
            hint = f" ({d.hint})" if d.hint else ""
            lines.append(f"- `{d.yaml_path}`: {d.message}{hint}")
    return "\n".join(lines) + "\n"
