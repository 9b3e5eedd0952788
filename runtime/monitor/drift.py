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
- Categorical features (string columns): category shares with an unknown bucket, PSI over them
  and the total variation distance as `ks` (category_drift.py); the numeric tuples of a
  Reference hold only the other features (`numeric_names`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.files import replace_atomic

EPSILON = 1e-4
PREDICTION = "prediction"
FORMAT = 2  # reference file layout; 1 (one array per feature and kind) is still read
_KINDS = ("edges", "shares", "ks_values", "ks_cdf")
MAX_KS_POINTS = 2048  # KS grid per feature: error bound < 1 / MAX_KS_POINTS above that many values
MAX_CATEGORIES = 100  # categories a categorical feature's reference keeps (the rest: unknown)
_SEGMENT = 1 << 16  # rows per vectorised step (per feature): intermediates and tables stay in cache
_SLAB = 1024  # rows per transposing copy of a row-major window
_PARALLEL_MIN_VALUES = 1 << 20  # windows this large are counted on several threads (by feature)
_MAX_THREADS = 4


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
    # categorical features: name -> (categories, training shares per category + unknown last);
    # the numeric tuples above hold only the other features, in `numeric_names` order
    categories: dict[str, tuple[tuple[str, ...], np.ndarray]] = field(default_factory=dict)

    @property
    def numeric_names(self) -> tuple[str, ...]:
        """The numeric features (those with histograms and KS grids), in reference order."""
        return tuple(n for n in self.feature_names if n not in self.categories)

    def save(self, path: str | Path) -> Path:
        """Write the reference as one `.npz` (a JSON header + one array per kind); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "feature_names": list(self.feature_names),
            "ks_error_bound": list(self.ks_error_bound),
            "n_rows": self.n_rows,
            "bins": self.bins,
            "categories": {
                name: {"values": list(values), "shares": shares.tolist()}
                for name, (values, shares) in self.categories.items()
            },
        }
        arrays: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
        for kind in _KINDS:  # per kind: all features concatenated, plus each feature's length
            parts = getattr(self, kind)
            arrays[kind] = np.concatenate(parts) if parts else np.zeros(0)
            arrays[f"{kind}_sizes"] = np.array([len(a) for a in parts], dtype=np.int64)

        def save(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez_compressed(fh, **arrays)

        return replace_atomic(path, save, durable=False)

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a reference written by `save` (this format, or format 1: one array per feature)."""
        with np.load(Path(path)) as z:
            header = json.loads(bytes(z["header"]).decode())
            categories = {
                name: (tuple(c["values"]), np.asarray(c["shares"], dtype=np.float64))
                for name, c in header.get("categories", {}).items()
            }
            n = len(header["feature_names"]) - len(categories)
            version = int(header.get("format", 1))
            if version == 1:
                parts = {kind: tuple(z[f"{kind}_{i}"] for i in range(n)) for kind in _KINDS}
            elif version == FORMAT:
                parts = {
                    kind: tuple(np.split(z[kind], np.cumsum(z[f"{kind}_sizes"])[:-1])) if n else ()
                    for kind in _KINDS
                }
            else:
                raise ValueError(
                    f"{path}: drift reference format {version} is newer than this specml "
                    f"reads ({FORMAT}); rebuild it with this version or upgrade specml"
                )
            return cls(
                feature_names=tuple(header["feature_names"]),
                ks_error_bound=tuple(float(b) for b in header["ks_error_bound"]),
                n_rows=int(header["n_rows"]),
                bins=int(header["bins"]),
                categories=categories,
                **parts,
            )

    @cached_property
    def counter(self) -> _GridCounter:
        """The bucket tables a check counts with (derived from the grids, built on first use)."""
        return _GridCounter.build(
            [np.union1d(v, e) for v, e in zip(self.ks_values, self.edges, strict=True)]
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
                name: {
                    "psi": d.psi,
                    "ks": d.ks,
                    "ks_error_bound": d.ks_error_bound,
                    "n": d.n_current,
                }
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
    categorical: Sequence[str] | None = None,
) -> Reference:
    """Summarise training data once: quantile PSI bins with shares, and the KS ECDF grid; for
    categorical (string) columns of a DataFrame, category shares."""
    all_names = list(feature_names)
    from specml.runtime.monitor.category_drift import categorical_names, category_shares

    if categorical is None:  # not said: the string columns of a DataFrame
        categorical = categorical_names(frame_or_array, feature_names)
    categories = {
        name: category_shares(frame_or_array[name], name, max_categories=MAX_CATEGORIES)
        for name in categorical
    }
    feature_names = [n for n in feature_names if n not in categories]
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
            keep = np.unique(
                np.concatenate(([0], np.searchsorted(cdf, targets), [distinct.size - 1]))
            )
            keep = keep[keep < distinct.size]
            bound = float(np.max(cdf[keep[1:] - 1] - cdf[keep[:-1]], initial=0.0))
            distinct, cdf = distinct[keep], cdf[keep]
        ks_values.append(distinct)
        ks_cdf.append(cdf)
        bounds.append(bound)
    return Reference(
        feature_names=tuple(all_names),
        categories=categories,
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
    numeric = reference.numeric_names
    x = _matrix(current, numeric)
    out: dict[str, FeatureDrift] = {}
    if numeric:
        out.update(_numeric_drift(reference, x))
    if reference.categories:
        from specml.runtime.monitor.category_drift import category_drift, column

        for name, (values, shares) in reference.categories.items():
            out[name] = category_drift(name, values, shares, column(current, name))
    ordered = {name: out[name] for name in reference.feature_names}
    return DriftReport(features=ordered, n_current=int(x.shape[0]))


def _numeric_drift(reference: Reference, x: np.ndarray) -> dict[str, FeatureDrift]:
    """PSI and KS of the numeric features (the columns of x, in `numeric_names` order)."""
    below, at_or_below, n_valid = reference.counter.count(x)
    out: dict[str, FeatureDrift] = {}
    for j, name in enumerate(reference.numeric_names):
        grid, n = reference.counter.grids[j], int(n_valid[j])
        lt, le = below[j], at_or_below[j]
        edge_lt = lt[np.searchsorted(grid, reference.edges[j])]  # #cur < e_i
        counts = np.diff(np.concatenate(([0], edge_lt, [n])))  # x<e_1, e_i<=x<e_i+1, x>=e_k
        psi = float(psi_from_shares(reference.shares[j], counts / max(n, 1)))
        at = np.searchsorted(grid, reference.ks_values[j])
        ks = _ks(reference.ks_cdf[j], lt[at] / max(n, 1), le[at] / max(n, 1))
        out[name] = FeatureDrift(name, psi, ks, reference.ks_error_bound[j], n)
    return out


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

    Each feature's range [g_0, g_last] is cut into B equal buckets (4-8 x the grid size, enough
    to part the closest grid points where possible); y = x * scale + shift, clipped and truncated,
    maps a value to its bucket (bucket 0: below g_0, and NaN; the top bucket: g_last and above).
    Per bucket the table holds 2k, k = the padded index of the first grid point not in an earlier
    bucket. A bucket holds at most one grid point, so a value's code 2k + (x >= g_k) + (x > g_k)
    says exactly how many grid points lie below it and whether it equals one; `np.bincount` of the
    codes gives every count. The mapping is monotone and the tables come from the very same float
    operations applied to the grid, so rounding cannot misplace a value. A bucket holding several
    grid points maps to a `dump` code whose grid value is NaN; those few values are found and
    placed by `np.searchsorted`, so the counts are exact whatever the data. Work runs feature by
    feature on segments of `_SEGMENT` rows, so a feature's table and the intermediates stay in
    cache: about ten numpy passes per value, against ~15 ns/value for `np.sort` alone. Windows of
    `_PARALLEL_MIN_VALUES` values or more are split into feature ranges counted on up to
    `_MAX_THREADS` threads (numpy releases the GIL in these passes; each range owns its counts).

    Padded grid of a feature: [-inf, g_0..g_{m-1}, +inf, nan(dump)], each entry twice; code 0
    counts NaNs, 1 -inf, 2+2i values in (g_{i-1}, g_i), 3+2i values equal to g_i, 2+2m (3+2m for
    +inf) values above g_{m-1}, 4+2m the dump.
    """

    grids: tuple[np.ndarray, ...]
    mapping: tuple[tuple[float, float, float], ...]  # per feature: scale, shift, top bucket
    tables: tuple[np.ndarray, ...]  # per feature, int64 per bucket: the value's base code 2k
    padded: tuple[np.ndarray, ...]  # per feature, float64 per code: the grid point compared with
    dumps: tuple[bool, ...]  # per feature: has a multi-point bucket (values to look for)

    @classmethod
    def build(
        cls,
        grids: Sequence[np.ndarray],
        factor: int = 4,
        max_factor: int = 8,
        min_buckets: int = 1024,
    ) -> _GridCounter:
        """Bucket tables for these sorted, distinct grids (non-finite ones fall back to binary search)."""
        mapping, tables, padded, dumps = [], [], [], []
        for grid in grids:
            m, span = grid.size, float(grid[-1] - grid[0])
            closest = float(np.diff(grid).min()) if m > 1 else span
            low, high = max(min_buckets, factor * m), max(min_buckets, max_factor * m)
            buckets = int(min(max(span / closest + 2 if closest > 0 else high, low), high))
            scale = buckets / span if span > 0 else 1.0
            row = (scale, 1.5 - float(grid[0]) * scale, float(buckets + 1))  # g_0 mid bucket 1
            with np.errstate(invalid="ignore", over="ignore"):
                rel = _bucket(grid, row[0], row[1], 0.0, row[2])
                safe = bool(np.isfinite(scale * grid[[0, -1]]).all()) and rel[0] >= 1
            if safe:
                per = np.bincount(rel, minlength=buckets + 2)
                base = (
                    1 + np.cumsum(per) - per
                )  # padded index of the first grid point at/after a bucket
                base[0] = 0  # below g_0 (and NaN): the -inf sentinel
                base[per > 1] = m + 2  # dump
            else:  # the float mapping would misplace values (non-finite or huge grid): search them all
                base = np.full(buckets + 2, m + 2, dtype=np.int64)
            mapping.append(row)
            tables.append(2 * base)
            padded.append(np.repeat(np.concatenate(([-np.inf], grid, [np.inf, np.nan])), 2))
            dumps.append(bool((base == m + 2).any()))
        return cls(tuple(grids), tuple(mapping), tuple(tables), tuple(padded), tuple(dumps))

    def count(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per feature: #values < g_i, #values <= g_i (arrays over the grid), and #non-NaN values."""
        counts = [np.zeros(2 * (g.size + 3), np.int64) for g in self.grids]
        dumped: list[list[np.ndarray]] = [[] for _ in self.grids]
        n_feat = x.shape[1]

        def run(lo: int, hi: int) -> None:
            with np.errstate(invalid="ignore", over="ignore"):  # per thread: NaN -> int64, inf
                self._count_into(x, counts, dumped, lo, hi)

        threads = min(_MAX_THREADS, os.cpu_count() or 1, n_feat)
        if threads <= 1 or x.size < _PARALLEL_MIN_VALUES:
            run(0, n_feat)
        else:  # numpy releases the GIL in these passes: contiguous feature ranges per thread
            cuts = np.linspace(0, n_feat, threads + 1).astype(int)
            with ThreadPoolExecutor(threads, thread_name_prefix="specml-drift") as pool:
                jobs = [
                    pool.submit(run, int(lo), int(hi))
                    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
                ]
                for job in jobs:
                    job.result()
        below, at_or_below, n_valid = [], [], np.zeros(x.shape[1], np.int64)
        for j, grid in enumerate(self.grids):
            m, c = grid.size, counts[j]
            if dumped[j]:  # values in multi-point buckets: place them by binary search
                values = np.concatenate(dumped[j])
                c[2 * (m + 2)] -= values.size
                values = values[~np.isnan(values)]  # only where every bucket is the dump
                k = np.searchsorted(grid, values, side="left")  # grid points below each value
                equal = grid[np.minimum(k, m - 1)] == values
                c += np.bincount(2 + 2 * k + equal, minlength=c.size)
            cum = np.cumsum(c[1 : 2 * m + 4])  # codes 1 .. 3+2m
            below.append(cum[1 : 2 * m : 2])  # codes up to 2 + 2i
            at_or_below.append(cum[2 : 2 * m + 1 : 2])  # codes up to 3 + 2i
            n_valid[j] = cum[-1]
        return below, at_or_below, n_valid

    def _count_into(
        self,
        x: np.ndarray,
        counts: list[np.ndarray],
        dumped: list[list[np.ndarray]],
        lo: int,
        hi: int,
    ) -> None:
        """Add the codes of x's features lo..hi-1 to counts, segment by segment (one thread)."""
        n_rows, n_feat = x.shape[0], hi - lo
        seg = min(_SEGMENT, max(n_rows, 1))
        feature_major = x.shape[1] == 1 or x.strides[0] == x.itemsize  # columns contiguous already
        columns = None if feature_major else np.empty((n_feat, seg))
        work = (
            np.empty(seg),
            np.empty(seg, np.int64),
            np.empty(seg, np.int64),
            np.empty(seg, bool),
            np.empty(seg, bool),
            np.empty(seg, np.uint8),
        )
        for r0 in range(0, n_rows, seg):
            width = min(seg, n_rows - r0)
            if columns is None:
                block = x[r0 : r0 + width, lo:hi].T
            else:  # transpose in slabs that fit in cache
                block = columns[:, :width]
                for s0 in range(0, width, _SLAB):
                    rows = x[r0 + s0 : r0 + min(s0 + _SLAB, width), lo:hi]
                    np.copyto(block[:, s0 : s0 + _SLAB], rows.T)
            y, index, code, ge, gt, steps = (w[:width] for w in work)
            for j in range(lo, hi):
                column, (scale, shift, top) = block[j - lo], self.mapping[j]
                _bucket(column, scale, shift, 0.0, top, out=y, index=index)  # NaN -> index <= 0
                np.take(self.tables[j], index, out=code, mode="clip")  # NaN -> bucket 0 (-inf)
                edge = np.take(self.padded[j], code, out=y, mode="clip")
                if self.dumps[j]:
                    lost = np.isnan(edge, out=ge)  # only the dump is NaN (NaN values meet -inf)
                    if lost.any():
                        dumped[j].append(column[lost])
                # code += (x >= edge) + (x > edge), summed as bytes first (bool -> int64 is slow)
                np.greater_equal(column, edge, out=ge)
                np.greater(column, edge, out=gt)
                code += np.add(ge.view(np.uint8), gt.view(np.uint8), out=steps)
                counts[j] += np.bincount(code, minlength=counts[j].size)


def _bucket(
    x: Any,
    scale: float,
    shift: float,
    low: float,
    high: float,
    out: np.ndarray | None = None,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """Bucket index (int64), monotone in x: truncates x * scale + shift clipped to [low, high].

    NaN stays NaN through the clip, and its int64 cast is <= 0 (INT64_MIN on x86, 0 on ARM)."""
    y = np.multiply(x, scale, out=out)
    y += shift
    if index is None:
        index = np.empty(y.shape, np.int64)
    return np.clip(y, low, high, out=index, casting="unsafe")  # y >= 0: truncation is the floor


def prediction_reference(predictions: Any, bins: int = 10) -> Reference:
    """A reference over model outputs: one column `prediction`, or `prediction:<k>` per class."""
    p = np.asarray(predictions, dtype=np.float64)
    names = (
        [PREDICTION]
        if p.ndim == 1 or p.shape[1] == 1
        else [f"{PREDICTION}:{k}" for k in range(p.shape[1])]
    )
    return build_reference(p, names, bins=bins)
