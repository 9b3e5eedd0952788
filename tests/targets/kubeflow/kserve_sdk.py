"""Strict structural check of KServe manifests, driven by the kserve Python SDK's own models.

Each SDK model class carries `openapi_types` (attribute -> type name such as 'V1beta1PredictorSpec',
'list[V1Container]', 'dict(str, str)', 'int') and `attribute_map` (attribute -> JSON key). The
walker below follows those two maps from `V1beta1InferenceService` down through every nested model
(kserve.models first, then kubernetes.client.models), and reports every key the SDK does not know
(with a did-you-mean), every value of the wrong JSON type, and every field whose setter the SDK's
client-side validation refuses to leave unset (e.g. V1Container.name, V1beta1ModelSpec.modelFormat),
each with its JSON path. A second, independent check builds the SDK model objects from the dict
through their constructors (client-side validation on) and serialises them back with the SDK's
ApiClient: nothing may be dropped or changed on the way.
"""

from __future__ import annotations

import datetime
import difflib
import importlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import kserve.constants as kserve_constants
import kserve.models as kserve_models
import kubernetes.client.models as k8s_models
from kserve.api_client import ApiClient
from kserve.configuration import Configuration

ROOT_TYPE = "V1beta1InferenceService"
API_VERSION: str = kserve_constants.KSERVE_V1BETA1  # 'serving.kserve.io/v1beta1'
KIND: str = kserve_constants.KSERVE_KIND_INFERENCESERVICE  # 'InferenceService'

# Type names the kserve 0.21 models use that neither module exports under that name.
ALIASES = {
    "K8sIoApiAppsV1DeploymentStrategy": "V1DeploymentStrategy",
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior": "V2HorizontalPodAutoscalerBehavior",
}
# Kubernetes resource.Quantity: the CRDs declare it int-or-string with this pattern; the SDK types it
# as 'str' (V1ResourceRequirements) or as these placeholder names.
QUANTITY_TYPES = {"ResourceQuantity", "V1beta1MetricQuantity"}
QUANTITY_FIELDS = {("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests")}
QUANTITY_PATTERN = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PRIMITIVES = {"str", "int", "float", "bool", "object", "datetime", "date"}

_LIST = re.compile(r"^list\[(.*)\]$")
_DICT = re.compile(r"^dict\(([^,]*), (.*)\)$")
_CONFIG = Configuration()  # client_side_validation defaults to True
assert _CONFIG.client_side_validation


@dataclass(frozen=True, order=True)
class Problem:
    """One thing the SDK's models reject: the JSON path and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@cache
def resolve(type_name: str) -> type | None:
    """The SDK model class for a type name: kserve.models, its unexported modules, then kubernetes."""
    name = ALIASES.get(type_name, type_name)
    cls = getattr(kserve_models, name, None)
    if cls is None:  # a few kserve models (V1Time, Knative*) exist as modules but are not exported
        module = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        try:
            cls = getattr(importlib.import_module(f"kserve.models.{module}"), name, None)
        except ImportError:
            cls = None
    if cls is None:
        cls = getattr(k8s_models, name, None)
    return cls if cls is not None and hasattr(cls, "openapi_types") else None


@cache
def required_attributes(cls: type) -> frozenset[str]:
    """Attributes whose setter refuses None under client-side validation (the SDK's `required`)."""
    required = set()
    for attr in cls.openapi_types:
        probe = cls.__new__(cls)
        probe.local_vars_configuration = _CONFIG
        try:
            setattr(probe, attr, None)
        except ValueError:
            required.add(attr)
    return frozenset(required)


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f'{path}["{key}"]'


def _join(path: str, key: str) -> str:
    return key if not path else _key(path, key)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _suggest(key: str, known: list[str]) -> str:
    """A did-you-mean hint: a case-insensitive match first, else the closest spelling."""
    folded = {k.lower(): k for k in known}
    if key.lower() in folded:
        return f" (did you mean '{folded[key.lower()]}'?)"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_primitive(value: Any, type_name: str, path: str, out: list[Problem]) -> None:
    if type_name == "object":
        return
    if type_name in ("datetime", "date"):
        if isinstance(value, (datetime.date, datetime.datetime)):
            return
        if isinstance(value, str):
            try:
                datetime.datetime.fromisoformat(value)
                return
            except ValueError:
                pass
        out.append(Problem(path, f"expected an RFC 3339 {type_name}, got {value!r}"))
        return
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[type_name]
    if not ok:
        out.append(Problem(path, f"expected {type_name}, got {_json_type(value)} {value!r}"))


def _check_quantity(value: Any, path: str, out: list[Problem]) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        out.append(Problem(path, f"expected a quantity (int or string), got {_json_type(value)}"))
    elif isinstance(value, str) and not QUANTITY_PATTERN.match(value):
        out.append(Problem(path, f"{value!r} is not a Kubernetes quantity"))


def check_value(value: Any, type_name: str, path: str, out: list[Problem]) -> None:
    """Append a Problem for everything in `value` that the SDK type `type_name` does not allow."""
    if value is None:
        out.append(Problem(path, f"null where {type_name} is expected (omit the key instead)"))
        return
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            out.append(Problem(path, f"expected a list ({type_name}), got {_json_type(value)}"))
            return
        for i, item in enumerate(value):
            check_value(item, m.group(1), f"{path}[{i}]", out)
        return
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            out.append(Problem(path, f"expected a map ({type_name}), got {_json_type(value)}"))
            return
        for key, item in value.items():
            if not isinstance(key, str):
                out.append(Problem(path, f"map key {key!r} is not a string"))
            check_value(item, m.group(2), _key(path, str(key)), out)
        return
    if type_name in QUANTITY_TYPES:
        _check_quantity(value, path, out)
        return
    if type_name in PRIMITIVES:
        _check_primitive(value, type_name, path, out)
        return
    cls = resolve(type_name)
    if cls is None:
        out.append(
            Problem(path, f"the SDK names type {type_name!r}, which no installed model defines")
        )
        return
    _check_model(value, cls, path, out)


def _check_model(value: Any, cls: type, path: str, out: list[Problem]) -> None:
    if not isinstance(value, dict):
        out.append(Problem(path, f"expected an object ({cls.__name__}), got {_json_type(value)}"))
        return
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        attr = by_json.get(key)
        if attr is None:
            hint = _suggest(str(key), sorted(by_json))
            out.append(Problem(_join(path, str(key)), f"unknown field for {cls.__name__}{hint}"))
            continue
        type_name = cls.openapi_types[attr]
        if (cls.__name__, attr) in QUANTITY_FIELDS:
            type_name = "dict(str, ResourceQuantity)"
        check_value(item, type_name, _join(path, key), out)
    for attr in sorted(required_attributes(cls)):
        if cls.attribute_map[attr] not in value:
            out.append(
                Problem(
                    _join(path, cls.attribute_map[attr]),
                    f"required by {cls.__name__} (SDK client-side validation)",
                )
            )


def sdk_problems(doc: Any, type_name: str = ROOT_TYPE) -> list[Problem]:
    """Every structural problem of `doc` as the SDK model `type_name`, sorted by path."""
    out: list[Problem] = []
    check_value(doc, type_name, "", out)
    return sorted(set(out))


class SdkConstructionError(ValueError):
    """An SDK model constructor refused a value (client-side validation)."""


def build_model(value: Any, type_name: str = ROOT_TYPE, path: str = "") -> Any:
    """The SDK model objects for `value`, built through their constructors with validation on."""
    if value is None:
        return None
    if (m := _LIST.match(type_name)) and isinstance(value, list):
        return [build_model(v, m.group(1), f"{path}[{i}]") for i, v in enumerate(value)]
    if (m := _DICT.match(type_name)) and isinstance(value, dict):
        return {k: build_model(v, m.group(2), _key(path, str(k))) for k, v in value.items()}
    if type_name in PRIMITIVES or type_name in QUANTITY_TYPES:
        return value
    cls = resolve(type_name)
    if cls is None or not isinstance(value, dict):
        return value
    kwargs = {
        attr: build_model(value[json_key], cls.openapi_types[attr], _join(path, json_key))
        for attr, json_key in cls.attribute_map.items()
        if json_key in value
    }
    try:
        return cls(**kwargs, local_vars_configuration=_CONFIG)
    except ValueError as exc:
        raise SdkConstructionError(f"{path or '<root>'}: {cls.__name__}: {exc}") from exc


def round_trip(doc: dict[str, Any], type_name: str = ROOT_TYPE) -> Any:
    """`doc` built into SDK models and serialised back by the SDK's ApiClient."""
    return ApiClient().sanitize_for_serialization(build_model(doc, type_name))


def round_trip_differences(
    doc: Any, back: Any, path: str = ""
) -> tuple[list[Problem], dict[str, Any]]:
    """(values the round trip dropped or changed, keys the SDK added with their default values)."""
    problems: list[Problem] = []
    added: dict[str, Any] = {}
    if isinstance(doc, dict) and isinstance(back, dict):
        for key, value in doc.items():
            if key not in back:
                problems.append(Problem(_join(path, str(key)), "dropped by the SDK round trip"))
            else:
                p, a = round_trip_differences(value, back[key], _join(path, str(key)))
                problems += p
                added.update(a)
        for key in back.keys() - doc.keys():
            added[_join(path, str(key))] = back[key]
    elif isinstance(doc, list) and isinstance(back, list) and len(doc) == len(back):
        for i, (d, b) in enumerate(zip(doc, back, strict=True)):
            p, a = round_trip_differences(d, b, f"{path}[{i}]")
            problems += p
            added.update(a)
    elif doc != back or type(doc) is not type(back):
        problems.append(Problem(path, f"changed by the SDK round trip: {doc!r} -> {back!r}"))
    return problems, added


def check_inference_service(doc: Any) -> list[Problem]:
    """Everything the SDK rejects in an InferenceService manifest: identity, structure, construction."""
    problems = sdk_problems(doc)
    if not isinstance(doc, dict):
        return problems
    if doc.get("apiVersion") != API_VERSION:
        problems.append(
            Problem("apiVersion", f"expected {API_VERSION!r}, got {doc.get('apiVersion')!r}")
        )
    if doc.get("kind") != KIND:
        problems.append(Problem("kind", f"expected {KIND!r}, got {doc.get('kind')!r}"))
    if not problems:  # the constructors only make sense on a structurally valid document
        try:
            problems += round_trip_differences(doc, round_trip(doc))[0]
        except SdkConstructionError as exc:
            problems.append(Problem("<construction>", str(exc)))
    return sorted(set(problems))
