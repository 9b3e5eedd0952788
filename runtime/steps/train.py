"""train: the Plan's torch model on the training split, early stopping on validation, MLflow logging."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from specml.compiler.ir import Plan
from specml.runtime.contract import StepContext, StepResult
from specml.runtime.steps.common import (
    INPUT_NAME,
    OUTPUT_NAME,
    entity_join_keys,
    feature_matrix,
    feature_refs,
    label_vector,
    need,
    read_training_set,
    split_indices,
    write_json,
)
from specml.runtime.steps.features import training_set_repo
from specml.runtime.steps.metrics import compute_metrics
from specml.runtime.steps.tracking import log_metrics, log_params, start_run


def training_device(plan: Plan) -> str:
    """'cuda' when the Plan allows a GPU (auto/gpu) and CUDA exists, else 'cpu'."""
    import torch

    if plan.training.resources.accelerator != "cpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _optimizer(plan: Plan, params: Any) -> Any:
    import torch

    hp = plan.training.hyperparameters
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay, momentum=0.9)
    cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=hp.lr, weight_decay=hp.weight_decay)


def _loss(plan: Plan, model: Any, x: Any, y: Any) -> Any:
    import torch.nn.functional as F

    z = model.logits(x)
    task = plan.training.task
    if task == "binary_classification":
        return F.binary_cross_entropy_with_logits(z.reshape(-1), y.float())
    if task == "multiclass_classification":
        return F.cross_entropy(z, y.long())
    target = (y.float() - model.target_center) / model.target_scale
    return F.mse_loss(z.reshape(-1), target)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def fit(
    plan: Plan, x: Any, y: Any, splits: dict[str, Any], device: str, on_epoch: Any = None
) -> tuple[Any, list[dict[str, float]], int]:
    """Train deterministically (seeded; deterministic kernels on CPU); return model, history, best epoch."""
    import copy

    import torch
    from specml.runtime.modeling import TabularModel, predict
    from tqdm import tqdm

    t = plan.training
    torch.manual_seed(t.seed)
    previous = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        model = TabularModel(plan, x.shape[1])
        xt = torch.as_tensor(x[splits["train"]])
        yt = torch.as_tensor(y[splits["train"]])
        model.fit_preprocessing(xt, yt)
        model.to(device)
        xt, yt = xt.to(device), yt.to(device)
        opt = _optimizer(plan, model.parameters())
        es = t.early_stopping
        metric = es.metric if es else t.primary_metric
        mode = es.mode if es else "max"
        val = splits["validation"]
        gen = torch.Generator().manual_seed(t.seed)
        history: list[dict[str, float]] = []
        best, best_epoch, best_state, waited = None, 0, None, 0
        bs = t.hyperparameters.batch_size
        bar = tqdm(
            range(1, t.hyperparameters.epochs + 1),
            desc=f"train {plan.system.name}",
            file=sys.stderr,
            unit="epoch",
            leave=False,
        )
        for epoch in bar:
            model.train()
            order = torch.randperm(len(xt), generator=gen).to(device)
            total, seen = 0.0, 0
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                if len(idx) < 2 and t.model.batch_norm:
                    continue  # batch norm cannot train on a single row
                opt.zero_grad()
                loss = _loss(plan, model, xt[idx], yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            row = {"train_loss": total / max(seen, 1)}
            if len(val):
                out = predict(model, x[val], device)
                row[f"val_{metric}"] = compute_metrics(t.task, y[val], out, [metric])[metric]
            history.append(row)
            bar.set_postfix({k: round(v, 4) for k, v in row.items()})
            if on_epoch:
                on_epoch(epoch, row)
            if es and len(val):
                value = row[f"val_{metric}"]
                if _improved(value, best, mode, es.min_delta):
                    best, best_epoch, waited = value, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    waited += 1
                    if waited >= es.patience:
                        break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        model.to("cpu").eval()
        return model, history, best_epoch
    finally:
        torch.use_deterministic_algorithms(previous)


def train(
    plan: Plan, ctx: StepContext, inputs: dict[str, Path], outputs: dict[str, Path]
) -> StepResult:
    """Fit the model; write the model folder (weights + metadata) and train_metrics JSON."""
    from specml.runtime.modeling import save_model

    ts_path = need(inputs, "training_set", "train")
    model_dir = need(outputs, "model", "train")
    frame = read_training_set(ts_path)
    x, y = feature_matrix(plan, frame), label_vector(plan, frame)
    splits = split_indices(plan, frame)
    device = training_device(plan)
    run_id = start_run(plan, ctx, run_name=f"{plan.system.name}-{ctx.run_id or 'run'}")
    t = plan.training
    log_params(
        ctx,
        run_id,
        {
            **{f"hp.{k}": v for k, v in t.hyperparameters.model_dump().items()},
            **{f"model.{k}": v for k, v in t.model.model_dump().items()},
            "seed": t.seed,
            "split.method": t.split.method,
            "split.holdout": t.split.holdout,
            "split.validation": t.split.validation,
            "task": t.task,
            "device": device,
            "n_features": x.shape[1],
            "rows.train": len(splits["train"]),
            "rows.validation": len(splits["validation"]),
            "rows.holdout": len(splits["holdout"]),
        },
    )
    started = time.perf_counter()
    model, history, best_epoch = fit(
        plan, x, y, splits, device, on_epoch=lambda e, row: log_metrics(ctx, run_id, row, step=e)
    )
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "features": feature_refs(plan),
        "entity_join_keys": entity_join_keys(plan),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "task": t.task,
        "num_classes": t.num_classes,
        "mlflow_run_id": run_id,
        "spec_hash": plan.spec_hash,
        "feature_repo": training_set_repo(ts_path),
        "device": device,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "seed": t.seed,
    }
    save_model(model, model_dir, metadata)
    final = {
        **history[-1],
        "best_epoch": float(best_epoch),
        "epochs_run": float(len(history)),
        "train_seconds": seconds,
    }
    write_json(
        need(outputs, "train_metrics", "train"),
        {"metrics": final, "history": history, "device": device, "mlflow_run_id": run_id},
    )
    log_metrics(
        ctx,
        run_id,
        {"train_seconds": seconds, "best_epoch": best_epoch, "epochs_run": len(history)},
    )
    return StepResult(values={"mlflow_run_id": run_id, "device": device}, metrics=final)
