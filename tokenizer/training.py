"""Fast byte-level BPE training: incremental pair counts over distinct chunks, a heap with lazy invalidation.

The straightforward trainer (minbpe's, Sennrich et al. 2016) recounts every adjacent pair of the whole corpus
after each merge. This one gives exactly the same merges, faster:
  1. each distinct chunk is stored once with its frequency (text is mostly repeated words);
  2. `pair_counts` (pair -> weighted count) and `where` (pair -> indices of the chunks holding it) are kept up
     to date after each merge by re-pairing only the chunks that held the merged pair;
  3. a heap holds (-count, id1, id2); an entry whose count no longer matches `pair_counts` is stale and skipped
     when popped, and every changed count is pushed anew.

Tie-break rule: the most frequent pair wins; among equally frequent pairs, the smallest (id1, id2)
lexicographically. The heap's tuple order gives exactly this, and a naive trainer reproduces it with
`min(stats, key=lambda p: (-stats[p], p))`.

Cost: each merge touches only the chunks that contain the pair, each in time linear in its length, so one
huge chunk (pattern=None on a long text) makes every merge linear in the text: keep pattern=None for small texts.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping


def merge_pair(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace every (a, b) in `ids` by `new_id`, scanning left to right without overlaps ("aaa" -> [aa, a])."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == a and i + 1 < n and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(chunk_counts: Mapping[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges from distinct chunks and their counts; merge k makes token id 256 + k.

    Stops early when no adjacent pair is left (every chunk is a single token).
    """
    words = [list(chunk) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += f
            where[pair].add(i)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg_count, a, b = heapq.heappop(heap)
        pair = (a, b)
        if pair_counts.get(pair, 0) != -neg_count:
            continue  # stale entry: this pair's count changed after it was pushed
        new_id = 256 + len(merges)
        merges.append(pair)
        touched: set[tuple[int, int]] = set()
        for i in where.pop(pair):
            w, f = words[i], freqs[i]
            new = merge_pair(w, a, b, new_id)
            words[i] = new
            old_pairs, new_pairs = list(zip(w, w[1:])), list(zip(new, new[1:]))
            # Re-pair the whole chunk: chunks are short, and this cannot get neighbours wrong ("aaaa" etc.).
            for p in old_pairs:
                pair_counts[p] -= f
            for p in new_pairs:
                pair_counts[p] += f
            old_set, new_set = set(old_pairs), set(new_pairs)
            for p in old_set - new_set:
                if p != pair:
                    where[p].discard(i)
            for p in new_set - old_set:
                where[p].add(i)
            touched |= old_set
            touched |= new_set
        for p in touched:
            c = pair_counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p[0], p[1]))
            else:
                del pair_counts[p]
                where.pop(p, None)
    return merges
