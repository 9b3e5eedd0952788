"""What a server loads: its configuration, the champion/challenger model slots, the online
feature reader and the request log (server.py decides when, on which thread)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specml.runtime.serving.app import InferenceApp
from specml.runtime.serving.batching import make_runner
from specml.runtime.serving.metrics import ServingMetrics
from specml.runtime.serving.model import ModelLoadError, ServedModel, ServingManifest
from specml.runtime.serving.roles import FaultInjection, ModelSlot, Role, TrafficControl

log = logging.getLogger("specml.serving")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; the local target fills it from the Plan's endpoint."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port
    batching: bool = True
    max_batch_size: int = 32  # the spec's serving.batching.max_batch_size default
    max_delay_ms: float = 2.0
    max_body_bytes: int = 8 * 1024 * 1024
    feature_repo: str | None = None  # overrides serving.json's feature_repo
    online_features: bool = True  # load the Feast reader when a feature repo is known
    intra_op_threads: int = 0  # 0: 1 for a small model (<= 1 MiB), else ONNX Runtime's default
    grace_seconds: float = 5.0
    challenger_dir: Path | None = None  # a second model folder (rollouts)
    rollout_state: Path | None = None  # the rollout state file that sets the traffic split
    state_poll_ms: float = 50.0  # how often the state file's mtime is checked
    request_log_dir: Path | None = None  # log features + predictions for drift monitoring
    inject_latency_ms: float = 0.0  # fault injection, CHALLENGER only (drills; 0 = off)
    inject_error_rate: float = 0.0  # fault injection, CHALLENGER only (drills; 0 = off)
    inject_seed: int | None = None
    # The TTL clock of the online feature reader: "now" (wall clock), "materialized" (the repo's
    # last materialization end; replays and the skew check) or an ISO-8601 time.
    features_as_of: str = "now"
    # Transport (asgi.py, workers.py). workers: processes on one port (0: from the core count).
    workers: int = 1
    grpc_port: int | None = None  # the gRPC Open Inference Protocol service (0: any free port)
    max_header_bytes: int = 16 * 1024
    max_connections: int = 2048  # per worker; beyond it a connection gets a 503 and is closed
    idle_timeout_s: float = 5.0  # keep-alive, and a connected client that sends nothing
    request_timeout_s: float = 30.0  # head and body of one request must arrive within this
    backlog: int = 2048
    freeze_gc: bool = True  # gc.freeze() after loading (the server process owns its heap)


def load_slot(
    config: ServerConfig, model_dir: Path, metrics: ServingMetrics, role: Role
) -> ModelSlot:
    """Load one model folder into a slot with its own runner (and fault injection if challenger)."""
    model = ServedModel(model_dir, config.intra_op_threads)
    labels = (model.name, model.version)
    batch_hist = metrics.batch_size.labels(*labels)
    queue_hist = metrics.queue_delay.labels(*labels)
    run_hist = metrics.inference_latency.labels(*labels)

    def observe(rows: int, delays: list[float]) -> None:
        batch_hist.observe(rows)
        for delay in delays:
            queue_hist.observe(delay)

    def run(inputs):  # type: ignore[no-untyped-def]
        with run_hist.time():
            return model.run(inputs)

    runner = make_runner(run, config.batching, config.max_batch_size, config.max_delay_ms, observe)
    faults = FaultInjection(config.inject_latency_ms, config.inject_error_rate, config.inject_seed)
    log.info("%s: model %s version %s on %s", role, model.name, model.version, model.provider)
    return ModelSlot(model, runner, metrics, role, faults)


def _compatible(champion: ModelSlot, challenger: ModelSlot) -> str | None:
    """Why a challenger cannot stand in for the champion (None: it can)."""
    a, b = champion.model, challenger.model
    if a.name != b.name:
        return f"it serves model '{b.name}', the champion '{a.name}'"
    if a.inputs != b.inputs or a.manifest.features != b.manifest.features:
        return "its inputs (names, datatypes, order) differ from the champion's"
    if a.manifest.output_name != b.manifest.output_name:
        return "its output differs from the champion's"
    return None


def build_app(
    config: ServerConfig, metrics: ServingMetrics | None = None, with_features: bool = True
) -> InferenceApp:
    """Load the champion (and challenger), request log and metrics; the online feature reader too
    unless `with_features` is False (the server then installs it later, see `feature_repo`)."""
    metrics = metrics or ServingMetrics()
    champion = load_slot(config, config.model_dir, metrics, "champion")

    def load_challenger(folder: Path) -> ModelSlot:
        slot = load_slot(config, folder, metrics, "challenger")
        problem = _compatible(champion, slot)
        if problem is not None:
            slot.close()
            raise ModelLoadError(f"challenger in {folder} cannot be served: {problem}")
        return slot

    challenger = None
    folder = config.challenger_dir
    if folder is not None and (folder / "serving.json").is_file() and config.rollout_state is None:
        try:  # without a rollout state it is only loaded (versioned path), never routed to
            challenger = load_challenger(folder)
        except ModelLoadError as exc:
            log.warning("%s", exc)
    traffic = TrafficControl(
        champion,
        challenger,
        config.rollout_state,
        folder,
        load_challenger,
        config.state_poll_ms / 1000.0,
    )
    repo = feature_repo(config, champion.model.manifest)
    reader = load_reader(config, repo, champion.model.manifest) if with_features and repo else None
    log.info(
        "batching %s",
        f"on (max {config.max_batch_size} rows, {config.max_delay_ms} ms)"
        if config.batching
        else "off",
    )
    if config.inject_latency_ms or config.inject_error_rate:
        log.warning(
            "FAULT INJECTION on the challenger: +%g ms, error rate %g",
            config.inject_latency_ms,
            config.inject_error_rate,
        )
    return InferenceApp(
        traffic,
        metrics,
        reader,
        config.max_body_bytes,
        _request_log(config, champion),
        _label_sink(config),
    )


def feature_repo(config: ServerConfig, manifest: ServingManifest) -> str | None:
    """The Feast repo predict-by-entity reads from (None: none configured or usable)."""
    repo = config.feature_repo or manifest.feature_repo
    if not (config.online_features and repo):
        return None
    if not Path(repo, "feature_store.yaml").is_file():
        log.warning("feature repo %s has no feature_store.yaml: predict-by-entity disabled", repo)
        return None
    return repo


def load_reader(config: ServerConfig, repo: str, manifest: ServingManifest) -> Any:
    """The online feature reader (imports Feast: seconds on a loaded machine)."""
    from specml.runtime.serving.online_features import OnlineFeatureReader

    return OnlineFeatureReader(repo, manifest.features, as_of=config.features_as_of)


def _request_log(config: ServerConfig, champion: ModelSlot) -> Any:
    """The monitoring request log when asked for (None otherwise)."""
    if config.request_log_dir is None:
        return None
    from specml.runtime.monitor.requestlog import RequestLog

    return RequestLog(config.request_log_dir, feature_names=champion.model.manifest.features)


def _label_sink(config: ServerConfig) -> Any:
    """Where POSTed labels go: beside the request log (<workdir>/monitor/labels), when logging."""
    if config.request_log_dir is None:
        return None
    from specml.runtime.monitor.labels import LabelSink

    return LabelSink(Path(config.request_log_dir).parent / "labels")
