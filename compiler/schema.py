"""The JSON Schema for specs, generated from the models (never written by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from specml.compiler.spec import MLSystem

SCHEMA_ID = "https://specml.dev/schemas/specml.schema.json"
SCHEMA_PATH = Path("schemas") / "specml.schema.json"


def _tidy(node: Any) -> Any:
    """Drop pydantic's auto titles on properties (noise in editors) and keep everything else."""
    if isinstance(node, dict):
        out = {k: _tidy(v) for k, v in node.items()}
        if "properties" in out and isinstance(out["properties"], dict):
            for prop in out["properties"].values():
                if isinstance(prop, dict):
                    prop.pop("title", None)
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema (draft 2020-12) as a dict."""
    schema = MLSystem.model_json_schema(by_alias=True, mode="validation")
    schema = _tidy(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def schema_text() -> str:
    """Canonical text of the schema file (stable across runs)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


OVERLAY_SCHEMA_ID = "https://specml.dev/schemas/specml.overlay.schema.json"
OVERLAY_SCHEMA_PATH = Path("schemas") / "specml.overlay.schema.json"


def _optional(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _optional(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_optional(v) for v in node]
    return node


def overlay_schema() -> dict[str, Any]:
    """Schema for overlays: the spec's shape with nothing required (overlays set only what changes)."""
    schema = _optional(json_schema())
    schema["$id"] = OVERLAY_SCHEMA_ID
    schema["title"] = "MLSystem overlay"
    return schema


def overlay_schema_text() -> str:
    """Canonical text of the overlay schema file."""
    return json.dumps(overlay_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_files() -> dict[Path, str]:
    """Every generated schema file and its text."""
    return {SCHEMA_PATH: schema_text(), OVERLAY_SCHEMA_PATH: overlay_schema_text()}
