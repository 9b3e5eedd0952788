"""Evidently's data-drift report (PSI method) next to our own JSON drift summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specml.runtime.monitor.drift import DriftReport


@dataclass(frozen=True)
class EvidentlyDrift:
    """Evidently's per-column PSI and drift verdicts, and where its report was written."""

    psi: dict[str, float]
    drifted: dict[str, bool]
    threshold: float
    html_path: Path | None
    json_path: Path | None


def evidently_psi(
    reference: Any,
    current: Any,
    columns: Sequence[str],
    threshold: float = 0.1,
    out_dir: str | Path | None = None,
    ours: DriftReport | None = None,
) -> EvidentlyDrift:
    """Run Evidently's DataDriftPreset with stattest `psi`; optionally write HTML + JSON to out_dir.

    Evidently bins each numeric column with Sturges' rule on reference+current combined (not
    settable), so its PSI values differ from ours (training quantile bins); verdicts agree when
    the shift is clear of the threshold. When `ours` is given the JSON holds both side by side.
    """
    from evidently import Report  # heavy: only here
    from evidently.presets import DataDriftPreset

    cols = list(columns)
    preset = DataDriftPreset(columns=cols, method="psi", threshold=threshold)
    snapshot = Report([preset]).run(current_data=current[cols], reference_data=reference[cols])
    psi: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift") and config.get("column") in cols:
            psi[config["column"]] = float(metric["value"])
    drifted = {c: v >= threshold for c, v in psi.items()}
    html_path = json_path = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        html_path = out / "evidently_drift.html"
        snapshot.save_html(str(html_path))
        json_path = out / "drift_summary.json"
        summary: dict[str, Any] = {
            "method": "psi",
            "threshold": threshold,
            "evidently": {"psi": psi, "drifted": drifted},
        }
        if ours is not None:
            summary["specml"] = ours.to_json()
            summary["specml"]["drifted"] = {
                c: d.psi >= threshold for c, d in ours.features.items() if c in cols
            }
        json_path.write_text(json.dumps(summary, sort_keys=True, indent=2) + "\n")
    return EvidentlyDrift(psi, drifted, threshold, html_path, json_path)
