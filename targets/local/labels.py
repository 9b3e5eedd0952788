"""Delayed labels for the local target: joined to logged predictions, giving live metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from specml.compiler.errors import Diagnostic, TargetError
from specml.compiler.ir import Plan
from specml.runtime.files import write_json_atomic
from specml.runtime.layout import Workdir
from specml.targets.local.state import workdir

LABELS = "labels.json"
log = logging.getLogger("specml.monitor")


def live_metrics_path(wd: Workdir) -> Path:
    """Where the live metrics from the last label ingestion are kept."""
    return wd.monitor / LABELS


def read_live_metrics(wd: Workdir) -> dict[str, float] | None:
    """The live metrics of the last ingestion (None before any)."""
    path = live_metrics_path(wd)
    return json.loads(path.read_text())["metrics"] if path.exists() else None


def refresh_posted_labels(plan: Plan, base: Path) -> None:
    """Labels POSTed since the live metrics were last computed are joined in now."""
    from specml.runtime.monitor.labels import posted_labels_dir, posted_labels_mtime

    wd = Workdir(workdir(plan, base))
    path = live_metrics_path(wd)
    posted = posted_labels_mtime(posted_labels_dir(wd.root))
    if posted == 0.0 or (path.exists() and path.stat().st_mtime >= posted):
        return
    try:
        ingest_labels(plan, base, None)
    except TargetError as exc:  # e.g. no label matches a logged prediction yet: keep the last
        log.warning("posted labels not used: %s", exc.diagnostics[0].message)


def _posted(wd: Workdir) -> Any:
    from specml.runtime.monitor.labels import posted_labels_dir, read_posted_labels

    labels = read_posted_labels(posted_labels_dir(wd.root))
    if labels is None:
        raise TargetError(
            [
                Diagnostic(
                    f"no labels were posted to the server (none under {wd.posted_labels})",
                    stage="target",
                    code="missing_labels",
                    hint="POST them to /v1/models/<name>/labels, or pass a label FILE",
                )
            ]
        )
    return labels


def ingest_labels(plan: Plan, base_dir: Path, label_file: Path | None = None) -> dict[str, Any]:
    """Join delayed labels (a file, or those POSTed to the server when `label_file` is None) to
    the request log; save the live metrics for metric-drop alerts."""
    from specml.runtime.monitor.labels import live_metrics, read_label_file
    from specml.runtime.monitor.requestlog import read_requests, request_log_dir
    from specml.runtime.steps.common import entity_join_keys

    wd = Workdir(workdir(plan, Path(base_dir).resolve()))
    labels = _posted(wd) if label_file is None else read_label_file(label_file)
    requests = read_requests(request_log_dir(wd.root))
    if not len(requests):
        raise TargetError(
            [
                Diagnostic(
                    "the request log is empty: no prediction to label",
                    stage="target",
                    code="no_requests",
                    hint="serve some traffic first",
                )
            ]
        )
    result = live_metrics(plan, labels, requests, entity_join_keys(plan))
    result["at"] = time.time()
    result["source"] = str(label_file) if label_file is not None else "posted"
    write_json_atomic(live_metrics_path(wd), result, durable=False)
    return result
