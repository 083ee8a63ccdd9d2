"""`tinygpt serve` through the official `openai` client and raw HTTP against live servers on 127.0.0.1.

Every answer is checked token for token against one request decoded alone (gpt.generate, float64), the
temperature-0 completion against `tinygpt generate --temperature 0` itself, and every refusal by its status and
OpenAI's error JSON. Bad requests must not reach the engine (its finished count does not move).
"""
import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from gpt.cli import main  # noqa: E402
from gpt.instruct import format_chat_prompt  # noqa: E402
from gpt.serve.prompts import render_chat  # noqa: E402

from live_server import Slow, live, reference_text, start_server, tiny_checkpoint  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[3]


def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(live, path, body, headers=None):
    """(status, parsed JSON) of a POST with a raw body (bytes) or a JSON-encoded object."""
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


def sse_stream(live, body):
    """A streaming POST: (connection, response) to read `data:` lines from."""
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    conn.request("POST", "/v1/chat/completions" if "messages" in body else "/v1/completions",
                 body=json.dumps({**body, "stream": True}), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def test_temperature_0_completion_equals_tinygpt_generate(live, tiny_checkpoint, capsys):
    prompt = "Every effort moves you"
    c = client(live).completions.create(model="tiny", prompt=prompt, max_tokens=30, temperature=0)
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", prompt, "--max-new-tokens", "30",
                 "--temperature", "0", "--dtype", "float64"]) == 0
    printed = capsys.readouterr().out
    assert printed == prompt + c.choices[0].text + "\n"
    text, ids = reference_text(tiny_checkpoint, list(prompt.encode()), 30)
    assert c.choices[0].text == text and len(text) > 0
    assert c.choices[0].finish_reason == ("length" if len(ids) == 30 else "stop")
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (len(prompt.encode()), len(ids))
    assert c.model == "tiny" and c.object == "text_completion"


def test_seeded_sampling_equals_tinygpt_generate_with_the_same_seed(live, tiny_checkpoint, capsys):
    prompt = "Sampled"
    c = client(live).completions.create(model="tiny", prompt=prompt, max_tokens=25, temperature=0.9, top_p=0.95,
                                        seed=11, extra_body={"top_k": 40})
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", prompt, "--max-new-tokens", "25",
                 "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "11", "--dtype",
                 "float64"]) == 0
    assert capsys.readouterr().out == prompt + c.choices[0].text + "\n"
    greedy = client(live).completions.create(model="tiny", prompt=prompt, max_tokens=25, temperature=0)
    assert greedy.choices[0].text != c.choices[0].text   # it really sampled


def test_chat_non_streaming_and_streaming_agree_with_the_alpaca_prompt(live, tiny_checkpoint):
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one?"}]
    prompt = render_chat(messages)
    assert prompt == (format_chat_prompt("Name a colour.") + "Blue.\n\n" + format_chat_prompt("Another one?"))
    want, ids = reference_text(tiny_checkpoint, list(prompt.encode()), 12)
    api = client(live)
    r = api.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt.encode()), len(ids))
    chunks = list(api.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want
    assert chunks[-2].choices[0].finish_reason == r.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(ids)
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) >= 2  # it really streamed


def test_stream_ends_with_done_and_stop_strings_cut_the_text(live, tiny_checkpoint):
    want, _ = reference_text(tiny_checkpoint, list(b"hello"), 40)
    conn, r = sse_stream(live, {"model": "tiny", "prompt": "hello", "max_tokens": 40, "temperature": 0})
    lines = [ln for ln in r.read().decode().split("\n\n") if ln]
    conn.close()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    stop = want[5:7]   # a stop string that occurs in the answer: the text ends before its first occurrence
    c = client(live).completions.create(model="tiny", prompt="hello", max_tokens=40, temperature=0, stop=[stop])
    assert c.choices[0].text == want[:want.find(stop)] and c.choices[0].finish_reason == "stop"


def test_16_concurrent_requests_are_all_answered_correctly(live, tiny_checkpoint):
    prompts = [f"request {i}: " + "xyz"[: i % 3] * (i % 5) for i in range(16)]
    api = client(live)

    def ask(i):
        return api.completions.create(model="tiny", prompt=prompts[i], max_tokens=8 + i, temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    for i, answer in enumerate(answers):
        assert answer == reference_text(tiny_checkpoint, list(prompts[i].encode()), 8 + i)[0], i


def test_models_and_health(live):
    models = client(live).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["status"] == "ok" and health["model"] == "tiny" and health["max_batch"] == 8


ERR = {"type": "invalid_request_error"}
BAD_INPUTS = [
    (b"{not json", 400, {"code": "invalid_json", "param": None}),
    (b"[1, 2]", 400, {"message": "the request body must be a JSON object", "code": "invalid_json"}),
    ({"model": "tiny", "prompt": "hi", "max_tokens": "ten"}, 400,
     {"message": "max_tokens: Input should be a valid integer", "param": "max_tokens", "code": "int_type"}),
    ({"model": "tiny", "prompt": 42}, 400, {"message": "prompt: Input should be a valid string", "param": "prompt"}),
    ({"model": "tiny", "prompt": "hi", "temperature": "hot"}, 400, {"param": "temperature", "code": "float_type"}),
    ({"model": "tiny", "prompt": "hi", "stream": "yes"}, 400, {"param": "stream", "code": "bool_type"}),
    ({"model": "tiny"}, 400, {"message": "prompt: Field required", "param": "prompt", "code": "missing"}),
    ({"model": "tiny", "prompt": "hi", "max_tokens": 0}, 400,
     {"message": "max_tokens: Input should be greater than or equal to 1", "param": "max_tokens",
      "code": "greater_than_equal"}),
    ({"model": "tiny", "prompt": "hi", "max_tokens": 511}, 400,
     {"message": "max_tokens=511 plus the prompt's 2 tokens exceed the model's context of 512 tokens; ask for at most "
                 "510", "param": "max_tokens", "code": "context_length_exceeded"}),
    ({"model": "tiny", "prompt": "x" * 600}, 400,
     {"message": "the prompt is 600 tokens long, but the model's context is 512 tokens (at least one is needed for "
                 "the answer); shorten it", "param": "prompt", "code": "context_length_exceeded"}),
    ({"model": "tiny", "prompt": ""}, 400, {"message": "the prompt is empty; give at least one token of text"}),
    ({"model": "gpt-4", "prompt": "hi"}, 404,
     {"message": "the model 'gpt-4' does not exist; this server serves 'tiny' (GET /v1/models)", "param": "model",
      "code": "model_not_found"}),
    ({"model": "tiny", "prompt": "y" * 5000}, 413,
     {"message": "the request body is larger than 4096 bytes", "code": "request_too_large"}),
    ({"model": "tiny", "prompt": "hi", "n": 2}, 400, {"param": "n", "code": "less_than_equal"}),
    ({"model": "tiny", "prompt": "hi", "stop": list("abcde")}, 400,
     {"message": "stop: at most 4 stop strings, got 5", "param": "stop"}),
]
BAD_CHATS = [
    ({"model": "tiny", "messages": [{"role": "assistant", "content": "hi"}]}, 400,
     {"message": "the last message must have role 'user': the model answers the user", "param": "messages"}),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, {"param": "messages.0.role"}),
    ({"model": "tiny", "messages": []}, 400, {"param": "messages", "code": "too_short"}),
    ({"model": "tiny", "messages": [{"role": "user", "content": "q" * 450}]}, 400,
     {"param": "messages", "code": "context_length_exceeded"}),
]


@pytest.mark.parametrize("path,body,status,fields", [("/v1/completions", *b) for b in BAD_INPUTS]
                         + [("/v1/chat/completions", *b) for b in BAD_CHATS])
def test_bad_input_gets_a_4xx_in_openais_error_shape_and_never_reaches_the_model(live, path, body, status, fields):
    before = live.served.engine.stats()
    got_status, got = post(live, path, body)
    assert got_status == status
    assert set(got) == {"error"} and set(got["error"]) == {"message", "type", "param", "code"}
    for key, value in {**ERR, **fields}.items():
        assert got["error"][key] == value, (key, got)
    assert live.served.engine.stats()["finished"] == before["finished"]


def test_the_openai_client_raises_its_own_errors(live):
    with pytest.raises(openai.NotFoundError) as e:
        client(live).completions.create(model="nope", prompt="hi")
    assert e.value.status_code == 404 and e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client(live).completions.create(model="tiny", prompt="hi", max_tokens=0)
    assert e.value.body["param"] == "max_tokens"


def test_unknown_route_is_a_404_in_the_error_shape(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("GET", "/v1/nothing")
    r = conn.getresponse()
    assert r.status == 404 and json.loads(r.read())["error"]["message"] == "Not Found"


def test_full_queue_answers_503_and_the_held_requests_then_finish(tiny_checkpoint):
    s = start_server(tiny_checkpoint, "--max-batch", "1", "--max-queue", "1")
    slow = s.served.engine.model = Slow(s.served.engine.model)
    slow.gate = threading.Event()
    body = {"model": "tiny", "prompt": "hold", "max_tokens": 3, "temperature": 0}
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, s, "/v1/completions", body)
            assert slow.entered.wait(30)              # the first request is being prefilled (its row is taken)
            second = pool.submit(post, s, "/v1/completions", body)
            for _ in range(500):                      # bounded: until the second one waits in the queue
                if s.served.engine.stats()["queued"] == 1:
                    break
                time.sleep(0.01)
            status, err = post(s, "/v1/completions", body)
            assert status == 503 and err["error"]["type"] == "server_error" and err["error"]["code"] == "queue_full"
            assert err["error"]["message"] == "the server is busy: 0 requests running and 1 waiting; retry later"
            slow.gate.set()
            assert first.result(60)[0] == 200 and second.result(60)[0] == 200
            assert first.result()[1]["choices"][0]["text"] == second.result()[1]["choices"][0]["text"]
    finally:
        slow.gate.set()
        s.stop()


def test_a_client_that_disconnects_mid_stream_frees_its_row(tiny_checkpoint):
    # 400 steps of at least 50 ms: 20 s of generation, so even a loaded machine sees the hang-up mid-stream
    s = start_server(tiny_checkpoint, "--max-batch", "2", delay=0.05)
    try:
        conn, r = sse_stream(s, {"model": "tiny", "prompt": "hi", "max_tokens": 400, "temperature": 0})
        assert r.readline().startswith(b"data: ")   # the first chunk has arrived: the request is running
        assert s.served.engine.stats()["running"] == 1
        r.close()
        conn.close()
        for _ in range(500):                             # bounded: 10 s, half of 400 tokens' 20 s
            stats = s.served.engine.stats()
            if stats["running"] == 0:
                break
            time.sleep(0.02)
        assert stats["running"] == 0 and stats["cancelled"] == 1 and stats["finished"] == 1
    finally:
        s.stop()


def test_sigterm_finishes_the_stream_in_flight_and_exits_0(tiny_checkpoint):
    # the real command in a subprocess; each engine step is slowed to 10 ms so the request is still running
    script = ("import sys, time; import gpt.serve.engine as e; step = e.Engine._step\n"
              "e.Engine._step = lambda self, j: (time.sleep(0.01), step(self, j))[1]\n"
              "from gpt.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script, "serve", "--checkpoint", str(tiny_checkpoint),
                             "--port", "0", "--dtype", "float64", "--model-name", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving tiny on http://127.0.0.1:"), (line, proc.stderr.read())
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 100, "temperature": 0,
                                      "stream": True, "stream_options": {"include_usage": True}}))
        r = conn.getresponse()
        first = r.readline()
        proc.send_signal(signal.SIGTERM)
        rest = first.decode() + r.read().decode()
        events = [e[len("data: "):] for e in rest.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        usage = json.loads(events[-2])["usage"]
        text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-2])
        assert text == reference_text(tiny_checkpoint, list(b"hi"), 100)[0]
        assert usage["completion_tokens"] == len(reference_text(tiny_checkpoint, list(b"hi"), 100)[1])
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()


def test_serve_without_the_extra_names_it(monkeypatch, capsys, tiny_checkpoint):
    import builtins

    real_import = builtins.__import__

    def no_uvicorn(name, *a, **kw):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    assert main(["serve", "--checkpoint", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err == ("tinygpt: error: tinygpt serve needs FastAPI and uvicorn (No module named 'uvicorn'); pip install "
                   "\"tinygpt[serve]\"\n")


def test_a_failing_model_step_is_a_500_and_the_server_goes_on(tiny_checkpoint):
    s = start_server(tiny_checkpoint)
    real = s.served.engine.model

    class Broken(Slow):
        def __call__(self, *args, **kw):
            raise RuntimeError("out of memory (simulated)")

    try:
        s.served.engine.model = Broken(real)
        status, err = post(s, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3})
        assert status == 500 and err["error"] == {"message": "generation failed: out of memory (simulated)",
                                                  "type": "server_error", "param": None, "code": None}
        s.served.engine.model = real
        status, ok = post(s, "/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3, "temperature": 0})
        assert status == 200 and ok["usage"]["completion_tokens"] == 3
    finally:
        s.stop()


def test_a_lora_instruct_run_answers_as_tinygpt_chat_does(tmp_path, monkeypatch, capsys):
    """A `finetune instruct` run with LoRA (saved here with non-zero LoRA weights) is loaded merged, as `tinygpt
    chat` loads it, and a one-question chat at temperature 0 answers exactly what `tinygpt chat` prints."""
    import io

    import numpy as np

    import backends
    from gpt import GPTModel
    from gpt.training.checkpoint import save_checkpoint
    from gpt.training.finetune import apply_finetune_shape
    from live_server import TINY_CFG

    ft = {"task": "instruct", "lora": {"rank": 2, "alpha": 4.0}}
    model = GPTModel(TINY_CFG, backend=backends.get_backend("numpy", dtype="float64"), seed=5)
    apply_finetune_shape(model, ft, seed=0)
    rng = np.random.default_rng(0)
    weights = {k: v + 0.05 * rng.standard_normal(v.shape) if k.endswith(".B") else v
               for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    run = tmp_path / "instruct"
    save_checkpoint(run, model, None, {"step": 0, "model_config": model.cfg.to_dict(), "tokenizer": {"kind": "bytes"},
                                       "finetune": ft})
    monkeypatch.setattr("sys.stdin", io.StringIO("What is a tensor?\n"))
    assert main(["chat", "--checkpoint", str(run), "--max-new-tokens", "20", "--dtype", "float64"]) == 0
    printed = capsys.readouterr().out
    s = start_server(run)
    try:
        r = client(s).chat.completions.create(model="tiny", max_tokens=20, temperature=0,
                                              messages=[{"role": "user", "content": "What is a tensor?"}])
        assert r.choices[0].message.content + "\n" == printed and len(printed) > 1
    finally:
        s.stop()
