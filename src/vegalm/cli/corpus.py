"""``vegalm corpus build|info``: text sources → memory-mapped token blocks for pretraining."""

from __future__ import annotations

import argparse
import json


def _build(args: argparse.Namespace) -> int:
    from vegalm.backbones import check_lengths, load_tokenizer
    from vegalm.data.corpus import build_corpus

    check_lengths(args.model, max_length=args.block_size, flag="--block-size")
    tokenizer = load_tokenizer(args.model)
    res = build_corpus(args.sources, tokenizer, args.out, block_size=args.block_size, text_field=args.text_field,
                       model_name=args.model, force=args.force, progress=not args.no_progress)
    m = res.meta
    verb = "reusing cache (same inputs, tokenizer and block size)" if res.reused else "built"
    print(f"{verb}: {res.path}")
    print(f"  {m['n_blocks']} blocks of {m['block_size']} tokens ({m['dtype']}), {m['n_documents']} documents, "
          f"{m['n_text_tokens']} text tokens, from {sum(len(s['files']) for s in m['sources'])} files")
    return 0


def _info(args: argparse.Namespace) -> int:
    from vegalm.data.corpus import open_corpus

    meta = dict(open_corpus(args.cache).meta)
    if not args.json:
        meta["sources"] = [{"spec": s["spec"], "files": len(s["files"])} for s in meta["sources"]]
    print(json.dumps(meta, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "corpus",
        help="build the token-block cache used by `vegalm pretrain`",
        description="Tokenise text into fixed-size blocks with stable ids, stored as a memory-mapped cache.",
    )
    sub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build",
        help="tokenise SOURCES into blocks of --block-size tokens",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Tokenise SOURCES with the model's tokenizer, pack the documents separated by [SEP] "
        "into blocks '[CLS] ... [SEP]' of exactly --block-size tokens (only the last block is padded), and "
        "store them as CACHE/tokens.bin (memory-mapped) + CACHE/meta.json. Block ids are 0..n-1 in source "
        "order. Streams, so the corpus may be larger than memory; written atomically. Re-running with the "
        "same source contents (sha256 per file), tokenizer and block size reuses the cache, even after a "
        "copy or touch of the files.",
        epilog="SOURCES:\n"
        "  FILE            plain text (documents separated by blank lines), WikiExtractor <doc> file\n"
        "                  (detected), or JSONL (.jsonl/.json; text in --text-field)\n"
        "  DIR             every file under DIR, sorted (e.g. ../shared/data/corpus/wiki2015)\n"
        "  superglue:DIR   inputs of every SuperGLUE task in DIR, train+val+test (transductive corpus)\n"
        "  text:P wiki:P jsonl:P   force a format\n",
    )
    b.add_argument("sources", nargs="+", metavar="SOURCE")
    b.add_argument("--model", required=True, help="backbone whose tokenizer to use (bert-tiny, minilm-l6, folder, ...)")
    b.add_argument("--block-size", type=int, default=128, help="tokens per block including [CLS] and [SEP] (default 128)")
    b.add_argument("--out", required=True, help="cache directory to write")
    b.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache matches the inputs")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)
    i = sub.add_parser("info", help="print a cache's meta data")
    i.add_argument("cache")
    i.add_argument("--json", action="store_true", help="full meta.json, every source file listed")
    i.set_defaults(func=_info)
