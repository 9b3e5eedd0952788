"""Seeded, deterministic demo data for any Plan: time-stamped sources with a learnable label.

Every source of the Plan gets a table with its timestamp column, the join keys of the entities
whose views read it, and those views' fields. The label source also carries the join keys of every
entity the model uses and the label, which is a function of the point-in-time feature values (as
the feature store will join them), plus noise. A few float values are missing, and TTLs make some
joined values expire, as in real data.

The "world" (each field's distribution, the label's weights) depends only on the Plan's system and
field names, and the seed only draws samples from it: data written with another seed is new data
from the same process, so a model trained on one seed still scores well on another.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from specml.compiler.ir import DataSource, Plan

START = "2024-01-01T00:00:00Z"
SPAN_DAYS = 180
MISSING_RATE = 0.02
# Category names for string fields the examples use; any other string field gets cat_0..cat_4.
CATEGORY_NAMES: dict[str, tuple[str, ...]] = {
    "plan_type": ("basic", "standard", "premium", "family", "business"),
    "merchant_category": ("grocery", "fuel", "restaurants", "electronics", "travel"),
    "store_format": ("convenience", "supermarket", "hypermarket", "outlet", "online"),
}


def _source_entities(plan: Plan) -> dict[str, list[str]]:
    """source id -> entity ids whose keys that source carries (the label source: all model entities)."""
    views = {v.id: v for v in plan.features.views}
    out: dict[str, list[str]] = {s.id: [] for s in plan.features.sources}
    for v in plan.features.views:
        if v.entity_id not in out[v.source_id]:
            out[v.source_id].append(v.entity_id)
    label_src = plan.features.label.source_id
    for ref in plan.training.features:
        ent = views[ref.view_id].entity_id
        if ent not in out[label_src]:
            out[label_src].append(ent)
    return out


def _entity_keys(plan: Plan, entity_id: str, index: np.ndarray) -> dict[str, np.ndarray]:
    """Join-key columns for entity indices (several keys: derived, still one-to-one with the index)."""
    import numpy as np

    ent = next(e for e in plan.features.entities if e.id == entity_id)
    cols: dict[str, np.ndarray] = {}
    for k, key in enumerate(ent.join_keys):
        if ent.dtype == "string":
            cols[key] = np.array([f"{entity_id}_{i:06d}" + (f"_{k}" if k else "") for i in index])
        else:
            cols[key] = (1000 + index + k * 1_000_000).astype("int64")
    return cols


def _world(plan: Plan, *names: str) -> np.random.Generator:
    """A generator for the data-generating process itself, fixed by the system and the names given."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256("\0".join((plan.system.name, *names)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _field_values(
    rng: np.random.Generator,
    world: np.random.Generator,
    dtype: str,
    latent: np.ndarray,
    name: str = "",
) -> np.ndarray:
    """One feature column: a per-field distribution (from `world`) shifted by the latent trait."""
    import numpy as np

    n = len(latent)
    loading, base, scale, shift, cut = (
        world.uniform(-1, 1),
        world.uniform(1, 40),
        world.uniform(1, 200),
        world.uniform(-0.5, 0.5),
        world.normal(0.5, 0.3),
    )
    raw = loading * latent + rng.normal(0, 1, n)
    if dtype in ("int32", "int64"):
        lam = np.exp(np.log(base) + 0.35 * raw)
        return rng.poisson(lam).astype(dtype)
    if dtype in ("float32", "float64"):
        values = scale * np.exp(0.4 * raw + shift)
        values[rng.random(n) < MISSING_RATE] = np.nan
        return values.astype(dtype)
    if dtype == "bool":
        return raw > cut
    names = CATEGORY_NAMES.get(name, tuple(f"cat_{k}" for k in range(5)))
    values = np.array(names, dtype=object)[np.clip(np.round(raw + 2), 0, 4).astype(int)]
    values[rng.random(n) < MISSING_RATE] = None
    return values


def _label(plan: Plan, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """The label: a fixed linear + interaction function of the standardised features, plus noise."""
    import numpy as np

    n, f = x.shape
    mean = np.nanmean(x, axis=0) if n else np.zeros(f)
    std = np.nanstd(x, axis=0)
    z = np.nan_to_num((x - mean) / np.where(std > 0, std, 1.0))
    world = _world(plan, "label", *(ref.ref for ref in plan.training.features))
    w = world.normal(0, 1, f)
    score = z @ w + (0.7 * z[:, 0] * z[:, 1] if f >= 2 else 0.0)
    score = (score - score.mean()) / (score.std() or 1.0)
    task = plan.training.task
    if task == "binary_classification":
        p = 1 / (1 + np.exp(-(5.0 * score - 7.0)))  # ~10% positives, strong signal
        return _class_labels(plan, (rng.random(n) < p).astype("int64"))
    if task == "multiclass_classification":
        k = plan.training.num_classes
        logits = 2.5 * (z @ world.normal(0, 1, (f, k)))
        logits += rng.gumbel(0, 1, logits.shape)
        return _class_labels(plan, logits.argmax(axis=1).astype("int64"))
    return np.maximum(100 + 20 * score + rng.normal(0, 4, n), 1.0).astype("float64")


def _class_labels(plan: Plan, index: np.ndarray) -> np.ndarray:
    """Class indices as the spec's declared class values (binary: 1 is the positive class), or
    the indices themselves when the classes are learned."""
    import numpy as np

    label = plan.features.label
    if label.classes is None:
        return index
    classes = list(label.classes)
    if plan.training.task == "binary_classification":
        positive = label.positive if label.positive is not None else classes[1]
        classes = [c for c in classes if str(c) != str(positive)] + [positive]
    return np.array(classes, dtype=object)[index]


def asof_features(plan: Plan, tables: dict[str, pd.DataFrame], label_src: str) -> np.ndarray:
    """The model's features as of each label row, as numbers: a categorical feature as its
    category's effect on the label (a fixed value per category; missing: 0)."""
    import numpy as np

    raw = asof_columns(plan, tables, label_src)
    cols = []
    for ref in plan.training.features:
        values = raw[ref.ref]
        if ref.categorical is None and ref.dtype != "string":
            cols.append(values.to_numpy(dtype="float64", na_value=np.nan))
            continue
        effect: dict[str, float] = {}
        codes = []
        for v in values.tolist():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                codes.append(0.0)
                continue
            key = str(v)
            if key not in effect:
                effect[key] = float(_world(plan, "category", ref.ref, key).normal(0, 1.5))
            codes.append(effect[key])
        cols.append(np.asarray(codes, dtype="float64"))
    return np.stack(cols, axis=1) if cols else np.zeros((len(raw), 0))


def asof_columns(plan: Plan, tables: dict[str, pd.DataFrame], label_src: str) -> pd.DataFrame:
    """The model's raw features as of each label row (backward as-of join within each view's
    TTL): one column per `view:field`, strings kept, missing as NaN/None."""
    import pandas as pd

    sources = {s.id: s for s in plan.features.sources}
    views = {v.id: v for v in plan.features.views}
    ents = {e.id: e for e in plan.features.entities}
    base = tables[label_src]
    ts = sources[label_src].timestamp_field
    cols: dict[str, pd.Series] = {}
    for ref in plan.training.features:
        view = views[ref.view_id]
        if view.source_id == label_src:
            cols[ref.ref] = base[ref.field].reset_index(drop=True)
            continue
        keys = list(ents[view.entity_id].join_keys)
        right = tables[view.source_id]
        rts = sources[view.source_id].timestamp_field
        left = base[[ts, *keys]].reset_index().rename(columns={ts: "_t"}).sort_values("_t")
        r = right[[rts, *keys, ref.field]].rename(columns={rts: "_t"}).sort_values("_t")
        joined = pd.merge_asof(
            left, r, on="_t", by=keys, tolerance=pd.Timedelta(seconds=view.ttl_seconds)
        ).sort_values("index")
        cols[ref.ref] = joined[ref.field].reset_index(drop=True)
    return pd.DataFrame(cols, index=range(len(base)))


def demo_tables(plan: Plan, rows: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Build every source's table in memory, deterministically from (plan, rows, seed)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    label_src = plan.features.label.source_id
    src_entities = _source_entities(plan)
    n_entities = max(10, rows // 8)
    latent = {e.id: rng.normal(0, 1, n_entities) for e in plan.features.entities}
    start = pd.Timestamp(START)
    span = SPAN_DAYS * 86400

    # The label source drives time: one row per labelled event.
    label_secs = np.sort(rng.integers(0, span, rows))
    label_index = {e: rng.integers(0, n_entities, rows) for e in src_entities[label_src]}
    tables: dict[str, pd.DataFrame] = {}
    for source in sorted(plan.features.sources, key=lambda s: (s.id != label_src, s.id)):
        ents = src_entities[source.id]
        if source.id == label_src:
            secs, index = label_secs, label_index
        else:
            # Most rows shortly precede a labelled event of the same entity (fresh within TTL);
            # the rest are background rows at random times.
            ttl = (
                min(
                    (v.ttl_seconds for v in plan.features.views if v.source_id == source.id),
                    default=span,
                )
                or span
            )
            near = rng.random(rows) < 0.9
            lag = rng.integers(0, max(1, int(0.8 * min(ttl, span))), rows)
            secs = np.where(near, label_secs - lag, rng.integers(0, span, rows))
            index = {
                e: np.where(near, label_index[e], rng.integers(0, n_entities, rows))
                if e in label_index
                else rng.integers(0, n_entities, rows)
                for e in ents
            }
        order = np.argsort(secs, kind="stable")
        secs = secs[order]
        frame: dict[str, object] = {}
        for e in ents:
            frame.update(_entity_keys(plan, e, index[e][order]))
        frame[source.timestamp_field] = start + pd.to_timedelta(secs, unit="s")
        if source.created_timestamp_field:
            frame[source.created_timestamp_field] = frame[source.timestamp_field] + pd.Timedelta(
                seconds=60
            )
        for view in (v for v in plan.features.views if v.source_id == source.id):
            view_trait = latent[view.entity_id][index[view.entity_id][order]]
            for fld in view.fields:
                if fld.name not in frame:
                    world = _world(plan, "field", view.id, fld.name)
                    frame[fld.name] = _field_values(rng, world, fld.dtype, view_trait, fld.name)
        tables[source.id] = pd.DataFrame(frame)
    features = asof_features(plan, tables, label_src)
    tables[label_src][plan.features.label.field] = _label(plan, rng, features)
    return tables


def _source_path(source: DataSource, base_dir: Path) -> Path:
    path = Path(source.path)
    return path if path.is_absolute() else base_dir / path


def write_demo_data(
    plan: Plan, base_dir: str | Path, rows: int = 2000, seed: int = 0
) -> list[Path]:
    """Write each source of the Plan (parquet or csv, at its path under base_dir); return the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = Path(base_dir)
    tables = demo_tables(plan, rows, seed)
    written = []
    for source in plan.features.sources:
        table = tables[source.id]
        path = _source_path(source, base)
        path.parent.mkdir(parents=True, exist_ok=True)
        if source.format == "csv":
            table.to_csv(path, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)
        written.append(path)
    return written
