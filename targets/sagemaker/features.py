"""One SageMaker Feature Group per feature view: identifier, event time, typed features."""

from __future__ import annotations

from dataclasses import dataclass

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Dtype, Plan
from specml.targets.sagemaker.naming import Names

FEATURE_TYPE: dict[str, str] = {
    "int32": "Integral",
    "int64": "Integral",
    "bool": "Integral",  # bool is stored as 0/1
    "float32": "Fractional",
    "float64": "Fractional",
    "string": "String",
}
EVENT_TIME_TYPE = "String"  # ISO-8601 timestamps, as the runtime's ingest writes them
# Feature Store adds these columns itself; a feature may not use the names.
RESERVED_FEATURE_NAMES = frozenset({"is_deleted", "write_time", "api_invocation_time"})


@dataclass(frozen=True)
class FeatureGroupSpec:
    """The arguments of one aws.sagemaker.FeatureGroup."""

    view_id: str
    name: str
    description: str
    record_identifier: str
    event_time_feature: str
    features: tuple[tuple[str, str], ...]  # (name, Integral | Fractional | String)
    online: bool
    ttl_unit: str
    ttl_value: int


def feature_type(dtype: Dtype) -> str:
    """The Feature Store type for an IR dtype."""
    return FEATURE_TYPE[dtype]


def _ttl(seconds: int) -> tuple[str, int]:
    for unit, size in (("Weeks", 604800), ("Days", 86400), ("Hours", 3600), ("Minutes", 60)):
        if seconds >= size and seconds % size == 0:
            return unit, seconds // size
    return "Seconds", max(seconds, 1)


def feature_group_specs(plan: Plan, names: Names | None = None) -> list[FeatureGroupSpec]:
    """Specs for every view, in the Plan's view order."""
    names = names or Names.for_plan(plan)
    entities = {e.id: e for e in plan.features.entities}
    sources = {s.id: s for s in plan.features.sources}
    out = []
    for view in plan.features.views:
        entity = entities[view.entity_id]
        key = entity.join_keys[0]
        event_time = sources[view.source_id].timestamp_field
        features = [(key, feature_type(entity.dtype)), (event_time, EVENT_TIME_TYPE)]
        features += [
            (f.name, feature_type(f.dtype)) for f in view.fields if f.name not in (key, event_time)
        ]
        unit, value = _ttl(view.ttl_seconds)
        out.append(
            FeatureGroupSpec(
                view_id=view.id,
                name=names.feature_group(view.id),
                description=view.description,
                record_identifier=key,
                event_time_feature=event_time,
                features=tuple(features),
                online=view.online,
                ttl_unit=unit,
                ttl_value=value,
            )
        )
    return out


def feature_diagnostics(plan: Plan) -> list[Diagnostic]:
    """What Feature Store cannot hold: composite or float keys, reserved names; booleans."""
    out: list[Diagnostic] = []
    for entity in plan.features.entities:
        if FEATURE_TYPE[entity.dtype] == "Fractional":
            out.append(
                Diagnostic(
                    f"sagemaker: entity '{entity.id}' has dtype {entity.dtype}; a Feature Group's "
                    "record identifier must be Integral or String",
                    path=("features", "entities", entity.id, "dtype"),
                    hint="use an int64 or string key",
                    severity="error",
                    stage="unsupported",
                    code="sagemaker_fractional_key",
                )
            )
        if len(entity.join_keys) > 1:
            out.append(
                Diagnostic(
                    f"sagemaker: entity '{entity.id}' has {len(entity.join_keys)} join keys; a Feature "
                    "Group has one record identifier",
                    path=("features", "entities", entity.id, "join_keys"),
                    hint="add a single key column that combines them, and use it as the join key",
                    severity="error",
                    stage="unsupported",
                    code="sagemaker_composite_key",
                )
            )
    for view in plan.features.views:
        for f in view.fields:
            if f.name in RESERVED_FEATURE_NAMES:
                out.append(
                    Diagnostic(
                        f"sagemaker: feature '{view.id}:{f.name}' uses a name Feature Store reserves "
                        f"({', '.join(sorted(RESERVED_FEATURE_NAMES))})",
                        path=("features", "views", view.id, "fields", f.name),
                        hint="rename the field",
                        severity="error",
                        stage="unsupported",
                        code="sagemaker_reserved_feature_name",
                    )
                )
            if f.dtype == "bool":
                out.append(
                    Diagnostic(
                        f"sagemaker: bool feature '{view.id}:{f.name}' is stored as Integral (0/1)",
                        path=("features", "views", view.id, "fields", f.name),
                        severity="warning",
                        stage="unsupported",
                        code="sagemaker_bool_feature",
                    )
                )
    return out
