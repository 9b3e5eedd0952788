"""`python -m specml.runtime.serving MODEL_DIR [--port N ...]`: serve one model folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specml.runtime.serving.server import ServerConfig, serve_forever


def main(argv: list[str] | None = None) -> None:
    """Parse flags and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m specml.runtime.serving")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--no-batching", action="store_true")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--feature-repo", default=None)
    parser.add_argument("--no-online-features", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_forever(
        ServerConfig(
            model_dir=args.model_dir,
            host=args.host,
            port=args.port,
            batching=not args.no_batching,
            max_batch_size=args.max_batch_size,
            max_delay_ms=args.max_delay_ms,
            max_body_bytes=args.max_body_bytes,
            feature_repo=args.feature_repo,
            online_features=not args.no_online_features,
            intra_op_threads=args.intra_op_threads,
        )
    )


if __name__ == "__main__":
    main()
