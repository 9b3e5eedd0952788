"""The README.md written beside the compiled files: how to submit, deploy, roll out and roll back."""

from __future__ import annotations

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan
from specml.targets.kubeflow import prometheus
from specml.targets.kubeflow.kserve import (
    ROLLBACK_MANIFEST,
    RUNTIME,
    rollout_manifests,
    storage_uri,
)
from specml.targets.kubeflow.manifests import human_duration, namespace, short_hash
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


def _rollout_section(plan: Plan) -> list[str]:
    lines = ["## Rollout (KServe canary)", ""]
    lines.append(
        "Each file is the same InferenceService with a new `canaryTrafficPercent`: apply them in "
        "order, waiting out each hold while the alerts stay quiet."
    )
    lines += ["", "| # | apply | new revision's traffic | hold |", "|---|---|---|---|"]
    n = 0
    for m in rollout_manifests(plan):
        if m.path == ROLLBACK_MANIFEST:
            continue
        n += 1
        traffic = "100 % (promote)" if m.canary_percent is None else f"{m.canary_percent} %"
        hold = human_duration(m.step.duration_seconds) if m.step else "none"
        lines.append(f"| {n} | `kubectl apply -f {m.path}` | {traffic} | {hold} |")
    if plan.rollout is not None:
        lines += [
            "",
            f"**Roll back** at any point: `kubectl apply -f {ROLLBACK_MANIFEST}` (percent 0: every "
            "request goes to the previous revision). Roll back when an alert labelled "
            '`specml_rollback="true"` fires; for this spec that is: '
            + ", ".join(
                "any SLO alert" if c.kind == "slo_breach" else f"`{c.alert_id}`"
                for c in plan.rollout.rollback_when
            )
            + f" (analysis every {human_duration(plan.rollout.analysis_interval_seconds)}, "
            f"{plan.rollout.failure_limit} failure(s) allowed).",
            "",
            f"Status: `kubectl get isvc {plan.endpoint.name} -n {namespace(plan)}` shows the "
            "traffic split between the previous and the latest revision.",
        ]
    return lines


def _alerts_section(plan: Plan) -> list[str]:
    lines = [
        "## Alerts (prometheusrule.yaml)",
        "",
        "Latency and error SLOs read the Knative queue-proxy series of the predictor: "
        f"`{prometheus.LATENCY_BUCKET}` (milliseconds) and `{prometheus.REQUEST_COUNT}`. "
        "Drift and model-metric alerts read gauges the specml monitor exports:",
        "",
        f"- `{prometheus.FEATURE_DRIFT.format(metric='psi')}{{system, feature}}` / "
        f"`{prometheus.FEATURE_DRIFT.format(metric='ks')}{{system, feature}}`: "
        "per-feature drift (feature = `view:field`)",
        f"- `{prometheus.PREDICTION_DRIFT.format(metric='psi')}{{system}}`: drift of the scores",
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
        f"Generated by `specml compile --target kubeflow` from spec `{short_hash(plan)}` "
        "(do not edit; recompile).",
        "",
        "| file | what |",
        "|---|---|",
        "| `pipeline.yaml` | KFP v2 pipeline: "
        + " -> ".join(s.name for s in plan.steps)
        + " (export and register only when the evaluate gate passed) |",
        "| `inferenceservice.yaml` | KServe InferenceService, first rollout step |",
        "| `rollout/*.yaml` | later rollout steps and the rollback |",
        "| `prometheusrule.yaml` | SLO and alert rules (prometheus-operator) |",
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
            + " (KFP cron has a leading seconds field).",
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
        f"`kubectl apply -n {ns} -f prometheusrule.yaml -f inferenceservice.yaml`",
        "",
        f"The predictor serves ONNX with the `{RUNTIME}` runtime (protocol v2) from "
        f"`{storage_uri(plan)}`: copy the model the `export_onnx` step wrote (registered in MLflow "
        f"as `{plan.registry.name}`) to `<storageUri>/{plan.endpoint.name}/1/model.onnx` "
        "(Triton's model repository layout).",
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
