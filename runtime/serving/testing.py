"""Build tiny servable fixtures without training: an ONNX MLP, a model folder, a Feast repo.

Used by the serving tests and benches (and handy for the training side's skew check). The model
folder follows the training contract exactly: `model.onnx` (float32 [N, F] "features" ->
"output" [N, K], NaN imputation and scaling inside the graph) plus `serving.json`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

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


def make_mlp_onnx(
    path: Path,
    n_features: int,
    n_classes: int,
    hidden: tuple[int, ...] = (64, 32),
    seed: int = 0,
    input_name: str = "features",
    output_name: str = "output",
) -> Path:
    """Write a random-weight MLP (impute NaN -> scale -> hidden ReLU layers -> softmax)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    means = rng.normal(size=n_features).astype(np.float32)
    scales = (1.0 + rng.random(n_features)).astype(np.float32)
    inits = [
        numpy_helper.from_array(means, "means"),
        numpy_helper.from_array(scales, "scales"),
    ]
    nodes = [
        helper.make_node("IsNaN", [input_name], ["is_nan"]),
        helper.make_node("Where", ["is_nan", "means", input_name], ["imputed"]),
        helper.make_node("Sub", ["imputed", "means"], ["centred"]),
        helper.make_node("Div", ["centred", "scales"], ["h0"]),
    ]
    sizes = [n_features, *hidden, n_classes]
    for i in range(len(sizes) - 1):
        w = (rng.normal(size=(sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(np.float32)
        b = (rng.normal(size=sizes[i + 1]) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"w{i}", f"b{i}"], [f"z{i}"]))
        last = i == len(sizes) - 2
        if last:
            nodes.append(helper.make_node("Softmax", [f"z{i}"], [output_name], axis=-1))
        else:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i + 1}"]))
    graph = helper.make_graph(
        nodes,
        "specml_test_mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", n_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


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
) -> Path:
    """A model folder per the training/serving contract: model.onnx + serving.json."""
    model_dir.mkdir(parents=True, exist_ok=True)
    make_mlp_onnx(model_dir / "model.onnx", len(features), n_classes, hidden, seed)
    manifest: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "task": "binary_classification" if n_classes == 2 else "multiclass_classification",
        "num_classes": n_classes,
        "input_name": "features",
        "output_name": "output",
        "features": list(features),
        "entity_join_keys": list(entity_join_keys),
        "feature_repo": str(feature_repo.resolve()) if feature_repo else None,
    }
    (model_dir / "serving.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return model_dir


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
    return {"customer_stats": stats, "usage": usage}


def make_feast_repo(
    repo: Path,
    n_customers: int = 200,
    seed: int = 0,
    stale: dict[str, tuple[int, ...]] | None = None,
) -> Path:
    """A Feast repo (SQLite online store) with the churn views (TTL 30 days) applied and written
    online; `stale` maps a view to customers whose values are 40 days old (past the TTL)."""
    import os

    os.environ.setdefault("FEAST_USAGE", "False")
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Int64

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
    feast_types = {"float32": Float32, "int64": Int64}
    views = []
    for view, fields in CHURN_VIEWS.items():
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
    for view in CHURN_VIEWS:
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
