"""Self-attention that also attends to a deep prompt's per-layer key/value prefix, for every encoder
family transformers 5 ships as a masked LM.

The prefix is P extra keys and values per head, prepended to the keys/values computed from the
tokens; the attention mask gets P "attend" columns. The prefix takes no position: real tokens
keep their positions and rotary/relative encodings exactly as without a prompt, and the prefix
columns get no relative-position bias (MPNet, DeBERTa-v2) and no rotary rotation (ModernBERT).

How each family is reached (the class of each self-attention module is swapped for a subclass, so
``state_dict`` keys, deep copies and pickles are unchanged):

- **Interface families** (BERT/MiniLM, RoBERTa, XLM-R, ELECTRA, DistilBERT, ALBERT, ModernBERT):
  their ``forward`` projects q/k/v and calls ``ALL_ATTENTION_FUNCTIONS.get_interface(...)``. The
  subclass runs the original ``forward`` while that lookup returns the same kernel (sdpa, eager,
  flash) wrapped to prepend the prefix for this module, so projections, rotary embeddings and
  post-processing stay the library's own code.
- **MPNet** and **DeBERTa-v2/v3** compute attention by hand with a relative-position bias: their
  subclasses re-implement the forward with the prefix (the bias padded with zeros for it).

ALBERT shares one attention module across layers; each call takes the next layer's prefix (a
counter reset at every forward of the backbone).
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from vegalm.errors import VegaError

# (transformers model module, attention class) whose forward goes through ALL_ATTENTION_FUNCTIONS
INTERFACE_FAMILIES = (
    ("bert", "BertSelfAttention"),
    ("roberta", "RobertaSelfAttention"),
    ("xlm_roberta", "XLMRobertaSelfAttention"),
    ("electra", "ElectraSelfAttention"),
    ("distilbert", "DistilBertSelfAttention"),
    ("albert", "AlbertAttention"),
    ("modernbert", "ModernBertAttention"),
)


def extend_mask(mask: torch.Tensor | None, p: int) -> torch.Tensor | None:
    """Prepend P "attend" entries on the key axis, in whatever form the mask comes.

    transformers 5.x gives self-attention ``None`` (no padding), a bool mask (sdpa: True =
    attend), an additive float mask (eager: 0 = attend), or a 2D 0/1 padding mask (flash).
    """
    if mask is None or p == 0:
        return mask
    if not isinstance(mask, torch.Tensor):
        raise VegaError(f"deep prompts do not support the attention mask type {type(mask).__name__}")
    if mask.dtype == torch.bool:
        keep = torch.ones((), dtype=torch.bool, device=mask.device)
    elif mask.is_floating_point() and mask.dim() == 4:
        keep = torch.zeros((), dtype=mask.dtype, device=mask.device)
    else:
        keep = torch.ones((), dtype=mask.dtype, device=mask.device)
    return torch.cat([keep.expand(*mask.shape[:-1], p), mask], dim=-1)


def prefixed(k: torch.Tensor, v: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``k, v [B, H, L, D]`` -> ``[B, H, P + L, D]`` with the prefixes ``[H, P, D]`` in front."""
    b = k.size(0)
    pk = pk.to(k.dtype).unsqueeze(0).expand(b, -1, -1, -1)
    pv = pv.to(v.dtype).unsqueeze(0).expand(b, -1, -1, -1)
    return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)


class PrefixMixin:
    """What every prefixed attention holds: ``_vegalm_prefix = (prompt, layer indices it serves)``."""

    _vegalm_prefix: tuple[Any, list[int]] | None = None
    _vegalm_calls: int = 0

    def _vegalm_next(self) -> tuple[Any, int] | None:
        """(prompt, layer index) for this call, or None when no (or an empty) prompt is attached."""
        if self._vegalm_prefix is None or self._vegalm_prefix[0].P == 0:
            return None
        prompt, indices = self._vegalm_prefix
        index = indices[self._vegalm_calls % len(indices)]
        self._vegalm_calls += 1
        return prompt, index


@contextlib.contextmanager
def _interface_with_prefix(module: nn.Module, pk: torch.Tensor, pv: torch.Tensor) -> Iterator[None]:
    registry = ALL_ATTENTION_FUNCTIONS
    lookup = type(registry).get_interface

    def get_interface(name: str, default: Any) -> Any:
        kernel = lookup(registry, name, default)

        def attend(mod, q, k, v, mask, *args, **kwargs):  # noqa: ANN001, ANN202 - the kernels' signature
            if mod is module:
                k, v = prefixed(k, v, pk, pv)
                mask = extend_mask(mask, pk.size(1))
            return kernel(mod, q, k, v, mask, *args, **kwargs)

        return attend

    registry.get_interface = get_interface  # type: ignore[method-assign]
    try:
        yield
    finally:
        del registry.get_interface  # the class's method again


class InterfacePrefix(PrefixMixin):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        nxt = self._vegalm_next()
        if nxt is None:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            raise VegaError("deep prompts are for encoder-only use: a decoder cache is not supported")
        pk, pv = nxt[0].layer(nxt[1])
        with _interface_with_prefix(self, pk, pv):  # type: ignore[arg-type]
            return super().forward(*args, **kwargs)  # type: ignore[misc]


def _mpnet_class() -> type:
    from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

    class PrefixMPNetSelfAttention(PrefixMixin, MPNetSelfAttention):
        """MPNetSelfAttention with the prefix; the prefix columns get no relative-position bias."""

        def forward(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False,
                    **kwargs):  # noqa: ANN001, ANN201
            nxt = self._vegalm_next()
            if nxt is None:
                return super().forward(hidden_states, attention_mask, position_bias, output_attentions, **kwargs)
            pk, pv = nxt[0].layer(nxt[1])
            p = pk.size(1)
            shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
            q = self.q(hidden_states).view(shape).transpose(1, 2)
            k, v = prefixed(self.k(hidden_states).view(shape).transpose(1, 2),
                            self.v(hidden_states).view(shape).transpose(1, 2), pk, pv)
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
            if position_bias is not None:
                scores = scores + nn.functional.pad(position_bias, (p, 0))  # zero bias towards the prefix
            mask = extend_mask(attention_mask, p)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
                    else scores + mask
            probs = self.dropout(nn.functional.softmax(scores, dim=-1))
            c = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            o = self.o(c.view(*c.shape[:-2], self.all_head_size))
            return (o, probs) if output_attentions else (o,)

    return PrefixMPNetSelfAttention


def _deberta_class() -> type:
    from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention, scaled_size_sqrt

    class PrefixDisentangledSelfAttention(PrefixMixin, DisentangledSelfAttention):
        """DeBERTa-v2/v3 disentangled attention with the prefix: content scores towards the prefix,
        no content-to-position or position-to-content term for it (it has no position)."""

        def forward(self, hidden_states, attention_mask, output_attentions=False, query_states=None,
                    relative_pos=None, rel_embeddings=None):  # noqa: ANN001, ANN201
            nxt = self._vegalm_next()
            if nxt is None:
                return super().forward(hidden_states, attention_mask, output_attentions, query_states,
                                       relative_pos, rel_embeddings)
            pk, pv = nxt[0].layer(nxt[1])  # [H, P, D]
            h, p = self.num_attention_heads, pk.size(1)
            q_in = hidden_states if query_states is None else query_states
            q = self.transpose_for_scores(self.query_proj(q_in), h)  # [B*H, L, D]
            k = self.transpose_for_scores(self.key_proj(hidden_states), h)
            v = self.transpose_for_scores(self.value_proj(hidden_states), h)
            scale = scaled_size_sqrt(q, 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type))
            scores = torch.bmm(q, k.transpose(-1, -2) / scale.to(dtype=q.dtype))
            if self.relative_attention:
                scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
                scores = scores + self.disentangled_attention_bias(q, k, relative_pos,
                                                                   self.pos_dropout(rel_embeddings), scale_factor)
            b = hidden_states.size(0)
            pk = pk.to(k.dtype).unsqueeze(0).expand(b, -1, -1, -1).reshape(b * h, p, -1)
            pv = pv.to(v.dtype).unsqueeze(0).expand(b, -1, -1, -1).reshape(b * h, p, -1)
            scores = torch.cat([torch.bmm(q, pk.transpose(-1, -2) / scale.to(dtype=q.dtype)), scores], dim=-1)
            scores = scores.view(-1, h, scores.size(-2), scores.size(-1))
            mask = extend_mask(attention_mask.bool(), p)
            scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min)
            probs = self.dropout(nn.functional.softmax(scores, dim=-1))
            ctx = torch.bmm(probs.view(-1, probs.size(-2), probs.size(-1)), torch.cat([pv, v], dim=1))
            ctx = ctx.view(-1, h, ctx.size(-2), ctx.size(-1)).permute(0, 2, 1, 3).contiguous()
            ctx = ctx.view(*ctx.size()[:-2], -1)
            return (ctx, probs) if output_attentions else (ctx, None)

    return PrefixDisentangledSelfAttention


def _build_registry() -> dict[type, type]:
    out: dict[type, type] = {}
    for module, name in INTERFACE_FAMILIES:
        try:
            cls = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), name)
        except (ImportError, AttributeError):  # an older/newer transformers without this family
            continue
        sub = type(f"Prefix{name}", (InterfacePrefix, cls), {"__module__": __name__, "__qualname__": f"Prefix{name}"})
        globals()[sub.__name__] = sub  # importable by name: modules with a swapped class stay picklable
        out[cls] = sub
    for make in (_mpnet_class, _deberta_class):
        sub = make()
        sub.__module__, sub.__qualname__ = __name__, sub.__name__
        globals()[sub.__name__] = sub
        out[sub.__mro__[2]] = sub
    return out


PREFIX_CLASSES: dict[type, type] = _build_registry()  # original attention class -> prefixed subclass
ORIGINAL: dict[type, type] = {v: k for k, v in PREFIX_CLASSES.items()}


def supported() -> str:
    return ", ".join(sorted(c.__name__ for c in PREFIX_CLASSES))
