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
