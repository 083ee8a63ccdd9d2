"""Derive tokenizer/bert_tables.py from the installed `tokenizers` library: which characters its BERT normalizer
and pre-tokenizer treat as control, whitespace, punctuation and CJK, and where its lower-casing and accent stripping
differ from Python's unicodedata. `python tests/tokenizer/bert_tables_gen.py > tokenizer/bert_tables.py` rewrites
the table; test_tok_wordpiece.py checks the committed one against the library.
"""
import unicodedata

from tokenizers import normalizers, pre_tokenizers

CODEPOINTS = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]


def _normalizer(**flags):
    kw = {**dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False), **flags}
    return normalizers.BertNormalizer(**kw).normalize_str


def py_strip(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")


def py_lower(s: str) -> str:
    return "".join(c.lower() for c in s)


def ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return tuple((a, b) for a, b in out)


def derive() -> dict:
    clean, cjk = _normalizer(clean_text=True), _normalizer(handle_chinese_chars=True)
    strip, lower = _normalizer(strip_accents=True), _normalizer(lowercase=True)
    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    return {
        "CONTROL": ranges(cp for cp in CODEPOINTS if clean(chr(cp)) == ""),
        "WHITESPACE": ranges(cp for cp in CODEPOINTS if clean(chr(cp)) == " "),
        "PUNCTUATION": ranges(cp for cp in CODEPOINTS if len(split("a" + chr(cp) + "a")) == 3),
        "CJK": ranges(cp for cp in CODEPOINTS if cjk(chr(cp)) == f" {chr(cp)} "),
        "LOWER": {cp: lower(chr(cp)) for cp in CODEPOINTS if lower(chr(cp)) != py_lower(chr(cp))},
        "STRIP": {cp: strip(chr(cp)) for cp in CODEPOINTS if strip(chr(cp)) != py_strip(chr(cp))},
    }


def render(tables: dict) -> str:
    import tokenizers

    lines = [
        '"""Unicode classes as Hugging Face\'s BERT tokenizer applies them (generated; do not edit by hand).',
        "",
        "`tokenizers`' BertNormalizer and BertPreTokenizer take control characters and punctuation from an older",
        "Unicode version than Python's unicodedata, and lower-case / NFD-strip accents with a newer one, so matching",
        "BertTokenizerFast id for id needs its own tables: ranges (first, last) of code points, and the characters",
        "whose lower-casing or accent stripping differs from Python's. Written by tests/tokenizer/bert_tables_gen.py",
        f"from tokenizers {tokenizers.__version__} against Python's unicodedata {unicodedata.unidata_version}.",
        '"""',
        f"UNIDATA_VERSION = {unicodedata.unidata_version!r}",
    ]
    for name in ("CONTROL", "WHITESPACE", "PUNCTUATION", "CJK"):
        lines += [f"{name} = (", *_wrap([f"({a:#x}, {b:#x})," for a, b in tables[name]]), ")"]
    for name in ("LOWER", "STRIP"):
        lines += [f"{name} = {{", *_wrap([f"{cp:#x}: {ascii(s)}," for cp, s in sorted(tables[name].items())]), "}"]
    return "\n".join(lines) + "\n"


def _wrap(items, width=116):
    out, line = [], "   "
    for item in items:
        if len(line) + 1 + len(item) > width:
            out.append(line)
            line = "   "
        line += " " + item
    return out + ([line] if line.strip() else [])


if __name__ == "__main__":
    print(render(derive()), end="")
