"""Example specs validate, the generated JSON Schema accepts them, and the schema is complete."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from specml.compiler.api import plan_file, validate_file
from specml.compiler.load import load_file
from specml.compiler.schema import (
    OVERLAY_SCHEMA_PATH,
    SCHEMA_PATH,
    json_schema,
    overlay_schema,
    schema_text,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "specs").glob("*.yaml"))
OVERLAYS = sorted((ROOT / "specs" / "overlays").glob("*.yaml"))
INVALID = ROOT / "tests" / "specs" / "invalid"
HEADER = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")

# Corpus specs whose problem the JSON Schema can express (shape, type, range, pattern, enum).
SCHEMA_EXPRESSIBLE = [
    "misspelt_top_level_key",
    "misspelt_view_key",
    "misspelt_hyperparameter",
    "misspelt_batching_key",
    "misspelt_sagemaker_key",
    "wrong_type_epochs",
    "wrong_type_join_keys",
    "wrong_type_fields_list",
    "wrong_dtype",
    "out_of_range_holdout",
    "out_of_range_port",
    "huge_batch_size",
    "wrong_api_version",
    "bad_system_name",
    "unknown_model_type",
    "missing_model",
    "bad_region",
    "bad_duration_ttl",
    "bad_duration_hold",
    "rollout_traffic_over_100",
    "secret_webhook_literal",
    "many_errors_reported_together",
    "alert_without_thresholds",
]
# Cross-reference and semantic rules the schema cannot express: only the compiler catches them.
COMPILER_ONLY = [
    "unknown_entity_ref",
    "unknown_alert_ref_rollback",
    "rollout_traffic_not_increasing",
    "label_leaks_into_features",
    "alert_warn_not_below_critical",
    "native_encoding_on_mlp",
    "encoding_on_numeric_field",
    "classes_num_classes_mismatch",
    "positive_on_multiclass",
    "duplicate_classes",
]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_there_are_example_specs() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates_without_warnings_and_lowers(spec: Path) -> None:
    result = validate_file(spec)
    assert result.warnings == [], [d.render() for d in result.warnings]
    plan = plan_file(spec)
    assert plan.system.name == result.spec.metadata.name


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_matches_json_schema(spec: Path, validator: Draft202012Validator) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(load_file(spec).data)
    ]
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.stem for p in OVERLAYS])
def test_overlay_matches_overlay_schema(overlay: Path) -> None:
    validator = Draft202012Validator(overlay_schema())
    assert [e.message for e in validator.iter_errors(load_file(overlay).data)] == []


@pytest.mark.parametrize(
    ("spec", "schema_file"),
    [(p, SCHEMA_PATH) for p in EXAMPLES] + [(p, OVERLAY_SCHEMA_PATH) for p in OVERLAYS],
    ids=[p.stem for p in EXAMPLES] + [f"overlay-{p.stem}" for p in OVERLAYS],
)
def test_example_starts_with_schema_modeline(spec: Path, schema_file: Path) -> None:
    first = spec.read_text().splitlines()[0]
    match = HEADER.match(first)
    assert match, f"{spec.name} must start with '# yaml-language-server: $schema=...'"
    assert (spec.parent / match.group(1)).resolve() == (ROOT / schema_file).resolve()


def test_committed_schema_is_not_stale() -> None:
    committed = (ROOT / SCHEMA_PATH).read_text()
    assert committed == schema_text(), "schemas/specml.schema.json is stale: run `specml schema`"


def _properties_missing_docs(node: Any, where: str) -> list[str]:
    """`where.prop: missing` for every schema property without a description or examples."""
    found: list[str] = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            missing = [k for k in ("description", "examples") if not prop.get(k)]
            if missing:
                found.append(f"{where}.{name}: no {' or '.join(missing)}")
        for key, child in node.items():
            found += _properties_missing_docs(child, f"{where}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _properties_missing_docs(child, f"{where}[{i}]")
    return found


def test_every_schema_property_has_description_and_examples() -> None:
    schema = json_schema()
    assert len(schema["$defs"]) > 20  # the walk really reaches the definitions
    assert _properties_missing_docs(schema, "#") == []


def test_docs_walk_finds_an_undocumented_property() -> None:
    schema = {"properties": {"a": {"type": "string"}}, "$defs": {"X": {"properties": {"b": {}}}}}
    assert _properties_missing_docs(schema, "#") == [
        "#.a: no description or examples",
        "#/$defs/X.b: no description or examples",
    ]


@pytest.mark.parametrize("name", SCHEMA_EXPRESSIBLE)
def test_schema_agrees_with_compiler_on_shape_errors(
    name: str, validator: Draft202012Validator
) -> None:
    spec = INVALID / f"{name}.yaml"
    with pytest.raises(Exception):  # noqa: B017 - the corpus test pins the exact SpecError
        validate_file(spec)
    schema_errors = list(validator.iter_errors(load_file(spec).data))
    assert schema_errors, f"the JSON Schema accepts {name}, the compiler rejects it"


@pytest.mark.parametrize("name", COMPILER_ONLY)
def test_schema_cannot_express_cross_reference_rules(
    name: str, validator: Draft202012Validator
) -> None:
    spec = INVALID / f"{name}.yaml"
    assert list(validator.iter_errors(load_file(spec).data)) == []
