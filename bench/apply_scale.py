"""Churn apply at growing data sizes: wall time per step and peak RSS (printed, never asserted).

    .venv/bin/python bench/apply_scale.py            # 100k rows
    .venv/bin/python bench/apply_scale.py --big      # 100k, 1M and 3M rows
    .venv/bin/python bench/apply_scale.py --rows 1000000 --set training.hyperparameters.epochs=1

Each size runs in a fresh folder: `specml demo-data --rows N`, then one apply in its own process,
whose peak resident memory (ru_maxrss) is what an apply of that size needs. Targets (issue 16):
peak RSS <= 1 GB at 1M rows, time growing no faster than linearly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

APPLY = """
import json, resource, sys, time
from pathlib import Path
from specml.compiler.api import plan_file
from specml.targets.local.target import ApplyOptions, LocalTarget

spec = Path(sys.argv[1])
started = time.perf_counter()
plan = plan_file(spec, overrides=sys.argv[2:])
result = LocalTarget().apply(plan, spec.parent, ApplyOptions(quiet=True))
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "steps": result.step_seconds,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def run_size(rows: int, keep: bool, overrides: list[str]) -> dict:
    """demo-data + one apply at `rows` rows per entity source; the apply's figures."""
    folder = Path(tempfile.mkdtemp(prefix=f"specml-apply-{rows}-"))
    spec = folder / "churn.yaml"
    shutil.copy(ROOT / "specs" / "churn.yaml", spec)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "specml.cli.main", "demo-data", str(spec), "--rows", str(rows)],
        check=True,
        capture_output=True,
    )
    demo_seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (folder / "data").rglob("*.parquet"))
    done = subprocess.run(
        [sys.executable, "-c", APPLY, str(spec), *overrides],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(rows=rows, demo_data_seconds=demo_seconds, parquet_mb=size / 2**20)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        figures["folder"] = str(folder)
    return figures


def main() -> None:
    """Run the sizes asked for and print one table row per size, then the per-step times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also 1M and 3M rows (minutes)")
    parser.add_argument("--rows", type=int, action="append", help="these sizes instead")
    parser.add_argument("--keep", action="store_true", help="keep each size's folder")
    parser.add_argument(
        "--set", action="append", default=[], help="a spec override for the apply (KEY=VALUE)"
    )
    args = parser.parse_args()
    sizes = args.rows or ([100_000, 1_000_000, 3_000_000] if args.big else [100_000])
    results = [run_size(rows, args.keep, args.set) for rows in sizes]
    print(f"{'rows':>10} {'parquet MB':>11} {'apply s':>9} {'s/100k rows':>12} {'peak RSS MB':>12}")
    for r in results:
        per = r["seconds"] / (r["rows"] / 100_000)
        print(
            f"{r['rows']:>10} {r['parquet_mb']:>11.1f} {r['seconds']:>9.1f} {per:>12.2f} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    steps = list(results[0]["steps"])
    print("\nseconds per step:")
    print(f"{'step':<22}" + "".join(f"{r['rows']:>12}" for r in results))
    for step in steps:
        print(f"{step:<22}" + "".join(f"{r['steps'].get(step, 0):>12.2f}" for r in results))


if __name__ == "__main__":
    main()
