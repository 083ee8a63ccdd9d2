"""Chat rendering (the book's Alpaca prompt) and the token -> text stream with stop strings (gpt/serve/prompts.py),
plus the KV cache's per-row lengths bookkeeping they rely on."""
import numpy as np
import pytest

import backends
from gpt import GPTModel
from gpt.training.corpus import bytes_tokenizer
from gpt.instruct import PROMPT_HEADER, format_chat_prompt
from gpt.serve.prompts import TextStream, chat_format, render_chat


def _stream(text, stop, tok=None):
    tok = tok or bytes_tokenizer()
    s = TextStream(tok, stop)
    pieces = [s.push(t) for t in tok.encode(text)]
    return pieces, s.finish(), s.stopped


def test_utf8_split_across_tokens_is_held_until_whole():
    pieces, tail, stopped = _stream("é€", [])
    assert pieces == ["", "é", "", "", "€"] and tail == "" and not stopped


def test_stop_string_across_tokens_is_cut_and_a_false_start_released():
    pieces, tail, stopped = _stream("ab##c##END!", ["##END"])
    assert "".join(pieces) + tail == "ab##c" and stopped
    assert pieces[:4] == ["a", "b", "", ""] and pieces[4] == "##c"   # '##' held while it might start ##END
    pieces, tail, stopped = _stream("x#", ["##END"])
    assert pieces == ["x", ""] and tail == "#" and not stopped       # the held '#' comes out at the end


def test_first_of_several_stop_strings_wins():
    pieces, tail, stopped = _stream("one, two. three", [".", ","])
    assert "".join(pieces) == "one" and stopped


def test_alpaca_rendering_of_system_and_turns():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    want = (format_chat_prompt("Hi").replace(PROMPT_HEADER, "Be brief.") + "Hello.\n\n"
            + format_chat_prompt("Bye").replace(PROMPT_HEADER, "Be brief."))
    assert render_chat(msgs) == want
    assert render_chat([{"role": "user", "content": "Q"}]) == format_chat_prompt("Q")
    with pytest.raises(ValueError, match="the last message must have role 'user'"):
        render_chat(msgs[:3])
    with pytest.raises(ValueError, match=r"unknown chat format 'chatml'; known formats are \['alpaca'\]"):
        chat_format({"chat_format": "chatml"})


def test_row_lengths_positions_and_key_mask():
    model = GPTModel({"vocab_size": 11, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1},
                     backend=backends.get_backend("numpy", dtype="float64"))
    cache = model.new_kv_cache(2)
    assert cache.key_mask(1) is None and cache.positions(2).tolist() == [0, 1]
    cache.set_row_lengths([1, 3])
    assert cache.pos == 3 and cache.positions(2).tolist() == [[1, 2], [3, 4]]
    assert cache.key_mask(1)[:, 0, 0].tolist() == [[True, True, False, False], [True, True, True, True]]
    cache.advance(1)
    assert cache.lengths.tolist() == [2, 4] and cache.pos == 4
    with pytest.raises(ValueError, match=r"row lengths \[1, 9\] must be 2 counts in \[0, 8\]"):
        cache.set_row_lengths([1, 9])
    cache.reset()
    assert cache.lengths is None and cache.pos == 0
    np.testing.assert_array_equal(cache.positions(1), [0])


def test_the_library_and_the_cli_import_without_the_serve_extra():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\nfor m in ('fastapi', 'uvicorn', 'starlette', 'pydantic'): sys.modules[m] = None\n"
            "import gpt, gpt.cli, gpt.serve.engine, gpt.serve.prompts\n"
            "assert gpt.cli.main(['serve', '--help']) == 0\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    assert "usage: tinygpt serve" in out.stdout
