"""Plan.steps -> a KFP v2 pipeline (real kfp SDK), compiled to deterministic YAML text."""

# No `from __future__ import annotations` here: kfp reads the pipeline function's annotations
# as real types.

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan, Step
from specml.targets.kubeflow.components import (
    GATE_OUTPUT,
    GATE_PRODUCER_KIND,
    GATE_VALUE,
    make_component,
)

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_DATA_DIR = "."


def default_workdir(plan: Plan) -> str:
    """Where steps keep shared state unless the run says otherwise (kfp.local shares it)."""
    return f"/tmp/specml/{plan.system.name}"


def compact_plan_json(plan: Plan) -> str:
    """The Plan as one line of canonical JSON: the pipeline's `plan_json` default.

    One line because kfp copies parameter defaults into the YAML's header comment, where a
    multi-line string would spill out of the comment.
    """
    return json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def step_retries(plan: Plan, step: Step) -> int:
    """A step is retried as often as the step or the kubeflow settings ask, whichever is more."""
    settings = plan.targets.kubeflow
    return max(step.retries, settings.retries if settings else 0)


def _gate_producer(plan: Plan) -> Step:
    producers = [s for s in plan.steps if s.kind == GATE_PRODUCER_KIND]
    if len(producers) != 1:
        raise TargetError(
            [
                Diagnostic(
                    f"steps conditioned on '{GATE_VALUE}' need exactly one "
                    f"'{GATE_PRODUCER_KIND}' step, found {len(producers)}",
                    path=("steps",),
                    stage="target",
                    code="kubeflow_gate",
                )
            ]
        )
    return producers[0]


def _configure(task: Any, plan: Plan, step: Step) -> None:
    """Resources, accelerator, retries and caching of one task, from its IR step."""
    res = step.resources
    if res.cpu:
        task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu)
    if res.memory:
        task.set_memory_request(res.memory).set_memory_limit(res.memory)
    if res.gpu_count > 0 and res.accelerator in ("gpu", "auto"):
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(res.gpu_count)
    retries = step_retries(plan, step)
    if retries > 0:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_caching_options(enable_caching=step.cacheable)
    task.set_display_name(step.name)


def _check_condition_order(plan: Plan) -> None:
    """Unconditioned steps may not consume conditioned ones: KFP cannot express that."""
    conditioned = {s.name for s in plan.steps if s.condition}
    for step in plan.steps:
        if step.condition:
            continue
        upstream = set(step.depends_on) | {ref.split(".")[0] for ref in step.inputs.values()}
        bad = sorted(upstream & conditioned)
        if bad:
            raise TargetError(
                [
                    Diagnostic(
                        f"step '{step.name}' runs unconditionally but depends on gated step(s) "
                        f"{bad}",
                        path=("steps",),
                        stage="target",
                        code="kubeflow_condition",
                    )
                ]
            )


def build_pipeline(plan: Plan) -> Any:
    """The kfp GraphComponent for the Plan's step DAG, the gate as a `dsl.If` group."""
    from kfp import dsl

    settings = plan.targets.kubeflow
    assert settings is not None  # target.check reports this before we get here
    _check_condition_order(plan)
    components = {s.name: make_component(plan, s, settings.image) for s in plan.steps}
    gate_step = _gate_producer(plan) if any(s.condition for s in plan.steps) else None
    plan_text = compact_plan_json(plan)
    workdir_default = default_workdir(plan)

    def pipeline(
        plan_json: str = plan_text,
        workdir: str = workdir_default,
        data_dir: str = DEFAULT_DATA_DIR,
        tracking_uri: str = "",
    ) -> None:
        tasks: dict[str, Any] = {}
        runtime_args = {
            "plan_json": plan_json,
            "workdir": workdir,
            "data_dir": data_dir,
            "tracking_uri": tracking_uri,
            "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        }

        def add(step: Step) -> None:
            args = dict(runtime_args)
            for input_name, ref in sorted(step.inputs.items()):
                producer, _, output_name = ref.partition(".")
                args[input_name] = tasks[producer].outputs[output_name]
            task = components[step.name](**args)
            data_producers = {ref.partition(".")[0] for ref in step.inputs.values()}
            for upstream in step.depends_on:
                if upstream not in data_producers:
                    task.after(tasks[upstream])
            _configure(task, plan, step)
            tasks[step.name] = task

        ungated = [s for s in plan.steps if not s.condition]
        gated = [s for s in plan.steps if s.condition]
        for step in ungated:
            add(step)
        if gated and gate_step is not None:
            gate = tasks[gate_step.name].outputs[GATE_OUTPUT] == True  # noqa: E712 - a KFP condition
            with dsl.If(gate, name="gate-passed"):
                for step in gated:
                    add(step)

    pipeline.__name__ = plan.system.name.replace("-", "_")
    return dsl.pipeline(name=plan.system.name, description=plan.system.description or None)(
        pipeline
    )


_SDK_VERSION = re.compile(r"^sdkVersion: kfp-\S+$", re.MULTILINE)


def normalise_versions(text: str) -> str:
    """Replace the kfp SDK version line, the only version-dependent line, for golden compares."""
    return _SDK_VERSION.sub("sdkVersion: kfp-<VERSION>", text)


def compile_pipeline(plan: Plan) -> str:
    """Compile the Plan's pipeline with `kfp.compiler.Compiler` and return the YAML text."""
    from kfp import compiler

    pipeline_func = build_pipeline(plan)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline_func=pipeline_func, package_path=str(package))
        return package.read_text()
