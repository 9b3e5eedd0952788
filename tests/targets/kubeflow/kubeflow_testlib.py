"""Test helpers: compile a spec for kubeflow, read the compiled PipelineSpec and its task graph."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from specml.compiler.api import plan_file
from specml.compiler.ir import Plan

ROOT = Path(__file__).resolve().parents[3]
SPECS = ROOT / "specs"
GOLDENS = Path(__file__).parent / "goldens"
GOLDEN_SPECS = ("churn", "fraud", "demand")
# specs/demand.yaml has no targets.kubeflow section: its goldens compile it with this overlay.
OVERLAYS: dict[str, tuple[str, ...]] = {
    "demand": (str(Path(__file__).parent / "overlays" / "demand-kubeflow.yaml"),),
}


@cache
def plan_for(name: str, overrides: tuple[str, ...] = ()) -> Plan:
    """The Plan of an example spec plus its kubeflow overlay, if any (cached: lowering is pure)."""
    return plan_file(SPECS / f"{name}.yaml", overlays=OVERLAYS.get(name, ()), overrides=overrides)


def bare_plan(name: str) -> Plan:
    """The Plan of an example spec exactly as written (no test overlay)."""
    return plan_file(SPECS / f"{name}.yaml")


@cache
def rendered(name: str) -> dict[str, str]:
    """Every file the kubeflow target writes for an example spec."""
    from specml.targets.kubeflow.target import KubeflowTarget

    return KubeflowTarget().render(plan_for(name))


def pipeline_dict(text: str) -> dict[str, Any]:
    """The compiled pipeline YAML as a dict."""
    return yaml.safe_load(text)


def pipeline_proto(text: str) -> Any:
    """The compiled pipeline as a PipelineSpec protobuf (what kfp.local and the backend read)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    return json_format.ParseDict(pipeline_dict(text), pipeline_spec_pb2.PipelineSpec())


def task_graph(spec: dict[str, Any]) -> tuple[dict[str, set[str]], set[str]]:
    """step (display) name -> upstream step names, and the names of the tasks inside the gate.

    Upstreams are `dependentTasks` plus artifact producers; inside a condition group, inputs that
    come in through the group (`componentInputArtifact`) are traced back to their producer, and
    the producer of the group's condition is an upstream of every task in it.
    """
    components = spec["components"]
    graph: dict[str, set[str]] = {}
    gated: set[str] = set()
    names: dict[str, str] = {}

    def walk(
        dag: dict[str, Any], outer: dict[str, str], in_gate: bool, implied: set[str] = frozenset()
    ) -> None:
        for key, task in dag["tasks"].items():
            names[key] = task["taskInfo"]["name"]
        for key, task in dag["tasks"].items():
            comp = components[task["componentRef"]["name"]]
            artifacts = task.get("inputs", {}).get("artifacts", {})
            channel_producers = {
                channel: spec_["taskOutputArtifact"]["producerTask"]
                for channel, spec_ in artifacts.items()
                if "taskOutputArtifact" in spec_
            }
            if "dag" in comp:  # a condition group: its inner tasks see these as channels
                params = task.get("inputs", {}).get("parameters", {})
                gate_producers = {
                    p["taskOutputParameter"]["producerTask"]
                    for p in params.values()
                    if "taskOutputParameter" in p
                }
                walk(
                    comp["dag"],
                    {**outer, **channel_producers},
                    in_gate=True,
                    implied=gate_producers,
                )
                continue
            ups = set(task.get("dependentTasks", [])) | implied
            for art in artifacts.values():
                if "taskOutputArtifact" in art:
                    ups.add(art["taskOutputArtifact"]["producerTask"])
                elif "componentInputArtifact" in art:
                    ups.add(outer[art["componentInputArtifact"]])
            graph[key] = ups
            if in_gate:
                gated.add(key)

    walk(spec["root"]["dag"], {}, in_gate=False)
    by_name = {names[k]: {names[u] for u in ups} for k, ups in graph.items()}
    return by_name, {names[k] for k in gated}


def plan_graph(plan: Plan) -> dict[str, set[str]]:
    """step name -> upstream step names, from the IR (depends_on plus input producers)."""
    return {
        s.name: set(s.depends_on) | {ref.partition(".")[0] for ref in s.inputs.values()}
        for s in plan.steps
    }
