"""Feature and prediction drift against a precomputed training reference (PSI and KS).

The reference is built once, at training time (`build_reference`), and saved as a small `.npz`:
per feature the quantile bin edges and the training share in each bin (for PSI), and a sorted grid
of training values with their exact training ECDF (for KS). A check never sorts the current window:
it counts, per feature, how many current values fall below / on each grid point (one O(rows) pass,
see `_GridCounter`), and both statistics follow from those counts.

Conventions (the tests hold us to them):
- PSI bins: inner edges `e_1 < ... < e_k` are the training quantiles at i/bins (duplicates merged,
  so a discrete feature gets fewer bins); bin 0 is `x < e_1`, bin i is `e_i <= x < e_{i+1}`,
  the last bin is `x >= e_k`. PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over the shares r (training)
  and c (current).
- Empty bins: a share of 0 makes ln() infinite, so every share is floored at `EPSILON` (1e-4, the
  floor Evidently uses when no share is that small) before the sum; shares are not renormalised.
  A bin empty on both sides therefore contributes exactly 0.
- NaNs are left out of both sides (shares are over the non-missing values).
- KS = sup_x |F_ref(x) - F_cur(x)|. It is exact (equal to `scipy.stats.ks_2samp(...).statistic`)
  while the training column has at most `max_ks_points` distinct values: both ECDFs are step
  functions, F_ref is flat between two of its values, so the supremum is at a grid value v_i
  (F_cur(v_i) = #cur <= v_i) or just before it (#cur < v_i, against F_ref(v_{i-1})).
  Above that the grid keeps the first distinct value whose ECDF reaches j/max_ks_points, for each j,
  with its EXACT ECDF. Between two kept points u < w the true F_ref lies in [F_ref(u), F_ref(w-)],
  and the check uses F_ref(u) there, so |KS - exact| <= max over kept neighbours of
  F_ref(w-) - F_ref(u) < 1/max_ks_points, stored per feature as `ks_error_bound` (0.0 when exact).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

EPSILON = 1e-4
PREDICTION = "prediction"
MAX_KS_POINTS = 4096  # KS grid per feature: error bound < 1 / MAX_KS_POINTS above that many values
_CHUNK_CELLS = 1 << 19  # cells (rows x features) per vectorised step: intermediates stay in cache
_CODE_BUFFER = 1 << 22  # codes gathered before one np.bincount


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

    @cached_property
    def counter(self) -> _GridCounter:
        """The bucket tables a check counts with (derived from the grids, built on first use)."""
        return _GridCounter.build([np.union1d(v, e) for v, e in zip(self.ks_values, self.edges, strict=True)])


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
    """A float64 (rows, features) matrix from a DataFrame (by column name) or an array, no copy if possible."""
    if hasattr(frame_or_array, "columns"):
        missing = [n for n in feature_names if n not in frame_or_array.columns]
        if missing:
            raise KeyError(f"columns missing for drift: {missing}")
        same = list(frame_or_array.columns) == list(feature_names)
        frame = frame_or_array if same else frame_or_array[list(feature_names)]
        values = frame.to_numpy(dtype=np.float64, copy=False)
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
    max_ks_points: int = MAX_KS_POINTS,
) -> Reference:
    """Summarise training data once: quantile PSI bins with shares, and the KS ECDF grid."""
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
        distinct = np.concatenate((col[:1], col[1:][col[1:] != col[:-1]]))  # col is sorted
        cdf = np.searchsorted(col, distinct, side="right") / n
        bound = 0.0
        if distinct.size > max_ks_points:
            # Keep the first value whose ECDF reaches j/m (and the first value): between kept
            # neighbours u < w the ECDF rises by F(w-) - F(u) < 1/m, the error bound.
            targets = np.arange(1, max_ks_points + 1) / max_ks_points
            keep = np.unique(np.concatenate(([0], np.searchsorted(cdf, targets), [distinct.size - 1])))
            keep = keep[keep < distinct.size]
            bound = float(np.max(cdf[keep[1:] - 1] - cdf[keep[:-1]], initial=0.0))
            distinct, cdf = distinct[keep], cdf[keep]
        ks_values.append(distinct)
        ks_cdf.append(cdf)
        bounds.append(bound)
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
    """PSI and KS of every reference feature in `current` (DataFrame or array), without sorting it.

    One vectorised pass counts, for every feature, the current values below and on each point of
    its grid (KS values + PSI edges); PSI bin counts and both ECDFs at the grid follow exactly.
    """
    x = _matrix(current, reference.feature_names)
    below, at_or_below, n_valid = reference.counter.count(x)
    out: dict[str, FeatureDrift] = {}
    for j, name in enumerate(reference.feature_names):
        grid, n = reference.counter.grids[j], int(n_valid[j])
        lt, le = below[j], at_or_below[j]
        edge_lt = lt[np.searchsorted(grid, reference.edges[j])]  # #cur < e_i
        counts = np.diff(np.concatenate(([0], edge_lt, [n])))  # x<e_1, e_i<=x<e_i+1, x>=e_k
        psi = float(psi_from_shares(reference.shares[j], counts / max(n, 1)))
        at = np.searchsorted(grid, reference.ks_values[j])
        ks = _ks(reference.ks_cdf[j], lt[at] / max(n, 1), le[at] / max(n, 1))
        out[name] = FeatureDrift(name, psi, ks, reference.ks_error_bound[j], n)
    return DriftReport(features=out, n_current=int(x.shape[0]))


def _ks(ref_cdf: np.ndarray, cur_lt: np.ndarray, cur_le: np.ndarray) -> float:
    """Sup |F_ref - F_cur| from the ECDFs at the reference's values v_i.

    The reference ECDF is flat between two of its values, so the supremum is reached at some v_i
    (F_cur(v_i) = #cur <= v_i) or just before it (F_cur(v_i-) = #cur < v_i, against F_ref(v_{i-1}));
    past the last value both ECDFs reach 1.
    """
    ref_before = np.concatenate(([0.0], ref_cdf[:-1]))
    at = np.abs(ref_cdf - cur_le).max(initial=0.0)
    before = np.abs(ref_before - cur_lt).max(initial=0.0)
    return float(max(at, before))


@dataclass(frozen=True)
class _GridCounter:
    """Counts current values below / on sorted per-feature grids in O(rows), without a sort.

    Each feature's range [g_0, g_last] is cut into B equal buckets (B ~ 8-16x the grid size).
    y = (x - g_0) * scale + offset maps a value to its bucket in one flat table of all features
    (`np.fmax` sends NaN to the feature's bucket 0, below g_0). Per bucket the table holds 2k, k =
    the (padded) index of the first grid point not in an earlier bucket, and `bound` holds that
    point. A bucket has at most one grid point, so a value's code 2k + (x >= g_k) + (x > g_k) says
    exactly how many grid points lie below it and whether it equals one; one `np.bincount` of the
    codes of all features then gives every count. The mapping is monotone and the tables are built
    by applying the very same float operations to the grid, so rounding cannot misplace a value.
    The rare bucket holding several grid points sends its values to a `dump` code; they are then
    placed with `np.searchsorted` (only those values, so a check stays exact whatever the data).

    Padded grid of feature j (from `pad[j]`): [-inf, g_0..g_{m-1}, +inf, nan(dump)]; code 2*pad
    counts NaNs, 2*pad+1 -inf, 2*pad+2+2i values in (g_{i-1}, g_i), 2*pad+3+2i values equal to g_i,
    2*pad+2+2m (+1 for +inf) values above g_{m-1}, 2*pad+4+2m the dump.
    """

    grids: tuple[np.ndarray, ...]
    origin: np.ndarray  # (F, 1) g_0
    scale: np.ndarray  # (F, 1) buckets per unit
    offset: np.ndarray  # (F, 1) flat table index of the feature's bucket 1, + 0.5
    low: np.ndarray  # (F, 1) flat table index of bucket 0 (below g_0, and NaN)
    high: np.ndarray  # (F, 1) flat table index of the top bucket (g_last and above)
    table: np.ndarray  # flat int64: 2 * padded grid index per bucket
    bound: np.ndarray  # flat float64: the padded grid value per bucket
    pad: np.ndarray  # (F,) start of each feature's padded grid
    slots: int

    @classmethod
    def build(cls, grids: Sequence[np.ndarray], max_buckets: int = 1 << 17) -> _GridCounter:
        """Bucket tables for these sorted, distinct, finite grids."""
        tables, bounds, rows, pad, t_off, p = [], [], [], [], 0, 0
        for grid in grids:
            m = grid.size
            span = float(grid[-1] - grid[0])
            buckets = min(max_buckets, 1 << max(10, int(8 * m - 1).bit_length()))
            while True:
                scale = buckets / span if span > 0 and np.isfinite(buckets / span) else 1.0
                row = (float(grid[0]), scale, t_off + 1.5, float(t_off), float(t_off + buckets + 1))
                b = _bucket(grid, *row).astype(np.int64) - t_off
                per = np.bincount(b, minlength=buckets + 2)
                if per.max() <= 1 or buckets >= max_buckets or per[per > 1].sum() <= 0.01 * m:
                    break
                buckets *= 2
            padded = np.concatenate(([-np.inf], grid, [np.inf, np.nan]))
            index = p + 1 + np.cumsum(per) - per  # first grid point at or after each bucket
            index[0] = p  # below g_0 (and NaN): the -inf sentinel
            index[per > 1] = p + m + 2  # dump
            tables.append(2 * index)
            bounds.append(padded[index - p])
            rows.append(row)
            pad.append(p)
            t_off, p = t_off + buckets + 2, p + m + 3
        cols = np.array(rows, dtype=np.float64).reshape(-1, 5).T[:, :, None]
        return cls(tuple(grids), cols[0], cols[1], cols[2], cols[3], cols[4],
                   np.concatenate(tables) if tables else np.zeros(0, np.int64),
                   np.concatenate(bounds) if bounds else np.zeros(0),
                   np.array(pad, dtype=np.int64), 2 * sum(g.size + 3 for g in grids))

    def count(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per feature: #values < g_i, #values <= g_i (arrays over the grid), and #non-NaN values."""
        n_rows, n_feat = x.shape
        counts = np.zeros(self.slots, np.int64)
        rows = max(1024, _CHUNK_CELLS // max(n_feat, 1))
        codes = np.empty(max(_CODE_BUFFER, rows * n_feat), np.int64)
        used = 0
        feature_major = n_feat == 1 or x.strides[0] == x.itemsize  # columns contiguous already
        for r0 in range(0, n_rows, rows):
            block = x[r0:r0 + rows].T
            block = block if feature_major else np.ascontiguousarray(block)
            if used + block.size > codes.size:
                counts += np.bincount(codes[:used], minlength=self.slots)
                used = 0
            code = codes[used:used + block.size].reshape(block.shape)
            self._codes(block, code)
            used += block.size
        counts += np.bincount(codes[:used], minlength=self.slots)
        below, at_or_below, n_valid = [], [], np.zeros(n_feat, np.int64)
        for j, grid in enumerate(self.grids):
            base, m = 2 * int(self.pad[j]), grid.size
            dump = int(counts[base + 2 * (m + 2)])
            if dump:  # values in buckets with several grid points: place them by binary search
                counts[base + 2 * (m + 2)] = 0
                counts[base:base + 2 * (m + 3)] += self._search(j, np.ascontiguousarray(x[:, j]), m)
            cum = np.cumsum(counts[base + 1:base + 2 * m + 4])
            below.append(cum[1:2 * m:2])  # codes up to 2*pad + 2 + 2i
            at_or_below.append(cum[2:2 * m + 1:2])  # codes up to 2*pad + 3 + 2i
            n_valid[j] = cum[-1]
        return below, at_or_below, n_valid

    def _codes(self, block: np.ndarray, code: np.ndarray) -> None:
        """Write each value's code (see the class docstring) into `code`, same shape as block."""
        y = _bucket(block, self.origin, self.scale, self.offset, self.low, self.high)
        index = y.astype(np.int64)
        np.take(self.table, index, out=code, mode="clip")  # indices are in range by construction
        edge = self.bound.take(index, mode="clip")
        code += block >= edge
        code += block > edge

    def _search(self, j: int, column: np.ndarray, m: int) -> np.ndarray:
        """Codes histogram of feature j's values that fell in multi-point buckets (binary search)."""
        y = _bucket(column, *(float(a[j, 0]) for a in (self.origin, self.scale, self.offset, self.low, self.high)))
        base = 2 * int(self.pad[j])
        values = column[self.table[y.astype(np.int64)] == base + 2 * (m + 2)]
        grid = self.grids[j]
        k = np.searchsorted(grid, values, side="left")  # grid points below each value
        equal = grid[np.minimum(k, m - 1)] == values
        return np.bincount(2 + 2 * k + equal, minlength=2 * (m + 3))


def _bucket(x: Any, origin: Any, scale: Any, offset: Any, low: Any, high: Any) -> np.ndarray:
    """Flat bucket position (float, truncate for the index); NaN goes to `low`. Monotone in x."""
    y = np.subtract(x, origin)
    y *= scale
    y += offset
    np.fmax(y, low, out=y)
    np.minimum(y, high, out=y)
    return y


def prediction_reference(predictions: Any, bins: int = 10) -> Reference:
    """A reference over model outputs: one column `prediction`, or `prediction:<k>` per class."""
    p = np.asarray(predictions, dtype=np.float64)
    names = [PREDICTION] if p.ndim == 1 or p.shape[1] == 1 else [f"{PREDICTION}:{k}" for k in range(p.shape[1])]
    return build_reference(p, names, bins=bins)
