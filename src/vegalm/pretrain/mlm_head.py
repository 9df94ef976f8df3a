"""An MLM model that computes vocabulary logits only where they are needed.

A stock ``AutoModelForMaskedLM`` forward projects EVERY position onto the vocabulary:
``[batch, length, vocab]`` logits (for MiniLM at batch 16 x 128: 2048 x 30522 floats, 250 MB,
and as many FLOPs as the whole encoder), then the loss throws away the ~85% that are not
targets. Here the encoder runs once, the hidden states of the target positions are gathered
(``hidden[mask]`` -> ``[N, H]``) and only those go through the head (transform + decoder).
The head modules of BERT (``cls``), RoBERTa/MPNet (``lm_head``), ALBERT (``predictions``) and
DeBERTa-v2 (``cls``) are position-wise, so applying them to ``[N, H]`` gives exactly the rows
of the full logits.

Everything goes through :meth:`SparseMLM.forward` (several modes, one entry point) so that a
DDP or FSDP wrapper around this module sees every use of the parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Rows per NLL chunk under CPU autocast: 256 x 30k bf16 logits (15 MB) stay in cache for the reduction.
BF16_CPU_CHUNK = 256
# Children of an *ForMaskedLM model that hold the whole position-wise head, in lookup order.
HEAD_ATTRS = ("cls", "lm_head", "predictions")


def find_head(mlm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The position-wise MLM head of ``mlm``: a callable ``[..., H] -> [..., V]``."""
    out = mlm.get_output_embeddings() if hasattr(mlm, "get_output_embeddings") else None
    for name in HEAD_ATTRS:
        head = getattr(mlm, name, None)
        if isinstance(head, nn.Module) and (out is None or any(m is out for m in head.modules())):
            return head
    # DistilBERT keeps its head as loose layers on the model.
    if all(hasattr(mlm, a) for a in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")):
        return lambda h: mlm.vocab_projector(mlm.vocab_layer_norm(mlm.activation(mlm.vocab_transform(h))))
    # Transform + decoder as two attributes: ModernBERT (head, decoder), ELECTRA's generator.
    for transform, decoder in (("head", "decoder"), ("generator_predictions", "generator_lm_head")):
        t, d = getattr(mlm, transform, None), getattr(mlm, decoder, None)
        if isinstance(t, nn.Module) and isinstance(d, nn.Module):
            return lambda h, t=t, d=d: d(t(h))
    raise TypeError(
        f"{type(mlm).__name__}: no position-wise MLM head found (looked for {', '.join(HEAD_ATTRS)}); "
        "vegalm's sparse MLM head supports BERT, RoBERTa, XLM-R, MPNet, ALBERT, DeBERTa-v2/v3, DistilBERT, "
        "ELECTRA (its generator) and ModernBERT"
    )


def _nll_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``logsumexp(logits) - logits[target]`` per row, accumulated in float32.

    Written so that a compiler can fuse it into one pass over ``logits`` (no float32 copy of a
    bf16 chunk, no log-softmax tensor): under ``torch.compile`` it is a single vectorised loop."""
    own = logits.gather(-1, targets[:, None])[:, 0].float()
    return torch.logsumexp(logits.float(), dim=-1) - own


def _eager_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # The fused cross-entropy kernel: one pass for log-sum-exp and gather (eager float32 path).
    return F.cross_entropy(logits.float(), targets, reduction="none")


_COMPILED: dict = {}


def nll_reducer(compiled: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The row reduction of :func:`nll_chunked`: eager (fused cross-entropy) or ``torch.compile``d.

    The compiled one reads a bf16 chunk once with float32 accumulation; eager bf16 would first
    write a float32 copy and a log-softmax tensor (the cliff seen on CPU). Compiling costs about
    20 s once per process (cached on disk by inductor afterwards); it falls back to eager, with a
    warning, where no C++ compiler is found."""
    if not compiled:
        return _eager_nll
    if "fn" not in _COMPILED:
        compiled = torch.compile(_nll_from_logits, dynamic=True)

        def reduce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            if _COMPILED.get("failed"):
                return _eager_nll(logits, targets)
            try:
                return compiled(logits, targets)
            except Exception as e:  # noqa: BLE001 - no compiler, unsupported backend: eager is exact too
                logging.getLogger(__name__).warning("torch.compile of the NLL reduction failed (%s: %s); "
                                                    "using the eager kernel", type(e).__name__, str(e)[:200])
                _COMPILED["failed"] = True
                return _eager_nll(logits, targets)

        _COMPILED["fn"] = reduce
    return _COMPILED["fn"]


def nll_chunked(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 4096,
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _eager_nll,
) -> torch.Tensor:
    """``-log softmax(head(hidden))[target]`` for each row of ``hidden [N, H]``, in chunks.

    Own-token NLL needs the full vocabulary at each scored position (for the normaliser), but
    never all at once: ``chunk`` rows at a time, logits reduced to one number each (log-sum-exp
    minus the target's logit, accumulated in float32 even when the head runs in bf16) and
    freed. Measured on a 2-core CPU (bench/results/pretrain_speed.md): float32 is fastest with
    large chunks (the decoder matrix is streamed fewer times), bf16 with ~256-row chunks whose
    logits stay in cache for the reduction.
    """
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for s in range(0, hidden.shape[0], chunk):
        out[s : s + chunk] = reduce(head(hidden[s : s + chunk]), targets[s : s + chunk])
    return out


class SparseMLM(nn.Module):
    """Wraps a ``*ForMaskedLM`` model; the wrapped model is saved as is (``.mlm``).

    Modes of :meth:`forward`:
    - ``positions`` (bool ``[B, L]``): logits ``[N, V]`` at those positions, row-major order
      (the order of ``input_ids[positions]``).
    - ``positions`` and ``targets``: own-token NLL ``[N]`` there (chunked full vocabulary).
    - ``return_hidden=True``: also the encoder output ``[B, L, H]``, which a later call can
      pass as ``hidden`` to reuse (the online variant scores, then picks positions).
    - no ``positions``: full logits ``[B, L, V]`` (only for checks and baselines).
    """

    def __init__(self, mlm: nn.Module, nll_chunk: int = 4096, compiled_nll: bool = False) -> None:
        super().__init__()
        self.mlm = mlm
        self.nll_chunk = nll_chunk
        self.compiled_nll = compiled_nll  # see nll_reducer (self-questioning of large corpora)
        # Not registered as a submodule: its parameters already live under ``mlm``, and a second
        # name for them would duplicate them in every state dict and checkpoint.
        object.__setattr__(self, "_head", find_head(mlm))

    @property
    def config(self):  # noqa: ANN201 - the wrapped model's config
        return self.mlm.config

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Only ids and mask: MPNet/RoBERTa take no token types, BERT defaults them to zeros.
        return self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if hidden is None:
            hidden = self.encode(input_ids, attention_mask)
        if positions is None:
            out = self._head(hidden)
        elif targets is None:
            out = self._head(hidden[positions])
        else:
            chunk = self.nll_chunk
            if torch.is_autocast_enabled(hidden.device.type) and hidden.device.type == "cpu":
                chunk = min(chunk, BF16_CPU_CHUNK)
            out = nll_chunked(self._head, hidden[positions], targets, chunk, nll_reducer(self.compiled_nll))
        return (out, hidden) if return_hidden else out
