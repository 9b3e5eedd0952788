"""Model families and INT8: train time, peak memory, batch-1 latency; INT8 vs FP32 (printed only).

    .venv/bin/python bench/training.py            # 100k generated rows
    .venv/bin/python bench/training.py --big      # 100k and 1M rows
    .venv/bin/python bench/training.py --int8     # only the INT8 vs FP32 table

Rows: 10 numeric inputs (5 % missing) and 3 string inputs (8 to 200 values), a binary label from
a nonlinear rule with noise. Each (family, rows) fits in its own process, whose peak resident
memory (ru_maxrss) is what training that family at that size needs; then the exported graph is
timed with onnxruntime at batch 1 (one thread), the server's per-request work without HTTP.
INT8: an MLP trained with torch on the same kind of rows, exported, quantized dynamically.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIT = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[3])
from training import family_plan, generated_rows, batch1_latency
from specml.runtime.families import family_for

family, rows = sys.argv[1], int(sys.argv[2])
plan = family_plan(family)
cols, y = generated_rows(rows, seed=0)
n_val = rows // 10
train = ({k: v[n_val:] for k, v in cols.items()}, y[n_val:])
val = ({k: v[:n_val] for k, v in cols.items()}, y[:n_val])
started = time.perf_counter()
model, history, best = family_for(plan).fit(plan, train, val, ("0", "1"), "cpu")
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "model.onnx"
    model.export_onnx(path)
    p50, p99 = batch1_latency(path, {k: v[:1000] for k, v in val[0].items()})
    size = path.stat().st_size
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "best": best, "p50_ms": p50,
                  "p99_ms": p99, "onnx_kb": size / 1024}))
"""

NUMERIC = [f"x{i}" for i in range(10)]
STRINGS = {"city": 200, "plan": 8, "device": 30}


def generated_rows(n: int, seed: int) -> tuple[dict, object]:
    """Raw columns and binary labels (int64) of n generated rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for name in NUMERIC:
        values = rng.normal(size=n).astype(np.float32)
        values[rng.random(n) < 0.05] = np.nan
        cols[name] = values
    effect = np.zeros(n)
    for name, k in STRINGS.items():
        codes = rng.zipf(1.5, n) % k
        cols[name] = np.array([f"{name}-{c}" for c in codes], dtype=object)
        effect += rng.normal(size=k)[codes] * 0.5
    x = np.nan_to_num(np.stack([cols[c] for c in NUMERIC], 1))
    logit = x[:, 0] * x[:, 1] + np.sin(2 * x[:, 2]) + 0.5 * x[:, 3] ** 2 - 0.5 + effect
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return cols, y


def family_plan(family: str) -> object:
    """A Plan with what families read (training) for the generated rows."""
    from specml.compiler import ir
    from specml.compiler.spec.modeling import LightGBMModel, XGBoostModel
    from specml.runtime.encoding import default_categorical

    encoding = "native" if family in ("lightgbm", "xgboost") else "one_hot"
    features = tuple(ir.FeatureRef(view_id="g", field=c, dtype="float32") for c in NUMERIC) + tuple(
        ir.FeatureRef(
            view_id="g", field=c, dtype="string", categorical=default_categorical(encoding)
        )
        for c in STRINGS
    )
    spec_model = {"lightgbm": LightGBMModel, "xgboost": XGBoostModel}.get(family)
    trees = None
    if spec_model is not None:
        m = spec_model(type=family)  # type: ignore[call-arg]
        trees = ir.TreeParams(**{k: getattr(m, k, None) for k in ir.TreeParams.model_fields})
    training = ir.Training(
        task="binary_classification",
        num_classes=2,
        features=features,
        model=ir.ModelArch(
            type=family,  # type: ignore[arg-type]
            hidden=(64, 32) if family == "mlp" else (),
            dropout=0.0,
            activation="relu",
            batch_norm=False,
            trees=trees,
        ),
        hyperparameters=ir.Hyperparameters(
            optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=5, batch_size=512
        ),
        split=ir.Split(method="random", holdout=0.2, validation=0.1),
        seed=0,
        early_stopping=None,
        resources=ir.ComputeResources(cpu=None, memory=None, accelerator="cpu", gpu_count=0),
        primary_metric="roc_auc",
    )
    system = ir.SystemMeta(name="bench", owner="bench", description="", labels={})
    return ir.Plan.model_construct(training=training, system=system)


def batch1_latency(path: Path, cols: dict, runs: int = 1000) -> tuple[float, float]:
    """p50 and p99 milliseconds of one-row onnxruntime calls (one intra-op thread)."""
    import time

    import numpy as np
    import onnxruntime as ort
    from specml.runtime.families.parity import onnx_feed

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(cols.values())))
    feeds = [onnx_feed(session, {k: v[i : i + 1] for k, v in cols.items()}) for i in range(n)]
    for feed in feeds[:50]:
        session.run(None, feed)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        session.run(None, feeds[i % n])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def families(sizes: list[int]) -> None:
    """Train time, peak RSS and batch-1 latency per family and size (one process each)."""
    print(
        f"{'family':<9} {'rows':>9} {'train s':>8} {'peak MB':>8} {'rounds':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'onnx KB':>8}"
    )
    for rows in sizes:
        for family in ("lightgbm", "xgboost", "mlp"):
            proc = subprocess.run(
                [sys.executable, "-c", FIT, family, str(rows), str(Path(__file__).parent)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=False,
            )
            if proc.returncode != 0:
                print(f"{family:<9} {rows:>9} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{family:<9} {rows:>9} {r['seconds']:>8.1f} {r['peak_rss_mb']:>8.0f} "
                f"{r['best']:>7} {r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['onnx_kb']:>8.0f}"
            )


def int8_table() -> None:
    """INT8 vs FP32: size, batch-1 and batch-256 latency, roc_auc, for a small and a wide MLP."""
    import numpy as np
    import torch
    from specml.runtime.quantize import quantize_int8
    from specml.runtime.steps.metrics import compute_metrics

    cols, y = generated_rows(60_000, seed=1)
    x = np.nan_to_num(np.stack([cols[c] for c in NUMERIC], 1)).astype(np.float32)
    x = np.hstack([x, np.random.default_rng(2).normal(size=(len(x), 54)).astype(np.float32)])
    train, test = slice(0, 50_000), slice(50_000, None)
    print(f"\n{'mlp':<16} {'graph':<5} {'KB':>7} {'b1 p50':>7} {'b256 p50':>9} {'roc_auc':>8}")
    for name, hidden in (("small 16", (16,)), ("wide 1024x1024", (1024, 1024))):
        torch.manual_seed(0)
        layers, width = [], x.shape[1]
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1), torch.nn.Sigmoid())
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        xt, yt = torch.as_tensor(x[train]), torch.as_tensor(y[train], dtype=torch.float32)
        for _ in range(3):
            for i in range(0, len(xt), 512):
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy(
                    net(xt[i : i + 512])[:, 0], yt[i : i + 512]
                )
                loss.backward()
                opt.step()
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            torch.onnx.export(
                net.eval(),
                (xt[:2],),
                str(fp32),
                input_names=["x"],
                output_names=["output"],
                dynamic_axes={"x": {0: "n"}, "output": {0: "n"}},
                opset_version=17,
                dynamo=False,
            )
            quantize_int8(fp32, int8)
            for label, path in (("fp32", fp32), ("int8", int8)):
                b1, b256, out = _matrix_latency(path, x[test])
                auc = compute_metrics("binary_classification", y[test], out, ["roc_auc"])["roc_auc"]
                kb = path.stat().st_size / 1024
                print(f"{name:<16} {label:<5} {kb:>7.0f} {b1:>7.3f} {b256:>9.3f} {auc:>8.4f}")


def _matrix_latency(path: Path, x: object) -> tuple[float, float, object]:
    import time

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x})[0]  # type: ignore[dict-item]
    result = []
    for batch in (1, 256):
        times = []
        for i in range(300):
            rows = x[(i * batch) % 5000 : (i * batch) % 5000 + batch]  # type: ignore[index]
            started = time.perf_counter()
            session.run(None, {"x": rows})
            times.append((time.perf_counter() - started) * 1000)
        result.append(float(np.percentile(times, 50)))
    return result[0], result[1], out


def main() -> None:
    """Run the tables the flags ask for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also 1M rows")
    parser.add_argument("--int8", action="store_true", help="only the INT8 table")
    args = parser.parse_args()
    if not args.int8:
        families([100_000, 1_000_000] if args.big else [100_000])
    int8_table()


if __name__ == "__main__":
    main()
