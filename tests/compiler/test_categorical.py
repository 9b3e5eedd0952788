"""Categorical features and class labels: the spec's forms lower to the IR contract, with the
defaults per model family, the spec's input order, and the class mapping."""

from __future__ import annotations

import pytest
from specml.compiler.api import validate_text
from specml.compiler.errors import SpecError
from specml.compiler.ir import Plan
from specml.compiler.lower import lower

SPEC = """\
apiVersion: specml/v1
kind: MLSystem
metadata: {name: shop, owner: team-ml}
data:
  sources:
    events: {format: parquet, path: events.parquet, timestamp: event_ts}
features:
  entities:
    store: {join_keys: [store_id]}
  views:
    stores:
      entity: store
      source: events
      ttl: 30d
      fields:
        size_m2: float32
        format: string
        region_code: {dtype: int64, categorical: true}
        visits: int64
        cut: {dtype: string, encoding: ordinal, categories: [Fair, Good, Ideal], unknown: error}
  label: LABEL
training:
  task: TASK
  model: {type: MODEL}
"""


def _plan(
    model: str = "mlp",
    task: str = "binary_classification",
    label: str = "{source: events, field: churned}",
    extra: str = "",
) -> Plan:
    text = SPEC.replace("MODEL", model).replace("TASK", task).replace("LABEL", label) + extra
    return lower(validate_text(text).spec)


def test_inputs_keep_the_spec_order_with_their_datatypes() -> None:
    refs = _plan().training.features
    assert [(r.input_name, r.datatype) for r in refs] == [
        ("size_m2", "FP32"),
        ("format", "BYTES"),
        ("region_code", "INT64"),
        ("visits", "FP32"),
        ("cut", "BYTES"),
    ]
    assert refs[0].categorical is None and refs[3].categorical is None


def test_training_features_order_wins_over_the_view_order() -> None:
    plan = _plan(extra="  features: [stores:visits, stores:cut, stores]\n")
    assert [r.field for r in plan.training.features] == [
        "visits",
        "cut",
        "size_m2",
        "format",
        "region_code",
    ]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("mlp", "one_hot"), ("linear", "one_hot"), ("lightgbm", "native"), ("xgboost", "native")],
)
def test_default_encoding_follows_the_model_family(model: str, encoding: str) -> None:
    refs = {r.field: r for r in _plan(model=model).training.features}
    fmt = refs["format"].categorical
    assert fmt is not None and fmt.encoding == encoding
    assert (fmt.categories, fmt.max_categories, fmt.min_frequency) == (None, 1000, 1)
    assert (fmt.unknown, fmt.missing, fmt.embedding_dim) == ("bucket", "bucket", None)
    cut = refs["cut"].categorical
    assert cut is not None and cut.encoding == "ordinal"  # asked for: kept in every family
    assert cut.categories == ("Fair", "Good", "Ideal") and cut.unknown == "error"


def test_embedding_dimension_is_resolved() -> None:
    text = SPEC.replace("format: string", "format: {dtype: string, encoding: embedding}").replace(
        "encoding: ordinal", "encoding: embedding"
    )
    text = text.replace("MODEL", "mlp").replace("TASK", "binary_classification")
    plan = lower(validate_text(text.replace("LABEL", "{source: events, field: y}")).spec)
    refs = {r.field: r.categorical for r in plan.training.features}
    assert refs["format"] is not None and refs["format"].embedding_dim == 50  # learned: capped
    assert (
        refs["cut"] is not None and refs["cut"].embedding_dim == 4
    )  # 1.6 * (3 + 2 buckets) ** 0.56
    pinned = text.replace("encoding: embedding}", "encoding: embedding, embedding_dim: 8}")
    plan = lower(validate_text(pinned.replace("LABEL", "{source: events, field: y}")).spec)
    fmt = plan.training.features[1].categorical
    assert fmt is not None and fmt.embedding_dim == 8


def test_declared_classes_set_the_label_mapping_and_num_classes() -> None:
    plan = _plan(
        task="multiclass_classification",
        label="{source: events, field: species, classes: [Adelie, Chinstrap, Gentoo]}",
    )
    assert plan.features.label.classes == ("Adelie", "Chinstrap", "Gentoo")
    assert plan.training.num_classes == 3 and plan.class_names == plan.features.label.classes


def test_positive_class_and_learned_classes() -> None:
    plan = _plan(label="{source: events, field: default, positive: 'Yes'}")
    assert plan.features.label.positive == "Yes" and plan.features.label.classes is None
    assert plan.training.num_classes == 2
    ints = _plan(label="{source: events, field: churned, classes: [0, 1], positive: 1}")
    assert ints.features.label.classes == (0, 1) and ints.features.label.positive == 1


def test_plan_json_round_trips_the_categorical_contract() -> None:
    plan = _plan(model="lightgbm")
    again = Plan.model_validate_json(plan.to_json())
    assert again.training.features == plan.training.features


@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        ("{dtype: float32, categorical: true}", "applies to integer and string fields"),
        ("{dtype: bool, missing: error}", "missing applies to categorical fields"),
        ("{dtype: string, embedding_dim: 4}", "embedding_dim applies to encoding embedding"),
        ("{dtype: string, categories: [a, b], max_categories: 5}", "caps a learned vocabulary"),
        ("{dtype: string, categories: [a, 1]}", "must be strings, got 1"),
        ("{dtype: string, encoding: hashed}", "expected 'one_hot', 'ordinal'"),
        ("7", "expected a dtype (int32, int64"),
    ],
)
def test_categorical_settings_that_make_no_sense_are_refused(field: str, fragment: str) -> None:
    text = SPEC.replace("visits: int64", f"visits: {field}").replace("MODEL", "mlp")
    text = text.replace("TASK", "binary_classification").replace("LABEL", "{source: e, field: y}")
    with pytest.raises(SpecError) as info:
        validate_text(text, file="s.yaml")
    found = [d for d in info.value.errors if fragment in d.message]
    assert found, info.value
    assert found[0].yaml_path.startswith("features.views.stores.fields.visits")
    assert found[0].line == 19


def test_json_schema_takes_both_field_forms_and_refuses_a_bad_encoding() -> None:
    """Editors see what the compiler accepts: the short form, the long form, and its enums."""
    from jsonschema import Draft202012Validator
    from specml.compiler.load import load_text
    from specml.compiler.schema import json_schema

    validator = Draft202012Validator(json_schema())
    text = SPEC.replace("MODEL", "mlp").replace("TASK", "binary_classification")
    text = text.replace("LABEL", "{source: events, field: y, classes: [a, b], positive: b}")
    assert list(validator.iter_errors(load_text(text, "s.yaml").data)) == []
    bad = text.replace("encoding: ordinal", "encoding: hashed")
    assert list(validator.iter_errors(load_text(bad, "s.yaml").data))


def test_a_misspelt_key_in_the_long_form_gets_did_you_mean() -> None:
    text = SPEC.replace("MODEL", "mlp").replace("TASK", "binary_classification")
    text = text.replace("LABEL", "{source: events, field: y}")
    text = text.replace("encoding: ordinal", "encodng: ordinal")
    with pytest.raises(SpecError) as info:
        validate_text(text, file="s.yaml")
    (d,) = info.value.errors
    assert d.yaml_path == "features.views.stores.fields.cut.encodng"
    assert (d.line, d.col, d.hint) == (20, 30, "did you mean 'encoding'?")
