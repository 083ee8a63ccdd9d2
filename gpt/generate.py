"""Text generation (book ch. 4 §4.7 and ch. 5 §5.3) with temperature, top-k, top-p (nucleus) sampling and a KV cache.

The model's logits for the last position come back to NumPy as float64 and every decision (argmax, top-k, top-p,
the random draw) is made there with `np.random.default_rng(seed)`, so one seed gives the same tokens on every
backend. Nucleus sampling follows Holtzman et al. 2020 ("The Curious Case of Neural Text Degeneration").

The context window, with and without a cache: every new token is conditioned on the last `context_size` tokens
of the sequence so far, which is the book's rule (`idx[:, -context_size:]`). Without a cache the model re-reads
that window at each step. With a cache (`use_cache=True`), a cache of `context_size` slots is filled from the
window once (prefill), then each step feeds only the newest token. When the cache is full, the window must slide
and every token's position changes, so cached keys are stale: the cache is reset and re-filled from the last
`context_size` tokens. Both paths therefore see the same tokens at the same positions (greedy output is the same);
once the sequence is longer than `context_size`, the cached path costs one prefill per token, like the uncached one.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from .nn import to_numpy_any


def text_to_token_ids(text: str, tokenizer: Any) -> np.ndarray:
    """Encode `text` as a (1, n) int64 batch (the book's helper; `<|endoftext|>` allowed)."""
    return np.asarray([tokenizer.encode(text, allowed_special={"<|endoftext|>"})], dtype=np.int64)


def token_ids_to_text(token_ids: Any, tokenizer: Any) -> str:
    """Decode a (1, n) batch or an (n,) sequence of ids (ndarray or any backend's tensor) to text."""
    ids = to_numpy_any(token_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise ValueError(f"token_ids_to_text decodes one sequence, shape (n,) or (1, n); got {ids.shape}")
    return tokenizer.decode(ids.tolist())


def _as_ids(idx: Any) -> np.ndarray:
    ids = to_numpy_any(idx) if hasattr(idx, "shape") else np.asarray(idx)
    if ids.dtype.kind not in "iu" or ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"idx must be a (batch, n) array of integer token ids with n >= 1, got shape {ids.shape} "
                         f"and dtype {ids.dtype}")
    return ids.astype(np.int64)


def _last_logits(model: Any, ids: np.ndarray, cache: Any = None) -> np.ndarray:
    """The model's logits for the last position of `ids`, as float64 NumPy (batch, vocab)."""
    with model.B.no_grad():
        logits = model(ids) if cache is None else model(ids, cache=cache)
    return model.B.to_numpy(logits[:, -1, :]).astype(np.float64)


def generate_text_simple(model: Any, idx: Any, max_new_tokens: int, context_size: int) -> np.ndarray:
    """Greedy decoding without a cache, as the book's ch. 4: append argmax of the last logits, feed the last
    `context_size` tokens each step. Returns the (batch, n + max_new_tokens) int64 ids."""
    ids = _as_ids(idx)
    for _ in range(max_new_tokens):
        logits = _last_logits(model, ids[:, -context_size:])
        ids = np.concatenate([ids, logits.argmax(axis=-1)[:, None]], axis=1)
    return ids


def _check_args(model: Any, max_new_tokens: int, context_size: int, temperature: float, top_k: int | None,
                top_p: float | None) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    limit = getattr(getattr(model, "cfg", None), "context_length", None)
    if context_size <= 0 or (limit is not None and context_size > limit):
        raise ValueError(f"context_size={context_size} must lie in [1, {limit}] (the model's context_length)")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1, or None for no top-k filter")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must lie in (0, 1], or None for no nucleus filter")


def _sampler(temperature: float, top_k: int | None, top_p: float | None,
             seed: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from float64 logits (batch, vocab) to next ids (batch,), following the book's ch. 5 order:
    top-k filter, then temperature, then (our addition) the top-p filter, then one draw per row."""
    rng = np.random.default_rng(seed)

    def choose(logits: np.ndarray) -> np.ndarray:
        if top_k is not None:
            k = min(top_k, logits.shape[-1])
            kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]  # the k-th largest logit per row
            logits = np.where(logits < kth, -np.inf, logits)  # ties with the k-th value are kept, as the book's
        if temperature == 0.0:
            return logits.argmax(axis=-1)  # greedy; the first index wins ties
        z = logits / temperature
        probs = np.exp(z - z.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        if top_p is not None:
            order = np.argsort(-probs, axis=-1, kind="stable")  # most probable first, ties by index
            sorted_p = np.take_along_axis(probs, order, axis=-1)
            before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the tokens ranked above each one
            keep_sorted = before < top_p                      # the smallest prefix whose mass reaches top_p
            keep_sorted[:, 0] = True                          # always at least the most probable token
            keep = np.zeros_like(keep_sorted)
            np.put_along_axis(keep, order, keep_sorted, axis=-1)
            probs = np.where(keep, probs, 0.0)
        cdf = np.cumsum(probs, axis=-1)  # inverse-CDF draw: one uniform per row, the same on every backend
        u = rng.random(len(cdf))[:, None] * cdf[:, -1:]
        return np.minimum((cdf <= u).sum(axis=-1), cdf.shape[-1] - 1)

    return choose


def _decode_steps(model: Any, ids: np.ndarray, max_new_tokens: int, context_size: int,
                  choose: Callable[[np.ndarray], np.ndarray],
                  use_cache: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (next ids (batch,), the logits they were chosen from) for max_new_tokens steps (see module docstring)."""
    if max_new_tokens == 0:
        return
    cache = model.new_kv_cache(ids.shape[0], max_len=context_size) if use_cache else None
    logits = _last_logits(model, ids[:, -context_size:], cache)  # the prefill, when caching
    for step in range(max_new_tokens):
        nxt = choose(logits)
        yield nxt, logits
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        if step == max_new_tokens - 1:
            break
        if cache is None:
            logits = _last_logits(model, ids[:, -context_size:])
        elif cache.pos == cache.max_len:  # full: the window slides, so every position changes; re-prefill
            cache.reset()
            logits = _last_logits(model, ids[:, -context_size:], cache)
        else:
            logits = _last_logits(model, nxt[:, None], cache)


def generate_stream(model: Any, idx: Any, max_new_tokens: int, context_size: int, temperature: float = 0.0,
                    top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
                    use_cache: bool = True, seed: int | None = None) -> Iterator[int]:
    """Yield new token ids one by one for a single sequence (idx of shape (1, n)); stops before eos_id."""
    _check_args(model, max_new_tokens, context_size, temperature, top_k, top_p)
    ids = _as_ids(idx)
    if ids.shape[0] != 1:
        raise ValueError(f"generate_stream takes one sequence, idx of shape (1, n); got {ids.shape}. "
                         f"Use generate() for a batch")
    choose = _sampler(temperature, top_k, top_p, seed)
    for nxt, _ in _decode_steps(model, ids, max_new_tokens, context_size, choose, use_cache):
        token = int(nxt[0])
        if eos_id is not None and token == eos_id:
            return
        yield token


def generate(model: Any, idx: Any, max_new_tokens: int, context_size: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             use_cache: bool = True, seed: int | None = None) -> np.ndarray:
    """The book's ch. 5 `generate` plus top-p and a KV cache: returns idx with the new ids appended (int64 ndarray).

    temperature 0 is greedy (argmax); otherwise logits are top-k filtered, divided by temperature, top-p filtered
    and sampled. eos_id: stop when every row has produced it (the eos itself is not appended; a row that finished
    earlier is padded with eos_id). Call model.eval() first, as the book does, so dropout is off.
    """
    _check_args(model, max_new_tokens, context_size, temperature, top_k, top_p)
    ids = _as_ids(idx)
    choose = _sampler(temperature, top_k, top_p, seed)
    new: list[np.ndarray] = []
    done = np.zeros(ids.shape[0], dtype=bool)
    for nxt, _ in _decode_steps(model, ids, max_new_tokens, context_size, choose, use_cache):
        if eos_id is not None:
            nxt = np.where(done, eos_id, nxt)
            done |= nxt == eos_id
            if done.all():
                break
        new.append(nxt)
    return np.concatenate([ids] + [n[:, None] for n in new], axis=1)


__all__ = ["text_to_token_ids", "token_ids_to_text", "generate_text_simple", "generate", "generate_stream"]
