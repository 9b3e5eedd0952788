"""Drift check speed: specml (precomputed reference) vs Evidently DataDriftPreset (PSI method).

Run: `.venv/bin/python bench/drift.py [--sizes 100000x20,1000000x50] [--evidently-max-rows N]`.
Half of the columns of the current window are shifted, so verdicts are checked on both outcomes.
Prints a table; makes no timing assertions. Our check never sorts the window (see drift._GridCounter). Timings are best-of `--repeat` (ours) and
`--evidently-repeat` (Evidently, sizes up to 5M cells); on a shared machine expect noise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from specml.runtime.monitor.drift import build_reference, check_drift

THRESHOLD = 0.1


def _data(rows: int, cols: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and current frames; odd columns of the current window shift by 0.5 sd."""
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(cols)]
    train = rng.normal(size=(rows, cols))
    current = rng.normal(size=(rows, cols))
    current[:, 1::2] += 0.5
    return pd.DataFrame(train, columns=names), pd.DataFrame(current, columns=names)


def _timed(fn, repeat: int = 1):  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(
    rows: int, cols: int, evidently_max_rows: int, repeat: int = 3, evidently_repeat: int = 1
) -> dict[str, object]:
    """Time cold (reference + check), repeat (saved reference: load + check) and Evidently."""
    import tempfile
    from pathlib import Path

    from specml.runtime.monitor.drift import Reference
    from specml.runtime.monitor.evidently_report import evidently_psi

    train, current = _data(rows, cols, seed=rows + cols)
    names = list(train.columns)
    t_ref, ref = _timed(lambda: build_reference(train, names), repeat=repeat)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.parquet"
        train.to_parquet(train_file)
        saved = ref.save(Path(tmp) / "ref.npz")
        t_disk, _ = _timed(
            lambda: check_drift(build_reference(pd.read_parquet(train_file), names), current),
            repeat=repeat,
        )
        t_check, report = _timed(lambda: check_drift(Reference.load(saved), current), repeat=repeat)
    cold = t_ref + t_check
    # The usual monitoring case: reference from all training rows, a window a tenth that size.
    window = current.iloc[: max(rows // 10, 1)]
    t_small, _ = _timed(lambda: check_drift(ref, window), repeat=repeat)
    small_ratio = t_small / (t_ref + t_small)
    ours = {c: report.value(c, "psi") >= THRESHOLD for c in names}
    ev_rows = min(rows, evidently_max_rows)
    sampled = ev_rows < rows
    ev_train = train.sample(ev_rows, random_state=0) if sampled else train
    ev_current = current.sample(ev_rows, random_state=1) if sampled else current
    t_ev, theirs = _timed(
        lambda: evidently_psi(ev_train, ev_current, names, threshold=THRESHOLD),
        repeat=evidently_repeat,
    )
    agree = sum(ours[c] == theirs.drifted[c] for c in names)
    from scipy import stats

    checked = names[:3]  # KS against scipy's two-sample statistic (sorts both sides: a few columns)
    ks_err = max(
        abs(report.value(c, "ks") - stats.ks_2samp(train[c], current[c]).statistic) for c in checked
    )
    ks_bound = max(report.features[c].ks_error_bound for c in checked)
    gap = max(abs(report.value(c, "psi") - theirs.psi[c]) for c in names)
    return {
        "size": f"{rows:,} x {cols}",
        "cold_s": cold,
        "repeat_s": t_check,
        "repeat_over_cold": t_check / cold,
        "cold_disk_s": t_disk,
        "repeat_over_cold_disk": t_check / t_disk,
        "small_ratio": small_ratio,
        "evidently_s": t_ev,
        "evidently_rows": ev_rows,
        "sampled": sampled,
        "speedup_cold": t_ev / cold,
        "speedup_repeat": t_ev / t_check,
        "agree": f"{agree}/{cols}",
        "drifted": f"{sum(ours.values())}/{cols}",
        "max_psi_gap": gap,
        "ks_err": ks_err,
        "ks_bound": ks_bound,
    }


def main() -> None:
    """Parse sizes, run each, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000x20,1000000x50")
    parser.add_argument(
        "--evidently-max-rows",
        type=int,
        default=250_000,
        help="Evidently runs on a row sample above this (1M x 50 takes well over 3 min on 2 cores)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of N for our timings")
    parser.add_argument("--evidently-repeat", type=int, default=1, help="best of N for Evidently")
    args = parser.parse_args()
    from specml.runtime.monitor.evidently_report import evidently_psi

    warm = pd.DataFrame({"a": np.arange(200.0)})  # import Evidently before any timing
    evidently_psi(warm, warm, ["a"], threshold=THRESHOLD)
    rows_out = []
    for size in args.sizes.split(","):
        rows, cols = (int(v) for v in size.lower().split("x"))
        rows_out.append(
            bench(
                rows,
                cols,
                args.evidently_max_rows,
                args.repeat,
                args.evidently_repeat if rows * cols <= 5_000_000 else 1,
            )
        )
    header = (
        f"{'size':>15} | {'cold (ref+check)':>16} | {'cold from parquet':>17} | {'repeat check':>12} | "
        f"{'repeat/cold':>11} | {'r/cold parquet':>14} | "
        f"{'same, 10% window':>16} | {'Evidently PSI':>22} | {'x vs cold':>9} | {'x vs repeat':>11} | {'verdicts agree':>14} | "
        f"{'drifted':>7} | {'max |dPSI|':>10} | {'KS err (bound)':>19}"
    )
    print(header)
    print("-" * len(header))
    for r in rows_out:
        ev = f"{r['evidently_s']:.2f} s" + (
            f" ({r['evidently_rows']:,} rows)" if r["sampled"] else ""
        )
        print(
            f"{r['size']:>15} | {r['cold_s']:>14.3f} s | {r['cold_disk_s']:>15.3f} s | {r['repeat_s']:>10.3f} s | "
            f"{r['repeat_over_cold']:>10.1%} | {r['repeat_over_cold_disk']:>13.1%} | {r['small_ratio']:>15.1%} | {ev:>22} | {r['speedup_cold']:>8.1f}x | "
            f"{r['speedup_repeat']:>10.1f}x | {r['agree']:>14} | {r['drifted']:>7} | {r['max_psi_gap']:>10.4f} | "
            f"{r['ks_err']:>8.1e} ({r['ks_bound']:.1e})"
        )
    if any(r["sampled"] for r in rows_out):
        print(
            f"note: Evidently ran on a {args.evidently_max_rows:,}-row sample of each side where marked "
            "(its time on the full size would be larger, so the ratio shown is a lower bound)."
        )
    print(
        "note: repeat = load the saved reference (.npz) + check; cold = build the reference from the "
        "training frame in memory + check; 'cold from parquet' also reads the training data from disk "
        "(what a check without a precomputed reference does); windows are as large as the training "
        "data, except '10% window' (repeat/cold when the window is a tenth of it)."
    )
    print(
        "note: KS err = max |our KS - scipy.stats.ks_2samp| over the first 3 columns; the bound is "
        "the reference's stored ks_error_bound (< 1/max_ks_points once a column has more distinct values)."
    )
    print(
        "note: Evidently bins with Sturges' rule on reference+current; specml uses training-quantile "
        "bins (10), hence the PSI gap; verdicts use the same threshold (0.1)."
    )


if __name__ == "__main__":
    main()
