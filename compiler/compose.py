"""Composition: a base spec, env overlays (deep-merged in order) and `key=value` overrides.

Overrides use Hydra's own override grammar (`key=value`, `+key=value`, `++key=value`, `~key`,
lists `[1,2]`, dicts `{a:1}`), parsed by Hydra's parser; Hydra is imported only when overrides
are given, so plain validation stays fast. Every resulting value remembers which layer set it,
so an error in an overlay points at the overlay's file:line and an error from an override at
`<override N>`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from specml.compiler.errors import (
    Diagnostic,
    Severity,
    SpecError,
    Stage,
    YamlPath,
    did_you_mean,
    has_child,
)
from specml.compiler.load import Position, SourceDoc, load_file

Origin = tuple[str, Position | None]  # (file or "<override N>", position)


@dataclass
class Composed:
    """The merged document and, for every path, where its value came from."""

    data: Any
    base_file: str
    origins: dict[YamlPath, Origin] = field(default_factory=dict)
    key_origins: dict[YamlPath, Origin] = field(default_factory=dict)
    layers: tuple[str, ...] = ()

    def locate(self, path: YamlPath, key: bool = False) -> Origin:
        """Origin of a path (its key if asked), else of its nearest known ancestor."""
        if key and path in self.key_origins:
            return self.key_origins[path]
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.origins:
                return self.origins[path[:cut]]
        return (self.base_file, None)

    def diagnostic(
        self,
        path: YamlPath,
        message: str,
        *,
        hint: str | None,
        code: str,
        stage: Stage,
        severity: Severity = "error",
        key: bool = False,
    ) -> Diagnostic:
        """A Diagnostic for `path`, at the FILE:LINE:COL `locate` finds for it."""
        file, pos = self.locate(path, key=key)
        line, col = pos if pos else (None, None)
        return Diagnostic(
            message,
            path=path,
            file=file,
            line=line,
            col=col,
            hint=hint,
            severity=severity,
            stage=stage,
            code=code,
        )


def _drop_below(table: dict[YamlPath, Origin], path: YamlPath) -> None:
    n = len(path)
    for p in [p for p in table if len(p) > n and p[:n] == path]:
        del table[p]


def _record(doc: SourceDoc, value: Any, path: YamlPath, into: Composed) -> None:
    into.origins[path] = (doc.file, doc.positions.get(path))
    if path in doc.key_positions:
        into.key_origins[path] = (doc.file, doc.key_positions[path])
    if isinstance(value, dict):
        for k, v in value.items():
            _record(doc, v, (*path, k), into)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _record(doc, v, (*path, i), into)


def _merge(base: Any, over: Any, path: YamlPath, doc: SourceDoc, into: Composed) -> Any:
    """Deep-merge `over` onto `base`: mappings merge, everything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        result = dict(base)
        for k, v in over.items():
            child = (*path, k)
            if k in base:
                result[k] = _merge(base[k], v, child, doc, into)
            else:
                _drop_below(into.origins, child)
                result[k] = copy.deepcopy(v)
                _record(doc, v, child, into)
        if path in doc.key_positions:
            into.key_origins[path] = (doc.file, doc.key_positions[path])
        return result
    _drop_below(into.origins, path)
    _drop_below(into.key_origins, path)
    _record(doc, over, path, into)
    return copy.deepcopy(over)


def resolve_overlay(spec_path: Path, overlay: str) -> Path:
    """An overlay is a path, or a name looked up as `overlays/NAME.yaml` beside the spec."""
    candidate = Path(overlay)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return spec_path.parent / "overlays" / f"{overlay}.yaml"


def _override_error(
    index: int, text: str, message: str, col: int = 1, hint: str | None = None
) -> SpecError:
    return SpecError(
        [
            Diagnostic(
                message,
                file=f"<override {index}>",
                line=1,
                col=col,
                hint=hint,
                stage="compose",
                code="override",
                path=_split_key(text.lstrip("+~").partition("=")[0]) if text.strip("+~") else (),
            )
        ]
    )


def _missing_parent(index: int, text: str, data: Any, path: YamlPath) -> SpecError:
    """An override whose parent does not exist: name the first missing key, with a did-you-mean."""
    node = data
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            continue
        where = ".".join(map(str, path[: depth + 1]))
        guess = did_you_mean(str(part), [str(k) for k in node]) if isinstance(node, dict) else None
        hint = (
            f"did you mean '{'.'.join(map(str, (*path[:depth], guess)))}'?"
            if guess
            else "overrides change existing keys; add missing sections in the spec or an overlay"
        )
        error = _override_error(index, text, f"'{where}' is not in the spec", hint=hint)
        error.diagnostics[0] = replace(error.diagnostics[0], path=path)
        return error
    return _override_error(index, text, f"cannot set '{text}'")  # pragma: no cover


def _split_key(key: str) -> YamlPath:
    parts: list[str | int] = []
    for part in key.split("."):
        parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)


def _get_parent(data: Any, path: YamlPath) -> Any:
    node = data
    for part in path[:-1]:
        if has_child(node, part):
            node = node[part]
        else:
            return None
    return node


def apply_overrides(composed: Composed, overrides: Sequence[str]) -> None:
    """Apply Hydra-grammar overrides in order, recording `<override N>` as their origin."""
    if not overrides:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for index, text in enumerate(overrides, start=1):
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as exc:
            message = str(exc).splitlines()[0]
            raise _override_error(
                index,
                text,
                f"cannot parse override '{text}': {message}",
                hint="write key=value, e.g. training.hyperparameters.lr=0.01",
            ) from None
        key = override.key_or_group
        if override.package:
            raise _override_error(index, text, "package (`@`) overrides do not apply to specs")
        path = _split_key(key)
        value_col = len(text) - len(text.partition("=")[2]) + 1 if "=" in text else 1
        if override.is_sweep_override():
            raise _override_error(
                index, text, f"'{text}' is a sweep; a spec override sets one value", col=value_col
            )
        parent = _get_parent(composed.data, path)
        last = path[-1]
        exists = (isinstance(parent, dict) and last in parent) or (
            isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent)
        )
        if parent is None or not isinstance(parent, dict | list):
            raise _missing_parent(index, text, composed.data, path)
        if override.is_delete():
            if not exists:
                raise _override_error(index, text, f"cannot delete '{key}': it is not in the spec")
            del parent[last]
            _drop_below(composed.origins, path)
            composed.origins.pop(path, None)
            continue
        value = override.value()
        if override.is_add() and exists and not override.is_force_add():
            raise _override_error(
                index, text, f"'{key}' already exists", hint=f"use {key}=... to change it"
            )
        if not exists and not override.is_add():
            from specml.compiler.validate import allowed_keys

            siblings = parent.keys() if isinstance(parent, dict) else []
            guess = did_you_mean(str(last), [str(s) for s in siblings])
            if str(last) in allowed_keys(path[:-1]):  # a valid key the spec leaves unset
                guess = None
            hint = (
                f"did you mean '{'.'.join(map(str, (*path[:-1], guess)))}'?"
                if guess
                else (f"to add a new key use +{key}=...")
            )
            raise _override_error(index, text, f"'{key}' is not in the spec", hint=hint)
        if isinstance(parent, list):
            if not isinstance(last, int) or not exists:
                raise _override_error(index, text, f"list index in '{key}' is out of range")
            parent[last] = value
        else:
            parent[last] = value
        _drop_below(composed.origins, path)
        composed.origins[path] = (f"<override {index}>", (1, value_col))
        _mark_children(composed, value, path, f"<override {index}>", value_col)


def _mark_children(composed: Composed, value: Any, path: YamlPath, origin: str, col: int) -> None:
    items: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    for k, v in items:
        composed.origins[(*path, k)] = (origin, (1, col))
        _mark_children(composed, v, (*path, k), origin, col)


def compose(
    spec: SourceDoc, overlays: Sequence[SourceDoc] = (), overrides: Sequence[str] = ()
) -> Composed:
    """Merge overlays onto the base spec in order, then apply overrides."""
    composed = Composed(data=copy.deepcopy(spec.data), base_file=spec.file)
    _record(spec, spec.data, (), composed)
    layers = [spec.file]
    for overlay in overlays:
        if overlay.data is None:
            continue
        if not isinstance(overlay.data, dict):
            raise SpecError(
                [
                    Diagnostic(
                        "an overlay must be a mapping of the spec keys it changes",
                        file=overlay.file,
                        line=1,
                        col=1,
                        stage="compose",
                        code="overlay",
                    )
                ]
            )
        composed.data = _merge(composed.data, overlay.data, (), overlay, composed)
        layers.append(overlay.file)
    apply_overrides(composed, overrides)
    composed.layers = (*layers, *(f"<override {i}>" for i in range(1, len(overrides) + 1)))
    return composed


def load_overlays(spec_path: Path, overlays: Sequence[str]) -> list[SourceDoc]:
    """Load overlay files named on the command line."""
    return [load_file(resolve_overlay(spec_path, name)) for name in overlays]
