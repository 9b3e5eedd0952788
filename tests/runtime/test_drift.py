"""Drift: PSI/KS against plain reference computations, Evidently verdicts, and spec alerts."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from specml.compiler.api import plan_file
from specml.runtime.monitor.drift import (
    EPSILON,
    Reference,
    build_reference,
    check_drift,
    prediction_reference,
)
from specml.runtime.monitor.events import evaluate_drift_alerts

NAMES = ["v:normal", "v:counts", "v:skewed", "v:binary"]


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Continuous, discrete (ties on bin edges), skewed and binary columns."""
    return np.c_[
        rng.normal(shift, 1.0, n),
        rng.poisson(3.0 + 2 * shift, n),
        rng.lognormal(shift, 0.7, n),
        rng.random(n) < 0.3 + 0.2 * shift,
    ].astype(np.float64)


def _plain_psi(train: np.ndarray, current: np.ndarray, bins: int) -> float:
    """PSI the slow way: quantile edges, counted bin by bin with comparisons, floor at EPSILON."""
    edges = sorted(set(np.quantile(train, [i / bins for i in range(1, bins)]).tolist()))
    bounds = [-math.inf, *edges, math.inf]
    total = 0.0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        r = sum(1 for v in train if lo <= v < hi) / len(train)
        c = sum(1 for v in current if lo <= v < hi) / len(current)
        r, c = max(r, EPSILON), max(c, EPSILON)
        total += (c - r) * math.log(c / r)
    return total


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {
        "train": _frame(rng, 1500),
        "same": _frame(rng, 800),
        "shifted": _frame(rng, 800, shift=0.6),
    }


@pytest.mark.parametrize("case", ["same", "shifted"])
def test_psi_matches_plain_computation(samples: dict[str, np.ndarray], case: str) -> None:
    ref = build_reference(samples["train"], NAMES, bins=10)
    report = check_drift(ref, samples[case])
    for j, name in enumerate(NAMES):
        expected = _plain_psi(samples["train"][:, j].tolist(), samples[case][:, j].tolist(), 10)
        assert report.value(name, "psi") == pytest.approx(expected, abs=1e-9), name


def _numpy_psi(train: np.ndarray, current: np.ndarray, bins: int) -> float:
    """PSI with np.histogram over (-inf, training quantile edges, +inf) and the EPSILON floor."""
    edges = np.unique(np.quantile(train, np.arange(1, bins) / bins))
    bounds = np.concatenate(([-np.inf], edges, [np.inf]))
    r = np.maximum(np.histogram(train, bounds)[0] / train.size, EPSILON)
    c = np.maximum(np.histogram(current, bounds)[0] / current.size, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [5, 10, 20])
def test_psi_matches_numpy_histogram(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    train, current = _frame(rng, 3000), _frame(rng, 2000, shift=0.3 * seed)
    report = check_drift(build_reference(train, NAMES, bins=bins), current)
    for j, name in enumerate(NAMES):
        assert (
            abs(report.value(name, "psi") - _numpy_psi(train[:, j], current[:, j], bins)) <= 1e-9
        ), name


@pytest.mark.parametrize("case", ["same", "shifted"])
def test_ks_equals_scipy_ks_2samp(samples: dict[str, np.ndarray], case: str) -> None:
    report = check_drift(build_reference(samples["train"], NAMES), samples[case])
    for j, name in enumerate(NAMES):
        expected = stats.ks_2samp(samples["train"][:, j], samples[case][:, j]).statistic
        assert report.value(name, "ks") == pytest.approx(expected, abs=1e-9), name
        assert report.features[name].ks_error_bound == 0.0


def test_ks_sketch_stays_within_its_stored_bound(samples: dict[str, np.ndarray]) -> None:
    ref = build_reference(samples["train"], NAMES, max_ks_points=50)
    bound = ref.ks_error_bound[0]
    assert 0 < bound < 0.1  # a 50-point sketch of 1500 distinct values
    for case in ("same", "shifted"):
        got = check_drift(ref, samples[case]).value(NAMES[0], "ks")
        exact = stats.ks_2samp(samples["train"][:, 0], samples[case][:, 0]).statistic
        assert abs(got - exact) <= bound + 1e-12


def test_missing_values_are_left_out(samples: dict[str, np.ndarray]) -> None:
    current = samples["shifted"].copy()
    current[::7, 0] = np.nan
    report = check_drift(build_reference(samples["train"], NAMES), current)
    kept = current[~np.isnan(current[:, 0]), 0]
    assert report.features[NAMES[0]].n_current == kept.size
    assert report.value(NAMES[0], "psi") == pytest.approx(
        _plain_psi(samples["train"][:, 0].tolist(), kept.tolist(), 10), abs=1e-9
    )


def test_reference_round_trips_and_accepts_frames(tmp_path, samples) -> None:
    ref = build_reference(pd.DataFrame(samples["train"], columns=NAMES), NAMES)
    loaded = Reference.load(ref.save(tmp_path / "ref.npz"))
    assert loaded.feature_names == tuple(NAMES)
    frame = pd.DataFrame(samples["shifted"][:, ::-1], columns=NAMES[::-1])  # other column order
    a = check_drift(ref, samples["shifted"]).to_json()
    b = check_drift(loaded, frame).to_json()
    assert a == b
    assert (tmp_path / "ref.npz").stat().st_size < 200_000


def test_prediction_drift_uses_model_outputs() -> None:
    rng = np.random.default_rng(3)
    ref = prediction_reference(rng.beta(2, 5, 2000))
    assert ref.feature_names == ("prediction",)
    same = check_drift(ref, rng.beta(2, 5, 1000)).value("prediction", "psi")
    moved = check_drift(ref, rng.beta(5, 2, 1000)).value("prediction", "psi")
    assert same < 0.1 < 1.0 < moved


def _churn_frames(rng: np.random.Generator, n: int, spend_shift: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_stats:monthly_spend": rng.gamma(2.0, 30.0, n) + spend_shift,
            "customer_stats:support_calls_30d": rng.poisson(1.5, n),
            "customer_stats:tenure_months": rng.integers(1, 72, n),
            "usage:logins_7d": rng.poisson(5, n),
            "usage:minutes_7d": rng.exponential(90.0, n),
            "customer_stats:plan_type": rng.choice(
                np.array(["basic", "standard", "premium"], dtype=object), n, p=[0.5, 0.3, 0.2]
            ),
        }
    )


def test_churn_drift_alert_fires_at_spec_threshold() -> None:
    plan = plan_file("specs/churn.yaml")
    alert = plan.alert("feature_drift")
    assert (alert.metric, alert.warn, alert.critical) == ("psi", 0.1, 0.2)
    rng = np.random.default_rng(11)
    ref = build_reference(_churn_frames(rng, 3000, 0.0), list(alert.features))
    calm = evaluate_drift_alerts(plan.alerts, check_drift(ref, _churn_frames(rng, 2000, 0.0)))
    assert [(e.alert_id, e.level) for e in calm] == [("feature_drift", "ok")]
    shifted = check_drift(ref, _churn_frames(rng, 2000, 40.0))
    (event,) = evaluate_drift_alerts(plan.alerts, shifted, at=123.0)
    spend = shifted.value("customer_stats:monthly_spend", "psi")
    assert spend >= alert.critical
    assert (event.level, event.threshold, event.at) == ("critical", 0.2, 123.0)
    assert event.details["worst"] == "customer_stats:monthly_spend"
    assert event.value == pytest.approx(spend)
    assert event.action == "retrain"


def test_evidently_psi_verdicts_agree(tmp_path) -> None:
    from specml.runtime.monitor.evidently_report import evidently_psi

    rng = np.random.default_rng(5)
    train = pd.DataFrame(_frame(rng, 2000)[:, :3], columns=NAMES[:3])
    cases = {"same": _frame(rng, 1500)[:, :3], "shifted": _frame(rng, 1500, shift=1.0)[:, :3]}
    ref = build_reference(train, NAMES[:3])
    for case, values in cases.items():
        current = pd.DataFrame(values, columns=NAMES[:3])
        ours = check_drift(ref, current)
        theirs = evidently_psi(
            train, current, NAMES[:3], threshold=0.1, out_dir=tmp_path / case, ours=ours
        )
        verdicts = {c: ours.value(c, "psi") >= 0.1 for c in NAMES[:3]}
        assert theirs.drifted == verdicts, (case, theirs.psi, ours.to_json())
        assert all(theirs.drifted.values()) == (case == "shifted")
        summary = json.loads(theirs.json_path.read_text())
        assert summary["specml"]["drifted"] == summary["evidently"]["drifted"]
        assert theirs.html_path.stat().st_size > 10_000


def _columns(rng: np.random.Generator, n: int, kind: int, shift: float) -> np.ndarray:
    """Continuous, discrete, rounded heavy-tailed, extreme magnitudes, and a tight cluster + spread."""
    if kind == 0:
        return rng.normal(shift, 1.0, n)
    if kind == 1:
        return rng.poisson(2 + shift, n).astype(np.float64)
    if kind == 2:
        return np.round(rng.lognormal(shift, 2.0, n), 1)
    if kind == 3:
        return rng.choice([1e-300, 2e-300, 1.0, 1e300], n)
    if kind == 4:
        return 1e15 + rng.integers(0, 50, n) * (1.0 + shift)  # large offset: coarse float spacing
    return np.concatenate([5 + rng.normal(0, 1e-9, n // 2), rng.normal(shift, 1e6, n - n // 2)])


@pytest.mark.parametrize("tables", ["default", "tiny"])
def test_ks_is_exact_on_ties_extremes_and_crowded_buckets(tables: str) -> None:
    """Exact grids give ks_2samp to 1e-12; 'tiny' tables force the binary-search (dump) path."""
    from specml.runtime.monitor.drift import _GridCounter

    rng = np.random.default_rng(1)
    crowded = 0
    for case in range(60):
        kind = case % 6
        train = _columns(rng, int(rng.integers(1, 400)), kind, 0.0)
        current = _columns(rng, int(rng.integers(1, 300)), kind, float(rng.random()))
        ref = build_reference(train[:, None], ["a"])
        if tables == "tiny":
            grid = np.union1d(ref.ks_values[0], ref.edges[0])
            object.__setattr__(
                ref, "counter", _GridCounter.build([grid], factor=1, max_factor=1, min_buckets=2)
            )
            crowded += ref.counter.dumps[0]
        got = check_drift(ref, current[:, None]).value("a", "ks")
        assert abs(got - stats.ks_2samp(train, current).statistic) <= 1e-12, (case, kind)
    assert tables == "default" or crowded >= 30


def test_nan_and_infinite_current_values() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(size=500)
    current = np.r_[rng.normal(size=300), [np.nan] * 7, [np.inf, -np.inf, 1e308, -1e308]]
    feature = check_drift(build_reference(train[:, None], ["a"]), current[:, None]).features["a"]
    finite = current[~np.isnan(current)]
    assert feature.n_current == finite.size
    assert abs(feature.ks - stats.ks_2samp(train, finite).statistic) <= 1e-12


@pytest.mark.parametrize("points", [64, 512, 2048])
def test_ks_quantile_grid_error_is_within_its_bound(points: int) -> None:
    """Above max_ks_points distinct values: |KS - exact| <= stored bound < 1 / max_ks_points."""
    rng = np.random.default_rng(points)
    train = rng.standard_t(2, size=20_000)
    ref = build_reference(train[:, None], ["t"], max_ks_points=points)
    bound = ref.ks_error_bound[0]
    assert 0 < bound < 1 / points
    assert ref.ks_values[0].size <= points + 1
    for shift in (0.0, 0.02, 0.3, 2.0):
        current = rng.standard_t(2, size=5_000) + shift
        got = check_drift(ref, current[:, None]).value("t", "ks")
        assert abs(got - stats.ks_2samp(train, current).statistic) <= bound + 1e-12, shift


def test_check_never_sorts_the_window(monkeypatch, samples: dict[str, np.ndarray]) -> None:
    ref = build_reference(samples["train"], NAMES)
    expected = check_drift(ref, samples["shifted"]).to_json()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_drift sorted the current window")

    for name in ("sort", "argsort", "partition", "argpartition", "unique", "lexsort"):
        monkeypatch.setattr(np, name, refuse)
    assert check_drift(ref, samples["shifted"]).to_json() == expected  # tables already built


def test_input_layouts_agree(samples: dict[str, np.ndarray]) -> None:
    """Row-major, column-major, frames with extra columns and 1-row windows count the same."""
    ref = build_reference(samples["train"], NAMES)
    current = samples["shifted"]
    want = check_drift(ref, current).to_json()
    assert check_drift(ref, np.asfortranarray(current)).to_json() == want
    frame = pd.DataFrame({"model_version": "v1", **{n: current[:, j] for j, n in enumerate(NAMES)}})
    assert check_drift(ref, frame).to_json() == want
    one = check_drift(ref, current[:1])
    assert one.n_current == 1
    assert one.value(NAMES[0], "ks") == pytest.approx(
        stats.ks_2samp(samples["train"][:, 0], current[:1, 0]).statistic
    )


def test_format_1_reference_files_still_load(tmp_path, samples: dict[str, np.ndarray]) -> None:
    ref = build_reference(samples["train"], NAMES)
    header = {
        "feature_names": NAMES,
        "ks_error_bound": list(ref.ks_error_bound),
        "n_rows": ref.n_rows,
        "bins": ref.bins,
    }
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    for i in range(len(NAMES)):
        for kind in ("edges", "shares", "ks_values", "ks_cdf"):
            arrays[f"{kind}_{i}"] = getattr(ref, kind)[i]
    np.savez_compressed(tmp_path / "v1.npz", **arrays)
    old = Reference.load(tmp_path / "v1.npz")
    assert (
        check_drift(old, samples["shifted"]).to_json()
        == check_drift(ref, samples["shifted"]).to_json()
    )
    header["format"] = 99
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez_compressed(tmp_path / "v99.npz", **arrays)
    with pytest.raises(ValueError, match="format 99 is newer"):
        Reference.load(tmp_path / "v99.npz")


@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_threaded_counting_equals_one_thread(monkeypatch, layout: str) -> None:
    """Large windows are counted by feature range on threads; the counts must not change."""
    from specml.runtime.monitor import drift

    rng = np.random.default_rng(7)
    rows, cols = 40_000, 27  # 1.08M values: over the threading threshold, uneven ranges
    train = rng.normal(size=(rows, cols))
    train[:, 3] = rng.integers(0, 5, rows)  # ties
    current = rng.normal(0.2, 1.1, size=(rows, cols))
    current[rng.random((rows, cols)) < 0.01] = np.nan
    current[:, 3] = rng.integers(0, 6, rows)
    if layout == "column-major":
        current = np.asfortranarray(current)
    names = [f"f{j}" for j in range(cols)]
    ref = build_reference(train, names)
    assert current.size >= drift._PARALLEL_MIN_VALUES
    threaded = check_drift(ref, current).to_json()
    monkeypatch.setattr(drift, "_PARALLEL_MIN_VALUES", current.size + 1)
    assert check_drift(ref, current).to_json() == threaded
    finite = current[:, 5][~np.isnan(current[:, 5])]
    ks = stats.ks_2samp(train[:, 5], finite).statistic
    assert abs(threaded["features"]["f5"]["ks"] - ks) <= ref.ks_error_bound[5] + 1e-12


def _categories(rng: np.random.Generator, n: int, shares: list[float]) -> np.ndarray:
    values = rng.choice(np.array(["basic", "premium", "family", None], dtype=object), n, p=shares)
    return values


def test_categorical_psi_and_tvd_equal_a_direct_computation() -> None:
    """Category shares + unknown bucket: PSI and the total variation distance, computed by hand
    from value counts (missing values left out), unseen categories in the unknown bucket."""
    rng = np.random.default_rng(4)
    train = pd.DataFrame(
        {"v:plan": _categories(rng, 5000, [0.5, 0.3, 0.15, 0.05]), "v:x": rng.normal(size=5000)}
    )
    ref = build_reference(train, ["v:plan", "v:x"], categorical=["v:plan"])
    assert ref.feature_names == ("v:plan", "v:x") and ref.numeric_names == ("v:x",)
    current = pd.DataFrame(
        {
            "v:plan": np.r_[
                _categories(rng, 900, [0.2, 0.3, 0.4, 0.1]), np.array(["gold"] * 100, object)
            ],
            "v:x": rng.normal(size=1000),
        }
    )
    report = check_drift(ref, current)
    cats = ["basic", "premium", "family"]
    seen = pd.Series(train["v:plan"]).dropna()
    r = np.array([(seen == c).mean() for c in cats] + [0.0])
    now = pd.Series(current["v:plan"]).dropna()
    c = np.array([(now == k).mean() for k in cats] + [(now == "gold").mean()])
    rf, cf = np.maximum(r, EPSILON), np.maximum(c, EPSILON)
    assert report.value("v:plan", "psi") == pytest.approx(
        float(((cf - rf) * np.log(cf / rf)).sum())
    )
    assert report.value("v:plan", "ks") == pytest.approx(0.5 * float(np.abs(c - r).sum()))
    assert report.features["v:plan"].n_current == len(now)
    assert report.value("v:plan", "psi") > 0.2 and report.value("v:x", "psi") < 0.1
    assert list(report.features) == ["v:plan", "v:x"]  # reference order


def test_categorical_reference_round_trips_and_detects_no_drift(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    shares = [0.5, 0.3, 0.15, 0.05]
    train = pd.DataFrame({"v:plan": _categories(rng, 4000, shares), "v:n": rng.normal(size=4000)})
    ref = build_reference(train, ["v:plan", "v:n"])  # string columns found by dtype
    loaded = Reference.load(ref.save(tmp_path / "r.npz"))
    assert loaded.categories.keys() == {"v:plan"}
    assert loaded.categories["v:plan"][0] == ref.categories["v:plan"][0]
    current = pd.DataFrame({"v:plan": _categories(rng, 4000, shares), "v:n": rng.normal(size=4000)})
    assert check_drift(loaded, current).to_json() == check_drift(ref, current).to_json()
    assert check_drift(loaded, current).value("v:plan", "psi") < 0.01
