"""The hard-token index on disk: CSR keyed by block id, written incrementally, resumable.

Layout of an index directory::

    meta.json        what was scored (model, corpus fingerprint, tau, score, k); "complete"
    counts.bin       int32 [n_blocks]  hard tokens per block          (appended per chunk)
    scored.bin       int32 [n_blocks]  scored (maskable) tokens per block
    positions.bin    uint16/uint32 [n_hard]  positions of the hard tokens, block after block
    nll.bin          float16 [n_hard]  their NLL (the cap ranks by it; a larger tau filters by it)
    progress.json    blocks done, bytes written, running histogram (rewritten atomically)
    offsets.bin      int64 [n_blocks + 1]  CSR offsets, written at the end from counts.bin
    stats.json, nll_hist.png   statistics, written at the end

Appends are fsynced before progress.json records them; a run killed in between leaves bytes
past the recorded sizes, which the next run truncates before continuing. So the index is
written once, in order, whatever happens, and a reader only accepts it once "complete".
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vegalm.errors import VegaError
from vegalm.io import write_json

FORMAT = "vegalm-questions/1"
FILES = ("counts.bin", "scored.bin", "positions.bin", "nll.bin")
HIST_EDGES = np.linspace(-6.0, 2.0, 81)  # log10(NLL) bins; below 1e-6 goes to the first bin
TAUS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # hard fraction reported at these thresholds too


def _pos_dtype(block_size: int) -> np.dtype:
    return np.dtype(np.uint16) if block_size <= 65536 else np.dtype(np.uint32)


class IndexWriter:
    def __init__(self, path: Path, meta: dict[str, Any], progress: dict[str, Any]) -> None:
        self.path, self.meta, self.progress = path, meta, progress
        self.pos_dtype = _pos_dtype(meta["block_size"])

    # ---------------------------------------------------------------- open / resume

    @classmethod
    def open(cls, out: str | Path, *, n_blocks: int, block_size: int, params: dict[str, Any],
             force: bool = False) -> IndexWriter:
        path = Path(out)
        meta = {"format": FORMAT, "n_blocks": n_blocks, "block_size": block_size, **params, "complete": False}
        if (path / "meta.json").is_file():
            old = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            diffs = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in meta.items() if k != "complete" and old.get(k) != v]
            if not diffs and not force:
                writer = cls(path, old, cls._read_progress(path))
                writer._truncate()
                return writer
            if diffs and not force:
                raise VegaError(f"{path} holds a self-questioning index of other inputs:\n  " + "\n  ".join(diffs)
                                + "\nuse another --out, or --force to start it again")
            for name in (*FILES, "offsets.bin", "progress.json", "stats.json", "nll_hist.png"):
                (path / name).unlink(missing_ok=True)
        elif path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise VegaError(f"{path}: exists and is not a self-questioning index (no meta.json); choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "meta.json", meta)
        return cls(path, meta, cls._read_progress(path))

    @staticmethod
    def _read_progress(path: Path) -> dict[str, Any]:
        if (path / "progress.json").is_file():
            return json.loads((path / "progress.json").read_text(encoding="utf-8"))
        return {"blocks_done": 0, "n_hard": 0, "n_scored": 0, "hist": [0] * (len(HIST_EDGES) - 1),
                "above": [0] * len(TAUS)}

    def _truncate(self) -> None:
        """Drop bytes appended after the last recorded progress (a crash between the two)."""
        p, done = self.progress, self.progress["blocks_done"]
        sizes = {"counts.bin": done * 4, "scored.bin": done * 4,
                 "positions.bin": p["n_hard"] * self.pos_dtype.itemsize, "nll.bin": p["n_hard"] * 2}
        for name, size in sizes.items():
            f = self.path / name
            if f.exists() and f.stat().st_size != size:
                os.truncate(f, size)

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def blocks_done(self) -> int:
        return int(self.progress["blocks_done"])

    def hard_fraction(self, extra: tuple[list, list] | None = None) -> float:
        hard, scored = self.progress["n_hard"], self.progress["n_scored"]
        if extra:
            hard += sum(int(c.sum()) for c in extra[0])
            scored += sum(int(s.sum()) for s in extra[1])
        return hard / scored if scored else 0.0

    # ---------------------------------------------------------------- append a chunk

    def append(self, counts: np.ndarray, scored: np.ndarray, positions: np.ndarray, nll: np.ndarray,
               all_nll: np.ndarray) -> None:
        """Durably add the next blocks: their hard-token counts, positions and NLLs."""
        arrays = {"counts.bin": counts.astype(np.int32), "scored.bin": scored.astype(np.int32),
                  "positions.bin": positions.astype(self.pos_dtype), "nll.bin": nll.astype(np.float16)}
        for name, arr in arrays.items():
            with open(self.path / name, "ab") as f:
                f.write(arr.tobytes())
                f.flush()
                os.fsync(f.fileno())
        p = self.progress
        logs = np.log10(np.maximum(all_nll.astype(np.float64), 10.0 ** HIST_EDGES[0]))
        hist, _ = np.histogram(np.minimum(logs, HIST_EDGES[-1]), bins=HIST_EDGES)
        p["hist"] = [int(a + b) for a, b in zip(p["hist"], hist)]
        p["above"] = [int(a + (all_nll > t).sum()) for a, t in zip(p["above"], TAUS)]
        p["blocks_done"] += len(counts)
        p["n_hard"] += int(counts.sum())
        p["n_scored"] += int(scored.sum())
        write_json(self.path / "progress.json", p)

    def append_index(self, shard: str | Path) -> None:
        """Durably add a complete-but-unfinished shard's blocks (one rank's range, written by
        :func:`vegalm.pretrain.questioning.run_questions`), counters and histogram included."""
        shard = Path(shard)
        sp = self._read_progress(shard)
        for name in FILES:  # streamed: a shard of a large corpus need not fit in memory
            with open(shard / name, "rb") as src, open(self.path / name, "ab") as f:
                shutil.copyfileobj(src, f, 16 << 20)
                f.flush()
                os.fsync(f.fileno())
        p = self.progress
        p["hist"] = [int(a + b) for a, b in zip(p["hist"], sp["hist"])]
        p["above"] = [int(a + b) for a, b in zip(p["above"], sp["above"])]
        for key in ("blocks_done", "n_hard", "n_scored"):
            p[key] += int(sp[key])
        write_json(self.path / "progress.json", p)

    # ---------------------------------------------------------------- finish

    def finish(self, *, fresh_head: bool) -> dict[str, Any]:
        counts = np.fromfile(self.path / "counts.bin", dtype=np.int32)
        scored = np.fromfile(self.path / "scored.bin", dtype=np.int32)
        if len(counts) != self.meta["n_blocks"]:
            raise VegaError(f"{self.path}: {len(counts)} blocks scored of {self.meta['n_blocks']}")
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        offsets.tofile(self.path / "offsets.bin")
        stats = self._stats(counts, scored, fresh_head)
        write_json(self.path / "stats.json", stats)
        plot_stats(stats, counts, scored, self.path / "nll_hist.png")
        self.meta["complete"] = True
        write_json(self.path / "meta.json", self.meta)
        return stats

    def _stats(self, counts: np.ndarray, scored: np.ndarray, fresh_head: bool) -> dict[str, Any]:
        p = self.progress
        frac = np.divide(counts, scored, out=np.zeros(len(counts)), where=scored > 0)
        q = np.quantile(frac, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) if len(frac) else [0.0] * 7
        hard_fraction = p["n_hard"] / p["n_scored"] if p["n_scored"] else 0.0
        return {
            "tau": self.meta["tau"],
            "score": self.meta["score"],
            "n_blocks": int(len(counts)),
            "n_scored_tokens": p["n_scored"],
            "n_hard_tokens": p["n_hard"],
            "hard_fraction": hard_fraction,
            "blocks_without_hard_tokens": int((counts == 0).sum()),
            "per_block_hard_fraction": {"mean": float(frac.mean()) if len(frac) else 0.0,
                                        **{k: float(v) for k, v in zip(("min", "p10", "p25", "median", "p75", "p90", "max"), q)}},
            "hard_fraction_at_tau": {str(t): (a / p["n_scored"] if p["n_scored"] else 0.0) for t, a in zip(TAUS, p["above"])},
            "nll_histogram": {"log10_edges": HIST_EDGES.tolist(), "counts": p["hist"]},
            "fresh_head": fresh_head,
            "uninformative": bool(fresh_head or hard_fraction > 0.95),
        }

    def stats(self) -> dict[str, Any]:
        return json.loads((self.path / "stats.json").read_text(encoding="utf-8"))


def plot_stats(stats: dict[str, Any], counts: np.ndarray, scored: np.ndarray, path: Path) -> None:
    """Two panels: the NLL histogram (log x, tau marked) and the per-block hard fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vegalm.io import atomic_path

    edges = 10.0 ** np.asarray(stats["nll_histogram"]["log10_edges"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(edges[:-1], stats["nll_histogram"]["counts"], width=np.diff(edges), align="edge", color="#4878a8")
    a.set_xscale("log")
    a.axvline(stats["tau"], color="#c03030", lw=2, label=f"tau = {stats['tau']}")
    a.set_xlabel("own-token NLL (nats, log scale)")
    a.set_ylabel("tokens")
    a.set_title(f"{stats['score']} NLL: {stats['hard_fraction']:.1%} of {stats['n_scored_tokens']:,} tokens are hard")
    a.legend()
    frac = np.divide(counts, scored, out=np.zeros(len(counts)), where=scored > 0)
    b.hist(frac, bins=np.linspace(0, 1, 41), color="#58a060")
    b.set_xlabel("hard fraction of a block")
    b.set_ylabel("blocks")
    b.set_title(f"per block ({stats['blocks_without_hard_tokens']:,} blocks without hard tokens)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


class QuestionIndex:
    """Read side: ``index.hard(block_id)`` → (positions, nll) of that block's hard tokens."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise VegaError(f"{self.path}: not a self-questioning index (build one with `vegalm pretrain questions`)")
        self.meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT:
            raise VegaError(f"{self.path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        if not self.meta.get("complete"):
            raise VegaError(f"{self.path}: the self-questioning index is incomplete; re-run the same "
                            "`vegalm pretrain questions` command to finish it")
        self.offsets = np.fromfile(self.path / "offsets.bin", dtype=np.int64)
        n = int(self.offsets[-1])
        pos_dtype = _pos_dtype(self.meta["block_size"])
        self.positions = np.memmap(self.path / "positions.bin", dtype=pos_dtype, mode="r", shape=(n,)) if n else np.empty(0, pos_dtype)
        self.nll = np.memmap(self.path / "nll.bin", dtype=np.float16, mode="r", shape=(n,)) if n else np.empty(0, np.float16)

    @staticmethod
    def is_complete(path: str | Path) -> bool:
        meta = Path(path) / "meta.json"
        return meta.is_file() and bool(json.loads(meta.read_text(encoding="utf-8")).get("complete"))

    @property
    def tau(self) -> float:
        return float(self.meta["tau"])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def hard(self, block_id: int, tau: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[block_id]), int(self.offsets[block_id + 1])
        pos, nll = np.asarray(self.positions[a:b], dtype=np.int64), np.asarray(self.nll[a:b], dtype=np.float32)
        if tau is not None and tau > self.tau:
            keep = nll > tau
            pos, nll = pos[keep], nll[keep]
        return pos, nll

    def stats(self) -> dict[str, Any]:
        return json.loads((self.path / "stats.json").read_text(encoding="utf-8"))
