"""The spec reference, generated from the spec models: every field's YAML path, type, default,
required flag, description and example. `specml docs` writes docs/reference.md from it and
`specml explain PATH` looks one field up in it.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from specml.compiler.spec import MLSystem
from specml.compiler.spec.types import IDENT_RE, NAME_RE, QUANTITY_RE

REFERENCE_PATH = Path("docs") / "reference.md"
NAME = "<name>"  # a key the user chooses (a source, view, alert name)
ITEM = "[]"  # any item of a list

_PATTERN_NAMES = {QUANTITY_RE: "quantity", NAME_RE: "name", IDENT_RE: "identifier"}
_VALIDATOR_NAMES = {"_check_duration": "duration", "check_cron": "cron"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


@dataclass(frozen=True)
class FieldDoc:
    """One field of the spec, as the reference shows it."""

    path: str  # e.g. `rollout.steps[].traffic`, `alerts.<name>.metric`
    key: str
    type: str
    required: bool
    default: str | None  # rendered as YAML; None when required
    description: str
    examples: tuple[Any, ...]
    variant: str | None  # the form of a union this field belongs to (e.g. `TrafficStep`)
    section: str | None = None  # the path of the nested section this field opens, if any


@dataclass
class SectionDoc:
    """A mapping in the spec (a model): its path, what it is, and its fields."""

    path: str
    title: str
    variant: str | None
    fields: list[FieldDoc] = field(default_factory=list)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip `Annotated[...]` layers, collecting their metadata."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        args = typing.get_args(annotation)
        annotation, metadata = args[0], [*metadata, *args[1:]]
    return annotation, metadata


def _members(annotation: Any) -> list[Any]:
    """The forms of a union, nested unions and `Annotated` unions (tagged, aliased) flattened."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for member in typing.get_args(annotation):
            inner, _ = _unwrap(member)
            is_union = typing.get_origin(inner) in (typing.Union, types.UnionType)
            out += _members(inner) if is_union else [member]
        return out
    return [annotation]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _flat_metadata(metadata: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in metadata:
        out.append(item)
        if isinstance(item, FieldInfo):  # a Field(...) inside Annotated carries its own metadata
            out += _flat_metadata(list(item.metadata))
    return out


def _constraints(metadata: list[Any], unit: str) -> list[str]:
    bounds: dict[str, Any] = {}
    lengths: dict[str, Any] = {}
    for item in _flat_metadata(metadata):
        for attr, _ in _BOUNDS:
            if getattr(item, attr, None) is not None:
                bounds[attr] = getattr(item, attr)
        for attr in ("min_length", "max_length"):
            if getattr(item, attr, None):
                lengths[attr] = getattr(item, attr)
    # `> 0` says more than `>= 0`: keep the strict bound when both are given (Percentage + gt=0)
    if "gt" in bounds and "ge" in bounds and bounds["ge"] <= bounds["gt"]:
        del bounds["ge"]
    if "lt" in bounds and "le" in bounds and bounds["le"] >= bounds["lt"]:
        del bounds["le"]
    out = [
        f"{sign} {bounds[attr]:g}" if isinstance(bounds[attr], float) else f"{sign} {bounds[attr]}"
        for attr, sign in _BOUNDS
        if attr in bounds
    ]
    if "min_length" in lengths:
        out.append(f"at least {lengths['min_length']} {unit}")
    if "max_length" in lengths:
        out.append(f"at most {lengths['max_length']} {unit}")
    return out


def _scalar_name(tp: Any, metadata: list[Any]) -> str:
    for item in metadata:
        func = getattr(item, "func", None)
        if func is not None and func.__name__ in _VALIDATOR_NAMES:
            return _VALIDATOR_NAMES[func.__name__]
        pattern = getattr(item, "pattern", None)
        if pattern is None and isinstance(item, FieldInfo):
            pattern = next(
                (getattr(m, "pattern", None) for m in item.metadata if getattr(m, "pattern", None)),
                None,
            )
        if pattern in _PATTERN_NAMES:
            return _PATTERN_NAMES[pattern]
        if pattern:
            return f"string matching `{pattern}`"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def variant_name(model: type[BaseModel]) -> str:
    """How a form of a union is named in docs: the class name without a `Model` suffix."""
    name = model.__name__
    return name[: -len("Model")] if name.endswith("Model") and name != "Model" else name


def type_text(annotation: Any, metadata: list[Any] = ()) -> str:  # type: ignore[assignment]
    """A readable type: `number, > 0`, `list of integer`, `map of identifier to FeatureView`."""
    annotation, extra = _unwrap(annotation)
    metadata = [*metadata, *extra]
    members = [m for m in _members(annotation) if m is not type(None)]
    models = [_unwrap(m)[0] for m in members if _is_model(_unwrap(m)[0])]
    if len(members) > 1 and len(models) == len(members):
        return "mapping (" + " | ".join(variant_name(m) for m in models) + ")"
    if len(members) > 1:
        return " | ".join(type_text(m) for m in members)
    tp, extra = _unwrap(members[0])
    metadata = [*metadata, *extra]
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = " | ".join(f"`{v}`" for v in typing.get_args(tp))
    elif origin is list:
        item = type_text(typing.get_args(tp)[0])
        text = f"list of ({item})" if ", " in item else f"list of {item}"
    elif origin is dict:
        key, value = typing.get_args(tp)
        text = f"map of {type_text(key)} to {type_text(value)}"
    elif _is_model(tp):
        text = f"mapping ({variant_name(tp)})"
    else:
        text = _scalar_name(tp, metadata)
    unit = "character(s)" if tp is str else "item(s)"
    return ", ".join([text, *_constraints(metadata, unit)])


def _nested(annotation: Any) -> tuple[str, list[type[BaseModel]]]:
    """The models a field opens, and the path suffix to reach them (`""`, `.<name>`, `[]`)."""
    annotation, _ = _unwrap(annotation)
    suffix = ""
    origin = typing.get_origin(annotation)
    if origin is dict:
        annotation, suffix = typing.get_args(annotation)[1], f".{NAME}"
    elif origin is list:
        annotation, suffix = typing.get_args(annotation)[0], ITEM
    annotation, _ = _unwrap(annotation)
    models = [_unwrap(m)[0] for m in _members(annotation)]
    return suffix, [m for m in models if _is_model(m)]


def _yaml_flow(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _default(info: FieldInfo) -> str | None:
    if info.is_required():
        return None
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(defaults of each field)"
        return _yaml_flow(value)
    return _yaml_flow(info.default if info.default is not PydanticUndefined else None)


def _examples(info: FieldInfo) -> tuple[Any, ...]:
    if info.examples:
        return tuple(info.examples)
    for item in info.metadata:
        extra = getattr(item, "json_schema_extra", None)
        if isinstance(extra, dict) and extra.get("examples"):
            return tuple(extra["examples"])
    annotation, metadata = _unwrap(info.annotation)
    for item in metadata:
        if isinstance(item, FieldInfo) and item.examples:
            return tuple(item.examples)
    return ()


def _walk(model: type[BaseModel], path: str, variant: str | None) -> Iterator[SectionDoc]:
    section = SectionDoc(path=path, title=(model.__doc__ or "").strip(), variant=variant)
    children: list[tuple[str, type[BaseModel], str | None]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        field_path = f"{path}.{key}" if path else key
        suffix, models = _nested(info.annotation)
        opens = field_path + suffix if models else None
        description = info.description or ""
        if not description and len(models) == 1:
            description = (models[0].__doc__ or "").strip()
        section.fields.append(
            FieldDoc(
                path=field_path,
                key=key,
                type=type_text(info.annotation, list(info.metadata)),
                required=info.is_required(),
                default=_default(info),
                description=description,
                examples=_examples(info),
                variant=variant,
                section=opens,
            )
        )
        for sub in models:
            children.append(
                (field_path + suffix, sub, variant_name(sub) if len(models) > 1 else None)
            )
    yield section
    for child_path, sub, sub_variant in children:
        yield from _walk(sub, child_path, sub_variant)


@functools.cache
def _all_sections() -> tuple[SectionDoc, ...]:
    return tuple(_walk(MLSystem, "", None))


def sections() -> list[SectionDoc]:
    """Every section of the spec, depth first in declaration order, the top level first."""
    return list(_all_sections())


def all_fields() -> list[FieldDoc]:
    """Every field of the spec (a field of a union form appears once per form)."""
    return [f for s in sections() for f in s.fields]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) and value else _yaml_flow(value)
    return f"`{_cell(text)}`"


def reference_markdown() -> str:
    """docs/reference.md: one table per section, every field with path, type, default and example."""
    docs = sections()
    lines = [
        "# Spec reference",
        "",
        "<!-- Generated from the spec models (compiler/spec) by `specml docs`. Do not edit by hand:",
        "     a test fails when this file is stale. -->",
        "",
        "Every key of a specml spec, section by section. `<name>` is a key you choose (a source, a",
        "view, an alert name); `[]` is any item of a list. Where a section has several forms (a",
        "rollout step is a shadow step or a traffic step), each form has its own table. "
        "`specml explain PATH` prints one entry from this page.",
        "",
        "## Sections",
        "",
    ]
    for s in docs:
        name = s.path or "(top level)"
        lines.append(f"- `{name}`" + (f" ({s.variant})" if s.variant else "") + f": {s.title}")
    for s in docs:
        heading = f"`{s.path}`" if s.path else "Top level"
        lines += ["", f"## {heading}" + (f": {s.variant}" if s.variant else ""), "", s.title, ""]
        lines += [
            "| YAML path | Type | Required | Default | Description | Example |",
            "|---|---|---|---|---|---|",
        ]
        for f in s.fields:
            default = "" if f.default is None else _code(f.default)
            example = _code(f.examples[0]) if f.examples else ""
            description = f.description + (f" See `{f.section}`." if f.section else "")
            lines.append(
                f"| `{f.path}` | {_cell(f.type)} | {'yes' if f.required else 'no'} | {default} "
                f"| {_cell(description)} | {example} |"
            )
    return "\n".join(lines) + "\n"
