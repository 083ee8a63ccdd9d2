"""Hugging Face byte-level BPE tokenizers (tokenizer.json of GPT-2, Llama 3, Qwen2/3) run by our own encoder.

Reads the `tokenizers` library's serialized format (docs: huggingface.co/docs/tokenizers, "The tokenization
pipeline": normalizer -> pre-tokenizer -> model -> decoder, with added tokens cut out first, see added.py) and
encodes as that library's BPE model does (`models/bpe/word.rs` `merge_all`): inside each pre-token, start from one
symbol per byte (ByteLevel maps the 256 bytes to visible characters, gpt2.bytes_to_unicode) and repeatedly merge
the adjacent pair with the lowest *rank* (its line in `merges`), leftmost first on ties. The rank, not the merged
token's id, orders the merges: in these files the two need not agree (unlike bpe.py's, where id = 256 + rank).
`ignore_merges` (Llama 3) maps a pre-token that is itself in the vocabulary straight to its id.
Supported: normalizer null | NFC | NFD | NFKC | NFKD | Sequence of them; pre-tokenizer ByteLevel, or a Sequence of
Split steps (Isolated or Removed) ending in ByteLevel; model BPE; decoder ByteLevel. Anything else: ValueError.
"""
from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import regex

from .added import AddedToken, SpecialPolicy, allowed_set, split_on
from .gpt2 import bytes_to_unicode
from .patterns import GPT2_SPLIT_PATTERN

# The pattern ByteLevel(use_regex=true) splits with: GPT-2's (see patterns.py).
BYTE_LEVEL_PATTERN = GPT2_SPLIT_PATTERN
NORMALIZERS = ("NFC", "NFD", "NFKC", "NFKD")
EOT_NAMES = ("<|endoftext|>", "<|end_of_text|>")  # GPT-2/Qwen's and Llama 3's end-of-text tokens


class HFByteLevelBPE:
    """A byte-level BPE tokenizer read from tokenizer.json; ids equal `tokenizers`' (add_special_tokens=False)."""

    cache_size = 100_000  # distinct pre-tokens whose ids are remembered; emptied when full

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        pre_tokenizer: Callable[[str], list[str]],
        normalizer: Callable[[str], str] | None = None,
        added_tokens: Sequence[AddedToken] = (),
        ignore_merges: bool = False,
        unk_token: str | None = None,
        fuse_unk: bool = False,
        name: str = "tokenizer.json",
    ):
        self.name, self.ignore_merges, self.fuse_unk = name, ignore_merges, fuse_unk
        self._pre_tokenize, self._normalize = pre_tokenizer, normalizer
        self.vocab = dict(vocab)  # model vocabulary: token string -> id (added tokens not included)
        self.unk_id = _lookup(self.vocab, unk_token, "unk_token") if unk_token is not None else None
        byte_char = bytes_to_unicode()
        self._byte_ids = [self.vocab.get(byte_char[b]) for b in range(256)]  # None: byte missing from vocab
        char_byte = {c: b for b, c in byte_char.items()}
        self._vocab_bytes = {}  # token bytes -> id, for tokens written in byte-level characters
        for token, i in self.vocab.items():
            if all(c in char_byte for c in token):
                self._vocab_bytes[bytes(char_byte[c] for c in token)] = i
        self._ranks = {}  # (left id, right id) -> (rank, merged id); a later duplicate wins, as in HF
        for rank, (a, b) in enumerate(merges):
            pair = (_lookup(self.vocab, a, "merge part"), _lookup(self.vocab, b, "merge part"))
            self._ranks[pair] = (rank, _lookup(self.vocab, a + b, "merged token"))
        self.added = {t.content: t for t in added_tokens}
        self.special_tokens = {t.content: t.id for t in added_tokens if t.special}  # text -> id
        self._raw_plain = {t.content for t in added_tokens if not t.special and not t.normalized}
        ids = list(self.vocab.values()) + [t.id for t in added_tokens]
        self._token_bytes: list[bytes | None] = [None] * (max(ids) + 1 if ids else 0)
        for token, i in [*self.vocab.items(), *((t.content, t.id) for t in added_tokens)]:
            # HF's ByteLevel decoder: a token of byte-level characters stands for those bytes, any other for its text
            mapped = all(c in char_byte for c in token)
            self._token_bytes[i] = bytes(char_byte[c] for c in token) if mapped else token.encode("utf-8")
        self._cache: dict[str, list[int]] = {}
        self.bos_token_id: int | None = None  # from tokenizer_config.json, when from_pretrained found one
        self.eos_token_id: int | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> "HFByteLevelBPE":
        """Read a tokenizer.json; ValueError naming any component this encoder does not implement."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a tokenizer.json (not JSON: {e})") from None
        return cls(**parse_tokenizer_json(data, str(path)), name=str(path))

    @property
    def n_vocab(self) -> int:
        """Number of token ids: the largest id + 1 (model vocabulary and added tokens)."""
        return len(self._token_bytes)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts (tiktoken's name)."""
        return set(self.special_tokens)

    @property
    def eot_token(self) -> int:
        """Id of the end-of-text token (<|endoftext|> or <|end_of_text|>); AttributeError when there is none."""
        for name in EOT_NAMES:
            if name in self.special_tokens:
                return self.special_tokens[name]
        raise AttributeError(f"{self.name} has no end-of-text special token ({' or '.join(EOT_NAMES)})")

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (added tokens first, as HF looks them up), or None."""
        added = self.added.get(token)
        return added.id if added is not None else self.vocab.get(token)

    def normalize(self, text: str) -> str:
        """The text as the normalizer leaves it (NFC for Qwen; unchanged without one): what decode gives back."""
        return self._normalize(text) if self._normalize is not None else text

    def _bpe(self, data: bytes) -> list[int]:
        """Ids of one pre-token's bytes: merge the lowest-ranked adjacent pair (leftmost on ties) until none is left."""
        if self.ignore_merges:
            whole = self._vocab_bytes.get(data)
            if whole is not None:
                return [whole]
        ids = self._initial_ids(data)
        ranks = self._ranks
        while len(ids) > 1:
            best, at = None, -1
            for i in range(len(ids) - 1):
                r = ranks.get((ids[i], ids[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            ids[at : at + 2] = [best[1]]
        return ids

    def _initial_ids(self, data: bytes) -> list[int]:
        """One id per byte; a byte missing from the vocabulary becomes unk (fused if fuse_unk) or, with no unk, is
        dropped, as HF's BPE does."""
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in data]
        if None not in ids:
            return ids
        out: list[int] = []
        for i in ids:
            if i is None:
                if self.unk_id is None or (self.fuse_unk and out and out[-1] == self.unk_id):
                    continue
                i = self.unk_id
            out.append(i)
        return out

    def _encode_plain(self, text: str) -> list[int]:
        """Ids of text holding no added token: pre-tokenize, then BPE each pre-token (cached)."""
        cache, out = self._cache, []
        for piece in self._pre_tokenize(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[piece] = ids
            out.extend(ids)
        return out

    def encode(
        self,
        text: str,
        *,
        allowed_special: SpecialPolicy = "all",
        disallowed_special: SpecialPolicy = (),
    ) -> list[int]:
        """Token ids of `text`, equal to HF's `encode(text, add_special_tokens=False).ids`.

        Special tokens in the text become their ids (HF's default); `allowed_special=()` reads them as text, and
        `disallowed_special="all"` makes one that is not allowed raise ValueError (tiktoken's policy, see added.py).
        """
        text = _valid_utf8(text)
        allowed = allowed_set(self.special_tokens, allowed_special, disallowed_special, text)
        normalized = {t.content for t in self.added.values() if t.normalized and (t.content in allowed or not t.special)}
        out: list[int] = []
        for piece, is_token in split_on(text, (allowed - self._normalized_specials()) | self._raw_plain):
            if is_token:
                out.append(self.added[piece].id)
                continue
            if self._normalize is not None:
                piece = self._normalize(piece)
            for part, is_token2 in split_on(piece, normalized):
                out.extend([self.added[part].id] if is_token2 else self._encode_plain(part))
        return out

    def _normalized_specials(self) -> set[str]:
        return {t.content for t in self.added.values() if t.special and t.normalized}

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special tokens as plain text (HF's encode_special_tokens=True)."""
        return self.encode(text, allowed_special=(), disallowed_special=())

    def encode_batch(self, texts: Sequence[str], **kwargs) -> list[list[int]]:
        """encode() of each text (same keywords)."""
        return [self.encode(t, **kwargs) for t in texts]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes the token ids stand for."""
        table, out = self._token_bytes, []
        for i in ids:
            data = table[i] if isinstance(i, int) and 0 <= i < len(table) else None
            if data is None:
                raise ValueError(f"token id {i!r} is not in this vocabulary (ids are 0..{len(table) - 1})")
            out.append(data)
        return b"".join(out)

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Text of the token ids; bytes that are not valid UTF-8 become U+FFFD (as HF's ByteLevel decoder)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab}, merges={len(self._ranks)},"
            f" special_tokens={list(self.special_tokens)})"
        )


def _lookup(vocab: dict[str, int], token: str, what: str) -> int:
    if not isinstance(token, str) or token not in vocab:
        raise ValueError(f"tokenizer.json: {what} {token!r} is not in the model's vocab")
    return vocab[token]


def _valid_utf8(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8: replace them with U+FFFD, as bpe.py does.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def parse_tokenizer_json(data: dict, source: str = "tokenizer.json") -> dict:
    """HFByteLevelBPE's keyword arguments from a parsed tokenizer.json; ValueError naming what is unsupported."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{source} is not a tokenizer.json (no 'model' object)")
    for key in ("truncation", "padding"):
        if data.get(key) is not None:
            raise ValueError(f"{source}: {key} is set; tinygpt encodes without it (set it to null)")
    _check_decoder(data.get("decoder"), source)
    return dict(
        **_parse_model(data["model"], source),
        pre_tokenizer=_parse_pre_tokenizer(data.get("pre_tokenizer"), source),
        normalizer=_parse_normalizer(data.get("normalizer"), source),
        added_tokens=_parse_added(data.get("added_tokens") or [], data["model"].get("vocab") or {}, source),
    )


def _parse_model(model: dict, source: str) -> dict:
    if model.get("type") != "BPE":
        raise ValueError(
            f"{source}: model {model.get('type')!r} is not supported; tinygpt reads byte-level BPE tokenizer.json"
            " files (for WordPiece give the directory with vocab.txt)"
        )
    if model.get("dropout") not in (None, 0, 0.0) or model.get("byte_fallback"):
        raise ValueError(f"{source}: BPE dropout / byte_fallback is not supported; tinygpt encodes byte-level BPE")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ValueError(f"{source}: BPE {key} {model[key]!r} is not supported (byte-level BPE has none)")
    merges = []
    for m in model.get("merges") or []:
        parts = m.split(" ") if isinstance(m, str) else m  # "a b" (older files) or ["a", "b"]
        if not isinstance(parts, list) or len(parts) != 2:
            raise ValueError(f"{source}: merge {m!r} is neither 'left right' nor a [left, right] pair")
        merges.append((parts[0], parts[1]))
    return dict(
        vocab=model.get("vocab") or {},
        merges=merges,
        ignore_merges=bool(model.get("ignore_merges")),
        unk_token=model.get("unk_token"),
        fuse_unk=bool(model.get("fuse_unk")),
    )


def _parse_normalizer(spec: dict | None, source: str) -> Callable[[str], str] | None:
    if spec is None:
        return None
    kind = spec.get("type")
    if kind in NORMALIZERS:
        return lambda text: unicodedata.normalize(kind, text)
    if kind == "Sequence":
        steps = [f for f in (_parse_normalizer(s, source) for s in spec.get("normalizers", [])) if f]

        def sequence(text: str) -> str:
            for step in steps:
                text = step(text)
            return text

        return sequence
    raise ValueError(f"{source}: normalizer {kind!r} is not supported (tinygpt has {', '.join(NORMALIZERS)})")


def _parse_pre_tokenizer(spec: dict | None, source: str) -> Callable[[str], list[str]]:
    steps = spec.get("pretokenizers", []) if spec and spec.get("type") == "Sequence" else [spec]
    kinds = [s.get("type") if s else None for s in steps]
    if not kinds or kinds[-1] != "ByteLevel" or kinds.count("ByteLevel") != 1:
        raise ValueError(
            f"{source}: pre-tokenizer {kinds!r} is not byte-level; tinygpt reads ByteLevel, or Split steps then"
            " ByteLevel"
        )
    fns = [_split_step(s, source) for s in steps[:-1]]
    last = _byte_level_step(steps[-1])
    fns += [last] if last else []  # ByteLevel without prefix or regex leaves the pieces as they are
    if len(fns) <= 1:
        return fns[0] if fns else lambda text: [text]

    def pre_tokenize(text: str) -> list[str]:
        pieces = [text]
        for fn in fns:
            pieces = [p for piece in pieces for p in fn(piece)]
        return pieces

    return pre_tokenize


def _split_step(spec: dict, source: str) -> Callable[[str], list[str]]:
    if spec.get("type") != "Split":
        raise ValueError(f"{source}: pre-tokenizer {spec.get('type')!r} is not supported (tinygpt has Split, ByteLevel)")
    pattern = spec.get("pattern") or {}
    if "Regex" in pattern:
        source_regex = pattern["Regex"]
    elif "String" in pattern:
        source_regex = regex.escape(pattern["String"])
    else:
        raise ValueError(f"{source}: Split pattern {pattern!r} is neither a Regex nor a String")
    behavior, invert = spec.get("behavior"), bool(spec.get("invert"))
    if behavior not in ("Isolated", "Removed"):
        raise ValueError(f"{source}: Split behavior {behavior!r} is not supported (tinygpt has Isolated, Removed)")
    try:
        return _splitter(regex.compile(source_regex), keep_matches=behavior == "Isolated" or invert,
                         keep_gaps=behavior == "Isolated" or not invert)
    except regex.error as e:
        raise ValueError(f"{source}: Split regex {source_regex!r} does not compile ({e})") from None


def _splitter(pattern: regex.Pattern, keep_matches: bool, keep_gaps: bool) -> Callable[[str], list[str]]:
    """Cut text at the pattern's matches, keeping the matches and/or the gaps between them, non-empty, in order."""
    wrapped = regex.compile(f"({pattern.pattern})")
    if wrapped.groups == 1:  # split() in C: gaps at even positions, matches at odd ones
        start, step = (0, 1) if keep_matches and keep_gaps else ((1, 2) if keep_matches else (0, 2))
        return lambda text: [p for p in wrapped.split(text)[start::step] if p]

    def split(text: str) -> list[str]:  # the pattern has groups of its own: walk the matches
        out, pos = [], 0
        for m in pattern.finditer(text):
            s, e = m.span()
            out += ([text[pos:s]] if keep_gaps and s > pos else []) + ([text[s:e]] if keep_matches and e > s else [])
            pos = e
        return out + ([text[pos:]] if keep_gaps and pos < len(text) else [])

    return split


def _byte_level_step(spec: dict) -> Callable[[str], list[str]] | None:
    """ByteLevel: a space before a piece that lacks one (add_prefix_space), then GPT-2's split if use_regex;
    None when it does neither (the byte mapping itself happens in the model, on the UTF-8 bytes)."""
    prefix, use_regex = bool(spec.get("add_prefix_space")), spec.get("use_regex", True)
    if not prefix and not use_regex:
        return None
    split = _splitter(regex.compile(BYTE_LEVEL_PATTERN), True, True) if use_regex else None

    def step(piece: str) -> list[str]:
        if prefix and not piece.startswith(" "):
            piece = " " + piece
        return split(piece) if split else [piece]

    return step


def _check_decoder(spec: dict | None, source: str) -> None:
    kind = spec.get("type") if spec else None
    if kind != "ByteLevel":
        raise ValueError(f"{source}: decoder {kind!r} is not supported (tinygpt decodes ByteLevel)")


def _parse_added(entries: list, vocab: dict[str, int], source: str) -> list[AddedToken]:
    """Added tokens with the ids HF gives them on load: the model's id when the text is in its vocab, else the
    next id after the largest so far (tokenizers' AddedVocabulary.add_tokens)."""
    out: list[AddedToken] = []
    next_id = len(vocab)
    for e in entries:
        for flag in ("single_word", "lstrip", "rstrip"):
            if e.get(flag):
                raise ValueError(f"{source}: added token {e.get('content')!r} sets {flag}, which is not supported")
        content = e.get("content")
        if not isinstance(content, str) or not content:
            raise ValueError(f"{source}: added token {e!r} has no content")
        if content in vocab:
            token_id = vocab[content]
        else:
            token_id, next_id = next_id, next_id + 1
        next_id = max(next_id, token_id + 1) if token_id >= len(vocab) else next_id
        out.append(AddedToken(content, token_id, special=bool(e.get("special")), normalized=bool(e.get("normalized"))))
    return out
