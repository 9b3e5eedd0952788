"""One lightweight KFP component per IR Step: generated Python source that calls `run_step`.

The source is generated (not hand-written per step) because each step has its own artifact
signature; it is registered in `linecache` so the kfp SDK can read it back with `inspect` and
embed it in the compiled YAML, exactly as it would a function written in a file.
"""

from __future__ import annotations

import keyword
import linecache
from collections.abc import Callable
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan, Step

# Pipeline parameters every component receives (the same names as StepContext's fields).
RUNTIME_PARAMS: tuple[str, ...] = ("plan_json", "workdir", "data_dir", "tracking_uri", "run_id")

# The evaluate step's gate decision (StepResult.values["gate_passed"]) leaves the component as
# its single return value, KFP output key `Output`. Not a NamedTuple field named gate_passed:
# kfp.local 2.17's condition evaluator resolves only `<task>-Output` channels, and treats any
# other named output as unresolvable, i.e. the gate would always be closed when run locally.
GATE_VALUE = "gate_passed"
GATE_OUTPUT = "Output"
GATE_PRODUCER_KIND = "evaluate"

_BODY = '''\
    """specml step {step_name!r} ({kind}): a thin shell around specml.runtime.run_step."""
    import math
    from pathlib import Path

    from specml.runtime import StepContext, run_step

    ctx = StepContext(
        workdir=Path(workdir),
        data_dir=Path(data_dir),
        tracking_uri=tracking_uri or None,
        run_id=run_id or None,
    )
    Path(workdir).mkdir(parents=True, exist_ok=True)
    result = run_step(
        {kind!r},
        plan_json,
        ctx,
        inputs={inputs},
        outputs={outputs},
    )
'''

_LOG_METRICS = """\
    for metrics_artifact in [{metrics_outputs}]:
        for metric_name, metric_value in sorted(result.metrics.items()):
            if isinstance(metric_value, (int, float)) and math.isfinite(metric_value):
                metrics_artifact.log_metric(metric_name, float(metric_value))
"""

_GATE_RETURN = """\
    if {gate!r} not in result.values:
        raise RuntimeError("step {step_name!r} did not report {gate!r}")
    return bool(result.values[{gate!r}])
"""


def _python_name(step: Step, name: str, role: str) -> str:
    """Artifact names become Python parameter names: they must be identifiers, free of clashes."""
    if not name.isidentifier() or keyword.iskeyword(name) or name in RUNTIME_PARAMS:
        raise TargetError(
            [
                Diagnostic(
                    f"step '{step.name}' {role} '{name}' cannot be a KFP component parameter",
                    hint=f"artifact names must be Python identifiers other than {RUNTIME_PARAMS}",
                    stage="target",
                    code="kubeflow_artifact_name",
                )
            ]
        )
    return name


def component_function_name(step: Step) -> str:
    """The component function's name; KFP derives `comp-<name>` and `exec-<name>` from it."""
    return step.name.replace("-", "_")


def component_source(plan: Plan, step: Step) -> str:
    """The Python source of the lightweight component for one step (deterministic)."""
    params = [f"    {p}: str," for p in RUNTIME_PARAMS]
    for input_name in sorted(step.inputs):
        producer, _, output_name = step.inputs[input_name].partition(".")
        artifact_type = next(a.type for a in plan.step(producer).outputs if a.name == output_name)
        params.append(f"    {_python_name(step, input_name, 'input')}: Input[{artifact_type}],")
    output_names = set()
    for artifact in step.outputs:
        name = _python_name(step, artifact.name, "output")
        if name in step.inputs:
            raise TargetError(
                [
                    Diagnostic(
                        f"step '{step.name}' has an input and an output both named '{name}'",
                        hint="rename one of them in the IR lowering",
                        stage="target",
                        code="kubeflow_artifact_name",
                    )
                ]
            )
        output_names.add(name)
        params.append(f"    {name}: Output[{artifact.type}],")
    produces_gate = step.kind == GATE_PRODUCER_KIND
    returns = " -> bool" if produces_gate else ""
    inputs = "{" + ", ".join(f"{n!r}: {n}.path" for n in sorted(step.inputs)) + "}"
    outputs = "{" + ", ".join(f"{a.name!r}: {a.name}.path" for a in step.outputs) + "}"
    metrics_outputs = ", ".join(a.name for a in step.outputs if a.type == "Metrics")
    source = f"def {component_function_name(step)}(\n" + "\n".join(params) + f"\n){returns}:\n"
    source += _BODY.format(
        step_name=step.name,
        kind=step.kind,
        inputs=inputs,
        outputs=outputs,
    )
    if metrics_outputs:
        source += _LOG_METRICS.format(metrics_outputs=metrics_outputs)
    if produces_gate:
        source += _GATE_RETURN.format(gate=GATE_VALUE, step_name=step.name)
    return source


def make_component(plan: Plan, step: Step, base_image: str) -> Any:
    """Build the kfp PythonComponent for one step from its generated source."""
    from kfp import dsl

    source = component_source(plan, step)
    filename = f"<specml-kfp-component-{plan.system.name}-{step.name}>"
    # mtime None: linecache.checkcache keeps the entry although no such file exists.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {}
    exec(  # noqa: S102 - our own generated, deterministic source
        compile("from kfp.dsl import *\n", filename + "-prelude", "exec", dont_inherit=True),
        namespace,
    )
    # dont_inherit: this module's `from __future__ import annotations` would turn the
    # annotations into strings, which kfp cannot read as types.
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102
    func: Callable[..., Any] = namespace[component_function_name(step)]
    return dsl.component(
        func,
        base_image=base_image,
        packages_to_install=[],
        install_kfp_package=False,  # the runtime image ships specml[kubeflow], kfp included
    )
