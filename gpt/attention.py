"""The attention family of the book's chapter 3, each class adding one idea, written once for every backend.

SelfAttention_v1 (raw weight matrices, §3.4.1) -> SelfAttention_v2 (Linear layers, §3.4.2) -> CausalAttention
(causal mask + dropout on the attention weights, §3.5) -> MultiHeadAttentionWrapper (a list of causal heads,
concatenated, §3.6.1) -> MultiHeadAttention (one set of projections split into heads, plus an output projection,
§3.6.2: the one GPTModel uses). Attention itself is softmax(QKᵀ / √d_k) V (Vaswani et al. 2017, eq. 1).

MultiHeadAttention calls the fused `B.F.scaled_dot_product_attention` by default; `use_sdpa=False` spells the book's
masked_fill(-inf) + softmax + dropout out with tensor ops. It also takes a per-layer KV cache (gpt/kv_cache.py):
the new tokens' queries attend over every cached key with a bottom-right-aligned causal mask.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from backends.base import Backend
from .nn import Dropout, Linear, Module, ModuleList, RMSNorm, as_rng


def _causal_block_mask(B: Backend, context_length: int) -> Any:
    """The book's mask: True above the diagonal, i.e. where query i would see a later key j > i (to be blocked)."""
    return B.tensor(np.triu(np.ones((context_length, context_length), dtype=bool), k=1))


class SelfAttention_v1(Module):
    """Self-attention with trainable weight matrices W (d_in, d_out) applied as x @ W (book §3.4.1).

    Weights are uniform in [0, 1), as the book's torch.rand.
    """

    def __init__(self, B: Backend, d_in: int, d_out: int, rng: np.random.Generator | None = None):
        rng = as_rng(rng)
        self.B = B
        self.W_query = B.parameter(rng.random((d_in, d_out)))
        self.W_key = B.parameter(rng.random((d_in, d_out)))
        self.W_value = B.parameter(rng.random((d_in, d_out)))

    def forward(self, x: Any) -> Any:
        keys = x @ self.W_key        # (..., t, d_out)
        queries = x @ self.W_query   # (..., t, d_out)
        values = x @ self.W_value    # (..., t, d_out)
        attn_scores = queries @ keys.transpose(-2, -1)  # (..., t, t)
        attn_weights = self.B.F.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values  # (..., t, d_out)


class SelfAttention_v2(Module):
    """Self-attention with Linear projections (book §3.4.2): the same math, weights stored (out, in)."""

    def __init__(self, B: Backend, d_in: int, d_out: int, qkv_bias: bool = False,
                 rng: np.random.Generator | None = None):
        rng = as_rng(rng)
        self.B = B
        self.W_query = Linear(B, d_in, d_out, bias=qkv_bias, rng=rng)
        self.W_key = Linear(B, d_in, d_out, bias=qkv_bias, rng=rng)
        self.W_value = Linear(B, d_in, d_out, bias=qkv_bias, rng=rng)

    def forward(self, x: Any) -> Any:
        keys, queries, values = self.W_key(x), self.W_query(x), self.W_value(x)  # (..., t, d_out) each
        attn_scores = queries @ keys.transpose(-2, -1)  # (..., t, t)
        attn_weights = self.B.F.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values  # (..., t, d_out)


class CausalAttention(Module):
    """One causal head (book §3.5): future keys masked to −inf before the softmax, dropout on the weights."""

    def __init__(self, B: Backend, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False,
                 rng: np.random.Generator | None = None):
        rng = as_rng(rng)
        self.B, self.d_out = B, d_out
        self.W_query = Linear(B, d_in, d_out, bias=qkv_bias, rng=rng)
        self.W_key = Linear(B, d_in, d_out, bias=qkv_bias, rng=rng)
        self.W_value = Linear(B, d_in, d_out, bias=qkv_bias, rng=rng)
        self.dropout = Dropout(B, dropout)
        self.mask = _causal_block_mask(B, context_length)  # a constant, not a parameter: not in state_dict

    def forward(self, x: Any) -> Any:
        b, num_tokens, d_in = x.shape
        keys, queries, values = self.W_key(x), self.W_query(x), self.W_value(x)  # (b, t, d_out) each
        attn_scores = queries @ keys.transpose(1, 2)  # (b, t, t)
        attn_scores = attn_scores.masked_fill(self.mask[:num_tokens, :num_tokens], float("-inf"))
        attn_weights = self.B.F.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values  # (b, t, d_out)


class MultiHeadAttentionWrapper(Module):
    """num_heads independent CausalAttention heads, outputs concatenated: (b, t, num_heads · d_out) (book §3.6.1)."""

    def __init__(self, B: Backend, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, rng: np.random.Generator | None = None):
        rng = as_rng(rng)
        self.B = B
        self.heads = ModuleList([CausalAttention(B, d_in, d_out, context_length, dropout, qkv_bias, rng=rng)
                                 for _ in range(num_heads)])

    def forward(self, x: Any) -> Any:
        return self.B.cat([head(x) for head in self.heads], dim=-1)  # (b, t, num_heads · d_out)


class MultiHeadAttention(Module):
    """Causal multi-head self-attention (book §3.6.2): one projection each for Q, K, V split into heads.

    `proj_std`: the init std of `out_proj.weight` (GPTModel scales it by 1/√(2·n_layers), GPT-2 §2.3).
    `use_sdpa=False` computes attention with the book's explicit mask + softmax + dropout instead of the fused op.
    `flash=True` uses the backend's memory-efficient tiled attention (`B.flash_attention`, the FlashAttention
    algorithm) when no cache is involved (and no key/value heads are shared); on torch that is sdpa, which already
    picks such a kernel itself.
    What Llama 3 and Qwen3 add, each an option that is off for the book's GPT-2:
    `num_kv_heads` < num_heads: grouped-query attention (Ainslie et al. 2023), each key/value head shared by
    num_heads / num_kv_heads query heads (sdpa's `enable_gqa`; the cache stores only the key/value heads);
    `head_dim`: the width of a head when it is not d_out / num_heads (Qwen3), so queries are num_heads · head_dim
    wide and out_proj maps that back to d_out; `rope`: a gpt.rope.RoPE that rotates queries and keys by position
    instead of a learned position embedding; `qk_norm`: an RMSNorm over each head's query and key before RoPE
    (Qwen3, after Dehghani et al. 2023); `out_bias`: whether out_proj has a bias (GPT-2 yes, Llama no).
    """

    def __init__(self, B: Backend, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, rng: np.random.Generator | None = None, use_sdpa: bool = True,
                 proj_std: float = 0.02, flash: bool = False, num_kv_heads: int | None = None,
                 head_dim: int | None = None, out_bias: bool = True, rope: Any = None, qk_norm: bool = False,
                 norm_eps: float = 1e-6):
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads <= 0 or (head_dim is None and d_out % num_heads):
            raise ValueError(f"d_out={d_out} must be divisible by num_heads={num_heads}; pick an emb_dim that is a "
                             f"multiple of n_heads (or give head_dim)")
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads} (each "
                             f"key/value head serves a whole group of query heads)")
        if num_kv_heads != num_heads and not use_sdpa:
            raise ValueError("grouped-query attention (num_kv_heads < num_heads) needs use_sdpa=True")
        rng = as_rng(rng)
        self.B, self.d_out, self.num_heads, self.num_kv_heads = B, d_out, num_heads, num_kv_heads
        self.head_dim = d_out // num_heads if head_dim is None else int(head_dim)
        self.context_length, self.dropout_p, self.use_sdpa = context_length, float(dropout), use_sdpa
        self.flash = flash
        q_width, kv_width = num_heads * self.head_dim, num_kv_heads * self.head_dim
        self.W_query = Linear(B, d_in, q_width, bias=qkv_bias, rng=rng)
        self.W_key = Linear(B, d_in, kv_width, bias=qkv_bias, rng=rng)
        self.W_value = Linear(B, d_in, kv_width, bias=qkv_bias, rng=rng)
        self.out_proj = Linear(B, q_width, d_out, bias=out_bias, rng=rng, std=proj_std)
        if qk_norm:
            self.q_norm = RMSNorm(B, self.head_dim, eps=norm_eps)
            self.k_norm = RMSNorm(B, self.head_dim, eps=norm_eps)
        self._rope = rope   # shared by every layer; "_": holds no parameters, so not walked
        self.dropout = Dropout(B, dropout)

    def _heads(self, x: Any, positions: Any) -> tuple[Any, Any, Any]:
        """Queries (b, nh, t, hd) and keys, values (b, n_kv, t, hd) of the tokens at `positions` (the first one,
        an int, or per-row positions (b, t))."""
        b, t, _ = x.shape
        hd = self.head_dim
        queries = self.W_query(x).reshape(b, t, self.num_heads, hd).transpose(1, 2)   # (b, nh, t, hd)
        keys = self.W_key(x).reshape(b, t, self.num_kv_heads, hd).transpose(1, 2)     # (b, n_kv, t, hd)
        values = self.W_value(x).reshape(b, t, self.num_kv_heads, hd).transpose(1, 2)  # (b, n_kv, t, hd)
        if hasattr(self, "q_norm"):   # Qwen3: normalise each head's q and k, then rotate
            queries, keys = self.q_norm(queries), self.k_norm(keys)
        if self._rope is not None:
            queries, keys = self._rope(queries, positions), self._rope(keys, positions)
        return queries, keys, values

    def forward(self, x: Any, cache: Any = None) -> Any:
        """x (b, t, d_in) -> (b, t, d_out); with a LayerKVCache the t tokens follow the `cache.pos` cached ones."""
        b, num_tokens, _ = x.shape
        start, row_mask = 0, None
        if cache is not None:
            # row_mask: only a cache holding rows of different lengths has one (KVCache.set_row_lengths); each
            # row's new tokens then sit at its own positions (b, t), which RoPE rotates by
            start, row_mask = cache.pos, getattr(cache, "key_mask", lambda t: None)(num_tokens)
        queries, keys, values = self._heads(x, start if row_mask is None else cache.parent.positions(num_tokens))
        if cache is not None:
            keys, values = cache.update(keys, values)  # (b, n_kv, start + t, hd) each: all cached tokens
        end = start + num_tokens
        if end > self.context_length:
            raise ValueError(f"positions up to {end} exceed context_length={self.context_length}")
        if self.use_sdpa:
            context = self._sdpa(queries, keys, values, start, row_mask)
        else:
            attn_scores = queries @ keys.transpose(2, 3)  # (b, nh, t, start + t)
            attn_scores = attn_scores.masked_fill(self._blocked(start, end, row_mask), float("-inf"))
            attn_weights = self.B.F.softmax(attn_scores / self.head_dim ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (b, nh, t, hd)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.num_heads * self.head_dim)  # (b, t, nh · hd)
        return self.out_proj(context)  # (b, t, d_out)

    def _blocked(self, start: int, end: int, row_mask: Any) -> Any:
        """True where a query may not see a key, built only on the paths that need it (on a GPU, an upload).

        Rows start..end of the book's (context_length, context_length) mask, restricted to the end keys present:
        query i (absolute position start + i) is blocked from key j exactly when j > start + i, the
        bottom-right-aligned causal mask that a cache needs (it equals [:t, :t] when nothing is cached). Not stored
        per layer: at Qwen3's context of 40960 that would be 1.6 GB each. With per-row lengths (batched serving)
        each row sees its own keys only."""
        if row_mask is not None:
            return self.B.tensor(~row_mask)                                              # (b, 1, t, start + t)
        return self.B.tensor(np.arange(end)[None, :] > np.arange(start, end)[:, None])  # (t, start + t)

    def _sdpa(self, queries: Any, keys: Any, values: Any, start: int, row_mask: Any) -> Any:
        """The fused attention with the mask the cache position (or the rows' own lengths) needs; (b, nh, t, hd)."""
        p = self.dropout_p if self.training else 0.0
        gqa = {"enable_gqa": True} if self.num_kv_heads != self.num_heads else {}
        t = queries.shape[2]
        if row_mask is None and start == 0 and self.flash:
            return self.B.flash_attention(queries, keys, values, dropout_p=p, is_causal=True, **gqa)
        if row_mask is None and start == 0:  # square scores: torch's top-left-aligned is_causal is the right mask
            return self.B.F.scaled_dot_product_attention(queries, keys, values, dropout_p=p, is_causal=True, **gqa)
        if row_mask is None and t == 1:  # one new query may attend to every cached key: no mask at all
            return self.B.F.scaled_dot_product_attention(queries, keys, values, dropout_p=p, **gqa)
        allowed = self._blocked(start, start + t, row_mask).logical_not()
        return self.B.F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=p, **gqa)


__all__ = ["SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper",
           "MultiHeadAttention"]
