"""Map the Plan's rollout onto SageMaker deployment guardrails, saying what is approximated.

SageMaker blue/green routing has three shapes: ALL_AT_ONCE, CANARY (one step, then the rest)
and LINEAR (equal steps). Wait intervals are 0..3600 s, a canary is at most 50% of the green
fleet, a linear step 10..50%, and the whole deployment may run 600..28800 s. Anything in the
spec's rollout that does not fit is approximated and reported as a warning Diagnostic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan, RolloutStep
from specml.targets.sagemaker.diagnostics import unsupported

MAX_WAIT_S = 3600
MAX_TERMINATION_WAIT_S = 3600
MIN_EXECUTION_TIMEOUT_S = 600
MAX_EXECUTION_TIMEOUT_S = 28800
PROVISIONING_ALLOWANCE_S = 1800  # time to bring up the green fleet before the first shift
MAX_CANARY_PERCENT = 50
LINEAR_PERCENT_RANGE = (10, 50)

RoutingType = Literal["ALL_AT_ONCE", "CANARY", "LINEAR"]


@dataclass(frozen=True)
class Shadow:
    """A shadow variant mirroring `sample_percent` of requests to the challenger."""

    sample_percent: float
    duration_seconds: int


@dataclass(frozen=True)
class TrafficRouting:
    """The blue/green update policy the Endpoint gets."""

    type: RoutingType
    wait_interval_seconds: int
    step_percent: int | None  # canary size (CANARY) or step size (LINEAR), CAPACITY_PERCENT
    termination_wait_seconds: int
    maximum_execution_timeout_seconds: int
    shadow: Shadow | None


def _warn(message: str, path: tuple[str | int, ...], hint: str | None = None) -> Diagnostic:
    return unsupported(message, path, hint, "sagemaker_rollout_approximated")


def _clamp_wait(seconds: int, path: tuple[str | int, ...], what: str, out: list[Diagnostic]) -> int:
    if seconds > MAX_WAIT_S:
        out.append(
            _warn(
                f"{what} is {seconds} s, SageMaker waits at most {MAX_WAIT_S} s between traffic "
                f"shifts; using {MAX_WAIT_S} s",
                path,
                hint="shorten the hold to 1h, or promote the rest by hand after watching the alarms",
            )
        )
        return MAX_WAIT_S
    return seconds


def _percent(step: RolloutStep, out: list[Diagnostic]) -> int:
    pct = round(step.traffic_percent)
    if not math.isclose(pct, step.traffic_percent):
        out.append(
            _warn(
                f"traffic {step.traffic_percent}% is not a whole percent; using {pct}%",
                ("rollout", "steps", step.index, "traffic"),
            )
        )
    return max(pct, 1)


def _shadow(plan: Plan, out: list[Diagnostic]) -> Shadow | None:
    assert plan.rollout is not None
    steps = plan.rollout.steps
    shadows = [s for s in steps if s.kind == "shadow"]
    for s in shadows:
        if s.index != 0:
            out.append(
                _warn(
                    "only a leading shadow step maps to a shadow production variant; this one is dropped",
                    ("rollout", "steps", s.index, "shadow"),
                    hint="move the shadow step first",
                )
            )
    if not steps or steps[0].kind != "shadow":
        return None
    first = steps[0]
    out.append(
        _warn(
            f"the shadow variant stays until the next `pulumi up`; SageMaker does not end it after "
            f"{first.duration_seconds} s",
            ("rollout", "steps", 0, "shadow"),
            hint="compare the shadow's metrics, then deploy the challenger (README: promote)",
        )
    )
    return Shadow(
        sample_percent=first.shadow_sample_percent, duration_seconds=first.duration_seconds
    )


def _bake_seconds(plan: Plan) -> int:
    """Long enough for an alarm to see `failure_limit` bad analysis intervals."""
    assert plan.rollout is not None
    r = plan.rollout
    return min(MAX_TERMINATION_WAIT_S, r.analysis_interval_seconds * max(r.failure_limit, 1))


def traffic_routing(plan: Plan) -> tuple[TrafficRouting, list[Diagnostic]]:
    """The blue/green policy for the Plan's rollout, and what could not be expressed exactly."""
    out: list[Diagnostic] = []
    if plan.rollout is None:
        return TrafficRouting("ALL_AT_ONCE", 0, None, 0, MIN_EXECUTION_TIMEOUT_S * 3, None), out
    r = plan.rollout
    shadow = _shadow(plan, out)
    traffic = [s for s in r.steps if s.kind == "traffic"]
    partial = [s for s in traffic if s.traffic_percent < 100]
    final = traffic[-1] if traffic else None
    bake = _bake_seconds(plan)
    termination = bake
    if final is not None and final.traffic_percent >= 100 and final.duration_seconds:
        termination = min(final.duration_seconds, MAX_TERMINATION_WAIT_S)
        if final.duration_seconds > MAX_TERMINATION_WAIT_S:
            out.append(
                _warn(
                    f"hold after 100% is {final.duration_seconds} s; SageMaker keeps the old fleet at "
                    f"most {MAX_TERMINATION_WAIT_S} s",
                    ("rollout", "steps", final.index, "hold"),
                )
            )

    kind: RoutingType
    step_pct: int | None = None
    if r.strategy == "blue_green" or not partial:
        kind, wait, shifts = "ALL_AT_ONCE", bake, 1
        for s in partial:
            out.append(
                _warn(
                    f"blue_green shifts all traffic at once; the {s.traffic_percent}% step is dropped",
                    ("rollout", "steps", s.index),
                )
            )
    else:
        pcts = [_percent(s, out) for s in partial]
        holds = [s.duration_seconds for s in partial]
        first = partial[0]
        equal = all(p == pcts[0] * (i + 1) for i, p in enumerate(pcts))
        linear_ok = (
            len(pcts) >= 2
            and equal
            and 100 % pcts[0] == 0
            and len(set(holds)) == 1
            and LINEAR_PERCENT_RANGE[0] <= pcts[0] <= LINEAR_PERCENT_RANGE[1]
        )
        wait = _clamp_wait(
            first.duration_seconds,
            ("rollout", "steps", first.index, "hold"),
            f"hold after {pcts[0]}%",
            out,
        )
        if linear_ok:
            kind, step_pct, shifts = "LINEAR", pcts[0], 100 // pcts[0]
        else:
            kind, step_pct, shifts = "CANARY", pcts[0], 2
            if step_pct > MAX_CANARY_PERCENT:
                out.append(
                    _warn(
                        f"a canary is at most {MAX_CANARY_PERCENT}% of the green fleet; using "
                        f"{MAX_CANARY_PERCENT}% instead of {step_pct}%",
                        ("rollout", "steps", first.index, "traffic"),
                    )
                )
                step_pct = MAX_CANARY_PERCENT
            for s in partial[1:]:
                out.append(
                    _warn(
                        f"CANARY routing shifts {step_pct}% then all remaining traffic at once; the "
                        f"{s.traffic_percent:g}% step (hold {s.duration_seconds} s) is dropped",
                        ("rollout", "steps", s.index),
                        hint="use equal steps (e.g. 25/50/75/100 with equal holds) for LINEAR routing",
                    )
                )
        instances = plan.endpoint.min_replicas
        if step_pct * instances < 100:
            out.append(
                _warn(
                    f"SageMaker sizes the {kind.lower()} step in whole instances of the green fleet; "
                    f"with {instances} instance(s), {step_pct}% is less than one instance, so the first "
                    f"shift is at least one instance ({100 // instances}% of capacity)",
                    ("serving", "replicas", "min"),
                    hint=f"set serving.replicas.min to at least {math.ceil(100 / step_pct)} for a "
                    f"{step_pct}% step",
                )
            )
    timeout = PROVISIONING_ALLOWANCE_S + shifts * wait + termination
    if timeout > MAX_EXECUTION_TIMEOUT_S:
        out.append(
            _warn(
                f"the rollout needs about {timeout} s; SageMaker stops a deployment after "
                f"{MAX_EXECUTION_TIMEOUT_S} s",
                ("rollout", "steps"),
            )
        )
    timeout = max(MIN_EXECUTION_TIMEOUT_S, min(MAX_EXECUTION_TIMEOUT_S, timeout))
    return TrafficRouting(kind, wait, step_pct, termination, timeout, shadow), out
