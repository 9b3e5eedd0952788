"""The compiled InferenceService manifests against the real kserve SDK's models (kserve 0.21)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kserve.constants
import kserve.models
import kubernetes.client
import pytest
import yaml
from kserve_sdk import (
    API_VERSION,
    KIND,
    ROOT_TYPE,
    Problem,
    SdkConstructionError,
    build_model,
    check_inference_service,
    required_attributes,
    resolve,
    round_trip,
    round_trip_differences,
    sdk_problems,
)
from kubeflow_testlib import GOLDEN_SPECS, OVERLAYS, SPECS, rendered
from specml.compiler.api import plan_file

# Every InferenceService file the target writes per example spec (main manifest + rollout steps).
EXPECTED_FILES = {
    "churn": [
        "inferenceservice.yaml",
        "rollout/rollback.yaml",
        "rollout/step-02-traffic-20.yaml",
        "rollout/step-03-traffic-100.yaml",
    ],
    "fraud": [
        "inferenceservice.yaml",
        "rollout/rollback.yaml",
        "rollout/step-02-traffic-10.yaml",
        "rollout/step-03-traffic-50.yaml",
        "rollout/step-04-traffic-100.yaml",
    ],
    "demand": ["inferenceservice.yaml", "rollout/rollback.yaml"],
}


def _isvc_docs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        rel: yaml.safe_load(text)
        for rel, text in sorted(files.items())
        if rel == "inferenceservice.yaml" or rel.startswith("rollout/")
    }


def _fraud() -> dict[str, Any]:
    return copy.deepcopy(_isvc_docs(rendered("fraud"))["inferenceservice.yaml"])


def test_identity_comes_from_the_sdk_constants() -> None:
    constants = kserve.constants
    assert (API_VERSION, KIND) == (constants.KSERVE_V1BETA1, constants.KSERVE_KIND_INFERENCESERVICE)
    assert (API_VERSION, KIND) == ("serving.kserve.io/v1beta1", "InferenceService")
    group, version = kserve.constants.KSERVE_GROUP, kserve.constants.KSERVE_V1BETA1_VERSION
    assert f"{group}/{version}" == API_VERSION


@pytest.mark.parametrize("name", GOLDEN_SPECS)
def test_every_compiled_inference_service_passes_the_sdk(name: str) -> None:
    docs = _isvc_docs(rendered(name))
    assert sorted(docs) == EXPECTED_FILES[name]
    for rel, doc in docs.items():
        assert (doc["apiVersion"], doc["kind"]) == (API_VERSION, KIND), rel
        assert [str(p) for p in check_inference_service(doc)] == [], rel
        # the SDK's models, built through their validating constructors, serialise back to the same
        # document; the only key the SDK adds is its constructor default for the model's name
        problems, added = round_trip_differences(doc, round_trip(doc))
        assert problems == [] and added == {"spec.predictor.model.name": ""}, rel
        isvc = build_model(doc)
        assert isinstance(isvc, kserve.models.V1beta1InferenceService)
        assert isinstance(isvc.metadata, kubernetes.client.V1ObjectMeta)
        if "resources" in doc["spec"]["predictor"]["model"]:  # churn declares no serving resources
            assert isinstance(
                isvc.spec.predictor.model.resources, kubernetes.client.V1ResourceRequirements
            )
        assert isvc.spec.predictor.model.model_format.name == "onnx"


def test_the_paths_not_taken_by_the_example_specs_also_pass(tmp_path: Path) -> None:
    """GPU limits, a service account and batching off: the branches churn/fraud/demand skip."""
    from specml.targets.kubeflow.target import KubeflowTarget

    overlay = tmp_path / "variant.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "serving": {
                    "resources": {"cpu": "500m", "memory": "1.5Gi", "gpus": 1},
                    "batching": {"enabled": False},
                },
                "targets": {
                    "kubeflow": {"service_account": "specml-serving"},
                    "sagemaker": {"instance_type": "ml.g5.xlarge"},
                },  # else: "no GPU" spec error
            }
        )
    )
    plan = plan_file(SPECS / "demand.yaml", overlays=(*OVERLAYS["demand"], str(overlay)))
    docs = _isvc_docs(KubeflowTarget().render(plan))
    for rel, doc in docs.items():
        pred = doc["spec"]["predictor"]
        assert pred["serviceAccountName"] == "specml-serving" and "batcher" not in pred, rel
        assert pred["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1", rel
        assert check_inference_service(doc) == [], rel


def _rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _move_resources_to_spec(doc: dict[str, Any]) -> None:
    doc["spec"]["resources"] = doc["spec"]["predictor"]["model"].pop("resources")


def _resources_into_model_format(doc: dict[str, Any]) -> None:
    model = doc["spec"]["predictor"]["model"]
    model["modelFormat"]["resources"] = model.pop("resources")


def _container_without_name(doc: dict[str, Any]) -> None:
    doc["spec"]["predictor"]["containers"] = [{"image": "ghcr.io/acme/x:1"}]


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


P = ("spec", "predictor")
MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "misspelt canaryTrafficPercent": (
        lambda d: _rename(d["spec"]["predictor"], "canaryTrafficPercent", "canaryTrafficPrecent"),
        "spec.predictor.canaryTrafficPrecent",
        "did you mean 'canaryTrafficPercent'?",
    ),
    "minReplicas as a string": (
        _set(*P, "minReplicas", value="3"),
        "spec.predictor.minReplicas",
        "expected int, got string '3'",
    ),
    "canaryTrafficPercent as a boolean": (
        _set(*P, "canaryTrafficPercent", value=True),
        "spec.predictor.canaryTrafficPercent",
        "expected int",
    ),
    "resources under spec": (
        _move_resources_to_spec,
        "spec.resources",
        "unknown field for V1beta1InferenceServiceSpec",
    ),
    "resources under modelFormat": (
        _resources_into_model_format,
        "spec.predictor.model.modelFormat.resources",
        "unknown field for V1beta1ModelFormat",
    ),
    "unknown modelFormat field": (
        _set(*P, "model", "modelFormat", "versoin", value="1"),
        "spec.predictor.model.modelFormat.versoin",
        "did you mean 'version'?",
    ),
    "unknown predictor framework": (
        _set(*P, "onnxx", value={"storageUri": "s3://x"}),
        "spec.predictor.onnxx",
        "did you mean 'onnx'?",
    ),
    "storageURI capitalised": (
        lambda d: _rename(d["spec"]["predictor"]["model"], "storageUri", "storageURI"),
        "spec.predictor.model.storageURI",
        "did you mean 'storageUri'?",
    ),
    "batcher latency with a unit": (
        _set(*P, "batcher", "maxLatency", value="1ms"),
        "spec.predictor.batcher.maxLatency",
        "expected int",
    ),
    "imagePullSecrets as a map": (
        _set(*P, "imagePullSecrets", value={"name": "ghcr-pull"}),
        "spec.predictor.imagePullSecrets",
        "expected a list (list[V1LocalObjectReference])",
    ),
    "label value not a string": (
        _set("metadata", "labels", "specml.io/tier", value=1),
        'metadata.labels["specml.io/tier"]',
        "expected str",
    ),
    "memory not a quantity": (
        _set(*P, "model", "resources", "limits", "memory", value="4 GB"),
        "spec.predictor.model.resources.limits.memory",
        "is not a Kubernetes quantity",
    ),
    "modelFormat removed (required)": (
        lambda d: d["spec"]["predictor"]["model"].pop("modelFormat"),
        "spec.predictor.model.modelFormat",
        "required by V1beta1ModelSpec",
    ),
    "container without a name (required)": (
        _container_without_name,
        "spec.predictor.containers[0].name",
        "required by V1Container",
    ),
    "predictor removed (required)": (
        lambda d: d["spec"].pop("predictor"),
        "spec.predictor",
        "required by V1beta1InferenceServiceSpec",
    ),
    "null minReplicas": (
        _set(*P, "minReplicas", value=None),
        "spec.predictor.minReplicas",
        "null where int is expected",
    ),
    "wrong apiVersion": (
        _set("apiVersion", value="serving.kserve.io/v1alpha1"),
        "apiVersion",
        "expected 'serving.kserve.io/v1beta1'",
    ),
    "wrong kind": (_set("kind", value="InferenceServices"), "kind", "expected 'InferenceService'"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_broken_manifest_is_rejected_at_the_right_path(case: str) -> None:
    mutate, path, message = MUTATIONS[case]
    doc = _fraud()
    assert check_inference_service(doc) == []
    mutate(doc)
    problems = check_inference_service(doc)
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message, problems[0]


def test_every_problem_is_reported_not_only_the_first() -> None:
    doc = _fraud()
    _rename(doc["spec"]["predictor"], "canaryTrafficPercent", "canaryTrafficPrecent")
    doc["spec"]["predictor"]["minReplicas"] = "3"
    _move_resources_to_spec(doc)
    assert [p.path for p in sdk_problems(doc)] == [
        "spec.predictor.canaryTrafficPrecent",
        "spec.predictor.minReplicas",
        "spec.resources",
    ]


def test_required_fields_are_the_sdk_constructors_own() -> None:
    """The walker's `required` is exactly what the SDK's validating constructors refuse to leave unset."""
    assert required_attributes(kubernetes.client.V1Container) == {"name"}
    assert required_attributes(kserve.models.V1beta1ModelSpec) == {"model_format"}
    assert required_attributes(kserve.models.V1beta1InferenceServiceSpec) == {"predictor"}
    assert required_attributes(kserve.models.V1beta1PredictorSpec) == set()
    with pytest.raises(ValueError, match="`name`, must not be `None`"):
        kubernetes.client.V1Container(image="x")
    with pytest.raises(ValueError, match="`model_format`, must not be `None`"):
        kserve.models.V1beta1ModelSpec(storage_uri="s3://x")
    doc = _fraud()
    doc["spec"]["predictor"]["model"].pop("modelFormat")
    with pytest.raises(
        SdkConstructionError, match=r"^spec\.predictor\.model: V1beta1ModelSpec: .*model_format"
    ):
        build_model(doc)


def test_the_type_names_a_manifest_can_reach_resolve() -> None:
    """Every model type reachable from the InferenceService spec resolves, bar two newer than k8s 30.1."""
    import re

    seen: set[str] = set()
    unresolved: set[str] = set()

    def walk(type_name: str) -> None:
        while m := re.match(r"^(?:list\[(.*)\]|dict\([^,]*, (.*)\))$", type_name):
            type_name = m.group(1) or m.group(2)
        if type_name in seen or type_name in {
            "str",
            "int",
            "float",
            "bool",
            "object",
            "datetime",
            "date",
            "ResourceQuantity",
            "V1beta1MetricQuantity",
        }:
            return
        seen.add(type_name)
        cls = resolve(type_name)
        if cls is None:
            unresolved.add(type_name)
            return
        for sub in cls.openapi_types.values():
            walk(sub)

    for attr, sub in resolve(ROOT_TYPE).openapi_types.items():
        if attr != "status":  # written by the controller, never by us
            walk(sub)
    assert len(seen) > 100
    # kserve 0.21 was generated against a newer Kubernetes than the kubernetes 30.1 client installed;
    # a manifest using these fields is reported as unverifiable, never silently accepted
    assert unresolved == {"V1PodSchedulingGroup", "V1ContainerRestartRule"}
    doc = _fraud()
    doc["spec"]["predictor"]["schedulingGroup"] = {"name": "g"}
    assert check_inference_service(doc) == [
        Problem(
            "spec.predictor.schedulingGroup",
            "the SDK names type 'V1PodSchedulingGroup', which no installed model defines",
        )
    ]
