"""The masked-language-modelling objective's data side (Devlin et al. 2019, §3.1 "Task #1: Masked LM" and
appendix A.1): which tokens a BERT must predict, and what it sees in their place.

Of the tokens that are not special ([CLS], [SEP], [PAD], [MASK]), each is chosen with probability 15%,
independently (a Bernoulli draw, as Hugging Face's DataCollatorForLanguageModeling does, rather than the paper's
round(15%·n) per sequence). A chosen token is replaced by [MASK] 80% of the time, by a random non-special token 10%
of the time, and left unchanged 10% of the time, so the model cannot learn that only [MASK] positions matter; its
label is the original id, and every other label is -100 (cross_entropy's ignore_index). A batch with no chosen
token gets one, at a random eligible position, so its loss is never a mean over nothing.

Seeded and resumable: the masks of a batch come from `np.random.default_rng([seed, *indices])`, the generator
keyed by the batch's own sample indices, which gpt.data.DataLoader derives from (seed, epoch) alone. A resumed run
therefore draws the same masks as an uninterrupted one with no state of its own to save, and a window met again in
a later epoch (in another batch) gets fresh masks: RoBERTa's dynamic masking (Liu et al. 2019, §4.1) for free.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class SpecialIds:
    """The ids of BERT's special tokens in a vocabulary."""

    pad: int   # fills sequences to one length; attention_mask 0 there
    cls: int   # first token of every sequence: the pooler reads its hidden state
    sep: int   # ends a sequence (and separates sentence A from B)
    mask: int  # stands in for a token the model must predict

    def all(self) -> tuple[int, ...]:
        return (self.pad, self.cls, self.sep, self.mask)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def special_ids_for(tokenizer: Any, n_vocab: int) -> tuple[SpecialIds, int]:
    """(special ids, model vocabulary size) for a tokenizer: its own [PAD]/[CLS]/[SEP]/[MASK] when it has them
    (a WordPiece vocab.txt: its pad_token_id, ...; or a token_to_id lookup), else four new ids appended after its
    n_vocab (byte-level BPE, bytes)."""
    lookup = getattr(tokenizer, "token_to_id", None)
    found = [getattr(tokenizer, f"{t.strip('[]').lower()}_token_id", None) for t in SPECIAL_TOKENS]
    if lookup is not None and any(i is None for i in found):
        found = [lookup(t) for t in SPECIAL_TOKENS]
    if all(i is not None for i in found):
        return SpecialIds(*(int(i) for i in found)), int(n_vocab)
    return SpecialIds(*range(n_vocab, n_vocab + 4)), int(n_vocab) + 4


@dataclass(frozen=True)
class MaskingConfig:
    """BERT's masking rates."""

    mask_prob: float = 0.15      # share of eligible tokens chosen for prediction
    replace_prob: float = 0.8    # of the chosen: shown as [MASK]
    random_prob: float = 0.1     # of the chosen: shown as a random non-special token (the rest stay unchanged)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob={self.mask_prob} must lie in (0, 1]")
        if self.replace_prob < 0 or self.random_prob < 0 or self.replace_prob + self.random_prob > 1.0:
            raise ValueError(f"replace_prob={self.replace_prob} and random_prob={self.random_prob} must be >= 0 "
                             f"with a sum <= 1 (the rest of the chosen tokens stay unchanged)")


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, special: SpecialIds, vocab_size: int,
                masking: MaskingConfig = MaskingConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) for token ids (b, t): chosen tokens get their 80/10/10 replacement and keep their id as
    the label; every other label is -100. `rng` decides everything, in a fixed order of draws."""
    ids = np.asarray(ids, dtype=np.int64)
    specials = np.array(special.all(), dtype=np.int64)
    eligible = ~np.isin(ids, specials)
    chosen = (rng.random(ids.shape) < masking.mask_prob) & eligible
    if not chosen.any() and eligible.any():
        flat = np.flatnonzero(eligible)
        chosen.reshape(-1)[flat[rng.integers(len(flat))]] = True
    how = rng.random(ids.shape)  # < replace: [MASK]; < replace + random: a random token; else unchanged
    labels = np.where(chosen, ids, -100)
    inputs = ids.copy()
    inputs[chosen & (how < masking.replace_prob)] = special.mask
    randomise = chosen & (how >= masking.replace_prob) & (how < masking.replace_prob + masking.random_prob)
    if randomise.any():
        inputs[randomise] = _random_regular(rng, int(randomise.sum()), vocab_size, specials)
    return inputs, labels


def _random_regular(rng: np.random.Generator, n: int, vocab_size: int, specials: np.ndarray) -> np.ndarray:
    """n ids drawn uniformly from [0, vocab_size) without the special ids."""
    regular = np.setdiff1d(np.arange(vocab_size), specials)
    return regular[rng.integers(len(regular), size=n)]


class MaskedLMDataset:
    """Non-overlapping windows of a token stream as BERT inputs [CLS] w [SEP] of context_length tokens, masked
    per batch: `get_batch(indices)` gives (inputs, labels, attention_mask), each (len(indices), context_length)."""

    def __init__(self, ids: Sequence[int] | np.ndarray, context_length: int, special: SpecialIds, vocab_size: int,
                 seed: int = 123, masking: MaskingConfig = MaskingConfig(), what: str = "token stream"):
        ids = np.asarray(ids, dtype=np.int64)
        body = int(context_length) - 2  # room for [CLS] and [SEP]
        if body < 1:
            raise ValueError(f"context_length={context_length} leaves no room between [CLS] and [SEP]; use >= 3")
        if len(ids) < body:
            raise ValueError(f"the {what} has {len(ids)} tokens, fewer than context_length - 2 = {body}; lower "
                             f"--context-length or give more data")
        n = len(ids) // body
        self.windows = ids[:n * body].reshape(n, body)  # (n, t - 2)
        self.special, self.vocab_size, self.seed, self.masking = special, int(vocab_size), int(seed), masking

    def __len__(self) -> int:
        return len(self.windows)

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        w = self.windows[indices]
        col = np.full((len(w), 1), 0, dtype=np.int64)
        ids = np.concatenate([col + self.special.cls, w, col + self.special.sep], axis=1)  # (b, t)
        rng = np.random.default_rng([self.seed, *indices.tolist()])
        inputs, labels = mask_tokens(ids, rng, self.special, self.vocab_size, self.masking)
        return inputs, labels, np.ones_like(ids)


def mlm_logits(model: Any, inputs: np.ndarray, labels: np.ndarray, attention_mask: np.ndarray | None = None
               ) -> tuple[Any, np.ndarray]:
    """(logits (n, vocab), targets (n,)) of the masked-LM head at the n labelled positions (labels != -100) only:
    the vocabulary-sized head runs on the ~15% of rows that carry a label instead of on all of them."""
    B = model.B
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.flatnonzero(labels.reshape(-1) != -100)
    if rows.size == 0:
        raise ValueError("the batch has no labelled position (every label is -100); nothing to predict")
    hidden = model.encode(inputs, attention_mask)  # (b, t, d)
    picked = hidden.reshape(-1, hidden.shape[-1])[B.tensor(rows)]  # (n, d)
    return model.mlm_head(picked), labels.reshape(-1)[rows]


def mlm_loss(model: Any, inputs: np.ndarray, labels: np.ndarray, attention_mask: np.ndarray | None = None) -> Any:
    """Mean cross-entropy at the labelled positions: equal to cross_entropy(model(inputs, attention_mask), labels,
    ignore_index=-100), computed through mlm_logits."""
    logits, targets = mlm_logits(model, inputs, labels, attention_mask)
    return model.B.F.cross_entropy(logits, model.B.tensor(targets))


def encode_with_masks(tokenizer: Any, text: str, special: SpecialIds, context_length: int) -> np.ndarray:
    """[CLS] + the text's ids with every literal "[MASK]" turned into the mask id + [SEP], as a (1, t) array;
    ValueError when the text has no [MASK] or does not fit."""
    pieces = text.split("[MASK]")
    if len(pieces) == 1:
        raise ValueError(f"the text has no [MASK] to fill: put [MASK] where a word should be predicted, "
                         f"e.g. 'The capital of France is [MASK].'")
    ids = [special.cls]
    for i, piece in enumerate(pieces):
        if i:
            ids.append(special.mask)
        if i < len(pieces) - 1:
            piece = piece.rstrip()  # byte-level BPE: the space before a word belongs to it, so to the [MASK]
        if piece:
            ids.extend(int(t) for t in tokenizer.encode(piece))
    ids.append(special.sep)
    if len(ids) > context_length:
        raise ValueError(f"the text is {len(ids)} tokens with [CLS] and [SEP], longer than the model's "
                         f"context_length={context_length}; shorten it")
    return np.asarray([ids], dtype=np.int64)


def fill_mask(model: Any, tokenizer: Any, text: str, special: SpecialIds, top_k: int = 5
              ) -> list[list[tuple[int, str, float]]]:
    """For each [MASK] in `text`, the top_k (id, decoded token, probability) the masked-LM model predicts there."""
    ids = encode_with_masks(tokenizer, text, special, model.cfg.context_length)
    B = model.B
    with B.no_grad():
        logits = B.to_numpy(model(ids, attention_mask=np.ones_like(ids)))[0].astype(np.float64)  # (t, vocab)
    out = []
    for pos in np.flatnonzero(ids[0] == special.mask):
        z = logits[pos] - logits[pos].max()
        p = np.exp(z) / np.exp(z).sum()
        p[list(special.all())] = 0.0  # a special token is never a fill; the rest keep their softmax share
        top = np.argsort(-p, kind="stable")[:top_k]
        out.append([(int(i), tokenizer.decode([int(i)]), float(p[i])) for i in top])
    return out


class BertInputs:
    """A tokenizer whose encode(text) is BERT's single-sentence input [CLS] + ids + [SEP] (Devlin et al. 2019,
    fig. 2), for datasets that pad what encode returns (gpt.classify.SpamDataset); decode is the tokenizer's."""

    def __init__(self, tokenizer: Any, special: SpecialIds):
        self.tokenizer, self.special = tokenizer, special

    def encode(self, text: str) -> list[int]:
        return [self.special.cls, *(int(i) for i in self.tokenizer.encode(text)), self.special.sep]

    def decode(self, ids: Sequence[int]) -> str:
        keep = [int(i) for i in ids if int(i) not in self.special.all()]
        return self.tokenizer.decode(keep)


__all__ = ["SPECIAL_TOKENS", "SpecialIds", "special_ids_for", "MaskingConfig", "mask_tokens", "MaskedLMDataset",
           "mlm_logits", "mlm_loss", "encode_with_masks", "fill_mask", "BertInputs"]
