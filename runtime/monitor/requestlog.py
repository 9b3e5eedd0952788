"""A bounded, rotating log of served requests (features, prediction, model version, time) for drift.

For the server (rollout/serving engineers), the whole API:

    from specml.runtime.monitor.requestlog import RequestLog, request_log_dir
    log = RequestLog(request_log_dir(workdir), feature_names=manifest.features)   # once, at start
    log.append(features, prediction, version)          # per request: one row (dict or 1-D array)
    log.append(batch_features, batch_outputs, version, request_id=rid)  # a batch (2-D, one row each)
    log.append({"plan": arr_n1, "tenure": arr_n1}, outputs, version)  # named inputs ([N,1] each,
                                                        # by input name or ref; strings are kept)
    log.append(..., entity=[{"customer_id": 5}, ...])  # predict-by-entity: keys per row (labels join)
    log.close()                                         # at shutdown (flushes the buffer)

`append` only takes a lock and extends an in-memory buffer (microseconds); rows reach disk when
the buffer holds `flush_rows` rows, when `flush_seconds` passed since the last flush (checked on
the next append), on `flush()` and on `close()`. It is safe from many threads and from the
asyncio loop (it never awaits and never holds the lock during file I/O longer than one write).
Several processes may write the same folder: each writes its own segment files.

On disk: `<workdir>/monitor/requests/<ns-time>-<pid>-<seq>.jsonl`, one JSON object per row
{"ts", "v" (version), "x" (features, list), "p" (prediction, list), "id"?, "e"?}; a segment
holds at most `segment_rows` rows, and the folder keeps the newest `max_segments` segments
(older ones are deleted), so the log never exceeds segment_rows x max_segments rows.
`read_recent(n, since=...)` returns the newest rows as a DataFrame: one column per feature (float64
with NaN, or objects with None for a categorical column: one holding strings),
`prediction` (or `prediction:<k>` per output), `model_version`, `ts`, `request_id`, `entity`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from specml.runtime.files import write_atomic

SEGMENT_ROWS = 10_000
MAX_SEGMENTS = 20
FLUSH_ROWS = 256
FLUSH_SECONDS = 2.0


def request_log_dir(workdir: str | Path) -> Path:
    """Where the local target keeps the request log: <workdir>/monitor/requests."""
    from specml.runtime.layout import Workdir

    return Workdir(Path(workdir)).request_log


def _floats(values: Any) -> list[float | None]:
    """A row as JSON-safe floats (NaN -> None)."""
    return [
        None if (isinstance(v, float) and math.isnan(v)) else v
        for v in np.asarray(values, np.float64).ravel().tolist()
    ]


def _json_value(value: Any) -> Any:
    """One raw feature value as JSON: numbers (NaN -> None), strings (a category), None."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str) or value is None:
        return value
    number = float(value)
    return None if math.isnan(number) else (int(value) if isinstance(value, int) else number)


def _column_rows(features: Mapping[str, Any], names: Sequence[str]) -> list[list[Any]]:
    """Rows of named raw columns (each a scalar, or [N] / [N, 1] values); a missing name is None."""
    columns = {n: np.asarray(features[n], dtype=object).reshape(-1) for n in names if n in features}
    n_rows = max((len(c) for c in columns.values()), default=1)
    lists = [columns[n].tolist() if n in columns else [None] * n_rows for n in names]
    return [[_json_value(v) for v in row] for row in zip(*lists, strict=True)]


class RequestLog:
    """Append-only, buffered, size-bounded request log in one folder."""

    def __init__(
        self,
        directory: str | Path,
        feature_names: Sequence[str] | None = None,
        segment_rows: int = SEGMENT_ROWS,
        max_segments: int = MAX_SEGMENTS,
        flush_rows: int = FLUSH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.directory = Path(directory)
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.segment_rows = max(int(segment_rows), 1)
        self.max_segments = max(int(max_segments), 1)
        self.flush_rows = max(int(flush_rows), 1)
        self.flush_seconds = flush_seconds
        self._buffer: list[str] = []
        self._lock = threading.Lock()  # guards the buffer
        self._io_lock = threading.Lock()  # guards the current segment
        self._segment: Path | None = None
        self._segment_count = 0
        self._seq = 0
        self._last_flush = time.monotonic()

    # -- writing --------------------------------------------------------------------------------

    def append(
        self,
        features: Mapping[str, Any] | Sequence[Any] | np.ndarray,
        prediction: Any,
        version: str | int | None,
        request_id: str | None = None,
        entity: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        ts: float | None = None,
    ) -> None:
        """Log one request (1-D features) or a batch (2-D features, predictions row-aligned).

        `entity`: the entity keys (e.g. {"customer_id": 5}), or one mapping per row of a batch;
        they let `specml labels` join delayed labels by entity instead of by request id.
        """
        now = time.time() if ts is None else ts
        version = None if version is None else str(version)
        rows: list[Any]
        preds: list[Any]
        if isinstance(features, Mapping):  # named inputs: one value or one column per name
            names = self.feature_names or sorted(features)
            if self.feature_names is None:
                self.feature_names = list(names)
            rows = _column_rows(features, [_input_name(n, features) for n in names])
            p = np.asarray(prediction, dtype=np.float64)
            preds = list(p.reshape(len(rows), -1))
        else:
            x = np.asarray(features, dtype=np.float64)
            rows = [x] if x.ndim <= 1 else list(x)
            p = np.asarray(prediction, dtype=np.float64)
            preds = [p] if x.ndim <= 1 else list(p.reshape(len(rows), -1))
        lines: list[str] = []
        for row, pred in zip(rows, preds, strict=True):
            record: dict[str, Any] = {
                "ts": now,
                "v": version,
                "x": row if isinstance(row, list) else _floats(row),
                "p": _floats(pred),
            }
            if request_id is not None:
                record["id"] = request_id if len(rows) == 1 else f"{request_id}:{len(lines)}"
            if entity is not None:
                record["e"] = (
                    dict(entity) if isinstance(entity, Mapping) else dict(entity[len(lines)])
                )
            lines.append(json.dumps(record, separators=(",", ":"), allow_nan=False))
        with self._lock:
            self._buffer.extend(lines)
            due = len(self._buffer) >= self.flush_rows or (
                time.monotonic() - self._last_flush >= self.flush_seconds
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows to the current segment (rotating and pruning as needed)."""
        with self._io_lock:
            with self._lock:
                lines, self._buffer = self._buffer, []
                self._last_flush = time.monotonic()
            while lines:
                if self._segment is None or self._segment_count >= self.segment_rows:
                    self._rotate()
                assert self._segment is not None
                take = lines[: self.segment_rows - self._segment_count]
                lines = lines[len(take) :]
                with open(self._segment, "a", encoding="utf-8") as fh:
                    fh.write("\n".join(take) + "\n")
                self._segment_count += len(take)

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()

    def _rotate(self) -> None:
        """Start a new segment file and delete the oldest beyond max_segments."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        self._segment = (
            self.directory / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.jsonl"
        )
        self._segment_count = 0
        self._segment.touch()
        self._write_names()
        for old in self.segments()[: -self.max_segments]:
            old.unlink(missing_ok=True)

    def _write_names(self) -> None:
        """Record the feature names once (features.json), so readers can name the columns."""
        if self.feature_names is None:
            return
        path = self.directory / "features.json"
        if not path.exists():
            write_atomic(path, json.dumps(self.feature_names), durable=False)

    # -- reading --------------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segment files, oldest first."""
        return sorted(self.directory.glob("*.jsonl")) if self.directory.exists() else []

    def read_recent(self, n: int | None = None, since: float | None = None) -> Any:
        """The newest `n` rows (all when None) logged at or after `since`, oldest first (DataFrame)."""
        return read_requests(self.directory, n=n, since=since, feature_names=self.feature_names)

    def __len__(self) -> int:
        with self._lock:
            buffered = len(self._buffer)
        return buffered + sum(_count_lines(p) for p in self.segments())


def _input_name(name: str, features: Mapping[str, Any]) -> str:
    """The key of a feature in a request's named inputs: its ref (`view:field`) or field name."""
    return name if name in features else name.partition(":")[2] or name


def _read_column(values: list[Any]) -> Any:
    """A logged feature column: float64 with NaN, or (any string in it) objects with None."""
    if any(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def read_requests(
    directory: str | Path,
    n: int | None = None,
    since: float | None = None,
    feature_names: Sequence[str] | None = None,
) -> Any:
    """Read a request-log folder (newest segments first, stopping once `n` rows are found)."""
    import pandas as pd

    directory = Path(directory)
    names = list(feature_names) if feature_names is not None else None
    if names is None and (directory / "features.json").exists():
        names = json.loads((directory / "features.json").read_text())
    records: list[dict[str, Any]] = []
    for seg in sorted(directory.glob("*.jsonl"), reverse=True) if directory.exists() else []:
        try:
            text = seg.read_text(encoding="utf-8")
        except FileNotFoundError:  # pruned by a writer meanwhile
            continue
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line of a segment being written
                continue
        if since is not None:
            rows = [r for r in rows if r["ts"] >= since]
        records = rows + records
        if n is not None and len(records) >= n:
            break
    records.sort(key=lambda r: r["ts"])
    if n is not None:
        records = records[-n:] if n > 0 else []
    width = max((len(r["x"]) for r in records), default=len(names or []))
    names = names if names is not None and len(names) == width else [f"f{j}" for j in range(width)]
    frame = pd.DataFrame(
        {name: _read_column([r["x"][j] for r in records]) for j, name in enumerate(names)},
        index=range(len(records)),
    )
    p_width = max((len(r["p"]) for r in records), default=1)
    p = np.array([[np.nan if v is None else v for v in r["p"]] for r in records], dtype=np.float64)
    p = p.reshape(len(records), p_width)
    if p_width == 1:
        frame["prediction"] = p[:, 0]
    else:
        for k in range(p_width):
            frame[f"prediction:{k}"] = p[:, k]
    frame["model_version"] = [r.get("v") for r in records]
    frame["ts"] = [r["ts"] for r in records]
    frame["request_id"] = [r.get("id") for r in records]
    frame["entity"] = [r.get("e") for r in records]
    return frame
