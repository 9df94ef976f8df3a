"""Stage 1 of the recipe as steps: transductive corpus, MLM warm-up, self-questioning, SE training.

Each function takes the step's context, reads everything it needs from ``ctx.step.config`` (the
config is the fingerprint, so nothing else may change what it computes) and calls the package's
own functions: vegalm.data.corpus, vegalm.pretrain.questioning, vegalm.pretrain.loop.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from vegalm.io import write_text
from vegalm.pipeline.common import resolve_model, train_config
from vegalm.pipeline.runner import StepContext

log = logging.getLogger("vegalm.pipeline")


def task_documents(data: Path, tasks: list[str]) -> list[str]:
    """One document per example: its input texts (never its label), each text once, all splits."""
    from vegalm.data.corpus_sources import example_texts
    from vegalm.data.superglue import get_task, read_split

    docs, seen = [], set()
    for name in tasks:
        task = get_task(name)
        for split in task.splits:
            if not task.split_path(data, split).is_file():
                continue
            for ex in read_split(name, data, split):
                lines = []
                for text in example_texts(ex):
                    key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                    if key not in seen:
                        seen.add(key)
                        lines += [t.strip() for t in text.splitlines() if t.strip()]
                if lines:
                    docs.append("\n".join(lines))
    return docs


def sample_documents(docs: list[str], n: int) -> list[str]:
    """The ``n`` documents with the smallest content hash, in corpus order: a fixed sample that
    does not depend on file order and keeps every task's share roughly proportional."""
    if not n or n >= len(docs):
        return docs
    keys = sorted(range(len(docs)), key=lambda i: hashlib.blake2b(docs[i].encode(), digest_size=8).digest())
    keep = set(keys[:n])
    return [d for i, d in enumerate(docs) if i in keep]


def corpus_step(ctx: StepContext) -> dict[str, Any]:
    from vegalm.backbones import load_tokenizer
    from vegalm.data.corpus import build_corpus

    c = ctx.step.config
    docs = task_documents(Path(ctx.step.env["data"]), c["tasks"])
    total = len(docs)
    docs = sample_documents(docs, c["max_documents"])
    texts = ctx.dir / "texts.txt"
    write_text(texts, "\n\n".join(docs) + "\n")
    res = build_corpus([f"text:{texts}", *c["extra"]], load_tokenizer(c["model"]), ctx.dir / "cache",
                       block_size=c["block_size"], model_name=c["model"], progress=False)
    m = res.meta
    log.info("transductive corpus: %d of %d task documents%s, %d blocks of %d tokens", len(docs), total,
             f" + {len(c['extra'])} external sources" if c["extra"] else "", m["n_blocks"], m["block_size"])
    return {"documents": len(docs), "task_documents": total, "blocks": m["n_blocks"], "block_size": m["block_size"],
            "text_tokens": m["n_text_tokens"], "extra": c["extra"]}


def _pretrain(ctx: StepContext, method: str, model: str, train: dict[str, Any], **se_kw: Any) -> dict[str, Any]:
    from vegalm.pretrain.loop import SEConfig, pretrain

    se = SEConfig(method=method, model=model, corpus=str(ctx.dep("corpus") / "cache"), **se_kw)
    cfg = train_config(train, ctx.step.env, length_grouped=False)
    summary = pretrain(se, cfg, ctx.dir / "run")
    return {k: summary[k] for k in ("method", "model", "global_step", "n_blocks", "passes")} | se_kw


def warmup_step(ctx: StepContext) -> dict[str, Any]:
    """MLM warm-up that teaches the head to read its own visible tokens (VEGA.md caveats).

    ``when: auto`` probes the hard fraction first and after every ``check_every`` steps, and
    stops as soon as it is at most ``target_hard`` (no training at all for a head that is already
    informative); each round continues from the previous round's model. The curve, the regime
    and the outcome are recorded in the step's summary (results.json, the report)."""
    from vegalm.backbones import resolve_model_path
    from vegalm.pretrain.loop import SEConfig, pretrain
    from vegalm.pretrain.questioning import probe_hard_fraction

    c = ctx.step.config
    regime, probe = c.get("regime", {}), c.get("probe", {"when": "fresh_head"})
    corpus = ctx.dep("corpus") / "cache"
    if probe.get("when") != "auto":  # a fixed warm-up of train.max_steps
        out = _pretrain(ctx, "mlm", c["model"], c["train"], **_regime_kw(regime))
        return out | {"reason": c["reason"], "regime": regime}
    precision = c["train"].get("mixed_precision", "no")

    def measure(model: str) -> float:
        return probe_hard_fraction(model, corpus, tau=probe["tau"], blocks=probe["blocks"], precision=precision)

    current, done, rounds = resolve_model(ctx, c["model"]), 0, 0
    curve = [{"step": 0, "hard_fraction": measure(current)}]
    log.info("warm-up probe: %.1f%% of the tokens hard at tau %s before any warm-up", 100 * curve[0]["hard_fraction"],
             probe["tau"])
    while curve[-1]["hard_fraction"] > probe["target_hard"] and done < c["train"]["max_steps"]:
        n = min(probe["check_every"], c["train"]["max_steps"] - done)
        round_dir = ctx.dir / f"round-{rounds:02d}"
        se = SEConfig(method="mlm", model=current, corpus=str(corpus), **_regime_kw(regime))
        # One schedule across rounds, as if uninterrupted: 10 warm-up steps in the first round,
        # then a constant learning rate (a per-round decay to 0 would waste half of every round).
        cfg = {**c["train"], "max_steps": n, "seed": c["train"]["seed"] + rounds, "schedule": "constant",
               "warmup_steps": 10 if rounds == 0 else 0, "warmup_ratio": 0.0}
        pretrain(se, train_config(cfg, ctx.step.env, length_grouped=False), round_dir / "run")
        current, done, rounds = str(round_dir / "run" / "final"), done + n, rounds + 1
        curve.append({"step": done, "hard_fraction": measure(current)})
        log.info("warm-up probe: %.1f%% hard after %d steps", 100 * curve[-1]["hard_fraction"], done)
    _publish(Path(resolve_model_path(current)), ctx.dir / "run" / "final")
    frac = curve[-1]["hard_fraction"]
    outcome = (f"informative: {frac:.1%} of the probed tokens hard after {done} warm-up steps" if frac <= probe[
        "target_hard"] else f"still {frac:.1%} hard after the {done}-step maximum: SE falls back to the cap")
    return {"method": "mlm", "global_step": done, "reason": c["reason"], "regime": regime, "probe_curve": curve,
            "outcome": outcome, "informative": frac <= probe["target_hard"]}


def _publish(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of the model folder ``src`` (hard links where the file system allows)."""
    import os
    import shutil

    from vegalm.io import atomic_dir

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, copy_function=link, dirs_exist_ok=True)


def _regime_kw(regime: dict[str, Any]) -> dict[str, Any]:
    return {"copy_ratio": regime.get("copy_ratio", 0.0), "mlm_probs": tuple(regime.get("mlm_probs", (0.8, 0.1, 0.1))),
            "head_only": regime.get("head_only", False)}


def questions_step(ctx: StepContext) -> dict[str, Any]:
    from vegalm.pretrain.questioning import ScoreConfig, self_question

    c = ctx.step.config
    cfg = ScoreConfig(tau=c["tau"], score=c["score"], k=c["k"], batch_size=c["batch_size"], chunk_blocks=256,
                      precision=c.get("mixed_precision", "no"))
    stats = self_question(resolve_model(ctx, c["model"]), ctx.dep("corpus") / "cache", ctx.dir / "index", cfg,
                          progress=False)
    keep = ("n_blocks", "n_scored_tokens", "n_hard_tokens", "hard_fraction", "per_block_hard_fraction",
            "blocks_without_hard_tokens", "hard_fraction_at_tau", "uninformative", "tau", "score")
    return {k: stats[k] for k in keep if k in stats}


def choose_cap(spec: dict[str, Any], stats: dict[str, Any]) -> tuple[float | None, str]:
    """The SE cap and why (VEGA.md caveats: never silently mask (nearly) every token)."""
    cap = spec["cap"]
    frac = stats["hard_fraction"]
    if cap == "none":
        return None, f"no cap (recipe); {frac:.1%} of the tokens are hard"
    if cap != "auto":
        return float(cap), f"cap {float(cap)} (recipe); {frac:.1%} of the tokens are hard"
    if stats.get("uninformative"):
        return spec["auto_cap"], (f"auto: the index is uninformative ({frac:.1%} hard, fresh or untrained head), "
                                  f"so the hardest {spec['auto_cap']:.0%} of each block are masked")
    if frac > spec["cap_above"]:
        return spec["auto_cap"], (f"auto: {frac:.1%} of the tokens are hard (> {spec['cap_above']:.0%}), "
                                  f"so the hardest {spec['auto_cap']:.0%} of each block are masked")
    return None, f"auto: no cap needed ({frac:.1%} of the tokens are hard)"


def se_step(ctx: StepContext) -> dict[str, Any]:
    c = ctx.step.config
    stats = ctx.dep_summary("pretrain/questions")
    cap, why = choose_cap(c["se"], stats)
    regime = "paper: the index's hard tokens, no cap" if cap is None else (
        "auto-cap (last resort): the index is not informative" if c["se"]["cap"] == "auto" else f"cap {cap} (recipe)")
    if cap is not None and c["se"]["cap"] == "auto":
        log.warning("\n%s\n!! SE RUNS UNDER THE AUTO-CAP, NOT THE PAPER'S REGIME: %s.\n!! Raise "
                    "pretrain.warmup.steps (or check the warm-up probe in results.json) to reach an informative "
                    "index.\n%s", "!" * 78, why, "!" * 78)
    else:
        log.info("SE masking: %s", why)
    out = _pretrain(ctx, "se", resolve_model(ctx, c["model"]), c["train"],
                    questions=str(ctx.dep("pretrain/questions") / "index"), alpha=c["se"]["alpha"],
                    smoothing=c["se"]["smoothing"], cap=cap, top_up=c["se"]["top_up"] or None)
    return out | {"cap_choice": why, "hard_fraction": stats["hard_fraction"], "regime": regime}
