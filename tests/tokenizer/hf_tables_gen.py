r"""Derive tokenizer/hf_tables.py from the installed `tokenizers` library: which characters its BERT normalizer
and pre-tokenizer treat as control, whitespace, punctuation and CJK, where its lower-casing and accent stripping
differ from Python's unicodedata, which characters its Split regexes (Oniguruma) take as \p{L}, \p{N}, \p{M},
and which characters its NFC/NFD do not know (no combining class, no composition). Every class is probed one code
point at a time. `python tests/tokenizer/hf_tables_gen.py > tokenizer/hf_tables.py` rewrites the table;
test_tok_hf_tables.py checks the committed one against the library.
"""
import unicodedata

from tokenizers import Regex, normalizers, pre_tokenizers

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
        **{f"ONIG_{name}": ranges(_regex_class(prop)) for name, prop in ONIG_PROPERTIES.items()},
        "NORMALIZATION_UNKNOWN": ranges(_unknown_to_normalizer()),
        "REGEX_MODULE_DIFFERS": ranges(_regex_module_differs()),
    }


def _regex_module_differs():
    """Code points the `regex` module classes differently from the library in \\p{L}, \\p{N} or \\p{M}."""
    import regex

    out = set()
    for prop in ONIG_PROPERTIES.values():
        ours = regex.compile(prop).match
        out |= set(_regex_class(prop)) ^ {cp for cp in CODEPOINTS if ours(chr(cp))}
    return out


ONIG_PROPERTIES = {"LETTER": r"\p{L}", "NUMBER": r"\p{N}", "MARK": r"\p{M}"}


def _regex_class(prop: str):
    removed = pre_tokenizers.Split(Regex(prop), behavior="removed").pre_tokenize_str
    return [cp for cp in CODEPOINTS if removed(chr(cp)) == []]


def _unknown_to_normalizer():
    """Code points with a combining class in Python but none in the library, and the parts and result of each
    composition Python makes and the library does not: the library treats them as inert starters."""
    nfd = normalizers.NFD().normalize_str
    nfc = normalizers.NFC().normalize_str
    out = set()
    for cp in CODEPOINTS:
        ch = chr(cp)
        if unicodedata.combining(ch) and nfd("a\u0316" + ch) == "a\u0316" + ch and nfd("a" + ch + "\u0316") == (
            "a" + ch + "\u0316") and nfd("a\u0301" + ch) == "a\u0301" + ch:
            out.add(cp)
        parts = unicodedata.normalize("NFD", ch)
        if parts != ch and unicodedata.normalize("NFC", parts) == ch and nfc(parts) != ch:
            out |= {cp, *map(ord, parts)}
    return out


def render(tables: dict) -> str:
    import regex
    import tokenizers

    lines = [
        '"""Unicode classes as Hugging Face\'s `tokenizers` applies them (generated; do not edit by hand).',
        "",
        "Its BertNormalizer and BertPreTokenizer take control characters and punctuation from an older Unicode",
        "version than Python's unicodedata and lower-case / NFD-strip accents with a newer one; its Split regexes",
        "(Oniguruma) know fewer letters, numbers and marks than the `regex` module; its NFC/NFD lack some combining",
        "classes. Matching it id for id needs its own tables: ranges (first, last) of code points, and the characters",
        "whose lower-casing or accent stripping differs from Python's. Written by tests/tokenizer/hf_tables_gen.py",
        f"from tokenizers {tokenizers.__version__} against Python's unicodedata {unicodedata.unidata_version}"
        f" and regex {regex.__version__}.",
        '"""',
        f"UNIDATA_VERSION = {unicodedata.unidata_version!r}",
    ]
    for name in ("CONTROL", "WHITESPACE", "PUNCTUATION", "CJK", *(f"ONIG_{n}" for n in ONIG_PROPERTIES),
                 "NORMALIZATION_UNKNOWN", "REGEX_MODULE_DIFFERS"):
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
