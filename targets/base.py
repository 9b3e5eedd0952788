"""The small interface every target implements: check and emit; targets that also run a system
(today the local one) implement `OperableTarget` too, and the CLI drives them only through it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from specml.compiler.errors import Diagnostic
from specml.compiler.ir import Plan


@dataclass(frozen=True)
class EmitResult:
    """The files a target wrote, relative to the output folder, in a stable order."""

    out_dir: Path
    files: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Target(Protocol):
    """A compilation target. Implementations import their heavy stack lazily, inside methods."""

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip extra that installs its stack: specml[<extra>]

    def check(self, plan: Plan) -> list[Diagnostic]:
        """What this target cannot express or provide for this Plan (unsupported features)."""
        ...

    def emit(self, plan: Plan, out_dir: Path) -> EmitResult:
        """Write the compiled, deterministic output for this Plan into out_dir."""
        ...


@dataclass
class ApplyOptions:
    """How to apply: retrain even when up to date, where progress goes, the composed spec."""

    force: bool = False
    console: Any = None  # a rich Console; None: step progress on stderr unless quiet
    quiet: bool = False
    spec_yaml: str | None = None  # the composed spec, kept with the run (lineage)
    dry_run: bool = False  # print every action, change nothing (targets that apply remotely)
    # Service endpoints by role for targets that talk to a cluster (`pipelines`, `kubernetes`);
    # unset roles come from the environment, then the spec's target settings. Never credentials.
    endpoints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeOptions:
    """Where and what to serve; None: the Plan's settings."""

    host: str | None = None
    port: int | None = None
    model_dir: Path | None = None  # serve this model folder instead of the champion
    features_as_of: str = "now"  # clock for feature TTLs: now, materialized or an ISO time


RolloutAction = Literal["status", "promote", "rollback", "run"]


@dataclass(frozen=True)
class RolloutOptions:
    """One rollout command: show it, promote or roll back now, or drive it to the end."""

    action: RolloutAction = "status"
    reason: str = ""
    time_scale: float = 1.0  # shrink holds and intervals (run)
    url: str | None = None  # the server to judge (run; default: the Plan's)
    max_seconds: float | None = None  # stop driving after this long (run; resumable)
    on_decision: Callable[[Any], None] | None = None  # each controller decision (run)
    # service endpoints by role for cluster targets (kubeflow: `kubernetes`), as in ApplyOptions
    endpoints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutReport:
    """Where a rollout stands after a command; `status` None: there is no rollout."""

    status: str | None
    document: dict[str, Any] | None = None
    challenger_version: str | None = None


@dataclass
class MonitorOptions:
    """Knobs of one monitoring pass: the clock, the request window, the live endpoint, actions."""

    now: float | None = None
    window_rows: int = 50_000
    min_rows: int = 100  # fewer logged requests in the window: PSI is noise, drift is not judged
    metrics_url: str | None = None  # default: the served endpoint's /metrics
    scrape: bool = True
    evidently: bool = True
    act: bool = True  # run rollback/retrain actions and triggers (False: report only)
    time_scale: float = 1.0  # passed to a rollout a retrain starts
    console: Any = None
    registry: Any = None  # a rollout ModelRegistry (default: the target's)


@dataclass(frozen=True)
class History:
    """Recorded applies (newest first) and the registry's aliases."""

    records: Sequence[dict[str, Any]]
    aliases: dict[str, str]


@runtime_checkable
class OperableTarget(Target, Protocol):
    """A target that runs the system it compiles: apply, serve, rollouts and monitoring."""

    def apply(self, plan: Plan, base_dir: Path, options: ApplyOptions | None = None) -> Any:
        """Run the lifecycle; the result has `summary() -> dict` (raises GateFailed/TargetError)."""
        ...

    def serve(self, plan: Plan, base_dir: Path, options: ServeOptions | None = None) -> None:
        """Serve the champion until interrupted."""
        ...

    def recorded_plan(self, plan: Plan, base_dir: Path) -> Path:
        """The file recording the last applied Plan (`specml plan --target` diffs against it)."""
        ...

    def plan_changes(self, plan: Plan, base_dir: Path) -> list[str]:
        """What apply would change beyond the Plan itself (data, a failed last apply)."""
        ...

    def history(self, plan: Plan, base_dir: Path) -> History:
        """The recorded applies and aliases."""
        ...

    def rollout(self, plan: Plan, base_dir: Path, options: RolloutOptions) -> RolloutReport:
        """Show or drive the rollout of the challenger."""
        ...

    def monitor(self, plan: Plan, base_dir: Path, options: MonitorOptions) -> dict[str, Any]:
        """One monitoring pass: drift, alerts, actions, retraining; returns its summary."""
        ...

    def ingest_labels(self, plan: Plan, base_dir: Path, label_file: Path | None) -> dict[str, Any]:
        """Join delayed labels to logged predictions; returns the live metrics."""
        ...
