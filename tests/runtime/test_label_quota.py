"""The label sink's quota: a flood of valid labels is refused whole, never fills the disk, and
never loses what was already stored; files rotate by size."""

from __future__ import annotations

from pathlib import Path

import pytest
from specml.runtime.monitor.labels import LabelQuotaExceeded, LabelSink, read_posted_labels


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"request_id": f"r{i}", "label": 1.0} for i in range(start, start + n)]


def stored(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.jsonl"))


def test_a_write_over_the_window_quota_is_refused_whole(tmp_path: Path) -> None:
    clock = Clock()
    sink = LabelSink(tmp_path, max_bytes_per_window=4000, window_s=60, clock=clock)
    assert sink.append(rows(20)) == 20
    before = stored(tmp_path)
    with pytest.raises(LabelQuotaExceeded) as refused:
        sink.append(rows(200, start=20))
    assert stored(tmp_path) == before  # nothing of the refused request was written
    assert 1 <= refused.value.retry_after_s <= 60
    clock.now += 61  # a new window
    assert sink.append(rows(20, start=20)) == 20
    frame = read_posted_labels(tmp_path)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(40))


def test_the_total_cap_counts_what_the_folder_already_holds(tmp_path: Path) -> None:
    first = LabelSink(tmp_path, max_total_bytes=10_000)
    first.append(rows(50))
    held = stored(tmp_path)
    # A restarted server sees the same folder: its cap includes the earlier files.
    second = LabelSink(tmp_path, max_total_bytes=held + 500)
    with pytest.raises(LabelQuotaExceeded, match="cap"):
        second.append(rows(50, start=50))
    assert stored(tmp_path) == held


def test_files_rotate_by_size_and_all_rows_are_read_back(tmp_path: Path) -> None:
    sink = LabelSink(tmp_path, rotate_bytes=1000)
    for batch in range(10):
        sink.append(rows(10, start=batch * 10))
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) > 1
    assert all(p.stat().st_size < 1000 + 700 for p in files)  # one write may cross the threshold
    assert len(read_posted_labels(tmp_path)) == 100
