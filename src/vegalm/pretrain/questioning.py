"""Self-questioning (VEGA.md §1.1): the starting model scores every token; NLL > τ is hard.

The starting model θ₀ runs in eval mode, without gradients, on each UNMASKED block and gives
every position its own-token NLL ``ℓ_i = -log p(x_i | x)``. Special tokens and padding are
never scored. Scores (``--score``):

- ``visible`` (the paper): one pass, the model sees the token it predicts;
- ``contextual`` (VEGA.md, beyond the paper): ``k`` passes, pass j masks the positions
  ``i ≡ j (mod k)`` and scores them, so every token is scored once while masked. Costs k
  forwards but only sparse logits (the masked positions) in each.

The visible score needs the full vocabulary at every scored position (for log-sum-exp), but
never as a ``[B, L, V]`` tensor: rows are reduced chunk by chunk (mlm_head.nll_chunked), in
bf16 autocast on GPU. Hard tokens are stored in a CSR index on disk (index.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vegalm.data.corpus import BlockCorpus
from vegalm.pretrain.index import IndexWriter
from vegalm.pretrain.mlm_head import SparseMLM

log = logging.getLogger(__name__)

SCORES = ("visible", "contextual")
FRESH_HEAD_FRACTION = 0.95  # above this, the head has not learnt to read its own token


@dataclass
class ScoreConfig:
    tau: float = 0.1
    score: str = "visible"
    k: int = 7
    batch_size: int = 64
    chunk_blocks: int = 1024  # blocks per durable chunk (progress is recorded after each)
    precision: str = "auto"  # auto | no | bf16 | fp16 (vegalm.precision)
    compile: str = "auto"  # auto | on | off: torch.compile the NLL reduction (auto: corpora >= COMPILE_MIN_TOKENS)


# Compiling the reduction costs ~20 s once; it pays from about a million scored tokens on CPU.
COMPILE_MIN_TOKENS = 1_000_000


def maskable_of(ids: torch.Tensor, special_ids: list[int]) -> torch.Tensor:
    return ~torch.isin(ids, torch.tensor(special_ids, device=ids.device))


# Under bf16 autocast the head's logits carry bf16 rounding: own-token NLLs moved by at most 9%
# of their value against float32 (BERT-tiny on wiki, same hidden states; tests/test_bf16.py). Rows
# within REFINE_REL of tau are scored again with the head in float32, so bf16 never flips a
# hard/easy decision that float32 head arithmetic would make on the same encoder output.
REFINE_REL = 0.15


def _own_nll(model: SparseMLM, inputs: torch.Tensor, ids: torch.Tensor, am: torch.Tensor, pos: torch.Tensor,
             tau: float | None) -> torch.Tensor:
    """NLL of the true ``ids`` at ``pos`` given ``inputs`` (``ids`` itself, or ``ids`` with ``pos``
    masked); under autocast, rows near ``tau`` are recomputed with the head in float32."""
    nll, hidden = model(input_ids=inputs, attention_mask=am, positions=pos, targets=ids[pos], return_hidden=True)
    nll = nll.float()
    if tau is None or not torch.is_autocast_enabled(ids.device.type):
        return nll
    near = (nll - tau).abs() <= REFINE_REL * torch.clamp(nll, min=tau) + 1e-4
    if near.any():
        rows = pos.nonzero()[near]  # (block, position) of each row to refine, row-major like nll
        sel = torch.zeros_like(pos)
        sel[rows[:, 0], rows[:, 1]] = True
        with torch.autocast(ids.device.type, enabled=False):
            nll[near] = model(hidden=hidden.float(), positions=sel, targets=ids[sel]).float()
    return nll


@torch.inference_mode()
def score_batch(model: SparseMLM, ids: torch.Tensor, special_ids: list[int], mask_id: int, pad_id: int,
                score: str = "visible", k: int = 7, tau: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Own-token NLL of every maskable position of ``ids [B, L]``: returns (maskable [B,L], nll [B,L]).

    Non-maskable entries of ``nll`` are 0 and must be ignored (use the mask). With ``tau`` and
    bf16 autocast, NLLs near ``tau`` are recomputed with the head in float32 (REFINE_REL).
    """
    am = (ids != pad_id).long()
    maskable = maskable_of(ids, special_ids) & am.bool()
    nll = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    if score == "visible":
        nll[maskable] = _own_nll(model, ids, ids, am, maskable, tau)
    elif score == "contextual":
        col = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        for j in range(k):
            pos = maskable & (col % k == j)
            if not pos.any():
                continue
            masked = ids.masked_fill(pos, mask_id)
            nll[pos] = _own_nll(model, masked, ids, am, pos, tau)
    else:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return maskable, nll


def _batches(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(start, stop, size):
        yield s, min(s + size, stop)


def run_questions(
    model: SparseMLM,
    corpus: BlockCorpus,
    out: str | Path,
    cfg: ScoreConfig,
    *,
    identity: dict[str, Any],
    fresh_head: bool,
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    force: bool = False,
    blocks: tuple[int, int] | None = None,
) -> dict[str, Any] | IndexWriter:
    """Score the whole corpus into the index at ``out`` (resuming a partial one); returns stats.

    ``blocks=(lo, hi)``: score only that range, as one rank's shard; the writer is returned
    unfinished, for :meth:`IndexWriter.append_index` to merge."""
    from tqdm.auto import tqdm

    device = device or torch.device("cpu")
    tok = corpus.tokenizer
    lo, hi = blocks or (0, len(corpus))
    params = {**identity, "corpus": corpus.fingerprint, "tau": cfg.tau, "score": cfg.score,
              "k": cfg.k if cfg.score == "contextual" else None} | ({"blocks": [lo, hi]} if blocks else {})
    writer = IndexWriter.open(out, n_blocks=hi - lo, block_size=corpus.block_size, params=params, force=force)
    if writer.complete:
        log.info("self-questioning index %s is complete: reusing it", out)
        return writer.stats()
    if writer.blocks_done:
        log.info("resuming self-questioning at block %d of %d", lo + writer.blocks_done, hi)
    model.eval().to(device)
    model.compiled_nll = cfg.compile == "on" or (
        cfg.compile == "auto" and (hi - lo - writer.blocks_done) * corpus.block_size >= COMPILE_MIN_TOKENS)
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else _null()
    bar = tqdm(total=hi - lo, initial=writer.blocks_done, unit="block", desc="questions", disable=not progress)
    for c0, c1 in _batches(lo + writer.blocks_done, hi, cfg.chunk_blocks):
        counts, scored, positions, nlls, all_nll = [], [], [], [], []
        for b0, b1 in _batches(c0, c1, cfg.batch_size):
            ids = torch.from_numpy(np.asarray(corpus.tokens[b0:b1], dtype=np.int64)).to(device)
            with amp:
                maskable, nll = score_batch(model, ids, tok["special_ids"], tok["mask_id"], tok["pad_id"],
                                            cfg.score, cfg.k, tau=cfg.tau)
            hard = maskable & (nll > cfg.tau)
            counts.append(hard.sum(1).cpu())
            scored.append(maskable.sum(1).cpu())
            rows, cols = hard.nonzero(as_tuple=True)  # row-major: grouped by block, positions ascending
            positions.append(cols.cpu())
            nlls.append(nll[rows, cols].cpu())
            all_nll.append(nll[maskable].cpu())
            bar.update(b1 - b0)
            bar.set_postfix(hard=f"{writer.hard_fraction(extra=(counts, scored)):.3f}", refresh=False)
        writer.append(torch.cat(counts).numpy(), torch.cat(scored).numpy(), torch.cat(positions).numpy(),
                      torch.cat(nlls).numpy(), torch.cat(all_nll).numpy())
    bar.close()
    if blocks is not None:
        return writer
    stats = writer.finish(fresh_head=fresh_head)
    _warn_if_fresh(stats, fresh_head)
    return stats


def _warn_if_fresh(stats: dict[str, Any], fresh_head: bool) -> None:
    frac = stats["hard_fraction"]
    if fresh_head or frac > FRESH_HEAD_FRACTION:
        why = "the model's MLM head was freshly initialised" if fresh_head else \
            f"{frac:.1%} of the tokens are hard at tau={stats['tau']}"
        log.warning(
            "\n" + "!" * 78 + "\n!! SELF-QUESTIONING IS NOT INFORMATIVE: %s.\n"
            "!! An untrained head gives its own visible token low probability, so nearly every token\n"
            "!! looks hard and SE would mask almost everything. Remedies (VEGA.md, caveats):\n"
            "!!   - train with a cap: `vegalm pretrain --method se --cap 0.15 ...` (hardest 15%% by NLL), or\n"
            "!!   - warm the head up first with `vegalm pretrain --method mlm`, then re-run self-questioning\n"
            "!!     with --model RUN/final, or use --score contextual.\n" + "!" * 78, why)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def pick_device(device: str | None = None, precision: str = "auto") -> tuple[torch.device, str]:
    """The device to score on and the resolved precision (vegalm.precision: bf16 where native)."""
    from vegalm.errors import VegaError
    from vegalm.precision import resolve_precision

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    resolved = resolve_precision(precision, dev.type)
    if resolved == "fp16" and dev.type != "cuda":
        raise VegaError("--mixed-precision fp16 needs a GPU; on CPU use bf16 or no")
    return dev, resolved


def probe_hard_fraction(model_name: str, corpus_path: str | Path, *, tau: float = 0.1, blocks: int = 64,
                        precision: str = "auto", batch_size: int = 16) -> float:
    """The visible-score hard fraction of ``model_name`` on the first ``blocks`` blocks of a corpus:
    a cheap check of whether self-questioning would be informative (no index written)."""
    from vegalm.backbones import load_mlm
    from vegalm.data.corpus import open_corpus
    from vegalm.precision import autocast_dtype

    corpus = open_corpus(corpus_path)
    tok = corpus.tokenizer
    dev, precision = pick_device("cpu" if not torch.cuda.is_available() else None, precision)
    model = SparseMLM(load_mlm(model_name)).eval().to(dev)
    dt = autocast_dtype(precision)
    amp = torch.autocast(dev.type, dtype=dt) if dt else _null()
    hard = scored = 0
    for b0, b1 in _batches(0, min(blocks, len(corpus)), batch_size):
        ids = torch.from_numpy(np.asarray(corpus.tokens[b0:b1], dtype=np.int64)).to(dev)
        with amp:
            maskable, nll = score_batch(model, ids, tok["special_ids"], tok["mask_id"], tok["pad_id"], tau=tau)
        hard += int((maskable & (nll > tau)).sum())
        scored += int(maskable.sum())
    return hard / max(scored, 1)


def self_question(model_name: str, corpus_path: str | Path, out: str | Path, cfg: ScoreConfig, *,
                  device: str | None = None, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """`vegalm pretrain questions`: load the starting model, score the corpus, write the index."""
    from vegalm.backbones import fresh_mlm_head, load_mlm, load_tokenizer, resolve_model_path
    from vegalm.data.corpus import open_corpus
    from vegalm.errors import VegaError

    if cfg.compile not in ("auto", "on", "off"):
        raise VegaError(f"--compile must be auto, on or off, not {cfg.compile!r}")
    if cfg.score not in SCORES:
        raise VegaError(f"--score must be one of {', '.join(SCORES)}, not {cfg.score!r}")
    if cfg.tau < 0 or cfg.k < 1 or cfg.batch_size < 1:
        raise VegaError("--tau must be >= 0, --k and --batch-size >= 1")
    corpus = open_corpus(corpus_path)
    corpus.check_tokenizer(load_tokenizer(model_name), model_name)
    mlm = load_mlm(model_name)
    corpus.check_ids(mlm.get_input_embeddings().num_embeddings, model_name)
    fresh = fresh_mlm_head(mlm)
    from vegalm.precision import autocast_dtype

    dev, precision = pick_device(device, cfg.precision)
    log.info("self-questioning on %s in %s", dev, "float32" if precision == "no" else f"{precision} autocast "
             f"(float32 head for NLLs within {REFINE_REL:.0%} of tau)")
    # The precision is part of the index's identity: a bf16 and a float32 index are not mixed on resume.
    identity = {"model": model_name, "model_path": resolve_model_path(model_name), "precision": precision}
    from vegalm.train.runs import process_state

    state = process_state()
    kw = dict(identity=identity, fresh_head=fresh, autocast_dtype=autocast_dtype(precision), force=force)
    if state.num_processes == 1:
        return run_questions(SparseMLM(mlm), corpus, out, cfg, device=dev, progress=progress, **kw)
    return _sharded(SparseMLM(mlm), corpus, Path(out), cfg, state, progress=progress, **kw)


def _sharded(model: SparseMLM, corpus, out: Path, cfg: ScoreConfig, state, *, progress: bool,
             **kw: Any) -> dict[str, Any]:
    """Several processes (``accelerate launch`` / torchrun): rank r scores the r-th contiguous range
    of blocks into ``OUT.shards/rank-r-of-W`` (each resumable), then rank 0 merges the shards in
    order into OUT, which is then byte-for-byte the index one process would write."""
    from vegalm.pretrain.index import QuestionIndex

    n, r, w = len(corpus), state.process_index, state.num_processes
    shards = out.with_name(out.name + ".shards")
    if not QuestionIndex.is_complete(out):
        device = state.device if state.device.type != "cpu" else torch.device("cpu")
        run_questions(model, corpus, shards / f"rank-{r:03d}-of-{w:03d}", cfg, device=device,
                      progress=progress and state.is_main_process, blocks=(n * r // w, n * (r + 1) // w), **kw)
    state.wait_for_everyone()
    if state.is_main_process and not QuestionIndex.is_complete(out):
        params = {k: v for k, v in json.loads((shards / f"rank-000-of-{w:03d}" / "meta.json").read_text()).items()
                  if k not in ("format", "n_blocks", "block_size", "complete", "blocks")}
        writer = IndexWriter.open(out, n_blocks=n, block_size=corpus.block_size, params=params, force=True)
        for i in range(w):
            writer.append_index(shards / f"rank-{i:03d}-of-{w:03d}")
        stats = writer.finish(fresh_head=kw["fresh_head"])
        shutil.rmtree(shards, ignore_errors=True)
        _warn_if_fresh(stats, kw["fresh_head"])
        log.info("merged %d shards into %s", w, out)
    state.wait_for_everyone()
    return json.loads((out / "stats.json").read_text())
