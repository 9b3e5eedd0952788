"""Run the SageMaker Pulumi program under `pulumi.runtime.set_mocks` and record what it creates."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
from specml.compiler.ir import Plan

ACCOUNT = "123456789012"


@dataclass
class Created:
    """One resource the program registered: its type token, logical name and inputs."""

    type: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that record every new resource and give back plausible computed outputs."""

    region: str = "eu-west-1"
    stack_outputs: dict[str, Any] = field(default_factory=dict)
    created: list[Created] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        inputs = dict(args.inputs)
        state = dict(inputs)
        name = args.name
        t = args.typ
        if t == "pulumi:pulumi:StackReference":
            state["outputs"] = self.stack_outputs
        elif t == "aws:s3/bucket:Bucket":
            state.setdefault("bucket", f"{name}-0a1b2c3")
            state["arn"] = f"arn:aws:s3:::{state['bucket']}"
        elif t == "aws:iam/role:Role":
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:role/{name}-0a1b2c3"
        elif t == "aws:sagemaker/endpointConfiguration:EndpointConfiguration":
            state.setdefault("name", f"{inputs.get('namePrefix', name)}0a1b2c3")
        elif t == "aws:sns/topic:Topic":
            state["arn"] = f"arn:aws:sns:{self.region}:{ACCOUNT}:{name}"
        if t.startswith("aws:sagemaker/") or t.startswith("aws:cloudwatch/"):
            kind = t.split("/")[1].split(":")[0]
            state.setdefault("arn", f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:{kind}/{name}")
        self.created.append(Created(t, name, inputs, state))
        return f"{name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/test",
                "userId": "AIDTEST",
                "id": ACCOUNT,
            }
        if args.token == "aws:index/getPartition:getPartition":
            return {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "id": "aws",
                "reverseDnsSuffix": "com.amazonaws",
            }
        return {}

    # ---- queries used by the tests ----------------------------------------------------------
    def of_type(self, type_token: str) -> list[Created]:
        return [c for c in self.created if c.type == type_token]

    def execution(self, type_token: str) -> Created:
        """The SageMaker execution role (or its policy), among the loop's service roles."""
        found = [c for c in self.of_type(type_token) if c.name.endswith("-sagemaker-exec")]
        assert len(found) == 1, f"expected one execution {type_token}, got {found}"
        return found[0]

    def one(self, type_token: str) -> Created:
        found = self.of_type(type_token)
        assert len(found) == 1, f"expected one {type_token}, got {[c.name for c in found]}"
        return found[0]


def _fresh_event_loop() -> None:
    """Pulumi's mocks run on `asyncio.get_event_loop()`; an earlier test's `asyncio.run()` leaves
    the main thread with none (Python 3.11 then raises), so each program gets its own loop."""
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(
    plan_json: str,
    config: dict[str, str] | None = None,
    secret_keys: tuple[str, ...] = (),
    stack_outputs: dict[str, Any] | None = None,
    region: str = "eu-west-1",
) -> tuple[RecordingMocks, dict[str, Any]]:
    """Run `program.build(plan_json)` under mocks; return the recorder and resolved outputs."""
    from specml.targets.sagemaker.naming import Names
    from specml.targets.sagemaker.program import build

    project = Names.for_plan(Plan.from_json(plan_json)).project
    mocks = RecordingMocks(region=region, stack_outputs=stack_outputs or {})
    _fresh_event_loop()
    pulumi.runtime.set_mocks(mocks, project=project, stack="test", preview=False)
    full = {f"{project}:{k}": v for k, v in (config or {}).items()}
    pulumi.runtime.set_all_config(full, [f"{project}:{k}" for k in secret_keys])
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def _run() -> pulumi.Output[Any]:
        outputs = build(plan_json)
        return pulumi.Output.all(**outputs).apply(resolved.update)

    _run()
    return mocks, resolved


def run_project(
    project_dir: Path,
    config: dict[str, str] | None = None,
    secret_keys: tuple[str, ...] = (),
    stack_outputs: dict[str, Any] | None = None,
    region: str = "eu-west-1",
) -> tuple[RecordingMocks, dict[str, Any]]:
    """Run a compiled project folder the way Pulumi's Python host does (`runpy.run_path(dir)`,
    which executes its `__main__.py`) under mocks; return the recorder and the stack outputs."""
    import runpy
    from unittest import mock

    import yaml

    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"]
    mocks = RecordingMocks(region=region, stack_outputs=stack_outputs or {})
    _fresh_event_loop()
    pulumi.runtime.set_mocks(mocks, project=project, stack="test", preview=False)
    full = {f"{project}:{k}": v for k, v in (config or {}).items()}
    pulumi.runtime.set_all_config(full, [f"{project}:{k}" for k in secret_keys])
    exported: dict[str, Any] = {}
    resolved: dict[str, Any] = {}
    real_export = pulumi.export

    def record(name: str, value: Any) -> None:
        exported[name] = value
        real_export(name, value)

    @pulumi.runtime.test
    def _run() -> pulumi.Output[Any]:
        with mock.patch.object(pulumi, "export", record):
            runpy.run_path(str(project_dir), run_name="__main__")
        return pulumi.Output.all(**exported).apply(resolved.update)

    _run()
    return mocks, resolved


# ---- plans used across the tests -------------------------------------------------------------
SPECS_DIR = Path(__file__).resolve().parents[3] / "specs"
GOLDEN_SPECS = ("churn", "fraud", "demand")
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/specml-runtime:1.0"
KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
WEBHOOK = "https://hooks.example.com/fraud"
STACK_ROLE = "arn:aws:iam::123456789012:role/ml-base-exec"

# Config each example spec needs to run (the values a platform engineer would `pulumi config set`).
CONFIG: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "churn": ({"image": IMAGE}, ()),
    "fraud": (
        {"image": IMAGE, "kmsKeyArn": KMS_ARN, "alertWebhookUrl": WEBHOOK},
        ("kmsKeyArn", "alertWebhookUrl"),
    ),
    "demand": ({"image": IMAGE}, ()),
}


@cache
def plan_for(spec: str) -> Plan:
    """The Plan of an example spec (cached: lowering is the slow part)."""
    from specml.compiler.api import plan_file

    return plan_file(SPECS_DIR / f"{spec}.yaml")


def run_spec(spec: str, plan: Plan | None = None) -> tuple[RecordingMocks, dict[str, Any]]:
    """Run the program for an example spec (or a variant of its Plan) with its config."""
    config, secrets = CONFIG[spec]
    return run_program(
        (plan or plan_for(spec)).to_json(),
        config,
        secrets,
        stack_outputs={"executionRoleArn": STACK_ROLE},
    )


def without_shadow(plan: Plan) -> Plan:
    """The same Plan with its leading shadow step removed (re-indexed)."""
    assert plan.rollout is not None
    steps = [s for s in plan.rollout.steps if s.kind != "shadow"]
    steps = [s.model_copy(update={"index": i}) for i, s in enumerate(steps)]
    return plan.model_copy(
        update={"rollout": plan.rollout.model_copy(update={"steps": tuple(steps)})}
    )


_SIG_KEY, _SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def secret_value(value: Any) -> Any:
    """The plaintext of a value the mocks received as a Pulumi secret; fails if it was plain."""
    assert isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG, (
        f"not a secret: {value!r}"
    )
    return value["value"]


def plain(value: Any) -> Any:
    """`value` with every secret wrapper removed (for asserting on its shape)."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
