"""The torch model: imputation and standardisation live inside it, so ONNX serving does them too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from specml.compiler.ir import Plan
from torch import nn

WEIGHTS = "model.pt"
METADATA = "model.json"
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class TabularModel(nn.Module):
    """features [N, F] float32 (NaN = missing) -> output [N, K] (probabilities or values)."""

    fill: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    target_center: torch.Tensor
    target_scale: torch.Tensor

    def __init__(self, plan: Plan, n_features: int) -> None:
        super().__init__()
        t = plan.training
        self.task = t.task
        self.register_buffer("fill", torch.zeros(n_features))  # training means (imputation)
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.register_buffer("target_center", torch.zeros(1))  # regression target standardisation
        self.register_buffer("target_scale", torch.ones(1))
        out = 1 if t.task != "multiclass_classification" else t.num_classes
        layers: list[nn.Module] = []
        width = n_features
        if t.model.type == "mlp":
            for hidden in t.model.hidden:
                layers.append(nn.Linear(width, hidden))
                if t.model.batch_norm:
                    layers.append(nn.BatchNorm1d(hidden))
                layers.append(_ACTIVATIONS[t.model.activation]())
                if t.model.dropout > 0:
                    layers.append(nn.Dropout(t.model.dropout))
                width = hidden
        layers.append(nn.Linear(width, out))
        self.net = nn.Sequential(*layers)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Raw scores: impute missing values with training means, standardise, run the network."""
        x = torch.where(torch.isnan(features), self.fill, features)
        return self.net((x - self.center) / self.scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Serving output: P(positive) [N,1], class probabilities [N,K] or the value [N,1]."""
        z = self.logits(features)
        if self.task == "binary_classification":
            return torch.sigmoid(z)
        if self.task == "multiclass_classification":
            return torch.softmax(z, dim=1)
        return z * self.target_scale + self.target_center

    @torch.no_grad()
    def fit_preprocessing(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Set imputation means and standardisation from training rows (NaN-aware)."""
        mask = ~torch.isnan(x)
        counts = mask.sum(0).clamp(min=1)
        mean = torch.where(mask, x, torch.zeros_like(x)).sum(0) / counts
        filled = torch.where(mask, x, mean)
        std = filled.std(0, unbiased=False)
        self.fill.copy_(mean)
        self.center.copy_(mean)
        self.scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))
        if y is None or not len(y):
            return
        if self.task == "regression":
            self.target_center.copy_(y.float().mean().reshape(1))
            self.target_scale.copy_(y.float().std(unbiased=False).clamp(min=1e-12).reshape(1))
            return
        # Start from the label prior (output bias = base-rate logit / log class frequencies): the
        # first predictions are calibrated, so few optimiser steps are not spent learning it.
        head = self.net[-1]
        assert isinstance(head, nn.Linear)
        if self.task == "binary_classification":
            p = y.float().mean().clamp(1e-4, 1 - 1e-4)
            head.bias.fill_(float(torch.log(p / (1 - p))))
        else:
            counts = torch.bincount(y.long(), minlength=head.out_features).float() + 1.0
            head.bias.copy_(torch.log(counts / counts.sum()))


def save_model(model: TabularModel, folder: Path, metadata: dict[str, Any]) -> None:
    """Write the weights and the metadata JSON (feature order, names, task, means, run id)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS)
    meta = {**metadata, "training_means": model.fill.tolist(), "scale": model.scale.tolist()}
    (folder / METADATA).write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n")


def load_model(plan: Plan, folder: Path) -> tuple[TabularModel, dict[str, Any]]:
    """Load a saved model (CPU, eval mode) and its metadata."""
    meta = json.loads((Path(folder) / METADATA).read_text())
    model = TabularModel(plan, len(meta["features"]))
    model.load_state_dict(torch.load(Path(folder) / WEIGHTS, map_location="cpu", weights_only=True))
    model.eval()
    return model, meta


@torch.no_grad()
def predict(model: TabularModel, features: Any, device: str = "cpu") -> Any:
    """Score a float32 numpy matrix with the torch model; returns numpy [N, K]."""
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    return model.to(device).eval()(x).cpu().numpy()
