"""Continued pretraining (mlm | se) as a recipe on the shared training engine (vegalm.train).

What this file adds to the engine: which blocks make a batch and how they are masked (the
collate function), what a step computes (the loss hook, vegalm.pretrain.evolution), and what
is saved (a plain ``*ForMaskedLM`` + tokenizer in RUN/final). Devices, DDP, bf16,
accumulation, checkpoints, resume and the NaN stop are the engine's.

Passes over the corpus. The engine shuffles a data set per (seed, epoch); we hand it the
corpus repeated ``copies`` times (item ``j`` = pass ``j // n`` over block ``j % n``) as ONE
engine epoch, so each item knows which pass it belongs to. A block's mask is drawn from a
generator seeded by (seed, pass, block id): dynamic masking (a new mask each pass, as
RoBERTa), and the same mask whatever the number of processes or the resume point. That is
what makes a 2-process run follow the 1-process loss curve and a resumed run end where an
uninterrupted one does.

Loss normalisation: each process returns ``sum over its targets * world / targets in the
global micro-batch``; DDP averages gradients over processes, so the gradient is that of the
mean over all targets of the global batch, as in one process.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vegalm.data.corpus import BlockCorpus, open_corpus
from vegalm.errors import VegaError
from vegalm.io import atomic_dir
from vegalm.pretrain.evolution import SMOOTHINGS, StepSums, masked_step, online_step
from vegalm.pretrain.index import QuestionIndex
from vegalm.pretrain.masking import MaskSpec, block_generator, hard_mask, random_mask
from vegalm.pretrain.mlm_head import SparseMLM
from vegalm.train import Engine, TrainConfig, make_accelerator, sub_state_dict
from vegalm.train.runs import attach_log, detach_log, prepare_run_dir

log = logging.getLogger("vegalm.pretrain")


@dataclass
class SEConfig:
    """The method's options (VEGA.md §1.2); the engine's are in TrainConfig."""

    method: str = "se"  # se | mlm
    model: str = "bert-tiny"
    corpus: str = ""
    questions: str | None = None  # the self-questioning index (se, unless online)
    masking: str = "hard"  # hard | random   (se only; mlm is always random)
    smoothing: str = "tls"  # tls | uniform | none   (mlm: none)
    alpha: float = 0.1
    tau: float | None = None  # se: filter the index at a larger tau; online: the threshold (0.1)
    cap: float | None = None  # keep the hardest tokens up to this fraction of a block
    top_up: float | None = None  # add random targets up to this fraction
    hard_80_10_10: bool = False
    mlm_ratio: float = 0.15  # random masking (mlm, fallback, --masking random)
    mlm_probs: tuple[float, float, float] = (0.8, 0.1, 0.1)  # mask / random token / unchanged (mlm)
    copy_ratio: float = 0.0  # mlm: extra unchanged tokens as targets (teaches a fresh head its visible token)
    head_only: bool = False  # train only the MLM head (encoder and tied embeddings frozen)
    online: bool = False
    dropout: float | None = None  # override the model's dropout (tests use 0 to compare runs)

    def validate(self) -> None:
        problems = []
        if self.method not in ("se", "mlm"):
            problems.append(f"--method must be se or mlm, not {self.method!r}")
        if self.masking not in ("hard", "random"):
            problems.append(f"--masking must be hard or random, not {self.masking!r}")
        if self.smoothing not in SMOOTHINGS:
            problems.append(f"--smoothing must be one of {', '.join(SMOOTHINGS)}")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"--alpha must be in [0, 1] (got {self.alpha})")
        for name in ("cap", "top_up"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                problems.append(f"--{name.replace('_', '-')} must be in (0, 1] (got {v})")
        probs = tuple(self.mlm_probs)
        if len(probs) != 3 or any(x < 0 for x in probs) or abs(sum(probs) - 1.0) > 1e-6:
            problems.append(f"--mlm-probs must be three non-negative shares summing to 1 (got {list(probs)})")
        if not 0.0 <= self.copy_ratio < 1.0:
            problems.append(f"--copy-targets must be in [0, 1) (got {self.copy_ratio})")
        if self.method != "mlm" and (self.copy_ratio or self.head_only or probs != (0.8, 0.1, 0.1)):
            problems.append("--copy-targets, --head-only and --mlm-probs are MLM warm-up options (--method mlm)")
        if not 0.0 < self.mlm_ratio <= 1.0:
            problems.append(f"--mlm-ratio must be in (0, 1] (got {self.mlm_ratio})")
        needs_index = self.method == "se" and self.masking == "hard" and not self.online
        if needs_index and not self.questions:
            problems.append("--method se needs --questions INDEX (from `vegalm pretrain questions`), or --online")
        if self.method == "mlm" and (self.online or self.questions):
            problems.append("--method mlm takes no --questions/--online (random masking)")
        if self.online and self.masking != "hard":
            problems.append("--online picks hard tokens: it cannot be combined with --masking random")
        if problems:
            raise VegaError("bad pretraining options: " + "; ".join(problems))

    @property
    def effective_smoothing(self) -> str:
        return "none" if self.method == "mlm" else self.smoothing


class Passes:
    """The corpus repeated ``copies`` times: item j is (pass j // n, block j % n)."""

    def __init__(self, n_blocks: int, copies: int) -> None:
        self.n, self.copies = n_blocks, copies

    def __len__(self) -> int:
        return self.n * self.copies

    def __getitem__(self, j: int) -> tuple[int, int]:
        if not 0 <= j < len(self):
            raise IndexError(j)
        return divmod(j, self.n)


@dataclass
class Collator:
    """Blocks → a batch: unmasked ids, the model input, the targets (drawn per block)."""

    corpus: BlockCorpus
    spec: MaskSpec
    se: SEConfig
    seed: int
    index: QuestionIndex | None = None
    _pad: int = field(init=False)

    def __post_init__(self) -> None:
        self._pad = int(self.corpus.tokenizer["pad_id"])

    def __call__(self, features: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        copies = torch.tensor([c for c, _ in features])
        block_ids = torch.tensor([b for _, b in features])
        ids = torch.from_numpy(np.stack([np.asarray(self.corpus.tokens[b], dtype=np.int64) for _, b in features]))
        am = (ids != self._pad).long()
        batch = {"input_ids": ids, "attention_mask": am, "block_ids": block_ids, "copies": copies,
                 "n_maskable": (self.spec.maskable(ids) & am.bool()).sum(1)}
        if self.se.online:
            return batch  # masks come from the step's own reference pass
        masked, targets, kinds = [], [], []
        for row, (c, b) in zip(ids, features):
            g = block_generator(self.seed, c, b)
            if self.se.method == "mlm" or self.se.masking == "random":
                m = random_mask(row, self.spec, ratio=self.se.mlm_ratio, generator=g,
                                probs=tuple(self.se.mlm_probs), copy_ratio=self.se.copy_ratio)
            else:
                pos, nll = self.index.hard(b, self.se.tau)
                m = hard_mask(row, torch.from_numpy(pos), self.spec, nll=torch.from_numpy(nll), cap=self.se.cap,
                              top_up=self.se.top_up, hard_80_10_10=self.se.hard_80_10_10,
                              fallback_ratio=self.se.mlm_ratio, generator=g)
            masked.append(m.input_ids)
            targets.append(m.mask)
            kinds.append(m.kind)
        batch.update(masked_ids=torch.stack(masked), target_mask=torch.stack(targets), kind=torch.tensor(kinds))
        return batch


class StepHook:
    """The engine's loss hook: one micro-batch → (loss to backpropagate, global logs)."""

    def __init__(self, se: SEConfig, spec: MaskSpec, seed: int, block_size: int) -> None:
        self.se, self.spec, self.seed, self.block_size = se, spec, seed, block_size
        self.accelerator = None  # set once the engine exists
        self._t = None

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        se, acc = self.se, self.accelerator
        if se.online:
            opts = {"cap": se.cap, "top_up": se.top_up, "hard_80_10_10": se.hard_80_10_10, "fallback_ratio": se.mlm_ratio}
            s: StepSums = online_step(model, batch, self.spec, alpha=se.alpha, smoothing=se.effective_smoothing,
                                      tau=se.tau if se.tau is not None else 0.1, seed=self.seed, mask_options=opts)
        else:
            s = masked_step(model, batch, alpha=se.alpha, smoothing=se.effective_smoothing)
        n_blocks = torch.tensor(batch["input_ids"].shape[0], device=s.loss.device)
        local = torch.stack([s.n_targets, s.nll, s.correct, s.n_maskable, s.n_fallback, s.loss.detach(), n_blocks]).float()
        g = acc.reduce(local, reduction="sum") if acc is not None and acc.num_processes > 1 else local
        world = acc.num_processes if acc is not None else 1
        n_targets = g[0].clamp(min=1.0)
        loss = s.loss * world / n_targets
        now = time.perf_counter()
        logs = {"nll": float(g[1] / n_targets), "acc": float(g[2] / n_targets),
                "mask_ratio": float(g[0] / g[3].clamp(min=1.0)), "fallback": float(g[4] / g[6])}
        if self.se.effective_smoothing != "none":
            logs["tls_loss" if self.se.effective_smoothing == "tls" else "ls_loss"] = float(g[5] / n_targets)
        if self._t is not None:
            logs["tokens_per_s"] = float(g[6]) * self.block_size / max(now - self._t, 1e-9)
        self._t = now
        return loss, logs


def mask_spec(corpus: BlockCorpus) -> MaskSpec:
    t = corpus.tokenizer
    return MaskSpec(mask_id=t["mask_id"], vocab_size=t["vocab_size"], special_ids=tuple(t["special_ids"]))


def save_mlm(tokenizer: Any, extra: dict[str, Any], source: str | None = None):  # noqa: ANN201
    """The engine's save hook: a plain *ForMaskedLM folder that ``from_pretrained`` loads, keeping
    the starting checkpoint ``source``'s pooler and sentence-transformers files (vegalm.carry)."""
    from vegalm.carry import carry_sentence_transformers, checkpoint_pooler, with_pooler

    pooler = checkpoint_pooler(source) if source else {}

    def save(unwrapped: torch.nn.Module, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        # state_dict: the engine's gathered weights under FSDP/ZeRO-3 (the module holds shards).
        mlm = unwrapped.mlm if isinstance(unwrapped, SparseMLM) else unwrapped
        if isinstance(unwrapped, SparseMLM):
            state_dict = sub_state_dict(state_dict, "mlm.")
        # After training the head is no longer fresh; the flag must not travel with the weights.
        for holder in (mlm, mlm.config):
            if hasattr(holder, "vegalm_fresh_mlm_head"):
                delattr(holder, "vegalm_fresh_mlm_head")
        mlm.save_pretrained(directory, state_dict=with_pooler(mlm, state_dict, pooler))
        tokenizer.save_pretrained(directory)
        if source:
            carry_sentence_transformers(source, directory, "continued-pretrained (masked LM)")
        import json

        (directory / "vegalm_pretrain.json").write_text(json.dumps(extra, indent=2) + "\n", encoding="utf-8")

    return save


def _link_or_copy(src: Path, dst: Path) -> None:
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)  # no second copy of the weights on disk
        except OSError:
            shutil.copy2(a, b)

    with atomic_dir(dst) as tmp:  # subfolders too (a sentence-transformers model's 1_Pooling/)
        shutil.copytree(src, tmp, copy_function=link, dirs_exist_ok=True)


def pretrain(se: SEConfig, train: TrainConfig, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) continued pretraining; returns a summary. RUN/final holds the model."""
    from vegalm.backbones import fresh_mlm_head, load_mlm, load_tokenizer

    se.validate()
    out = Path(out)
    corpus = open_corpus(se.corpus)
    index = None
    if se.method == "se" and se.masking == "hard" and not se.online:
        index = QuestionIndex(se.questions)
        _check_index(index, corpus, se)
    config = {"pretrain": dataclasses.asdict(se), "train": train.to_dict(),
              "corpus_fingerprint": corpus.fingerprint}
    if se.dropout is not None and not 0 <= se.dropout < 1:
        raise VegaError(f"--dropout must be in [0, 1), not {se.dropout}")
    # The model, its tokenizer and the corpus's block length are checked before the run directory
    # is touched: a model that fails to load leaves no config.yaml or train.log behind.
    from vegalm.backbones import check_lengths

    check_lengths(se.model, max_length=corpus.block_size, flag="the corpus's block size")
    tokenizer = load_tokenizer(se.model)
    corpus.check_tokenizer(tokenizer, se.model)
    kw = {}
    if se.dropout is not None:
        kw = {"hidden_dropout_prob": se.dropout, "attention_probs_dropout_prob": se.dropout}
    mlm = load_mlm(se.model, **kw)
    corpus.check_ids(mlm.get_input_embeddings().num_embeddings, se.model)  # before --out is touched
    # Every process calls these: they check on all ranks and write from the main one (vegalm.train.runs).
    prepare_run_dir(out, config, overwrite=overwrite)
    acc = make_accelerator(train, out)
    handler = attach_log(out)
    try:
        if index is not None and acc.is_main_process:
            _report_index(index, se)
        if fresh_mlm_head(mlm) and se.method == "se" and se.online and se.cap is None:
            log.warning("%s has a fresh MLM head: online self-questioning will mark nearly every token hard; "
                        "use --cap (e.g. 0.15) or warm up with --method mlm first", se.model)
        if se.head_only:
            freeze_all_but_head(mlm)
        model = SparseMLM(mlm)
        global_batch = train.batch_size * train.grad_accum * acc.num_processes
        if train.max_steps:
            copies = max(1, math.ceil(train.max_steps * global_batch / len(corpus)))
            engine_cfg = train
        else:
            copies = max(1, math.ceil(train.epochs))
            engine_cfg = dataclasses.replace(train, epochs=train.epochs / copies)
        data = Passes(len(corpus), copies)
        spec = mask_spec(corpus)
        hook = StepHook(se, spec, train.seed, corpus.block_size)
        summary = {"method": se.method, "model": se.model, "corpus": str(corpus.path), "n_blocks": len(corpus),
                   "block_size": corpus.block_size, "passes": copies, "config": config}
        engine = Engine(engine_cfg, model, data, collate_fn=Collator(corpus, spec, se, train.seed, index),
                        loss_fn=hook, out_dir=out, lengths=None,
                        save_model_fn=save_mlm(tokenizer, summary, se.model), accelerator=acc)
        hook.accelerator = engine.accelerator
        result = engine.train()
        if engine.accelerator.is_main_process and (out / "best").is_dir():
            _link_or_copy(out / "best", out / "final")
        engine.accelerator.wait_for_everyone()
        summary.update(global_step=result.global_step, final=str(out / "final"))
        if engine.accelerator.is_main_process:
            log.info("pretraining done: %d steps; model in %s", result.global_step, out / "final")
        return summary
    finally:
        detach_log(handler)


def freeze_all_but_head(mlm: torch.nn.Module) -> int:
    """Freeze the encoder (and the input embeddings a tied decoder shares); returns trainable params.

    A fresh MLM head on a trained encoder (MiniLM, sentence encoders) learns to read the hidden
    states much faster alone, at a learning rate the encoder would not survive."""
    from vegalm.pretrain.mlm_head import find_head

    head = find_head(mlm)
    if not isinstance(head, torch.nn.Module):
        raise VegaError(f"{type(mlm).__name__}: --head-only needs the MLM head as one module")
    keep = {id(p) for p in head.parameters()} - {id(p) for p in mlm.get_input_embeddings().parameters()}
    n = 0
    for p in mlm.parameters():
        p.requires_grad_(id(p) in keep)
        n += p.numel() if id(p) in keep else 0
    log.info("--head-only: training %d parameters of the MLM head; encoder and embeddings frozen", n)
    return n


def _check_index(index: QuestionIndex, corpus: BlockCorpus, se: SEConfig) -> None:
    if index.meta.get("corpus") != corpus.fingerprint or len(index) != len(corpus):
        raise VegaError(f"{index.path} was scored on another corpus than {corpus.path}: "
                        "self-questioning and training must use the same blocks")
    if se.tau is not None and se.tau < index.tau:
        raise VegaError(f"--tau {se.tau} is below the index's tau {index.tau}: the index only stores tokens "
                        f"with NLL > {index.tau}; re-run `vegalm pretrain questions --tau {se.tau}`")


def _report_index(index: QuestionIndex, se: SEConfig) -> None:
    from vegalm.backbones import resolve_model_path

    if index.meta.get("model_path", resolve_model_path(se.model)) != resolve_model_path(se.model):
        log.warning("the index was scored by %s; SE trains %s (VEGA.md: self-questioning uses the starting model)",
                    index.meta.get("model"), se.model)
    stats = index.stats()
    if stats.get("uninformative") and se.cap is None:
        log.warning("!! %s: %.1f%% of tokens are hard (fresh or untrained MLM head): without --cap, SE masks nearly "
                    "every token of every block. Pass --cap 0.15 (hardest 15%%) or warm up with --method mlm.",
                    index.path, 100 * stats["hard_fraction"])
    else:
        log.info("index %s: %.1f%% of tokens hard at tau=%s; %d blocks without hard tokens (random fallback)",
                 index.path, 100 * stats["hard_fraction"], se.tau or index.tau, stats["blocks_without_hard_tokens"])


