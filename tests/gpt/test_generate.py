"""gpt/generate.py: the KV cache against recomputation (tokens and logits, past the context length too), sampling
semantics (greedy, top-k, top-p, temperature, eos, seeds), the same tokens on numpy and torch, streaming, the
book's text helpers, and argument errors."""
from __future__ import annotations

import numpy as np
import pytest

import backends
from gpt.generate import (_decode_steps, _sampler, generate, generate_stream, generate_text_simple,
                          text_to_token_ids, token_ids_to_text)
from gpt.model import GPTModel

CFG = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": True}
PROMPT = np.random.default_rng(0).integers(0, 97, size=(2, 5))
MODELS = {name: GPTModel(CFG, backend=backends.get_backend(name, "float64"), seed=11).eval()
          for name in ("numpy", "torch")}


@pytest.fixture(params=["numpy", "torch", "cupy"])
def model(request):
    if request.param == "cupy":   # the CPU stand-in (tests/fakecupy): built while this test has it installed
        request.getfixturevalue("fake_cupy")
        return GPTModel(CFG, backend=backends.get_backend("cupy", "float64"), seed=11).eval()
    return MODELS[request.param]


def logit_trace(model, prompt, n, context_size, use_cache):
    greedy = _sampler(0.0, None, None, None)
    steps = list(_decode_steps(model, prompt, n, context_size, greedy, use_cache))
    return np.stack([t for t, _ in steps], axis=1), [logits for _, logits in steps]


@pytest.mark.parametrize("prompt_len,context_size,n", [(5, 16, 8), (5, 16, 20), (20, 16, 6), (3, 6, 12)])
def test_cache_gives_the_same_greedy_tokens_and_logits_as_recomputation(model, prompt_len, context_size, n):
    """Includes prompts longer than the window and generation far past it (the cache is re-filled when full)."""
    prompt = np.random.default_rng(prompt_len).integers(0, 97, size=(2, prompt_len))
    tok_c, log_c = logit_trace(model, prompt, n, context_size, use_cache=True)
    tok_n, log_n = logit_trace(model, prompt, n, context_size, use_cache=False)
    assert np.array_equal(tok_c, tok_n)
    err = max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(log_c, log_n))
    assert err <= 1e-10, f"cached logits differ by {err:.2e}"


def test_generate_with_and_without_cache_equals_the_books_greedy_loop(model):
    prompt = np.random.default_rng(1).integers(0, 97, size=(2, 14))
    book = generate_text_simple(model, prompt, 6, 16)  # runs past the context length after 2 tokens
    assert np.array_equal(generate(model, prompt, 6, 16, use_cache=True), book)
    assert np.array_equal(generate(model, prompt, 6, 16, use_cache=False), book)


def test_numpy_and_torch_generate_the_same_tokens_with_the_same_seed():
    kwargs = dict(max_new_tokens=16, context_size=16, temperature=1.3, top_k=20, top_p=0.9, seed=42)
    a = generate(MODELS["numpy"], PROMPT, **kwargs)
    b = generate(MODELS["torch"], PROMPT, **kwargs)
    assert np.array_equal(a, b)
    assert np.array_equal(a, generate(MODELS["numpy"], PROMPT, **kwargs))  # reproducible
    assert not np.array_equal(a, generate(MODELS["numpy"], PROMPT, **{**kwargs, "seed": 43}))
    assert not np.array_equal(a, generate(MODELS["numpy"], PROMPT, 16, 16))  # sampling is not greedy here


def test_top_k_one_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, PROMPT, 8, 16)
    assert np.array_equal(generate(model, PROMPT, 8, 16, temperature=2.0, top_k=1, seed=0), greedy)
    assert np.array_equal(generate(model, PROMPT, 8, 16, temperature=2.0, top_p=1e-9, seed=0), greedy)
    assert np.array_equal(generate(model, PROMPT, 8, 16, temperature=0.0, top_k=5, top_p=0.5), greedy)


def test_top_k_keeps_the_k_largest_and_their_ties():
    logits = np.array([[0.0, 3.0, 1.0, 3.0, 2.0]])
    draws = {int(_sampler(1.0, 2, None, s)(logits)[0]) for s in range(200)}
    assert draws == {1, 3}  # the two 3.0s; ties with the k-th value are kept
    draws = {int(_sampler(1.0, 3, None, s)(logits)[0]) for s in range(200)}
    assert draws == {1, 3, 4}


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.1, 0.5, 0.3, 0.1]]))
    # 0.5 alone reaches 0.45; 0.5 + 0.3 reach 0.7; 0.85 needs one 0.1 token: the lower index (stable order)
    for p, allowed in [(0.45, {1}), (0.7, {1, 2}), (0.85, {0, 1, 2}), (0.95, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})]:
        draws = {int(_sampler(1.0, None, p, s)(logits)[0]) for s in range(300)}
        assert draws == allowed, p


def test_temperature_sharpens_and_flattens():
    logits = np.log(np.array([[0.6, 0.4]]))
    freq = lambda t: np.mean([_sampler(t, None, None, s)(logits)[0] == 0 for s in range(400)])  # noqa: E731
    assert freq(0.2) > 0.85 > freq(1.0) > 0.45 > freq(50.0) > 0.4


def test_eos_stops_generation(model):
    greedy = generate(model, PROMPT[:1], 10, 16)
    eos = int(greedy[0, 8])  # the 4th new token
    first = int(np.flatnonzero(greedy[0, 5:] == eos)[0])
    out = generate(model, PROMPT[:1], 10, 16, eos_id=eos)
    assert np.array_equal(out, greedy[:, :5 + first])  # stops before appending eos (the book's rule)
    assert list(generate_stream(model, PROMPT[:1], 10, 16, eos_id=eos)) == greedy[0, 5:5 + first].tolist()


def test_eos_in_a_batch_pads_finished_rows():
    model = MODELS["numpy"]
    greedy = generate(model, PROMPT, 10, 16)
    eos = int(greedy[0, 6])
    out = generate(model, PROMPT, 10, 16, eos_id=eos)
    for row in range(2):
        hits = np.flatnonzero(greedy[row, 5:] == eos)
        end = 5 + (hits[0] if len(hits) else 10)
        assert np.array_equal(out[row, :end], greedy[row, :end])
        assert np.all(out[row, end:] == eos)


def test_stream_yields_the_same_ids_as_generate(model):
    kwargs = dict(max_new_tokens=10, context_size=8, temperature=0.8, top_k=10, seed=7)  # past the window
    stream = generate_stream(model, PROMPT[:1], **kwargs)
    assert next(stream) == int(generate(model, PROMPT[:1], **{**kwargs, "max_new_tokens": 1})[0, -1])
    assert [*generate_stream(model, PROMPT[:1], **kwargs)] == generate(model, PROMPT[:1], **kwargs)[0, 5:].tolist()


def test_zero_new_tokens_returns_the_prompt(model):
    assert np.array_equal(generate(model, PROMPT, 0, 16), PROMPT)


class CharTokenizer:
    def encode(self, text, allowed_special=()):
        return [ord(c) - 32 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)


def test_text_helpers_round_trip_through_the_model(model):
    tok = CharTokenizer()
    ids = text_to_token_ids("Hello", tok)
    assert ids.shape == (1, 5) and ids.dtype == np.int64
    out = generate(model, ids, 4, 16)
    text = token_ids_to_text(out, tok)
    assert text.startswith("Hello") and len(text) == 9
    assert token_ids_to_text(model.B.tensor(out), tok) == text
    with pytest.raises(ValueError, match="one sequence"):
        token_ids_to_text(np.zeros((2, 3), dtype=np.int64), tok)


def test_argument_errors_name_the_value():
    model = MODELS["numpy"]
    with pytest.raises(ValueError, match="temperature=-1"):
        generate(model, PROMPT, 3, 16, temperature=-1)
    with pytest.raises(ValueError, match="top_k=0"):
        generate(model, PROMPT, 3, 16, top_k=0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        generate(model, PROMPT, 3, 16, top_p=1.5)
    with pytest.raises(ValueError, match=r"context_size=17 must lie in \[1, 16\]"):
        generate(model, PROMPT, 3, 17)
    with pytest.raises(ValueError, match="token id 97 is out of range for vocab_size=97"):
        generate(model, np.array([[1, 97]]), 3, 16)
    with pytest.raises(ValueError, match=r"\(batch, n\)"):
        generate(model, np.array([1, 2]), 3, 16)
    with pytest.raises(ValueError, match="one sequence"):
        next(generate_stream(model, PROMPT, 3, 16))
