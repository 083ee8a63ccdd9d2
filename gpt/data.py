"""Datasets and loaders of token windows for next-token training, in NumPy (no torch needed).

Follows the book's ch. 2 (`GPTDatasetV1`, `create_dataloader_v1`): windows of `max_length` token ids every
`stride` tokens, `range(0, len(ids) - max_length, stride)`, each paired with the same window shifted by one.
Adds what a real trainer needs: a re-iterable `DataLoader` whose shuffle is a function of (seed, epoch) and whose
position can be saved and restored exactly, and `TokenFileDataset`, windows over a memory-mapped token file for
corpora larger than RAM (the format is described at `write_token_file`). Batches are NumPy int64 arrays; the
model accepts them on every backend.
"""
from __future__ import annotations

import inspect
import os
import struct
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _windows(n_tokens: int, max_length: int, stride: int, what: str) -> np.ndarray:
    """Start offsets of the book's windows: range(0, n - max_length, stride); an error when there is none."""
    starts = np.arange(0, n_tokens - max_length, stride, dtype=np.int64)
    if starts.size == 0:
        raise ValueError(f"{what} has {n_tokens} tokens, too few for one window of max_length={max_length} "
                         f"(which needs {max_length + 1}: inputs plus the next token); give more text or lower "
                         f"max_length")
    return starts


def _encode(tokenizer: Any, text: str) -> list[int]:
    """The book's `tokenizer.encode(text, allowed_special={"<|endoftext|>"})`; tokenizers whose encode takes no
    `allowed_special` (SimpleTokenizerV2, ByteLevelBPE) get the text alone."""
    params = inspect.signature(tokenizer.encode).parameters
    if "allowed_special" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return tokenizer.encode(text)


class GPTDatasetV1:
    """The book's dataset: input/target windows of `max_length` token ids, `stride` apart, targets shifted by one.

    `txt` is a string encoded with `tokenizer.encode(txt, allowed_special={"<|endoftext|>"})` (or `encode(txt)` for
    tokenizers without special tokens), or an already encoded sequence of token ids (then `tokenizer` may be None).
    """

    def __init__(self, txt: str | Sequence[int] | np.ndarray, tokenizer: Any, max_length: int, stride: int):
        self.max_length = _check_positive_int(max_length, "max_length")
        self.stride = _check_positive_int(stride, "stride")
        if isinstance(txt, str):
            if tokenizer is None:
                raise TypeError("GPTDatasetV1 got text but no tokenizer; pass e.g. tokenizer.get_encoding('gpt2')")
            ids = _encode(tokenizer, txt)
        else:
            ids = txt
        self.token_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.starts = _windows(len(self.token_ids), self.max_length, self.stride, "the text")
        self._offsets = np.arange(self.max_length, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.starts[idx])
        return self.token_ids[i:i + self.max_length].copy(), self.token_ids[i + 1:i + self.max_length + 1].copy()

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows `indices` stacked as (inputs, targets), each (len(indices), max_length) int64, in one gather."""
        rows = self.starts[indices][:, None] + self._offsets            # (b, max_length) token positions
        return self.token_ids[rows], self.token_ids[rows + 1]


class DataLoader:
    """Batches of a dataset as NumPy (inputs, targets); re-iterable, shuffled per epoch, resumable exactly.

    The order of epoch e is a permutation drawn from `np.random.default_rng([seed, e])`, so it depends on nothing
    but the seed and the epoch. The loader keeps a position (epoch, next batch): an iteration continues from it and
    advances it, and a pass that runs to its end moves to the next epoch (the book's `for epoch ...: for batch in
    loader:` reshuffles every epoch). An iteration started while another one of this loader is still running (the
    book evaluates on the training loader inside the training loop) reads the current epoch's order from its
    start and leaves the position alone. Save the position with state_dict(), restore it with load_state_dict().
    """

    def __init__(self, dataset: Any, batch_size: int = 4, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 123, num_workers: int = 0):
        self.dataset = dataset
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self.num_workers = num_workers  # accepted for the book's signature; a NumPy gather needs no workers
        self.shuffle, self.drop_last, self.seed = bool(shuffle), bool(drop_last), int(seed)
        if len(self) == 0:
            raise ValueError(f"the dataset has {len(dataset)} samples, fewer than batch_size={batch_size} with "
                             f"drop_last=True: lower batch_size or pass drop_last=False")
        self.epoch, self.batch = 0, 0
        self._running = False
        self._stream: Iterator[tuple[np.ndarray, np.ndarray]] | None = None   # next_batch()'s open pass

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of `epoch` in the order they are batched."""
        n = len(self.dataset)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def _batch(self, order: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(idx)
        pairs = [self.dataset[int(i)] for i in idx]
        return (np.stack([np.asarray(x, dtype=np.int64) for x, _ in pairs]),
                np.stack([np.asarray(y, dtype=np.int64) for _, y in pairs]))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._running:
            return self._read_only(self.epoch)
        return self._advancing()

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The batch at the loader's position, epoch after epoch without end: a training loop counted in steps.

        Its pass stays open between calls, so a `for` over the loader meanwhile is an iteration inside an iteration
        (it reads the current epoch and leaves the position alone)."""
        while True:
            if self._stream is None:
                self._stream = iter(self)
            try:
                return next(self._stream)
            except StopIteration:   # the pass ended and moved the position to the next epoch
                self._stream = None

    def _read_only(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(epoch)
        for b in range(len(self)):
            yield self._batch(order, b)

    def _advancing(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._running:  # another iteration took the position between iter() and the first next()
            yield from self._read_only(self.epoch)
            return
        self._running = True
        try:
            self._normalise()
            order = self.order(self.epoch)
            while self.batch < len(self):
                b = self.batch
                self.batch += 1       # before yielding: a state_dict() taken now resumes after this batch
                yield self._batch(order, b)
            self._normalise()
        finally:
            self._running = False

    def _normalise(self) -> None:
        if self.batch >= len(self):
            self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """The position (epoch, next batch) plus what must match on resume (seed, sizes)."""
        epoch, batch = (self.epoch + 1, 0) if self.batch >= len(self) else (self.epoch, self.batch)
        return {"epoch": epoch, "batch": batch, "seed": self.seed, "shuffle": int(self.shuffle),
                "batch_size": self.batch_size, "num_samples": len(self.dataset)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position; the dataset, seed and batch size must be the saved ones."""
        mine = self.state_dict()
        for key in ("seed", "shuffle", "batch_size", "num_samples"):
            if key in state and int(state[key]) != mine[key]:
                raise ValueError(f"loader state has {key}={state[key]}, but this loader has {key}={mine[key]}; "
                                 f"resume with the same data, seed and batch size")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if epoch < 0 or not 0 <= batch <= len(self):
            raise ValueError(f"loader state epoch={epoch}, batch={batch} is out of range (0..{len(self)} batches)")
        if self._stream is not None:   # next_batch() continues from the restored position, not the old pass
            self._stream.close()
            self._stream = None
        self.epoch, self.batch = epoch, batch


def create_dataloader_v1(txt: str | Sequence[int], batch_size: int = 4, max_length: int = 256, stride: int = 128,
                         shuffle: bool = True, drop_last: bool = True, num_workers: int = 0, seed: int = 123,
                         tokenizer: Any = None) -> DataLoader:
    """The book's loader factory: GPTDatasetV1 over `txt` in a DataLoader; the tokenizer defaults to GPT-2's."""
    if tokenizer is None and isinstance(txt, str):
        import tokenizer as tokenizer_pkg

        tokenizer = tokenizer_pkg.get_encoding("gpt2")
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                      num_workers=num_workers)


# ---- token files ----
# Layout (all little-endian), a 32-byte header then the ids:
#   0  8s  magic b"TGPTTOK\0"
#   8  u32 version (1)
#  12  u32 bytes per token id: 2 (uint16, enough for GPT-2's 50257) or 4 (uint32)
#  16  u64 number of token ids
#  24  8 bytes reserved, zero
#  32  the ids, `count` unsigned integers of that width
TOKEN_FILE_MAGIC = b"TGPTTOK\0"
TOKEN_FILE_VERSION = 1
_HEADER = struct.Struct("<8sIIQ8x")
_ID_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def write_token_file(path: str | os.PathLike, ids: Sequence[int] | np.ndarray) -> Path:
    """Write token ids to a token file (uint16 when every id fits, else uint32) and return its path."""
    arr = np.asarray(ids).reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**32):
        raise ValueError(f"token ids must lie in [0, 2**32), got min {arr.min()} and max {arr.max()}")
    width = 2 if arr.size == 0 or arr.max() < 2**16 else 4
    path = Path(path)
    with open(path, "wb") as f:
        f.write(_HEADER.pack(TOKEN_FILE_MAGIC, TOKEN_FILE_VERSION, width, arr.size))
        f.write(arr.astype(_ID_DTYPES[width]).tobytes())
    return path


def read_token_file(path: str | os.PathLike) -> np.memmap:
    """The ids of a token file as a read-only memory map (nothing is read until it is indexed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist; make one with write_token_file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    if len(head) < _HEADER.size or head[:8] != TOKEN_FILE_MAGIC:
        raise ValueError(f"{path} is not a tinygpt token file (it should start with {TOKEN_FILE_MAGIC!r}); "
                         f"write it with gpt.data.write_token_file")
    magic, version, width, count = _HEADER.unpack(head)
    if version != TOKEN_FILE_VERSION:
        raise ValueError(f"{path}: token file version {version} is not supported (this reader knows version "
                         f"{TOKEN_FILE_VERSION})")
    if width not in _ID_DTYPES:
        raise ValueError(f"{path}: token id width {width} bytes is invalid (2 or 4)")
    if size != _HEADER.size + count * width:
        raise ValueError(f"{path}: the header says {count} ids of {width} bytes ({_HEADER.size + count * width} "
                         f"bytes with the header) but the file has {size} bytes: it is truncated or corrupt")
    if count == 0:
        return np.zeros(0, dtype=_ID_DTYPES[width])
    return np.memmap(path, dtype=_ID_DTYPES[width], mode="r", offset=_HEADER.size, shape=(count,))


class TokenFileDataset:
    """Windows of `context_length` ids every `stride` tokens (default: non-overlapping) over a memory-mapped token
    file, with the book's window rule; only the windows asked for are read from disk."""

    def __init__(self, path: str | os.PathLike, context_length: int, stride: int | None = None):
        self.path = Path(path)
        self.context_length = _check_positive_int(context_length, "context_length")
        self.stride = _check_positive_int(stride if stride is not None else context_length, "stride")
        self.tokens = read_token_file(self.path)
        self.starts = _windows(len(self.tokens), self.context_length, self.stride, str(self.path))
        self._offsets = np.arange(self.context_length, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        i, n = int(self.starts[idx]), self.context_length
        chunk = np.asarray(self.tokens[i:i + n + 1], dtype=np.int64)
        return chunk[:-1], chunk[1:]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows `indices` as (inputs, targets), each (len(indices), context_length) int64."""
        return self._gather(self.starts[indices])

    def random_batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """`batch_size` windows at uniformly random offsets (any token, not only window starts), nanoGPT-style."""
        starts = rng.integers(0, len(self.tokens) - self.context_length, size=_check_positive_int(batch_size,
                                                                                                   "batch_size"))
        return self._gather(starts)

    def _gather(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(starts, dtype=np.int64)[:, None] + self._offsets   # (b, context_length)
        x = np.asarray(self.tokens[rows], dtype=np.int64)
        return x, np.asarray(self.tokens[rows + 1], dtype=np.int64)
