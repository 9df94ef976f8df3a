"""Batches for dynamic padding: shuffled, grouped by length, deterministic per (seed, epoch).

Padding every batch to its own longest example (instead of a fixed max length) only pays off
when a batch holds examples of similar length. Sorting the whole set by length would make every
epoch identical and the batches very non-random, so we follow Hugging Face's
LengthGroupedSampler: shuffle, cut into "mega-batches" of ``mega_batch_mult * batch_size``
examples, sort each mega-batch by length (longest first) and cut it into batches. The longest
batch is moved to the very front, so an out-of-memory error shows up on step one, not hours in.

Everything here is a pure function of (lengths, batch_size, seed, epoch): a resumed run rebuilds
exactly the batch list of the interrupted epoch and skips the batches already consumed, and no
global RNG is touched (dropout streams stay identical whether or not a run was resumed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def epoch_batches(
    n: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    lengths: Sequence[int] | None = None,
    mega_batch_mult: int = 50,
    shuffle: bool = True,
) -> list[list[int]]:
    """The micro-batches (lists of example indices) of one epoch, before sharding."""
    if n == 0:
        return []
    if shuffle:
        # A private generator seeded by (seed, epoch): independent of every global RNG.
        order = np.random.default_rng([seed, epoch]).permutation(n)
    else:
        order = np.arange(n)
    if lengths is None:
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    if len(lengths) != n:
        raise ValueError(f"lengths has {len(lengths)} entries for {n} examples")
    lens = np.asarray(lengths)
    # Like HF: small data sets get smaller mega-batches so some randomness survives.
    mult = max(1, min(mega_batch_mult, n // (batch_size * 4)))
    mega = mult * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        # Stable sort on -length: ties keep their shuffled order, so the result is deterministic.
        chunk = chunk[np.argsort(-lens[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    # The longest batch first: any out-of-memory error happens at once.
    longest = max(range(len(batches)), key=lambda b: (int(lens[batches[b][0]]), -b))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches: batch i goes to process i % world.

    Every process must run the same number of steps (or DDP's all-reduce waits forever), so the
    list is padded by wrapping around to its start, as Accelerate's even_batches does.
    """
    if world == 1:
        return batches
    per_rank = -(-len(batches) // world)
    padded = batches + [batches[i % len(batches)] for i in range(per_rank * world - len(batches))]
    return padded[rank::world]
