"""Feature and prediction drift against a precomputed training reference (PSI and KS).

The reference is built once, at training time (`build_reference`), and saved as a small `.npz`:
per feature the quantile bin edges and the training share in each bin (for PSI), and the sorted
distinct training values with their exact training ECDF (for KS). A check then sorts the current
window once (all features in one `np.sort`) and `np.searchsorted`s the reference points into it,
so a repeat check never touches the training data again.

Conventions (the tests hold us to them):
- PSI bins: inner edges `e_1 < ... < e_k` are the training quantiles at i/bins (duplicates merged,
  so a discrete feature gets fewer bins); bin 0 is `x < e_1`, bin i is `e_i <= x < e_{i+1}`,
  the last bin is `x >= e_k`. PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over the shares r (training)
  and c (current).
- Empty bins: a share of 0 makes ln() infinite, so every share is floored at `EPSILON` (1e-4, the
  floor Evidently uses when no share is that small) before the sum; shares are not renormalised.
  A bin empty on both sides therefore contributes exactly 0.
- NaNs are left out of both sides (shares are over the non-missing values).
- KS is exact (equal to `scipy.stats.ks_2samp(...).statistic`) while the training column has at
  most `max_ks_points` distinct values. Above that the reference keeps `max_ks_points` evenly
  spaced order statistics with their EXACT training ECDF values; the training ECDF between two kept
  points is then only known to lie between theirs, so the statistic can be off by at most the
  largest ECDF step between kept points, stored per feature as `ks_error_bound`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EPSILON = 1e-4
PREDICTION = "prediction"


@dataclass(frozen=True)
class Reference:
    """The training-time summary that drift checks compare against."""

    feature_names: tuple[str, ...]
    edges: tuple[np.ndarray, ...]  # per feature: the inner bin edges (sorted, distinct)
    shares: tuple[np.ndarray, ...]  # per feature: training share per bin (len(edges) + 1)
    ks_values: tuple[np.ndarray, ...]  # per feature: kept sorted distinct training values
    ks_cdf: tuple[np.ndarray, ...]  # per feature: exact training ECDF at ks_values (right-cont.)
    ks_error_bound: tuple[float, ...]  # 0.0 when ks_values holds every distinct value
    n_rows: int
    bins: int

    def save(self, path: str | Path) -> Path:
        """Write the reference as one `.npz` (arrays + a JSON header); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "feature_names": list(self.feature_names),
            "ks_error_bound": list(self.ks_error_bound),
            "n_rows": self.n_rows,
            "bins": self.bins,
        }
        arrays: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
        for i in range(len(self.feature_names)):
            arrays[f"edges_{i}"] = self.edges[i]
            arrays[f"shares_{i}"] = self.shares[i]
            arrays[f"ks_values_{i}"] = self.ks_values[i]
            arrays[f"ks_cdf_{i}"] = self.ks_cdf[i]
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a reference written by `save`."""
        with np.load(Path(path)) as z:
            header = json.loads(bytes(z["header"]).decode())
            n = len(header["feature_names"])
            return cls(
                feature_names=tuple(header["feature_names"]),
                edges=tuple(z[f"edges_{i}"] for i in range(n)),
                shares=tuple(z[f"shares_{i}"] for i in range(n)),
                ks_values=tuple(z[f"ks_values_{i}"] for i in range(n)),
                ks_cdf=tuple(z[f"ks_cdf_{i}"] for i in range(n)),
                ks_error_bound=tuple(float(b) for b in header["ks_error_bound"]),
                n_rows=int(header["n_rows"]),
                bins=int(header["bins"]),
            )


@dataclass(frozen=True)
class FeatureDrift:
    """Drift figures for one feature."""

    feature: str
    psi: float
    ks: float
    ks_error_bound: float
    n_current: int


@dataclass(frozen=True)
class DriftReport:
    """Per-feature PSI and KS of one current window against a reference."""

    features: dict[str, FeatureDrift] = field(default_factory=dict)
    n_current: int = 0

    def value(self, feature: str, metric: str) -> float:
        """One feature's `psi` or `ks`."""
        return float(getattr(self.features[feature], metric))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary, features in reference order."""
        return {
            "n_current": self.n_current,
            "features": {
                name: {"psi": d.psi, "ks": d.ks, "ks_error_bound": d.ks_error_bound, "n": d.n_current}
                for name, d in self.features.items()
            },
        }


def _matrix(frame_or_array: Any, feature_names: Sequence[str]) -> np.ndarray:
    """A float64 (rows, features) matrix from a DataFrame (by column name) or an array."""
    if hasattr(frame_or_array, "columns"):
        missing = [n for n in feature_names if n not in frame_or_array.columns]
        if missing:
            raise KeyError(f"columns missing for drift: {missing}")
        values = frame_or_array[list(feature_names)].to_numpy(dtype=np.float64)
    else:
        values = np.asarray(frame_or_array, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[1] != len(feature_names):
        raise ValueError(f"{values.shape[1]} columns for {len(feature_names)} feature names")
    return values


def build_reference(
    frame_or_array: Any,
    feature_names: Sequence[str],
    bins: int = 10,
    max_ks_points: int = 20_000,
) -> Reference:
    """Summarise training data once: quantile PSI bins with shares, and the KS ECDF points."""
    x = _matrix(frame_or_array, feature_names)
    edges, shares, ks_values, ks_cdf, bounds = [], [], [], [], []
    quantiles = np.arange(1, bins) / bins
    for j in range(x.shape[1]):
        col = np.sort(x[:, j][~np.isnan(x[:, j])])
        n = col.size
        if n == 0:
            raise ValueError(f"feature {feature_names[j]!r} has no non-missing training values")
        inner = np.unique(np.quantile(col, quantiles))
        counts = np.bincount(np.searchsorted(inner, col, side="right"), minlength=inner.size + 1)
        edges.append(inner)
        shares.append(counts / n)
        distinct, last = np.unique(col), None
        cdf = np.searchsorted(col, distinct, side="right") / n
        if distinct.size > max_ks_points:
            keep = np.unique(np.linspace(0, distinct.size - 1, max_ks_points).round().astype(np.int64))
            # The true ECDF between two kept points lies in [cdf[k_i], cdf[k_{i+1}] - step], so the
            # largest gap between consecutive kept ECDF values bounds the error.
            gaps = np.diff(np.concatenate(([0.0], cdf[keep])))
            last = float(gaps.max())
            distinct, cdf = distinct[keep], cdf[keep]
        ks_values.append(distinct)
        ks_cdf.append(cdf)
        bounds.append(0.0 if last is None else last)
    return Reference(
        feature_names=tuple(feature_names),
        edges=tuple(edges),
        shares=tuple(shares),
        ks_values=tuple(ks_values),
        ks_cdf=tuple(ks_cdf),
        ks_error_bound=tuple(bounds),
        n_rows=int(x.shape[0]),
        bins=bins,
    )


def psi_from_shares(reference_shares: np.ndarray, current_shares: np.ndarray) -> np.ndarray:
    """PSI per row of two (features, bins) share matrices, with the EPSILON floor."""
    r = np.maximum(reference_shares, EPSILON)
    c = np.maximum(current_shares, EPSILON)
    return ((c - r) * np.log(c / r)).sum(axis=-1)


def check_drift(reference: Reference, current: Any) -> DriftReport:
    """PSI and KS of every reference feature in `current` (DataFrame or array), vectorised.

    The window is sorted once, every feature at once (`np.sort` along rows, NaNs last); then each
    statistic is a `np.searchsorted` of the few REFERENCE points (bin edges, ECDF values) into the
    sorted column, so counting costs O(bins + ks points) per feature instead of a pass over rows.
    """
    x = _matrix(current, reference.feature_names)
    columns = np.ascontiguousarray(x.T)  # one row per feature: contiguous sorts
    columns.sort(axis=1)
    n_valid = (~np.isnan(columns)).sum(axis=1)
    out: dict[str, FeatureDrift] = {}
    for j, name in enumerate(reference.feature_names):
        n = int(n_valid[j])
        col = columns[j, :n]
        below = np.searchsorted(col, reference.edges[j], side="left")  # #cur < e_i
        counts = np.diff(np.concatenate(([0], below, [n])))  # x<e_1, e_i<=x<e_i+1, x>=e_k
        psi = float(psi_from_shares(reference.shares[j], counts / max(n, 1)))
        ks = _ks(reference.ks_values[j], reference.ks_cdf[j], col)
        out[name] = FeatureDrift(name, psi, ks, reference.ks_error_bound[j], n)
    return DriftReport(features=out, n_current=int(x.shape[0]))


def _ks(ref_values: np.ndarray, ref_cdf: np.ndarray, current_sorted: np.ndarray) -> float:
    """Sup |F_ref - F_cur| over the real line, from the reference's distinct values v_i.

    The reference ECDF is flat between two of its values, so the supremum is reached at some v_i
    (F_cur(v_i) = #cur <= v_i) or just before it (F_cur(v_i-) = #cur < v_i, against F_ref(v_{i-1}));
    past the last value both ECDFs reach 1.
    """
    n = max(current_sorted.size, 1)
    cur_le = np.searchsorted(current_sorted, ref_values, side="right") / n
    cur_lt = np.searchsorted(current_sorted, ref_values, side="left") / n
    ref_before = np.concatenate(([0.0], ref_cdf[:-1]))
    at = np.abs(ref_cdf - cur_le).max(initial=0.0)
    before = np.abs(ref_before - cur_lt).max(initial=0.0)
    return float(max(at, before))


def prediction_reference(predictions: Any, bins: int = 10) -> Reference:
    """A reference over model outputs: one column `prediction`, or `prediction:<k>` per class."""
    p = np.asarray(predictions, dtype=np.float64)
    names = [PREDICTION] if p.ndim == 1 or p.shape[1] == 1 else [f"{PREDICTION}:{k}" for k in range(p.shape[1])]
    return build_reference(p, names, bins=bins)
