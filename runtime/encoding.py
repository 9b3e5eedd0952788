"""Categorical vocabularies and class labels: learned from the training split, stored with the model.

Index layout of a categorical input with a vocabulary of V values:
  0 .. V-1  the vocabulary, in its order (declared order, or most frequent first, ties by value)
  V         the unknown bucket: unseen values, values rarer than `min_frequency`, values beyond
            `max_categories`, and missing values when `missing` is "unknown" or "error"
  V + 1     the missing bucket (only when `missing` is "bucket"): None, "" and NaN
With `unknown: error` / `missing: error` the server refuses such values before the model runs; the
model itself still maps them to the unknown bucket, so every row has an index.

Class labels: index i of the model's class outputs is `classes[i]`. Learned classes are sorted
(numbers numerically, strings lexically, bools False < True); for a binary task the positive class
(declared, or the second class) is index 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Categorical, FeatureRef, Label, Training

ClassValue = str | int | bool
LABEL_PATH = ("features", "label")


def _label_error(message: str, hint: str, path: tuple[str, ...] = LABEL_PATH) -> TargetError:
    return TargetError(
        [Diagnostic(message, path=path, hint=hint, stage="target", code="label_classes")]
    )


def missing_mask(values: np.ndarray) -> np.ndarray:
    """True where a raw value is missing: None, NaN, pandas NA, or the empty string."""
    import pandas as pd

    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return np.zeros(values.shape, dtype=bool)
    mask = np.asarray(pd.isna(values), dtype=bool)
    if values.dtype.kind in "OUS":
        mask |= values == ""
    return mask


@dataclass(frozen=True)
class Vocabulary:
    """The learned (or declared) vocabulary of one categorical input and its bucket policy."""

    values: tuple[str | int, ...]
    kind: Literal["string", "integer"]
    unknown: Literal["bucket", "error"] = "bucket"
    missing: Literal["bucket", "unknown", "error"] = "bucket"

    @property
    def unknown_index(self) -> int:
        """Index of the unknown bucket (V)."""
        return len(self.values)

    @property
    def missing_index(self) -> int:
        """Index missing values map to: V+1 with a missing bucket, else the unknown bucket."""
        return len(self.values) + 1 if self.missing == "bucket" else len(self.values)

    @property
    def size(self) -> int:
        """How many indices the encoding produces (vocabulary plus buckets)."""
        return len(self.values) + (2 if self.missing == "bucket" else 1)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Map raw values (1-D) to int64 indices per the layout above."""
        import pandas as pd

        raw = np.asarray(raw)
        missing = missing_mask(raw)
        if self.kind == "string":
            keys = pd.Index(list(self.values), dtype=object)
            probe = as_text(raw, missing)
        else:
            keys = pd.Index(np.asarray(self.values, dtype=np.int64))
            probe = _as_int64(raw, missing)
        idx = keys.get_indexer(probe) if len(keys) else np.full(len(raw), -1, dtype=np.intp)
        out = np.where(idx < 0, self.unknown_index, idx).astype(np.int64)
        out[missing] = self.missing_index
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form (stored in model metadata and serving.json)."""
        return {
            "vocabulary": list(self.values),
            "kind": self.kind,
            "unknown": self.unknown,
            "missing": self.missing,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        """Restore a vocabulary written by `to_json`."""
        kind = data["kind"]
        convert = str if kind == "string" else int
        values = tuple(convert(v) for v in data["vocabulary"])
        return cls(values, kind, data.get("unknown", "bucket"), data.get("missing", "bucket"))


def as_text(raw: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """An object array of str (missing positions ""), converting only when needed."""
    import pandas as pd

    if raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty"):
        return np.where(missing, "", raw)
    return np.where(missing, "", raw).astype(str).astype(object)


def _as_int64(raw: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Integer codes of a raw integer column (missing positions become 0; callers mask them)."""
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    filled = np.where(missing, 0, raw)
    return np.asarray(filled.astype(np.float64) if filled.dtype == object else filled).astype(
        np.int64
    )


def vocabulary_kind(ref: FeatureRef) -> Literal["string", "integer"]:
    """'string' for BYTES inputs, 'integer' for INT64 categoricals."""
    return "string" if ref.datatype == "BYTES" else "integer"


def learn_vocabulary(ref: FeatureRef, train_values: np.ndarray) -> Vocabulary:
    """The vocabulary of a categorical input from its TRAINING-split values (or the declared one)."""
    import pandas as pd

    cat = ref.categorical
    assert cat is not None, f"{ref.input_name} is not categorical"
    kind = vocabulary_kind(ref)
    if cat.categories is not None:
        convert = str if kind == "string" else int
        declared = tuple(v for v in dict.fromkeys(convert(v) for v in cat.categories) if v != "")
        return Vocabulary(declared, kind, cat.unknown, cat.missing)
    raw = np.asarray(train_values)
    present = raw[~missing_mask(raw)]
    if kind == "string":
        present = as_text(present, np.zeros(len(present), dtype=bool))
    else:
        present = _as_int64(present, np.zeros(len(present), dtype=bool))
    counts = pd.Series(present).value_counts(sort=False)
    table = pd.DataFrame({"value": counts.index.to_numpy(), "count": counts.to_numpy()})
    table = table[table["count"] >= max(cat.min_frequency, 1)]
    table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
    chosen = table["value"].head(cat.max_categories).tolist()
    values = tuple(str(v) for v in chosen) if kind == "string" else tuple(int(v) for v in chosen)
    return Vocabulary(values, kind, cat.unknown, cat.missing)


def learn_vocabularies(
    features: tuple[FeatureRef, ...], train: dict[str, np.ndarray]
) -> dict[str, Vocabulary]:
    """Vocabularies of every categorical input (by input name), from training columns."""
    return {
        f.input_name: learn_vocabulary(f, train[f.input_name])
        for f in features
        if f.categorical is not None
    }


def default_categorical(encoding: str = "one_hot") -> Categorical:
    """A Categorical with the spec's defaults (learned vocabulary, unknown/missing buckets); an
    embedding's width then follows the vocabulary (torch_net.embedding_width)."""
    return Categorical(
        encoding=encoding,  # type: ignore[arg-type]
        categories=None,
        max_categories=1000,
        min_frequency=1,
        unknown="bucket",
        missing="bucket",
        embedding_dim=None,
    )


# ---- class labels -------------------------------------------------------------------------------


def class_value(value: Any) -> ClassValue:
    """A label value as a plain class value (JSON-serialisable): bools stay bools, integral
    numbers become ints, the rest str."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return str(value)


def class_name(value: ClassValue) -> str:
    """The class as the `label` output writes it: strings as-is, ints as decimal strings."""
    return str(value)


def learn_classes(training: Training, label: Label, train_labels: np.ndarray) -> tuple:
    """The model's classes in index order: declared ones, else the sorted training labels; a
    binary task's positive class is index 1. Mismatches with the spec are errors naming it."""
    import pandas as pd

    if training.task == "regression":
        return ()
    raw = np.asarray(train_labels)
    present = raw[~missing_mask(raw)]
    if label.classes is not None:
        classes = list(label.classes)
    else:
        seen = {class_value(v) for v in pd.unique(present)}
        textual = any(isinstance(v, str) for v in seen)  # strings sort lexically, numbers by value
        classes = sorted(seen, key=str) if textual else sorted(seen)
    if label.positive is not None and training.task == "binary_classification":
        positive = _match_class(label.positive, classes)
        if positive is None:
            raise _label_error(
                f"label positive class {label.positive!r} is not among the classes {classes}",
                hint="set features.label.positive to one of the label's values",
                path=(*LABEL_PATH, "positive"),
            )
        classes = [c for c in classes if c != positive] + [positive]
    want = training.num_classes
    if len(classes) != want:
        where = (*LABEL_PATH, "classes") if label.classes is not None else ("training", "task")
        if training.task == "multiclass_classification" and label.classes is None:
            where = ("training", "num_classes")
        raise _label_error(
            f"label '{label.field}' has {len(classes)} classes {classes[:20]} in the training "
            f"split, but training.task {training.task} expects {want}",
            hint="declare features.label.classes, or fix training.num_classes / training.task",
            path=where,
        )
    return tuple(classes)


def _match_class(value: Any, classes: list) -> ClassValue | None:
    """The class equal to `value`, comparing as text when types differ (YAML "1" vs int 1)."""
    for c in classes:
        if c == value or class_name(c) == class_name(value):
            return c
    return None


def encode_labels(labels: np.ndarray, classes: tuple) -> np.ndarray:
    """Class indices (int64) of raw labels; a label outside `classes` is an error naming it."""
    import pandas as pd

    raw = np.asarray(labels)
    if raw.dtype.kind == "b" or raw.dtype == object:
        probe = np.array([class_name(class_value(v)) for v in raw], dtype=object)
    elif raw.dtype.kind == "f":
        probe = np.array(
            [class_name(int(v)) if float(v).is_integer() else str(v) for v in raw], dtype=object
        )
    else:
        probe = raw.astype(str).astype(object)
    missing = missing_mask(raw)
    if missing.any():
        raise _label_error(
            f"label has {int(missing.sum())} row(s) with a missing value (null/NaN/empty)",
            hint="drop the unlabelled rows from the label source, or fill them",
            path=(*LABEL_PATH, "field"),
        )
    idx = pd.Index([class_name(c) for c in classes], dtype=object).get_indexer(probe)
    bad = idx < 0
    if bad.any():
        outside = sorted({str(v) for v in raw[bad]})
        raise _label_error(
            f"label has {int(bad.sum())} row(s) with values outside the classes "
            f"{list(classes)}: {outside[:10]}",
            hint="declare every class in features.label.classes, or drop those rows",
            path=(*LABEL_PATH, "classes"),
        )
    return idx.astype(np.int64)


def class_names(classes: tuple) -> list[str]:
    """The `label` output strings of each class index."""
    return [class_name(c) for c in classes]
