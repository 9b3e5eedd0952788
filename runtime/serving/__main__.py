"""`python -m specml.runtime.serving [MODEL_DIR] [--port N ...]`: serve a champion model folder.

Defaults come from the environment so the same image serves as a SageMaker endpoint container
(`python -m specml.runtime serve`, what SageMaker's `docker run IMAGE serve` runs when the image's
entrypoint is `python -m specml.runtime`): MODEL_DIR from $SM_MODEL_DIR else /opt/ml/model, the
port from $SAGEMAKER_BIND_TO_PORT else 8080, batching from $SPECML_MAX_BATCH_SIZE (1 = off) and
$SPECML_MAX_DELAY_MS (the SageMaker target sets both from the Plan's endpoint).

Rollouts: `--challenger-dir DIR --rollout-state FILE` loads a challenger and routes by the state
file. Fault injection (drills only, challenger role only, off by default): `--inject-latency-ms`,
`--inject-error-rate` (defaults from env SPECML_INJECT_LATENCY_MS / SPECML_INJECT_ERROR_RATE).

Transport (see asgi.py and workers.py): `--workers N` processes on one port (0, the default:
from the core count, $SPECML_WORKERS overrides), `--grpc-port` for the gRPC service (off unless
given), and the HTTP limits `--max-body-bytes`, `--max-header-bytes`, `--max-connections`,
`--idle-timeout-s`, `--request-timeout-s`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from specml.runtime.serving.model import ModelLoadError
from specml.runtime.serving.roles import FaultInjection
from specml.runtime.serving.sagemaker import model_dir_from_env, port_from_env
from specml.runtime.serving.server import ServerConfig, serve_forever


def main(
    argv: list[str] | None = None,
    prog: str = "python -m specml.runtime.serving",
    host: str = "127.0.0.1",
) -> int:
    """Parse flags and serve until SIGINT/SIGTERM; 1 when the model cannot be loaded."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model_dir",
        type=Path,
        nargs="?",
        default=None,
        help="model.onnx + serving.json (default: $SM_MODEL_DIR or /opt/ml/model)",
    )
    parser.add_argument("--host", default=host)
    parser.add_argument("--port", type=int, default=port_from_env())
    parser.add_argument("--no-batching", action="store_true")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=int(env.get("SPECML_MAX_BATCH_SIZE") or ServerConfig.max_batch_size),
    )
    parser.add_argument(
        "--max-delay-ms", type=float, default=float(env.get("SPECML_MAX_DELAY_MS") or 2.0)
    )
    parser.add_argument("--max-body-bytes", type=int, default=ServerConfig.max_body_bytes)
    parser.add_argument("--max-header-bytes", type=int, default=ServerConfig.max_header_bytes)
    parser.add_argument("--max-connections", type=int, default=ServerConfig.max_connections)
    parser.add_argument("--idle-timeout-s", type=float, default=ServerConfig.idle_timeout_s)
    parser.add_argument("--request-timeout-s", type=float, default=ServerConfig.request_timeout_s)
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env.get("SPECML_WORKERS") or 0),
        help="serving processes on one port (0: min(cores, 4), 1 on <= 2 cores)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=int(env["SPECML_GRPC_PORT"]) if env.get("SPECML_GRPC_PORT") else None,
        help="serve the Open Inference Protocol's gRPC service on this port too (0: any free)",
    )
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--feature-repo", default=None)
    parser.add_argument("--no-online-features", action="store_true")
    parser.add_argument("--challenger-dir", type=Path, default=None)
    parser.add_argument("--rollout-state", type=Path, default=None)
    parser.add_argument("--state-poll-ms", type=float, default=50.0)
    parser.add_argument("--request-log-dir", type=Path, default=None)
    parser.add_argument(
        "--features-as-of",
        default="now",
        help="TTL clock of the online features: now, materialized or ISO-8601",
    )
    faults = FaultInjection.from_env()
    parser.add_argument(
        "--inject-latency-ms",
        type=float,
        default=faults.latency_ms,
        help="drills: delay every challenger inference by this much",
    )
    parser.add_argument(
        "--inject-error-rate",
        type=float,
        default=faults.error_rate,
        help="drills: fail this share of challenger inferences (0..1)",
    )
    parser.add_argument("--inject-seed", type=int, default=faults.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        model_dir=args.model_dir or model_dir_from_env(),
        host=args.host,
        port=args.port,
        batching=not args.no_batching,
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        max_body_bytes=args.max_body_bytes,
        max_header_bytes=args.max_header_bytes,
        max_connections=args.max_connections,
        idle_timeout_s=args.idle_timeout_s,
        request_timeout_s=args.request_timeout_s,
        workers=args.workers,
        grpc_port=args.grpc_port,
        feature_repo=args.feature_repo,
        online_features=not args.no_online_features,
        intra_op_threads=args.intra_op_threads,
        challenger_dir=args.challenger_dir,
        rollout_state=args.rollout_state,
        state_poll_ms=args.state_poll_ms,
        request_log_dir=args.request_log_dir,
        inject_latency_ms=args.inject_latency_ms,
        inject_error_rate=args.inject_error_rate,
        inject_seed=args.inject_seed,
        features_as_of=args.features_as_of,
    )
    try:
        serve_forever(config)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: cannot serve {config.model_dir}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
