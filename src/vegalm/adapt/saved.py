"""A fine-tuned model on disk: a plain transformers encoder folder plus the head beside it.

    best/config.json, model.safetensors      the encoder: AutoModel.from_pretrained(best) works
    best/tokenizer.json, ...                 the tokenizer, so the folder is self-contained
    best/head.safetensors                    the task head's weights
    best/task.json                           which task, framing, labels, max length, backbone

Keeping the encoder in the standard layout lets anyone reuse it without vegalm (as a backbone
for another task, or with the transformers pipeline API); the head is the only vegalm part.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vegalm import __version__
from vegalm.errors import VegaError

TASK_FILE = "task.json"
HEAD_FILE = "head.safetensors"


def save_task_model(model: torch.nn.Module, tokenizer: Any, directory: Path, info: dict[str, Any],
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` (a TaskModel) and ``tokenizer`` into ``directory`` (which must exist).

    ``state_dict`` (keyed like ``model``) replaces the module's own weights: under FSDP/ZeRO-3 the
    engine passes the gathered full state dict, as the module only holds shards."""
    from transformers.utils import logging as hf_logging

    from vegalm.train.saving import sub_state_dict

    directory = Path(directory)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every new best model
    try:
        model.encoder.save_pretrained(directory, state_dict=sub_state_dict(state_dict, "encoder."))  # safetensors
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(directory)
    if info.get("backbone"):
        from vegalm.carry import carry_sentence_transformers

        carry_sentence_transformers(info["backbone"], directory, "fine-tuned on a task")
    head_state = model.head.state_dict() if state_dict is None else sub_state_dict(state_dict, "head.")
    head = {k: v.detach().cpu().contiguous() for k, v in head_state.items()}
    save_file(head, str(directory / HEAD_FILE))
    meta = {
        "task": model.task,
        "framing": model.framing,
        "num_labels": model.num_labels,
        "dropout": model.head.dropout.p,
        "vegalm_version": __version__,
        **info,
    }
    (directory / TASK_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def model_dir(path: str | Path) -> Path:
    """``path`` itself if it holds a saved task model, else ``path/best`` (a run directory)."""
    path = Path(path)
    for candidate in (path, path / "best"):
        if (candidate / TASK_FILE).is_file():
            return candidate
    raise VegaError(f"{path}: not a fine-tuned vegalm model or run directory (no {TASK_FILE} in it or in best/)")


def read_task_info(path: str | Path) -> dict[str, Any]:
    d = model_dir(path)
    try:
        return json.loads((d / TASK_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VegaError(f"{d / TASK_FILE}: unreadable ({e})") from e


def load_task_model(path: str | Path, task: str | None = None):
    """(TaskModel, tokenizer, info) from a saved model or run directory.

    ``task``, when given, must be the task the head was trained for (AX-b/AX-g accept an RTE
    head): loading a CB head to predict RTE is a clear error, not garbage predictions.
    """
    from vegalm.adapt.framing import head_task
    from vegalm.adapt.heads import TaskModel
    from vegalm.backbones import load_encoder, load_tokenizer

    d = model_dir(path)
    info = read_task_info(d)
    if task is not None and head_task(task) != info["task"]:
        raise VegaError(
            f"{d}: this model was fine-tuned for {info['task']!r}, not {head_task(task)!r}; "
            "use a run of the same task (or start from the plain backbone)"
        )
    encoder = load_encoder(str(d))
    model = TaskModel(encoder, info["task"], dropout=info.get("dropout", 0.1))
    model.head.load_state_dict(load_file(str(d / HEAD_FILE)))
    return model, load_tokenizer(str(d)), info
