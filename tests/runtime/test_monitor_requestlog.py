"""Request log: buffered appends, rotation and pruning, concurrent writers, newest-first reads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from specml.runtime.monitor.requestlog import RequestLog, read_requests

NAMES = ["a:x", "a:y", "b:z"]


def test_rows_round_trip_in_order_with_nan_and_batches(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, feature_names=NAMES, flush_rows=1000, flush_seconds=1e9)
    log.append({"a:x": 1.0, "a:y": float("nan"), "b:z": 3.0}, 0.25, 2, request_id="r1", ts=10.0)
    assert not log.segments()  # buffered, nothing on disk yet
    log.append(
        np.array([[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
        np.array([[0.5], [0.75]]),
        "2",
        request_id="b",
        entity={"customer_id": 7},
        ts=11.0,
    )
    log.close()
    frame = log.read_recent()
    assert list(frame.columns[:3]) == NAMES
    assert frame["a:x"].tolist() == [1.0, 4.0, 7.0]
    assert np.isnan(frame["a:y"].iloc[0])
    assert frame["prediction"].tolist() == [0.25, 0.5, 0.75]
    assert frame["model_version"].tolist() == ["2", "2", "2"]
    assert frame["request_id"].tolist() == ["r1", "b:0", "b:1"]
    assert frame["entity"].iloc[2] == {"customer_id": 7}
    assert log.read_recent(2)["a:x"].tolist() == [4.0, 7.0]
    assert log.read_recent(since=10.5)["ts"].tolist() == [11.0, 11.0]


def test_multiclass_predictions_get_one_column_per_class(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, feature_names=NAMES[:1], flush_rows=1)
    log.append(np.zeros((2, 1)), np.array([[0.1, 0.9], [0.8, 0.2]]), "1")
    frame = read_requests(tmp_path)
    assert frame[["prediction:0", "prediction:1"]].to_numpy().tolist() == [[0.1, 0.9], [0.8, 0.2]]


def test_rotation_bounds_the_log(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, feature_names=NAMES, segment_rows=100, max_segments=3, flush_rows=37)
    for i in range(1000):
        log.append([i, i, i], i / 1000, "1", ts=float(i))
    log.close()
    assert len(log.segments()) == 3
    assert len(log) == 300  # never more than segment_rows x max_segments
    frame = log.read_recent()
    assert frame["a:x"].tolist() == list(range(700, 1000))  # the newest rows survive, in order


def test_concurrent_threads_and_event_loop_lose_nothing(tmp_path: Path) -> None:
    log = RequestLog(
        tmp_path, feature_names=NAMES, segment_rows=500, max_segments=100, flush_rows=16
    )
    per_thread, threads = 400, 6

    def worker(t: int) -> None:
        for i in range(per_thread):
            log.append([t, i, 0.0], 0.5, "1", request_id=f"{t}-{i}")

    async def loop_writer() -> None:
        for i in range(per_thread):
            log.append([99, i, 0.0], 0.5, "1", request_id=f"loop-{i}")
            if i % 50 == 0:
                await asyncio.sleep(0)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    asyncio.run(loop_writer())
    for th in pool:
        th.join()
    log.close()
    frame = log.read_recent()
    assert len(frame) == per_thread * (threads + 1)
    assert frame["request_id"].is_unique
    assert all(len(s.read_text().splitlines()) <= 500 for s in log.segments())


def test_append_is_cheap(tmp_path: Path) -> None:
    import time

    log = RequestLog(tmp_path, feature_names=NAMES)
    start = time.perf_counter()
    for i in range(5000):
        log.append([1.0, 2.0, float(i)], 0.5, "1")
    per_call = (time.perf_counter() - start) / 5000
    log.close()
    assert len(log.read_recent()) == 5000
    assert per_call < 200e-6, f"{per_call * 1e6:.1f} us per append"


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_tiny_reads(tmp_path: Path, n: int) -> None:
    log = RequestLog(tmp_path / "nothing-yet", feature_names=NAMES)
    if n:
        log.append([1, 2, 3], 0.1, "1")
        log.flush()
    frame = log.read_recent(10)
    assert len(frame) == n and list(frame.columns[:3]) == NAMES


def test_named_inputs_with_strings_round_trip(tmp_path: Path) -> None:
    """A request's named inputs ([N,1] columns by input name, strings kept, missing as None/NaN)
    come back as one row each: numbers float64, a string column as objects."""
    names = ["customer_stats:plan_type", "customer_stats:tenure"]
    log = RequestLog(tmp_path, feature_names=names, flush_rows=1000, flush_seconds=1e9)
    inputs = {
        "plan_type": np.array([["basic"], [""], [None]], dtype=object),
        "tenure": np.array([[3.0], [np.nan], [7.0]], dtype=np.float32),
    }
    log.append(inputs, np.array([[0.1], [0.2], [0.3]], np.float32), "1", request_id="q", ts=5.0)
    log.close()
    frame = log.read_recent()
    assert list(frame.columns[:2]) == names and len(frame) == 3
    assert frame["customer_stats:plan_type"].tolist() == ["basic", "", None]
    tenure = frame["customer_stats:tenure"].to_numpy()
    assert tenure.dtype == np.float64 and tenure[0] == 3.0 and np.isnan(tenure[1])
    assert frame["prediction"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert frame["request_id"].tolist() == ["q:0", "q:1", "q:2"]
