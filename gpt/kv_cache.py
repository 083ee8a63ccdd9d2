"""The key/value cache for fast generation: an explicit object passed to `model(idx, cache=...)` (DESIGN.md §4.7).

During generation the keys and values of earlier tokens never change (causal attention: token i sees only tokens
≤ i), so each layer keeps them in pre-allocated buffers (b, n_heads, max_len, head_dim) and a step computes only
the new tokens' projections. `pos` counts the tokens already cached; the model writes the new tokens at
pos..pos+t-1, attends over 0..pos+t-1, then advances `pos`. Inference only: writes happen under `no_grad`.
With grouped-query attention (Llama 3, Qwen3) the buffers hold the n_kv_heads key/value heads only, never the
copies each query group sees (sdpa's enable_gqa shares them), and with RoPE the keys are stored already rotated
at their absolute positions: `pos` (or `positions`, below) is the offset the new tokens' rotation starts from.

Batched serving (gpt/serve/engine.py) holds sequences of different lengths in one cache: `set_row_lengths`
switches to per-row counts `lengths` (b,). Row r then writes at lengths[r].., its new tokens sit at positions
lengths[r].. (`positions`), and `key_mask` lets each query see only its own row's keys (`pos` is max(lengths)).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from backends.base import Backend


class LayerKVCache:
    """One layer's key and value buffers; `pos` is shared with the parent KVCache."""

    def __init__(self, parent: "KVCache", B: Backend, shape: tuple[int, int, int, int]):
        self.parent, self.B = parent, B
        self.keys = B.zeros(shape)    # (b, nh, max_len, hd)
        self.values = B.zeros(shape)  # (b, nh, max_len, hd)

    @property
    def pos(self) -> int:
        return self.parent.pos

    def key_mask(self, num_tokens: int) -> "np.ndarray | None":
        """The parent's per-row key mask for `num_tokens` new queries (None while every row has `pos` tokens)."""
        return self.parent.key_mask(num_tokens)

    def update(self, keys: Any, values: Any) -> tuple[Any, Any]:
        """Write the new (b, nh, t, hd) keys/values after the cached ones; return all (b, nh, pos + t, hd)."""
        b, nh, t, hd = keys.shape
        lengths = self.parent.lengths
        start, end = self.pos, self.pos + t
        if (b, nh, hd) != (self.keys.shape[0], self.keys.shape[1], self.keys.shape[3]):
            raise ValueError(f"keys of shape {(b, nh, t, hd)} do not fit a cache of shape {tuple(self.keys.shape)} "
                             f"(batch, heads, max_len, head_dim); make a cache for this batch size")
        if end > self.keys.shape[2]:
            raise ValueError(f"the cache holds {self.keys.shape[2]} tokens: {start} cached + {t} new do not fit; "
                             f"reset() it or crop the input")
        with self.B.no_grad():
            if lengths is None:
                self.keys[:, :, start:end] = keys
                self.values[:, :, start:end] = values
            else:  # row r's new tokens go after its own lengths[r] cached ones
                for r, n in enumerate(lengths.tolist()):
                    self.keys[r, :, n:n + t] = keys[r]
                    self.values[r, :, n:n + t] = values[r]
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Per-layer key/value buffers for `n_layers` layers plus `pos`, the number of tokens cached so far."""

    def __init__(self, B: Backend, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int):
        if batch_size <= 0 or max_len <= 0:
            raise ValueError(f"a KV cache needs batch_size > 0 and max_len > 0, got {batch_size} and {max_len}")
        self.B, self.batch_size, self.max_len = B, batch_size, max_len
        self.pos = 0
        self.lengths: np.ndarray | None = None  # per-row token counts (batched serving); None: every row has pos
        self.layers = [LayerKVCache(self, B, (batch_size, n_heads, max_len, head_dim)) for _ in range(n_layers)]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer: int) -> LayerKVCache:
        return self.layers[layer]

    @property
    def remaining(self) -> int:
        """How many more tokens fit."""
        return self.max_len - self.pos

    def check_room(self, batch_size: int, num_tokens: int) -> None:
        """Raise ValueError unless `num_tokens` more tokens of a batch of `batch_size` fit."""
        if batch_size != self.batch_size:
            raise ValueError(f"the input has batch size {batch_size} but the cache was made for {self.batch_size}; "
                             f"make a new one with model.new_kv_cache({batch_size})")
        if self.pos + num_tokens > self.max_len:
            raise ValueError(f"the cache holds max_len={self.max_len} tokens: {self.pos} cached + {num_tokens} new "
                             f"do not fit; reset() it, or re-prefill with the last tokens (as generate() does)")

    def advance(self, num_tokens: int) -> None:
        """Mark `num_tokens` more tokens as cached (called by the model after every layer has written them)."""
        if self.lengths is not None:
            self.lengths = self.lengths + num_tokens
            self.pos = int(self.lengths.max())
        else:
            self.pos += num_tokens

    def set_row_lengths(self, lengths: Any) -> None:
        """Give every row its own count of cached tokens (b,); rows beyond their count hold stale keys, masked."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (self.batch_size,) or lengths.min() < 0 or lengths.max() > self.max_len:
            raise ValueError(f"row lengths {lengths.tolist()} must be {self.batch_size} counts in [0, {self.max_len}]")
        self.lengths, self.pos = lengths, int(lengths.max())

    def positions(self, num_tokens: int) -> np.ndarray:
        """The absolute positions of `num_tokens` new tokens: (t,) with shared `pos`, (b, t) with row lengths."""
        if self.lengths is None:
            return np.arange(self.pos, self.pos + num_tokens)
        return self.lengths[:, None] + np.arange(num_tokens)  # (b, t)

    def key_mask(self, num_tokens: int) -> np.ndarray | None:
        """With row lengths: (b, 1, t, pos + t), True where a new query may attend (its row's keys up to itself)."""
        if self.lengths is None:
            return None
        keys = np.arange(self.pos + num_tokens)                        # (pos + t,)
        return keys[None, None, None, :] <= self.positions(num_tokens)[:, None, :, None]  # (b, 1, t, pos + t)

    def reset(self) -> None:
        """Forget every cached token (the buffers are overwritten, not cleared)."""
        self.pos = 0
        self.lengths = None


__all__ = ["KVCache", "LayerKVCache"]
