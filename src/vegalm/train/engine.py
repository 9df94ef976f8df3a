"""The training loop shared by fine-tuning and pretraining, on Accelerate.

Read it top to bottom like nanoGPT's train.py: build the optimizer and schedule, resume if a
checkpoint exists, then loop over optimizer steps, each made of ``grad_accum`` micro-batches.
What a step computes is the caller's business (the ``loss_fn`` hook); everything around it
(devices, mixed precision, accumulation, clipping, schedule, evaluation, best model, early
stopping, checkpoints, logs) lives here once.

Accelerate decides where the code runs (CPU, one GPU, several GPUs or nodes through
``accelerate launch``): the same script, configured from outside. We deliberately do not hand
our DataLoader to ``accelerator.prepare``: batches come from :mod:`vegalm.train.sampling`, a pure
function of (seed, epoch), and are sharded here, so the position in an epoch is two integers
and a resumed run replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, send_to_device, set_seed
from tqdm.auto import tqdm

from vegalm.errors import VegaError
from vegalm.io import atomic_dir, recover_dir
from vegalm.kernels import apply_attention
from vegalm.train import checkpoint as ckpt
from vegalm.train.config import TrainConfig
from vegalm.train.optim import build_optimizer, build_scheduler
from vegalm.train.runs import append_train_metrics, process_state, truncate_train_metrics, write_metrics
from vegalm.train.sampling import epoch_batches, shard
from vegalm.train.saving import accepts_state_dict, save_state_dict, shards_parameters

log = logging.getLogger("vegalm.train")

LossFn = Callable[[torch.nn.Module, dict], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]
# save_model_fn(unwrapped_model, directory[, state_dict=...]): see Engine._save_best.
SaveFn = Callable[..., None]


class TrainingDiverged(VegaError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainResult:
    global_step: int
    best_metric: float | None
    best_step: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time of this process's loop, evaluations and checkpoints included
    examples_seen: int = 0  # training examples processed by this process's loop (all devices)

    @property
    def examples_per_s(self) -> float:
        return self.examples_seen / self.train_seconds if self.train_seconds else 0.0


def make_accelerator(cfg: TrainConfig, out_dir: Path) -> Accelerator:
    """One Accelerator per run. Accelerate keeps its state in a process-wide singleton; in a
    single process (tests, ``--seeds``) we reset it when a run asks for another precision."""
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != cfg.mixed_precision and process_state().num_processes == 1:
        AcceleratorState._reset_state()
    for name in ("accelerate.accelerator", "accelerate.checkpointing"):
        # Accelerate logs every file of every checkpoint at INFO; we log one line per checkpoint.
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {}
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401  (only checking that the tracker can work)

            kwargs = {"log_with": "tensorboard", "project_dir": str(out_dir)}
        except ImportError:
            log.warning("tensorboard is not installed: training curves go to train.log only")
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, **kwargs)
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # No loss scaler on CPU: fp16 gradients would silently underflow.
        raise VegaError("--mixed-precision fp16 needs a GPU; on CPU use bf16 or no")
    return accelerator


def describe_distributed(acc: Accelerator) -> str:
    """What actually runs, e.g. "DEEPSPEED ZeRO-3", "FSDP", "MULTI_CPU" (DDP on CPU processes)."""
    if acc.distributed_type == DistributedType.NO:
        return "one process"
    name = acc.distributed_type.value
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if acc.distributed_type == DistributedType.DEEPSPEED and plugin is not None:
        name += f" ZeRO-{plugin.zero_stage}"
    return name


def _configure_deepspeed(acc: Accelerator, cfg: TrainConfig) -> None:
    """DeepSpeed sizes its engine from its config; the engine makes its own batches (no DataLoader
    is prepared), so the micro-batch and accumulation are told to it here."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if acc.distributed_type != DistributedType.DEEPSPEED or plugin is None:
        return
    ds = plugin.deepspeed_config
    if ds.get("train_micro_batch_size_per_gpu") in (None, "auto"):
        ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    if ds.get("gradient_accumulation_steps") in (None, "auto"):
        ds["gradient_accumulation_steps"] = cfg.grad_accum
    if ds.get("train_batch_size") == "auto":
        ds.pop("train_batch_size")


def _warn_if_not_sharded(acc: Accelerator) -> None:
    """Accelerate (1.16) only enables FSDP / DeepSpeed for accelerator devices: CPU processes
    (ACCELERATE_USE_CPU) silently become plain DDP. Say so, rather than let a user believe the
    model is sharded."""
    wanted = [n for n, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
              if os.environ.get(env, "false").lower() == "true"]
    if wanted and acc.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        log.warning("%s was requested, but Accelerate runs these processes as %s: parameters, gradients and "
                    "optimizer state are NOT sharded (Accelerate enables %s only for accelerator devices; for "
                    "DeepSpeed on CPU, launch without ACCELERATE_USE_CPU and with DS_ACCELERATOR=cpu)",
                    wanted[0], acc.distributed_type.value, wanted[0])


def _maybe_test_kill(step: int) -> None:
    # Test hook: simulate a crash right after an optimizer step (tests/test_train_resume.py).
    rank = os.environ.get("VEGALM_TEST_KILL_RANK")  # only this rank dies (multi-process tests)
    if os.environ.get("VEGALM_TEST_KILL_AT_STEP") == str(step) and rank in (None, os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)


class Engine:
    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        train_data: Sequence[Any],
        *,
        collate_fn: Callable[[list[Any]], dict],
        loss_fn: LossFn,
        out_dir: str | Path,
        lengths: Sequence[int] | None = None,
        eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        save_model_fn: SaveFn | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        if len(train_data) == 0:
            raise VegaError("no training examples")
        self.cfg, self.train_data, self.collate_fn, self.loss_fn = cfg, train_data, collate_fn, loss_fn
        self.lengths, self.eval_fn = lengths, eval_fn
        self.save_model_fn = save_model_fn or save_state_dict
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.accelerator = accelerator or make_accelerator(cfg, self.out_dir)
        acc = self.accelerator

        # Steps: micro-batches per process per epoch -> optimizer steps per epoch -> total.
        self.batches_per_epoch = len(self._epoch_batches(0))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.steps_per_epoch)

        # before prepare(): DDP/FSDP wrappers hide the transformers model
        self.attention = apply_attention(model, cfg.attention, acc.device) or "the model's own"
        optimizer = build_optimizer(model, cfg)
        _configure_deepspeed(acc, cfg)
        # The scheduler is NOT prepared: Accelerate would step it once per process per call,
        # assuming a schedule counted in un-sharded batches. Ours counts optimizer steps.
        self.scheduler = build_scheduler(optimizer, cfg, self.total_steps)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        acc.register_for_checkpointing(self.scheduler)

        # Under FSDP / DeepSpeed ZeRO-3 the unwrapped module holds parameter shards: best/ must be
        # written from a gathered full state dict, which only a save hook taking state_dict= can use.
        # Checked here, not at the first save hours into the run.
        self.sharded = shards_parameters(acc)
        self.save_takes_state_dict = accepts_state_dict(self.save_model_fn)
        if self.sharded and not self.save_takes_state_dict:
            raise VegaError(
                f"save_model_fn {self.save_model_fn!r} takes no state_dict= argument: under "
                f"{acc.distributed_type.value} it would save parameter shards, not the model"
            )

    # ------------------------------------------------------------------ data

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        cfg, acc = self.cfg, self.accelerator
        batches = epoch_batches(
            len(self.train_data),
            cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            lengths=self.lengths if cfg.length_grouped else None,
            mega_batch_mult=cfg.mega_batch_mult,
        )
        return shard(batches, acc.process_index, acc.num_processes)

    def _batch(self, indices: list[int]) -> dict:
        return send_to_device(self.collate_fn([self.train_data[i] for i in indices]), self.accelerator.device)

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainResult:
        cfg, acc, model = self.cfg, self.accelerator, self.model
        set_seed(cfg.seed)  # dropout streams start from the seed (a resume overwrites them below)
        state = self._resume()
        if state["done"]:
            log.info("run already finished at step %d; nothing to train", state["step"])
            return self._result(state)
        if cfg.tensorboard and acc.log_with:
            acc.init_trackers("tensorboard", config=_scalars(cfg.to_dict()))
        if acc.is_main_process:
            _warn_if_not_sharded(acc)
            log.info(
                "training: %d examples, %d optimizer steps (%d per epoch), micro-batch %d x %d accumulation x %d processes "
                "(%s), %s precision, %s attention",
                len(self.train_data), self.total_steps, self.steps_per_epoch, cfg.batch_size,
                cfg.grad_accum, acc.num_processes, describe_distributed(acc), cfg.mixed_precision, self.attention,
            )
        bar = tqdm(total=self.total_steps, initial=state["step"], desc="train", dynamic_ncols=True,
                   disable=not (cfg.progress and acc.is_local_main_process))
        # The log window lives in the state (saved with checkpoints): a resumed run averages its
        # first log step over the same optimizer steps as an uninterrupted run.
        window: dict[str, list[float]] = state["window"]
        seen, t0 = 0, time.perf_counter()
        win_seen, win_t0 = 0, t0  # throughput of the current log window (this invocation only)
        win_tokens: torch.Tensor | None = None  # None while the batches carry no token counts
        model.train()
        stop = False
        while not stop and state["step"] < self.total_steps:
            batches = self._epoch_batches(state["epoch"])
            while state["batch"] < len(batches) and state["step"] < self.total_steps:
                group = batches[state["batch"] : state["batch"] + cfg.grad_accum]
                loss_sum, logs, tokens = self._accumulate(group, state["step"] + 1)
                seen += sum(len(b) for b in group) * acc.num_processes
                if tokens is not None:
                    win_tokens = tokens if win_tokens is None else win_tokens + tokens
                state["step"] += 1
                state["batch"] += len(group)
                _maybe_test_kill(state["step"])
                for k, v in {"loss": loss_sum, **logs}.items():
                    window.setdefault(k, []).append(v)
                speed = seen / (time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.4f}", ex_s=f"{speed:.1f}", refresh=False)
                if state["step"] % cfg.log_every == 0:
                    now = time.perf_counter()
                    self._log(state, window, (seen - win_seen) / (now - win_t0), win_tokens, now - win_t0)
                    window.clear()
                    win_seen, win_t0, win_tokens = seen, now, None
                epoch_end = state["batch"] >= len(batches)
                if epoch_end:
                    state["epoch"] += 1
                    state["batch"] = 0
                last = state["step"] >= self.total_steps
                evaluate = epoch_end or last or (cfg.eval_every and state["step"] % cfg.eval_every == 0)
                if evaluate:
                    stop = self._evaluate(state)
                state["done"] = last or stop
                if evaluate or state["done"] or (cfg.save_every and state["step"] % cfg.save_every == 0):
                    if state["done"] and self.eval_fn is None:
                        self._save_best()  # no evaluation: the final model is the one to keep
                    path = ckpt.save_checkpoint(acc, self.ckpt_dir, state["step"], state)
                    if state["done"] and acc.is_main_process:
                        ckpt.drop_weights(path)
                if stop or epoch_end:
                    break
        bar.close()
        # Not acc.end_training(): it also destroys the process group, and the caller still
        # needs it for its final predictions (gathered across processes).
        for tracker in acc.trackers:
            tracker.finish()
        if stop:
            log.info("early stopping: no improvement in %d evaluations", cfg.early_stopping)
        result = self._result(state)
        result.train_seconds, result.examples_seen = time.perf_counter() - t0, seen
        return result

    def _accumulate(self, group: list[list[int]], step: int) -> tuple[float, dict[str, float], torch.Tensor | None]:
        """One optimizer step over the micro-batches of ``group``; returns the mean loss, the
        logs and this process's token count (None when the batches do not say)."""
        acc, model = self.accelerator, self.model
        total = torch.zeros((), device=acc.device)
        sums: dict[str, float] = {}
        tokens = None
        for i, indices in enumerate(group):
            batch = self._batch(indices)
            n = _count_tokens(batch)
            if n is not None:
                tokens = n if tokens is None else tokens + n
            # Skip the gradient all-reduce on all but the last micro-batch: it would be wasted.
            sync = contextlib.nullcontext() if i == len(group) - 1 else acc.no_sync(model)
            with sync:
                with acc.autocast():
                    out = self.loss_fn(model, batch)
                loss, logs = out if isinstance(out, tuple) else (out, {})
                # Each micro-batch's mean loss counts 1/len(group): the step's gradient is the
                # gradient of the mean over the group, as with one big batch.
                acc.backward(loss / len(group))
            total += loss.detach().float()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) / len(group)
        mean = acc.reduce(total / len(group), reduction="mean")  # same value on every process
        loss_value = float(mean)
        if not math.isfinite(loss_value):
            self._diverged(f"loss is {loss_value}", step)
        if self.cfg.max_grad_norm > 0:
            norm = acc.clip_grad_norm_(model.parameters(), self.cfg.max_grad_norm)
            # fp16's scaler skips overflowing steps by design; elsewhere an infinite norm is fatal.
            if self.cfg.mixed_precision != "fp16" and not math.isfinite(float(norm)):
                self._diverged(f"gradient norm is {float(norm)}", step)
        self.optimizer.step()
        if not self.optimizer.step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, sums, tokens

    def _diverged(self, what: str, step: int) -> None:
        last = ckpt.latest_checkpoint(self.ckpt_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"training diverged: {what} at optimizer step {step}; {kept} (untouched). "
            "Try a lower --lr, more warm-up, or --mixed-precision no/bf16 instead of fp16."
        )

    # ------------------------------------------------------------------ evaluation and best model

    def _evaluate(self, state: dict[str, Any]) -> bool:
        """Evaluate, keep best/, update history; returns True when early stopping triggers."""
        cfg, acc = self.cfg, self.accelerator
        if self.eval_fn is None:
            return False
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            metrics = self.eval_fn(self.model)
        self.model.train(was_training)
        if cfg.metric not in metrics:
            raise VegaError(f"evaluation returned {sorted(metrics)}, not the selection metric {cfg.metric!r}")
        value = float(metrics[cfg.metric])
        record = {"step": state["step"], "epoch": round(state["step"] / self.steps_per_epoch, 4), **metrics}
        state["history"].append(record)
        best = state["best"]
        improved = best is None or (value > best if cfg.greater_is_better else value < best)
        if improved:
            state["best"], state["best_step"], state["bad_evals"] = value, state["step"], 0
            self._save_best()
        else:
            state["bad_evals"] += 1
        if acc.is_main_process:
            write_metrics(self.out_dir, state["history"])
            shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            log.info("eval step %d (epoch %.2f): %s%s", state["step"], record["epoch"], shown,
                     "  [best]" if improved else "")
        if acc.log_with:
            acc.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, int | float)}, step=state["step"])
        return bool(cfg.early_stopping and state["bad_evals"] >= cfg.early_stopping)

    def _save_best(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        # Gathering shards is a collective: every process calls it, the main process gets the
        # full state dict. Unsharded runs pass None: the hook reads its own module.
        state_dict = acc.get_state_dict(self.model) if self.sharded else None
        if acc.is_main_process:
            with atomic_dir(self.out_dir / "best") as tmp:
                if self.save_takes_state_dict:
                    self.save_model_fn(acc.unwrap_model(self.model), tmp, state_dict=state_dict)
                else:  # a (model, directory) hook from before state_dict existed
                    self.save_model_fn(acc.unwrap_model(self.model), tmp)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ resume, logs, result

    def _resume(self) -> dict[str, Any]:
        state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None, "bad_evals": 0,
                 "history": [], "window": {}, "done": False, "total_steps": self.total_steps}
        main = self.accelerator.is_main_process
        if main:
            recover_dir(self.out_dir / "best")  # finish or undo a best/ swap cut by a crash
            for stale in ckpt.remove_stale(self.ckpt_dir):
                log.info("removed an incomplete checkpoint left by an interrupted run: %s", stale)
        self.accelerator.wait_for_everyone()
        last = ckpt.latest_checkpoint(self.ckpt_dir)
        if last is not None:
            saved = ckpt.read_state(last)
            # A finished run's checkpoint keeps only its state (see drop_weights): nothing to restore.
            state.update(saved if saved["done"] else ckpt.load_checkpoint(self.accelerator, last))
            if state.get("total_steps", self.total_steps) != self.total_steps:
                raise VegaError(f"{last}: planned for {state['total_steps']} steps, this run plans {self.total_steps}")
            if main:
                log.info("resumed from %s (step %d, epoch %d, batch %d)", last, state["step"], state["epoch"], state["batch"])
        if main and not state["done"]:
            # Drop what was logged after the checkpoint: the replay writes it again.
            write_metrics(self.out_dir, state["history"])
            truncate_train_metrics(self.out_dir, state["step"])
        return state

    def _log(self, state: dict[str, Any], window: dict[str, list[float]], examples_per_s: float,
             tokens: torch.Tensor | None, seconds: float) -> None:
        """One log step (called on every process): train.log, TensorBoard, train_metrics.jsonl."""
        acc = self.accelerator
        means = {k: sum(v) / len(v) for k, v in window.items()}
        record: dict[str, Any] = {"step": state["step"], "epoch": round(state["step"] / self.steps_per_epoch, 4),
                                  "loss": means.pop("loss"), "lr": self.scheduler.get_last_lr()[0]}
        speeds = {"examples_per_s": examples_per_s}
        if tokens is not None:  # a collective, so only at log steps: tokens of every process
            speeds["tokens_per_s"] = int(acc.reduce(tokens, reduction="sum")) / seconds
        # loss_fn's logs may replace a throughput (pretraining's hook measures its own tokens_per_s),
        # never the fields above.
        record.update({k: v for k, v in {**speeds, **means}.items() if k not in record})
        logs = {f"train/{k}": v for k, v in record.items() if k not in ("step", "epoch")}
        if acc.log_with:
            acc.log(logs, step=state["step"])
        if acc.is_main_process:
            append_train_metrics(self.out_dir, record)
            log.info("step %d/%d %s", state["step"], self.total_steps,
                     " ".join(f"{k[6:]}={v:.4g}" for k, v in logs.items()))

    def _result(self, state: dict[str, Any]) -> TrainResult:
        stopped = bool(self.cfg.early_stopping and state["bad_evals"] >= self.cfg.early_stopping)
        return TrainResult(state["step"], state["best"], state["best_step"], state["history"], stopped)


def _count_tokens(batch: dict) -> torch.Tensor | None:
    """Non-padding tokens of a batch, by the Hugging Face convention (attention_mask, else every
    input id); None when the batch has neither. A tensor: no device sync per step."""
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        return mask.sum().long()
    ids = batch.get("input_ids")
    if isinstance(ids, torch.Tensor):
        return torch.tensor(ids.numel(), device=ids.device)
    return None


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, int | float | str | bool)}
