"""Tokenizer speed: GPT-2 encoding throughput (ours vs tiktoken vs HF tokenizers) and BPE training time
(our incremental trainer vs a straightforward minbpe-style one that recounts every pair after each merge).

Corpus: the English text of the Python docs inside CPython, `"\\n".join(pydoc_data.topics.topics.values())`
(~466 KB); encoding runs on it joined four times (~1.9 MB). All single thread, median of `--repeats` runs;
our chunk cache is emptied before each encode run. The straightforward trainer needs ~0.4 s per merge here, so
it runs for at most `--naive-budget` seconds per vocabulary size and its full time is extrapolated from the merges
done (marked "~"); its merges are checked equal to ours. Prints markdown tables with ratio columns and writes JSON
to benchmarks/results/tokenizer.json.

    python -m benchmarks.tokenizer [--repeats 5] [--naive-budget 20] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydoc_data.topics
import regex

ROOT = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    env = os.environ.get("TINYGPT_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


def _median_time(fn: Callable[[], object], repeats: int, before: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_train(text: str, vocab_size: int, budget_s: float) -> tuple[list[tuple[int, int]], float]:
    """minbpe's RegexTokenizer.train, restated: every chunk kept, every pair recounted after each merge.

    Stops after `budget_s` seconds; returns (merges done, seconds taken).
    """
    from tokenizer.patterns import GPT2_SPLIT_PATTERN

    start = time.perf_counter()
    chunks = [list(c.encode("utf-8")) for c in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges: list[tuple[int, int]] = []
    for k in range(vocab_size - 256):
        stats: dict[tuple[int, int], int] = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                stats[pair] = stats.get(pair, 0) + 1
        pair = min(stats, key=lambda p: (-stats[p], p))  # the same tie-break as ours
        chunks = [_merge(ids, pair, 256 + k) for ids in chunks]
        merges.append(pair)
        if time.perf_counter() - start > budget_s:
            break
    return merges, time.perf_counter() - start


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _hf_gpt2():
    """HF `tokenizers`' GPT-2 (byte-level BPE) built offline from the same encoder.json/vocab.bpe."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tokenizer.datafiles import find_data_file

    vocab, merges = (str(find_data_file(f"gpt2/{f}", download=False)) for f in ("encoder.json", "vocab.bpe"))
    hf = Tokenizer(models.BPE.from_file(vocab, merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return hf


def bench_encode(big: str, repeats: int) -> list[dict]:
    """MB/s of GPT-2 encoding (no special tokens) for each library that is available."""
    from tokenizer import get_encoding
    from tokenizer.datafiles import MissingDataFileError

    mb = len(big.encode("utf-8")) / 1e6
    rows: list[dict] = []
    reference = None
    try:
        import tiktoken

        tk = tiktoken.get_encoding("gpt2")
        reference = tk.encode_ordinary(big)
        rows.append({"name": "tiktoken", "s": _median_time(lambda: tk.encode_ordinary(big), repeats)})
    except Exception as e:  # not installed, or no cached files offline
        rows.append({"name": "tiktoken", "skipped": f"{type(e).__name__}: {str(e)[:80]}"})
    try:
        ours = get_encoding("gpt2")
        ids = ours.encode_ordinary(big)
        s = _median_time(lambda: ours.encode_ordinary(big), repeats, before=ours._cache.clear)
        rows.insert(0, {"name": "tinygpt", "s": s, "same_ids": None if reference is None else ids == reference})
    except MissingDataFileError as e:
        rows.insert(0, {"name": "tinygpt", "skipped": str(e)[:80]})
    try:
        hf = _hf_gpt2()
        hf_ids = hf.encode(big, add_special_tokens=False).ids
        s = _median_time(lambda: hf.encode(big, add_special_tokens=False), repeats)
        rows.append({"name": "HF tokenizers", "s": s, "same_ids": None if reference is None else hf_ids == reference})
    except Exception as e:  # not installed, or cannot fetch the tokenizer offline
        rows.append({"name": "HF tokenizers", "skipped": f"{type(e).__name__}: {str(e)[:80]}"})
    for row in rows:
        if "s" in row:
            row["mb_per_s"] = mb / row["s"]
    return rows


def bench_train(text: str, vocab_sizes: list[int], repeats: int, naive_budget: float | None) -> list[dict]:
    """Seconds to train to each vocab size: ours (median) and the straightforward trainer (one capped run)."""
    from tokenizer import BPETokenizer

    rows = []
    for vocab_size in vocab_sizes:
        ours = BPETokenizer.train(text, vocab_size)
        row = {"vocab_size": vocab_size, "ours_s": _median_time(lambda: BPETokenizer.train(text, vocab_size), repeats)}
        if naive_budget is not None:
            merges, seconds = naive_train(text, vocab_size, naive_budget)
            total = vocab_size - 256
            row.update(
                naive_merges_done=len(merges),
                naive_s=seconds * total / len(merges),
                naive_extrapolated=len(merges) < total,
                merges_equal=merges == list(ours.merges)[: len(merges)],
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement; the median is reported")
    parser.add_argument("--naive-budget", type=float, default=20.0, help="seconds for the naive trainer per size")
    parser.add_argument("--quick", action="store_true", help="skip the naive trainer, 3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # single thread for HF tokenizers too
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    data = _shared_data()
    if data is not None:
        os.environ.setdefault("TINYGPT_DATA_DIR", str(data))
        if (data / "tiktoken-cache").is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(data / "tiktoken-cache"))
    sys.path.insert(0, str(ROOT))

    text = "\n".join(pydoc_data.topics.topics.values())
    big = "".join([text] * 4)
    enc_rows = bench_encode(big, repeats)
    train_rows = bench_train(text, [512, 1024], repeats, None if args.quick else args.naive_budget)

    print(f"Python {platform.python_version()} on {platform.machine()} ({platform.processor() or 'cpu'}),"
          f" single thread; median of {repeats}")
    print(f"\nGPT-2 encoding of pydoc_data.topics x4 ({len(big.encode()) / 1e6:.2f} MB, encode_ordinary)\n")
    base = next((r for r in enc_rows if r["name"] == "tiktoken" and "s" in r), None)
    print("| tokenizer | MB/s | time (s) | ratio vs tiktoken | same ids as tiktoken |")
    print("|---|---:|---:|---:|---|")
    for r in enc_rows:
        if "s" not in r:
            print(f"| {r['name']} | – | – | – | skipped: {r['skipped']} |")
            continue
        ratio = f"{r['mb_per_s'] / base['mb_per_s']:.2f}x" if base else "–"
        same = {True: "yes", False: "NO", None: "–"}[r.get("same_ids")] if r is not base else "(reference)"
        print(f"| {r['name']} | {r['mb_per_s']:.2f} | {r['s']:.3f} | {ratio} | {same} |")

    print(f"\nBPE training, GPT-2 split, on pydoc_data.topics ({len(text.encode()) / 1e3:.0f} KB)\n")
    print("| vocab size | ours (s) | straightforward (s) | speedup | same merges |")
    print("|---:|---:|---:|---:|---|")
    for r in train_rows:
        if "naive_s" in r:
            approx = "~" if r["naive_extrapolated"] else ""
            note = f" (first {r['naive_merges_done']})" if r["naive_extrapolated"] else ""
            print(f"| {r['vocab_size']} | {r['ours_s']:.3f} | {approx}{r['naive_s']:.1f} |"
                  f" {approx}{r['naive_s'] / r['ours_s']:.0f}x | {'yes' if r['merges_equal'] else 'NO'}{note} |")
        else:
            print(f"| {r['vocab_size']} | {r['ours_s']:.3f} | skipped (--quick) | – | – |")

    out = ROOT / "benchmarks" / "results" / "tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"python": platform.python_version(), "repeats": repeats, "encode_mb": len(big.encode()) / 1e6,
              "encode": enc_rows, "train": train_rows}
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
