"""Saved runs outside the training commands: ``vegalm.load_run(path)`` and ``vegalm predict``.

Any finished run (``vegalm finetune``, ``prompt-tune``, ``transfer``; or its ``best/``) loads
into a model and a ``predict`` callable that takes examples in the task's official format (a
JSONL path, or a list of dicts) and returns one record per example: the leaderboard value and
the model's probabilities. ``idx`` may be left out (the row number is used), so a plain
``{"premise": ..., "hypothesis": ...}`` file works for the pair tasks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vegalm.errors import DataError, DataErrors, VegaError

# The input fields each task needs (its official format; idx optional here).
FIELDS = {"boolq": ("passage", "question"), "cb": ("premise", "hypothesis"), "rte": ("premise", "hypothesis"),
          "axb": ("sentence1", "sentence2"), "axg": ("premise", "hypothesis"),
          "copa": ("premise", "choice1", "choice2", "question"), "wic": ("word", "sentence1", "sentence2"),
          "wsc": ("text", "target"), "multirc": ("passage",), "record": ("passage", "qas")}


@dataclass
class LoadedRun:
    """A saved task model ready to predict; ``predict(inputs)`` -> list of records."""

    path: Path
    task: str
    kind: str  # finetune | prompt
    model: torch.nn.Module
    tokenizer: Any
    max_length: int
    batch_size: int = 32

    def predict(self, inputs: str | Path | Iterable[dict], *, progress: bool = False) -> list[dict[str, Any]]:
        examples = read_inputs(self.task, inputs)
        return predict_examples(self, examples, progress=progress)

    __call__: Callable[..., list[dict[str, Any]]] = predict


def load_run(path: str | Path, *, batch_size: int = 32) -> LoadedRun:
    """Load a fine-tuned or prompt-tuned run (or its ``best/``) for prediction, on CPU or GPU."""
    from vegalm.adapt.prompt_tuning import load_prompt_model, prompt_file
    from vegalm.adapt.saved import load_task_model, model_dir

    path = Path(path)
    try:
        prompt_file(path)
        is_prompt = True
    except VegaError:
        is_prompt = False
    if is_prompt:
        model, tokenizer, meta = load_prompt_model(path)
        task, kind, max_length = meta["head_task"], "prompt", int(meta.get("max_length", 128))
    else:
        model, tokenizer, info = load_task_model(path)
        task, kind = info["task"], "finetune"
        max_length = int(info.get("max_length") or _run_max_length(model_dir(path)) or 256)
    model.eval()
    if torch.cuda.is_available():
        model.cuda()
    return LoadedRun(path, task, kind, model, tokenizer, max_length, batch_size)


def _run_max_length(best: Path) -> int | None:
    import yaml

    cfg = best.parent / "config.yaml"
    if cfg.is_file():
        return (yaml.safe_load(cfg.read_text()) or {}).get("max_length")
    return None


def read_inputs(task: str, inputs: str | Path | Iterable[dict]) -> list:
    """Parse inputs with the task's own reader (every problem reported as path:line); idx optional."""
    from vegalm.data.superglue import get_task
    from vegalm.data.superglue.reading import iter_json_lines

    t = get_task(task)
    if isinstance(inputs, (str, Path)):
        path = Path(inputs)
        if path.is_dir():
            raise VegaError(f"{path}: is a directory, not a JSONL file")
        if not path.is_file():
            raise VegaError(f"{path}: not found")
        rows = list(iter_json_lines(path))
    else:
        path = Path("<inputs>")
        rows = list(enumerate(inputs, 1))
    errors: list[DataError] = []
    examples: list = []
    for line, row in rows:
        if isinstance(row, DataError):
            errors.append(row)
            continue
        if not isinstance(row, dict):
            errors.append(DataError(path, line, f"expected a JSON object, got {type(row).__name__}"))
            continue
        missing = [f for f in FIELDS.get(t.name, ()) if f not in row]
        if missing:
            errors.append(DataError(path, line, f"missing field(s) {', '.join(missing)}: {t.folder} inputs need "
                                                f"{', '.join(FIELDS[t.name])}"))
            continue
        row = {"idx": line - 1, **row}
        try:
            examples.extend(t.parse(row, path=path, line=line, labelled=False))
        except DataError as e:
            errors.append(e)
        except DataErrors as e:
            errors.extend(e.errors)
    if errors:
        raise DataErrors(errors)
    if not examples:
        raise DataError(path, None, "no examples (the file is empty)")
    return examples


def predict_examples(run: LoadedRun, examples: list, *, progress: bool = False) -> list[dict[str, Any]]:
    from accelerate import Accelerator

    from vegalm.adapt.finetune import _pad_rows
    from vegalm.adapt.framing import MASKED_SCORE, collate, encode
    from vegalm.adapt.predict import to_predictions
    from vegalm.train.predict import predict

    feats = encode(run.task, examples, run.tokenizer, run.max_length)
    pad = run.tokenizer.pad_token_id
    acc = Accelerator(cpu=not torch.cuda.is_available())
    rows = predict(acc, run.model, feats, lambda fs: collate(fs, pad), lambda m, b: m(b), run.batch_size,
                   lengths=[f.length * f.num_sequences for f in feats], progress=progress)
    logits = _pad_rows(rows)
    preds = to_predictions(run.task, examples, feats, logits)
    out = []
    for f, row in zip(feats, logits):
        real = row[row > MASKED_SCORE / 2] if row.size > 1 else row
        probs = (1 / (1 + np.exp(-real))) if real.size == 1 else np.exp(real - real.max()) / np.exp(
            real - real.max()).sum()
        out.append({"idx": _jsonable(f.key), "prediction": preds[f.key], "probabilities": [round(float(p), 6)
                                                                                              for p in probs]})
    return out


def _jsonable(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


def write_predictions(records: list[dict[str, Any]], out: str | Path | None) -> None:
    from vegalm.io import write_jsonl

    if out is None:
        for r in records:
            print(json.dumps(r, ensure_ascii=False))
    else:
        write_jsonl(out, records)
