"""Logits -> leaderboard values, ``{Example.key: value}`` (the data layer writes the lines).

Row i of the logits belongs to ``features[i]``; choices beyond a feature's own count (batch
padding) are ignored, so per-batch logits of different widths can be passed as a list.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from vegalm.adapt.framing import Feature, framing_for, head_task
from vegalm.data.superglue.base import canonical_task
from vegalm.errors import VegaError


def stack_logits(logits: Any) -> np.ndarray:
    """A [N, C] float array from a tensor, an array, or a list of per-batch [B_i, C_i] blocks."""
    if isinstance(logits, (list, tuple)):
        blocks = [stack_logits(b) for b in logits]
        if not blocks:
            return np.zeros((0, 0), dtype=np.float32)
        width = max(b.shape[1] for b in blocks)
        padded = [np.pad(b, ((0, 0), (0, width - b.shape[1])), constant_values=-np.inf) for b in blocks]
        return np.concatenate(padded, axis=0)
    if isinstance(logits, torch.Tensor):
        return logits.detach().float().cpu().numpy()
    array = np.asarray(logits, dtype=np.float32)
    if array.ndim != 2:
        raise VegaError(f"logits must be 2-D [examples, choices], got shape {array.shape}")
    return array


def choice_indices(features: Sequence[Feature], logits: Any, *, choices: bool) -> list[int]:
    """Argmax per feature over its own choices (``choices``) or over the classes."""
    scores = stack_logits(logits)
    if scores.shape[0] != len(features):
        raise VegaError(f"{scores.shape[0]} rows of logits for {len(features)} features")
    out = []
    for f, row in zip(features, scores):
        width = f.num_sequences if choices else row.shape[0]
        out.append(int(np.argmax(row[:width])))
    return out


def to_predictions(
    task: str, examples: Sequence[Any], features: Sequence[Feature], logits: Any
) -> dict[Hashable, Any]:
    """``{key: leaderboard value}``: a ``Task.labels`` spelling, COPA's 0|1, MultiRC's 0|1 or
    ReCoRD's entity text. AX-b/AX-g take the RTE label spellings (they are RTE predictions).
    """
    from vegalm.data.superglue import get_task  # the data layer; imported late (optional at import)

    name = canonical_task(task)
    framing = framing_for(name)
    best = choice_indices(features, logits, choices=framing in ("multiple_choice", "candidate_ranking"))
    if framing == "candidate_ranking":
        by_key = {e.key: e for e in examples}
        missing = [f.key for f in features if f.key not in by_key]
        if missing:
            raise VegaError(f"record: features without an example, e.g. query {missing[0]}")
        return {f.key: by_key[f.key].candidates[i] for f, i in zip(features, best)}
    if framing in ("multiple_choice", "binary_option"):
        return {f.key: int(i) for f, i in zip(features, best)}
    labels = get_task(head_task(name)).labels
    if labels is None:
        raise VegaError(f"{name}: the task defines no label spellings")
    return {f.key: labels[i] for f, i in zip(features, best)}
