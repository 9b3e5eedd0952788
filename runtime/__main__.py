"""`python -m specml.runtime <kind> --plan plan.json --workdir DIR --data-dir DIR [--input n=p] [--output n=p]`
and `python -m specml.runtime serve [MODEL_DIR] [--port N ...]` (the inference server; see
`python -m specml.runtime serve --help`: what a SageMaker endpoint container runs).

Prints the StepResult as JSON. Exit codes: 0 ok, 1 step failed (clean message), 2 usage. A failed
evaluation gate is a result, not a failure: `evaluate` exits 0 and its report says
`gate_passed: false` (the pipeline's condition step decides what runs next); with
`--fail-on-gate` it exits 3 instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specml.compiler.errors import SpecError
from specml.runtime.contract import STEP_IMPLEMENTATIONS, StepContext, run_step


def _pairs(values: list[str], flag: str, parser: argparse.ArgumentParser) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"{flag} expects NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run one pipeline step (or `serve`) from the command line."""
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in[:1] == ["rollout-controller"]:  # the kubeflow target's in-cluster controller
        from specml.runtime.rollout.cluster import main as rollout_controller

        return rollout_controller(args_in[1:])
    if args_in[:1] == ["monitor-service"]:  # the kubeflow target's payload-logger sink
        from specml.runtime.monitor.service import main as monitor_service

        return monitor_service(args_in[1:])
    if args_in[:1] == ["drift-job"]:  # the sagemaker target's scheduled drift job
        from specml.runtime.monitor.cloudwatch import main as drift_job

        return drift_job(args_in[1:])
    if args_in[:1] == ["serve"]:
        from specml.runtime.serving.__main__ import main as serve

        # A container listens on every interface; SageMaker runs `IMAGE serve`.
        return serve(args_in[1:], prog="python -m specml.runtime serve", host="0.0.0.0")
    parser = argparse.ArgumentParser(
        prog="python -m specml.runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=sorted(STEP_IMPLEMENTATIONS))
    parser.add_argument("--plan", required=True, type=Path, help="the Plan's JSON file")
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow URI (default: sqlite in workdir)"
    )
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--output", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument(
        "--fail-on-gate",
        action="store_true",
        help="evaluate: exit 3 when a gate fails (default: exit 0, report says so)",
    )
    args = parser.parse_args(args_in)
    ctx = StepContext(
        workdir=args.workdir,
        data_dir=args.data_dir,
        tracking_uri=args.tracking_uri,
        run_id=args.run_id,
    )
    try:
        plan_text = args.plan.read_text()
    except OSError as exc:
        print(f"error: cannot read plan {args.plan}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        result = run_step(
            args.kind,
            plan_text,
            ctx,
            _pairs(args.input, "--input", parser),
            _pairs(args.output, "--output", parser),
        )
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(
        json.dumps(
            {"values": result.values, "metrics": result.metrics},
            sort_keys=True,
            indent=2,
            default=str,
        )
    )
    if args.kind == "evaluate" and result.values.get("gate_passed") is False:
        failed = [g for g in result.values.get("gates", []) if not g["passed"]]
        for g in failed:
            print(
                f"gate failed: {g['gate']}: {g['metric']}={g['value']:.4f} "
                f"misses by {-g['margin']:.4f}",
                file=sys.stderr,
            )
        if args.fail_on_gate:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
