"""Training text and tokenizers for `tinygpt train`: the embedded default corpus, `--data FILE`, and tokenizer specs.

The default corpus needs no download: the English text of the Python documentation's topics that ships inside
every CPython (`pydoc_data.topics`, ~466 KB). A `--data FILE` is UTF-8 text or a token file written by
`gpt.data.write_token_file` (recognised by its header). A tokenizer is described by a small JSON-able dict so a
checkpoint can rebuild it: {"kind": "bpe", "file": NAME} (our BPE, saved beside the checkpoint), {"kind": "gpt2"}
(GPT-2's encoding) or {"kind": "bytes"} (256 raw byte symbols).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import tokenizer as tok_pkg

EOT = "<|endoftext|>"
BPE_FILE = "tokenizer.bpe"  # the trained BPE's file name inside a run or checkpoint directory
TOKENIZER_KINDS = ("bpe", "gpt2", "bytes")


def default_corpus() -> str:
    """The embedded default training text: every topic of CPython's pydoc help, joined by newlines."""
    import pydoc_data.topics

    return "\n".join(pydoc_data.topics.topics.values())


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; ValueError naming the file and the byte offset of the first invalid byte."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} not found; give an existing UTF-8 text or token file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8 (byte {data[e.start]:#04x} at byte offset {e.start}); "
                         f"convert it to UTF-8 (e.g. iconv -t utf-8) or pass a token file") from None


def is_token_file(path: str | Path) -> bool:
    """True if `path` starts with the header of gpt.data's token-file format."""
    from gpt import data

    with open(path, "rb") as f:
        head = f.read(len(data.TOKEN_FILE_MAGIC))
    return head == data.TOKEN_FILE_MAGIC


@dataclass
class Corpus:
    """Training data as it came in: text to tokenize, or ids already tokenized (a token file)."""

    source: str                     # "default" or the data file's path (recorded in checkpoints for --resume)
    text: str | None = None         # the text, when the source is text
    ids: np.ndarray | None = None   # the ids, when the source is a token file


def load_corpus(data: str | Path | None) -> Corpus:
    """The embedded default corpus (data None) or the contents of a text or token file."""
    if data is None or str(data) == "default":
        return Corpus("default", text=default_corpus())
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} not found; give an existing UTF-8 text or token file, "
                                f"or leave out --data to train on the embedded default corpus")
    if is_token_file(path):
        from gpt.data import read_token_file

        return Corpus(str(path), ids=read_token_file(path))
    return Corpus(str(path), text=read_text(path))


def bytes_tokenizer() -> tok_pkg.BPETokenizer:
    """A tokenizer with no merges: ids 0..255 are the raw bytes, plus <|endoftext|> as 256."""
    return tok_pkg.BPETokenizer([], pattern=None, special_tokens=[EOT], name="bytes")


def build_tokenizer(kind: str, text: str | None = None, vocab_size: int = 1024) -> tuple[Any, dict]:
    """A tokenizer for training and its JSON description: BPE trained on `text`, GPT-2's, or raw bytes."""
    if kind == "bpe":
        if text is None:
            raise ValueError("a BPE tokenizer is trained on text, but the data is a token file; "
                             "use --tokenizer gpt2 or bytes (whichever made the token file)")
        tok = tok_pkg.BPETokenizer.train(text, vocab_size, pattern="gpt2", special_tokens=[EOT])
        return tok, {"kind": "bpe", "file": BPE_FILE}
    if kind == "gpt2":
        return tok_pkg.get_encoding("gpt2"), {"kind": "gpt2"}
    if kind == "bytes":
        return bytes_tokenizer(), {"kind": "bytes"}
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")


def load_tokenizer(spec: dict, directory: str | Path) -> Any:
    """Rebuild the tokenizer a checkpoint describes; a BPE file is looked up in `directory`."""
    kind = spec.get("kind")
    if kind == "bpe":
        path = Path(directory) / spec.get("file", BPE_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"the checkpoint's tokenizer file {str(path)!r} is missing; "
                                    f"copy it back from the training run's directory")
        return tok_pkg.BPETokenizer.load(path)
    if kind == "gpt2":
        return tok_pkg.get_encoding("gpt2")
    if kind == "bytes":
        return bytes_tokenizer()
    if kind == "hf":   # a Hugging Face tokenizer.json (+ tokenizer_config.json) in the directory
        return tok_pkg.from_pretrained(Path(directory))
    if kind == "pretrained":  # a Hugging Face model directory's own tokenizer (vocab.txt, tokenizer.json)
        return tok_pkg.from_pretrained(spec["path"])
    raise ValueError(f"unknown tokenizer description {spec!r} in the checkpoint")


def tokenize(corpus: Corpus, tokenizer: Any) -> np.ndarray:
    """The corpus as a 1-D array of token ids (int64 for text; a token file's own array as it is)."""
    if corpus.ids is not None:
        return corpus.ids
    return np.asarray(tokenizer.encode(corpus.text, allowed_special={EOT} & _specials(tokenizer)), dtype=np.int64)


def _specials(tokenizer: Any) -> set[str]:
    return set(getattr(tokenizer, "special_tokens_set", set()))


def split_train_val(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 - val_fraction) of the ids for training, the rest for validation (the book's 90/10 split)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = int(round(len(ids) * (1 - val_fraction)))
    return ids[:cut], ids[cut:]
