"""Batched decoding for `tinygpt serve`: requests that arrive together are generated together.

Iteration-level scheduling as in Orca (Yu et al., OSDI 2022, "continuous batching"): one background thread runs
the model one step at a time over every live request. A new request joins at the next step: its prompt is
prefilled alone into a one-row KV cache, and that row is stacked onto the batch's cache; the batch then decodes
one token per row per step, each row at its own position (`KVCache.set_row_lengths`: per-row position ids and a
key mask per row, gpt/kv_cache.py) and with its own sampler (temperature, top-k, top-p and seed, drawn exactly as
gpt.generate draws them), so every row gets the very tokens `generate_stream` would give it alone. A request
leaves when it is done (end of text or a stop id, max_tokens, or cancelled by its client) and its row is dropped
from the cache.
Pending requests wait in a bounded queue; `submit` raises QueueFull when it is full (the server answers 503).

This module knows nothing of HTTP: a request reports through its `emit(kind, value)` callback, called from the
engine thread with ("token", id) for each new token and then ("done", finish_reason) once.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gpt.generate import _sampler

FINISH_REASONS = ("stop", "length", "cancelled", "error")


class QueueFull(RuntimeError):
    """The engine's queue of waiting requests is full; try again later (HTTP 503)."""


class EngineStopped(RuntimeError):
    """The engine is shutting down and takes no new requests (HTTP 503)."""


@dataclass
class GenerationRequest:
    """One sequence to continue: prompt ids, how many tokens at most, how to sample, where to report."""

    prompt_ids: list[int]                   # at least one token; prompt + max_tokens fit the context
    max_tokens: int                         # new tokens at most (finish_reason "length" when reached)
    emit: Callable[[str, Any], None]        # ("token", id) per token, then ("done", finish_reason), engine thread
    temperature: float = 0.0                # 0: greedy
    top_k: int | None = None                # keep the k most likely ids (None: all)
    top_p: float | None = None              # nucleus filter (None: off)
    seed: int | None = None                 # the sampler's seed, as `tinygpt generate --seed`
    eos_id: int | None = None               # stop before this id (finish_reason "stop")
    stop_ids: tuple[int, ...] = ()          # more ids to stop before (a chat format's end-of-turn tokens)
    cancelled: bool = field(default=False, init=False)  # set by cancel(); the engine drops the row next step
    reported: bool = field(default=False, init=False)   # ("done", reason) has been emitted

    def cancel(self) -> None:
        """Ask the engine to drop this request at its next step (a client went away or a stop string matched)."""
        self.cancelled = True


@dataclass
class _Row:
    """A live request inside the batch: its sampler, its last token and how many it has produced."""

    request: GenerationRequest
    choose: Callable[[np.ndarray], np.ndarray]
    last: int = 0
    produced: int = 0


class Engine:
    """The background decoding loop over a model (gpt.GPTModel or any decoder taking `cache=`).

    max_batch: rows decoded together (1: one request at a time); max_queue: requests that may wait for a row;
    max_context: tokens (prompt + answer) a request may have, at most the model's context (None: all of it). Each
    row's KV cache holds that many: Qwen3's context of 40960 tokens would take gigabytes per row.
    """

    def __init__(self, model: Any, max_batch: int = 16, max_queue: int = 64, max_context: int | None = None):
        if max_batch < 1 or max_queue < 0 or (max_context is not None and max_context < 2):
            raise ValueError(f"max_batch={max_batch} must be >= 1, max_queue={max_queue} >= 0 and max_context="
                             f"{max_context} >= 2")
        self.model, self.B, self.max_batch, self.max_queue = model, model.B, int(max_batch), int(max_queue)
        self.context_length = min(int(model.cfg.context_length), int(max_context or model.cfg.context_length))
        self._pending: collections.deque[GenerationRequest] = collections.deque()
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._admitting = 0  # requests taken from the queue that are being prefilled
        self.finished = collections.Counter()   # requests done so far, by finish reason

    # ---- the public side (any thread) ----------------------------------------------------------------------------

    def start(self) -> "Engine":
        """Start the decoding thread."""
        self._thread = threading.Thread(target=self._loop, name="tinygpt-engine", daemon=True)
        self._thread.start()
        return self

    @property
    def started(self) -> bool:
        """Whether start() has been called."""
        return self._thread is not None

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        """Queue a request; it joins the batch at the next step. QueueFull/EngineStopped when it cannot."""
        n = len(request.prompt_ids)
        if n < 1 or request.max_tokens < 1 or n + request.max_tokens > self.context_length:
            raise ValueError(f"a prompt of {n} tokens plus max_tokens={request.max_tokens} must fit the context of "
                             f"{self.context_length} tokens, with at least one of each")
        with self._cond:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            free_rows = max(0, self.max_batch - len(self._rows) - self._admitting)
            if len(self._pending) >= self.max_queue + free_rows:
                raise QueueFull(f"the server is busy: {len(self._rows)} requests running and {len(self._pending)} "
                                f"waiting; retry later")
            self._pending.append(request)
            self._cond.notify()
        return request

    def stats(self) -> dict[str, int]:
        """Rows decoding now, requests waiting, requests finished (and how many of those were cancelled)."""
        with self._cond:
            return {"running": len(self._rows) + self._admitting, "queued": len(self._pending),
                    "finished": sum(self.finished.values()), "cancelled": self.finished["cancelled"],
                    "max_batch": self.max_batch}

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with drain, finish every running and queued one first, then end the thread."""
        with self._cond:
            self._stopping = True
            if not drain:
                for r in list(self._pending) + [row.request for row in self._rows]:
                    r.cancel()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the engine thread -----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._rows or self._stopping):
                    self._cond.wait()
                if self._stopping and not (self._pending or self._rows):
                    return
                joining = []
                while self._pending and len(self._rows) + len(joining) < self.max_batch:
                    joining.append(self._pending.popleft())
                self._admitting = len(joining)
            try:
                self._step(joining)
            except Exception as e:  # a failing step ends its requests, never the server
                for row in self._rows + [_Row(r, None) for r in joining]:
                    self._finish(row.request, "error", str(e))
                with self._cond:
                    self._rows, self._cache = [], None
            finally:
                with self._cond:
                    self._admitting = 0

    def _step(self, joining: list[GenerationRequest]) -> None:
        """Admit the joining requests (prefill + first token), decode one token for every row, retire the done."""
        admitted = []
        for request in joining:
            if request.cancelled:
                self._finish(request, "cancelled")
                continue
            row, (cache, logits) = self._prefill(request)
            self._accept(row, row.choose(logits))
            if not request.cancelled:
                admitted.append((row, cache))
            else:  # done at its first token, or its client left while it was admitted: report it once either way
                self._finish(request, "cancelled")  # (a no-op for one that finished itself)
        self._merge(admitted)
        self._retire()
        if not self._rows:
            return
        ids = np.asarray([[row.last] for row in self._rows], dtype=np.int64)  # (b, 1): each row's newest token
        with self.B.no_grad():
            logits = self.model(ids, cache=self._cache)                       # (b, 1, vocab)
        logits = self.B.to_numpy(logits[:, -1, :]).astype(np.float64)         # as gpt.generate decides
        for i, row in enumerate(self._rows):
            self._accept(row, row.choose(logits[i:i + 1]))
        self._retire()

    def _prefill(self, request: GenerationRequest) -> tuple[_Row, tuple[Any, np.ndarray]]:
        """Run the prompt alone through a fresh one-row cache: (the row, (its cache, last logits (1, vocab)))."""
        cache = self.model.new_kv_cache(1, max_len=self.context_length)
        ids = np.asarray([request.prompt_ids], dtype=np.int64)                # (1, n)
        with self.B.no_grad():
            logits = self.model(ids, cache=cache)                             # (1, n, vocab)
        choose = _sampler(request.temperature, request.top_k, request.top_p, request.seed)
        return _Row(request, choose), (cache, self.B.to_numpy(logits[:, -1, :]).astype(np.float64))

    def _accept(self, row: _Row, chosen: np.ndarray) -> None:
        """Record a row's next token: report it, or finish the row at end of text / max_tokens / the context."""
        token, request = int(chosen[0]), row.request
        if request.cancelled:
            return
        if token == request.eos_id or token in request.stop_ids:
            request.cancel()
            self._finish(request, "stop")
            return
        row.last, row.produced = token, row.produced + 1
        request.emit("token", token)
        if row.produced >= request.max_tokens or len(request.prompt_ids) + row.produced >= self.context_length:
            request.cancel()
            self._finish(request, "length")

    def _merge(self, admitted: list[tuple[_Row, Any]]) -> None:
        """Stack the prefilled one-row caches onto the batch's cache in one copy (rows of different lengths)."""
        if not admitted:
            return
        old = [(self._cache, i) for i in range(len(self._rows))]
        lengths = [] if self._cache is None else self._cache.lengths.tolist()
        self._cache = _stack_rows(self.model, old + [(cache, 0) for _, cache in admitted],
                                  lengths + [cache.pos for _, cache in admitted])
        with self._cond:
            self._rows += [row for row, _ in admitted]
            self._admitting = 0

    def _retire(self) -> None:
        """Drop the rows whose requests are done or cancelled, keeping the others' cache rows."""
        keep = [i for i, row in enumerate(self._rows) if not row.request.cancelled]
        for row in self._rows:
            if row.request.cancelled:
                self._finish(row.request, "cancelled")  # a no-op for rows that finished themselves
        if len(keep) == len(self._rows):
            return
        if keep:
            lengths = [int(self._cache.lengths[i]) for i in keep]
            self._cache = _stack_rows(self.model, [(self._cache, i) for i in keep], lengths)
        else:
            self._cache = None
        with self._cond:
            self._rows = [self._rows[i] for i in keep]

    def _finish(self, request: GenerationRequest, reason: str, message: str | None = None) -> None:
        """Report ("done", reason) once per request."""
        if request.reported:
            return
        request.reported = request.cancelled = True
        with self._cond:
            self.finished[reason] += 1
        request.emit("done", reason if message is None else f"{reason}: {message}")


def _stack_rows(model: Any, rows: list[tuple[Any, int]], lengths: list[int]) -> Any:
    """A new KV cache holding the given (cache, row) pairs in order, each row `lengths[i]` tokens long."""
    B = model.B
    cache = model.new_kv_cache(len(rows), max_len=1)        # tiny buffers, replaced just below
    with B.no_grad():
        for layer, new in enumerate(cache.layers):
            new.keys = B.cat([c.layers[layer].keys[i:i + 1] for c, i in rows], dim=0)      # (b, nh, L, hd)
            new.values = B.cat([c.layers[layer].values[i:i + 1] for c, i in rows], dim=0)  # (b, nh, L, hd)
    cache.max_len = int(rows[0][0].max_len)
    cache.set_row_lengths(lengths)
    return cache


__all__ = ["Engine", "GenerationRequest", "QueueFull", "EngineStopped", "FINISH_REASONS"]
