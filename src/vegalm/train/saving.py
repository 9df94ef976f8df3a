"""Writing best/: the default save hook, and what the engine needs to call hooks under sharding.

Under FSDP or DeepSpeed ZeRO-3 each process holds parameter shards, so the module a save hook
receives cannot be saved as is; the engine gathers a full state dict (a collective) and passes it
as ``state_dict=`` to hooks that accept it. Everywhere else hooks get None and read their module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType


def shards_parameters(accelerator: Accelerator) -> bool:
    """True under FSDP (1 or 2) and DeepSpeed ZeRO-3: the unwrapped module holds shards."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3


def save_state_dict(model: torch.nn.Module, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The default hook: ``directory/model.safetensors`` (``safetensors.torch.load_model`` reads it)."""
    from safetensors.torch import save_file, save_model

    if state_dict is None:
        save_model(model, str(directory / "model.safetensors"))  # drops the duplicates of tied weights
        return
    # safetensors refuses two names for one tensor; gathered dicts keep tied weights tied (ZeRO-3
    # does), so write each tensor once, under its first name, as save_model does.
    tensors, seen = {}, set()
    for k, v in state_dict.items():
        if (v.data_ptr(), tuple(v.shape)) not in seen:
            seen.add((v.data_ptr(), tuple(v.shape)))
            tensors[k] = v.contiguous()
    save_file(tensors, str(directory / "model.safetensors"))


def sub_state_dict(state_dict: dict[str, Any] | None, prefix: str) -> dict[str, Any] | None:
    """The entries of ``state_dict`` under ``prefix`` (e.g. "model."), prefix removed; None stays None.

    For save hooks that write a submodule: the engine's state dict is keyed like the unwrapped
    module it trains (an Objective, a SparseMLM, ...)."""
    if state_dict is None:
        return None
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def accepts_state_dict(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    return any(p.name == "state_dict" or p.kind is p.VAR_KEYWORD for p in params)
