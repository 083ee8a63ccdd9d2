"""Datasets and loaders (gpt/data.py): the book's windows and numbers, seeded shuffles, exact resume, token files.

The book's numbers are checked on the-verdict.txt with GPT-2's encoding from tiktoken (5145 tokens; ch. 2's first
batch); every expected window is computed here from tiktoken's ids, never typed in, except the book's printed
first row, which is asserted to be what those ids give.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import data_dir, require_data
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt.data import (DataLoader, GPTDatasetV1, TokenFileDataset, create_dataloader_v1, read_token_file,
                      write_token_file)


@pytest.fixture(scope="module")
def verdict():
    return require_data("the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    cache = require_data("tiktoken-cache")
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)  # offline: tiktoken reads its BPE files from the shared cache
    try:
        yield tiktoken.get_encoding("gpt2")
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def book_windows(ids, max_length, stride):
    """The book's GPTDatasetV1 loop, verbatim in plain Python."""
    inputs, targets = [], []
    for i in range(0, len(ids) - max_length, stride):
        inputs.append(ids[i:i + max_length])
        targets.append(ids[i + 1:i + max_length + 1])
    return np.array(inputs, dtype=np.int64), np.array(targets, dtype=np.int64)


class CountingTokenizer:
    """Token id = character code: enough to test window logic without a vocabulary."""

    def encode(self, text):
        return [ord(c) for c in text]


# ---- the book's numbers ----

def test_the_verdict_has_the_books_5145_tokens(verdict, tiktoken_gpt2):
    assert len(tiktoken_gpt2.encode(verdict)) == 5145


def test_first_batch_is_the_books(verdict, tiktoken_gpt2):
    ids = tiktoken_gpt2.encode(verdict, allowed_special={"<|endoftext|>"})
    loader = create_dataloader_v1(verdict, batch_size=8, max_length=4, stride=4, shuffle=False,
                                  tokenizer=tiktoken_gpt2)
    x, y = next(iter(loader))
    want_x, want_y = book_windows(ids, 4, 4)
    assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (8, 4)
    np.testing.assert_array_equal(x, want_x[:8])
    np.testing.assert_array_equal(y, want_y[:8])
    assert x[0].tolist() == [40, 367, 2885, 1464]            # the book's printed first row
    assert len(loader.dataset) == len(range(0, 5145 - 4, 4)) and len(loader) == len(loader.dataset) // 8


def test_stride_one_windows_slide_by_one_token(verdict, tiktoken_gpt2):
    ds = GPTDatasetV1(verdict, tiktoken_gpt2, max_length=4, stride=1)
    (x0, y0), (x1, _) = ds[0], ds[1]
    np.testing.assert_array_equal(y0, x1)                    # the book's "second batch" is the first shifted by one
    np.testing.assert_array_equal(x0[1:], y0[:-1])
    assert len(ds) == 5145 - 4


def test_endoftext_is_encoded_as_the_special_token(tiktoken_gpt2):
    ds = GPTDatasetV1("Hello.<|endoftext|> In the sunlit terraces", tiktoken_gpt2, max_length=2, stride=1)
    assert tiktoken_gpt2.eot_token in ds.token_ids.tolist()   # tiktoken raises unless allowed_special names it


def test_default_tokenizer_is_gpt2s_and_agrees_with_tiktoken(verdict, tiktoken_gpt2, monkeypatch):
    require_data("gpt2/encoder.json")
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(data_dir()))   # where tokenizer.get_encoding finds encoder.json
    ours = create_dataloader_v1(verdict[:3000], batch_size=4, max_length=16, stride=8, shuffle=False)
    ref = create_dataloader_v1(verdict[:3000], batch_size=4, max_length=16, stride=8, shuffle=False,
                               tokenizer=tiktoken_gpt2)
    np.testing.assert_array_equal(ours.dataset.token_ids, ref.dataset.token_ids)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), max_length=st.integers(1, 20), stride=st.integers(1, 20))
def test_windows_are_the_books_loop(n, max_length, stride):
    ids = list(range(1000, 1000 + n))
    if n <= max_length:
        with pytest.raises(ValueError, match=f"has {n} tokens.*max_length={max_length}"):
            GPTDatasetV1(ids, None, max_length, stride)
        return
    ds = GPTDatasetV1(ids, None, max_length, stride)
    want_x, want_y = book_windows(ids, max_length, stride)
    got = [ds[i] for i in range(len(ds))]
    np.testing.assert_array_equal(np.stack([x for x, _ in got]), want_x)
    np.testing.assert_array_equal(np.stack([y for _, y in got]), want_y)
    bx, by = ds.get_batch(np.arange(len(ds))[::-1])
    np.testing.assert_array_equal(bx, want_x[::-1])
    np.testing.assert_array_equal(by, want_y[::-1])


# ---- shuffling and resuming ----

def make_loader(seed=123, batch_size=3, drop_last=True, n_chars=80):
    text = "".join(chr(65 + i % 50) for i in range(n_chars))
    return create_dataloader_v1(text, batch_size=batch_size, max_length=4, stride=2, shuffle=True,
                                drop_last=drop_last, seed=seed, tokenizer=CountingTokenizer())


def epoch_batches(loader):
    return [x.tolist() for x, _ in loader]


def test_shuffle_is_a_function_of_seed_and_epoch():
    a, b, c = make_loader(seed=1), make_loader(seed=1), make_loader(seed=2)
    a0, a1 = epoch_batches(a), epoch_batches(a)
    assert a0 == epoch_batches(b) and a1 == epoch_batches(b)  # same seed: same batches, epoch by epoch
    assert a0 != a1                                            # a new order every epoch
    assert a0 != epoch_batches(c)                              # another seed, another order


def test_each_epoch_visits_every_window_once():
    loader = make_loader(drop_last=False)
    rows = [tuple(r) for x, _ in loader for r in x.tolist()]
    want = [tuple(x.tolist()) for x, _ in (loader.dataset[i] for i in range(len(loader.dataset)))]
    assert sorted(rows) == sorted(want) and len(rows) == len(want)
    sizes = [len(x) for x, _ in loader]
    assert sizes[-1] == len(want) % 3 and len(sizes) == len(loader)  # the partial last batch is kept


def test_resume_continues_exactly_where_the_state_was_saved():
    ref, run = make_loader(), make_loader()
    expected = [x.tolist() for _ in range(3) for x, _ in ref]    # three uninterrupted epochs
    n = len(run)
    seen = epoch_batches(run)                                    # epoch 0 ...
    for x, _ in run:                                             # ... and 2 batches of epoch 1, then stop
        seen.append(x.tolist())
        if len(seen) == n + 2:
            break
    state = json.loads(json.dumps(run.state_dict()))             # through JSON, as a checkpoint stores it
    assert state["epoch"] == 1 and state["batch"] == 2
    resumed = make_loader()
    resumed.load_state_dict(state)
    seen += epoch_batches(resumed) + epoch_batches(resumed)      # rest of epoch 1, then epoch 2
    assert seen == expected


def test_next_batch_streams_epochs_and_follows_a_restored_position():
    """next_batch() (the trainers' step-counted loop) gives the epochs' batches back to back, reshuffled each epoch,
    and after load_state_dict continues from the restored position, not from the pass it had open."""
    ref, run = make_loader(), make_loader()
    expected = [x.tolist() for _ in range(3) for x, _ in ref]
    n = len(run)
    seen = [run.next_batch()[0].tolist() for _ in range(n + 2)]
    assert seen == expected[:n + 2] and run.state_dict()["epoch"] == 1 and run.state_dict()["batch"] == 2
    state = make_loader().state_dict()                            # back to epoch 0, batch 0 mid-pass
    run.load_state_dict(state)
    assert [run.next_batch()[0].tolist() for _ in range(3 * n)] == expected


def test_state_at_an_epoch_end_resumes_at_the_next_epoch():
    run = make_loader()
    batches = []
    for x, _ in run:
        batches.append(x)
        if len(batches) == len(run):                             # stopped after the last batch, not exhausted
            break
    assert run.state_dict()["epoch"] == 1 and run.state_dict()["batch"] == 0
    ref = make_loader()
    epoch_batches(ref)                                            # epoch 0 ...
    epoch_1_first = next(iter(ref))[0]                            # ... then the first batch of epoch 1
    np.testing.assert_array_equal(next(iter(run))[0], epoch_1_first)


def test_iterating_inside_an_iteration_does_not_move_the_position():
    """The book evaluates on the training loader inside the training loop; that must not skip training batches."""
    plain, nested = epoch_batches(make_loader()), []
    loader = make_loader()
    for x, _ in loader:
        nested.append(x.tolist())
        inner = [b[0].tolist() for b, _ in zip(loader, range(2))]   # evaluation on 2 batches of the same loader
        assert inner == plain[:2]
    assert nested == plain and loader.state_dict()["epoch"] == 1


def test_load_state_dict_refuses_another_setup():
    state = make_loader(seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1.*seed=2"):
        make_loader(seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="out of range"):
        make_loader(seed=1).load_state_dict({**state, "batch": 99})


def test_loader_errors():
    ds = GPTDatasetV1(list(range(10)), None, max_length=4, stride=4)   # windows at 0 and 4
    with pytest.raises(ValueError, match="fewer than batch_size=3"):
        DataLoader(ds, batch_size=3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(TypeError, match="no tokenizer"):
        GPTDatasetV1("some text", None, 4, 4)
    with pytest.raises(ValueError, match="the text has 3 tokens, too few for one window of max_length=4"):
        GPTDatasetV1("abc", CountingTokenizer(), 4, 1)


# ---- token files ----

@pytest.mark.parametrize("high, dtype", [(50257, np.uint16), (100_000, np.uint32)])
def test_token_file_round_trip(tmp_path, high, dtype):
    ids = np.random.default_rng(0).integers(0, high, size=1001)
    ids[0] = high - 1
    path = write_token_file(tmp_path / "tokens.bin", ids)
    got = read_token_file(path)
    assert isinstance(got, np.memmap) and got.dtype == dtype
    np.testing.assert_array_equal(got, ids)
    assert path.stat().st_size == 32 + ids.size * np.dtype(dtype).itemsize


def test_token_file_dataset_windows_equal_the_books(tmp_path):
    ids = np.random.default_rng(1).integers(0, 50257, size=500)
    ds = TokenFileDataset(write_token_file(tmp_path / "t.bin", ids), context_length=16, stride=10)
    want_x, want_y = book_windows(ids.tolist(), 16, 10)
    assert len(ds) == len(want_x)
    for i in (0, 7, len(ds) - 1):
        x, y = ds[i]
        assert x.dtype == np.int64
        np.testing.assert_array_equal(x, want_x[i])
        np.testing.assert_array_equal(y, want_y[i])
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    np.testing.assert_array_equal(next(iter(loader))[0], want_x[:4])
    assert TokenFileDataset(tmp_path / "t.bin", context_length=16).stride == 16   # default: non-overlapping


def test_random_batch_is_seeded_and_shifted(tmp_path):
    ids = np.arange(300) % 1000
    ds = TokenFileDataset(write_token_file(tmp_path / "t.bin", ids), context_length=8)
    x, y = ds.random_batch(np.random.default_rng(5), 6)
    x2, _ = ds.random_batch(np.random.default_rng(5), 6)
    assert x.shape == y.shape == (6, 8) and x.dtype == np.int64
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, x + 1)                       # ids are consecutive: the target is the next id
    assert x.min() >= 0 and y.max() <= 299


def test_bad_token_files_are_named(tmp_path):
    path = write_token_file(tmp_path / "t.bin", np.arange(100))
    data = path.read_bytes()
    (tmp_path / "text.bin").write_bytes(b"hello world, not tokens at all")
    with pytest.raises(ValueError, match=r"text\.bin is not a tinygpt token file"):
        read_token_file(tmp_path / "text.bin")
    (tmp_path / "cut.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"cut\.bin: the header says 100 ids of 2 bytes .* has 222 bytes"):
        read_token_file(tmp_path / "cut.bin")
    (tmp_path / "v9.bin").write_bytes(data[:8] + (9).to_bytes(4, "little") + data[12:])
    with pytest.raises(ValueError, match=r"v9\.bin: token file version 9"):
        read_token_file(tmp_path / "v9.bin")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        TokenFileDataset(tmp_path / "missing.bin", 8)
    with pytest.raises(ValueError, match=r"t\.bin has 100 tokens, too few for one window of max_length=100"):
        TokenFileDataset(path, 100)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*32\)"):
        write_token_file(tmp_path / "neg.bin", [3, -1])
