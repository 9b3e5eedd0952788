"""The torch family (mlp, linear): fit on raw columns, save/load, export one ONNX graph whose
inputs are the raw features (encoding, imputation and scaling inside; see torch_net.py)."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from specml.compiler.ir import Plan
from specml.runtime.encoding import Vocabulary, learn_vocabularies
from specml.runtime.families.base import Columns
from specml.runtime.families.onnx_io import (
    OPSET,
    OUTPUT,
    RawInput,
    graft_raw_io,
    index_name,
)
from specml.runtime.families.torch_net import TabularNet

WEIGHTS = "model.pt"
METADATA = "model.json"
FAMILY = "torch"


class TorchModel:
    """A trained torch model with its vocabularies and classes (implements base.TrainedModel)."""

    def __init__(
        self,
        plan: Plan,
        vocabularies: dict[str, Vocabulary],
        classes: tuple[str | int, ...] | None,
    ) -> None:
        t = plan.training
        self.task = t.task
        self.features = t.features
        self.vocabularies = vocabularies
        self.classes: tuple[str | int, ...] | None = None
        if t.task != "regression":
            # Without names (labels already indices), the classes are the indices themselves.
            self.classes = tuple(classes) if classes else tuple(range(t.num_classes))
        n_outputs = len(self.classes or ()) if t.task == "multiclass_classification" else 1
        self.net = TabularNet(t.task, t.model, t.features, vocabularies, n_outputs)

    @property
    def positive_class(self) -> str | int | None:
        """The class whose probability `output` is (binary), else None."""
        if self.task == "binary_classification" and self.classes:
            return self.classes[1]
        return None

    def raw_inputs(self) -> list[RawInput]:
        """The graph's inputs as served, in Plan order."""
        return [
            RawInput(f.input_name, f.datatype, self.vocabularies.get(f.input_name))
            for f in self.features
        ]

    def tensors(self, columns: Columns, device: str = "cpu") -> tuple[torch.Tensor, ...]:
        """The module's inputs from raw columns: float32 [N,1] numbers, int64 [N,1] indices."""
        out = []
        for f in self.features:
            raw = np.asarray(columns[f.input_name])
            vocab = self.vocabularies.get(f.input_name)
            if vocab is None:
                values = raw.astype(np.float32) if raw.dtype != object else _object_floats(raw)
                out.append(torch.as_tensor(values.reshape(-1, 1)))
            else:
                out.append(torch.as_tensor(vocab.encode(raw.reshape(-1)).reshape(-1, 1)))
        return tuple(t.to(device) for t in out)

    @torch.no_grad()
    def predict(self, columns: Columns) -> np.ndarray:
        """The serving output `output` for raw columns (numpy float32)."""
        self.net.to("cpu").eval()
        return self.net(*self.tensors(columns)).numpy()

    def save(self, folder: Path, metadata: dict[str, Any]) -> None:
        """Write the weights (model.pt) and model.json: the caller's metadata plus vocabularies,
        classes, inputs, imputation means and scales."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / WEIGHTS)
        numeric = [f.input_name for f in self.features if f.categorical is None]
        meta = {
            **metadata,
            "family": FAMILY,
            "inputs": [
                {"name": f.input_name, "datatype": f.datatype, "ref": f.ref} for f in self.features
            ],
            "categorical": {k: v.to_json() for k, v in self.vocabularies.items()},
            "classes": None if self.classes is None else list(self.classes),
            "positive_class": self.positive_class,
            "numeric": {
                name: {"mean": float(m), "scale": float(s)}
                for name, m, s in zip(
                    numeric, self.net.fill.tolist(), self.net.scale.tolist(), strict=True
                )
            },
        }
        (folder / METADATA).write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")

    def export_onnx(self, path: Path) -> None:
        """One ONNX graph on raw inputs (strings, int64 codes, float32 with NaN): `output` and,
        for classification, `label`."""
        import warnings

        import onnx

        net = self.net.to("cpu").eval()
        example = tuple(
            torch.zeros((2, 1), dtype=torch.int64 if f.categorical else torch.float32)
            for f in self.features
        )
        names = [index_name(f.input_name) if f.categorical else f.input_name for f in self.features]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and exact here
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                example,
                str(path),
                input_names=names,
                output_names=[OUTPUT],
                dynamic_axes={**{n: {0: "batch"} for n in names}, OUTPUT: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        model = graft_raw_io(onnx.load(str(path)), self.raw_inputs(), self.task, self.classes)
        onnx.save(model, str(path))


def _object_floats(raw: np.ndarray) -> np.ndarray:
    """float32 of an object column (None / pandas NA -> NaN)."""
    import pandas as pd

    return pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(np.float32, na_value=np.nan)


def _optimizer(plan: Plan, params: Any) -> torch.optim.Optimizer:
    hp = plan.training.hyperparameters
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay, momentum=0.9)
    cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=hp.lr, weight_decay=hp.weight_decay)


def _loss(task: str, net: TabularNet, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    z = net.logits(*x)
    if task == "binary_classification":
        return F.binary_cross_entropy_with_logits(z.reshape(-1), y.float())
    if task == "multiclass_classification":
        return F.cross_entropy(z, y.long())
    target = (y.float() - net.target_center) / net.target_scale
    return F.mse_loss(z.reshape(-1), target)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def fit(
    plan: Plan,
    train: tuple[Columns, np.ndarray],
    validation: tuple[Columns, np.ndarray],
    classes: tuple[str | int, ...] | None,
    device: str,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TorchModel, list[dict[str, float]], int]:
    """Train deterministically (seeded; deterministic kernels on CPU) on raw training columns,
    early stopping on validation; return the model, the history and the best epoch."""
    from specml.runtime.steps.metrics import compute_metrics
    from tqdm import tqdm

    t = plan.training
    train_columns, y_train = train
    val_columns, y_val = validation
    torch.manual_seed(t.seed)
    previous = torch.are_deterministic_algorithms_enabled()
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        model = TorchModel(plan, learn_vocabularies(t.features, dict(train_columns)), classes)
        net = model.net
        xt = model.tensors(train_columns)
        yt = torch.as_tensor(np.asarray(y_train))
        net.fit_preprocessing(xt, yt)
        net.to(device)
        xt, yt = tuple(x.to(device) for x in xt), yt.to(device)
        opt = _optimizer(plan, net.parameters())
        es = t.early_stopping
        metric = es.metric if es else t.primary_metric
        mode = es.mode if es else "max"
        y_val = np.asarray(y_val)
        n_val = len(y_val)
        xv = model.tensors(val_columns, device) if n_val else ()
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
            disable=not sys.stderr.isatty(),
        )
        for epoch in bar:
            net.train()
            order = torch.randperm(len(yt), generator=gen).to(device)
            total, seen = 0.0, 0
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                if len(idx) < 2 and t.model.batch_norm:
                    continue  # batch norm cannot train on a single row
                opt.zero_grad()
                loss = _loss(t.task, net, tuple(x[idx] for x in xt), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            row = {"train_loss": total / max(seen, 1)}
            if n_val:
                net.eval()
                with torch.no_grad():
                    out = net(*xv).cpu().numpy()
                row[f"val_{metric}"] = compute_metrics(t.task, y_val, out, [metric])[metric]
            history.append(row)
            bar.set_postfix({k: round(v, 4) for k, v in row.items()})
            if on_epoch:
                on_epoch(epoch, row)
            if es and n_val:
                value = row[f"val_{metric}"]
                if _improved(value, best, mode, es.min_delta):
                    best, best_epoch, waited = value, epoch, 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    waited += 1
                    if waited >= es.patience:
                        break
        bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        net.to("cpu").eval()
        return model, history, best_epoch
    finally:
        torch.use_deterministic_algorithms(previous)


def load(plan: Plan, folder: Path) -> TorchModel:
    """Load a model saved by `TorchModel.save` (CPU, eval mode)."""
    meta = json.loads((Path(folder) / METADATA).read_text())
    vocabularies = {k: Vocabulary.from_json(v) for k, v in meta.get("categorical", {}).items()}
    classes = meta.get("classes")
    model = TorchModel(plan, vocabularies, None if classes is None else tuple(classes))
    state = torch.load(Path(folder) / WEIGHTS, map_location="cpu", weights_only=True)
    model.net.load_state_dict(state)
    model.net.eval()
    return model
