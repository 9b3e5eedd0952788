"""Build tiny servable fixtures without training: an ONNX model, a model folder, a Feast repo.

Used by the serving tests and benches (and handy for the training side's skew check). The model
folder follows the export contract exactly: `model.onnx` (one [N, 1] input per feature, float32 /
int64 / string, encoding, NaN imputation and scaling inside the graph; outputs `output` and, for
classification, `label`) plus `serving.json` format 2.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.serving.fixture_onnx import make_tabular_onnx

# The churn example's two views, as the fixture Feast repo defines them.
CHURN_VIEWS: dict[str, dict[str, str]] = {
    "customer_stats": {
        "monthly_spend": "float32",
        "support_calls_30d": "int64",
        "tenure_months": "int64",
    },
    "usage": {"logins_7d": "int64", "minutes_7d": "float32"},
}
CHURN_FEATURES: tuple[str, ...] = tuple(f"{v}:{f}" for v, fs in CHURN_VIEWS.items() for f in fs)
# A view with a string feature (`make_feast_repo(..., strings=True)`): every 5th customer has no
# profile row, every 6th (from 1) a plan outside PLANS (an unseen category).
PROFILE_VIEW: dict[str, dict[str, str]] = {"profile": {"plan": "string"}}
PROFILE_FEATURES: tuple[str, ...] = ("profile:plan",)
PLANS = ("basic", "plus", "pro")


def default_classes(n_classes: int) -> tuple[str, ...] | None:
    """Class names for a test model: binary no/yes (positive yes), else class_0..; 1: regression."""
    if n_classes == 1:
        return None
    if n_classes == 2:
        return ("no", "yes")
    return tuple(f"class_{k}" for k in range(n_classes))


def write_model_dir(
    model_dir: Path,
    features: tuple[str, ...] = CHURN_FEATURES,
    n_classes: int = 2,
    model_name: str = "churn",
    model_version: str = "1",
    feature_repo: Path | None = None,
    entity_join_keys: tuple[str, ...] = ("customer_id",),
    hidden: tuple[int, ...] = (64, 32),
    seed: int = 0,
    categorical: dict[str, tuple[Any, ...]] | None = None,
    policies: dict[str, tuple[str, str]] | None = None,
    classes: tuple[str | int, ...] | None = None,
) -> Path:
    """A model folder per the export contract: model.onnx + serving.json (format 2). Inputs are
    named by each feature's field; `categorical` maps an input to its vocabulary (strings: BYTES,
    ints: INT64; the rest are FP32), `policies` to its (unknown, missing) policy."""
    categorical = categorical or {}
    policies = policies or {}
    classes = classes if classes is not None else default_classes(n_classes)
    inputs: list[tuple[str, str, tuple[Any, ...] | None]] = []
    for ref in features:
        name = ref.partition(":")[2]
        vocabulary = categorical.get(name)
        if vocabulary is None:
            inputs.append((name, "FP32", None))
        else:
            datatype = "BYTES" if all(isinstance(v, str) for v in vocabulary) else "INT64"
            inputs.append((name, datatype, tuple(vocabulary)))
    model_dir.mkdir(parents=True, exist_ok=True)
    make_tabular_onnx(model_dir / "model.onnx", inputs, classes, hidden, seed)
    task = (
        "regression"
        if classes is None
        else "binary_classification"
        if len(classes) == 2
        else "multiclass_classification"
    )
    manifest: dict[str, Any] = {
        "format": 2,
        "model_name": model_name,
        "model_version": model_version,
        "task": task,
        "num_classes": 1 if classes is None else len(classes),
        "input_name": None,
        "inputs": [
            {"name": n, "datatype": d, "shape": [-1, 1], "ref": ref}
            for (n, d, _), ref in zip(inputs, features, strict=True)
        ],
        "output_name": "output",
        "label_output": None if classes is None else "label",
        "classes": None if classes is None else list(classes),
        "positive_class": classes[1] if classes is not None and len(classes) == 2 else None,
        "categorical": {
            n: {
                "vocabulary": list(v or ()),
                "unknown": policies.get(n, ("bucket", "bucket"))[0],
                "missing": policies.get(n, ("bucket", "bucket"))[1],
                "encoding": "one_hot",
            }
            for n, d, v in inputs
            if d != "FP32"
        },
        "features": list(features),
        "entity_join_keys": list(entity_join_keys),
        "feature_repo": str(feature_repo.resolve()) if feature_repo else None,
    }
    (model_dir / "serving.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return model_dir


MIXED_VOCABULARY = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


def write_mixed_model_dir(
    model_dir: Path, n_numeric: int = 10, n_strings: int = 3, n_classes: int = 3, seed: int = 0
) -> Path:
    """A model with `n_numeric` FP32 inputs num_0.. and `n_strings` BYTES inputs cat_0.. (the
    issue's 3 string + 10 numeric bench model); rows for it: `mixed_request_rows`."""
    refs = [f"t:num_{i}" for i in range(n_numeric)] + [f"t:cat_{i}" for i in range(n_strings)]
    return write_model_dir(
        model_dir,
        features=tuple(refs),
        n_classes=n_classes,
        model_name="mixed",
        seed=seed,
        categorical={f"cat_{i}": MIXED_VOCABULARY for i in range(n_strings)},
    )


def mixed_request_rows(
    n: int, n_numeric: int = 10, n_strings: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """An input dict ([n, 1] per input) for `write_mixed_model_dir`'s model, with a few NaNs,
    unseen categories and missing strings."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for i in range(n_numeric):
        column = rng.normal(size=(n, 1)).astype(np.float32)
        column[rng.random((n, 1)) < 0.05] = np.nan
        inputs[f"num_{i}"] = column
    pool = np.array([*MIXED_VOCABULARY, "unseen", ""], dtype=object)
    for i in range(n_strings):
        inputs[f"cat_{i}"] = pool[rng.integers(0, len(pool), size=(n, 1))]
    return inputs


def churn_frames(
    n_customers: int,
    seed: int = 0,
    stale: dict[str, tuple[int, ...]] | None = None,
    stale_days: float = 40.0,
) -> dict[str, Any]:
    """Per-view pandas frames for customers 0..n-1, stamped an hour ago; `usage` lacks every 7th
    customer; `stale` maps a view to customers whose row is `stale_days` old instead."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    old = ts - timedelta(days=stale_days)
    stale = stale or {}
    ids = np.arange(n_customers, dtype=np.int64)

    def stamps(view: str, keys: np.ndarray) -> Any:
        return pd.Series(
            [old if int(k) in stale.get(view, ()) else ts for k in keys],
            dtype="datetime64[ns, UTC]",
        )

    stats = pd.DataFrame(
        {
            "customer_id": ids,
            "monthly_spend": rng.gamma(2.0, 30.0, n_customers).astype(np.float32),
            "support_calls_30d": rng.poisson(1.5, n_customers).astype(np.int64),
            "tenure_months": rng.integers(1, 72, n_customers).astype(np.int64),
            "event_ts": stamps("customer_stats", ids),
        }
    )
    kept = ids[ids % 7 != 3]
    usage = pd.DataFrame(
        {
            "customer_id": kept,
            "logins_7d": rng.poisson(5.0, len(kept)).astype(np.int64),
            "minutes_7d": rng.gamma(2.0, 40.0, len(kept)).astype(np.float32),
            "event_ts": stamps("usage", kept),
        }
    )
    profiled = ids[ids % 5 != 4]
    profile = pd.DataFrame(
        {
            "customer_id": profiled,
            "plan": ["legacy" if k % 6 == 1 else PLANS[k % 3] for k in profiled.tolist()],
            "event_ts": stamps("profile", profiled),
        }
    )
    return {"customer_stats": stats, "usage": usage, "profile": profile}


def make_feast_repo(
    repo: Path,
    n_customers: int = 200,
    seed: int = 0,
    stale: dict[str, tuple[int, ...]] | None = None,
    strings: bool = False,
) -> Path:
    """A Feast repo (SQLite online store) with the churn views (TTL 30 days) applied and written
    online; `stale` maps a view to customers whose values are 40 days old (past the TTL);
    `strings` adds PROFILE_VIEW (a string feature)."""
    import os

    os.environ.setdefault("FEAST_USAGE", "False")
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Int64, String

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: specml_serving_test\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n"
    )
    frames = churn_frames(n_customers, seed, stale)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    feast_types = {"float32": Float32, "int64": Int64, "string": String}
    all_views = {**CHURN_VIEWS, **(PROFILE_VIEW if strings else {})}
    views = []
    for view, fields in all_views.items():
        parquet = repo / "data" / f"{view}.parquet"
        frames[view].to_parquet(parquet)
        source = FileSource(name=f"{view}_source", path=str(parquet), timestamp_field="event_ts")
        views.append(
            FeatureView(
                name=view,
                entities=[customer],
                ttl=timedelta(days=30),
                schema=[Field(name=f, dtype=feast_types[t]) for f, t in fields.items()],
                source=source,
                online=True,
            )
        )
    store = FeatureStore(repo_path=str(repo))
    store.apply([customer, *views])
    for view in all_views:
        store.write_to_online_store(view, frames[view])
    return repo


def http_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-case headers, body)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        payload = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=payload, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def metric_samples(metrics_text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    found = []
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), float(sample.value)))
    return found


def json_documents(max_leaves: int = 30) -> Any:
    """A hypothesis strategy for arbitrary JSON documents (hostile-input tests; needs hypothesis)."""
    from hypothesis import strategies as st

    scalars = (
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=6)
            | st.dictionaries(st.text(max_size=8), children, max_size=6)
        ),
        max_leaves=max_leaves,
    )
