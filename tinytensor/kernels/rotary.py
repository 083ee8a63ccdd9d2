"""Rotary position embedding (RoPE; Su et al. 2021, eq. 34) in the "rotate half" layout of Hugging Face's Llama and
the book's Llama bonus code, forward and hand-derived backward. Independent of how the tables are built (theta,
Llama 3 frequency scaling, a cache's position offset): the caller passes cos/sin for the positions at hand.

x (..., t, hd) is split into halves x = (x₁, x₂) of width hd/2; feature i of x₁ pairs with feature i of x₂ and the
pair is rotated by the angle θ_{pos,i} that the tables hold (cos = cos θ, sin = sin θ, both (t, hd) with the same
angles repeated in each half, or any shape that broadcasts to x):

    rotate_half(x) = R x = (−x₂, x₁)
    out = x ⊙ cos + (R x) ⊙ sin,   i.e.  out₁ = x₁ cos₁ − x₂ sin₁,   out₂ = x₂ cos₂ + x₁ sin₂

R is linear with transpose Rᵀ y = (y₂, −y₁) = −R y, so the backward is the transposed rotation (a rotation by −θ
when the halves of the tables agree), and the tables' own gradients are the products with what multiplied them:

    dx = dout ⊙ cos + Rᵀ(dout ⊙ sin),   dcos = dout ⊙ x,   dsin = dout ⊙ R x
(derived in docs/backprop-llama.md §1; the engine sums dcos, dsin over the axes the tables were broadcast along).
"""
from __future__ import annotations

from typing import Any

from ..tensor import get_array_module


def rotate_half(x):
    """R x = (−x₂, x₁): the pairs (x₁ᵢ, x₂ᵢ) turned by 90°."""
    xp = get_array_module(x)
    h = x.shape[-1] // 2
    out = xp.empty_like(x)
    xp.negative(x[..., h:], out=out[..., :h])
    out[..., h:] = x[..., :h]
    return out


def rotate_half_transposed(y):
    """Rᵀ y = (y₂, −y₁): the pairs turned by −90° (R's inverse, since R is orthogonal)."""
    xp = get_array_module(y)
    h = y.shape[-1] // 2
    out = xp.empty_like(y)
    out[..., :h] = y[..., h:]
    xp.negative(y[..., :h], out=out[..., h:])
    return out


def rotary_forward(x, cos, sin):
    """out = x ⊙ cos + rotate_half(x) ⊙ sin for x (..., hd) and tables broadcastable to x."""
    out = rotate_half(x)
    out *= sin
    out += x * cos
    return out


def rotary_backward(dout, x, cos, sin, need_tables: tuple[bool, bool] = (False, False)) -> tuple[Any, Any, Any]:
    """(dx, dcos, dsin) for rotary_forward; dcos / dsin are computed only where need_tables says (else None)."""
    dx = rotate_half_transposed(dout * sin)  # through the rotated term: Rᵀ (dout ⊙ sin)
    dx += dout * cos  # through the direct term
    dcos = dout * x if need_tables[0] else None
    dsin = dout * rotate_half(x) if need_tables[1] else None
    return dx, dcos, dsin


__all__ = ["rotate_half", "rotate_half_transposed", "rotary_forward", "rotary_backward"]
