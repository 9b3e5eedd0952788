"""The torch module of the mlp/linear family: per-feature inputs in, `output` out.

Numeric inputs are float32 [N,1]: NaN is imputed with the training mean, then standardised.
Categorical inputs are int64 indices [N,1] (see runtime/encoding.py for the layout), turned into
numbers by a lookup: one_hot (rows of an identity), ordinal (the index, imputed and standardised)
or embedding (a learned table). A bucket never seen in training (e.g. the unknown bucket when every
training value is in the vocabulary) encodes as zeros, so an unseen value adds nothing.
"""

from __future__ import annotations

import torch
from specml.compiler.ir import FeatureRef, ModelArch
from specml.runtime.encoding import Vocabulary
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def embedding_width(size: int, declared: int | None) -> int:
    """Embedding dimension: the declared one, else fastai's rule of thumb (capped at 50)."""
    return declared or min(50, max(2, round(1.6 * size**0.56)))


class TabularNet(nn.Module):
    """forward(*inputs in Plan order) -> output: P(positive) [N,1], probabilities [N,K] or [N,1]."""

    fill: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    target_center: torch.Tensor
    target_scale: torch.Tensor

    def __init__(
        self,
        task: str,
        arch: ModelArch,
        features: tuple[FeatureRef, ...],
        vocabularies: dict[str, Vocabulary],
        n_outputs: int,
    ) -> None:
        super().__init__()
        self.task = task
        self.numeric = [i for i, f in enumerate(features) if f.categorical is None]
        self.categorical = [i for i, f in enumerate(features) if f.categorical is not None]
        n_num = len(self.numeric)
        self.register_buffer("fill", torch.zeros(n_num))  # training means (imputation)
        self.register_buffer("center", torch.zeros(n_num))
        self.register_buffer("scale", torch.ones(n_num))
        self.register_buffer("target_center", torch.zeros(1))  # regression target standardisation
        self.register_buffer("target_scale", torch.ones(1))
        self.encodings: list[str] = []
        self.vocab_sizes: list[int] = []
        self.embeddings = nn.ModuleDict()
        width = n_num
        for k, i in enumerate(self.categorical):
            cat, vocab = features[i].categorical, vocabularies[features[i].input_name]
            assert cat is not None
            encoding = "ordinal" if cat.encoding == "native" else cat.encoding
            self.encodings.append(encoding)
            self.vocab_sizes.append(len(vocab.values))
            if encoding == "embedding":
                dim = embedding_width(vocab.size, cat.embedding_dim)
                self.embeddings[str(k)] = nn.Embedding(vocab.size, dim)
                width += dim
            elif encoding == "one_hot":
                self.register_buffer(f"table_{k}", torch.eye(vocab.size))
                width += vocab.size
            else:
                self.register_buffer(f"table_{k}", torch.zeros(vocab.size, 1))
                width += 1
        layers: list[nn.Module] = []
        if arch.type == "mlp":
            for hidden in arch.hidden:
                layers.append(nn.Linear(width, hidden))
                if arch.batch_norm:
                    layers.append(nn.BatchNorm1d(hidden))
                layers.append(_ACTIVATIONS[arch.activation]())
                if arch.dropout > 0:
                    layers.append(nn.Dropout(arch.dropout))
                width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def _table(self, k: int) -> torch.Tensor:
        if self.encodings[k] == "embedding":
            table = self.embeddings[str(k)].weight
            assert isinstance(table, torch.Tensor)
            return table
        table = getattr(self, f"table_{k}")
        assert isinstance(table, torch.Tensor)
        return table

    def encode(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The network's input [N, W]: imputed, standardised numbers, then categorical lookups."""
        parts = []
        if self.numeric:
            x = torch.cat([inputs[i] for i in self.numeric], dim=1)
            x = torch.where(torch.isnan(x), self.fill, x)
            parts.append((x - self.center) / self.scale)
        for k, i in enumerate(self.categorical):
            parts.append(torch.index_select(self._table(k), 0, inputs[i].reshape(-1)))
        if not parts:
            return inputs[0].new_zeros((inputs[0].shape[0], 0)).float()
        return torch.cat(parts, dim=1)

    def logits(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Raw scores of the network."""
        return self.net(self.encode(inputs))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Serving output: P(positive) [N,1], class probabilities [N,K] or the value [N,1]."""
        z = self.logits(*inputs)
        if self.task == "binary_classification":
            return torch.sigmoid(z)
        if self.task == "multiclass_classification":
            return torch.softmax(z, dim=1)
        return z * self.target_scale + self.target_center

    @torch.no_grad()
    def fit_preprocessing(self, inputs: tuple[torch.Tensor, ...], y: torch.Tensor | None) -> None:
        """Imputation means, scales, lookup tables and the label prior from training rows."""
        if self.numeric:
            x = torch.cat([inputs[i] for i in self.numeric], dim=1)
            mean, std = _nan_mean_std(x)
            self.fill.copy_(mean)
            self.center.copy_(mean)
            self.scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))
        for k, i in enumerate(self.categorical):
            table = self._table(k)
            counts = torch.bincount(inputs[i].reshape(-1), minlength=table.shape[0])
            if self.encodings[k] == "ordinal":
                codes = torch.arange(table.shape[0], dtype=torch.float32)
                # The unknown and missing buckets are imputed with the mean code, as a missing
                # number is; vocabulary values keep their order.
                in_vocab = codes < self.vocab_sizes[k]
                weights = counts.float() * in_vocab
                mean = (codes * weights).sum() / weights.sum().clamp(min=1)
                codes = torch.where(in_vocab, codes, mean)
                var = (((codes - mean) ** 2) * counts.float()).sum() / counts.sum().clamp(min=1)
                spread = float(var.sqrt()) if float(var) > 1e-12 else 1.0
                table.copy_(((codes - mean) / spread).reshape(-1, 1))
            else:
                table.mul_(
                    (counts > 0).to(table.dtype).reshape(-1, 1)
                )  # unseen buckets encode as zeros
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


def _nan_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and population std ignoring NaN (an all-NaN column: 0 and 0)."""
    mask = ~torch.isnan(x)
    counts = mask.sum(0).clamp(min=1)
    mean = torch.where(mask, x, torch.zeros_like(x)).sum(0) / counts
    filled = torch.where(mask, x, mean)
    return mean, filled.std(0, unbiased=False)
