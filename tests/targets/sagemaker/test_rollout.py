"""Rollout -> SageMaker traffic routing, table-driven: what maps exactly, what is reported."""

from __future__ import annotations

import pytest
from sagemaker_testlib import plan_for
from specml.compiler.ir import Plan, RolloutStep
from specml.targets.sagemaker.rollout import traffic_routing


def with_steps(strategy: str, steps: list[tuple[str, float, int]], min_replicas: int = 10) -> Plan:
    """The churn Plan with another rollout: steps are (kind, traffic %, hold/duration seconds)."""
    plan = plan_for("churn")
    assert plan.rollout is not None
    ir_steps = tuple(
        RolloutStep(
            index=i,
            kind=kind,
            traffic_percent=pct if kind == "traffic" else 0.0,
            duration_seconds=hold,
            shadow_sample_percent=100.0 if kind == "shadow" else 0.0,
        )
        for i, (kind, pct, hold) in enumerate(steps)
    )
    rollout = plan.rollout.model_copy(update={"strategy": strategy, "steps": ir_steps})
    endpoint = plan.endpoint.model_copy(update={"min_replicas": min_replicas})
    return plan.model_copy(update={"rollout": rollout, "endpoint": endpoint})


T = "traffic"
CASES = {
    # name: (strategy, steps, expected (type, step %, wait s), diagnostic paths expected)
    "single canary step maps exactly": (
        "canary",
        [(T, 10, 600), (T, 100, 0)],
        ("CANARY", 10, 600),
        [],
    ),
    "equal steps with equal holds are LINEAR": (
        "canary",
        [(T, 25, 300), (T, 50, 300), (T, 75, 300), (T, 100, 0)],
        ("LINEAR", 25, 300),
        [],
    ),
    "unequal holds fall back to CANARY and say so": (
        "canary",
        [(T, 25, 300), (T, 50, 600), (T, 75, 300), (T, 100, 0)],
        ("CANARY", 25, 300),
        ["rollout.steps[1]", "rollout.steps[2]"],
    ),
    "a hold over an hour is clamped": (
        "canary",
        [(T, 10, 7200), (T, 100, 0)],
        ("CANARY", 10, 3600),
        ["rollout.steps[0].hold"],
    ),
    "a canary over half the fleet is clamped": (
        "canary",
        [(T, 60, 60), (T, 100, 0)],
        ("CANARY", 50, 60),
        ["rollout.steps[0].traffic"],
    ),
    "blue_green is all at once": ("blue_green", [(T, 100, 0)], ("ALL_AT_ONCE", None, 180), []),
    "blue_green drops partial steps and says so": (
        "blue_green",
        [(T, 50, 60), (T, 100, 0)],
        ("ALL_AT_ONCE", None, 180),
        ["rollout.steps[0]"],
    ),
    "a late shadow step cannot be a shadow variant": (
        "canary",
        [(T, 10, 60), ("shadow", 0, 60), (T, 100, 0)],
        ("CANARY", 10, 60),
        ["rollout.steps[1].shadow"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_traffic_routing(case: str) -> None:
    strategy, steps, (kind, pct, wait), paths = CASES[case]
    routing, diags = traffic_routing(with_steps(strategy, steps))
    assert (routing.type, routing.step_percent, routing.wait_interval_seconds) == (kind, pct, wait)
    assert sorted(d.yaml_path for d in diags) == sorted(paths)
    assert all(d.severity == "warning" and "sagemaker" in d.message for d in diags)
    assert 600 <= routing.maximum_execution_timeout_seconds <= 28800


def test_small_fleets_are_warned_that_a_canary_is_a_whole_instance() -> None:
    _, diags = traffic_routing(with_steps("canary", [(T, 5, 60), (T, 100, 0)], min_replicas=1))
    (diag,) = [d for d in diags if d.yaml_path == "serving.replicas.min"]
    assert "100% of capacity" in diag.message and "at least 20" in (diag.hint or "")


def test_example_specs_report_exactly_their_approximations() -> None:
    _, churn = traffic_routing(plan_for("churn"))
    assert sorted(d.yaml_path for d in churn) == [
        "rollout.steps[0].shadow",
        "rollout.steps[2]",
        "serving.replicas.min",
    ]
    routing, fraud = traffic_routing(plan_for("fraud"))
    assert routing.shadow is not None and routing.shadow.sample_percent == 50
    assert {"rollout.steps[1].hold", "rollout.steps[2]", "rollout.steps[3]"} <= {
        d.yaml_path for d in fraud
    }
