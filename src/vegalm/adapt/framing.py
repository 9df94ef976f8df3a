"""SuperGLUE task framings: typed examples -> encoded features -> padded batches.

Every task is reduced to one shape, a :class:`Feature` holding one or more token sequences
(one per choice for COPA and ReCoRD, one for the rest) plus optional token spans, so that a
single collate function and a single :class:`~vegalm.adapt.heads.TaskModel` serve all of
them. The framings themselves (how a task's fields become text pairs) live in
``vegalm.adapt.framings``; this module is the dispatch table and the batching.

Nothing here assumes BERT inputs: ``token_type_ids`` exist only when the tokenizer produces
them, and padding uses the caller's ``pad_token_id`` (1 for MPNet/RoBERTa).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vegalm.data.superglue.base import canonical_task
from vegalm.errors import VegaError

# The five ways a task is put to the model (VEGA.md §4).
FRAMINGS: dict[str, str] = {
    "boolq": "pair",
    "cb": "pair",
    "rte": "pair",
    "axb": "pair",
    "axg": "pair",
    "copa": "multiple_choice",
    "multirc": "binary_option",
    "record": "candidate_ranking",
    "wic": "span_pair",
    "wsc": "span_pair",
}

# Classes of the classifier tasks; 0 means "one score per choice" (the choices are the classes).
NUM_LABELS: dict[str, int] = {
    "boolq": 2,
    "cb": 3,
    "rte": 2,
    "axb": 2,
    "axg": 2,
    "copa": 0,
    "multirc": 2,
    "record": 0,
    "wic": 2,
    "wsc": 2,
}

# Score given to padding choices: finite (a KL or consistency term on the logits stays finite,
# also in fp16, whose range ends at 65504) yet far enough below any real score that softmax
# gives the padding choices no probability.
MASKED_SCORE = -1e4
IGNORE_INDEX = -100


@dataclass
class Feature:
    """One example, encoded. ``sequences[i]`` is choice i (a single entry for classifier tasks)."""

    key: Hashable
    sequences: list[dict[str, list[int]]]
    spans: list[list[tuple[int, int]]] | None  # per sequence: K token ranges [start, end)
    label: int | None

    @property
    def length(self) -> int:
        """Longest sequence, for length-grouped batching (a feature's cost grows with it)."""
        return max(len(s["input_ids"]) for s in self.sequences)

    @property
    def num_sequences(self) -> int:
        return len(self.sequences)


def framing_for(task: str) -> str:
    """``"pair" | "multiple_choice" | "binary_option" | "candidate_ranking" | "span_pair"``."""
    return FRAMINGS[canonical_task(task)]


def num_labels(task: str) -> int:
    """Classes of a classifier task; 0 for the tasks that score choices (COPA, ReCoRD)."""
    return NUM_LABELS[canonical_task(task)]


def head_task(task: str) -> str:
    """The task whose head serves ``task``: the diagnostics are predicted by the RTE model."""
    name = canonical_task(task)
    return "rte" if name in ("axb", "axg") else name


def encode(task: str, examples: Sequence[Any], tokenizer: Any, max_length: int = 256) -> list[Feature]:
    """Encode typed examples (``vegalm.data.superglue``) for ``task``; one Feature per example.

    ``tokenizer`` must be a fast (Rust) tokenizer: WiC and WSC locate their spans through
    ``offset_mapping``. Truncation never touches the question or query of BoolQ, MultiRC and
    ReCoRD (see ``vegalm.adapt.framings.text``).
    """
    from vegalm.adapt.framings import spans, text  # framings import Feature from here

    name = canonical_task(task)
    if max_length < 8:
        raise VegaError(f"max_length must be at least 8 tokens, got {max_length}")
    if not getattr(tokenizer, "is_fast", False):
        raise VegaError(
            f"{name}: a fast tokenizer is needed (offset mappings); got {type(tokenizer).__name__}"
        )
    encoders = {
        "boolq": text.encode_boolq,
        "cb": text.encode_nli,
        "rte": text.encode_nli,
        "axb": text.encode_nli,
        "axg": text.encode_nli,
        "copa": text.encode_copa,
        "multirc": text.encode_multirc,
        "record": text.encode_record,
        "wic": spans.encode_wic,
        "wsc": spans.encode_wsc,
    }
    return encoders[name](list(examples), tokenizer, max_length)


def model_inputs(encoding: dict[str, Any], tokenizer: Any, i: int | None = None) -> dict[str, list[int]]:
    """The model's inputs out of a tokenizer output (row ``i`` of a batched call).

    Keeps ``token_type_ids`` only if the tokenizer lists it in ``model_input_names``: MPNet's
    tokenizer does not, and the MPNet encoder has no type embeddings to feed.
    """
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    out = {}
    for name in names:
        if name in encoding:
            value = encoding[name] if i is None else encoding[name][i]
            out[name] = list(value)
    if "attention_mask" not in out:
        out["attention_mask"] = [1] * len(out["input_ids"])
    return out


def collate(features: Sequence[Feature], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Flatten the batch's sequences into ``[S, L]`` tensors, padded to the longest one.

    Returns input_ids, attention_mask, token_type_ids (only if the features carry them),
    seq_unit [S] (owning feature of each sequence), choice_mask [B, C], spans [S, K, 2] (span
    tasks only) and labels [B] (-100 where unknown). Sequences of feature b are contiguous and
    in choice order, so ``scores[choice_mask] = per_sequence_scores`` rebuilds [B, C].
    """
    if not features:
        raise VegaError("collate: empty batch")
    seqs = [s for f in features for s in f.sequences]
    if not seqs:
        raise VegaError("collate: the batch holds no sequences (a ReCoRD query without candidates?)")
    length = max(len(s["input_ids"]) for s in seqs)
    names = set(seqs[0])
    if any(set(s) != names for s in seqs):
        raise VegaError("collate: sequences disagree on their input names (mixed tokenizers?)")
    pad_values = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    batch: dict[str, torch.Tensor] = {}
    for name in sorted(names):
        pad = pad_values.get(name, 0)
        rows = [s[name] + [pad] * (length - len(s[name])) for s in seqs]
        batch[name] = torch.tensor(rows, dtype=torch.long)
    counts = [f.num_sequences for f in features]
    batch["seq_unit"] = torch.repeat_interleave(torch.arange(len(features)), torch.tensor(counts))
    width = max(counts)
    batch["choice_mask"] = torch.arange(width)[None, :] < torch.tensor(counts)[:, None]
    if features[0].spans is not None:
        if any(f.spans is None for f in features):
            raise VegaError("collate: some features have spans and some do not")
        batch["spans"] = torch.tensor([sp for f in features for sp in f.spans], dtype=torch.long)
    batch["labels"] = torch.tensor(
        [IGNORE_INDEX if f.label is None else f.label for f in features], dtype=torch.long
    )
    return batch
