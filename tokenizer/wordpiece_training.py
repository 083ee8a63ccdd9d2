"""Learning a WordPiece vocabulary (vocab.txt) from a corpus by likelihood-scored pair merging.

The algorithm of Schuster & Nakajima (2012, "Japanese and Korean voice search", section 3.1), which BERT's
WordPiece vocabulary came from (Wu et al. 2016, section 4.1), in the form the Hugging Face course chapter 6
("WordPiece tokenization") describes: words from BERT's basic tokenizer (wordpiece.py, steps 1-3) are split into
characters, every character after the first marked "##"; then repeatedly the adjacent pair (a, b) with the highest
    score(a, b) = count(ab) / (count(a) * count(b))
is merged into one new token (a + b without b's "##"), which is the pair whose merge most raises the unigram
likelihood of the corpus per occurrence, until the vocabulary is full. Ties go to the smallest (a, b).
Counts are kept up to date incrementally as in training.py; because merging a pair lowers count(a) and count(b),
the scores of every pair holding a or b rise and are pushed again, and a popped heap entry whose score is no
longer current is skipped.
"""
from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

from .wordpiece import PREFIX, WordPiece

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _join(a: str, b: str) -> str:
    return a + (b[len(PREFIX) :] if b.startswith(PREFIX) else b)


class _Merger:
    """Words as token lists with frequencies, and the counts the score needs, kept current after each merge."""

    def __init__(self, word_counts: dict[str, int]):
        self.words = [[w[0]] + [PREFIX + c for c in w[1:]] for w in word_counts]
        self.freqs = list(word_counts.values())
        self.tokens: Counter[str] = Counter()  # token -> occurrences in the corpus
        self.pairs: dict[tuple[str, str], int] = defaultdict(int)  # pair -> occurrences
        self.where: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> words holding it
        self.by_token: dict[str, set[tuple[str, str]]] = defaultdict(set)  # token -> pairs it is part of
        for i, (w, f) in enumerate(zip(self.words, self.freqs)):
            self._count(i, w, f)
        self.heap = [(-self.score(p), *p) for p in self.pairs]
        heapq.heapify(self.heap)

    def _count(self, i: int, w: list[str], f: int) -> None:
        for t in w:
            self.tokens[t] += f
        for p in zip(w, w[1:]):
            self.pairs[p] += f
            self.where[p].add(i)
            self.by_token[p[0]].add(p)
            self.by_token[p[1]].add(p)

    def score(self, p: tuple[str, str]) -> float:
        return self.pairs[p] / (self.tokens[p[0]] * self.tokens[p[1]])

    def pop_best(self) -> tuple[str, str] | None:
        """The current highest-scoring pair, skipping stale heap entries; None when no pair is left."""
        while self.heap:
            neg, a, b = heapq.heappop(self.heap)
            if self.pairs.get((a, b), 0) > 0 and self.score((a, b)) == -neg:
                return a, b
        return None

    def merge(self, pair: tuple[str, str]) -> str:
        """Merge `pair` in every word holding it; push the new scores of every pair whose count changed."""
        a, b = pair
        new = _join(a, b)
        touched: set[tuple[str, str]] = set()  # pairs whose count changed
        for i in self.where.pop(pair):
            w, f = self.words[i], self.freqs[i]
            for t in w:
                self.tokens[t] -= f
            for p in zip(w, w[1:]):
                self.pairs[p] -= f
                self.where[p].discard(i)
                touched.add(p)
            merged, k = [], 0
            while k < len(w):  # left to right without overlaps, as training.merge_pair
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    merged.append(new)
                    k += 2
                else:
                    merged.append(w[k])
                    k += 1
            self.words[i] = merged
            self._count(i, merged, f)
            touched.update(zip(merged, merged[1:]))
        # count(a) and count(b) fell, so every pair holding a or b scores higher now.
        for p in touched | self.by_token[a] | self.by_token[b]:
            if self.pairs.get(p, 0) > 0:
                heapq.heappush(self.heap, (-self.score(p), *p))
        return new


def train_wordpiece(
    text: str,
    vocab_size: int,
    *,
    do_lower_case: bool = True,
    special_tokens: tuple[str, ...] | list[str] = BERT_SPECIALS,
    max_input_chars_per_word: int = 100,
) -> list[str]:
    """A WordPiece vocabulary (token list, id = position): special tokens, the corpus's characters (plain and
    "##"), then merged tokens by score until `vocab_size` (fewer when the corpus runs out of pairs)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("cannot train a WordPiece vocabulary on empty text; pass a non-empty training text")
    if "[UNK]" not in special_tokens:
        raise ValueError(f"special_tokens {list(special_tokens)!r} must include '[UNK]' (unmatched words need it)")
    basic = WordPiece(list(special_tokens), do_lower_case=do_lower_case)
    words = Counter(w for w in basic.pre_tokenize(basic.normalize(text)) if len(w) <= max_input_chars_per_word)
    merger = _Merger(dict(words))
    alphabet = sorted(t for t in merger.tokens if t not in special_tokens)
    vocab = list(special_tokens) + alphabet
    if vocab_size < len(vocab):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the {len(special_tokens)} special tokens and the corpus's"
            f" {len(alphabet)} characters (first and '##' forms) need at least {len(vocab)}"
        )
    seen = set(vocab)
    while len(vocab) < vocab_size:
        pair = merger.pop_best()
        if pair is None:
            break
        new = merger.merge(pair)
        if new not in seen:  # the same string can come from two different splits; list it once
            seen.add(new)
            vocab.append(new)
    return vocab


def save_wordpiece(vocab: list[str], directory: str | Path, do_lower_case: bool = True) -> Path:
    """Write vocab.txt and a tokenizer_config.json that BertTokenizerFast and our from_pretrained read."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case, "strip_accents": None,
              "tokenize_chinese_chars": True}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory / "vocab.txt"
