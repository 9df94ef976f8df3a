"""Task heads on an encoder: one module, :class:`TaskModel`, for every SuperGLUE framing.

The encoder reads the flattened sequences of a batch (see ``framing.collate``); a small
RoBERTa-style head (dropout -> dense -> tanh -> dropout -> linear) turns one vector per
sequence into either class logits (pair, binary_option, span_pair) or a single score
(multiple_choice, candidate_ranking) that is scattered back to ``[B, C]`` by ``choice_mask``.

The vector is the first token's last hidden state, never the backbone's pooler: MiniLM and
MPNet ship poolers that were not trained for this (or not at all). Span tasks concatenate it
with the mean of each span's sub-tokens and the span product (``[cls, a, b, a*b]``): the
product lets a linear layer compare the two spans directly, which is the decision both WiC
(same sense?) and WSC (same referent?) make.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vegalm.adapt.framing import IGNORE_INDEX, MASKED_SCORE, framing_for, head_task, num_labels
from vegalm.errors import VegaError


class ClassificationHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> linear (RobertaClassificationHead's shape)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        x = torch.tanh(self.dense(x))
        x = self.dropout(x)
        return self.out_proj(x)


class LinearHead(nn.Module):
    """dropout -> linear (P-tuning v2's classifier; fewer trainable parameters than the prompt)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(x))


HEADS = ("mlp", "linear")


def span_mean(hidden: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden[s, start:end]`` per sequence: hidden [S, L, H], spans [S, 2] -> [S, H]."""
    pos = torch.arange(hidden.size(1), device=hidden.device)
    mask = (pos[None, :] >= spans[:, :1]) & (pos[None, :] < spans[:, 1:2])  # [S, L]
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TaskModel(nn.Module):
    """Encoder + task head. ``forward(batch)`` -> logits ``[B, C]``.

    ``task`` may be a diagnostic (``axb``/``axg``): the model is then the RTE model (same head
    shape and labels), as the leaderboard expects. ``self.task`` is the task whose head this is.
    """

    def __init__(self, encoder: nn.Module, task: str, dropout: float = 0.1, head: str = "mlp") -> None:
        super().__init__()
        self.task = head_task(task)
        self.framing = framing_for(self.task)
        self.num_labels = num_labels(self.task)
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        in_dim = hidden * 4 if self.framing == "span_pair" else hidden
        if head not in HEADS:
            raise VegaError(f"--head must be one of {', '.join(HEADS)}, not {head!r}")
        self.head_kind = head
        self.head = (ClassificationHead(in_dim, hidden, self.num_labels or 1, dropout) if head == "mlp"
                     else LinearHead(in_dim, self.num_labels or 1, dropout))
        std = getattr(encoder.config, "initializer_range", 0.02)
        for layer in (m for m in self.head.modules() if isinstance(m, nn.Linear)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The word embeddings the encoder would look up for ``batch["input_ids"]``: [S, L, H].

        Adversarial training perturbs these and passes them back as ``inputs_embeds``; the
        encoder still adds its position/segment embeddings and LayerNorm on top, exactly as on
        the ``input_ids`` path (padding is on the right, so position ids agree for MPNet too).
        """
        return self.encoder.get_input_embeddings()(batch["input_ids"])

    def hidden_states(
        self, batch: dict[str, torch.Tensor], inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Last hidden states [S, L, H] of the batch's flattened sequences."""
        kwargs: dict[str, Any] = {"attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        if inputs_embeds is None:
            kwargs["input_ids"] = batch["input_ids"]
        else:
            kwargs["inputs_embeds"] = inputs_embeds
        return self.encoder(**kwargs).last_hidden_state

    def forward(
        self, batch: dict[str, torch.Tensor], inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.hidden_states(batch, inputs_embeds)
        rep = hidden[:, 0]
        if self.framing == "span_pair":
            spans = batch["spans"]
            a, b = span_mean(hidden, spans[:, 0]), span_mean(hidden, spans[:, 1])
            rep = torch.cat([rep, a, b, a * b], dim=-1)
        out = self.head(rep)  # [S, num_labels or 1]
        choice_mask = batch["choice_mask"]
        if self.num_labels:
            if choice_mask.size(1) != 1:
                raise ValueError(f"{self.task}: a classifier batch must have one sequence per example")
            return out
        scores = out.new_full(choice_mask.shape, MASKED_SCORE)
        scores[choice_mask] = out.squeeze(-1).to(scores.dtype)
        return scores


CLASS_WEIGHTS = ("none", "balanced")


def class_weights(labels: list[int | None], n_classes: int, task: str) -> torch.Tensor:
    """scikit-learn's "balanced" weights, ``n / (k * count_c)``, from a training set's label indices.

    A class the training set lacks has no weight to give (its count is 0): a clear error rather
    than an infinite weight.
    """
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([lab for lab in labels if lab is not None and lab != IGNORE_INDEX])
    missing = sorted(set(range(n_classes)) - set(y.tolist()))
    if missing:
        raise VegaError(f"--class-weight balanced: {task}'s training set has no example of class index "
                        f"{', '.join(map(str, missing))}; balanced weights need every class")
    return torch.tensor(compute_class_weight("balanced", classes=np.arange(n_classes), y=y), dtype=torch.float32)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over classes or choices, ignoring -100 (ReCoRD queries with no gold).

    Computed in float32 (bf16 log-softmax loses the small differences that matter late in
    training). A batch without any label gives a zero that still carries a graph, so a
    training step never breaks on it. ``weight``: per-class weights (``class_weights``); the
    mean is then PyTorch's weighted mean (divided by the summed weights of the batch's labels).
    """
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    if weight is not None:
        weight = weight.to(logits.device)
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=IGNORE_INDEX)
