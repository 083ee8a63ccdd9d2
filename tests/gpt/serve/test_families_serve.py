"""`tinygpt serve` on Hugging Face Llama 3 / Qwen3 directories: chat completions in the family's own format.

Tiny random models (tests/gpt/hf_tiny.py, no downloads) with a tokenizer.json that has the chat tokens. Through the
official `openai` client against a live server on 127.0.0.1, a temperature-0 chat answer equals what `tinygpt chat
--temperature 0` prints for the same question and transformers' greedy `generate` on the same prompt ids (ChatML
with Qwen3's empty think block; Llama 3's headers), cut at the format's end-of-turn ids; usage counts the prompt's
ids; streaming equals non-streaming; concurrent conversations (rows of different lengths, RoPE per row) each get
their own answer.
"""
import concurrent.futures
import io
import sys
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tokenizer  # noqa: E402
from gpt.chat_format import answer_stop_ids, chat_prompt_ids  # noqa: E402
from gpt.cli import main  # noqa: E402
from gpt.cli.common import write_tokens  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/gpt: hf_tiny.py
from hf_tiny import exact_float64, make_hf_dir  # noqa: E402

from live_server import start_server  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
        "How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow. 0123456789\n") * 4
CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|begin_of_text|>",
               "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
STYLE = {"llama": "llama3", "qwen3": "chatml"}
N = 12   # max_tokens / --max-new-tokens
# seeds whose greedy answers differ by question and end at a stop id for some of QUESTIONS (others run to N tokens);
# Llama untied: a tiny random model with a tied head repeats the prompt's last token ("\n\n") whatever it is asked
SEED = {"llama": 14, "qwen3": 2}
CONFIG = {"llama": {"tie_word_embeddings": False}, "qwen3": {}}
QUESTIONS = ["Pack my box?", "Box?", "How vexingly quick do daft zebras jump?", "Judge my vow.", "0123?"]


@pytest.fixture(scope="module")
def bpe():
    return tokenizer.BPETokenizer.train(TEXT, vocab_size=300, pattern="gpt2", special_tokens=CHAT_TOKENS)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def family(request, bpe, tmp_path_factory):
    """(kind, directory, transformers model, its tokenizer, live server) for a tiny model of each family."""
    path = tmp_path_factory.mktemp(request.param)
    hf = make_hf_dir(request.param, path, seed=SEED[request.param], vocab=bpe.n_vocab, context=160,
                     config=CONFIG[request.param])
    tokenizer.save_hf_tokenizer(bpe, path)
    server = start_server(path, "--max-batch", "4")
    yield request.param, path, hf, tokenizer.from_pretrained(path), server
    server.stop()


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def hf_answer(hf, enc, messages, style):
    """transformers' greedy answer to `messages`: (text as `tinygpt chat` writes it, without its newline, token
    count, finish reason, prompt length)."""
    ids, stops = chat_prompt_ids(enc, messages, style), answer_stop_ids(enc, style)
    with torch.no_grad(), exact_float64():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=N, do_sample=False, eos_token_id=stops, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(new) if t in stops), len(new))
    buf = io.StringIO()
    write_tokens(new[:cut], enc, buf)   # a random model's bytes may not be UTF-8: decoded as the CLI streams them
    return buf.getvalue()[:-1], cut, "stop" if cut < len(new) else "length", len(ids)


def test_temperature_0_chat_equals_tinygpt_chat_and_transformers(family, capsys, monkeypatch):
    kind, path, hf, enc, server = family
    question = QUESTIONS[0]
    c = client(server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": question}],
                                               max_tokens=N, temperature=0)
    monkeypatch.setattr(sys, "stdin", io.StringIO(question + "\n"))
    capsys.readouterr()
    assert main(["chat", "--checkpoint", str(path), "--temperature", "0", "--max-new-tokens", str(N),
                 "--dtype", "float64"]) == 0
    out, err = capsys.readouterr()
    assert c.choices[0].message.content + "\n" == out
    text, n_tokens, finish, n_prompt = hf_answer(hf, enc, [{"role": "user", "content": question}], STYLE[kind])
    assert c.choices[0].message.content == text and c.choices[0].finish_reason == finish == "stop"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (
        n_prompt, n_tokens, n_prompt + n_tokens)
    assert server.served.chat_format == STYLE[kind]


def test_streaming_equals_non_streaming_for_a_conversation_with_a_system_message(family):
    kind, _, hf, enc, server = family
    messages = [{"role": "system", "content": "Be quick."}, {"role": "user", "content": "Box?"},
                {"role": "assistant", "content": "With jugs."}, {"role": "user", "content": "How quick?"}]
    api = client(server)
    whole = api.chat.completions.create(model="tiny", messages=messages, max_tokens=N, temperature=0)
    chunks = list(api.chat.completions.create(model="tiny", messages=messages, max_tokens=N, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    pieces = [ch.choices[0].delta.content or "" for ch in chunks if ch.choices]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert "".join(pieces) == whole.choices[0].message.content and finish == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump() | {"completion_tokens_details": None,
                                                                        "prompt_tokens_details": None}
    text, n_tokens, reason, n_prompt = hf_answer(hf, enc, messages, STYLE[kind])
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (text, reason)
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (n_prompt, n_tokens)


def test_concurrent_conversations_each_get_their_own_answer(family):
    kind, _, hf, enc, server = family
    questions = QUESTIONS[1:]
    api = client(server)

    def ask(q):
        c = api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": q}], max_tokens=N,
                                        temperature=0)
        return c.choices[0].message.content, c.choices[0].finish_reason, c.usage.prompt_tokens

    with concurrent.futures.ThreadPoolExecutor(len(questions)) as pool:
        got = list(pool.map(ask, questions))
    want = [hf_answer(hf, enc, [{"role": "user", "content": q}], STYLE[kind]) for q in questions]
    assert len({w[0] for w in want}) > 1 and {w[2] for w in want} == {"stop", "length"}   # a reference that tells
    for q, answer, (text, _, finish, n_prompt) in zip(questions, got, want):
        assert answer == (text, finish, n_prompt), q


def test_a_conversation_must_end_with_the_user(family):
    *_, server = family
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model="tiny", messages=[{"role": "assistant", "content": "Hi"}],
                                               max_tokens=2)
    assert e.value.status_code == 400
    assert e.value.body == {"message": "the last message must have role 'user': the model answers the user",
                            "type": "invalid_request_error", "param": "messages", "code": None}
