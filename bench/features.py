"""Online feature read bench: one entity per call, our SQLite reader vs Feast's get_online_features.

    .venv/bin/python bench/features.py [--rows 2000] [--reads 2000] [--repo PATH]

Without --repo it writes churn demo data and runs specml's own materialize_features step (a real
Feast repo: file offline store, SQLite online store) in a temp folder; with --repo it reads an
existing repo, e.g. `specs/.specml/churn/runs/<run>/materialize_features/feature_repo`. Every
read is checked to give the same values both ways; prints p50/p99/mean per path (target: p99 of
ours < 10 ms). A third row times the server's predict-by-entity endpoint (lookup + ONNX + HTTP).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("FEAST_USAGE", "False")
SPEC = Path(__file__).resolve().parents[1] / "specs" / "churn.yaml"


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """(p50, p99, mean) in milliseconds."""
    ms = np.asarray(seconds) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean())


def materialized_repo(folder: Path, rows: int) -> Path:
    """Demo data for the churn spec, then specml's materialize_features step into folder."""
    from specml.compiler.api import plan_file
    from specml.runtime.contract import StepContext, run_step
    from specml.runtime.demo_data import write_demo_data

    plan = plan_file(SPEC)
    write_demo_data(plan, folder, rows=rows, seed=0)
    repo = folder / "feature_repo"
    run_step(
        "materialize_features",
        plan,
        StepContext(workdir=folder, data_dir=folder),
        {},
        {"feature_repo": repo},
    )
    return repo


def _same(ours: list[Any], theirs: list[Any]) -> bool:
    def norm(v: Any) -> Any:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    return [norm(v) for v in ours] == [norm(v) for v in theirs]


def main() -> None:
    """Build (or open) the repo, time both read paths on the same entities, print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000, help="demo rows when building a repo")
    parser.add_argument("--reads", type=int, default=2000, help="timed reads per path")
    parser.add_argument("--repo", type=Path, default=None)
    args = parser.parse_args()

    from feast import FeatureStore
    from specml.compiler.api import plan_file
    from specml.runtime.serving.online_features import OnlineFeatureReader
    from specml.runtime.steps.common import feature_refs

    plan = plan_file(SPEC)
    refs = tuple(feature_refs(plan))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        repo = args.repo or materialized_repo(Path(tmp), args.rows)
        print(f"feature repo {repo} ready in {time.perf_counter() - started:.1f}s")
        store = FeatureStore(repo_path=str(repo))
        # Feast's get_online_features ignores TTL; compare like with like (TTL costs the same check)
        reader = OnlineFeatureReader(repo, refs, apply_ttl=False)
        ids = sorted({int(k) for k in _entity_ids(repo)})
        rng = np.random.default_rng(0)
        picks = [int(i) for i in rng.choice(ids, size=args.reads)]

        def feast_row(i: int) -> list[Any]:
            resp = store.get_online_features(
                features=list(refs), entity_rows=[{"customer_id": i}]
            ).to_dict()
            return [resp[r.split(":")[1]][0] for r in refs]

        def ours_row(i: int) -> list[Any]:
            return reader.read_values([{"customer_id": i}])[0]

        mismatches = sum(not _same(ours_row(i), feast_row(i)) for i in ids[:200])
        timings: dict[str, list[float]] = {"ours": [], "feast": []}
        for name, fn in (("ours", ours_row), ("feast", feast_row)):
            for i in picks[:100]:  # warm up
                fn(i)
            for i in picks:
                t = time.perf_counter()
                fn(i)
                timings[name].append(time.perf_counter() - t)
        rows = [
            ("specml OnlineFeatureReader.read_values (SQLite, direct)", timings["ours"]),
            ("Feast FeatureStore.get_online_features", timings["feast"]),
        ]
        rows.append(
            ("predict-by-entity over HTTP (lookup + ONNX + JSON)", _http_timings(plan, repo, picks))
        )
        reader.close()
    print(
        f"\nOnline read, one entity per call, {args.reads} reads each (ms); "
        f"{len(ids[:200])} entities compared, {mismatches} value mismatches"
    )
    print(f"{'path':<58}{'p50':>8}{'p99':>8}{'mean':>8}")
    for name, samples in rows:
        p50, p99, mean = percentiles(samples)
        print(f"{name:<58}{p50:>8.3f}{p99:>8.3f}{mean:>8.3f}")
    ours, feast = percentiles(timings["ours"])[1], percentiles(timings["feast"])[1]
    print(f"p99 ours {ours:.3f} ms (target < 10 ms), Feast {feast:.3f} ms: {feast / ours:.1f}x")


def _entity_ids(repo: Path) -> list[int]:
    """Customer ids present in the materialized customer_stats source."""
    import pandas as pd

    pointer = repo / "features.py"
    text = pointer.read_text()
    path = text.split("path='", 1)[1].split("'", 1)[0]
    return pd.read_parquet(path)["customer_id"].unique().tolist()


def _http_timings(plan: Any, repo: Path, picks: list[int]) -> list[float]:
    """predict-by-entity latency for one entity, batching off, through http.client keep-alive."""
    import http.client
    from urllib.parse import urlsplit

    from specml.runtime.serving import ServerConfig, running_server
    from specml.runtime.serving.testing import write_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model_dir(Path(tmp) / "current", feature_repo=repo)
        config = ServerConfig(model_dir, port=0, batching=False)
        out = []
        with running_server(config, process=True) as url:
            parts = urlsplit(url)
            conn = http.client.HTTPConnection(parts.hostname, parts.port)
            for n, i in enumerate([*picks[:100], *picks]):
                body = json.dumps({"entities": [{"customer_id": i}]})
                t = time.perf_counter()
                conn.request(
                    "POST",
                    "/v1/models/churn/predict-by-entity",
                    body,
                    {"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
                if n >= 100:
                    out.append(time.perf_counter() - t)
                assert response.status == 200, response.status
            conn.close()
    return out


if __name__ == "__main__":
    main()
