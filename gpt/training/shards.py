"""Token shards (`tinygpt prepare`): tokenize a text corpus into token shards once, so training reads them memory-mapped.

Follows nanoGPT's `data/openwebtext/prepare.py` and its FineWeb successor: documents are tokenized in parallel
worker processes (multiprocessing.Pool, each with its own tokenizer), concatenated in input order, split into a
training part (the first 1 - val_fraction of the tokens, the book's split) and a validation part (the rest), and
written as shard files of at most `shard_size` ids. Each shard is a gpt.data token file (32-byte header + uint16
ids; uint32 only if the vocabulary exceeds 65,536), so `gpt.data.read_token_file` memory-maps it.

Layout of the output directory:
    meta.json              format, tokenizer description, shard names and token counts, sources
    train_000000.tok ...   training shards
    val_000000.tok ...     validation shards
    tokenizer.bpe          a copy of the BPE file, when --tokenizer names one
Documents: each input file is one document; a large file is cut into chunks at line ends so several processes
share it (the cut does not change the decoded text). Between files an `<|endoftext|>` token is inserted when the
tokenizer has one, so decode(all shards) is the files joined by "<|endoftext|>". The ids are held in memory as
uint16 while the split is computed (2 bytes a token: a billion tokens need 2 GB).
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from gpt.training import corpus
from gpt.data import TokenFileDataset, read_token_file, write_token_file

META_FILE = "meta.json"
FORMAT = "tinygpt-shards"
CHUNK_CHARS = 1 << 20          # a large file is cut into ~1 MB pieces of text for the worker processes

_worker_tokenizer: Any = None  # set in each worker process by _init_worker


def tokenizer_spec(name: str) -> tuple[dict, Path | None]:
    """The corpus-module description of `--tokenizer` ("gpt2", "bytes", or a BPE file) and the file to copy."""
    if name in ("gpt2", "bytes"):
        return {"kind": name}, None
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer {name!r} is neither gpt2, bytes nor an existing BPE file (one "
                                f"written by `tinygpt tokenizer train` or BPETokenizer.save)")
    return {"kind": "bpe", "file": corpus.BPE_FILE}, path


def _init_worker(spec: dict, directory: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = corpus.load_tokenizer(spec, directory)


def _encode_chunk(text: str) -> tuple[np.ndarray, int]:
    """(the ids of one piece of text, its length in characters for the progress bar)."""
    ids = corpus.tokenize(corpus.Corpus("chunk", text=text), _worker_tokenizer)
    return np.asarray(ids, dtype=np.uint32), len(text)


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """`text` cut after newlines into pieces of about `size` characters ("".join(pieces) == text)."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _documents(paths: Sequence[Path], eot: str | None) -> Iterator[str]:
    for i, path in enumerate(paths):
        if i and eot:
            yield eot
        yield from split_chunks(corpus.read_text(path))


def _check_args(paths: list[Path], val_fraction: float, shard_size: int, workers: int, out: Path) -> None:
    if not paths:
        raise ValueError("prepare needs at least one text file: --data FILE [FILE ...]")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"data file {str(p)!r} not found")
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction {val_fraction} must be between 0 and 1, e.g. 0.1")
    if shard_size < 1 or workers < 1:
        raise ValueError(f"--shard-size ({shard_size}) and --workers ({workers}) must be >= 1")
    if (out / META_FILE).exists():
        raise ValueError(f"{out} already holds prepared shards; choose another --out or delete it")


def _tokenize_all(paths: list[Path], spec: dict, out: Path, eot: str | None, workers: int, bar: Any) -> np.ndarray:
    """Every file's ids in input order, tokenized in `workers` processes; `bar` (or None) counts characters."""
    parts: list[np.ndarray] = []
    docs = _documents(paths, eot)
    if workers == 1:
        _init_worker(spec, str(out))
        results, pool = map(_encode_chunk, docs), None
    else:
        # spawn, not fork: a forked copy of a process holding torch/OpenMP threads can deadlock
        pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (spec, str(out)))
        results = pool.imap(_encode_chunk, docs, chunksize=1)
    try:
        for ids, n_chars in results:
            parts.append(ids)
            if bar is not None:
                bar.update(n_chars)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return np.concatenate(parts) if parts else np.zeros(0, np.uint32)


def _write_splits(ids: np.ndarray, out: Path, meta: dict, val_fraction: float, shard_size: int) -> None:
    cut = int(round(len(ids) * (1 - val_fraction)))
    for split, part in (("train", ids[:cut]), ("val", ids[cut:])):
        names = []
        for k, start in enumerate(range(0, max(len(part), 1), shard_size)):
            name = f"{split}_{k:06d}.tok"
            write_token_file(out / name, part[start:start + shard_size])
            names.append(name)
        meta[split] = names
        meta[f"{split}_tokens"] = int(len(part))


def prepare(data: Sequence[str | Path], out_dir: str | Path, tokenizer: str = "gpt2", val_fraction: float = 0.1,
            shard_size: int = 100_000_000, workers: int = 1, progress: Any = None) -> dict:
    """Tokenize the text files `data` into shards in `out_dir`; returns the metadata written to meta.json.

    progress: a tqdm-like bar to update with the characters read (its total is set here), or None.
    """
    paths, out = [Path(p) for p in data], Path(out_dir)
    _check_args(paths, val_fraction, shard_size, workers, out)
    out.mkdir(parents=True, exist_ok=True)
    spec, bpe_file = tokenizer_spec(tokenizer)
    if bpe_file is not None:
        shutil.copyfile(bpe_file, out / corpus.BPE_FILE)
    tok = corpus.load_tokenizer(spec, out)
    eot = corpus.EOT if corpus.EOT in getattr(tok, "special_tokens_set", set()) else None
    if progress is not None:
        progress.total = sum(p.stat().st_size for p in paths)   # characters ~ bytes for mostly ASCII
    ids = _tokenize_all(paths, spec, out, eot, workers, progress)
    meta = {"format": FORMAT, "version": 1, "tokenizer": spec, "vocab_size": int(tok.n_vocab),
            "sources": [str(p) for p in paths], "shard_size": int(shard_size)}
    _write_splits(ids, out, meta, val_fraction, shard_size)
    with open(out / META_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def is_shard_dir(path: str | Path) -> bool:
    """True for a directory written by `prepare` (it holds meta.json)."""
    return (Path(path) / META_FILE).is_file()


def read_meta(path: str | Path) -> dict:
    """A shard directory's meta.json, checked for its format."""
    with open(Path(path) / META_FILE, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{Path(path) / META_FILE} is not a tinygpt shard index; write it with `tinygpt prepare`")
    return meta


def read_split(path: str | Path, split: str) -> np.ndarray:
    """Every id of one split ("train" or "val"), shards concatenated (a copy; for tests and small corpora)."""
    meta = read_meta(path)
    arrays = [np.asarray(read_token_file(Path(path) / name)) for name in meta[split]]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)


class ShardDataset:
    """Non-overlapping windows of `context_length` ids over one split's memory-mapped shards (gpt.data's window
    rule per shard; a window never crosses a shard boundary). Only the windows asked for are read from disk."""

    def __init__(self, path: str | Path, split: str, context_length: int):
        meta = read_meta(path)
        files = [Path(path) / name for name in meta[split]]
        self.shards = [TokenFileDataset(f, context_length) for f in files
                       if len(read_token_file(f)) > context_length]
        if not self.shards:
            raise ValueError(f"the {split} shards in {path} hold {meta[f'{split}_tokens']} tokens, too few for one "
                             f"window of {context_length} (+1); prepare more text, a larger --val-fraction, or "
                             f"lower --context-length")
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])   # first global window index of each shard
        self.n_tokens = int(sum(len(s.tokens) for s in self.shards))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows `indices` (global) as (inputs, targets), each (len(indices), context_length) int64."""
        indices = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.offsets, indices, side="right") - 1
        xs, ys = [], []
        for i, s in zip(indices, which):
            x, y = self.shards[s].get_batch(np.array([i - self.offsets[s]]))
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)
