"""Backprop through one causal multi-head attention block by hand, checked against two autograd engines.

Study material for `docs/backprop-attention.md` (issue 6). One block of the book's ch. 3 `MultiHeadAttention`
(Vaswani et al. 2017, eq. 1), with biases on the Q/K/V projections and attention dropout:

    q = x W_qᵀ + b_q,  k = x W_kᵀ + b_k,  v = x W_vᵀ + b_v      (b, t, d)      projections
    Q, K, V = split_heads(q, k, v)                              (b, nh, t, hd) reshape + transpose
    S  = s · Q Kᵀ,  s = 1/√hd                                   (b, nh, t, t)  scores
    Sm = S + M   (M = −∞ above the diagonal: the causal mask)
    P  = softmax_rows(Sm)
    Pd = P ⊙ D / (1 − p)   (D: a fixed, seeded keep-mask)       attention dropout
    O  = Pd V                                                   (b, nh, t, hd)
    ctx = merge_heads(O)                                        (b, t, d)      transpose + reshape
    out = ctx W_oᵀ + b_o                                        (b, t, d)      output projection

Given a random upstream gradient dout, `backward_by_hand` computes every intermediate gradient in NumPy, one
numbered step per equation. The same block is then differentiated twice more:
  * by tinytensor's autograd, cut into stages at every intermediate (each stage's input is a fresh leaf made with
    `.detach()`-style copying and `requires_grad=True`, and the stages are back-propagated one after another), so
    that tinytensor exposes the gradient of each intermediate; plus the fused `Attention` op with the same keep-mask,
    whose dQ/dK/dV come from `tinytensor/kernels/attention.py:attention_backward`;
  * by PyTorch, reimplemented with primitive ops (the keep-mask applied by hand, not torch's own dropout) and
    `retain_grad()` on every intermediate.
All in float64. The table shows the max abs and relative error of each tensor against both; the script exits 1
if any relative error exceeds 1e-10. Relative error is max|ours − ref| / max(max|ref|, floor) with floor = 1e-6 ×
the largest reference gradient (DESIGN §5). dW_key.bias is mathematically zero (every row of dS sums to 0, so a
constant added to all keys cancels in the softmax) and every engine returns rounding noise there; its denominator
is the size of the terms that cancel, max_f Σ_rows |dk_f|, the natural scale of a sum's rounding error.

Run:  python examples/attention_backprop_by_hand.py [--seed 0] [--dropout 0.1] [--batch 2 --seq 5 --d-model 8 --heads 2]
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np

import tinytensor as tt
from tinytensor import functional as F

RTOL = 1e-10  # the bar every relative error must clear
FLOOR = 1e-6  # × the largest reference gradient: the denominator floor for mathematically-zero gradients

# Every tensor the table reports, in the order the backward pass meets them. "out" is the forward check; the
# "[fused]" rows are the fused scaled-dot-product kernel's gradients for the same Q, K, V and keep-mask.
ROWS = ("out", "dout_proj.weight", "dout_proj.bias", "dctx", "dO", "dV", "dPd", "dP", "dSm", "dS", "dQ", "dK",
        "dQ [fused]", "dK [fused]", "dV [fused]", "dq", "dk", "dv", "dW_query.weight", "dW_query.bias",
        "dW_key.weight", "dW_key.bias", "dW_value.weight", "dW_value.bias", "dx")
# Gradients that are mathematically zero, and the gradient whose rows they sum: Σ_rows dk = s Σ_i (Σ_j dS_ij) Q_i = 0
# because every row of dS sums to 0 (a constant added to every key shifts each row of scores by a constant).
ZERO_ROWS = {"dW_key.bias": "dk"}

Arrays = dict[str, np.ndarray]


# ---------------------------------------------------------------- inputs
def make_inputs(seed: int, batch: int, seq: int, d_model: int) -> tuple[np.ndarray, Arrays, np.ndarray,
                                                                          np.random.Generator]:
    """(x, parameters, dout, the generator) drawn from one seeded generator; the keep-mask is drawn from it next."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq, d_model))
    params = {}
    for name in ("W_query", "W_key", "W_value", "out_proj"):
        params[f"{name}.weight"] = rng.standard_normal((d_model, d_model)) / math.sqrt(d_model)  # (out, in)
        params[f"{name}.bias"] = 0.1 * rng.standard_normal(d_model)  # non-zero, so their gradients are exercised
    dout = rng.standard_normal((batch, seq, d_model))  # random upstream gradient (never .sum(): DESIGN §5)
    return x, params, dout, rng


def make_keep_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """Boolean keep-mask D of the scores' shape: True with probability 1 − p (all True for p = 0)."""
    return rng.random(shape) >= p


def causal_allowed(t: int) -> np.ndarray:
    """(t, t) boolean: query i may attend key j exactly when j ≤ i (the complement of the book's triu mask)."""
    return np.tril(np.ones((t, t), dtype=bool))


def split_heads(a: np.ndarray, nh: int) -> np.ndarray:
    """(b, t, d) -> (b, nh, t, hd): reshape the feature axis into heads, then bring heads before time."""
    b, t, d = a.shape
    return a.reshape(b, t, nh, d // nh).transpose(0, 2, 1, 3)  # (b, nh, t, hd)


def merge_heads(a: np.ndarray) -> np.ndarray:
    """(b, nh, t, hd) -> (b, t, nh·hd): the exact inverse of split_heads (transpose back, then reshape)."""
    b, nh, t, hd = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, nh * hd)  # (b, t, d)


# ---------------------------------------------------------------- forward and backward by hand
def forward_by_hand(x: np.ndarray, params: Arrays, keep: np.ndarray, p: float, nh: int) -> Arrays:
    """Every intermediate of the block, in NumPy; the cache that the backward reads."""
    c: Arrays = {"x": x}
    # F1. projections: q = x W_qᵀ + b_q (and k, v)                                              (b, t, d)
    c["q"] = x @ params["W_query.weight"].T + params["W_query.bias"]
    c["k"] = x @ params["W_key.weight"].T + params["W_key.bias"]
    c["v"] = x @ params["W_value.weight"].T + params["W_value.bias"]
    # F2. split heads                                                                           (b, nh, t, hd)
    c["Q"], c["K"], c["V"] = split_heads(c["q"], nh), split_heads(c["k"], nh), split_heads(c["v"], nh)
    hd = c["Q"].shape[-1]
    c["scale"] = np.array(1.0 / math.sqrt(hd))
    # F3. scores S = s · Q Kᵀ                                                                   (b, nh, t, t)
    c["S"] = c["scale"] * (c["Q"] @ c["K"].swapaxes(-1, -2))
    # F4. causal mask: Sm = S where allowed, −∞ elsewhere
    c["allowed"] = causal_allowed(x.shape[1])
    c["Sm"] = np.where(c["allowed"], c["S"], -np.inf)
    # F5. P = softmax over each row (max-shifted; exp(−∞) = 0 gives the masked weights)
    e = np.exp(c["Sm"] - c["Sm"].max(axis=-1, keepdims=True))
    c["P"] = e / e.sum(axis=-1, keepdims=True)
    # F6. inverted dropout with the fixed keep-mask D: Pd = P ⊙ D / (1 − p)
    c["drop"] = keep / (1.0 - p)  # D / (1 − p), float
    c["Pd"] = c["P"] * c["drop"]
    # F7. weighted sum O = Pd V                                                                 (b, nh, t, hd)
    c["O"] = c["Pd"] @ c["V"]
    # F8. merge heads                                                                           (b, t, d)
    c["ctx"] = merge_heads(c["O"])
    # F9. output projection out = ctx W_oᵀ + b_o                                                (b, t, d)
    c["out"] = c["ctx"] @ params["out_proj.weight"].T + params["out_proj.bias"]
    return c


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y = x Wᵀ + b over rows n = (batch, time):  dx = dy W,  dW = Σ_n dy_nᵀ x_n,  db = Σ_n dy_n."""
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])  # (N, out), (N, in)
    return dy @ w, dy2.T @ x2, dy2.sum(axis=0)


def dropout_backward(dPd: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Pd = P ⊙ D/(1 − p) is elementwise linear in P:  dP = dPd ⊙ D/(1 − p) (the same mask, the same scale)."""
    return dPd * drop


def softmax_rows_backward(dP: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Row-wise softmax Jacobian J = diag(p) − p pᵀ applied to dP:  dSm = P ⊙ (dP − rowsum(dP ⊙ P))."""
    return P * (dP - (dP * P).sum(axis=-1, keepdims=True))


def backward_by_hand(c: Arrays, params: Arrays, dout: np.ndarray) -> Arrays:
    """Every intermediate gradient of the block, one numbered step per equation (docs/backprop-attention.md)."""
    g: Arrays = {}
    # B1. out = ctx W_oᵀ + b_o:  dW_o = Σ dout ᵀ ctx,  db_o = Σ dout,  dctx = dout W_o
    g["dctx"], g["dout_proj.weight"], g["dout_proj.bias"] = linear_backward(dout, c["ctx"], params["out_proj.weight"])
    # B2. ctx = merge_heads(O) is a permutation of entries: dO = split_heads(dctx), the inverse permutation
    g["dO"] = split_heads(g["dctx"], c["O"].shape[1])
    # B3. O = Pd V (per batch and head):  dPd = dO Vᵀ,  dV = Pdᵀ dO
    g["dPd"] = g["dO"] @ c["V"].swapaxes(-1, -2)
    g["dV"] = c["Pd"].swapaxes(-1, -2) @ g["dO"]
    # B4. Pd = P ⊙ D/(1 − p):  dP = dPd ⊙ D/(1 − p)
    g["dP"] = dropout_backward(g["dPd"], c["drop"])
    # B5. P = softmax_rows(Sm):  dSm_ij = Σ_k dP_ik P_ik (δ_jk − P_ij) = P_ij (dP_ij − Σ_k dP_ik P_ik)
    g["dSm"] = softmax_rows_backward(g["dP"], c["P"])
    # B6. Sm = S + M with M a constant: dS = dSm. No separate step: where M = −∞, P = 0 and B5 already gave 0.
    g["dS"] = g["dSm"]
    # B7. S = s · Q Kᵀ is bilinear:  dQ = s · dS K,  dK = s · dSᵀ Q
    g["dQ"] = c["scale"] * (g["dS"] @ c["K"])
    g["dK"] = c["scale"] * (g["dS"].swapaxes(-1, -2) @ c["Q"])
    # B8. Q = split_heads(q): dq = merge_heads(dQ) (and k, v)
    g["dq"], g["dk"], g["dv"] = merge_heads(g["dQ"]), merge_heads(g["dK"]), merge_heads(g["dV"])
    # B9. q = x W_qᵀ + b_q (and k, v): dW = Σ dqᵀ x,  db = Σ dq,  and each projection's share of dx = dq W_q
    dx_parts = []
    for proj, name in (("dq", "W_query"), ("dk", "W_key"), ("dv", "W_value")):
        dx_part, g[f"d{name}.weight"], g[f"d{name}.bias"] = linear_backward(g[proj], c["x"], params[f"{name}.weight"])
        dx_parts.append(dx_part)
    # B10. x feeds three projections: its gradient is the sum of the three routes
    g["dx"] = dx_parts[0] + dx_parts[1] + dx_parts[2]
    return g


# ---------------------------------------------------------------- tinytensor's autograd, stage by stage
def _leaf(a: np.ndarray) -> tt.Tensor:
    """A fresh leaf holding a copy of `a`: the cut between two stages (what `.detach().requires_grad_()` does)."""
    return tt.Tensor(np.array(a, copy=True), requires_grad=True)


def tinytensor_gradients(x: np.ndarray, params: Arrays, keep: np.ndarray, p: float, nh: int,
                         dout: np.ndarray) -> Arrays:
    """The same block through tinytensor, cut at every intermediate so each one's gradient is a leaf's `.grad`.

    Stage k's output is back-propagated with the gradient that stage k + 1 left on its input leaf; a leaf used by
    two stages (x by three projections, V by the weighted sum) accumulates both, as one whole graph would.
    """
    b, t, d = x.shape
    hd = d // nh
    s = 1.0 / math.sqrt(hd)
    allowed = causal_allowed(t)
    L = {name: _leaf(a) for name, a in params.items()}
    lx = _leaf(x)
    # stage A: projections (fused linear: tinytensor/functional.py:Linear)
    q = F.linear(lx, L["W_query.weight"], L["W_query.bias"])
    k = F.linear(lx, L["W_key.weight"], L["W_key.bias"])
    v = F.linear(lx, L["W_value.weight"], L["W_value.bias"])
    lq, lk, lv = _leaf(q.data), _leaf(k.data), _leaf(v.data)
    # stage B: split heads (Reshape + Transpose primitives)
    Q = lq.reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
    K = lk.reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
    V = lv.reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
    lQ, lK, lV = _leaf(Q.data), _leaf(K.data), _leaf(V.data)
    # stage C: scores
    S = (lQ @ lK.transpose(-2, -1)) * s  # (b, nh, t, t)
    lS = _leaf(S.data)
    # stage D: causal mask (MaskedFill primitive)
    Sm = lS.masked_fill(~allowed, float("-inf"))
    lSm = _leaf(Sm.data)
    # stage E: softmax (fused: tinytensor/kernels/softmax.py:softmax_backward)
    P = F.softmax(lSm, dim=-1)
    lP = _leaf(P.data)
    # stage F: dropout with the explicit keep-mask (tinytensor/kernels/dropout.py:dropout_backward)
    Pd = F.Dropout.apply(lP, keep=keep, p=p)
    lPd = _leaf(Pd.data)
    # stage G: weighted sum
    O = lPd @ lV  # (b, nh, t, hd)
    lO = _leaf(O.data)
    # stage H: merge heads
    ctx = lO.transpose(1, 2).reshape(b, t, d)  # (b, t, d)
    lctx = _leaf(ctx.data)
    # stage I: output projection
    out = F.linear(lctx, L["out_proj.weight"], L["out_proj.bias"])

    # backward, last stage first: each stage's output receives the gradient its successor left on the leaf
    out.backward(dout)
    for stage_out, next_leaf in ((ctx, lctx), (O, lO), (Pd, lPd), (P, lP), (Sm, lSm), (S, lS),
                                 (Q, lQ), (K, lK), (V, lV), (q, lq), (k, lk), (v, lv)):
        stage_out.backward(next_leaf.grad)

    # the fused op on the same Q, K, V, mask and keep-mask (keep=None exercises its no-dropout path)
    fQ, fK, fV = _leaf(lQ.data), _leaf(lK.data), _leaf(lV.data)
    fused = F.Attention.apply(fQ, fK, fV, attn_mask=None, is_causal=True, scale=s,
                              keep=keep if p > 0 else None, p=p)
    fused.backward(lO.grad)

    grads = {"out": out.data, "dctx": lctx.grad.data, "dO": lO.grad.data, "dV": lV.grad.data,
             "dPd": lPd.grad.data, "dP": lP.grad.data, "dSm": lSm.grad.data, "dS": lS.grad.data,
             "dQ": lQ.grad.data, "dK": lK.grad.data, "dQ [fused]": fQ.grad.data, "dK [fused]": fK.grad.data,
             "dV [fused]": fV.grad.data, "dq": lq.grad.data, "dk": lk.grad.data, "dv": lv.grad.data,
             "dx": lx.grad.data}
    grads.update({f"d{name}": leaf.grad.data for name, leaf in L.items()})
    assert np.abs(fused.data - lO.data).max() <= 1e-12 * np.abs(lO.data).max(), "fused forward != staged forward"
    return grads


# ---------------------------------------------------------------- PyTorch's autograd
def torch_gradients(x: np.ndarray, params: Arrays, keep: np.ndarray, p: float, nh: int, dout: np.ndarray) -> Arrays:
    """The same block in PyTorch, written with primitive ops so the keep-mask can be applied by hand;
    `retain_grad()` keeps each intermediate's gradient."""
    import torch

    b, t, d = x.shape
    hd = d // nh
    T = {name: torch.tensor(a, requires_grad=True) for name, a in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    allowed = torch.tensor(causal_allowed(t))
    drop = torch.tensor(keep / (1.0 - p))  # D / (1 − p)
    lin = torch.nn.functional.linear
    inter: dict[str, Any] = {}
    inter["q"] = lin(tx, T["W_query.weight"], T["W_query.bias"])
    inter["k"] = lin(tx, T["W_key.weight"], T["W_key.bias"])
    inter["v"] = lin(tx, T["W_value.weight"], T["W_value.bias"])
    inter["Q"] = inter["q"].reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
    inter["K"] = inter["k"].reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
    inter["V"] = inter["v"].reshape(b, t, nh, hd).transpose(1, 2)  # (b, nh, t, hd)
    inter["S"] = (inter["Q"] @ inter["K"].transpose(-2, -1)) / math.sqrt(hd)  # (b, nh, t, t)
    inter["Sm"] = inter["S"].masked_fill(~allowed, float("-inf"))
    inter["P"] = torch.softmax(inter["Sm"], dim=-1)
    inter["Pd"] = inter["P"] * drop
    inter["O"] = inter["Pd"] @ inter["V"]  # (b, nh, t, hd)
    inter["ctx"] = inter["O"].transpose(1, 2).reshape(b, t, d)  # (b, t, d)
    for tensor in inter.values():
        tensor.retain_grad()
    out = lin(inter["ctx"], T["out_proj.weight"], T["out_proj.bias"])
    out.backward(torch.tensor(dout))
    grads = {f"d{name}": tensor.grad.numpy() for name, tensor in inter.items()}
    grads.update({f"d{name}": leaf.grad.numpy() for name, leaf in T.items()})
    grads["out"], grads["dx"] = out.detach().numpy(), tx.grad.numpy()
    for head in ("Q", "K", "V"):  # the fused kernel is checked against the same reference gradients
        grads[f"d{head} [fused]"] = grads[f"d{head}"]
    return grads


# ---------------------------------------------------------------- comparison
def errors(ours: np.ndarray, ref: np.ndarray, floor: float) -> tuple[float, float]:
    """(max |ours − ref|, that divided by max(max |ref|, floor)); a shape mismatch or nan counts as infinite."""
    if ours.shape != ref.shape:
        return math.inf, math.inf
    diff = float(np.abs(ours - ref).max())
    if math.isnan(diff):
        return math.inf, math.inf
    return diff, diff / max(float(np.abs(ref).max()), floor, 1e-300)


def compare(by_hand: Arrays, refs: dict[str, Arrays]) -> list[tuple[str, tuple[int, ...], list[float]]]:
    """One row per tensor in ROWS: (name, shape, [abs, rel] per reference engine).

    Denominators: max(max |ref|, floor), floor = 1e-6 × the engine's largest gradient (DESIGN §5). The one
    mathematically-zero tensor, dW_key.bias = Σ_rows dk, is measured against the size of the terms that cancel,
    max_f Σ_rows |dk_f| (the scale of a sum's rounding error), which the floor alone does not reach reliably at
    these small sizes: noise over the floor lands near 1e-10.
    """
    table = []
    for name in ROWS:
        cells: list[float] = []
        for grads in refs.values():
            floor = FLOOR * max(float(np.abs(g).max()) for n, g in grads.items() if n != "out")
            if name in ZERO_ROWS:
                terms = grads[ZERO_ROWS[name]]
                floor = max(floor, float(np.abs(terms.reshape(-1, terms.shape[-1])).sum(axis=0).max()))
            cells.extend(errors(by_hand[name], grads[name], floor))
        table.append((name, tuple(by_hand[name].shape), cells))
    return table


def format_table(table: list[tuple[str, tuple[int, ...], list[float]]]) -> str:
    """Markdown table: tensor | shape | abs/rel error vs tinytensor | abs/rel error vs torch."""
    head = ["tensor", "shape", "max abs err vs tinytensor", "max rel err vs tinytensor", "max abs err vs torch",
            "max rel err vs torch"]
    rows = [[name, "x".join(map(str, shape))] + [f"{v:.2e}" for v in cells] for name, shape, cells in table]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def run_check(seed: int, batch: int, seq: int, d_model: int, heads: int, dropout: float) -> tuple[str, float]:
    """Build the block, differentiate it three ways, and return (the table, the worst relative error)."""
    x, params, dout, rng = make_inputs(seed, batch, seq, d_model)
    keep = make_keep_mask(rng, (batch, heads, seq, seq), dropout)  # one mask D, shared by all three computations
    cache = forward_by_hand(x, params, keep, dropout, heads)
    by_hand = backward_by_hand(cache, params, dout)
    by_hand["out"] = cache["out"]
    for head in ("Q", "K", "V"):  # the fused kernel's rows are checked against the same by-hand gradients
        by_hand[f"d{head} [fused]"] = by_hand[f"d{head}"]
    refs = {"tinytensor": tinytensor_gradients(x, params, keep, dropout, heads, dout),
            "torch": torch_gradients(x, params, keep, dropout, heads, dout)}
    table = compare(by_hand, refs)
    worst = max(max(cells[1::2]) for _, _, cells in table)  # the relative-error columns
    return format_table(table), worst


DERIVATION = "docs/backprop-attention.md"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="Backprop through one attention block by hand, checked against "
                                             f"tinytensor's autograd and PyTorch's (float64); the derivation is "
                                             f"{DERIVATION}.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="seed for inputs, weights, keep-mask and dout")
    ap.add_argument("--batch", type=int, default=2, help="batch size b")
    ap.add_argument("--seq", type=int, default=5, help="sequence length t")
    ap.add_argument("--d-model", type=int, default=8, help="model width d (a multiple of --heads)")
    ap.add_argument("--heads", type=int, default=2, help="number of heads nh")
    ap.add_argument("--dropout", type=float, default=0.1, help="attention dropout probability p in [0, 1)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table; 0 when every relative error is ≤ 1e-10, 1 otherwise."""
    ap = _parser()
    args = ap.parse_args(argv)
    if min(args.batch, args.seq, args.d_model, args.heads) < 1:
        ap.error("--batch, --seq, --d-model and --heads must be positive")
    if args.d_model % args.heads:
        ap.error(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
    if not 0.0 <= args.dropout < 1.0:
        ap.error(f"--dropout {args.dropout} must lie in [0, 1)")
    table, worst = run_check(args.seed, args.batch, args.seq, args.d_model, args.heads, args.dropout)
    print(f"attention block: batch={args.batch} seq={args.seq} d_model={args.d_model} heads={args.heads} "
          f"dropout={args.dropout} seed={args.seed} (float64)")
    print(f"the derivation checked here: {DERIVATION} (each row below is one of its steps, computed in that order "
          f"by backward_by_hand in this file)")
    print(table)
    ok = worst <= RTOL
    print(f"rel err = max|by hand - ref| / max(max|ref|, {FLOOR:.0e} x the largest gradient); dW_key.bias is "
          f"mathematically zero: its denominator is max over features of sum over rows of |dk|")
    print(f"worst relative error: {worst:.2e} ({'OK' if ok else 'FAIL'}: bar {RTOL:.0e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
