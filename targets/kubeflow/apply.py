"""`specml apply --target kubeflow`: the compiled files, put into a cluster with the official clients.

1. KFP (`kfp.Client`): upload the pipeline (a new pipeline, or a new version named after the spec
   hash; an existing version of the same hash is reused), then start a training run, and replace
   the system's recurring runs with one per `retraining.triggers` schedule.
2. Kubernetes (`kubernetes` client): server-side apply of every manifest with field manager
   `specml` (conflicts forced: specml owns the fields it writes), in dependency order.
`dry_run` does nothing and returns every action it would take. The KFP endpoint and token come from
the options (flags), else the environment (KF_PIPELINES_ENDPOINT, KF_PIPELINES_TOKEN), else the
spec's `targets.kubeflow.pipelines_host` / `pipelines_token` reference.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan, SecretRef
from specml.targets.base import ApplyOptions
from specml.targets.kubeflow.manifests import short_hash

FIELD_MANAGER = "specml"
RETRAIN_PREFIX = "-retrain-"
# kind -> (API path prefix, plural); cluster order: config and RBAC before what uses them
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("api/v1", "configmaps"),
    "ServiceAccount": ("api/v1", "serviceaccounts"),
    "Role": ("apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "PrometheusRule": ("apis/monitoring.coreos.com/v1", "prometheusrules"),
    "AlertmanagerConfig": ("apis/monitoring.coreos.com/v1alpha1", "alertmanagerconfigs"),
    "Service": ("api/v1", "services"),
    "ServiceMonitor": ("apis/monitoring.coreos.com/v1", "servicemonitors"),
    "Deployment": ("apis/apps/v1", "deployments"),
    "InferenceService": ("apis/serving.kserve.io/v1beta1", "inferenceservices"),
    "VirtualService": ("apis/networking.istio.io/v1beta1", "virtualservices"),
}


@dataclass
class KubeflowApplyOptions(ApplyOptions):
    """ApplyOptions plus where the cluster is; None: the environment, then the spec."""

    kfp_host: str | None = None
    kfp_token: str | None = None
    kube_api: str | None = None  # API server URL without credentials (else kubeconfig/in-cluster)
    run_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApplyReport:
    """Every action, in order (done, or planned under dry_run)."""

    dry_run: bool
    actions: list[str] = field(default_factory=list)
    run_id: str | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view (what the CLI prints)."""
        return {
            "target": "kubeflow",
            "dry_run": self.dry_run,
            "actions": self.actions,
            "run_id": self.run_id,
        }


def _error(message: str, path: tuple[str, ...], hint: str, code: str) -> TargetError:
    return TargetError([Diagnostic(message, path=path, hint=hint, stage="target", code=code)])


def _resolve(ref: SecretRef | None) -> str | None:
    if ref is None:
        return None
    if ref.kind == "env":
        return os.environ.get(ref.name)
    return None  # a Kubernetes Secret: only pods read it


def kfp_endpoint(plan: Plan, options: KubeflowApplyOptions) -> tuple[str, str | None]:
    """(host, token) from flags, the environment, or the spec's references."""
    settings = plan.targets.kubeflow
    assert settings is not None
    host = options.kfp_host or os.environ.get("KF_PIPELINES_ENDPOINT") or settings.pipelines_host
    if not host:
        raise _error(
            "no KFP endpoint to apply to",
            ("targets", "kubeflow", "pipelines_host"),
            "pass --kfp-host, set KF_PIPELINES_ENDPOINT, or set targets.kubeflow.pipelines_host",
            "kubeflow_no_endpoint",
        )
    token = (
        options.kfp_token
        or os.environ.get("KF_PIPELINES_TOKEN")
        or _resolve(settings.pipelines_token)
    )
    return host, token


def manifests(files: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of the compiled files, in apply order."""
    docs = [
        doc
        for rel, text in files.items()
        if rel.endswith(".yaml")
        and rel != "pipeline.yaml"
        and rel != "rollout/rollback.yaml"
        and not rel.startswith("rollout/step-")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    order = list(KINDS)
    return sorted(docs, key=lambda d: order.index(d["kind"]))


def object_path(doc: dict[str, Any]) -> str:
    """The REST path of one namespaced object."""
    prefix, plural = KINDS[doc["kind"]]
    meta = doc["metadata"]
    return f"/{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def server_side_apply(api: Any, doc: dict[str, Any]) -> None:
    """PATCH application/apply-patch+yaml, fieldManager=specml, force (kubernetes client)."""
    api.call_api(
        object_path(doc),
        "PATCH",
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=doc,
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


def _kfp_cron(cron: str) -> str:
    return cron if cron.startswith("@") else f"0 {cron}"


def _apply_pipeline(
    plan: Plan, pipeline: Path, options: KubeflowApplyOptions, report: ApplyReport
) -> None:
    settings = plan.targets.kubeflow
    assert settings is not None
    name, version = plan.system.name, f"{plan.system.name}-{short_hash(plan)}"
    crons = [t.cron for t in (plan.retraining.triggers if plan.retraining else ()) if t.cron]
    if options.dry_run:
        report.actions.append(f"kfp: upload pipeline '{name}' version '{version}'")
        report.actions.append(f"kfp: start run '{name}-{short_hash(plan)}' in experiment '{name}'")
        report.actions.append(f"kfp: delete recurring runs named '{name}{RETRAIN_PREFIX}*'")
        report.actions += [
            f"kfp: create recurring run '{name}{RETRAIN_PREFIX}{i}' cron '{_kfp_cron(c)}'"
            for i, c in enumerate(crons)
        ]
        return
    import kfp

    host, token = kfp_endpoint(plan, options)
    # kfp prints links on stdout; machine-readable output stays clean
    with contextlib.redirect_stdout(sys.stderr):
        client = kfp.Client(host=host, existing_token=token, namespace=settings.namespace)
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            created = client.upload_pipeline(str(pipeline), pipeline_name=name)
            pipeline_id = created.pipeline_id
            report.actions.append(f"kfp: uploaded pipeline '{name}' ({pipeline_id})")
        existing = client.list_pipeline_versions(pipeline_id, page_size=100).pipeline_versions or []
        same = [v for v in existing if v.display_name == version]
        if same:
            version_id = same[0].pipeline_version_id
            report.actions.append(f"kfp: version '{version}' exists ({version_id})")
        else:
            uploaded = client.upload_pipeline_version(
                str(pipeline), version, pipeline_id=pipeline_id
            )
            version_id = uploaded.pipeline_version_id
            report.actions.append(f"kfp: uploaded version '{version}' ({version_id})")
        experiment = client.create_experiment(name, namespace=settings.namespace)
        run = client.run_pipeline(
            experiment.experiment_id,
            f"{name}-{short_hash(plan)}",
            params=options.run_parameters or None,
            pipeline_id=pipeline_id,
            version_id=version_id,
            service_account=settings.service_account,
        )
        report.run_id = run.run_id
        report.actions.append(f"kfp: started run {run.run_id}")
        listed = client.list_recurring_runs(experiment_id=experiment.experiment_id, page_size=100)
        for old in listed.recurring_runs or []:
            if old.display_name.startswith(f"{name}{RETRAIN_PREFIX}"):
                client.delete_recurring_run(old.recurring_run_id)
                report.actions.append(f"kfp: deleted recurring run '{old.display_name}'")
        for i, cron in enumerate(crons):
            job = f"{name}{RETRAIN_PREFIX}{i}"
            client.create_recurring_run(
                experiment.experiment_id,
                job,
                cron_expression=_kfp_cron(cron),
                pipeline_id=pipeline_id,
                version_id=version_id,
                max_concurrency=1,
                no_catchup=True,
                params=options.run_parameters or None,
                service_account=settings.service_account,
            )
            report.actions.append(f"kfp: recurring run '{job}' cron '{_kfp_cron(cron)}'")


def _from_base(options: ApplyOptions | None) -> KubeflowApplyOptions:
    """The CLI's target-neutral options: `--dry-run` and `--endpoint pipelines=URL`,
    `--endpoint kubernetes=URL`."""
    if options is None:
        return KubeflowApplyOptions()
    endpoints = dict(options.endpoints)
    return KubeflowApplyOptions(
        force=options.force,
        console=options.console,
        quiet=options.quiet,
        spec_yaml=options.spec_yaml,
        dry_run=options.dry_run,
        endpoints=endpoints,
        kfp_host=endpoints.get("pipelines"),
        kube_api=endpoints.get("kubernetes"),
    )


def apply_plan(plan: Plan, files: dict[str, str], options: ApplyOptions | None) -> ApplyReport:
    """Upload and start the pipeline, set the schedules, server-side-apply the manifests."""
    from specml.runtime.rollout.kubernetes import api_client

    opts = options if isinstance(options, KubeflowApplyOptions) else _from_base(options)
    report = ApplyReport(dry_run=opts.dry_run)
    with tempfile.TemporaryDirectory(prefix="specml-kfp-") as tmp:
        pipeline = Path(tmp) / "pipeline.yaml"
        pipeline.write_text(files["pipeline.yaml"], encoding="utf-8")
        _apply_pipeline(plan, pipeline, opts, report)
    api = None if opts.dry_run else api_client(opts.kube_api)
    for doc in manifests(files):
        what = (
            f"kubernetes: server-side apply {doc['kind']} {doc['metadata']['namespace']}/"
            f"{doc['metadata']['name']} (field manager {FIELD_MANAGER})"
        )
        if api is not None:
            server_side_apply(api, doc)
        report.actions.append(what)
    return report
