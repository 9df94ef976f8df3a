"""Inference over a data set on however many processes Accelerate runs: sharded, then gathered.

Used for evaluation during training, for final predictions, and by pretraining's
self-questioning pass. Batches are sorted by length (longest first) so dynamic padding wastes
almost nothing; outputs are put back in data order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, send_to_device

from vegalm.train.sampling import shard


def _rows(out: Any, n: int) -> list[Any]:
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu()  # bf16 -> float32: numpy and json cannot take bf16
        return list(out) if out.ndim else [out]
    rows = list(out)
    if len(rows) != n:
        raise ValueError(f"forward_fn returned {len(rows)} outputs for a batch of {n}")
    return rows


@torch.no_grad()
def predict(
    accelerator: Accelerator,
    model: torch.nn.Module,
    data: Sequence[Any],
    collate_fn: Callable[[list[Any]], dict],
    forward_fn: Callable[[torch.nn.Module, dict], Any],
    batch_size: int,
    lengths: Sequence[int] | None = None,
    progress: bool = False,
) -> list[Any]:
    """``forward_fn(model, batch)`` -> one output per example; returns them in ``data`` order."""
    n = len(data)
    order = np.argsort(-np.asarray(lengths), kind="stable") if lengths is not None else np.arange(n)
    batches = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    mine = shard(batches, accelerator.process_index, accelerator.num_processes) if batches else []
    was_training = model.training
    model.eval()
    outputs: list[tuple[int, Any]] = []
    iterator = mine
    if progress and accelerator.is_local_main_process:
        from tqdm.auto import tqdm

        iterator = tqdm(mine, desc="predict", leave=False, dynamic_ncols=True)
    for indices in iterator:
        batch = send_to_device(collate_fn([data[i] for i in indices]), accelerator.device)
        with accelerator.autocast():
            out = forward_fn(model, batch)
        outputs.extend(zip(indices, _rows(out, len(indices))))
    model.train(was_training)
    if accelerator.num_processes > 1:
        outputs = gather_object(outputs)
    result: list[Any] = [None] * n
    for i, row in outputs:  # padded duplicates simply overwrite their twin
        result[i] = row
    return result
