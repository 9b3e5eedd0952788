"""A target-neutral diff of two Plans: which resources and steps are created, changed or deleted.

Every part of a Plan is a resource keyed by (kind, id): sources, entities, feature views, training,
gates, the endpoint, the rollout, alerts, triggers, steps. A change names the resource and, for an
update, every leaf field whose value differs (`old -> new`). `specml plan --target T` renders it
like `terraform plan`; `--format json` prints `PlanDiff.to_json()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from specml.compiler.ir import Plan

Action = Literal["create", "update", "delete"]
SYMBOL = {"create": "+", "update": "~", "delete": "-"}
COLOUR = {"create": "green", "update": "yellow", "delete": "red"}
_BOUND = {">=": "min", "<=": "max"}
MAX_FIELDS_SHOWN = 12  # fields listed under an added or removed resource (all are in --format json)


class _Absent:
    """A field that exists on one side of the diff only."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class FieldChange:
    """One leaf field of a resource: `path` inside the resource, value before and after."""

    path: str
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "old": None if self.old is ABSENT else self.old,
            "new": None if self.new is ABSENT else self.new,
        }


@dataclass(frozen=True)
class ResourceChange:
    """A resource that would be created, updated (with its field changes) or deleted."""

    kind: str
    id: str
    action: Action
    fields: tuple[FieldChange, ...] = ()

    @property
    def address(self) -> str:
        """`kind.id`, the name a change is shown under (like a Terraform address)."""
        return f"{self.kind}.{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "action": self.action,
            "fields": [f.to_json() for f in self.fields],
        }


@dataclass(frozen=True)
class PlanDiff:
    """Every change from a previous Plan (None: nothing recorded) to the current one."""

    changes: tuple[ResourceChange, ...]
    has_previous: bool
    previous_source: str | None = None
    spec_hash: tuple[str | None, str] = field(default=(None, ""))

    def count(self, action: Action) -> int:
        """How many resources get this action."""
        return sum(1 for c in self.changes if c.action == action)

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        """`N to create, N to change, N to delete`."""
        return (
            f"{self.count('create')} to create, {self.count('update')} to change, "
            f"{self.count('delete')} to delete"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "has_previous": self.has_previous,
            "previous": self.previous_source,
            "spec_hash": {"old": self.spec_hash[0], "new": self.spec_hash[1]},
            "summary": {a: self.count(a) for a in ("create", "update", "delete")},
            "changes": [c.to_json() for c in self.changes],
        }


def _dump(node: Any) -> Any:
    return node.model_dump(mode="json") if node is not None else None


def _keyed(kind: str, items: Any, key: Any) -> Iterator[tuple[tuple[str, str], Any]]:
    for item in items:
        yield (kind, key(item)), _dump(item)


def _trigger_id(t: Any) -> str:
    value = {"schedule": t.cron, "alert": t.alert_id, "new_rows": t.new_rows}.get(t.kind)
    if t.kind == "metric_drop":
        value = t.metric
    return f"{t.kind}:{value}"


def resources(plan: Plan) -> dict[tuple[str, str], Any]:
    """Every resource of a Plan as (kind, id) -> its JSON form, in a stable order."""
    out: dict[tuple[str, str], Any] = {("system", plan.system.name): _dump(plan.system)}
    fr = plan.features
    out.update(_keyed("source", fr.sources, lambda s: s.id))
    out.update(_keyed("entity", fr.entities, lambda e: e.id))
    out.update(_keyed("feature_view", fr.views, lambda v: v.id))
    name = plan.system.name  # singletons are named after the system, like the endpoint
    out[("label", name)] = _dump(fr.label)
    training = _dump(plan.training)
    # feature order matters (it is the model's input order), so keep it a list of refs
    training["features"] = [f"{f['view_id']}:{f['field']}" for f in training["features"]]
    out[("training", name)] = training
    # gates.min.roc_auc and gates.max.rmse in the spec: the same names here
    out.update(_keyed("gate", plan.evaluation.gates, lambda g: f"{_BOUND[g.op]}.{g.metric}"))
    out[("evaluation", name)] = {
        "metrics": list(plan.evaluation.metrics),
        "must_beat_production": _dump(plan.evaluation.must_beat_production),
    }
    out[("registry", plan.registry.name)] = _dump(plan.registry)
    out[("endpoint", plan.endpoint.name)] = _dump(plan.endpoint)
    if plan.rollout is not None:
        out[("rollout", plan.endpoint.name)] = _dump(plan.rollout)
    out.update(_keyed("alert", plan.alerts, lambda a: a.id))
    if plan.retraining is not None:
        out.update(_keyed("trigger", plan.retraining.triggers, _trigger_id))
        out[("retraining", name)] = {"cooldown_seconds": plan.retraining.cooldown_seconds}
    out[("notifications", name)] = _dump(plan.notifications)
    out.update(_keyed("step", plan.steps, lambda s: s.name))
    for name in ("local", "kubeflow", "sagemaker"):
        settings = getattr(plan.targets, name)
        if settings is not None:
            out[("target", name)] = _dump(settings)
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths of a JSON value: `steps[1].traffic_percent` -> 5.0; scalar lists stay whole."""
    if isinstance(value, dict):
        if not value:
            return {prefix: {}} if prefix else {}
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def field_changes(old: Any, new: Any) -> tuple[FieldChange, ...]:
    """Leaf-level differences between two JSON values, in path order."""
    before, after = flatten(old), flatten(new)
    paths = sorted(set(before) | set(after))
    return tuple(
        FieldChange(p, before.get(p, ABSENT), after.get(p, ABSENT))
        for p in paths
        if before.get(p, ABSENT) != after.get(p, ABSENT)
    )


def diff_plans(old: Plan | None, new: Plan, previous_source: str | None = None) -> PlanDiff:
    """What changes from `old` (None: nothing applied or compiled yet) to `new`."""
    after = resources(new)
    before = resources(old) if old is not None else {}
    changes: list[ResourceChange] = []
    for key, value in after.items():
        if key not in before:
            changes.append(ResourceChange(key[0], key[1], "create", field_changes({}, value)))
        elif before[key] != value:
            changes.append(
                ResourceChange(key[0], key[1], "update", field_changes(before[key], value))
            )
    for key in before:
        if key not in after:
            changes.append(ResourceChange(key[0], key[1], "delete", field_changes(before[key], {})))
    return PlanDiff(
        changes=tuple(changes),
        has_previous=old is not None,
        previous_source=previous_source,
        spec_hash=(old.spec_hash if old is not None else None, new.spec_hash),
    )


def _show(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def render(
    diff: PlanDiff, target: str, colour: bool = True, pending: Sequence[str] = ()
) -> list[str]:
    """Human lines (Rich markup when `colour`): `+ create`, `~ update` with `old -> new`, `- delete`;
    `pending`: what the target would do beyond the Plan (data changed, a failed last apply)."""

    def paint(style: str, text: str) -> str:
        return f"[{style}]{_escape(text)}[/]" if colour else text

    def plain(text: str) -> str:
        return _escape(text) if colour else text

    lines: list[str] = []
    if not diff.has_previous:
        lines.append(plain(f"target {target}: no previous state; everything would be created"))
    elif diff.empty and not pending:
        return [plain(f"target {target}: no changes; the Plan matches {diff.previous_source}")]
    elif diff.empty:
        lines.append(plain(f"target {target}: the Plan matches {diff.previous_source}, but:"))
        return lines + [plain(f"  {line}") for line in pending]
    else:
        lines.append(plain(f"target {target}: changes against {diff.previous_source}"))
    lines.append("")
    for change in diff.changes:
        symbol = SYMBOL[change.action]
        style = COLOUR[change.action]
        verb = {
            "create": "will be created",
            "update": "will be updated",
            "delete": "will be deleted",
        }
        lines.append(
            paint(style, f"  {symbol} {change.address}") + plain(f"  ({verb[change.action]})")
        )
        if change.action == "update":
            width = max(len(f.path) for f in change.fields)
            for fc in change.fields:
                arrow = f"{_show(fc.old)} -> {_show(fc.new)}"
                lines.append(paint(style, f"      ~ {fc.path.ljust(width)}  ") + plain(arrow))
        elif diff.has_previous and change.fields:  # a resource added or removed since: its fields
            shown = change.fields[:MAX_FIELDS_SHOWN]
            width = max(len(f.path) for f in shown)
            for fc in shown:
                value = fc.new if change.action == "create" else fc.old
                lines.append(
                    paint(style, f"      {symbol} {fc.path.ljust(width)}  ") + plain(_show(value))
                )
            if len(change.fields) > len(shown):
                lines.append(
                    plain(f"      ... and {len(change.fields) - len(shown)} more field(s)")
                )
    lines.append("")
    lines.append(paint("bold", f"Plan: {diff.summary()}."))
    return lines + [plain(f"{target}: {line}") for line in pending]


PLAN_RECORD = ".specml-plan.json"  # what `specml compile` writes beside its output


def read_recorded_plan(path: Any) -> Plan | None:
    """A Plan recorded in a JSON file: a Plan itself, or a state document holding one under `plan`."""
    import json
    from pathlib import Path

    from specml.compiler.errors import Diagnostic, TargetError

    file = Path(path)
    if not file.is_file():
        return None
    try:
        document = json.loads(file.read_text())
        if isinstance(document, dict) and "ir_version" not in document:
            document = document.get("plan")  # a state record: the last applied Plan, if any
        if isinstance(document, str):
            document = json.loads(document)
        if document is None:
            return None
        return Plan.model_validate(document)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise TargetError(
            [
                Diagnostic(
                    f"the recorded Plan in {file} cannot be read: {first}",
                    file=str(file),
                    hint="it was written by another specml version; apply or compile again to "
                    "refresh it, or delete the file",
                    stage="target",
                    code="stale_state",
                )
            ]
        ) from None


def recorded_plan_in(against: Any) -> Any:
    """The recorded Plan `--against` names: a JSON file itself, or a compiled folder's record."""
    from pathlib import Path

    folder = Path(against)
    return folder if folder.suffix == ".json" else folder / PLAN_RECORD
