"""Corpus → fixed-size token blocks with stable ids, in a memory-mapped cache (VEGA.md §1.1).

Layout of a cache directory::

    CACHE/tokens.bin   n_blocks x block_size token ids, row-major, uint16 (vocab ≤ 65535) or uint32
    CACHE/meta.json    format, fingerprint, tokenizer identity, block size, counts, sources

Packing (RoBERTa's "full sentences"): documents are tokenised without special tokens, each
followed by the separator ([SEP] / </s>), and the stream is cut into pieces of
``block_size - 2`` tokens; each block is ``[CLS] piece [SEP]``, a valid model input as is.
Only the very last block can be short: it is ``[CLS] piece [SEP]`` then padding, so the
attention mask of any block is ``ids != pad_id`` (text never yields the pad id: special
tokens written in the text, e.g. a literal "[MASK]", are split into ordinary tokens).

Block ids are the row numbers 0..n-1, in the order the sources were given and, within a
source, files in sorted path order: the same inputs give the same blocks and ids, which is
what lets self-questioning (stage 1) and training (stage 2) refer to a block by its id.

The build streams: segments are tokenised in batches and full blocks appended to the file,
so memory stays bounded whatever the corpus size. It writes into a temporary directory that
is renamed onto CACHE at the end (vegalm.io.atomic_dir): a killed build leaves no cache that
looks complete. The fingerprint covers the tokenizer (hash of its serialised vocabulary and
rules), the block size and every source file's name and content (sha256; re-hashed only when
a file's size or mtime changed since the cache recorded it); a build whose fingerprint matches
the existing cache reuses it, wherever the files now live and whatever their timestamps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vegalm.data.corpus_sources import Source, iter_source, parse_source
from vegalm.errors import VegaError
from vegalm.io import atomic_dir, recover_dir

log = logging.getLogger(__name__)

FORMAT = "vegalm-corpus/1"
TOKENS, META = "tokens.bin", "meta.json"


# ---------------------------------------------------------------- tokenizer identity


def tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    """What the blocks depend on: the tokenizer's rules and the ids used for packing."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        raise VegaError(f"{tokenizer.name_or_path}: a fast (Rust) tokenizer is required to build a corpus")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    missing = [n for n, v in (("cls/bos", cls_id), ("sep/eos", sep_id), ("pad", tokenizer.pad_token_id),
                              ("mask", tokenizer.mask_token_id)) if v is None]
    if missing:
        raise VegaError(f"{tokenizer.name_or_path}: tokenizer has no {', '.join(missing)} token; "
                        "a masked-LM tokenizer is needed")
    specials = sorted(set(tokenizer.all_special_ids) | {cls_id, sep_id, tokenizer.pad_token_id, tokenizer.mask_token_id})
    # The serialised tokenizer minus its call-time state (truncation/padding change with each call).
    rules = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode("utf-8"))
    digest.update(json.dumps(specials).encode())
    return {
        "name_or_path": str(tokenizer.name_or_path),
        "hash": digest.hexdigest(),
        "vocab_size": len(tokenizer),
        "cls_id": int(cls_id),
        "sep_id": int(sep_id),
        "pad_id": int(tokenizer.pad_token_id),
        "mask_id": int(tokenizer.mask_token_id),
        "special_ids": [int(i) for i in specials],
    }


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def fingerprint(tok: dict[str, Any], block_size: int, described: Sequence[dict], text_field: str) -> str:
    """The cache's identity: what decides its bytes. Sources count by kind and content (each file's
    name under its source root, size and sha256), not by where they live or when they were
    written, so a copied or re-provisioned corpus reuses its cache and an edited one does not."""
    sources = [{"kind": d["kind"], "files": [
        {"name": os.path.relpath(f["path"], d["root"]), "size": f["size"], "sha256": f["sha256"]}
        for f in d["files"]]} for d in described]
    ident = {"format": FORMAT, "tokenizer": tok["hash"], "block_size": block_size, "text_field": text_field,
             "sources": sources}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _known_digests(meta: dict[str, Any]) -> dict[tuple[str, int, int], str]:
    """(path, size, mtime) -> sha256 recorded by an earlier build: the fast path of the fingerprint."""
    return {(f["path"], f["size"], f["mtime_ns"]): f["sha256"] for d in meta.get("sources", [])
            for f in d.get("files", []) if "sha256" in f}


# ---------------------------------------------------------------- packing


class Packer:
    """Turns per-segment token lists into ``[CLS] ... [SEP]`` blocks of ``block_size``."""

    def __init__(self, block_size: int, cls_id: int, sep_id: int, pad_id: int, dtype: np.dtype) -> None:
        if block_size < 8:
            raise VegaError(f"--block-size must be at least 8, got {block_size}")
        self.n, self.cls, self.sep, self.pad, self.dtype = block_size, cls_id, sep_id, pad_id, dtype
        self.buf: list[int] = []
        self.doc_has_tokens = False
        self.n_documents = 0
        self.n_text_tokens = 0

    def add(self, ids: Sequence[int], end_of_doc: bool) -> None:
        if ids:
            self.buf.extend(ids)
            self.doc_has_tokens = True
            self.n_text_tokens += len(ids)
        if end_of_doc and self.doc_has_tokens:
            self.buf.append(self.sep)
            self.n_documents += 1
            self.doc_has_tokens = False

    def full_blocks(self) -> np.ndarray:
        """Take every complete block out of the buffer: ``[k, block_size]``."""
        body = self.n - 2
        k = len(self.buf) // body
        if k == 0:
            return np.empty((0, self.n), dtype=self.dtype)
        pieces = np.asarray(self.buf[: k * body], dtype=self.dtype).reshape(k, body)
        del self.buf[: k * body]
        out = np.empty((k, self.n), dtype=self.dtype)
        out[:, 0], out[:, -1], out[:, 1:-1] = self.cls, self.sep, pieces
        return out

    def last_block(self) -> np.ndarray:
        """The final partial block, padded (empty when the stream ended on a block boundary)."""
        if not self.buf or (len(self.buf) == 1 and self.buf[0] == self.sep):
            return np.empty((0, self.n), dtype=self.dtype)
        out = np.full((1, self.n), self.pad, dtype=self.dtype)
        out[0, 0] = self.cls
        out[0, 1 : 1 + len(self.buf)] = self.buf
        out[0, 1 + len(self.buf)] = self.sep
        self.buf = []
        return out


def _batched(segments: Iterator[tuple[str, bool]], size: int) -> Iterator[list[tuple[str, bool]]]:
    batch: list[tuple[str, bool]] = []
    for seg in segments:
        batch.append(seg)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_blocks(tmp: Path, tokenizer: Any, tok: dict, sources: list[Source], block_size: int,
                  text_field: str, batch_lines: int, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    dtype = dtype_for(tok["vocab_size"])
    packer = Packer(block_size, tok["cls_id"], tok["sep_id"], tok["pad_id"], dtype)
    total = sum(f.stat().st_size for s in sources for f in s.files)
    n_blocks = 0
    with open(tmp / TOKENS, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc="corpus",
                                                disable=not progress) as bar:
        for source in sources:
            segments = iter_source(source, text_field=text_field, on_bytes=bar.update)
            for batch in _batched(segments, batch_lines):
                enc = tokenizer([t for t, _ in batch], add_special_tokens=False, split_special_tokens=True,
                                return_attention_mask=False, return_token_type_ids=False)["input_ids"]
                for ids, (_, end) in zip(enc, batch):
                    packer.add(ids, end)
                blocks = packer.full_blocks()
                out.write(blocks.tobytes())
                n_blocks += len(blocks)
                bar.set_postfix(blocks=n_blocks, refresh=False)
        last = packer.last_block()
        out.write(last.tobytes())
        n_blocks += len(last)
    if n_blocks == 0:
        raise VegaError("the corpus sources contain no text")
    return {"n_blocks": n_blocks, "n_documents": packer.n_documents, "n_text_tokens": packer.n_text_tokens,
            "dtype": dtype.name, "last_block_padded": bool(len(last))}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _quiet_length_warning(tokenizer: Any) -> Iterator[None]:
    """Documents are longer than the model's max length by design (they are cut into blocks);
    transformers would warn about it once. Lift the limit for the build only."""
    saved = tokenizer.model_max_length
    tokenizer.model_max_length = int(1e30)
    try:
        yield
    finally:
        tokenizer.model_max_length = saved


@dataclass
class BuildResult:
    path: Path
    reused: bool
    meta: dict[str, Any]


def build_corpus(
    sources: Sequence[str],
    tokenizer: Any,
    out: str | Path,
    *,
    block_size: int = 128,
    text_field: str = "text",
    model_name: str | None = None,
    batch_lines: int = 2048,
    force: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build (or reuse) the block cache at ``out``; see the module docstring."""
    out = Path(out)
    recover_dir(out)
    parsed = [parse_source(s) for s in sources]
    if not parsed:
        raise VegaError("no corpus sources given")
    tok = tokenizer_info(tokenizer)
    old = None
    if (out / META).is_file() and not force:
        try:
            old = open_corpus(out).meta
        except VegaError as e:
            log.warning("existing cache at %s is unreadable (%s): rebuilding", out, e)
    described = [s.describe(_known_digests(old or {})) for s in parsed]
    fp = fingerprint(tok, block_size, described, text_field)
    if old is not None:
        if old.get("fingerprint") == fp:
            return BuildResult(out, True, old)
        log.info("inputs changed since %s was built: rebuilding", out)
    t0 = time.time()
    with atomic_dir(out) as tmp, _quiet_length_warning(tokenizer):
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a cache is shared like any output
        counts = _write_blocks(tmp, tokenizer, tok, parsed, block_size, text_field, batch_lines, progress)
        meta = {
            "format": FORMAT,
            "fingerprint": fp,
            "block_size": block_size,
            **counts,
            "model": model_name,
            "tokenizer": tok,
            "text_field": text_field,
            "sources": described,
            "build_seconds": round(time.time() - t0, 2),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return BuildResult(out, False, meta)


# ---------------------------------------------------------------- reading


class BlockCorpus:
    """Read side of a cache: ``corpus[i]`` is block ``i`` (a numpy row of the memmap)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / META
        if not meta_path.is_file():
            raise VegaError(f"{self.path}: not a corpus cache (no {META}; build one with `vegalm corpus build`)")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise VegaError(f"{meta_path}:{e.lineno}: invalid JSON ({e.msg})") from e
        if self.meta.get("format") != FORMAT:
            raise VegaError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.block_size = int(self.meta["block_size"])
        self.n_blocks = int(self.meta["n_blocks"])
        dtype = np.dtype(self.meta["dtype"])
        expect = self.n_blocks * self.block_size * dtype.itemsize
        size = (self.path / TOKENS).stat().st_size if (self.path / TOKENS).is_file() else -1
        if size != expect:
            raise VegaError(f"{self.path / TOKENS}: {size} bytes, expected {expect} (cache damaged: rebuild it)")
        self.tokens = np.memmap(self.path / TOKENS, dtype=dtype, mode="r", shape=(self.n_blocks, self.block_size))

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def check_ids(self, n_embeddings: int, model: str, chunk_blocks: int = 65536) -> None:
        """Every token id must index the model's embedding table: a cache edited or built with a
        larger vocabulary is refused here, with the first bad block, not as an IndexError mid-run."""
        for start in range(0, self.n_blocks, chunk_blocks):
            part = np.asarray(self.tokens[start:start + chunk_blocks])
            if part.size and int(part.max()) >= n_embeddings:
                row, col = np.argwhere(part >= n_embeddings)[0]
                raise VegaError(f"{self.path / TOKENS}: block {start + int(row)} holds token id "
                                f"{int(part[row, col])}, but {model} has {n_embeddings} embeddings (ids 0.."
                                f"{n_embeddings - 1}); rebuild the cache with this model's tokenizer")

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.meta["tokenizer"]

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[i]

    def check_tokenizer(self, tokenizer: Any, what: str) -> None:
        """Refuse a model whose tokenizer differs from the one the blocks were made with."""
        if tokenizer_info(tokenizer)["hash"] != self.tokenizer["hash"]:
            raise VegaError(f"{what}: its tokenizer differs from the one corpus {self.path} was built with "
                            f"({self.tokenizer['name_or_path']}); rebuild the corpus with --model {what}")


def open_corpus(path: str | Path) -> BlockCorpus:
    return BlockCorpus(path)
