"""Unknown and missing categories: what serving.json's vocabularies say about a request.

The graph itself maps an unseen category to the unknown bucket and a missing one (null, "", or
INT64's missing marker) to its bucket, so the server only counts them, per feature
(`specml_feature_unknown_total`, `specml_feature_missing_total`; numeric inputs count NaN as
missing), and refuses a request with a 400 naming the input and the value when the feature's
policy for that case is `error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from specml.runtime.serving.tensors import INT64_MISSING, InputSchema, ProtocolError

# Below this many rows a set lookup beats np.isin's sort.
_SET_LOOKUP_ROWS = 32


@dataclass(frozen=True)
class CategoryPolicy:
    """One categorical input's vocabulary and what happens to unseen / missing values."""

    vocabulary: tuple[Any, ...]
    unknown: str  # bucket | error
    missing: str  # bucket | unknown | error

    @classmethod
    def from_json(cls, name: str, doc: Any) -> CategoryPolicy:
        """From serving.json's `categorical.<input>` object."""
        if not isinstance(doc, dict) or not isinstance(doc.get("vocabulary"), list):
            raise ValueError(f"categorical '{name}' needs a 'vocabulary' list")
        unknown, missing = doc.get("unknown", "bucket"), doc.get("missing", "bucket")
        if unknown not in ("bucket", "error") or missing not in ("bucket", "unknown", "error"):
            raise ValueError(f"categorical '{name}' has unknown {unknown!r} / missing {missing!r}")
        return cls(tuple(doc["vocabulary"]), unknown, missing)


@dataclass(frozen=True)
class CategoryCount:
    """Unknown and missing values of one input in one request."""

    feature: str
    unknown: int
    missing: int


class _Check:
    def __init__(self, name: str, datatype: str, policy: CategoryPolicy | None) -> None:
        self.name = name
        self.datatype = datatype
        self.policy = policy if datatype != "FP32" else None  # numbers have no vocabulary
        vocab = self.policy.vocabulary if self.policy else ()
        if datatype == "BYTES":
            values = [str(v) for v in vocab]
            self.array = np.array(values, dtype=object)
        else:
            values = [int(v) for v in vocab]
            self.array = np.array(values, dtype=np.int64)
        self.known = frozenset(values)

    def count(self, column: np.ndarray) -> CategoryCount | None:
        flat = column.reshape(-1)
        if self.datatype == "FP32":
            missing = int(np.count_nonzero(np.isnan(flat)))
            return CategoryCount(self.name, 0, missing) if missing else None
        absent = flat == ("" if self.datatype == "BYTES" else INT64_MISSING)
        missing = int(np.count_nonzero(absent))
        if self.policy is None:
            return CategoryCount(self.name, 0, missing) if missing else None
        if flat.size <= _SET_LOOKUP_ROWS:
            seen = np.fromiter((v in self.known for v in flat.tolist()), bool, flat.size)
        else:
            seen = np.isin(flat, self.array)
        unseen = ~(seen | absent)
        unknown = int(np.count_nonzero(unseen))
        if unknown and self.policy.unknown == "error":
            value = flat[np.argmax(unseen)]
            raise ProtocolError(
                f"input '{self.name}': unknown category {value!r} (its policy for unknown values "
                f"is error; known: {_preview(self.policy.vocabulary)})"
            )
        if missing and self.policy.missing == "error":
            raise ProtocolError(
                f"input '{self.name}' is missing (null or empty) in row {int(np.argmax(absent))} "
                "and its policy for missing values is error"
            )
        return CategoryCount(self.name, unknown, missing) if unknown or missing else None


def _preview(vocabulary: tuple[Any, ...], limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in vocabulary[:limit])
    return shown + (f", ... ({len(vocabulary)} in all)" if len(vocabulary) > limit else "")


class CategoryGuard:
    """Counts unknown/missing values per input of a request; refuses policy `error` cases."""

    def __init__(self, categorical: dict[str, CategoryPolicy], schema: InputSchema) -> None:
        self._checks = [_Check(i.name, i.datatype, categorical.get(i.name)) for i in schema.inputs]

    def series(self) -> list[tuple[str, str]]:
        """(kind, feature) of every counter this model can move: unknown for categorical
        inputs, missing for all (exported at zero from the start, so rates have a baseline)."""
        out = []
        for check in self._checks:
            if check.policy is not None:
                out.append(("unknown", check.name))
            out.append(("missing", check.name))
        return out

    def inspect(self, inputs: dict[str, np.ndarray]) -> list[CategoryCount]:
        """Per input with unknown or missing values: the counts (ProtocolError 400 on `error`)."""
        counts = []
        for check in self._checks:
            found = check.count(inputs[check.name])
            if found is not None:
                counts.append(found)
        return counts
