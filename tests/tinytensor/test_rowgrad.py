"""The engine's row-sparse gradients (tinytensor.RowGrad, an embedding's backward): every way they meet other
gradients (a tied head's dense one, a second lookup, a computed weight, a second backward, an optimizer's flat
buffer) gives torch's float64 gradients to 1e-12, and the same bits as the dense gradient the engine used before."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinytensor as tt
import tinytensor.functional as F
from tinytensor.optim import AdamW

V, D = 50, 8
_rng = np.random.default_rng(11)
W = _rng.standard_normal((V, D))
IDS = np.array([[5, 5, 5, 1, 49], [0, 7, 1, 5, 3]])  # repeats within and across rows
IDS2 = np.array([[5, 2, 2]])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _loss(kind: str, w, emb, lin, ids, ids2):
    """The same graph in either library (emb, lin: its embedding and linear; ids, ids2: its id tensors)."""
    if kind in ("tied", "tied_and_penalty"):  # an embedding then a head with the same table (GPT-2's tied weights)
        h = emb(ids, w)
        logits = lin(h, w)
        loss = (logits * logits).sum() + (h * h * h).sum()
        # tied_and_penalty: two dense contributions and a sparse one to the same leaf
        return loss + (w * w * w).sum() if kind == "tied_and_penalty" else loss
    if kind == "dense_after_sparse":  # the engine meets w*w's gradient, then the lookup's, then w*3's
        return (w * w).sum() + (emb(ids, w) ** 2).sum() + (w * 3.0).sum()
    if kind == "two_lookups":
        return (emb(ids, w) ** 2).sum() + (emb(ids2, w) ** 3).sum()
    if kind == "computed_weight":  # the table is a non-leaf: its gradient is made dense for Mul's backward
        w2 = w * 2.0
        return (emb(ids, w2) ** 2).sum() + (emb(ids2, w2) ** 3).sum() + (w2 * w2).sum()
    if kind == "shared_dense":  # Add sends one array to w2 and v: the lookup's rows must not be added into it
        w2, v = w * 2.0, w * 3.0
        return ((v + w2) ** 2).sum() + (emb(ids, w2) ** 2).sum()
    return (emb(ids, w) ** 2).sum()


def _loss_ours(kind: str, w: tt.Tensor) -> tt.Tensor:
    return _loss(kind, w, F.embedding, F.linear, tt.Tensor(IDS), tt.Tensor(IDS2))


def _loss_torch(kind: str, w: torch.Tensor) -> torch.Tensor:
    return _loss(kind, w, TF.embedding, TF.linear, torch.tensor(IDS), torch.tensor(IDS2))


KINDS = ["alone", "tied", "tied_and_penalty", "dense_after_sparse", "two_lookups", "computed_weight", "shared_dense"]
SAME_ORDER = [k for k in KINDS if k != "dense_after_sparse"]  # the lookup's gradient arrives last (or alone)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("buffered", [False, True], ids=["grad", "optimizer_buffer"])
def test_matches_torch_float64(kind: str, buffered: bool) -> None:
    w = tt.Parameter(W.copy())
    if buffered:
        AdamW([w], lr=0.1)  # gives w a view into the optimizer's flat gradient buffer
    _loss_ours(kind, w).backward()
    wt = torch.tensor(W.copy(), requires_grad=True)
    _loss_torch(kind, wt).backward()
    assert _rel(w.grad.data, wt.grad.numpy()) <= 1e-12
    if buffered:
        assert np.shares_memory(w.grad.data, w.grad_buffer)


@pytest.mark.parametrize("kind", KINDS)
def test_second_backward_accumulates(kind: str) -> None:
    w = tt.Parameter(W.copy())
    wt = torch.tensor(W.copy(), requires_grad=True)
    for _ in range(2):
        _loss_ours(kind, w).backward()
        _loss_torch(kind, wt).backward()
    assert _rel(w.grad.data, wt.grad.numpy()) <= 1e-12


@pytest.mark.parametrize("kind", SAME_ORDER)
def test_same_bits_as_the_dense_gradient(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the lookup's gradient arrives last (GPT-2's tied table) or alone, the row-sparse path adds the same
    terms in the same order as the dense zeros-plus-rows gradient did; otherwise the engine now sums the dense
    contributions first (a reassociation: float rounding, checked against torch above)."""
    w = tt.Parameter(W.astype(np.float32))
    _loss_ours(kind, w).backward()
    sparse = w.grad.data.copy()
    backward = F.Embedding.backward
    monkeypatch.setattr(F.Embedding, "backward", lambda self, g: tuple(
        r.dense() if isinstance(r, tt.RowGrad) else r for r in backward(self, g)))
    w.grad = None
    _loss_ours(kind, w).backward()
    assert np.array_equal(sparse, w.grad.data)


def test_rowgrad_dense_and_add_into() -> None:
    rows, values = np.array([4, 0]), np.arange(6.0).reshape(2, 3)
    r = tt.RowGrad(rows, values, (5, 3))
    want = np.zeros((5, 3))
    want[4], want[0] = values[0], values[1]
    assert r.shape == (5, 3) and r.dtype == np.float64
    assert np.array_equal(r.dense(), want)
    out = np.ones((5, 3))
    r.add_into(out)
    assert np.array_equal(out, want + 1)


def test_embedding_backward_returns_only_the_used_rows() -> None:
    w = tt.Parameter(W.copy())
    out = F.embedding(tt.Tensor(IDS), w)
    (g,) = out._ctx.backward(np.ones(out.shape))
    assert isinstance(g, tt.RowGrad)
    assert g.rows.tolist() == sorted(set(IDS.ravel().tolist()))
    assert g.values[g.rows.tolist().index(5)].tolist() == [4.0] * D  # id 5 is looked up four times
