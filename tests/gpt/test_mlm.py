"""The masked-LM objective's data side (gpt/mlm.py): BERT's 15% / 80-10-10 proportions within binomial bounds over
~100k tokens, special tokens never chosen, labels -100 elsewhere, the same masks after a DataLoader resume and new
ones in a later epoch, the head-on-labelled-rows loss equal to the full cross-entropy (numpy and torch), and the
fill-mask text encoding and its errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

import backends
from gpt.bert import BertConfig, BertModel
from gpt.data import DataLoader
from gpt.mlm import (MaskedLMDataset, MaskingConfig, SpecialIds, encode_with_masks, fill_mask, mask_tokens,
                     mlm_loss, special_ids_for)

VOCAB = 1000
SPECIAL = SpecialIds(pad=0, cls=1, sep=2, mask=3)


def _within(count: int, n: int, p: float, z: float = 5.0) -> bool:
    """count is within z standard deviations of a Binomial(n, p)'s mean (5σ: a false alarm once in ~2 million)."""
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_masking_proportions_within_binomial_bounds():
    rng = np.random.default_rng(0)
    ids = rng.integers(4, VOCAB, (400, 256))
    ids[:, 0], ids[:, -1] = SPECIAL.cls, SPECIAL.sep
    ids[::7, 200:] = SPECIAL.pad  # some padding, never eligible
    inputs, labels = mask_tokens(ids, np.random.default_rng(1), SPECIAL, VOCAB)
    eligible = ~np.isin(ids, SPECIAL.all())
    chosen = labels != -100
    n, k = int(eligible.sum()), int(chosen.sum())
    assert n > 90_000
    assert _within(k, n, 0.15)
    assert not (chosen & ~eligible).any(), "a special token was chosen"
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    as_mask = int((inputs[chosen] == SPECIAL.mask).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    swapped = k - as_mask - kept
    r = VOCAB - 4  # a random replacement equals the original with probability 1/r
    assert _within(as_mask, k, 0.8)
    assert _within(swapped, k, 0.1 * (1 - 1 / r))
    assert _within(kept, k, 0.1 + 0.1 / r)
    assert not np.isin(inputs[chosen & (inputs != ids) & (inputs != SPECIAL.mask)], SPECIAL.all()).any()


def test_a_batch_always_has_a_label():
    ids = np.array([[SPECIAL.cls, 10, SPECIAL.sep]])
    for seed in range(50):
        _, labels = mask_tokens(ids, np.random.default_rng(seed), SPECIAL, VOCAB, MaskingConfig(mask_prob=0.01))
        assert (labels != -100).sum() >= 1 and labels[0, 1] == 10


def test_masking_config_checks():
    with pytest.raises(ValueError, match=r"mask_prob=0 must lie in \(0, 1\]"):
        MaskingConfig(mask_prob=0)
    with pytest.raises(ValueError, match=r"replace_prob=0.9 and random_prob=0.2 must be >= 0 with a sum <= 1"):
        MaskingConfig(replace_prob=0.9, random_prob=0.2)


def _dataset(seed: int = 5) -> MaskedLMDataset:
    stream = np.random.default_rng(2).integers(4, VOCAB, 20 * 30)
    return MaskedLMDataset(stream, context_length=32, special=SPECIAL, vocab_size=VOCAB, seed=seed)


def test_windows_are_wrapped_in_cls_and_sep():
    ds = _dataset()
    assert len(ds) == 20
    inputs, labels, am = ds.get_batch([3, 0])
    assert inputs.shape == labels.shape == am.shape == (2, 32)
    assert (inputs[:, 0] == SPECIAL.cls).all() and (inputs[:, -1] == SPECIAL.sep).all() and am.all()
    assert (labels[:, [0, -1]] == -100).all()
    original = np.where(labels != -100, labels, inputs)[:, 1:-1]
    np.testing.assert_array_equal(original, ds.windows[[3, 0]])


def test_same_seed_same_masks_after_a_resume_and_new_masks_next_epoch():
    ds = _dataset()
    run = DataLoader(ds, batch_size=4, shuffle=True, seed=9)
    stream = [run.next_batch() for _ in range(12)]  # 5 batches per epoch: crosses two epoch ends
    resumed_from = DataLoader(_dataset(), batch_size=4, shuffle=True, seed=9)
    for _ in range(7):
        resumed_from.next_batch()
    state = resumed_from.state_dict()
    resumed = DataLoader(_dataset(), batch_size=4, shuffle=True, seed=9)
    resumed.load_state_dict(state)
    for want in stream[7:]:
        got = resumed.next_batch()
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # the epochs visit the same windows in other batches: other masks
    first, second = (np.concatenate([b[1] for b in stream[e * 5:(e + 1) * 5]]) for e in (0, 1))
    assert (first != -100).sum() > 0 and not np.array_equal(np.sort(first, axis=None), np.sort(second, axis=None))
    other_seed = DataLoader(_dataset(seed=6), batch_size=4, shuffle=True, seed=9).next_batch()
    assert not np.array_equal(other_seed[1], stream[0][1])


def test_special_ids_appended_for_a_tokenizer_without_them():
    class Bytes:
        n_vocab = 256

    special, vocab = special_ids_for(Bytes(), 256)
    assert special == SpecialIds(256, 257, 258, 259) and vocab == 260

    class WordPieceLike:
        def token_to_id(self, t):
            return {"[PAD]": 0, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}.get(t)

    assert special_ids_for(WordPieceLike(), 30522) == (SpecialIds(0, 101, 102, 103), 30522)
    from tokenizer.wordpiece import WordPiece

    wp = WordPiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat"])
    assert special_ids_for(wp, 6) == (SpecialIds(0, 2, 3, 4), 6)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_mlm_loss_equals_full_cross_entropy(backend):
    B = backends.get_backend(backend, dtype="float64")
    model = BertModel(BertConfig(vocab_size=VOCAB, context_length=32, emb_dim=16, n_heads=2, n_layers=1,
                                 hidden_dim=32, drop_rate=0.0, att_drop_rate=0.0), backend=B, seed=1)
    inputs, labels, am = _dataset().get_batch([1, 2, 3])
    am[2, 20:] = 0
    labels[2, 20:] = -100
    fast = mlm_loss(model, inputs, labels, am)
    full = B.F.cross_entropy(model(inputs, attention_mask=am).reshape(-1, VOCAB), B.tensor(labels.reshape(-1)),
                             ignore_index=-100)
    assert abs(float(B.to_numpy(fast)) - float(B.to_numpy(full))) <= 1e-12
    fast.backward()
    g = B.to_numpy(model.tok_emb.weight.grad).copy()
    model.zero_grad()
    full.backward()
    assert np.abs(g - B.to_numpy(model.tok_emb.weight.grad)).max() <= 1e-12 * np.abs(g).max()


class _Words:
    """A toy whole-word tokenizer: one id per known word, spaces dropped."""

    words = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "."]

    def encode(self, text):
        return [self.words.index(w) for w in text.replace(".", " .").split()]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


def test_encode_with_masks_and_its_errors():
    ids = encode_with_masks(_Words(), "the cat [MASK] on the [MASK].", SPECIAL, 16)
    np.testing.assert_array_equal(ids, [[1, 4, 5, 3, 7, 4, 3, 9, 2]])
    with pytest.raises(ValueError, match=r"the text has no \[MASK\] to fill"):
        encode_with_masks(_Words(), "the cat sat", SPECIAL, 16)
    with pytest.raises(ValueError, match=r"the text is 9 tokens with \[CLS\] and \[SEP\], longer than the model's "
                                         r"context_length=8"):
        encode_with_masks(_Words(), "the cat [MASK] on the [MASK].", SPECIAL, 8)


def test_fill_mask_ranks_candidates_by_probability():
    model = BertModel(BertConfig(vocab_size=10, context_length=16, emb_dim=8, n_heads=2, n_layers=1, hidden_dim=16),
                      seed=3)
    out = fill_mask(model, _Words(), "the [MASK] sat on the [MASK].", SPECIAL, top_k=3)
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    for cands in out:
        probs = [p for _, _, p in cands]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert all(i not in SPECIAL.all() and tok == _Words.words[i] for i, tok, _ in cands)
