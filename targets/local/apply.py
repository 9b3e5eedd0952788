"""`LocalTarget.apply`: run the Plan's steps in DAG order, record state.json, promote.

Promotion policy (after every gate passed and the skew check agreed):
- no champion yet, or the spec has no `rollout`: the new version becomes `champion` at once and is
  published to `<workdir>/serving/current/` (what `specml serve` loads);
- a champion exists and `rollout` is configured: the new version stays `challenger` and is published
  to `<workdir>/serving/challenger/`; the rollout (`specml rollout promote`, or the controller)
  moves the champion alias with `specml.runtime.steps.register.promote`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, SpecError, TargetError
from specml.compiler.ir import ArtifactSpec, Plan, Step
from specml.runtime.layout import Workdir
from specml.targets import base
from specml.targets.local.errors import GateFailed
from specml.targets.local.retention import prune_online_stores
from specml.targets.local.skew import check_served_skew
from specml.targets.local.state import (
    is_up_to_date,
    load_state,
    save_state,
    source_hashes,
    workdir,
)


@dataclass
class ApplyOptions(base.ApplyOptions):
    """The interface's options, plus `serve`: serve the champion after the apply (blocking)."""

    serve: bool = False


@dataclass
class ApplyResult:
    """What an apply did."""

    up_to_date: bool
    run_id: str | None
    workdir: Path
    model_name: str
    model_version: str | None = None
    promoted: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    onnx_max_abs_diff: float | None = None
    skew: dict[str, Any] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    serving_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-able summary for the CLI."""
        if self.up_to_date:
            return {
                "status": "up to date",
                "model": self.model_name,
                "aliases": self.aliases,
                "workdir": str(self.workdir),
            }
        out = {k: v for k, v in asdict(self).items() if k not in ("skew", "gates")}
        out["status"] = "applied"
        out["skew_max_abs_diff"] = self.skew.get("offline_vs_online_max_abs_diff")
        out["gates"] = [
            f"{g['gate']}: {g['value']:.4f} (margin {g['margin']:+.4f})" for g in self.gates
        ]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def artifact_path(folder: Path, artifact: ArtifactSpec) -> Path:
    """Metrics are JSON files, datasets parquet files, models and other artefacts folders."""
    if artifact.type == "Metrics":
        return folder / f"{artifact.name}.json"
    if artifact.type == "Dataset":
        return folder / f"{artifact.name}.parquet"
    return folder / artifact.name


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def printer(options: base.ApplyOptions) -> Any:
    """Where progress goes: the given console, else stderr (nothing when quiet)."""
    if options.console is not None:
        return options.console.print
    if options.quiet:
        return lambda *a, **k: None
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print


def release_memory() -> None:
    """Give the memory a finished step freed back to the system, so that steps do not stack up:
    glibc keeps freed heap for reuse, and an apply's peak RSS would be the sum of its steps'."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): no trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def registry_aliases(plan: Plan, ctx: Any) -> dict[str, str]:
    """alias -> version for the registered model (empty when nothing is registered)."""
    if ctx.tracking_uri is None and not Workdir(Path(ctx.workdir)).mlflow_db.exists():
        return {}
    from mlflow.exceptions import MlflowException
    from specml.runtime.steps.tracking import client

    try:
        model = client(ctx).get_registered_model(plan.registry.name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in sorted(model.aliases.items())}


def up_to_date_result(plan: Plan, wd: Path, state: dict[str, Any]) -> ApplyResult:
    """The result of an apply with nothing to do."""
    aliases = state.get("aliases", {})
    return ApplyResult(
        up_to_date=True,
        run_id=state.get("last_run_id"),
        workdir=wd,
        model_name=plan.registry.name,
        aliases=aliases,
        model_version=aliases.get("champion"),
        serving_dir=Workdir(wd).current,
    )


class ApplyRun:
    """One apply's steps, artefacts and record (state.json is written whatever the outcome)."""

    def __init__(
        self, plan: Plan, base_dir: Path, options: base.ApplyOptions, say: Any, data_hash: str
    ) -> None:
        from specml.runtime.contract import StepContext

        self.plan, self.base, self.say = plan, base_dir, say
        self.wd = Workdir(workdir(plan, base_dir))
        self.state: dict[str, Any] = load_state(self.wd.root) or {}
        self.data_hash = data_hash
        self.run_id = new_run_id()
        self.run_dir = self.wd.run(self.run_id)
        self.ctx = StepContext(
            workdir=self.wd.root, data_dir=base_dir, run_id=self.run_id, spec_yaml=options.spec_yaml
        )
        self.result = ApplyResult(
            up_to_date=False,
            run_id=self.run_id,
            workdir=self.wd.root,
            model_name=plan.registry.name,
        )
        self.record: dict[str, Any] = {
            "run_id": self.run_id,
            "started": datetime.now(UTC).isoformat(),
            "spec_hash": plan.spec_hash,
            "data_hash": self.data_hash,
        }
        self.artifacts: dict[str, Path] = {}
        self.values: dict[str, Any] = {}

    def run(self) -> ApplyResult:
        """Every step, then promotion; the state records `applied`, `gate_failed` or `failed`."""
        try:
            for step in self.plan.steps:
                self.run_step(step)
            self.promote()
        except GateFailed:
            self.finish("gate_failed")
            raise
        except BaseException:
            self.finish("failed")
            raise
        self.finish("applied")
        self.result.aliases = registry_aliases(self.plan, self.ctx)
        return self.result

    def run_step(self, step: Step) -> None:
        """Run one step; a library failure inside it becomes a TargetError naming the step."""
        from specml.runtime.contract import run_step

        inputs = {name: self.artifacts[ref] for name, ref in step.inputs.items()}
        outputs = {a.name: artifact_path(self.run_dir / step.name, a) for a in step.outputs}
        started = time.perf_counter()
        self.say(f"[bold]{step.name}[/] ...")
        try:
            outcome = run_step(step.kind, self.plan, self.ctx, inputs, outputs)
        except SpecError:
            raise
        except Exception as exc:
            raise TargetError(
                [
                    Diagnostic(
                        f"step {step.name} failed: {type(exc).__name__}: {exc}",
                        stage="target",
                        code="step_failed",
                        hint=f"artefacts so far are in {self.run_dir}",
                    )
                ]
            ) from exc
        release_memory()
        seconds = round(time.perf_counter() - started, 3)
        self.result.step_seconds[step.name] = seconds
        self.say(f"  [green]done[/] {step.name} in {seconds:.1f}s")
        for a in step.outputs:
            self.artifacts[f"{step.name}.{a.name}"] = outputs[a.name]
        self.values[step.name] = outcome.values
        self.after_step(step, outcome)

    def after_step(self, step: Step, outcome: Any) -> None:
        """What the apply takes from a step: gates, the skew check, the registered version."""
        result, record = self.result, self.record
        if step.kind == "evaluate":
            result.metrics = dict(outcome.metrics)
            result.gates = list(outcome.values.get("gates", []))
            record["metrics"] = result.metrics
            if not outcome.values.get("gate_passed", False):
                raise GateFailed.from_gates(result.gates, self.run_id)
        elif step.kind == "export_onnx":
            result.onnx_max_abs_diff = outcome.values.get("onnx_max_abs_diff")
            result.skew = check_served_skew(self.plan, self.artifacts, self.say)
            record["skew"] = result.skew
        elif step.kind == "register":
            result.model_version = str(outcome.values["model_version"])
            record["model_version"] = result.model_version
            record["mlflow_run_id"] = outcome.values.get("mlflow_run_id")

    def promote(self) -> None:
        """Champion now (first model, or no rollout configured), else leave it to the rollout."""
        from specml.runtime.steps.register import promote, publish

        plan, result = self.plan, self.result
        if result.model_version is None:
            return
        had_champion = (
            self.values.get("evaluate", {}).get("champion") is not None
            or registry_aliases(plan, self.ctx).get(plan.registry.champion_alias) is not None
        )
        if had_champion and plan.rollout is not None:
            result.serving_dir = publish(plan, self.ctx, result.model_version, "challenger")
            result.notes.append(
                f"v{result.model_version} is the challenger; the {plan.rollout.strategy} rollout "
                "promotes it (specml rollout promote)"
            )
            self.say(f"  challenger v{result.model_version} published to {result.serving_dir}")
            return
        result.serving_dir = promote(plan, self.ctx, result.model_version)
        result.promoted = True
        self.say(f"  champion v{result.model_version} published to {result.serving_dir}")

    def finish(self, status: str) -> None:
        """Record this attempt in state.json (the Plan and hashes only when it applied)."""
        plan, state, result = self.plan, self.state, self.result
        self.record.update(
            status=status, finished=datetime.now(UTC).isoformat(), step_seconds=result.step_seconds
        )
        new_state = {
            **state,
            "system": plan.system.name,
            "status": status,
            "last_run_id": self.run_id,
            "runs": [*state.get("runs", []), self.record],
        }
        if status == "applied":
            new_state.update(
                spec_hash=plan.spec_hash,
                data_hash=self.data_hash,
                source_hashes=source_hashes(plan, self.base),
                plan=plan.model_dump(mode="json"),
            )
        new_state["aliases"] = registry_aliases(plan, self.ctx) or state.get("aliases", {})
        versions = {*state.get("model_versions", [])}
        if result.model_version:
            versions.add(result.model_version)
        new_state["model_versions"] = sorted(versions, key=int)
        if result.serving_dir is not None and result.model_version is not None:
            new_state["serving"] = {
                **state.get("serving", {}),
                result.serving_dir.name: {
                    "version": result.model_version,
                    "path": str(result.serving_dir),
                },
            }
        save_state(self.wd.root, new_state)


def apply(plan: Plan, base_dir: Path, options: base.ApplyOptions) -> ApplyResult:
    """Run every step unless the spec and data are unchanged (or `force`); see the module doc."""
    from specml.runtime.steps.common import data_hash

    say = printer(options)
    base_dir = Path(base_dir).resolve()
    wd = workdir(plan, base_dir)
    state = load_state(wd) or {}
    current = data_hash(plan, base_dir)
    if not options.force and is_up_to_date(state, plan, current):
        say(f"[green]up to date[/]: {plan.system.name} (spec and data unchanged)")
        return up_to_date_result(plan, wd, state)
    result = ApplyRun(plan, base_dir, options, say, current).run()
    removed = prune_online_stores(plan, base_dir)
    if removed:
        say(f"  removed {len(removed)} old online store(s) (targets.local.keep_online_stores)")
    return result
