"""Drift of categorical features: category shares with an unknown bucket (see drift.py).

The reference keeps, per string feature, the training share of each category (most frequent
first, ties by value, at most drift.MAX_CATEGORIES) and of an "unknown" bucket: every other value,
and at check time every value never seen in training. Missing values (None, NaN, "") are left out
of both sides, as for numbers. PSI is drift's sum over those buckets (same EPSILON floor); `ks` is
the total variation distance 0.5 * sum_i |c_i - r_i|, like KS a [0, 1] distance, and exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from specml.runtime.monitor.drift import FeatureDrift, psi_from_shares


def categorical_names(frame: Any, feature_names: Sequence[str]) -> list[str]:
    """The columns of a DataFrame holding categories (strings, bools as text, pandas categories)."""
    if not hasattr(frame, "columns"):
        return []
    import pandas as pd
    from pandas.api import types as t

    return [
        n
        for n in feature_names
        if n in frame.columns
        and (
            t.is_object_dtype(frame[n])
            or t.is_string_dtype(frame[n])
            or isinstance(frame[n].dtype, pd.CategoricalDtype)
        )
    ]


def _present_strings(values: Any) -> np.ndarray:
    """A categorical column's non-missing values as str (None, NaN and "" are missing)."""
    import pandas as pd

    series = pd.Series(np.asarray(values, dtype=object))
    present = series[series.notna()].astype(str)
    return present[present != ""].to_numpy(dtype=object)


def category_shares(
    values: Any, name: str, max_categories: int
) -> tuple[tuple[str, ...], np.ndarray]:
    """Training categories (most frequent first, ties by value) and shares, unknown last."""
    present = _present_strings(values)
    if present.size == 0:
        raise ValueError(f"feature {name!r} has no non-missing training values")
    cats, counts = np.unique(present.astype(str), return_counts=True)
    order = np.lexsort((cats, -counts))[:max_categories]
    kept = tuple(str(c) for c in cats[order])
    shares = np.append(counts[order], counts.sum() - counts[order].sum()) / present.size
    return kept, shares.astype(np.float64)


def column(current: Any, name: str) -> Any:
    """A categorical feature's values in a current window (a DataFrame)."""
    if hasattr(current, "columns"):
        if name not in current.columns:
            raise KeyError(f"columns missing for drift: {[name]}")
        return current[name].to_numpy()
    raise ValueError(f"categorical feature {name!r} needs a DataFrame window")


def category_drift(
    name: str, categories: tuple[str, ...], reference_shares: np.ndarray, values: Any
) -> FeatureDrift:
    """PSI over the reference's categories + unknown bucket, and the total variation distance."""
    import pandas as pd

    present = _present_strings(values)
    n = int(present.size)
    index = pd.Index(list(categories), dtype=object).get_indexer(present.astype(str))
    counts = np.bincount(np.where(index < 0, len(categories), index), minlength=len(categories) + 1)
    current = counts / max(n, 1)
    psi = float(psi_from_shares(reference_shares, current))
    tvd = float(0.5 * np.abs(current - reference_shares).sum()) if n else 0.0
    return FeatureDrift(name, psi, tvd, 0.0, n)
