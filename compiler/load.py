"""Safe YAML loading that remembers the line and column of every key and value.

Only plain data is built (no tags, no objects). Scalars follow YAML 1.2's core schema, so `on`,
`yes` and `no` stay strings. Aliases are followed but bounded, so a billion-laughs file is refused
quickly instead of eating memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from specml.compiler.errors import Diagnostic, LoadError, YamlPath

try:  # the C composer is ~10x faster; fall back to pure Python where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 2 * 1024 * 1024
MAX_NODES = 200_000  # after alias expansion
MAX_DEPTH = 64

_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_HEX_RE = re.compile(r"^0x[0-9a-fA-F_]+$")
_OCT_RE = re.compile(r"^0o[0-7_]+$")
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")
_INF_RE = re.compile(r"^[-+]?\.(inf|Inf|INF)$")
_NAN_RE = re.compile(r"^\.(nan|NaN|NAN)$")
_STD_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _STD_TAG + "merge"
# Plain-data tags only (the resolver gives plain scalars timestamp/value tags implicitly);
# `!!python/object:...`, `!!binary`, `!!set`, `!!omap` and custom tags are refused.
_PLAIN_TAGS = ["str", "int", "float", "bool", "null", "map", "seq", "merge", "timestamp", "value"]
_ALLOWED_TAGS = {"", "!", *(_STD_TAG + t for t in _PLAIN_TAGS)}
_IMPLICIT = yaml.resolver.Resolver()

Position = tuple[int, int]  # 1-based line, column


@dataclass
class SourceDoc:
    """A loaded YAML document: its data and where each path came from."""

    file: str
    data: Any
    positions: dict[YamlPath, Position] = field(default_factory=dict)
    key_positions: dict[YamlPath, Position] = field(default_factory=dict)

    def locate(self, path: YamlPath, key: bool = False) -> Position | None:
        """Position of a path (its key if asked), else of its nearest known ancestor."""
        table = self.key_positions if key else self.positions
        if path in table:
            return table[path]
        if key and path in self.positions:
            return self.positions[path]
        for cut in range(len(path) - 1, -1, -1):
            if path[:cut] in self.positions:
                return self.positions[path[:cut]]
        return None


def _error(file: str, message: str, mark: Any = None, hint: str | None = None) -> LoadError:
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return LoadError(
        [Diagnostic(message, file=file, line=line, col=col, hint=hint, stage="load", code="yaml")]
    )


def _plain_scalar(text: str) -> Any:
    """YAML 1.2 core-schema resolution of an unquoted scalar."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT_RE.match(text):
        return int(text.replace("_", ""))
    if _HEX_RE.match(text):
        return int(text[2:].replace("_", ""), 16)
    if _OCT_RE.match(text):
        return int(text[2:].replace("_", ""), 8)
    if _FLOAT_RE.match(text) and any(c.isdigit() for c in text):
        return float(text.replace("_", ""))
    if _INF_RE.match(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if _NAN_RE.match(text):
        return float("nan")
    return text


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.nodes = 0
        self.doc = SourceDoc(file=file, data=None)

    def build(self, node: yaml.Node, path: YamlPath, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _error(
                self.file,
                f"the document expands to more than {MAX_NODES} nodes (aliases/anchors?)",
                node.start_mark,
                hint="a spec never needs this much; this looks like an alias bomb",
            )
        if depth > MAX_DEPTH:
            raise _error(
                self.file,
                f"nesting deeper than {MAX_DEPTH} levels",
                node.start_mark,
                hint="check for a recursive anchor or runaway indentation",
            )
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        tag = node.tag or ""
        if tag not in _ALLOWED_TAGS:
            raise _error(
                self.file,
                f"YAML tag '{tag.replace(_STD_TAG, '!!')}' is not allowed",
                node.start_mark,
                hint="specs are plain data: remove the tag",
            )
        if isinstance(node, yaml.ScalarNode):
            explicit_str = (
                tag == _STD_TAG + "str"
                and _IMPLICIT.resolve(yaml.ScalarNode, node.value, (True, False)) != tag
            )  # `!!str 123` stays the string '123'
            if not node.style and not explicit_str:  # plain: None (pure Python) or "" (libyaml)
                return _plain_scalar(node.value)
            return node.value
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        raise _error(self.file, "unsupported YAML node", node.start_mark)  # pragma: no cover

    def _mapping(self, node: yaml.MappingNode, path: YamlPath, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        raise _error(self.file, "'<<' merges only mappings", src.start_mark)
                    for k, v in self._mapping(src, path, depth + 1).items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _error(
                    self.file,
                    "mapping keys must be plain strings",
                    key_node.start_mark,
                    hint="use a simple `name:` key",
                )
            key = str(key_node.value)
            if key in result:
                raise _error(
                    self.file,
                    f"duplicate key '{key}'",
                    key_node.start_mark,
                    hint="YAML keeps only the last one; remove or rename the duplicate",
                )
            child = (*path, key)
            self.doc.key_positions[child] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.build(value_node, child, depth + 1)
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


def _refuse_alias_bombs(root: yaml.Node, file: str) -> None:
    """Measure the expanded size before building, so a billion-laughs file is refused at once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [value for _, value in node.value]
        return []

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _error(
                file,
                "an anchor contains an alias to itself",
                node.start_mark,
                hint="a recursive structure never ends; remove the alias",
            )
        if depth > MAX_DEPTH:
            return 1  # the builder reports the nesting, with its position
        open_nodes.add(key)
        total = 1
        for child in children(node):
            total += size(child, depth + 1)
            if total > MAX_NODES:
                break
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(root, 0) <= MAX_NODES:
        return
    culprit = root  # the innermost node that alone expands past the limit
    while True:
        bigger = [c for c in children(culprit) if sizes.get(id(c), 0) > MAX_NODES]
        if not bigger:
            break
        culprit = bigger[0]
    raise _error(
        file,
        f"this anchor/alias structure expands to more than {MAX_NODES} nodes",
        culprit.start_mark,
        hint="a spec never needs this much; this looks like an alias bomb",
    )


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""


def load_text(text: str, file: str = "<spec>") -> SourceDoc:
    """Parse YAML text into a SourceDoc, raising LoadError with file:line:col on any problem."""
    if len(text) > MAX_BYTES:
        raise _error(file, f"file is larger than {MAX_BYTES // 1024} KiB", hint="is this a spec?")
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context and "document" in (exc.problem or ""):
            problem = "expected a single YAML document, found more than one"
        hint = None
        if mark is not None and _char_at(text, mark.line, mark.column) == "\t":
            problem, hint = (
                "a tab character; YAML indents with spaces only",
                "replace tabs with spaces",
            )
        raise _error(file, f"invalid YAML: {problem}", mark, hint=hint) from None
    except yaml.YAMLError as exc:
        raise _error(file, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _error(file, "invalid YAML: nesting too deep") from None
    builder = _Builder(file)
    if node is None:
        builder.doc.data = None
        return builder.doc
    try:
        _refuse_alias_bombs(node, file)
        builder.doc.data = builder.build(node, (), 0)
    except RecursionError:
        raise _error(file, "nesting too deep to be a spec", node.start_mark) from None
    return builder.doc


def load_file(path: str | Path, display: str | None = None) -> SourceDoc:
    """Read and parse a spec or overlay file."""
    p = Path(path)
    shown = display or str(path)
    try:
        with p.open("rb") as fh:  # never more than the limit: /dev/zero must not fill memory
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _error(shown, "file not found", hint="check the path") from None
    except IsADirectoryError:
        raise _error(shown, "is a folder, not a spec file") from None
    except OSError as exc:
        raise _error(shown, f"cannot read file: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise _error(shown, f"file is larger than {MAX_BYTES // 1024} KiB", hint="is this a spec?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(shown, f"file is not UTF-8 text (byte {exc.start})") from None
    return load_text(text, shown)
