"""Table-driven cross-target checks: one spec change, the expected diagnostics per target.

Each row changes the churn example with overrides and says, per target, which diagnostic codes
`target.check(plan)` gains (+) or loses (-) against the unchanged spec. A target that cannot
express something must say so (STYLE: declare what a target cannot do), and a change that only
matters to one target must not disturb the others.
"""

from __future__ import annotations

from collections import Counter

import pytest
from specml.compiler.api import plan_file
from specml.compiler.ir import Plan
from specml.targets import REGISTRY, get_target

SPEC = "specs/churn.yaml"
Codes = Counter[tuple[str, str]]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# (case, overrides, {target: (gained, lost)})
TABLE: list[
    tuple[str, list[str], dict[str, tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]]]
] = [
    (
        "gpu training",
        [
            "training.resources.accelerator=gpu",
            "+targets.sagemaker.training_instance_type=ml.g5.xlarge",
        ],
        {
            # the local target trains on CPU without CUDA and says so; Kubeflow now knows to ask
            # for nvidia.com/gpu (no more "auto" warning); SageMaker gets a GPU instance
            "local": ({} if _cuda() else {("warning", "no_cuda"): 1}, {}),
            "kubeflow": ({}, {("warning", "kubeflow_accelerator_auto"): 1}),
            "sagemaker": ({}, {}),
        },
    ),
    (
        "cpu training",
        ["training.resources.accelerator=cpu"],
        {
            "local": ({}, {}),
            "kubeflow": ({}, {("warning", "kubeflow_accelerator_auto"): 1}),
            "sagemaker": ({}, {}),
        },
    ),
    (
        "remote source",
        ["data.sources.customers.path=s3://bucket/customers.parquet"],
        {
            "local": ({("error", "remote_source"): 1}, {}),
            "kubeflow": ({}, {}),
            "sagemaker": ({}, {}),
        },
    ),
    (
        "rollout without shadow",
        ["rollout.steps=[{traffic: 5, hold: 30m}, {traffic: 100}]"],
        {
            "local": ({}, {}),
            "kubeflow": ({}, {("warning", "unsupported_shadow"): 1}),
            "sagemaker": ({}, {("warning", "sagemaker_rollout_approximated"): 2}),
        },
    ),
    (
        "no retraining triggers",
        ["~retraining"],
        {
            "local": ({}, {}),
            # kubeflow: new_rows has no cluster equivalent, and the retraining webhook needs
            # a KFP endpoint the churn spec does not give
            "kubeflow": (
                {},
                {
                    ("warning", "kubeflow_trigger_unsupported"): 1,
                    ("warning", "kubeflow_pipelines_host_unset"): 1,
                },
            ),
            # sagemaker: schedules and alarm rules carry the rest; new_rows and the cooldown
            # are declared, never silently dropped
            "sagemaker": (
                {},
                {
                    ("warning", "sagemaker_trigger_unsupported"): 1,
                    ("warning", "sagemaker_cooldown_unsupported"): 1,
                },
            ),
        },
    ),
    (
        "istio in the kubeflow cluster",
        ["+targets.kubeflow.istio=true"],
        {
            # the shadow step becomes an Istio mirror; nothing else notices the setting
            "local": ({}, {}),
            "kubeflow": ({}, {("warning", "unsupported_shadow"): 1}),
            "sagemaker": ({}, {}),
        },
    ),
    (
        "hyperparameter tuning",
        ["+training.tuning={trials: 5, space: {lr: {low: 0.0001, high: 0.1, log: true}}}"],
        {
            # the local train step runs the study; the cloud ones run the same search inside one
            # step/job and say what differs (no parallel trials, no study kept across retries)
            "local": ({}, {}),
            "kubeflow": ({("warning", "kubeflow_tuning_in_step"): 1}, {}),
            "sagemaker": ({("warning", "sagemaker_tuning_in_job"): 1}, {}),
        },
    ),
]


def _codes(plan: Plan, target: str) -> Codes:
    return Counter((d.severity, d.code) for d in get_target(target).check(plan))


@pytest.fixture(scope="module")
def baseline() -> dict[str, Codes]:
    plan = plan_file(SPEC)
    return {t: _codes(plan, t) for t in REGISTRY}


def test_table_covers_every_registered_target() -> None:
    for case, _, expected in TABLE:
        assert set(expected) == set(REGISTRY), case


@pytest.mark.parametrize(("case", "overrides", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_diagnostics_change_per_target(
    case: str, overrides: list[str], expected: dict, baseline: dict[str, Codes]
) -> None:
    plan = plan_file(SPEC, overrides=overrides)
    for target, (gained, lost) in expected.items():
        now = _codes(plan, target)
        assert dict(now - baseline[target]) == gained, f"{case}: {target} gained"
        assert dict(baseline[target] - now) == lost, f"{case}: {target} lost"


def test_every_target_diagnostic_names_a_spec_field(baseline: dict[str, Codes]) -> None:
    """A target's complaint points at the field it is about, so the CLI can give file:line."""
    plan = plan_file(SPEC, overrides=["data.sources.customers.path=s3://bucket/customers.parquet"])
    for target in REGISTRY:
        for diagnostic in get_target(target).check(plan):
            assert diagnostic.path, f"{target}: {diagnostic.code} has no YAML path"
