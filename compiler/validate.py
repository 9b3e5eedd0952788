"""Validation: the composed document against the spec models, errors turned into Diagnostics."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from specml.compiler.compose import Composed
from specml.compiler.errors import Diagnostic, YamlPath, did_you_mean, has_child
from specml.compiler.spec import MLSystem
from specml.compiler.spec.monitoring import ALERT_METRICS
from specml.compiler.spec.types import RuleError

_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
}


def _clean_loc(loc: tuple[Any, ...], data: Any, missing: bool = False) -> YamlPath:
    """Drop pydantic's union tags and function names from a loc by walking the real data."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        after = loc[i + 1] if i + 1 < len(loc) else None
        if (
            isinstance(node, dict)
            and part in node
            and after in node
            and (after == part or (i > 0 and isinstance(loc[i - 1], int)))
        ):
            continue  # a union tag that is also a key (`traffic` in {traffic: 5, hold: x}): not a step
        if has_child(node, part):
            path.append(part)
            node = node[part]
        elif missing and isinstance(node, dict) and isinstance(part, str) and part == loc[-1]:
            path.append(part)  # a missing key: keep it, the position falls back to the parent
            node = None
    return tuple(path)


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types behind Annotated / Optional / Union."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_unwrap(arg))
        return out
    return [tp]


def _children(tp: Any, key: str | int) -> list[Any]:
    out: list[Any] = []
    for t in _unwrap(tp):
        origin = typing.get_origin(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            for name, info in t.model_fields.items():
                if (info.alias or name) == key:
                    out.extend(_unwrap(info.annotation))
        elif origin is dict:
            out.extend(_unwrap(typing.get_args(t)[1]))
        elif origin is list:
            out.extend(_unwrap(typing.get_args(t)[0]))
    return out


def allowed_keys(path: YamlPath) -> list[str]:
    """Keys the spec models allow under a path (union members merged)."""
    current: list[Any] = [MLSystem]
    for part in path:
        current = [c for t in current for c in _children(t, part)]
    keys: set[str] = set()
    for t in current:
        if isinstance(t, type) and issubclass(t, BaseModel):
            keys.update(info.alias or name for name, info in t.model_fields.items())
    return sorted(keys)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _diagnostic(err: dict[str, Any], composed: Composed) -> Diagnostic:
    kind = err["type"]
    path = _clean_loc(tuple(err["loc"]), composed.data, missing=kind == "missing")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    hint: str | None = None
    key_position = False
    message = err["msg"]

    if kind == "extra_forbidden":
        key_position = True
        parent, key = path[:-1], path[-1] if path else ""
        allowed = allowed_keys(parent)
        message = f"unknown key '{key}'"
        guess = did_you_mean(str(key), allowed)
        if guess == key:  # a key of another variant of a union (e.g. mlp's `hidden` on linear)
            tag = _lookup(composed.data, (*parent, "type"))
            dotted = ".".join(map(str, path))
            variant = f"type '{tag}'" if isinstance(tag, str) else "this variant"
            message = f"'{key}' is not a setting of {variant}"
            hint = f"remove it (as an override: ~{dotted})"
        elif guess:
            hint = f"did you mean '{guess}'?"
        elif allowed:
            hint = f"allowed keys here: {', '.join(allowed)}"
    elif kind == "missing":
        key = path[-1] if path else ""
        message = f"missing required key '{key}'"
        parent_value = _lookup(composed.data, path[:-1])
        if isinstance(parent_value, dict):
            guess = did_you_mean(str(key), [str(k) for k in parent_value])
            if guess and guess != key:
                hint = f"is '{guess}' a misspelling of '{key}'?"
        path_for_position = path[:-1]
        file, pos = composed.locate(path_for_position)
        return _make(message, path, file, pos, hint, kind)
    elif kind == "literal_error":
        expected = ctx.get("expected", "")
        message = f"expected {expected}, got {_short(given)}"
        options = [o.strip().strip("'") for o in str(expected).replace(" or ", ",").split(",")]
        guess = did_you_mean(str(given), [o for o in options if o])
        if guess:
            hint = f"did you mean '{guess}'?"
    elif kind == "unknown_alert_metric":
        message = f"unknown alert metric {_short(_lookup(composed.data, (*path, 'metric')))}"
        metric = _lookup(composed.data, (*path, "metric"))
        path = (*path, "metric") if metric is not None else path
        guess = did_you_mean(str(metric), [m for m in ALERT_METRICS if "<" not in m])
        hint = (f"did you mean '{guess}'? " if guess else "") + (
            f"alert metrics: {', '.join(ALERT_METRICS)}"
        )
        if metric is None:
            message = "an alert needs a `metric`"
    elif kind == "unknown_trigger":
        message = (
            "a retraining trigger needs exactly one of: schedule, alert, new_rows, metric_drop"
        )
        if isinstance(given, dict) and given:
            guess = did_you_mean(
                str(next(iter(given))), ["schedule", "alert", "new_rows", "metric_drop"]
            )
            if guess:
                hint = f"did you mean '{guess}'?"
    elif kind == "union_tag_invalid":
        message = f"expected one of {ctx.get('expected_tags')}, got {_short(ctx.get('tag'))}"
        tag = ctx.get("tag")
        guess = did_you_mean(
            str(tag), [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        )
        if guess:
            hint = f"did you mean '{guess}'?"
        path = (*path, ctx.get("discriminator", "type").strip("'"))
    elif kind == "value_error" and isinstance(ctx.get("error"), RuleError):
        rule: RuleError = ctx["error"]
        path = (*path, *rule.subpath)
        message = str(rule)
        hint = rule.hint
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", message)).removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch":
        message = f"{_short(given)} does not match the required pattern {ctx.get('pattern')}"
        hint = _pattern_hint(path)
    elif kind in _TYPE_WORDS:
        message = f"expected {_TYPE_WORDS[kind]}, got {_type_name(given)} {_short(given)}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        message = f"{err['msg'].replace('Input should be', 'must be')} (got {_short(given)})"
    elif kind == "int_parsing_size":
        message = f"number too large for a whole number (got {_short(given)})"
    elif kind in ("too_short", "too_long"):
        message = err["msg"].replace("List should", "must").replace("Dictionary should", "must")
    else:
        message = f"{message} (got {_short(given)})"

    file, pos = composed.locate(path, key=key_position)
    return _make(message, path, file, pos, hint, kind)


def _make(
    message: str, path: YamlPath, file: str, pos: Any, hint: str | None, code: str
) -> Diagnostic:
    line, col = pos if pos else (None, None)
    return Diagnostic(
        message, path=path, file=file, line=line, col=col, hint=hint, stage="validate", code=code
    )


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "the string", bool: "the boolean"}
    return {**names, type(None): "null"}.get(type(value), type(value).__name__)


def _pattern_hint(path: YamlPath) -> str | None:
    last = path[-1] if path else ""
    if last == "name" and path[:1] == ("metadata",):
        return "use lowercase letters, digits and '-', starting with a letter (e.g. 'churn-model')"
    if last in ("region",):
        return "an AWS region such as 'eu-west-1'"
    if last in ("cpu", "memory"):
        return "a Kubernetes quantity such as '2', '500m' or '4Gi'"
    if last in ("instance_type", "training_instance_type"):
        return "a SageMaker instance type such as 'ml.m5.large'"
    if last == "env":
        return "an environment variable name in capitals, e.g. 'ALERT_WEBHOOK_URL'"
    if last == "metric":
        return "write `<model metric>_drop`, e.g. 'roc_auc_drop'"
    return "names are letters, digits and '_', starting with a letter"


def _lookup(data: Any, path: YamlPath) -> Any:
    node = data
    for part in path:
        if has_child(node, part):
            node = node[part]
        else:
            return None
    return node


def validate_document(composed: Composed) -> tuple[MLSystem | None, list[Diagnostic]]:
    """Validate against the models: the model, or None and every problem found."""
    if not isinstance(composed.data, dict):
        file, pos = composed.locate(())
        kinds = {
            list: "a list",
            str: "a single string",
            bool: "a boolean",
            int: "a number",
            float: "a number",
        }
        what = "empty" if composed.data is None else kinds.get(type(composed.data), "not a mapping")
        return None, [
            _make(
                f"a spec must be a mapping with apiVersion, kind, metadata, ...; this file is {what}",
                (),
                file,
                pos or (1, 1),
                "start from `specml init` or an example in specs/",
                "not_a_mapping",
            )
        ]
    try:
        return MLSystem.model_validate(composed.data), []
    except ValidationError as exc:
        diagnostics = [_diagnostic(dict(e), composed) for e in exc.errors(include_url=False)]
        unique = {(d.file, d.line, d.col, d.message): d for d in diagnostics}
        return None, sorted(unique.values(), key=lambda d: (d.file or "", d.line or 0, d.col or 0))


def _without(data: Any, path: YamlPath) -> bool:
    """Remove the value at `path` from nested dicts/lists in place; False when it is not there."""
    node = _lookup(data, path[:-1])
    if isinstance(node, dict) and path and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def _caused_by(path: YamlPath, removed: set[YamlPath]) -> bool:
    """An error at a removed value or at one of its parents (a mapping left empty, a required key
    now missing, the parent's own rules) comes from the removal, not from the spec."""
    return any(r[: len(path)] == path for r in removed)


def salvage(
    composed: Composed, problems: list[Diagnostic], rounds: int = 4
) -> tuple[MLSystem | None, list[Diagnostic]]:
    """Validate again without the values that failed (an unknown key, a bad value), so that the
    rules those errors kept from running (cross-field checks, then the semantic checks on the
    returned spec) report too: every problem in one pass. Returns the spec when what is left
    validates, and the further problems found; a removed value that was required ends it."""
    import copy

    if any(d.severity == "error" and not d.path for d in problems):
        return None, []
    data = copy.deepcopy(composed.data)
    removed: set[YamlPath] = set()
    pending = [tuple(d.path) for d in problems if d.severity == "error"]
    found: list[Diagnostic] = []
    for _ in range(rounds):
        for path in pending:
            if not _without(data, path):
                return None, found
            removed.add(path)
        try:
            return MLSystem.model_validate(data), found
        except ValidationError as exc:
            errors = [dict(e) for e in exc.errors(include_url=False)]
        fresh = [_diagnostic(e, composed) for e in errors]
        if any(_caused_by(tuple(d.path), removed) for d in fresh):
            return None, found  # a value we removed was needed: its error is ours, not the user's
        found += fresh
        pending = [tuple(d.path) for d in fresh]
    return None, found
