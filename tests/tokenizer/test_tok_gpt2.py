"""Our GPT-2 encoding gives exactly tiktoken's "gpt2" ids, on real corpora and on generated Unicode.

tiktoken reads its cached copies of the same two files from the shared tiktoken-cache folder (offline);
our get_encoding finds encoder.json/vocab.bpe through TINYGPT_DATA_DIR.
"""
import json

import pydoc_data.topics
import pytest
from conftest import data_dir, require_data
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizer
from tokenizer import GPT2Encoding, bytes_to_unicode, get_encoding

EOT = "<|endoftext|>"
HYPOTHESIS = settings(max_examples=200, deadline=None)
# Pieces that exercise the split pattern and the byte-level merges.
PIECES = st.sampled_from([
    EOT, "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "don't", "I'M", " ", "  ", "   ", "\n", "\n\n", " \n ",
    "\t", "\r\n", "  \n", "0", "123", "4567", " 89", "😀", "👍🏽", "👨‍👩‍👧", " 🙂🙂",
    "漢字", " 日本語", "한국어",
    "e\u0301", "a\u0308\u0323", "\u200d", "\xa0", "\u3000", "Hello", " world", "über", "—", "...", "?!", "\x00",
    "<|", "|>", "endoftext", "ﬁ", "Ω", "ß",
])
MIXED_TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=30).map("".join)


@pytest.fixture(scope="module")
def ours():
    require_data("gpt2/encoder.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYGPT_DATA_DIR", str(data_dir()))
        mp.setenv("TINYGPT_OFFLINE", "1")
        get_encoding.cache_clear()
        return get_encoding("gpt2")


def test_properties(ours):
    assert ours.n_vocab == 50257 and ours.eot_token == 50256 and ours.name == "gpt2"
    assert ours.encode("Hello, world") == [15496, 11, 995]
    assert get_encoding("gpt2") is ours  # built once per process
    assert tokenizer.get_encoding is get_encoding
    with pytest.raises(ValueError, match="unknown encoding 'gpt3'; known: gpt2"):
        get_encoding("gpt3")
    with pytest.raises(TypeError, match="loaded, not trained"):
        GPT2Encoding.train("abc", 300)


def test_bytes_to_unicode():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("!")] == "!" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_byte_ids_are_not_byte_values(ours):
    # encoder.json gives '!' id 0 and the space (Ġ) id 220: the first 256 ids are bytes in byte-to-unicode order.
    assert ours.encode("!") == [0] and ours.encode(" ") == [220] and ours.decode_bytes([0, 220]) == b"! "


@pytest.mark.parametrize("name", ["the-verdict.txt", "sms-spam/SMSSpamCollection", "instruction-data.json"])
def test_files_match_tiktoken(ours, tiktoken_gpt2, name):
    text = require_data(name).read_text(encoding="utf-8")
    ids = ours.encode(text)
    assert ids == tiktoken_gpt2.encode(text)
    assert ours.decode(ids) == text


def test_instruction_fields_match_tiktoken(ours, tiktoken_gpt2):
    records = json.loads(require_data("instruction-data.json").read_text(encoding="utf-8"))
    fields = [r[k] for r in records for k in ("instruction", "input", "output")]
    assert ours.encode_batch(fields) == tiktoken_gpt2.encode_batch(fields)


def test_python_docs_match_tiktoken(ours, tiktoken_gpt2):
    text = "\n".join(pydoc_data.topics.topics.values())
    assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


def test_code_points_match_tiktoken(ours, tiktoken_gpt2):
    # Each character after a letter, doubled before a digit, after a space and before an apostrophe: the split
    # pattern's Unicode classes (\p{L}, \p{N}, \s) must agree with tiktoken's regex engine. Every code point of
    # the planes with assigned characters (0-3, 14), every 97th elsewhere (unassigned or private use).
    cps = [
        c for c in range(0x110000)
        if not 0xD800 <= c <= 0xDFFF and (c < 0x40000 or 0xE0000 <= c < 0xF0000 or c % 97 == 0)
    ]
    for k in range(0, len(cps), 4096):
        text = "".join(f"a{chr(c)}b {chr(c)}{chr(c)}1 {chr(c)}'\n" for c in cps[k : k + 4096])
        assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text), hex(cps[k])


@HYPOTHESIS
@given(text=st.one_of(MIXED_TEXT, st.text(st.characters(codec="utf-8"), max_size=100)))
def test_hypothesis_matches_tiktoken(ours, tiktoken_gpt2, text):
    assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert ours.decode(ours.encode_ordinary(text)) == text
    for policy in ({"allowed_special": "all"}, {"allowed_special": {EOT}}, {"disallowed_special": ()}):
        assert ours.encode(text, **policy) == tiktoken_gpt2.encode(text, **policy)
    if EOT in text:
        with pytest.raises(ValueError, match="<\\|endoftext\\|>"):
            ours.encode(text)
        with pytest.raises(ValueError):
            tiktoken_gpt2.encode(text)
    else:
        assert ours.encode(text) == tiktoken_gpt2.encode(text)


@HYPOTHESIS
@given(text=st.text(max_size=300))
def test_round_trip_any_text(ours, text):
    ids = ours.encode(text, allowed_special="all")
    assert ours.decode(ids) == text
    assert ours.decode_bytes(ids) == text.encode("utf-8")


def test_special_token_policies(ours, tiktoken_gpt2):
    text = f"Hello{EOT} world{EOT}"
    assert ours.encode(text, allowed_special="all") == [15496, 50256, 995, 50256]
    assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert 50256 not in ours.encode_ordinary(text)
    with pytest.raises(ValueError) as theirs:
        tiktoken_gpt2.encode(text)
    with pytest.raises(ValueError, match="disallowed") as mine:
        ours.encode(text)
    assert EOT in str(theirs.value) and EOT in str(mine.value)


def test_partial_utf8_decodes_like_tiktoken(ours, tiktoken_gpt2):
    ids = ours.encode("🙂 x")
    for k in range(len(ids) + 1):
        assert ours.decode(ids[:k]) == tiktoken_gpt2.decode(ids[:k])
        assert ours.decode_bytes(ids[:k]) == tiktoken_gpt2.decode_bytes(ids[:k])
    assert ours.encode("a\ud800b") == tiktoken_gpt2.encode("a\ud800b")


def test_save_refused(ours, tmp_path):
    with pytest.raises(TypeError, match="encoder.json"):
        ours.save(tmp_path / "x")


def test_letters_newer_than_tiktokens_unicode_split_as_tiktoken_does(ours, tiktoken_gpt2):
    """Code points the `regex` module counts as letters/numbers but tiktoken's engine does not (hypothesis found
    "\U0003d000's"): at both ends of every range of tokenizer/tiktoken_tables.py, inside words and beside digits."""
    from tokenizer.tiktoken_tables import TIKTOKEN_NOT_LETTERS_OR_NUMBERS as ranges

    for first, last in ranges:
        for c in {chr(first), chr(last), chr((first + last) // 2)}:
            for text in (c + "'s", "a" + c + "b", " " + c + c, "12" + c + "3", "x " + c + " y"):
                assert ours.encode(text) == tiktoken_gpt2.encode(text), (hex(ord(c)), text)
    assert ours.encode("\U0003d000's") == tiktoken_gpt2.encode("\U0003d000's")


@pytest.mark.slow
def test_the_tiktoken_table_is_what_tiktoken_does(ours, tiktoken_gpt2, monkeypatch):
    """Every code point probed again (about a minute): the table's ranges are exactly where the plain split and
    tiktoken disagree, so a new tiktoken or regex release that changes them fails here."""
    import sys
    from pathlib import Path

    from tokenizer.tiktoken_tables import TIKTOKEN_NOT_LETTERS_OR_NUMBERS

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(require_data("tiktoken-cache")))
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(data_dir()))
    sys.path.insert(0, str(Path(__file__).parent))
    from tiktoken_tables_gen import differing_ranges

    assert differing_ranges() == list(TIKTOKEN_NOT_LETTERS_OR_NUMBERS)
