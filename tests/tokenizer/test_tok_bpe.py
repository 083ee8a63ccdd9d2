"""BPETokenizer: round trips, special-token policy, save/load and the vocabulary listing."""
import pydoc_data.topics
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import GPT4_SPLIT_PATTERN, BPETokenizer
from tokenizer.fileformat import render_token

EOT = "<|endoftext|>"
CORPUS = "\n".join(pydoc_data.topics.topics.values())
BROAD_TEXT = st.text(st.characters(codec="utf-8"), max_size=200)


@pytest.fixture(scope="module")
def trained():
    """One tokenizer per split: GPT-2's and GPT-4's patterns on 100 KB of text, none on 3 KB."""
    return {
        "gpt2": BPETokenizer.train(CORPUS[:100_000], 600, pattern="gpt2", special_tokens=[EOT, "<|pad|>"]),
        "gpt4": BPETokenizer.train(CORPUS[:100_000], 600, pattern="gpt4", special_tokens=[EOT]),
        None: BPETokenizer.train(CORPUS[:3_000], 300, pattern=None, special_tokens=[EOT]),
    }


@settings(max_examples=200, deadline=None)
@given(text=BROAD_TEXT, pattern=st.sampled_from(["gpt2", "gpt4", None]))
def test_round_trip(trained, text, pattern):
    tok = trained[pattern]
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.decode(tok.encode(text, disallowed_special=())) == text


def test_round_trip_corpus(trained):
    for tok in trained.values():
        assert tok.decode(tok.encode(CORPUS[:20_000])) == CORPUS[:20_000]


def test_special_token_policy(trained):
    tok = trained["gpt2"]
    eot, pad = tok.special_tokens[EOT], tok.special_tokens["<|pad|>"]
    assert (eot, pad) == (598, 599) and tok.eot_token == 598
    text = f"hi{EOT} there<|pad|>"
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*disallowed"):
        tok.encode(text)
    with pytest.raises(ValueError, match=r"'<\|pad\|>'"):
        tok.encode(text, allowed_special={EOT})
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(eot) == 1 and ids[-1] == pad and tok.decode(ids) == text
    assert tok.encode(text, allowed_special={EOT}, disallowed_special=()).count(pad) == 0
    plain = tok.encode(text, disallowed_special=())
    assert plain == tok.encode_ordinary(text) and eot not in plain
    assert tok.encode_batch([text, "x"], allowed_special="all") == [ids, tok.encode("x")]


def test_no_eot_token():
    tok = BPETokenizer.train("hello hello", 260)
    assert not hasattr(tok, "eot_token")
    with pytest.raises(AttributeError, match="special_tokens"):
        tok.eot_token


def test_bad_ids_and_patterns():
    tok = BPETokenizer.train("hello hello", 260, special_tokens=[EOT])
    assert tok.decode([tok.eot_token]) == EOT
    for bad in (260, -1, "x"):
        with pytest.raises(ValueError, match=f"token id {bad!r} is not in this vocabulary"):
            tok.decode([104, bad])
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer(pattern="(")
    with pytest.raises(ValueError, match="listed twice"):
        BPETokenizer(special_tokens=[EOT, EOT])
    with pytest.raises(ValueError, match="earlier ids"):
        BPETokenizer(merges=[(97, 256)])
    with pytest.raises(ValueError, match="listed twice"):
        BPETokenizer(merges=[(97, 98), (97, 98)])


def test_custom_pattern_and_lone_surrogate():
    tok = BPETokenizer.train("ab ab ab", 258, pattern=r"\S+|\s+")
    assert list(tok.merges) == [(97, 98)] and tok.encode("ab ab") == [256, 32, 256]
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"  # tiktoken's replacement


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", None])
def test_save_load_same_ids(trained, tmp_path, pattern):
    tok = trained[pattern]
    path = tmp_path / "tok.bpe"
    tok.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "tinygpt-bpe 1"
    loaded = BPETokenizer.load(path)
    assert loaded.pattern == tok.pattern and loaded.special_tokens == tok.special_tokens
    assert loaded.merges == tok.merges and loaded.n_vocab == tok.n_vocab
    text = CORPUS[50_000:60_000] + EOT
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    vocab = (tmp_path / "tok.bpe.vocab").read_text(encoding="utf-8")
    assert f"{tok.n_vocab - 1} " in vocab and " (special)" in vocab


def test_custom_pattern_saved(tmp_path):
    tok = BPETokenizer.train("x = 1\ny = 22\n", 260, pattern=GPT4_SPLIT_PATTERN[:-4])
    tok.save(tmp_path / "t", vocab=False)
    assert BPETokenizer.load(tmp_path / "t").pattern == tok.pattern
    assert not (tmp_path / "t.vocab").exists()


def test_vocab_listing(tmp_path):
    tok = BPETokenizer.train("aaabdaaabac", 259, pattern=None)
    tok.save_vocab(tmp_path / "v")
    lines = (tmp_path / "v").read_text(encoding="utf-8").splitlines()
    assert "10 [\\n]" in lines and "92 [\\\\]" in lines and "200 [\\xc8]" in lines
    assert lines[-1] == "258 [aaab] <- [aa][ab] (256, 257)"


def test_render_token():
    assert render_token("é🙂 x".encode()) == "é🙂 x"
    assert render_token(b"\t\x00\xe2\x82") == "\\t\\x00\\xe2\\x82"


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.bpe"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="bad.bpe is not a tinygpt-bpe file"):
        BPETokenizer.load(bad)
    bad.write_text("tinygpt-bpe 2\n")
    with pytest.raises(ValueError, match="version 2; this tinygpt reads version 1"):
        BPETokenizer.load(bad)
    bad.write_text('tinygpt-bpe 1\nname "x"\npattern "gpt2"\nspecials 0\nmerges 2\n97 98\n')
    with pytest.raises(ValueError, match="line 7: malformed"):
        BPETokenizer.load(bad)
    bad.write_text('tinygpt-bpe 1\nname "x"\nspecials 0\n')
    with pytest.raises(ValueError, match="line 3: expected 'pattern ...'"):
        BPETokenizer.load(bad)
