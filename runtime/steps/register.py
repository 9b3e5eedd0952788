"""register: log lineage and artefacts to the training run, register a version, alias it challenger.

Lineage on the run: plan.json (what ran), spec.yaml (the composed spec, when the runner passes it),
the spec, plan and data hashes and the code version as tags.

`promote` moves the champion alias and publishes that version to `<workdir>/serving/current/`,
the folder the model server reads (model.onnx + serving.json with the registry version).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.layout import Workdir
from specml.runtime.steps.common import data_hash, model_metadata, need, read_json, write_json
from specml.runtime.steps.export import MANIFEST
from specml.runtime.steps.tracking import client, code_version, log_params, run_status, start_run

REGISTERED = "registered_model.json"
TRAINED_ARTIFACT = "trained"  # the model folder as trained (any family), next to the ONNX graph


def _artifact_file(path: Path, name: str) -> Path:
    """A file artifact: the path itself when it names a file (has a suffix), else name inside it."""
    return path if path.suffix else path / name


def register(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
) -> StepResult:
    """Log plan, hashes, code version and artefacts; create a registry version aliased challenger."""

    onnx_dir = need(inputs, "onnx_model", "register")
    model_dir = need(inputs, "model", "register")
    eval_path = inputs.get("eval_metrics")
    meta = model_metadata(model_dir)
    mlflow = client(ctx)
    run_id = meta.get("mlflow_run_id") or start_run(
        plan, ctx, run_name=f"{plan.system.name}-register"
    )
    with run_status(ctx, run_id):
        record = _register(plan, ctx, mlflow, run_id, onnx_dir, model_dir, eval_path, meta)
    write_json(_artifact_file(need(outputs, "registered_model", "register"), REGISTERED), record)
    return StepResult(
        values={
            "model_name": record["name"],
            "model_version": record["version"],
            "mlflow_run_id": run_id,
        }
    )


def class_tags(manifest: dict[str, Any]) -> dict[str, str]:
    """The model's class mapping as tags (run and model version): index order, positive class."""
    if manifest.get("classes") is None:
        return {}
    tags = {"specml.classes": json.dumps(manifest["classes"])}
    if manifest.get("positive_class") is not None:
        tags["specml.positive_class"] = str(manifest["positive_class"])
    return tags


def _register(
    plan: Plan,
    ctx: StepContext,
    mlflow: Any,
    run_id: str,
    onnx_dir: Path,
    model_dir: Path,
    eval_path: Path | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Log lineage and artefacts to the run; create the registry version aliased challenger
    (`meta`: the trained model's metadata)."""
    from mlflow.exceptions import MlflowException

    manifest = read_json(onnx_dir / MANIFEST)
    hashes = {
        "specml.spec_hash": plan.spec_hash,
        "specml.plan_hash": plan_hash(plan),
        "specml.data_hash": data_hash(plan, ctx.data_dir),
    }
    versions = code_version()
    classes = class_tags(manifest)
    for key, value in {
        **hashes,
        **classes,
        **{f"specml.{k}": v for k, v in versions.items()},
    }.items():
        mlflow.set_tag(run_id, key, value)
    log_params(ctx, run_id, {"spec_hash": plan.spec_hash, "plan_hash": hashes["specml.plan_hash"]})
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(plan.to_json())
        mlflow.log_artifact(run_id, str(plan_file), "plan")
        if ctx.spec_yaml:  # the spec as the user wrote it (composed); plan.json is what ran
            spec_file = Path(tmp) / "spec.yaml"
            spec_file.write_text(ctx.spec_yaml, encoding="utf-8")
            mlflow.log_artifact(run_id, str(spec_file), "spec")
    mlflow.log_artifacts(run_id, str(onnx_dir), "model")
    mlflow.log_artifacts(run_id, str(model_dir), TRAINED_ARTIFACT)
    if eval_path is not None and Path(eval_path).exists():
        mlflow.log_artifact(run_id, str(eval_path), "eval")
    name = plan.registry.name
    try:
        mlflow.create_registered_model(
            name, tags={"specml.system": plan.system.name}, description=plan.system.description
        )
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/model"
    from specml.runtime.steps.tuning import version_tags

    version = mlflow.create_model_version(
        name, source, run_id=run_id, tags={**hashes, **classes, **version_tags(meta)}
    )
    mlflow.set_registered_model_alias(name, plan.registry.challenger_alias, version.version)
    return {
        "name": name,
        "version": str(version.version),
        "run_id": run_id,
        "source": source,
        "aliases": [plan.registry.challenger_alias],
        "classes": manifest.get("classes"),
        "positive_class": manifest.get("positive_class"),
        **hashes,
        **versions,
    }


def plan_hash(plan: Plan) -> str:
    """sha256 of the Plan's canonical JSON (the spec_hash covers the spec, this the lowered IR)."""
    import hashlib

    return "sha256:" + hashlib.sha256(plan.to_json().encode()).hexdigest()


def read_registered(path: Path) -> dict[str, Any]:
    """The record register wrote (name, version, run_id, source, hashes)."""
    return read_json(_artifact_file(Path(path), REGISTERED))


def publish(plan: Plan, ctx: StepContext, version: str, slot: str = "current") -> Path:
    """Copy a registered version's model.onnx + serving.json to <workdir>/serving/<slot>, atomically."""
    mlflow = client(ctx)
    mv = mlflow.get_model_version(plan.registry.name, str(version))
    serving = Workdir(Path(ctx.workdir)).serving
    serving.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{slot}-", dir=serving))
    downloaded = Path(mlflow.download_artifacts(mv.run_id, "model", str(staging)))
    manifest = read_json(downloaded / MANIFEST)
    manifest["model_version"] = str(mv.version)
    write_json(downloaded / MANIFEST, manifest)
    target = serving / slot
    old = serving / f".{slot}-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    downloaded.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def promote(plan: Plan, ctx: StepContext, version: str) -> Path:
    """Make a version the champion (registry alias) and publish it to <workdir>/serving/current."""
    mlflow = client(ctx)
    mlflow.set_registered_model_alias(
        plan.registry.name, plan.registry.champion_alias, str(version)
    )
    return publish(plan, ctx, str(version), "current")
