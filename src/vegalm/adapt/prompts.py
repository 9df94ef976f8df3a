"""Deep prompt tuning (P-tuning v2): trainable key/value prefixes at every layer of a frozen encoder.

Every self-attention layer ``l`` gets P extra key and value vectors per head, ``K_l, V_l``
of shape ``[heads, P, head_dim]``, prepended to the keys/values computed from the tokens.
Every token can attend to them (the attention mask is extended with P "keep" entries); they
are not tokens themselves, so they produce no output rows, take no position (real tokens keep
positions 0..L-1 exactly as without a prompt) and get no MPNet relative-position bias.
Because the prefix lives inside attention, any framing (one sequence, several choices per
example, span pooling) works unchanged.

Why not peft's prefix tuning: with transformers 5.x, peft feeds the prefix through
``past_key_values``/``cache``. MPNetModel accepts no cache at all (prefix tuning cannot be
applied), and BertModel derives its position ids from the cache length, so every real token
is shifted to positions P..P+L-1 (different inputs to the frozen model than in pretraining).
So the prefix is implemented here, in ~100 lines, by swapping the class of each
self-attention module for a subclass whose ``forward`` prepends the prefix and otherwise runs
the original computation (same projections, same attention kernel for BERT). Swapping the
class rather than wrapping the module keeps every backbone ``state_dict`` key unchanged, and
the model stays deep-copyable and picklable.

The prompt module is registered once, as ``deep_prompt`` on the module passed to
:func:`attach_prompt` (normally the TaskModel), so optimisers, ``.to(device)`` and
``state_dict`` see its parameters; the attention layers only hold a plain reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from vegalm.adapt.prefix_attention import ORIGINAL, PREFIX_CLASSES, supported
from vegalm.errors import VegaError
from vegalm.io import atomic_path

PROMPT_ATTR = "deep_prompt"  # where attach_prompt registers the prompt module
FORMAT_VERSION = 1
FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_layers", "num_heads", "vocab_size", "embedding_sha256")


class DeepPrompt(nn.Module):
    """P learned key/value vectors per layer and head.

    ``reparam_hidden > 0`` turns on P-tuning v2's reparameterisation: the prefixes are the
    output of an MLP (``Linear -> tanh -> Linear``) over P trainable embeddings, which can
    make optimisation steadier on some tasks; the saved prompt then holds the MLP too.
    Without it (the default) the prefixes are the parameters, initialised ``N(0, init_std)``:
    small keys give near-uniform attention logits towards the prefix and small values add
    little, so training starts from (almost) the frozen model's own behaviour.
    """

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        head_dim: int,
        length: int = 20,
        *,
        reparam_hidden: int = 0,
        init_std: float = 0.02,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if length < 0 or num_layers < 1 or num_heads < 1 or head_dim < 1:
            raise VegaError(
                f"bad prompt shape: length {length}, {num_layers} layers, {num_heads}x{head_dim} heads"
            )
        self.P, self.num_layers, self.num_heads, self.head_dim = length, num_layers, num_heads, head_dim
        self.reparam_hidden, self.init_std = reparam_hidden, init_std
        # P-tuning v2 drops out the prefix keys and values (the backbone's hidden dropout) while training
        self.dropout = float(dropout)
        shape = (num_layers, num_heads, length, head_dim)
        if reparam_hidden:
            hidden = num_heads * head_dim
            # N(0, init_std): the backbone's initializer range, so the MLP starts near its own bias
            self.embedding = nn.Parameter(torch.randn(length, hidden) * init_std)
            self.mlp = nn.Sequential(
                nn.Linear(hidden, reparam_hidden),
                nn.Tanh(),
                nn.Linear(reparam_hidden, num_layers * 2 * hidden),
            )
        else:
            self.key = nn.Parameter(torch.randn(shape) * init_std)
            self.value = nn.Parameter(torch.randn(shape) * init_std)

    @classmethod
    def for_model(cls, model: nn.Module, length: int = 20, **kw: Any) -> DeepPrompt:
        """A prompt shaped for ``model``'s backbone (a TaskModel or a bare encoder)."""
        cfg = find_backbone(model).config
        heads = cfg.num_attention_heads
        return cls(cfg.num_hidden_layers, heads, cfg.hidden_size // heads, length, **kw)

    def config(self) -> dict[str, Any]:
        return {
            "length": self.P,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "reparam_hidden": self.reparam_hidden,
            "init_std": self.init_std,
            "dropout": self.dropout,
        }

    def key_values(self) -> torch.Tensor:
        """All prefixes as one tensor ``[layers, 2 (key, value), heads, P, head_dim]``."""
        if not self.reparam_hidden:
            return torch.stack([self.key, self.value], dim=1)
        out = self.mlp(self.embedding)  # [P, layers * 2 * hidden]
        out = out.view(self.P, self.num_layers, 2, self.num_heads, self.head_dim)
        return out.permute(1, 2, 3, 0, 4)

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value prefixes ``[heads, P, head_dim]`` of one layer."""
        if not self.reparam_hidden:
            k, v = self.key[index], self.value[index]
        else:
            kv = self.key_values()[index]
            k, v = kv[0], kv[1]
        if self.dropout and self.training:
            k, v = nn.functional.dropout(k, self.dropout), nn.functional.dropout(v, self.dropout)
        return k, v

    def mean_vector(self) -> torch.Tensor:
        """The prompt as one vector, for SPoT-style task similarity (cosine between prompts).

        For each of the P prefix positions, the keys and values of all layers and heads are
        concatenated (layer-major: layer 0 key, layer 0 value, layer 1 key, ...); the P such
        vectors are then averaged. Layers are concatenated, not averaged, because each layer's
        keys live in their own space. Length ``num_layers * 2 * hidden``; detached, float32, CPU.
        """
        if self.P == 0:
            raise VegaError("a zero-length prompt has no mean vector")
        kv = self.key_values().detach().float().cpu()  # [layers, 2, heads, P, head_dim]
        return kv.permute(3, 0, 1, 2, 4).reshape(self.P, -1).mean(0)


# ------------------------------------------------------------------ attaching and freezing


def find_backbone(model: nn.Module) -> PreTrainedModel:
    """The transformers encoder inside ``model`` (the model itself, ``model.encoder``, or the first one)."""
    if isinstance(model, PreTrainedModel):
        return model
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, PreTrainedModel):
        return encoder
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise VegaError(f"{type(model).__name__} holds no transformers backbone")


def _self_attentions(backbone: nn.Module) -> list[nn.Module]:
    found = [m for m in backbone.modules() if type(m) in PREFIX_CLASSES or type(m) in ORIGINAL]
    if not found:
        raise VegaError(
            f"deep prompts support encoders whose self-attention is one of {supported()}; "
            f"{type(backbone).__name__} ({getattr(backbone.config, 'model_type', '?')}) has none"
        )
    return found


def _layer_indices(backbone: nn.Module, n_modules: int) -> list[list[int]]:
    """The layers each self-attention module serves: one each, or ALBERT's shared groups."""
    cfg = backbone.config
    n = cfg.num_hidden_layers
    if n_modules == n:
        return [[i] for i in range(n)]
    groups = getattr(cfg, "num_hidden_groups", None)
    if cfg.model_type == "albert" and getattr(cfg, "inner_group_num", 1) == 1 and groups == n_modules \
            and n % groups == 0:
        per = n // groups  # AlbertTransformer: layer i runs group i // (n / groups)
        return [list(range(g * per, (g + 1) * per)) for g in range(groups)]
    raise VegaError(f"{cfg.model_type}: {n_modules} self-attention modules for {n} layers; deep prompts need one "
                    "per layer (or ALBERT's shared groups with inner_group_num = 1)")


def _reset_counters(backbone: nn.Module, *_: object) -> None:
    for m in backbone.modules():
        if type(m) in ORIGINAL:
            m._vegalm_calls = 0


def attach_prompt(model: nn.Module, prompt: DeepPrompt) -> None:
    """Make the (frozen) backbone in ``model`` attend to ``prompt`` at every layer.

    ``model`` is a TaskModel or a bare encoder; the prompt is registered on it as
    ``model.deep_prompt`` (replacing a previously attached one).
    """
    backbone = find_backbone(model)
    layers = _self_attentions(backbone)
    cfg = backbone.config
    expect = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads)
    got = (prompt.num_layers, prompt.num_heads, prompt.head_dim)
    if got != expect:
        raise VegaError(f"prompt shape (layers, heads, head_dim) = {got} does not fit the backbone {expect}")
    for module, indices in zip(layers, _layer_indices(backbone, len(layers)), strict=True):
        if type(module) in PREFIX_CLASSES:
            module.__class__ = PREFIX_CLASSES[type(module)]
        module._vegalm_prefix = (prompt, indices)
        module._vegalm_calls = 0
    if any(len(m._vegalm_prefix[1]) > 1 for m in layers) and not hasattr(backbone, "_vegalm_hook"):
        backbone._vegalm_hook = backbone.register_forward_pre_hook(_reset_counters)  # shared layers: count calls
    setattr(model, PROMPT_ATTR, prompt)


def detach_prompt(model: nn.Module) -> DeepPrompt | None:
    """Undo :func:`attach_prompt`: the backbone is the plain model again; returns the prompt."""
    backbone = find_backbone(model)
    for module in _self_attentions(backbone):
        if type(module) in ORIGINAL:
            module.__dict__.pop("_vegalm_prefix", None)
            module.__dict__.pop("_vegalm_calls", None)
            module.__class__ = ORIGINAL[type(module)]
    hook = backbone.__dict__.pop("_vegalm_hook", None)
    if hook is not None:
        hook.remove()
    prompt = getattr(model, PROMPT_ATTR, None)
    if prompt is not None:
        delattr(model, PROMPT_ATTR)
    return prompt


def freeze_backbone(model: nn.Module) -> None:
    """Freeze every backbone weight; the attached prompt and everything outside the backbone
    (the task head) stay trainable."""
    backbone = find_backbone(model)
    prompt = getattr(model, PROMPT_ATTR, None)
    prompt_ids = {id(p) for p in prompt.parameters()} if prompt is not None else set()
    backbone_ids = {id(p) for p in backbone.parameters()}
    for param in model.parameters():
        param.requires_grad_(id(param) in prompt_ids or id(param) not in backbone_ids)


# ------------------------------------------------------------------ fingerprint, save, load


def backbone_fingerprint(model: nn.Module, embedding: torch.Tensor | None = None) -> dict[str, Any]:
    """Identity of the backbone a prompt belongs to: shape, plus a hash of the word embeddings.

    The embedding hash tells two checkpoints of the same architecture apart (e.g. bert-tiny
    before and after fine-tuning) without hashing every weight. ``embedding`` replaces the
    module's embedding matrix (a gathered copy when the module only holds FSDP/ZeRO-3 shards).
    """
    backbone = find_backbone(model)
    cfg = backbone.config
    if embedding is None:
        embedding = backbone.get_input_embeddings().weight
    emb = embedding.detach().to("cpu", torch.float32).contiguous()
    return {
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "vocab_size": emb.shape[0],
        "embedding_sha256": hashlib.sha256(emb.numpy().tobytes()).hexdigest()[:16],
    }


def save_prompt(
    path: str | Path, prompt: DeepPrompt, head_state: dict[str, torch.Tensor], meta: dict[str, Any],
    prompt_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write prompt + head weights to one safetensors file (atomically); ``meta`` must hold
    ``meta["backbone"] = backbone_fingerprint(model)`` and goes, as JSON, into the file's header.
    ``prompt_state`` replaces ``prompt.state_dict()`` (a gathered copy under FSDP/ZeRO-3)."""
    fingerprint = meta.get("backbone")
    if not isinstance(fingerprint, dict) or set(FINGERPRINT_KEYS) - set(fingerprint):
        raise VegaError("save_prompt: meta['backbone'] must be backbone_fingerprint(model)")
    prompt_state = prompt.state_dict() if prompt_state is None else prompt_state
    tensors = {f"prompt.{k}": v.detach().cpu().contiguous().clone() for k, v in prompt_state.items()}
    tensors |= {f"head.{k}": v.detach().cpu().contiguous().clone() for k, v in head_state.items()}
    header = {"format": FORMAT_VERSION, "prompt_config": prompt.config(), "meta": meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"vegalm_prompt": json.dumps(header)})


def read_prompt_meta(path: str | Path) -> dict[str, Any]:
    """The JSON header of a saved prompt (``format``, ``prompt_config``, ``meta``) without the weights."""
    path = Path(path)
    if not path.is_file():
        raise VegaError(f"{path}: no saved prompt there")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("vegalm_prompt")
        header = json.loads(raw) if raw else None
    except (SafetensorError, OSError, ValueError) as e:
        raise VegaError(f"{path}: not a readable saved prompt ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise VegaError(f"{path}: not a vegalm prompt file (format {FORMAT_VERSION})")
    return header


def load_prompt(
    path: str | Path, backbone_fingerprint: dict[str, Any] | None
) -> tuple[DeepPrompt, dict[str, torch.Tensor], dict[str, Any]]:
    """Load a saved prompt, its head state and meta; refuse it if it was trained on another backbone.

    ``backbone_fingerprint`` is that of the model the prompt is about to be attached to
    (``None`` skips the check, e.g. to compare prompts without a model).
    """
    header = read_prompt_meta(path)
    meta = header["meta"]
    saved = meta.get("backbone", {})
    if backbone_fingerprint is not None:
        diff = [k for k in FINGERPRINT_KEYS if saved.get(k) != backbone_fingerprint.get(k)]
        if diff:
            what = "; ".join(
                f"{k}: saved {saved.get(k)!r}, model {backbone_fingerprint.get(k)!r}" for k in diff
            )
            raise VegaError(f"{path}: this prompt was trained on another backbone ({what})")
    tensors = load_file(str(path))
    prompt = DeepPrompt(**header["prompt_config"])
    state = {k[len("prompt.") :]: v for k, v in tensors.items() if k.startswith("prompt.")}
    try:
        prompt.load_state_dict(state)
    except RuntimeError as e:
        raise VegaError(f"{path}: prompt weights do not match its config ({e})") from None
    head = {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
    return prompt, head, meta
