"""What a saved model must keep from the checkpoint it started from, so it stays usable outside vegalm.

- **The pooler.** ``*ForMaskedLM`` has no pooler, so a continued-pretraining run would save an
  encoder without one and ``AutoModel.from_pretrained(final)`` would add a *random* pooler that
  looks trained. The starting checkpoint's pooler weights (MLM does not train them) are written
  into the saved checkpoint; ``AutoModelForMaskedLM`` ignores them, ``AutoModel`` uses them.
- **The sentence-transformers pipeline.** A sentence-transformers backbone (MiniLM, MPNet) ships
  ``modules.json``, the pooling and Normalize modules and ``max_seq_length``; without them
  ``SentenceTransformer(final)`` falls back to a plain mean pooling with other settings. The
  files are copied unchanged, with a warning: the encoder was trained further, so its sentence
  embeddings are no longer the original model's (re-evaluate them before using them as such).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

log = logging.getLogger("vegalm.carry")

ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_warned: set[tuple[str, str]] = set()  # (source, what): warn once per run, not at every checkpoint


def _local(name_or_path: str | Path) -> Path | None:
    from vegalm.backbones import resolve_model_path

    try:
        p = Path(resolve_model_path(str(name_or_path)))
    except Exception:  # noqa: BLE001 - an unresolvable source has nothing to carry
        return None
    return p if p.is_dir() else None


def checkpoint_pooler(name_or_path: str | Path) -> dict[str, torch.Tensor]:
    """The pooler tensors of a local checkpoint, keyed ``pooler.<rest>`` (any model prefix stripped)."""
    from safetensors import safe_open

    from vegalm.backbones import checkpoint_files

    d = _local(name_or_path)
    out: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(d) if d is not None else []:
        if f.suffix != ".safetensors":
            continue
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open has no __iter__
                at = k.find("pooler.")
                if at == 0 or (at > 0 and k[at - 1] == "."):
                    out[k[at:]] = st.get_tensor(k)
    return out


def with_pooler(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None,
                pooler: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state_dict`` (or the model's) plus the pooler under the model's own key prefix, unless it has one."""
    if not pooler:
        return state_dict
    sd = dict(model.state_dict() if state_dict is None else state_dict)
    if any("pooler." in k for k in sd):
        return state_dict
    prefix = f"{model.base_model_prefix}." if hasattr(model, model.base_model_prefix) else ""
    sd.update({prefix + k: v.detach().cpu() for k, v in pooler.items()})
    return sd


def carry_sentence_transformers(source: str | Path, directory: Path, what: str) -> bool:
    """Copy a sentence-transformers backbone's pipeline files into ``directory``; True if it had them."""
    src = _local(source)
    if src is None or not (src / "modules.json").is_file():
        return False
    directory = Path(directory)
    for name in ST_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, directory / name)
    for module in json.loads((src / "modules.json").read_text()):
        sub = str(module.get("path") or "")
        if sub and (src / sub).is_dir():
            shutil.copytree(src / sub, directory / sub, dirs_exist_ok=True)
    if (str(source), what) not in _warned:
        _warned.add((str(source), what))
        log.warning("%s: %s is a sentence-transformers model; its pooling/Normalize/max_seq_length files are "
                    "carried into the saved model, but the encoder was %s, so its sentence embeddings are no "
                    "longer the original's: evaluate them before using the result as a sentence encoder",
                    directory, source, what)
    return True
