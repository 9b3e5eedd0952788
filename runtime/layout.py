"""Where things live in a workdir (targets.local.workdir): the one place these names are spelled.

state.json                 the local target's record of what was applied
mlflow.db, mlartifacts/    the MLflow tracking store and model registry
runs/<run_id>/<step>/      each apply's artefacts (training set, model, ONNX export ...)
runs/<run_id>/materialize_features/   that apply's Feast repo and online store
serving/current/           the champion `specml serve` loads
serving/challenger/        the challenger a rollout routes traffic to
rollout/state.json         the rollout controller's state (the server polls it)
monitor/                   request log, posted labels, alert and retrain state, reports
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Workdir"]


@dataclass(frozen=True)
class Workdir:
    """Paths inside one system's workdir."""

    root: Path

    @property
    def state_file(self) -> Path:
        """The local target's applied-state record."""
        return self.root / "state.json"

    @property
    def mlflow_db(self) -> Path:
        """The SQLite MLflow tracking store and registry."""
        return self.root / "mlflow.db"

    @property
    def runs(self) -> Path:
        """Per-apply artefact folders."""
        return self.root / "runs"

    def run(self, run_id: str) -> Path:
        """One apply's artefacts."""
        return self.runs / run_id

    @property
    def serving(self) -> Path:
        """Published model folders (one per slot)."""
        return self.root / "serving"

    def slot(self, name: str) -> Path:
        """serving/<name>: `current` (champion) or `challenger`."""
        return self.serving / name

    @property
    def current(self) -> Path:
        """The champion's published model folder."""
        return self.slot("current")

    @property
    def challenger(self) -> Path:
        """The challenger's published model folder."""
        return self.slot("challenger")

    @property
    def rollout_state(self) -> Path:
        """The rollout controller's state file."""
        return self.root / "rollout" / "state.json"

    @property
    def monitor(self) -> Path:
        """Monitoring records and reports."""
        return self.root / "monitor"

    @property
    def request_log(self) -> Path:
        """Logged requests (for drift)."""
        return self.monitor / "requests"

    @property
    def posted_labels(self) -> Path:
        """Labels POSTed to the server."""
        return self.monitor / "labels"
