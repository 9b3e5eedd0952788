"""Compile speed: validate + lower 100 generated specs in one process, and `specml validate` startup.

Run: `.venv/bin/python bench/compile_speed.py [--specs 100] [--cli-runs 5]`.
Prints total and per-spec median/p95 (target: < 1 s total on 2 cores), the wall clock of a
`specml validate` process, the heaviest imports on that path, and how fast an alias bomb is
refused. Makes no timing assertions; exits non-zero only if a generated spec is invalid.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPECML = Path(sys.executable).with_name("specml")
HEAVY = (
    "torch",
    "onnxruntime",
    "onnx",
    "feast",
    "mlflow",
    "evidently",
    "kfp",
    "pulumi",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "sklearn",
    "hydra",
)
TASK_GATES = {
    "binary_classification": ({"roc_auc": 0.7}, {"log_loss": 0.6}, "roc_auc"),
    "multiclass_classification": (
        {"accuracy": 0.5, "macro_f1": 0.4},
        {"log_loss": 1.5},
        "accuracy",
    ),
    "regression": ({"r2": 0.3}, {"rmse": 10.0, "mae": 8.0}, "rmse"),
}


def generate_spec(i: int, rng: random.Random) -> dict[str, Any]:
    """One valid spec; names, sizes and optional sections vary with `i`."""
    task = list(TASK_GATES)[i % 3]
    gate_min, gate_max, metric = TASK_GATES[task]
    n_sources, n_views = rng.randint(1, 3), rng.randint(1, 6)
    sources = {
        f"src_{s}": {
            "format": rng.choice(["parquet", "csv"]),
            "path": f"data/s{i}_{s}.parquet",
            "timestamp": "event_ts",
        }
        for s in range(n_sources)
    }
    views = {
        f"view_{v}": {
            "entity": f"entity_{v % 2}",
            "source": f"src_{v % n_sources}",
            "ttl": f"{rng.randint(1, 90)}d",
            "fields": {
                f"f{v}_{k}": rng.choice(["int64", "float32", "float64", "bool"])
                for k in range(rng.randint(2, 15))
            },
        }
        for v in range(n_views)
    }
    entities = {f"entity_{e}": {"join_keys": [f"id_{e}"]} for e in range(min(2, n_views))}
    alerts: dict[str, Any] = {}
    for a in range(rng.randint(0, 6)):
        kind = a % 4
        if kind == 0:
            alerts[f"drift_{a}"] = {
                "metric": rng.choice(["psi", "ks"]),
                "warn": 0.1,
                "critical": 0.2,
            }
        elif kind == 1:
            alerts[f"latency_{a}"] = {"metric": "p95_latency_ms", "warn": 150, "critical": 300}
        elif kind == 2:
            alerts[f"errors_{a}"] = {"metric": "error_rate", "critical": 0.05}
        else:
            alerts[f"quality_{a}"] = {
                "metric": f"{metric}_drop",
                "critical": 0.05,
                "action": "retrain",
            }
    traffic = sorted(rng.sample(range(1, 100), rng.randint(0, 4)))
    spec: dict[str, Any] = {
        "apiVersion": "specml/v1",
        "kind": "MLSystem",
        "metadata": {"name": f"system-{i}", "owner": f"team-{i % 7}", "labels": {"bench": str(i)}},
        "data": {"sources": sources},
        "features": {
            "entities": entities,
            "views": views,
            "label": {"source": "src_0", "field": "label"},
        },
        "training": {
            "task": task,
            "model": {"type": "mlp", "hidden": [rng.choice([16, 32, 64])] * rng.randint(1, 3)},
            "hyperparameters": {"lr": rng.choice([1e-3, 3e-4]), "epochs": rng.randint(1, 50)},
            "seed": i,
            "gates": {"min": gate_min, "max": gate_max},
        },
        "serving": {
            "slo": {"p95_latency_ms": 100, "error_rate": 0.01},
            "replicas": {"min": 1, "max": rng.randint(1, 8)},
        },
        "rollout": {
            "steps": [{"shadow": "10m"}]
            + [{"traffic": t, "hold": "10m"} for t in traffic]
            + [{"traffic": 100}],
            "rollback_when": ["slo_breach", *({"alert": n} for n in list(alerts)[:1])],
        },
        "alerts": alerts,
        "retraining": {"triggers": [{"schedule": "0 3 * * 1"}, {"new_rows": 1000 * (i + 1)}]},
        "targets": {"kubeflow": {"image": "ghcr.io/acme/specml-runtime:1.0"}} if i % 2 else {},
    }
    if task == "multiclass_classification":
        spec["training"]["num_classes"] = 3 + i % 5
    return spec


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_compile(count: int) -> None:
    """Validate + lower `count` generated spec files in this process."""
    from specml.compiler.api import validate_file
    from specml.compiler.errors import SpecError
    from specml.compiler.lower import lower

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(count):
            path = Path(tmp) / f"system_{i}.yaml"
            path.write_text(yaml.safe_dump(generate_spec(i, rng), sort_keys=False))
            files.append(path)
        sizes = [p.stat().st_size for p in files]
        times: list[float] = []
        start = time.perf_counter()
        for path in files:
            t0 = time.perf_counter()
            try:
                lower(validate_file(path).spec)
            except SpecError as error:
                sys.exit(f"generated spec {path.name} is invalid (bench bug):\n{error}")
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - start
    print(
        f"compile: {count} specs ({min(sizes)}-{max(sizes)} bytes), validate + lower in one process"
    )
    print(f"  total {total * 1000:.0f} ms (target < 1000 ms)  first {times[0] * 1000:.1f} ms")
    print(
        f"  per spec: median {statistics.median(times) * 1000:.2f} ms, "
        f"p95 {_pct(times, 0.95) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms"
    )


def _wall(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
        out.append(time.perf_counter() - t0)
    return out


def bench_cli(runs: int) -> None:
    """Wall clock of `specml validate` processes and the heaviest imports on that path."""
    spec = "specs/churn.yaml"
    validate = _wall([str(SPECML), "validate", spec], runs)
    bare = _wall([sys.executable, "-c", "pass"], runs)
    imports = _wall([sys.executable, "-c", "import specml.cli.main"], runs)
    print(f"cli: `specml validate {spec}` wall, {runs} runs (should be well under 1 s)")
    print(
        f"  specml validate: min {min(validate) * 1000:.0f} ms, median {statistics.median(validate) * 1000:.0f} ms"
    )
    print(
        f"  import specml.cli.main: median {statistics.median(imports) * 1000:.0f} ms; "
        f"bare python: median {statistics.median(bare) * 1000:.0f} ms"
    )
    code = (
        "import sys; from specml.cli.main import main; "
        f"sys.argv = ['specml', 'validate', '{spec}']; main()"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    by_top: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(2)) <= 1:  # top-level imports only (cumulative time)
            top = match.group(3).split(".")[0]
            by_top[top] = by_top.get(top, 0) + int(match.group(1))
    ranked = sorted(by_top.items(), key=lambda kv: -kv[1])[:10]
    print(
        "  heaviest top-level imports (cumulative, -X importtime): "
        + ", ".join(f"{name} {us / 1000:.0f} ms" for name, us in ranked)
    )
    heavy = sorted(name for name in by_top if name in HEAVY)
    print(f"  heavy libraries imported by `specml validate`: {', '.join(heavy) or 'none'}")


def bench_alias_bomb() -> None:
    """How long the loader takes to refuse a billion-laughs document."""
    from specml.compiler.api import validate_text
    from specml.compiler.errors import SpecError

    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    t0 = time.perf_counter()
    try:
        validate_text(text)
        verdict = "ACCEPTED (bug)"
    except SpecError as error:
        verdict = f"refused: {error.diagnostics[0].message}"
    print(f"alias bomb (9^9 expansion): {(time.perf_counter() - t0) * 1000:.0f} ms, {verdict}")


def main() -> None:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=100)
    parser.add_argument("--cli-runs", type=int, default=5)
    args = parser.parse_args()
    bench_compile(args.specs)
    bench_alias_bomb()
    bench_cli(args.cli_runs)


if __name__ == "__main__":
    main()
