"""Delayed labels: join labels to logged predictions and compute the live model metrics.

Labels arrive two ways. A label file (csv, parquet, json lines) has a label column (the spec's
label field, or `label`) and a key: `request_id` (as logged), or the entity join keys (the newest
logged prediction for each entity is the one labelled). Or a client POSTs them to the model server
(`POST /v1/models/{name}/labels`, rows {"label": ..., "request_id": ...} or with the entity keys
instead of request_id); the server checks them (`check_label_rows`) and appends them to
`<workdir>/monitor/labels/` (`LabelSink`), where `specml labels SPEC` and `specml monitor` read
them. A row keyed by request_id is joined by it, any other row by its entity keys. The metrics are
those named by metric_drop alerts/triggers.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan


def _error(message: str, hint: str, code: str = "bad_labels") -> TargetError:
    return TargetError([Diagnostic(message, hint=hint, stage="target", code=code)])


def read_label_file(path: str | Path) -> Any:
    """A DataFrame from .csv, .parquet or .jsonl/.json (one object per line)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise _error(
            f"label file {path} not found", "pass a csv, parquet or jsonl file", "missing_labels"
        )
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


MAX_LABELS_PER_REQUEST = 10_000
MAX_REQUEST_ID_CHARS = 256


def posted_labels_dir(workdir: str | Path) -> Path:
    """Where the server keeps POSTed labels: <workdir>/monitor/labels."""
    from specml.runtime.layout import Workdir

    return Workdir(Path(workdir)).posted_labels


def check_label_rows(doc: Any, join_keys: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a POSTed {"labels": [...]} document, or ValueError naming the first bad row.

    Each row: "label" (a finite number or bool) and either "request_id" (as the server answered
    it) or every entity join key (numbers or strings); no other keys.
    """
    keys = list(join_keys)
    allowed = {"label", "request_id", *keys}
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise ValueError('expected {"labels": [{"label": ..., "request_id": ...}, ...]}')
    rows = doc["labels"]
    extra = sorted(set(doc) - {"labels"})
    if extra:
        raise ValueError(f"unknown top-level key(s) {extra}; only 'labels' is read")
    if not rows:
        raise ValueError("'labels' is empty")
    if len(rows) > MAX_LABELS_PER_REQUEST:
        raise ValueError(
            f"{len(rows)} labels in one request; send at most {MAX_LABELS_PER_REQUEST} per request"
        )
    out = []
    for i, row in enumerate(rows):
        where = f"labels[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where} is {type(row).__name__}, expected an object")
        unknown = sorted(set(row) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        label = row.get("label")
        if isinstance(label, bool):
            label = int(label)
        if not isinstance(label, int | float) or not math.isfinite(label):
            raise ValueError(f"{where}.label must be a finite number, got {row.get('label')!r}")
        clean: dict[str, Any] = {"label": label}
        rid = row.get("request_id")
        if rid is not None:
            if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID_CHARS:
                raise ValueError(
                    f"{where}.request_id must be a non-empty string of at most "
                    f"{MAX_REQUEST_ID_CHARS} characters"
                )
            clean["request_id"] = rid
        else:
            missing = [k for k in keys if k not in row]
            if not keys or missing:
                wanted = " or ".join(["request_id", *([f"the entity keys {keys}"] if keys else [])])
                raise ValueError(f"{where} needs {wanted}")
            for k in keys:
                v = row[k]
                if isinstance(v, bool) or not isinstance(v, int | str):
                    raise ValueError(f"{where}.{k} must be an integer or a string, got {v!r}")
                clean[k] = v
        out.append(clean)
    return out


class LabelQuotaExceeded(Exception):
    """A label write refused by the sink's quota; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# Quotas: a flood of valid label rows must not fill the disk (93.5 MB in 1.3 s was possible).
# 8 MiB a minute is ~80k label rows a minute; 512 MiB in all is months of labels for most systems.
WINDOW_SECONDS = 60.0
MAX_BYTES_PER_WINDOW = 8 * 1024 * 1024
MAX_TOTAL_BYTES = 512 * 1024 * 1024
ROTATE_BYTES = 4 * 1024 * 1024


class LabelSink:
    """Append-only label files (`<ns-time>-<pid>.jsonl`, a new one every `rotate_bytes`), safe
    from threads, within a per-window byte quota and a cap on what the folder holds in all.

    A write over quota is refused whole (`LabelQuotaExceeded`): nothing already stored is ever
    deleted to make room, and a refused request stores nothing."""

    def __init__(
        self,
        directory: str | Path,
        *,
        window_s: float = WINDOW_SECONDS,
        max_bytes_per_window: int = MAX_BYTES_PER_WINDOW,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        rotate_bytes: int = ROTATE_BYTES,
        clock: Any = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.window_s = window_s
        self.max_bytes_per_window = max_bytes_per_window
        self.max_total_bytes = max_total_bytes
        self.rotate_bytes = rotate_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._file_bytes = 0
        self._window_start = clock()
        self._window_bytes = 0
        self._total_bytes: int | None = None  # what the folder holds, read once

    def _stored_bytes(self) -> int:
        if self._total_bytes is None:
            self._total_bytes = sum(
                p.stat().st_size for p in self.directory.glob("*.jsonl") if p.is_file()
            )
        return self._total_bytes

    def _admit(self, size: int) -> None:
        now = self._clock()
        if now - self._window_start >= self.window_s:
            self._window_start, self._window_bytes = now, 0
        if self._window_bytes + size > self.max_bytes_per_window:
            wait = max(1, int(self._window_start + self.window_s - now + 0.999))
            raise LabelQuotaExceeded(
                f"label quota reached: at most {self.max_bytes_per_window} bytes of labels per "
                f"{self.window_s:g} s",
                wait,
            )
        if self._stored_bytes() + size > self.max_total_bytes:
            raise LabelQuotaExceeded(
                f"the label folder holds {self._stored_bytes()} bytes, its cap is "
                f"{self.max_total_bytes}: run `specml monitor` to fold labels in, or archive them",
                int(self.window_s),
            )

    def append(self, rows: Sequence[dict[str, Any]]) -> int:
        """Write the rows (stamped with the time they arrived) and flush; returns how many.
        Raises `LabelQuotaExceeded` (storing nothing) when the quota would be exceeded."""
        stamp = time.time()
        text = "".join(json.dumps({**r, "ts": stamp}, sort_keys=True) + "\n" for r in rows)
        size = len(text.encode("utf-8"))
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._admit(size)
            if self._path is None or self._file_bytes >= self.rotate_bytes:
                self._path = self.directory / f"{time.time_ns()}-{os.getpid()}.jsonl"
                self._file_bytes = 0
            with self._path.open("a", encoding="utf-8") as fh:
                fh.write(text)
            self._file_bytes += size
            self._window_bytes += size
            self._total_bytes = self._stored_bytes() + size
        return len(rows)


def read_posted_labels(directory: str | Path) -> Any:
    """Every POSTed label as a DataFrame (None when none were posted); a later label for the same
    key wins. A torn last line (a crash mid-write) is skipped."""
    import pandas as pd

    rows = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    if not rows:
        return None
    frame = pd.DataFrame(rows).sort_values("ts", kind="stable")
    keys = [c for c in frame.columns if c not in ("label", "ts")]
    return frame.drop_duplicates(keys, keep="last").drop(columns="ts").reset_index(drop=True)


def posted_labels_mtime(directory: str | Path) -> float:
    """The newest change to the posted labels (0.0 when there are none)."""
    return max((p.stat().st_mtime for p in Path(directory).glob("*.jsonl")), default=0.0)


def label_metrics_wanted(plan: Plan) -> list[str]:
    """Model metrics named by metric_drop alerts and triggers (sorted, unique)."""
    names = {a.metric for a in plan.alerts if a.kind == "metric_drop"}
    if plan.retraining is not None:
        names |= {
            t.metric for t in plan.retraining.triggers if t.kind == "metric_drop" and t.metric
        }
    return sorted(names)


def join_labels(
    plan: Plan, labels: Any, requests: Any, join_keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, model output [N, K]) for every label that matches a logged prediction."""
    label_col = (
        plan.features.label.field if plan.features.label.field in labels.columns else "label"
    )
    if label_col not in labels.columns:
        raise _error(
            f"the label file has no '{plan.features.label.field}' or 'label' column",
            "add the label column",
        )
    import pandas as pd

    pred_cols = [c for c in requests.columns if c == "prediction" or c.startswith("prediction:")]
    has_keys = bool(join_keys) and all(k in labels.columns for k in join_keys)
    if "request_id" not in labels.columns and not has_keys:
        raise _error(
            f"the labels have neither a request_id column nor the entity keys {list(join_keys)}",
            "add request_id (as logged by the server) or the entity keys",
        )
    parts = []
    by_entity = labels
    if "request_id" in labels.columns:
        keyed = labels["request_id"].notna()
        by_entity = labels[~keyed] if has_keys else labels.iloc[:0]
        logged = requests.dropna(subset=["request_id"]).drop_duplicates("request_id", keep="last")
        parts.append(
            labels[keyed].merge(logged, on="request_id", how="inner", suffixes=("_label", ""))
        )
    if has_keys and len(by_entity):
        by_entity = by_entity.dropna(subset=list(join_keys))
        ent = requests[requests["entity"].notna()].copy()
        for k in join_keys:
            ent[k] = [e.get(k) for e in ent["entity"]]
        ent = ent.dropna(subset=list(join_keys)).drop_duplicates(list(join_keys), keep="last")
        for k in join_keys:
            ent[k] = ent[k].astype(by_entity[k].dtype)
        parts.append(
            by_entity.drop(columns=["request_id"], errors="ignore").merge(
                ent, on=list(join_keys), how="inner", suffixes=("_label", "")
            )
        )
    merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    y_col = label_col if label_col in merged.columns else f"{label_col}_label"
    return merged[y_col].to_numpy(), merged[pred_cols].to_numpy(dtype=np.float64)


def live_metrics(
    plan: Plan, labels: Any, requests: Any, join_keys: Sequence[str]
) -> dict[str, Any]:
    """The metrics of labelled, logged predictions (+ how many matched)."""
    from specml.runtime.steps.metrics import compute_metrics

    y, output = join_labels(plan, labels, requests, join_keys)
    if len(y) == 0:
        raise _error(
            "no label matched a logged prediction",
            "check request ids / entity keys against the request log (<workdir>/monitor/requests)",
            "no_label_match",
        )
    task = plan.training.task
    y = y.astype("float32" if task == "regression" else "int64")
    metrics = compute_metrics(task, y, output, label_metrics_wanted(plan))
    return {"metrics": metrics, "matched": int(len(y)), "labels": int(len(labels))}
