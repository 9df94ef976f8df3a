"""Which attention kernel a training run uses: ``auto`` picks the faster one for the device.

On CPU, PyTorch's SDPA has a fused (flash) kernel only for attention *without* dropout. A training
step has attention dropout, so SDPA falls back to its math path there, which does more work than
transformers' eager attention (an extra scaling pass, mask conversion): MiniLM-L6's MLM step is
1.09x (fp32) and 1.13x (bf16) faster with eager attention on the 2-core AMD EPYC of
``bench/results/step_profile.md``. On GPUs SDPA's fused kernels take dropout, so ``auto`` keeps
the model's own choice there (SDPA where the family supports it).

The kernel changes how attention is computed, not what: runs resume across kernels (the option
is not part of the resume check) and saved models do not record it (``config.json`` has no
attention implementation), so a model trained here loads with SDPA anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vegalm.errors import VegaError

if TYPE_CHECKING:  # torch is imported where a model is touched: the CLI and recipes import this module
    import torch

ATTENTION = ("auto", "sdpa", "eager")
ATTENTION_HELP = ("attention kernel for training. auto (default): eager on CPU (SDPA has no fused CPU kernel "
                  "with dropout, and its math path is slower), the model's own (SDPA) on GPU. Same results; "
                  "not recorded in saved models")


def resolve_attention(value: str, device_type: str) -> str | None:
    """The kernel to set for training on ``device_type`` ("cpu", "cuda", ...); None: keep the model's."""
    if value not in ATTENTION:
        raise VegaError(f"attention must be one of {', '.join(ATTENTION)}, not {value!r}")
    if value == "auto":
        return "eager" if device_type == "cpu" else None
    return value


def _pretrained_roots(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost transformers models inside ``model`` (itself, or those a wrapper holds)."""
    from transformers import PreTrainedModel

    roots: list[torch.nn.Module] = []
    inside: set[int] = set()
    for m in model.modules():
        if id(m) in inside or not isinstance(m, PreTrainedModel):
            continue
        roots.append(m)
        inside.update(id(x) for x in m.modules())
    return roots


def apply_attention(model: torch.nn.Module, value: str, device: torch.device | str) -> str | None:
    """Set the attention kernel of every transformers model in ``model`` for training on ``device``.

    Returns the kernel set (None when the models keep theirs). A family that cannot run the kernel
    asked for (``sdpa`` on MPNet or DeBERTa-v2, which compute attention by hand) is a clear error.
    """
    import torch

    kernel = resolve_attention(value, torch.device(device).type)
    if kernel is None:
        return None
    for m in _pretrained_roots(model):
        if m.config._attn_implementation == kernel:
            continue
        why = "it computes attention by hand (no kernel choice)"
        try:
            m.set_attn_implementation(kernel)
        except (ValueError, ImportError) as e:
            why = str(e).splitlines()[0]
        if m.config._attn_implementation != kernel:  # transformers only warns for hand-written attention
            if value == "auto":
                continue
            raise VegaError(f"{type(m).__name__} cannot use the {kernel!r} attention kernel: {why} "
                            "(use --attention auto)")
    return kernel
