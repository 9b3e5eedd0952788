"""Vocabularies (learned, capped, declared), the unknown/missing buckets and the class mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from specml.compiler.errors import TargetError
from specml.compiler.ir import FeatureRef
from specml.runtime.encoding import (
    Vocabulary,
    class_names,
    encode_labels,
    learn_classes,
    learn_vocabulary,
    missing_mask,
)

from .plans import categorical, make_plan


def _ref(dtype: str = "string", **kw: object) -> FeatureRef:
    return FeatureRef(view_id="v", field="color", dtype=dtype, categorical=categorical(**kw))  # type: ignore[arg-type]


def _strings(*values: object) -> np.ndarray:
    return np.asarray(values, dtype=object)


def test_learned_vocabulary_is_most_frequent_first_ties_by_value() -> None:
    train = _strings("b", "c", "a", "c", "b", "c", "d", None, "", np.nan)
    vocab = learn_vocabulary(_ref(), train)
    assert vocab.values == ("c", "b", "a", "d")  # c:3, b:2, then a and d tie at 1: by value


def test_max_categories_and_min_frequency_cap_the_vocabulary() -> None:
    train = _strings(*("a" * 5), *("b" * 4), *("c" * 3), "d", "d", "e")
    assert learn_vocabulary(_ref(max_categories=2), train).values == ("a", "b")
    assert learn_vocabulary(_ref(min_frequency=3), train).values == ("a", "b", "c")
    capped = learn_vocabulary(_ref(min_frequency=2, max_categories=3), train)
    assert capped.values == ("a", "b", "c")
    # A value dropped by the cap encodes as unknown, like an unseen one.
    assert capped.encode(_strings("d", "e", "zzz")).tolist() == [3, 3, 3]


def test_declared_categories_keep_their_order_and_ignore_frequencies() -> None:
    train = _strings("Ideal", "Ideal", "Fair", "Premium")
    vocab = learn_vocabulary(_ref(categories=("Fair", "Good", "Ideal")), train)
    assert vocab.values == ("Fair", "Good", "Ideal")
    assert vocab.encode(_strings("Premium", "Good", "Fair")).tolist() == [3, 1, 0]


def test_unknown_and_missing_buckets() -> None:
    vocab = Vocabulary(("x", "y"), "string", missing="bucket")
    assert (vocab.unknown_index, vocab.missing_index, vocab.size) == (2, 3, 4)
    raw = _strings("y", "x", "new", None, "", np.nan)
    assert vocab.encode(raw).tolist() == [1, 0, 2, 3, 3, 3]
    as_unknown = Vocabulary(("x", "y"), "string", missing="unknown")
    assert as_unknown.size == 3
    assert as_unknown.encode(raw).tolist() == [1, 0, 2, 2, 2, 2]


def test_integer_vocabulary_takes_codes_with_or_without_missing_values() -> None:
    vocab = learn_vocabulary(_ref("int64"), np.asarray([7, 3, 3, 7, 7, 1], dtype=np.int64))
    assert vocab.values == (7, 3, 1) and vocab.kind == "integer"
    assert vocab.encode(np.asarray([1, 3, 99], dtype=np.int64)).tolist() == [2, 1, 3]
    assert vocab.encode(np.asarray([1.0, np.nan, 7.0])).tolist() == [2, 4, 0]
    assert vocab.encode(_strings(3, None)).tolist() == [1, 4]
    with_nan = learn_vocabulary(_ref("int64"), np.asarray([1.0, np.nan, 2.0, 2.0]))
    assert with_nan.values == (2, 1)
    assert learn_vocabulary(_ref("int64"), _strings(5, None, 4, 4)).values == (4, 5)


def test_vocabulary_json_round_trip() -> None:
    for vocab in (
        Vocabulary(("a", "1"), "string", "error", "unknown"),
        Vocabulary((3, -1), "integer", "bucket", "bucket"),
    ):
        data = json.loads(json.dumps(vocab.to_json()))
        assert Vocabulary.from_json(data) == vocab


def test_missing_mask_covers_none_nan_and_empty_string() -> None:
    assert missing_mask(_strings("a", None, "", np.nan, " ")).tolist() == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert not missing_mask(np.asarray([0, 1])).any()


def _plan(task: str = "multiclass_classification", **label: object):  # noqa: ANN202
    return make_plan(task, {"x": ("float32", None)}, num_classes=3, **label)  # type: ignore[arg-type]


def test_learned_classes_sort_strings_lexically_and_numbers_numerically() -> None:
    plan = _plan()
    t, lab = plan.training, plan.features.label
    assert learn_classes(t, lab, _strings("b", "a", "c", "a")) == ("a", "b", "c")
    assert learn_classes(t, lab, np.asarray([10, 2, 1, 2])) == (1, 2, 10)
    assert learn_classes(t, lab, np.asarray([2.0, 10.0, 1.0])) == (1, 2, 10)


def test_bool_labels_are_false_then_true_and_positive_is_index_one() -> None:
    plan = _plan("binary_classification")
    classes = learn_classes(plan.training, plan.features.label, np.asarray([True, False, True]))
    assert classes == (False, True)
    assert encode_labels(np.asarray([True, False]), classes).tolist() == [1, 0]
    assert class_names(classes) == ["False", "True"]


def test_declared_positive_class_becomes_index_one() -> None:
    plan = _plan("binary_classification", positive="No")
    classes = learn_classes(plan.training, plan.features.label, _strings("No", "Yes", "No"))
    assert classes == ("Yes", "No")
    assert encode_labels(_strings("No", "Yes"), classes).tolist() == [1, 0]


def test_declared_classes_are_kept_in_their_order() -> None:
    plan = _plan(classes=("Gentoo", "Adelie", "Chinstrap"))
    classes = learn_classes(plan.training, plan.features.label, _strings("Adelie"))
    assert classes == ("Gentoo", "Adelie", "Chinstrap")
    assert encode_labels(_strings("Chinstrap", "Gentoo"), classes).tolist() == [2, 0]


def test_label_outside_declared_classes_is_an_error_naming_it() -> None:
    with pytest.raises(TargetError) as err:
        encode_labels(_strings("Adelie", "Emperor", "Emperor"), ("Adelie", "Gentoo", "Chinstrap"))
    diag = err.value.diagnostics[0]
    assert "Emperor" in diag.message and "2 row(s)" in diag.message
    assert diag.path == ("features", "label", "classes")
    with pytest.raises(TargetError) as err:
        encode_labels(_strings("Adelie", None), ("Adelie", "Gentoo", "Chinstrap"))
    assert "1 row(s) with a missing value" in err.value.diagnostics[0].message
    assert err.value.diagnostics[0].path == ("features", "label", "field")


def test_class_count_disagreeing_with_the_task_is_an_error() -> None:
    plan = _plan()  # num_classes 3
    with pytest.raises(TargetError) as err:
        learn_classes(plan.training, plan.features.label, _strings("a", "b", "c", "d"))
    assert "4 classes" in err.value.diagnostics[0].message
    assert err.value.diagnostics[0].path == ("training", "num_classes")
    binary = _plan("binary_classification")
    with pytest.raises(TargetError):
        learn_classes(binary.training, binary.features.label, _strings("a", "b", "c"))


def test_integer_labels_map_through_their_decimal_names() -> None:
    classes = (0, 1, 5)
    assert encode_labels(np.asarray([5, 0, 1, 5]), classes).tolist() == [2, 0, 1, 2]
    assert encode_labels(np.asarray([5.0, 1.0]), classes).tolist() == [2, 1]
