"""Batched decoding (gpt/serve/engine.py) gives each row exactly the tokens it gets alone (float64).

The reference is gpt.generate.generate_stream, one request at a time with its own KV cache; the engine decodes
rows of different lengths in one cache (per-row positions and key masks, gpt/kv_cache.py), joining and leaving
at different steps. Also: the per-row cache path against an uncached forward, the bounded queue, cancellation.
"""
import threading

import numpy as np
import pytest

import backends
from gpt import GPTModel
from gpt.generate import generate_stream
from gpt.serve.engine import Engine, GenerationRequest, QueueFull

CFG = {"vocab_size": 97, "context_length": 48, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}


@pytest.fixture(scope="module", params=["numpy", "torch", pytest.param("cupy", marks=pytest.mark.gpu)])
def model(request):
    m = GPTModel(CFG, backend=backends.get_backend(request.param, dtype="float64"), seed=7)
    m.eval()
    return m


def _collector():
    events = []
    return events, lambda kind, value: events.append((kind, value))


def _solo(model, req):
    return list(generate_stream(model, np.asarray([req.prompt_ids]), req.max_tokens, CFG["context_length"],
                                temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, eos_id=req.eos_id,
                                seed=req.seed))


def _requests(n, rng):
    out = []
    for i in range(n):
        events, emit = _collector()
        prompt = rng.integers(0, CFG["vocab_size"], size=int(rng.integers(1, 20))).tolist()
        sampled = i % 3 == 2
        req = GenerationRequest(prompt, int(rng.integers(1, 12)), emit, temperature=0.9 if sampled else 0.0,
                                top_k=[None, 5, 20][i % 3], top_p=0.8 if sampled else None, seed=100 + i,
                                eos_id=int(rng.integers(0, CFG["vocab_size"])) if i % 4 == 1 else None)
        out.append((req, events))
    return out


def test_batched_rows_equal_one_at_a_time_decoding_with_joins_and_leaves(model):
    rng = np.random.default_rng(0)
    reqs = _requests(9, rng)
    engine = Engine(model, max_batch=4)
    # joining schedule: 3 at once, then one per step, so rows of different lengths share the cache
    schedule = [[r for r, _ in reqs[:3]]] + [[r] for r, _ in reqs[3:]] + [[]] * 20
    widths = []
    for joining in schedule:
        engine._step(joining)
        widths.append(len(engine._rows))
    assert max(widths) >= 4 and widths[-1] == 0  # rows really were decoded together, then all left
    for req, events in reqs:
        tokens = [v for k, v in events if k == "token"]
        assert events[-1][0] == "done" and [k for k, _ in events].count("done") == 1
        assert tokens == _solo(model, req), req
        expected = "length" if len(tokens) == req.max_tokens else "stop"
        assert events[-1][1] == expected


def test_a_request_cancelled_while_it_is_admitted_is_reported_once(model):
    """Its client leaves between its first token and the step's end (the emit callback cancels it here): it never
    joins the batch, and it is finished as cancelled, once, so it is not lost from the counts or left waiting."""
    engine = Engine(model, max_batch=4)
    events = []

    def emit(kind, value):
        events.append((kind, value))
        if kind == "token":
            req.cancel()

    req = GenerationRequest([1, 2, 3], 10, emit)
    engine._step([req])
    assert events[-1] == ("done", "cancelled") and [k for k, _ in events] == ["token", "done"]
    assert engine._rows == [] and engine.stats()["cancelled"] == 1 and engine.stats()["finished"] == 1
    engine._step([])
    assert engine.stats()["finished"] == 1 and len(events) == 2


def test_per_row_cache_matches_an_uncached_forward(model):
    """Two rows of lengths 3 and 7 in one cache: the next token's logits equal each row's full forward."""
    B = model.B
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 97, size=n) for n in (3, 7)]
    caches = []
    for s in seqs:
        c = model.new_kv_cache(1)
        with B.no_grad():
            model(s[None, :-1], cache=c)
        caches.append(c)
    from gpt.serve.engine import _stack_rows
    cache = _stack_rows(model, [(caches[0], 0), (caches[1], 0)], [2, 6])
    with B.no_grad():
        got = B.to_numpy(model(np.asarray([[seqs[0][-1]], [seqs[1][-1]]]), cache=cache))[:, -1]
        want = [B.to_numpy(model(s[None]))[0, -1] for s in seqs]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-10, atol=1e-12)
    assert cache.lengths.tolist() == [3, 7] and cache.pos == 7


def test_threaded_engine_answers_16_concurrent_requests_and_cancel_frees_the_row(model):
    rng = np.random.default_rng(2)
    reqs = _requests(16, rng)
    done = threading.Semaphore(0)
    engine = Engine(model, max_batch=8, max_queue=16).start()
    try:
        for req, events in reqs:
            emit = req.emit
            req.emit = lambda k, v, emit=emit: (emit(k, v), k == "done" and done.release())
            engine.submit(req)
        for _ in reqs:
            assert done.acquire(timeout=120)
        for req, events in reqs:
            assert [v for k, v in events if k == "token"] == _solo(model, req)
        events, emit = _collector()
        long = GenerationRequest([1, 2, 3], 40, emit)
        long.cancel()
        engine.submit(long)
        engine.stop(drain=True, timeout=60)
        assert events == [("done", "cancelled")] and engine.stats()["running"] == 0
    finally:
        engine.stop(drain=False, timeout=60)


def test_bounded_queue_refuses_and_bad_lengths_raise(model):
    engine = Engine(model, max_batch=1, max_queue=1)   # not started: nothing leaves the queue
    engine.submit(GenerationRequest([1], 1, lambda k, v: None))
    engine.submit(GenerationRequest([1], 1, lambda k, v: None))
    with pytest.raises(QueueFull, match="the server is busy: 0 requests running and 2 waiting"):
        engine.submit(GenerationRequest([1], 1, lambda k, v: None))
    with pytest.raises(ValueError, match="plus max_tokens=48 must fit the context of 48 tokens"):
        engine.submit(GenerationRequest([1], 48, lambda k, v: None))


def test_stop_ids_end_a_row_before_the_first_of_them(model):
    """A chat format's end-of-turn ids: a row ends before the first one it samples ("stop"), its batch-mate runs on."""
    free_events, free_emit = _collector()
    free = GenerationRequest([5, 9, 2], 20, free_emit)
    solo = _solo(model, free)
    cut = next(i for i in range(2, len(solo)) if solo[i] not in solo[:i])   # a token first seen late in the answer
    events, emit = _collector()
    stopped = GenerationRequest([5, 9, 2], 20, emit, stop_ids=(CFG["vocab_size"] + 1, solo[cut]))
    engine = Engine(model)
    for joining in [[free, stopped]] + [[]] * 25:
        engine._step(joining)
    assert [v for k, v in free_events if k == "token"] == solo and free_events[-1] == ("done", "length")
    assert [v for k, v in events if k == "token"] == solo[:cut] and events[-1] == ("done", "stop")


def test_max_context_caps_requests_and_each_rows_cache(model):
    engine = Engine(model, max_context=16)
    assert engine.context_length == 16 and Engine(model, max_context=10_000).context_length == CFG["context_length"]
    with pytest.raises(ValueError, match="a prompt of 10 tokens plus max_tokens=7 must fit the context of 16 tokens"):
        engine.submit(GenerationRequest(list(range(10)), 7, lambda k, v: None))
    events, emit = _collector()
    req = GenerationRequest(list(range(10)), 6, emit)
    row, (cache, _) = engine._prefill(req)
    assert cache.max_len == 16
    for joining in [[req]] + [[]] * 8:
        engine._step(joining)
    assert [v for k, v in events if k == "token"] == _solo(model, req)
    with pytest.raises(ValueError, match="max_context=1 >= 2"):
        Engine(model, max_context=1)
