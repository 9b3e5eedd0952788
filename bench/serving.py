"""Serving bench: latency at batch 1 / concurrency 1 (raw InferenceSession.run vs our HTTP server)
and throughput with 64 concurrent keep-alive clients, batching on vs off.

    .venv/bin/python bench/serving.py [--requests 2000] [--clients 64] [--per-client 100]

Generates its own models (latency: a churn-sized MLP, 5 features -> 64 -> 32 -> 2; throughput: that,
a 4 MB and a 34 MB MLP, to show how batching's gain grows with the model's per-run cost), runs
the server in a child process on 127.0.0.1, prints tables: batch-1 latency (raw ORT, REST JSON,
tritonclient.http, tritonclient.grpc) with p99.9; 64 clients on 1 vs N workers over REST and gRPC
(throughput, p99.9, ratio to one worker); good-request latency while four clients send 1.6 MB
malformed bodies; batching on vs off per model size (`--quick` skips that one). No assertions:
the targets are printed (batch-1 p99 <= raw p99 + 0.25 ms, p99.9 at 64 clients <= 10 ms, p99
under the flood <= 10 ms, batching on >= 3x off, worker scaling >= 0.7 x workers).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from specml.runtime.serving import ServerConfig, running_server
from specml.runtime.serving.testing import (
    http_request,
    metric_samples,
    mixed_request_rows,
    write_mixed_model_dir,
    write_model_dir,
)

N_FEATURES = 5
LATENCIES: list[float] = []  # per-request seconds of the last _load run
# Throughput is measured for two model sizes: (label, hidden layers).
MODELS = (
    ("churn-sized MLP 5-64-32-2 (10 KB weights)", (64, 32)),
    ("wide MLP 5-1024-1024-2 (4 MB weights)", (1024, 1024)),
    ("large MLP 5-2048x3-2 (34 MB weights)", (2048, 2048, 2048)),
)


def percentiles(seconds: list[float]) -> tuple[float, float, float, float]:
    """(p50, p99, p99.9, mean) in milliseconds."""
    ms = np.asarray(seconds) * 1000.0
    p50, p99, p999 = (float(np.percentile(ms, q)) for q in (50, 99, 99.9))
    return p50, p99, p999, float(ms.mean())


def bench_raw(model_dir: Path, n: int) -> list[float]:
    """session.run on one row, in-process: the floor the server is measured against."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).normal(size=(1, N_FEATURES)).astype(np.float32)
    feed = {i.name: x[:, [j]] for j, i in enumerate(session.get_inputs())}
    for _ in range(200):
        session.run(None, feed)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        session.run(None, feed)
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


def bench_triton_grpc(address: str, n: int) -> list[float]:
    """The real tritonclient.grpc client (raw tensors over one channel)."""
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(address)
    x = np.random.default_rng(0).normal(size=(1, N_FEATURES)).astype(np.float32)
    tensor = tg.InferInput("features", [1, N_FEATURES], "FP32")
    tensor.set_data_from_numpy(x)
    times = []
    for i in range(n + 200):
        t = time.perf_counter()
        client.infer("churn", [tensor])
        if i >= 200:
            times.append(time.perf_counter() - t)
    client.close()
    return times


def bench_grpc_throughput(address: str, clients: int, per_client: int) -> tuple[float, list[float]]:
    """(requests/s, per-request seconds) with `clients` threads on tritonclient.grpc."""
    import threading

    import tritonclient.grpc as tg

    x = np.random.default_rng(0).normal(size=(1, N_FEATURES)).astype(np.float32)
    latencies: list[float] = []

    def client() -> None:
        c = tg.InferenceServerClient(address)
        tensor = tg.InferInput("features", [1, N_FEATURES], "FP32")
        tensor.set_data_from_numpy(x)
        mine = []
        for _ in range(per_client):
            t = time.perf_counter()
            c.infer("churn", [tensor])
            mine.append(time.perf_counter() - t)
        latencies.extend(mine)
        c.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - start), latencies


async def _flood(url: str, seconds: float, body_bytes: int) -> None:
    """One client sending `body_bytes` of malformed JSON over and over for `seconds`."""
    parts = urlsplit(url)
    body = b'{"inputs": [' + b"1," * (body_bytes // 2) + b"]"
    head = (
        b"POST /v2/models/churn/infer HTTP/1.1\r\nHost: bench\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    deadline = time.perf_counter() + seconds
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    while time.perf_counter() < deadline:
        writer.write(head + body)
        answer = await reader.readuntil(b"\r\n\r\n")
        length = int(answer.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
    writer.close()


async def _good_during_flood(url: str, n: int, flooders: int, body_bytes: int) -> list[float]:
    """Latencies of `n` good requests from one client while `flooders` clients flood."""
    parts = urlsplit(url)
    body = json.dumps(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, N_FEATURES],
                     "data": [0.1, -0.3, 1.2, 0.0, 2.5]}]}
    ).encode()  # fmt: skip
    request = (
        b"POST /v2/models/churn/infer HTTP/1.1\r\nHost: bench\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    floods = [asyncio.ensure_future(_flood(url, 1e9, body_bytes)) for _ in range(flooders)]
    await asyncio.sleep(0.5)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        times.append(time.perf_counter() - t)
        await asyncio.sleep(0.002)
    writer.close()
    for f in floods:
        f.cancel()
    await asyncio.gather(*floods, return_exceptions=True)
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
    LATENCIES.clear()

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for _ in range(per_client):
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            LATENCIES.append(time.perf_counter() - sent)
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_workers_and_flood(model_dir: Path, args: argparse.Namespace) -> None:
    """64 clients on 1 vs N workers (REST and gRPC), then good requests under a 1.6 MB flood."""
    from specml.runtime.serving.workers import resolve_workers

    runner = _async_runner()
    n_workers = max(2, resolve_workers(0))
    print(f"\n{args.clients} clients x {args.per_client} requests, churn-sized MLP (ms, req/s)")
    print(
        f"{'transport':<34}{'workers':>8}{'req/s':>10}{'p50':>8}{'p99':>8}{'p99.9':>8}{'x 1 worker':>12}"
    )
    base: dict[str, float] = {}
    for workers in (1, n_workers):
        grpc_port = _free_port()
        config = ServerConfig(model_dir, port=0, workers=workers, grpc_port=grpc_port,
                              max_delay_ms=args.max_delay_ms)  # fmt: skip
        with running_server(config, process=True) as url:
            runner(_load(url, args.clients, max(5, args.per_client // 10)))
            seconds, errors = runner(_load(url, args.clients, args.per_client))
            rest = (args.clients * args.per_client / seconds, list(LATENCIES))
            grpc_rps, grpc_lat = bench_grpc_throughput(
                f"127.0.0.1:{grpc_port}", args.clients, max(5, args.per_client // 4)
            )
        for name, (rps, lat) in (("REST (raw keep-alive sockets)", rest),
                                 ("gRPC (tritonclient.grpc threads)", (grpc_rps, grpc_lat))):  # fmt: skip
            p50, p99, p999, _ = percentiles(lat)
            base.setdefault(name, rps)
            print(f"{name:<34}{workers:>8}{rps:>10.0f}{p50:>8.2f}{p99:>8.2f}{p999:>8.2f}"
                  f"{rps / base[name]:>11.2f}x")  # fmt: skip
    print(
        "targets: p99.9 at 64 clients <= 10 ms; scaling >= 0.7 x workers with enough cores "
        f"(this machine: {os.cpu_count()} cores, shared with the load generator)"
    )
    config = ServerConfig(model_dir, port=0, max_body_bytes=8 * 1024 * 1024)
    with running_server(config, process=True) as url:
        quiet = percentiles(runner(_good_during_flood(url, 500, 0, 0)))
        flooded = percentiles(runner(_good_during_flood(url, 500, 4, 1_600_000)))
    print("\nGood requests, one client, alone vs while 4 clients send 1.6 MB malformed bodies (ms)")
    print(f"{'scenario':<34}{'p50':>8}{'p99':>8}{'p99.9':>8}")
    for name, (p50, p99, p999, _) in (("alone", quiet), ("under the flood", flooded)):
        print(f"{name:<34}{p50:>8.2f}{p99:>8.2f}{p999:>8.2f}")
    print(f"flood / alone p99: {flooded[1] / quiet[1]:.2f}x; target: p99 under the flood <= 10 ms")


def bench_mixed(folder: Path, n: int) -> None:
    """Batch-1 latency of the 3-string + 10-numeric model: raw ORT, REST JSON, tritonclient.grpc."""
    import onnxruntime as ort
    import tritonclient.grpc as tg

    model_dir = write_mixed_model_dir(folder)
    row = mixed_request_rows(1, seed=1)
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    raw = []
    for i in range(n + 200):
        t = time.perf_counter()
        session.run(None, row)
        if i >= 200:
            raw.append(time.perf_counter() - t)
    body = json.dumps({"inputs": [
        {"name": k, "datatype": "BYTES" if v.dtype == object else "FP32", "shape": [1, 1],
         "data": [str(v[0, 0]) if v.dtype == object else (None if np.isnan(v[0, 0]) else float(v[0, 0]))]}
        for k, v in row.items()
    ]})  # fmt: skip
    grpc_port = _free_port()
    config = ServerConfig(model_dir, port=0, grpc_port=grpc_port)
    with running_server(config, process=True) as url:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port)
        rest = []
        for i in range(n + 200):
            t = time.perf_counter()
            conn.request("POST", "/v2/models/mixed/infer", body)
            conn.getresponse().read()
            if i >= 200:
                rest.append(time.perf_counter() - t)
        conn.close()
        client = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensors = []
        for k, v in row.items():
            tensor = tg.InferInput(k, [1, 1], "BYTES" if v.dtype == object else "FP32")
            tensor.set_data_from_numpy(v)
            tensors.append(tensor)
        grpc_times = []
        for i in range(n + 200):
            t = time.perf_counter()
            client.infer("mixed", tensors)
            if i >= 200:
                grpc_times.append(time.perf_counter() - t)
        client.close()
    print(f"\nLatency, batch 1, 3 BYTES + 10 FP32 inputs, {n} requests each (ms)")
    raw_p99 = percentiles(raw)[1]
    for name, times in (("raw InferenceSession.run", raw), ("REST JSON, http.client", rest),
                        ("gRPC, tritonclient.grpc", grpc_times)):  # fmt: skip
        p50, p99, p999, mean = percentiles(times)
        print(f"{name:<58}{p50:>8.3f}{p99:>8.3f}{p999:>8.3f}{mean:>8.3f}{p99 - raw_p99:>+15.3f}")


def _async_runner():  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def main() -> None:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="latency samples per row")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=100)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="skip the model-size table")
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
        grpc_port = _free_port()
        with running_server(replace(on, grpc_port=grpc_port), process=True):
            rows.append(("gRPC raw, tritonclient.grpc (batching on)", percentiles(bench_triton_grpc(f"127.0.0.1:{grpc_port}", args.requests))))  # fmt: skip
        print(f"\nLatency, batch 1 / concurrency 1, {args.requests} requests each (ms)")
        print(f"{'path':<58}{'p50':>8}{'p99':>8}{'p99.9':>8}{'mean':>8}{'p99 - raw p99':>15}")
        raw_p99 = rows[0][1][1]
        for name, (p50, p99, p999, mean) in rows:
            print(
                f"{name:<58}{p50:>8.3f}{p99:>8.3f}{p999:>8.3f}{mean:>8.3f}{p99 - raw_p99:>+15.3f}"
            )
        print("target: batch-1 p99 <= raw ORT p99 + 0.25 ms (REST and gRPC)")
        bench_mixed(Path(tmp) / "mixed", args.requests)
        bench_workers_and_flood(model_dir, args)
        if args.quick:
            return

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
