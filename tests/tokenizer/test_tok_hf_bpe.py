"""tokenizer.json byte-level BPE: our encoder gives exactly the `tokenizers` library's ids, and our writer's files
load there with our ids.

The reference files are trained here with `tokenizers`' BpeTrainer, using the split patterns of Qwen2
(transformers' `models/qwen2/tokenization_qwen2.py`, PRETOKENIZE_REGEX) and Llama 3 (Meta's llama3
`llama/tokenizer.py` pat_str, also transformers' `convert_slow_tokenizer.py` Llama 3 converter), with what their
real files carry: NFC and special/added tokens for the Qwen-style one, `ignore_merges` for the Llama-style one.
"""
import json
import unicodedata

import pydoc_data.topics
import pytest
from conftest import require_data
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenizer
from tokenizer import BPETokenizer, HFByteLevelBPE, get_encoding, save_hf_tokenizer
from tokenizer.hf_bpe import REGEX_DIFFERS

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Characters where the library's Unicode data differs from Python's / the regex module's (hf_tables.py): letters,
# numbers and marks its regexes do not know, combining classes and a composition its NFC lacks.
UNICODE_VERSION_CASES = ["a\u0558b", " \u0558", "x\U00011de0", "1\U00011de1", "a\u05c8", "a\u0323\U00016ff0\u0308",
                         "\u0323\U00016ff0", "\U00011935\U00011930", "e\u0301\u0898\u0316", "\U00011938"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
CORPUS = "\n".join(pydoc_data.topics.topics.values())
TRAIN, HELD_OUT = CORPUS[:120_000], CORPUS[200_000:260_000]
HYPOTHESIS = settings(max_examples=150, deadline=None)
PIECES = st.sampled_from([
    *QWEN_SPECIALS, *LLAMA_SPECIALS, "<think>", "<|endoftext|>x", "<|im_", "'s", "'S", "'LL", "don't", " ", "   ",
    "\n", "\n\n", " \n ", "\t", "\r\n", "  \n", "0", "1234567", " 89", "😀", "👨‍👩‍👧", "漢字", " 日本語", "한국어",
    "e\u0301", "a\u0308\u0323", "\u212b", "\u1e9b\u0323", "\u200d", "\xa0", "\u3000", "Hello", " world", "über",
    "—", "...", "?!", "\x00", "ﬁ", "Ω", "ß", "def", " return", "self.",
    *UNICODE_VERSION_CASES,
])
MIXED_TEXT = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=30).map("".join)


def hf_train(path, pattern, specials, normalizer=None, vocab_size=1200, ignore_merges=False, pre_tokenizer=None):
    """A tokenizer.json trained by `tokenizers` (Split(pattern) + ByteLevel, as Llama 3's and Qwen2's files)."""
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer or pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAIN], trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def qwen_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen") / "tokenizer.json"
    hf_train(path, QWEN2_PATTERN, QWEN_SPECIALS[:2], normalizers.NFC())
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.add_special_tokens([QWEN_SPECIALS[2]])  # added after training: an id after the vocabulary, as in Qwen's file
    tok.add_tokens(["<think>"])  # a non-special added token (Qwen3 has <think>), matched after NFC
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def llama_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama") / "tokenizer.json"
    return hf_train(path, LLAMA3_PATTERN, LLAMA_SPECIALS, ignore_merges=True)


@pytest.fixture(scope="module")
def prefix_file(tmp_path_factory):
    """RoBERTa-style: ByteLevel with add_prefix_space and its own GPT-2 regex, after a literal Split that removes "-"."""
    path = tmp_path_factory.mktemp("prefix") / "tokenizer.json"
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split("-", behavior="removed"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    return hf_train(path, None, ["<s>", "</s>"], vocab_size=800, pre_tokenizer=pre)


@pytest.fixture(scope="module", params=["qwen", "llama", "prefix"])
def pair(request, qwen_file, llama_file, prefix_file):
    """(ours, reference) for each trained file."""
    path = {"qwen": qwen_file, "llama": llama_file, "prefix": prefix_file}[request.param]
    return tokenizer.from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))


def hf_ids(ref, text):
    return ref.encode(text, add_special_tokens=False).ids


def test_trained_files_have_what_real_ones_carry(qwen_file, llama_file):
    qwen, llama = json.loads(qwen_file.read_text()), json.loads(llama_file.read_text())
    assert qwen["normalizer"] == {"type": "NFC"}
    assert [t["content"] for t in qwen["added_tokens"]] == [*QWEN_SPECIALS, "<think>"]
    assert llama["model"]["ignore_merges"] is True and not qwen["model"]["ignore_merges"]
    assert isinstance(llama["model"]["merges"][0], list)  # [a, b] pairs; the GPT-2 test below has them too


def test_corpus_ids_equal_tokenizers(pair):
    ours, ref = pair
    assert ours.encode(HELD_OUT) == hf_ids(ref, HELD_OUT)


def test_the_verdict_ids_equal_tokenizers(pair):
    text = require_data("the-verdict.txt").read_text(encoding="utf-8")
    ours, ref = pair
    assert ours.encode(text) == hf_ids(ref, text)


@HYPOTHESIS
@given(text=MIXED_TEXT)
def test_unicode_ids_equal_tokenizers(pair, text):
    ours, ref = pair
    assert ours.encode(text) == hf_ids(ref, text)


@HYPOTHESIS
@given(text=MIXED_TEXT)
def test_specials_as_text_equal_encode_special_tokens(pair, text):
    ours, ref = pair
    ref.encode_special_tokens = True
    try:
        assert ours.encode_ordinary(text) == hf_ids(ref, text)
    finally:
        ref.encode_special_tokens = False


@HYPOTHESIS
@given(text=MIXED_TEXT)
def test_decode_round_trips(pair, text):
    ours, ref = pair
    ids = ours.encode(text)
    if "prefix" in ours.name:  # a space before each piece, and "-" removed: what the library decodes too
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
        return
    assert ours.decode(ids) == ours.normalize(text)
    assert ours.normalize(text) == (ref.normalizer.normalize_str(text) if ref.normalizer else text)
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)


def test_unicode_version_differences(pair):
    ours, ref = pair
    for text in UNICODE_VERSION_CASES:
        assert ours.encode(text) == hf_ids(ref, text), ascii(text)
    if ref.normalizer:  # the library's NFC does not know U+16FF0's combining class (6), so it does not reorder
        assert ours.normalize("\u0323\U00016ff0") == "\u0323\U00016ff0" != unicodedata.normalize("NFC", "\u0323\U00016ff0")


def test_special_and_added_tokens(qwen_file):
    ours, ref = tokenizer.from_pretrained(qwen_file), tokenizers.Tokenizer.from_file(str(qwen_file))
    text = "<|im_start|>user\nhi<|im_end|><think>ok</think><|endoftext|>"
    ids = ours.encode(text)
    assert ids == hf_ids(ref, text)
    assert ids[0] == ref.token_to_id("<|im_start|>") == ours.special_tokens["<|im_start|>"]
    assert ours.special_tokens["<|im_end|>"] == ref.token_to_id("<|im_end|>") == ours.n_vocab - 2
    assert ours.eot_token == ref.token_to_id("<|endoftext|>") and ref.token_to_id("<think>") in ids
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids) == "user\nhi<think>ok</think>"
    assert ours.encode(text, allowed_special={"<|im_end|>"}) == [
        *ours.encode_ordinary("<|im_start|>user\nhi"), ours.special_tokens["<|im_end|>"],
        *ours.encode("<think>ok</think>"), *ours.encode_ordinary("<|endoftext|>")]
    with pytest.raises(ValueError, match=r"text contains the special token '<\|im_start\|>', which is disallowed"):
        ours.encode(text, allowed_special=(), disallowed_special="all")


def test_ignore_merges_takes_a_vocab_word_whole(llama_file, tmp_path):
    """A pre-token that is itself a vocabulary entry maps to that id even where the merges would split it."""
    data = json.loads(llama_file.read_text())
    ref = tokenizers.Tokenizer.from_file(str(llama_file))
    word = " unmergeableword"
    assert len(hf_ids(ref, word)) > 1
    data["model"]["vocab"]["Ġunmergeableword"] = len(data["model"]["vocab"])
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    ours, ref = tokenizer.from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))
    text = "an" + word + "." + word
    assert ours.encode(text) == hf_ids(ref, text)
    assert ours.encode(word) == [data["model"]["vocab"]["Ġunmergeableword"]]
    data["model"]["ignore_merges"] = False
    path.write_text(json.dumps(data))
    ours, ref = tokenizer.from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))
    assert ours.encode(text) == hf_ids(ref, text) and len(ours.encode(word)) > 1


def test_directory_reads_bos_and_eos_from_tokenizer_config(llama_file, tmp_path):
    (tmp_path / "tokenizer.json").write_text(llama_file.read_text())
    config = {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    enc = tokenizer.from_pretrained(tmp_path)
    assert (enc.bos_token_id, enc.eos_token_id) == (0, 2) and enc.eot_token == 1


# --- the writer: our tokenizers as tokenizer.json ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2():
    require_data("gpt2/encoder.json")
    return get_encoding("gpt2")


@pytest.fixture(scope="module")
def gpt2_files(gpt2, tmp_path_factory):
    path = save_hf_tokenizer(gpt2, tmp_path_factory.mktemp("gpt2") / "tokenizer.json")
    return tokenizer.from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))


def test_gpt2_tokenizer_json_equals_tiktoken(gpt2_files, tiktoken_gpt2, gpt2):
    ours, ref = gpt2_files
    text = HELD_OUT + "<|endoftext|>" + CORPUS[:20_000]
    expected = tiktoken_gpt2.encode(text, allowed_special="all")
    assert hf_ids(ref, text) == expected == ours.encode(text) == gpt2.encode(text, allowed_special="all")
    assert ours.n_vocab == ref.get_vocab_size() == 50257 and ours.eot_token == 50256


@HYPOTHESIS
@given(text=MIXED_TEXT)
def test_gpt2_tokenizer_json_unicode(gpt2_files, tiktoken_gpt2, text):
    ours, ref = gpt2_files
    expected = tiktoken_gpt2.encode(text, allowed_special="all")
    assert hf_ids(ref, text) == expected == ours.encode(text)
    assert ours.decode(expected) == ref.decode(expected, skip_special_tokens=False) == tiktoken_gpt2.decode(expected)


@pytest.fixture(scope="module", params=["gpt2", "gpt4", None, r"\p{L}+|\p{N}"])
def ours_written(request, tmp_path_factory):
    """Our trained BPETokenizer (as `tinygpt train` makes it), written and read back by both libraries."""
    # No split makes the whole text one chunk (slow to train and to merge, see training.py): a short text then.
    size = 60_000 if request.param else 4_000
    enc = BPETokenizer.train(TRAIN[:size], 600, pattern=request.param, special_tokens=["<|endoftext|>"])
    path = save_hf_tokenizer(enc, tmp_path_factory.mktemp("ours"))
    return enc, tokenizer.from_pretrained(path.parent), tokenizers.Tokenizer.from_file(str(path))


@HYPOTHESIS
@given(text=MIXED_TEXT)
def test_written_bpe_loads_with_our_ids(ours_written, text):
    enc, back, ref = ours_written
    expected = hf_ids(ref, text)
    assert back.encode(text) == expected
    if REGEX_DIFFERS.isdisjoint(text):  # else the library's regex engine knows fewer letters than ours (hf_export.py)
        assert enc.encode(text, allowed_special="all") == expected
    assert back.decode(expected) == enc.decode(expected)


def test_written_bpe_on_corpus(ours_written):
    enc, back, ref = ours_written
    text = HELD_OUT[:20_000] if enc.pattern else HELD_OUT[:2_000]
    assert hf_ids(ref, text) == enc.encode(text) == back.encode(text)
    assert back.n_vocab == enc.n_vocab == ref.get_vocab_size() and back.eot_token == enc.eot_token


def test_written_directory_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    enc = BPETokenizer.train(TRAIN[:20_000], 400, special_tokens=["<|endoftext|>"])
    save_hf_tokenizer(enc, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.encode(HELD_OUT[:3000], add_special_tokens=False) == enc.encode(HELD_OUT[:3000])
    assert hf.eos_token_id == enc.eot_token == tokenizer.from_pretrained(tmp_path).eos_token_id


def test_writer_rejects_duplicate_token_bytes(tmp_path):
    # merges (a, b) then (ab, c) and (a, bc) after (b, c): ids 258 and 260 both spell b"abc".
    enc = BPETokenizer([(97, 98), (98, 99), (256, 99), (97, 257)], pattern=None)
    with pytest.raises(ValueError, match=r"token ids 258 and 259 both spell b'abc'"):
        save_hf_tokenizer(enc, tmp_path / "tokenizer.json")


# --- errors -----------------------------------------------------------------------------------------------------


def _edited(llama_file, tmp_path, edit):
    data = json.loads(llama_file.read_text())
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["model"].update(type="Unigram"), "model 'Unigram' is not supported"),
    (lambda d: d["model"].update(type="WordPiece"), "model 'WordPiece' is not supported"),
    (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer 'Lowercase' is not supported"),
    (lambda d: d.update(pre_tokenizer={"type": "Metaspace"}), r"pre-tokenizer \['Metaspace'\] is not byte-level"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(behavior="MergedWithPrevious"),
     "Split behavior 'MergedWithPrevious' is not supported"),
    (lambda d: d.update(decoder={"type": "WordPiece"}), "decoder 'WordPiece' is not supported"),
    (lambda d: d["model"]["merges"].append(["Ġzzzq", "x"]), "merge part 'Ġzzzq' is not in the model's vocab"),
    (lambda d: d["added_tokens"][0].update(lstrip=True), "sets lstrip, which is not supported"),
    (lambda d: d["model"].update(byte_fallback=True), "byte_fallback is not supported"),
])
def test_unsupported_components_name_themselves(llama_file, tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.from_pretrained(_edited(llama_file, tmp_path, edit))


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist; give a tokenizer.json or a model directory"):
        tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="holds neither tokenizer.json"):
        tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a tokenizer.json"):
        tokenizer.from_pretrained(tmp_path)


def test_decode_rejects_unknown_ids(llama_file):
    enc = HFByteLevelBPE.from_file(llama_file)
    with pytest.raises(ValueError, match=r"token id 99999 is not in this vocabulary \(ids are 0..1199\)"):
        enc.decode([1, 99999])


def test_merges_as_strings_and_normalized_special_tokens(llama_file, tmp_path):
    """Older files (GPT-2's on the hub, Llama 3's) write merges as "a b" and may mark special tokens normalized."""
    def edit(d):
        d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
        d["added_tokens"][1]["normalized"] = True
        d["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}]}

    path = _edited(llama_file, tmp_path, edit)
    ours, ref = tokenizer.from_pretrained(path), tokenizers.Tokenizer.from_file(str(path))
    text = HELD_OUT[:5000] + "<|end_of_text|>ﬁ<|begin_of_text|>x"
    assert ours.encode(text) == hf_ids(ref, text) and ours.encode(text)[-2] == ours.special_tokens["<|begin_of_text|>"]
    assert ours.encode(text) == tokenizer.from_pretrained(llama_file).encode(unicodedata.normalize("NFKC", text))
