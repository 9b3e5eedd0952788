"""Serving bench: latency at batch 1 / concurrency 1 (raw InferenceSession.run vs our HTTP server)
and throughput with 64 concurrent keep-alive clients, batching on vs off.

    .venv/bin/python bench/serving.py [--requests 2000] [--clients 64] [--per-client 100]

Generates its own models (latency: a churn-sized MLP, 5 features -> 64 -> 32 -> 2; throughput: that,
a 4 MB and a 34 MB MLP, to show how batching's gain grows with the model's per-run cost), runs the server in a child process on 127.0.0.1, prints
tables. No assertions: the targets are HTTP p99 <= raw p99 +
1 ms, and batching on >= 3x batching off at 64 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import http_request, metric_samples, write_model_dir

N_FEATURES = 5
# Throughput is measured for two model sizes: (label, hidden layers).
MODELS = (
    ("churn-sized MLP 5-64-32-2 (10 KB weights)", (64, 32)),
    ("wide MLP 5-1024-1024-2 (4 MB weights)", (1024, 1024)),
    ("large MLP 5-2048x3-2 (34 MB weights)", (2048, 2048, 2048)),
)


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """(p50, p99, mean) in milliseconds."""
    ms = np.asarray(seconds) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean())


def bench_raw(model_dir: Path, n: int) -> list[float]:
    """session.run on one row, in-process: the floor the server is measured against."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).normal(size=(1, N_FEATURES)).astype(np.float32)
    for _ in range(200):
        session.run(None, {"features": x})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        session.run(None, {"features": x})
        times.append(time.perf_counter() - t)
    return times


def bench_http_json(url: str, n: int) -> list[float]:
    """One keep-alive http.client connection, JSON tensors."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    body = json.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, N_FEATURES],
                     "data": [0.1, -0.3, 1.2, 0.0, 2.5]}]}
    )  # fmt: skip
    headers = {"Content-Type": "application/json"}
    times = []
    for i in range(n + 200):
        t = time.perf_counter()
        conn.request("POST", "/v2/models/churn/infer", body, headers)
        response = conn.getresponse()
        response.read()
        if i >= 200:
            times.append(time.perf_counter() - t)
        assert response.status == 200
    conn.close()
    return times


def bench_tritonclient(url: str, n: int) -> list[float]:
    """The real tritonclient.http client (binary tensors, keep-alive)."""
    import tritonclient.http as th

    client = th.InferenceServerClient(url.removeprefix("http://"))
    x = np.random.default_rng(0).normal(size=(1, N_FEATURES)).astype(np.float32)
    tensor = th.InferInput("features", [1, N_FEATURES], "FP32")
    tensor.set_data_from_numpy(x)
    times = []
    for i in range(n + 200):
        t = time.perf_counter()
        client.infer("churn", [tensor])
        if i >= 200:
            times.append(time.perf_counter() - t)
    client.close()
    return times


async def _load(url: str, clients: int, per_client: int) -> tuple[float, int]:
    """`clients` keep-alive connections in closed loop; returns (seconds, errors)."""
    parts = urlsplit(url)
    body = json.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, N_FEATURES],
                     "data": [0.1, -0.3, 1.2, 0.0, 2.5]}]}
    ).encode()  # fmt: skip
    request = (
        b"POST /v2/models/churn/infer HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    errors = 0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for _ in range(per_client):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, errors


def bench_throughput(url: str, clients: int, per_client: int) -> tuple[float, float, int]:
    """(requests/s, mean rows per session.run, errors) for one server."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_load(url, clients, max(5, per_client // 10)))  # warm up connections and batcher
    before = _batch_stats(url)
    seconds, errors = runner(_load(url, clients, per_client))
    after = _batch_stats(url)
    runs, rows = after[0] - before[0], after[1] - before[1]
    return clients * per_client / seconds, rows / max(runs, 1), errors


def _batch_stats(url: str) -> tuple[float, float]:
    text = http_request(url, "GET", "/metrics")[2].decode()
    count = sum(v for _, v in metric_samples(text, "specml_batch_size_rows_count"))
    total = sum(v for _, v in metric_samples(text, "specml_batch_size_rows_sum"))
    return count, total


def main() -> None:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="latency samples per row")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=100)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model_dir(Path(tmp) / "current")
        rows = [
            (
                "raw InferenceSession.run (in-process)",
                percentiles(bench_raw(model_dir, args.requests)),
            )
        ]
        on = ServerConfig(model_dir, port=0, batching=True, max_delay_ms=args.max_delay_ms)
        off = ServerConfig(model_dir, port=0, batching=False)
        for label, config in (("batching on", on), ("batching off", off)):
            with running_server(config, process=True) as url:
                rows.append(
                    (
                        f"HTTP JSON, http.client keep-alive ({label})",
                        percentiles(bench_http_json(url, args.requests)),
                    )
                )
                rows.append((f"HTTP binary, tritonclient.http ({label})", percentiles(bench_tritonclient(url, args.requests))))  # fmt: skip
        print(f"\nLatency, batch 1 / concurrency 1, {args.requests} requests each (ms)")
        print(f"{'path':<58}{'p50':>8}{'p99':>8}{'mean':>8}{'p99 - raw p99':>15}")
        raw_p99 = rows[0][1][1]
        for name, (p50, p99, mean) in rows:
            print(f"{name:<58}{p50:>8.3f}{p99:>8.3f}{mean:>8.3f}{p99 - raw_p99:>+15.3f}")

        print(
            f"\nThroughput, {args.clients} concurrent keep-alive clients x {args.per_client} requests"
        )
        print(
            f"{'model':<44}{'batching':>10}{'requests/s':>12}{'rows/run':>10}{'errors':>8}{'on/off':>8}"
        )
        for name, hidden in MODELS:
            sized = write_model_dir(Path(tmp) / f"tp-{'x'.join(map(str, hidden))}", hidden=hidden)
            results = {}
            for label, batching in (("on", True), ("off", False)):
                config = ServerConfig(
                    sized, port=0, batching=batching, max_delay_ms=args.max_delay_ms
                )
                with running_server(config, process=True) as url:
                    results[label] = bench_throughput(url, args.clients, args.per_client)
            ratio = results["on"][0] / results["off"][0]
            for label, (rps, mean_batch, errors) in results.items():
                shown = f"{ratio:.2f}x" if label == "on" else ""
                print(f"{name:<44}{label:>10}{rps:>12.0f}{mean_batch:>10.1f}{errors:>8}{shown:>8}")
        print(
            "target: on/off >= 3x. What batching can save is the model's own per-run cost: with\n"
            "the churn-sized MLP a session.run costs ~30 us at batch 1, so per-request HTTP/JSON work\n"
            "(~150 us of Python, sharing this machine's cores with the load generator) bounds the\n"
            "ratio; the larger the model's batch-1 run, the closer the ratio gets to the batch\n"
            "amortisation (about 10x per row for the 34 MB MLP, measured in-process)."
        )


if __name__ == "__main__":
    main()
