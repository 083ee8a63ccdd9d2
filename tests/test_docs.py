"""The derivations (docs/backprop-attention.md, docs/backprop-llama.md) point at the code line by line: every
"line N" / "lines A–B" / "LA–B" they give is checked here, so a change that moves or rewrites the code cannot leave a
derivation pointing at the wrong line. Three checks: a reference followed by a quoted snippet must find that snippet
in those lines of the file being discussed, a reference to `file.py:Class.function` followed by a line number must
land inside that function (the nearest def above it), and every `file.py:Class.function` must name a function or
class that the file defines."""
from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = {"backprop-attention.md": (30, 15), "backprop-llama.md": (25, 15)}  # doc: (min references, min snippets)
PACKAGES = ("tinytensor", "backends", "gpt", "tokenizer")
TOKEN = re.compile(r"`(?P<file>[\w/]+\.py)(?::(?P<qual>[\w.]+))?`"      # `kernels/attention.py:attention_backward`
                   r"|`(?P<code>[^`]+)`"                                 # `dp *= drop`
                   r"|\b(?:lines?\s|L)(?P<a>\d+)(?:–(?P<b>\d+))?")        # line 58, lines 60–67, L82–83


@lru_cache(maxsize=None)
def source(name: str) -> tuple[Path, list[str]]:
    """The project file a doc path names (paths may drop their leading package: `kernels/attention.py`)."""
    hits = [p for p in package_files() if p.as_posix().endswith("/" + name)]
    assert len(hits) == 1, f"{name} names {len(hits)} files: {hits}"
    return hits[0], hits[0].read_text(encoding="utf-8").splitlines()


@lru_cache(maxsize=None)
def package_files() -> tuple[Path, ...]:
    return tuple(p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("**/*.py")))


def defining_file(func: str) -> str | None:
    """The one package file that defines `func` at its top level, as a doc path, or None."""
    hits = [p for p in package_files() if re.search(rf"^def {func}\(", p.read_text(encoding="utf-8"), re.M)]
    return hits[0].relative_to(ROOT).as_posix() if len(hits) == 1 else None


def enclosing_def(lines: list[str], n: int) -> str | None:
    """The def/class line that encloses line n (1-based): the nearest one above, indented less than every line
    between it and n."""
    indent = len(lines[n - 1]) - len(lines[n - 1].lstrip())
    for ln in reversed(lines[:n - 1]):
        if not ln.strip():
            continue
        here = len(ln) - len(ln.lstrip())
        if here < indent:
            if re.match(r"\s*(def|class) \w+", ln):
                return ln.strip()
            indent = here
    return None


def references(doc: str) -> list[tuple[str, str | None, int, int, str | None]]:
    """(file, qualified name or None, first line, last line, snippet or None) for every line reference in `doc`."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    tokens = list(TOKEN.finditer(text))
    refs, current, qual = [], None, None
    for i, t in enumerate(tokens):
        if t["file"]:
            current, qual = t["file"], t["qual"]
        elif t["a"]:
            assert current is not None, f"line reference before any file: {t.group(0)!r}"
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            gap = text[t.end():nxt.start()] if nxt is not None else ""
            snippet = nxt["code"] if nxt is not None and nxt["code"] and re.fullmatch(r"[\s,:()]*", gap) else None
            prev_gap = text[tokens[i - 1].end():t.start()] if i else ""
            named = qual if i and tokens[i - 1]["file"] and re.fullmatch(r"[\s(,]*", prev_gap) else None
            a = int(t["a"])
            refs.append((current, named, a, int(t["b"] or a), snippet))
        elif t["code"] and re.fullmatch(r"\w+", t["code"]) and defining_file(t["code"]):
            current, qual = defining_file(t["code"]), t["code"]   # a bare function name: `attention_backward`
    return refs


REFS = {doc: references(doc) for doc in DOCS}
ALL_REFS = [ref for doc in DOCS for ref in REFS[doc]]


@pytest.mark.parametrize("doc", DOCS)
def test_the_doc_has_line_references(doc):
    n_refs, n_snippets = DOCS[doc]
    assert len(REFS[doc]) >= n_refs and sum(r[4] is not None for r in REFS[doc]) >= n_snippets


@pytest.mark.parametrize("ref", ALL_REFS, ids=[f"{f}:{a}-{b}" for f, _, a, b, _ in ALL_REFS])
def test_each_line_reference_points_at_its_code(ref):
    name, qual, a, b, snippet = ref
    path, lines = source(name)
    assert 1 <= a <= b <= len(lines), f"{name} has {len(lines)} lines; the doc cites {a}–{b}"
    if snippet is not None:
        piece = max((p.strip() for p in snippet.split("...")), key=len)
        assert piece in "\n".join(lines[a - 1:b]), f"`{snippet}` is not in {name} lines {a}–{b}"
    if qual is not None:
        func = qual.split(".")[-1]
        first = lines[a - 1].strip()
        inside = enclosing_def(lines, a)
        assert re.match(rf"(def|class) {func}\b", first) or (inside and re.match(rf"(def|class) {func}\b", inside)), \
            f"{name} line {a} is not in {qual} (it is in {inside!r})"


def defined_names(path: Path) -> set[str]:
    """Top-level functions and classes of a Python file, and each class's methods as `Class.method`."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{m.name}" for m in node.body if isinstance(m, ast.FunctionDef)}
    return names


QUALIFIED = sorted({(m["file"], m["qual"]) for doc in DOCS for m in TOKEN.finditer(
    (ROOT / "docs" / doc).read_text(encoding="utf-8")) if m["file"] and m["qual"]})


@pytest.mark.parametrize("name,qual", QUALIFIED, ids=[f"{f}:{q}" for f, q in QUALIFIED])
def test_each_named_function_exists(name, qual):
    path, _ = source(name)
    assert qual in defined_names(path), f"{name} defines no {qual}"
