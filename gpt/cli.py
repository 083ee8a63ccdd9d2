"""The `tinygpt` command (also `python -m gpt`): train, generate, eval, convert, download, tokenizer.

The only place in the package that prints, reads sys.argv or picks a backend (DESIGN.md §3, §6). Each subcommand
is added by a function in COMMANDS (`add_*_command(subparsers)`), so a later feature registers its own
subcommands by appending one function (see `register`). Every subcommand takes --backend, --dtype, --device and
--seed (`add_common_args`). Exit status: 0 success; 2 a user error (one line on stderr, `tinygpt: error: ...`,
no traceback: bad flags, missing files, an unavailable backend, a checkpoint of another shape); 1 training
diverged (NaN or infinite loss; the last good checkpoint is kept and named); 130 interrupted.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import math
import os
import signal
import sys
import threading
import time
import urllib.error
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import backends

PROG = "tinygpt"
DEFAULT_RUN_DIR = "runs/tinygpt"   # where `tinygpt train` writes and `tinygpt generate` reads by default
THE_VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/"
                   "the-verdict.txt")
GPT2_DOWNLOADS = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
HUB_MODEL_NAMES = ("qwen3-0.6b",)   # gpt.pretrained.HUB_MODELS: whole Hugging Face directories


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (`tinygpt: error: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# ---- shared options ---------------------------------------------------------------------------------------------

def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--backend, --dtype, --device and --seed, the options every subcommand takes."""
    g = parser.add_argument_group("engine")
    g.add_argument("--backend", default="numpy", choices=backends.BACKENDS,
                   help="engine: numpy (tinytensor, CPU), cupy (tinytensor, CUDA) or torch (default: numpy)")
    g.add_argument("--dtype", default="float32", help="float dtype: float32 (default), float64; torch also "
                                                      "bfloat16, float16")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the backend's default)")
    g.add_argument("--seed", type=int, default=None, help="random seed (data order, dropout, sampling)")


def make_backend(args: argparse.Namespace) -> Any:
    """The backend the flags ask for; an unavailable one (no torch, no CUDA) becomes a ValueError with the fix."""
    try:
        return backends.get_backend(args.backend, dtype=args.dtype, device=args.device)
    except (ImportError, RuntimeError) as e:
        raise ValueError(str(e)) from None


def _positive(kind: type, allow_zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number > 0 (or >= 0)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not (value >= 0 if allow_zero else value > 0) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>= 0' if allow_zero else '> 0'}")
        return value
    parse.__name__ = kind.__name__
    return parse


# ---- train ------------------------------------------------------------------------------------------------------

# TrainConfig fields settable from the command line (flag name = field name with dashes)
_TRAIN_FLAGS = ("max_steps", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps", "weight_decay", "beta2",
                "grad_clip", "eval_interval", "eval_iters", "keep_last", "sample_prompt", "autocast", "peak_flops")
_TRAIN_SWITCHES = ("compile", "tf32", "fused_adamw")   # store_true flags: only a given one changes the config
_MODEL_FLAGS = ("context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "weight_init")


def add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a GPT (default: a small one on the embedded pydoc corpus)",
                       description="Pretrain a GPT. With no arguments: a ~2.2 M-parameter model on the Python "
                                   "documentation text that ships with CPython, BPE tokenizer trained on it, "
                                   "about five minutes on 2 CPU cores.")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="FILE", help="UTF-8 text or token file (default: the embedded pydoc corpus)")
    d.add_argument("--out", metavar="DIR", default=DEFAULT_RUN_DIR,
                   help=f"run directory: checkpoints, metrics.jsonl, loss.png (default: {DEFAULT_RUN_DIR})")
    d.add_argument("--tokenizer", choices=("bpe", "gpt2", "bytes"), default=None,
                   help="bpe: trained on the data (default for text); gpt2: GPT-2's (default for token files); "
                        "bytes: 256 byte symbols")
    d.add_argument("--vocab-size", type=_positive(int), metavar="N", help="BPE vocabulary size (default 1024)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", choices=("gpt2", "llama", "qwen3"), help="model family (default gpt2): llama is "
                   "RMSNorm + RoPE + SwiGLU + grouped-query attention, qwen3 adds QK-norm (gpt/families.py)")
    m.add_argument("--config", choices=("124M", "355M", "774M", "1558M"), help="a GPT-2 size (default: a small model)")
    m.add_argument("--context-length", type=_positive(int), metavar="N")
    m.add_argument("--emb-dim", type=_positive(int), metavar="N")
    m.add_argument("--n-heads", type=_positive(int), metavar="N")
    m.add_argument("--n-layers", type=_positive(int), metavar="N")
    m.add_argument("--drop-rate", type=_positive(float, allow_zero=True), metavar="P")
    m.add_argument("--weight-init", choices=("gpt2", "torch"), help="initial weights: gpt2 (default: N(0, 0.02), "
                                                                   "scaled residual projections) or torch (PyTorch's "
                                                                   "layer defaults, as the book's model)")
    t = p.add_argument_group("optimization")
    t.add_argument("--max-steps", type=_positive(int), metavar="N")
    t.add_argument("--batch-size", type=_positive(int), metavar="N")
    t.add_argument("--grad-accum", type=_positive(int), metavar="N", help="micro-batches per step")
    t.add_argument("--lr", type=_positive(float), metavar="LR", help="peak learning rate")
    t.add_argument("--min-lr", type=_positive(float, allow_zero=True), metavar="LR", help="cosine floor")
    t.add_argument("--warmup-steps", type=_positive(int, allow_zero=True), metavar="N")
    t.add_argument("--weight-decay", type=_positive(float, allow_zero=True), metavar="W")
    t.add_argument("--beta2", type=_positive(float), metavar="B")
    t.add_argument("--grad-clip", type=_positive(float, allow_zero=True), metavar="C", help="0 disables clipping")
    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-interval", type=_positive(int), metavar="N", help="evaluate and checkpoint every N steps")
    e.add_argument("--eval-iters", type=_positive(int), metavar="N", help="batches per loss estimate")
    e.add_argument("--keep-last", type=_positive(int), metavar="K", help="step checkpoints to keep (plus best/)")
    e.add_argument("--sample-prompt", metavar="TEXT", help="prompt of the sample printed at each evaluation")
    e.add_argument("--no-plot", action="store_true", help="do not write loss.png")
    e.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    f = p.add_argument_group("full scale (torch backend; see gpt/train.py, gpt/distributed.py, gpt/flops.py)")
    f.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager, saying so)")
    f.add_argument("--autocast", choices=("bfloat16", "float16"), help="mixed precision: float32 master weights, "
                                                                       "forward in this dtype (float16 adds a grad scaler)")
    f.add_argument("--tf32", action="store_true", help="TF32 tensor cores for float32 matmuls (CUDA)")
    f.add_argument("--fused-adamw", action="store_true", help="torch's fused AdamW kernel")
    f.add_argument("--tie-weights", action="store_true", help="the output head shares the token embedding (GPT-2)")
    f.add_argument("--pad-vocab", type=_positive(int), metavar="M", help="pad the vocabulary rows to a multiple "
                                                                         "of M (64 on GPUs); padding ids are never used")
    f.add_argument("--peak-flops", type=_positive(float), metavar="F", help="device peak FLOP/s for MFU "
                                                                          "(default: gpt.flops.PEAK_FLOPS; n/a on CPU)")
    f.add_argument("--dist-backend", choices=("nccl", "gloo"), help="under torchrun: nccl (GPUs, default there) "
                                                                    "or gloo (CPU, default there)")
    add_common_args(p)
    p.set_defaults(func=cmd_train)


def _train_config(args: argparse.Namespace, base: dict | None = None) -> Any:
    from gpt.train import TrainConfig

    cfg = TrainConfig.from_dict(base) if base else TrainConfig()
    updates = {name: getattr(args, name) for name in _TRAIN_FLAGS if getattr(args, name) is not None}
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.no_plot:
        updates["plot"] = False
    updates.update({name: True for name in _TRAIN_SWITCHES if getattr(args, name, False)})
    for name, value in updates.items():
        setattr(cfg, name, value)
    return cfg.validate()


def _model_config(args: argparse.Namespace, vocab_size: int) -> dict:
    """The model config from --config and the size flags, checked with the flags' names in the messages."""
    from gpt.model import GPT_CONFIGS
    from gpt.train import DEFAULT_MODEL_CONFIG

    from gpt.families import ARCH_CONFIGS
    from gpt.model import GPTConfig

    cfg = dict(GPT_CONFIGS[args.config] if args.config else DEFAULT_MODEL_CONFIG)
    cfg.update(ARCH_CONFIGS.get(args.arch or "gpt2", {}))   # the family's switches over the same sizes
    if args.config and args.context_length and args.context_length > cfg["context_length"]:
        raise ValueError(f"--context-length {args.context_length} exceeds the {args.config} config's context "
                         f"length {cfg['context_length']}; choose at most {cfg['context_length']}")
    for name in _MODEL_FLAGS:
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if cfg["emb_dim"] % cfg["n_heads"]:
        divisors = [h for h in range(1, min(cfg["emb_dim"], 32) + 1) if cfg["emb_dim"] % h == 0]
        raise ValueError(f"--n-heads {cfg['n_heads']} does not divide --emb-dim {cfg['emb_dim']}; choose --n-heads "
                         f"among {divisors} or change --emb-dim")
    if not 0 <= cfg["drop_rate"] < 1:
        raise ValueError(f"--drop-rate {cfg['drop_rate']} must be in [0, 1)")
    cfg["vocab_size"] = vocab_size
    if args.tie_weights:
        cfg["tie_weights"] = True
    if args.pad_vocab:
        cfg["pad_vocab_multiple"] = args.pad_vocab
    GPTConfig.from_dict({**cfg, "vocab_size": vocab_size or 1})   # any other inconsistency, before the data work
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from gpt import distributed

    # under torchrun each process drives the GPU of its LOCAL_RANK; rank 0 alone prints (library code never does)
    env = distributed.launch_env(os.environ)
    if env is not None and env.world_size > 1 and str(args.device or "").startswith("cuda"):
        args.device = f"cuda:{env.local_rank}"
    B = make_backend(args)
    dist = distributed.setup(B, os.environ, args.dist_backend)
    try:
        return _train(args, B, dist, _say if dist.rank == 0 else (lambda *parts: None))
    finally:
        dist.close()


def _train(args: argparse.Namespace, B: Any, dist: Any, _say: Callable[..., None]) -> int:
    """`tinygpt train` in one process of a (possibly distributed) run; `_say` prints on rank 0 only."""
    import numpy as np

    from gpt import corpus, prepare
    from gpt.checkpoint import read_checkpoint, read_index
    from gpt.model import GPTModel
    from gpt.train import Trainer

    out = Path(args.out)
    # a diverging run overflows before the NaN guard stops it: its one-line error says more than NumPy's warnings
    warnings.filterwarnings("ignore", category=RuntimeWarning, message="(overflow|invalid value)")
    if args.resume:
        state = read_checkpoint(out, with_optimizer=False)
        given = [n for n in _MODEL_FLAGS + ("arch", "config", "tokenizer", "vocab_size") if getattr(args, n) is not None]
        if given:
            raise ValueError(f"--resume continues the saved model and tokenizer; drop "
                             f"{', '.join('--' + n.replace('_', '-') for n in given)}")
        tokenizer = corpus.load_tokenizer(state.state["tokenizer"], state.path)
        tok_spec = state.state["tokenizer"]
        model_cfg = state.state["model_config"]
        cfg = _train_config(args, state.state["train_config"])
        data = _load_data(args.data or state.state["data"]["source"])
    else:
        cfg = _train_config(args)
        model_cfg = _model_config(args, 0)      # checked before the (slower) data and tokenizer work
        if read_index(out).get("latest"):
            raise ValueError(f"{out} already holds a training run; pass --resume to continue it, or choose "
                             f"another --out")
        data = _load_data(args.data)
        shard_tok = prepare.read_meta(data.source)["tokenizer"] if prepare.is_shard_dir(data.source) else None
        kind = (shard_tok or {}).get("kind") or args.tokenizer or ("gpt2" if data.ids is not None else "bpe")
        if shard_tok and args.tokenizer not in (None, kind):
            raise ValueError(f"{data.source} was prepared with the {kind} tokenizer; drop --tokenizer {args.tokenizer}")
        if args.vocab_size is not None and (kind != "bpe" or shard_tok):
            raise ValueError(f"--vocab-size applies to --tokenizer bpe only (the {kind} tokenizer has a fixed "
                             f"vocabulary)")
        t0 = time.perf_counter()
        if shard_tok:
            tokenizer, tok_spec = corpus.load_tokenizer(shard_tok, data.source), shard_tok
        else:
            tokenizer, tok_spec = corpus.build_tokenizer(kind, data.text, args.vocab_size or 1024)
        if kind == "bpe" and not shard_tok:
            _say(f"trained a BPE tokenizer ({tokenizer.n_vocab} tokens) in {time.perf_counter() - t0:.1f} s")
        model_cfg["vocab_size"] = tokenizer.n_vocab
    if prepare.is_shard_dir(data.source):
        # memory-mapped shards: windows are read from disk as batches ask for them
        meta = prepare.read_meta(data.source)
        if meta["vocab_size"] > model_cfg["vocab_size"]:
            raise ValueError(f"{data.source} holds ids of a {meta['vocab_size']}-token vocabulary, larger than the "
                             f"model's {model_cfg['vocab_size']}")
        train_ids = prepare.ShardDataset(data.source, "train", model_cfg["context_length"])
        val_ids = prepare.ShardDataset(data.source, "val", model_cfg["context_length"])
        n_train, n_val = meta["train_tokens"], meta["val_tokens"]
    else:
        ids = corpus.tokenize(data, tokenizer)
        if len(ids) and int(np.max(ids)) >= model_cfg["vocab_size"]:
            raise ValueError(f"the data holds token id {int(np.max(ids))}, outside the {tok_spec['kind']} "
                             f"tokenizer's {model_cfg['vocab_size']} ids; pick the --tokenizer that made the token "
                             f"file")
        train_ids, val_ids = corpus.split_train_val(ids, cfg.val_fraction)
        n_train, n_val = len(train_ids), len(val_ids)
    model = GPTModel(model_cfg, backend=B, seed=cfg.seed)
    _say(f"data: {data.source} ({n_train + n_val:,} tokens: {n_train:,} train, {n_val:,} val); model: "
         f"{model.num_parameters():,} parameters ({model_cfg.get('arch', 'gpt2')}: {model_cfg['n_layers']} layers, "
         f"{model_cfg['n_heads']} heads, "
         f"emb {model_cfg['emb_dim']}, context {model_cfg['context_length']}, vocab {model_cfg['vocab_size']}); "
         f"backend {B.name} {B.dtype_name}" + (f"; {dist.world_size} processes (DDP)" if dist.world_size > 1 else ""))

    bar = None

    def on_event(event: dict) -> None:
        if event["event"] == "warning":
            _warn(event["message"])
        if event["event"] == "note":
            _say(f"note: {event['message']}")
        if event["event"] != "eval":
            return
        write = bar.write if bar is not None else _say
        write(f"step {event['step']:>5}: train loss {event['train_loss']:.3f}, val loss {event['val_loss']:.3f}, "
              f"lr {event['lr']:.2e}, {event['tokens_seen']:,} tokens")
        if event.get("sample"):
            write(f"  sample: {event['sample']}")

    trainer = Trainer(model, train_ids, val_ids, cfg, out_dir=out, tokenizer=tokenizer, tokenizer_spec=tok_spec,
                      data_source=data.source, on_event=on_event, distributed=dist)
    if args.resume:
        trainer.resume(out)
        _say(f"resumed {out} at step {trainer.step}")
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (logs, tests), where its redraws would be noise
    bar = tqdm(total=cfg.max_steps, initial=trainer.step, desc="train", unit="step", dynamic_ncols=True,
               disable=None if dist.rank == 0 else True, file=sys.stderr)
    with bar, _graceful_interrupt(trainer, bar.write if dist.world_size == 1 else None):
        result = trainer.run(progress=bar)
    if result.stopped:
        _say(f"stopped at step {result.step}; checkpoint {result.checkpoint}; `{PROG} train --out {out} --resume` "
             f"continues exactly from there")
        return 130
    evals = result.evals
    summary = f"done: step {result.step} in {result.seconds:.0f} s"
    if evals:
        summary += f"; val loss {evals[0]['val_loss']:.3f} -> {evals[-1]['val_loss']:.3f}"
    _say(f"{summary}; checkpoint {result.checkpoint}; metrics {out / 'metrics.jsonl'}"
         + (f"; plot {out / 'loss.png'}" if cfg.plot and (out / "loss.png").exists() else ""))
    _say(f"next: {PROG} generate --checkpoint {out} --prompt \"{cfg.sample_prompt}\"")
    return 0


@contextlib.contextmanager
def _graceful_interrupt(trainer: Any, write: Callable[[str], None] | None) -> Iterator[None]:
    """While training (a Trainer or FinetuneRun): the first Ctrl-C finishes the step, writes a checkpoint and ends
    the run; a second aborts. Off (plain KeyboardInterrupt) when `write` is None (DDP ranks) or off the main thread."""
    if write is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop()
        write("stopping after this step to write a checkpoint (Ctrl-C again to abort at once)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_data(source: str | None) -> Any:
    """A corpus (text or token file, gpt.corpus) or, for a directory from `tinygpt prepare`, its source only."""
    from gpt import corpus, prepare

    if source is not None and Path(source).is_dir():
        if not prepare.is_shard_dir(source):
            raise ValueError(f"{source} is a directory without meta.json; give a text or token file, or a "
                             f"directory written by `{PROG} prepare`")
        return corpus.Corpus(str(source))
    return corpus.load_corpus(source)


# ---- generate -----------------------------------------------------------------------------------------------------

def add_generate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt from a checkpoint or a Hugging Face GPT-2 directory")
    p.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN_DIR,
                   help="a `train --out` directory, a checkpoint, a Hugging Face GPT-2 directory, or gpt2 (and "
                        f"gpt2-medium, ...) once `download`ed (default: {DEFAULT_RUN_DIR})")
    p.add_argument("--prompt", required=True, metavar="TEXT")
    p.add_argument("--max-new-tokens", type=_positive(int), default=100, metavar="N")
    p.add_argument("--temperature", type=_positive(float, allow_zero=True), default=0.8, metavar="T",
                   help="0: greedy (default 0.8)")
    p.add_argument("--top-k", type=_positive(int), default=40, metavar="K", help="default 40")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling, 0 < P <= 1")
    add_common_args(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from gpt.checkpoint import load_model
    from gpt.generate import generate_stream, text_to_token_ids

    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p} must be in (0, 1]")
    B = make_backend(args)
    model, tok, _ = load_model(args.checkpoint, B)
    model.eval()
    ids = text_to_token_ids(args.prompt, tok)
    eos = getattr(tok, "eos_token_id", None)   # a Hugging Face directory's tokenizer_config.json names it
    if eos is None and hasattr(tok, "special_tokens"):
        eos = tok.special_tokens.get("<|endoftext|>")
    # a window no longer than this run needs: the KV cache of a 40960-token Qwen3 context would take gigabytes
    context = min(model.cfg.context_length, ids.shape[1] + args.max_new_tokens)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    write_tokens(generate_stream(model, ids, args.max_new_tokens, context,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_id=eos,
                                 seed=args.seed), tok, out)
    return 0


def write_tokens(tokens: Any, tok: Any, out: Any) -> None:
    """Write streamed token ids to `out` as text as they arrive, then a newline (generate and chat)."""
    # tokens may end inside a UTF-8 character: the incremental decoder holds such bytes until the rest arrives
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        out.write(decoder.decode(tok.decode_bytes([token])))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")
    out.flush()


# ---- eval ---------------------------------------------------------------------------------------------------------

def add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss and perplexity of a checkpoint on a text or token file")
    p.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN_DIR)
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text or token file")
    p.add_argument("--batch-size", type=_positive(int), default=8, metavar="N")
    p.add_argument("--eval-iters", type=_positive(int), default=None, metavar="N", help="at most N batches")
    add_common_args(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from gpt import corpus
    from gpt.checkpoint import load_model
    from gpt.data import GPTDatasetV1
    from gpt.pretrain import calc_loss_loader
    from gpt.train import fixed_batches

    B = make_backend(args)
    data = corpus.load_corpus(args.data)
    model, tok, _ = load_model(args.checkpoint, B)
    ids = np.asarray(corpus.tokenize(data, tok), dtype=np.int64)
    if len(ids) < 2:
        raise ValueError(f"{args.data} holds {len(ids)} token(s); evaluation needs at least 2")
    if int(ids.max()) >= model.cfg.vocab_size:
        raise ValueError(f"{args.data} holds token id {int(ids.max())}, outside the model's vocabulary of "
                         f"{model.cfg.vocab_size}")
    ctx = min(model.cfg.context_length, len(ids) - 1)
    dataset = GPTDatasetV1(ids, None, ctx, ctx)
    batches = fixed_batches(dataset, args.batch_size, args.eval_iters or len(dataset))
    model.eval()
    with B.no_grad():
        loss = calc_loss_loader(batches, model)
    n_windows = sum(len(x) for x, _ in batches)
    _say(f"loss {loss:.4f}  perplexity {math.exp(min(loss, 700)):.2f}  ({n_windows} windows of {ctx} tokens, "
         f"{len(ids):,} tokens in {args.data})")
    return 0


# ---- convert ------------------------------------------------------------------------------------------------------

def add_convert_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="tinygpt checkpoint <-> Hugging Face directory (GPT-2, Llama, Qwen3)",
                       description="--checkpoint DIR --to-hf OUT, or --from-hf DIR --out OUT")
    p.add_argument("--checkpoint", metavar="DIR", help="a tinygpt checkpoint or `train --out` directory")
    p.add_argument("--to-hf", metavar="OUT", help="write a Hugging Face directory of the model's family here, with "
                                                 "its tokenizer as tokenizer.json")
    p.add_argument("--from-hf", metavar="DIR", help="a Hugging Face GPT-2, Llama or Qwen3 directory (config.json + "
                                                    "weights, and its tokenizer.json if any)")
    p.add_argument("--out", metavar="OUT", help="write a tinygpt checkpoint here")
    add_common_args(p)
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    import shutil

    from gpt.checkpoint import is_checkpoint_dir, load_model, save_checkpoint
    from gpt.pretrained import export_hf, load_pretrained_dir

    B = make_backend(args)
    if args.checkpoint and args.to_hf and not (args.from_hf or args.out):
        model, tok, _ = load_model(args.checkpoint, B)
        files = export_hf(model, tok, args.to_hf)   # the run's own tokenizer goes along as tokenizer.json
        _say(f"wrote {', '.join(str(f) for f in files)}")
        return 0
    if args.from_hf and args.out and not (args.checkpoint or args.to_hf):
        if is_checkpoint_dir(args.out):
            raise ValueError(f"{args.out} already holds a checkpoint; choose another --out")
        model, _, info = load_pretrained_dir(args.from_hf, B)
        state = {"step": 0, "model_config": model.cfg.to_dict(), "tokenizer": {"kind": "gpt2"},
                 "source": str(args.from_hf)}
        if info["tokenizer"]["kind"] == "hf":   # the directory's own tokenizer.json travels with the weights
            state["tokenizer"] = {"kind": "hf"}
        save_checkpoint(args.out, model, None, state)
        for name in ("tokenizer.json", "tokenizer_config.json") if state["tokenizer"]["kind"] == "hf" else ():
            if (Path(args.from_hf) / name).is_file():
                shutil.copy2(Path(args.from_hf) / name, Path(args.out) / name)
        _say(f"wrote tinygpt checkpoint {args.out} ({model.num_parameters():,} parameters)")
        return 0
    raise ValueError("give either --checkpoint DIR --to-hf OUT, or --from-hf DIR --out OUT")


# ---- download -----------------------------------------------------------------------------------------------------

def add_download_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="GPT-2 weights, GPT-2 tokenizer files, the-verdict.txt, the SMS spam or "
                                        "instruction data")
    p.add_argument("what", choices=(*GPT2_DOWNLOADS, *HUB_MODEL_NAMES, "gpt2-tokenizer", "the-verdict", "sms-spam",
                                    "instruction-data"))
    p.add_argument("--dest", metavar="DIR", help="folder to write into (default: the tinygpt cache, "
                                                 "~/.cache/tinygpt, where the other commands look)")
    add_common_args(p)
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from tokenizer.datafiles import OFFLINE_ENV, cache_dir, download_file, offline

    if offline():
        raise ValueError(f"downloads are disabled because {OFFLINE_ENV} is set; unset it, or copy the files into "
                         f"the folder named by TINYGPT_DATA_DIR")
    try:
        if args.what in GPT2_DOWNLOADS:
            from gpt.weights import download_gpt2

            size = GPT2_DOWNLOADS[args.what]
            folder = download_gpt2(size, Path(args.dest) / f"gpt2-{size}" if args.dest else None)
            _say(f"GPT-2 {size} is in {folder}; try: {PROG} generate --checkpoint {folder} --prompt \"Hello\"")
        elif args.what in HUB_MODEL_NAMES:
            from gpt.pretrained import download_hub_model, hub_model_dir

            folder = download_hub_model(args.what, Path(args.dest) / args.what if args.dest else hub_model_dir(args.what))
            _say(f"{args.what} is in {folder}; try: {PROG} chat --checkpoint {args.what if not args.dest else folder}")
        elif args.what == "gpt2-tokenizer":
            from tokenizer.gpt2 import GPT2_FILES

            dest = Path(args.dest) if args.dest else cache_dir()
            for rel, (url, sha) in GPT2_FILES.items():
                if not (dest / rel).is_file():
                    download_file(url, dest / rel, sha)
            _say(f"GPT-2 tokenizer files are in {dest / 'gpt2'}")
        elif args.what == "sms-spam":
            import tempfile

            from gpt.classify import SMS_SPAM_URL, extract_sms_spam

            dest = (Path(args.dest) if args.dest else cache_dir()) / "sms-spam" / "SMSSpamCollection"
            with tempfile.TemporaryDirectory() as tmp:
                extract_sms_spam(download_file(SMS_SPAM_URL, Path(tmp) / "sms_spam_collection.zip"), dest)
            _say(f"wrote {dest}; try: {PROG} finetune classify --init DIR --data {dest} --out runs/spam")
        else:
            from gpt.instruct import INSTRUCTION_DATA_URL

            name, url = {"the-verdict": ("the-verdict.txt", THE_VERDICT_URL),
                         "instruction-data": ("instruction-data.json", INSTRUCTION_DATA_URL)}[args.what]
            dest = (Path(args.dest) if args.dest else cache_dir()) / name
            download_file(url, dest)
            _say(f"wrote {dest}")
    except urllib.error.URLError as e:
        raise ValueError(f"download failed ({getattr(e, 'reason', e)}); check the network connection") from None
    return 0


# ---- tokenizer ----------------------------------------------------------------------------------------------------

def add_tokenizer_command(sub: argparse._SubParsersAction) -> None:
    from tokenizer.cli import add_tokenizer_commands

    parser = add_tokenizer_commands(sub)
    for action in parser._actions:                 # give the nested train/encode/decode the common options too
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                add_common_args(nested)


# ---- prepare ------------------------------------------------------------------------------------------------------

def add_prepare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="tokenize text files into token shards for `train --data DIR`",
                       description="Tokenize UTF-8 text files in parallel into uint16 token shards (gpt/prepare.py) "
                                   "with a train/validation split; train on them with `train --data DIR`.")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 text files (one document each)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the shards and meta.json")
    p.add_argument("--tokenizer", default="gpt2", metavar="gpt2|bytes|PATH",
                   help="gpt2 (default), bytes, or a BPE file from `tinygpt tokenizer train`")
    p.add_argument("--val-fraction", type=_positive(float), default=0.1, metavar="F",
                   help="the last F of the tokens are the validation split (default 0.1)")
    p.add_argument("--shard-size", type=_positive(int), default=100_000_000, metavar="N",
                   help="token ids per shard file (default 100,000,000: 200 MB)")
    p.add_argument("--workers", type=_positive(int), default=max(1, min(8, (os.cpu_count() or 2) // 2)),
                   metavar="N", help="tokenizer processes (default: half the CPUs, at most 8)")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gpt.prepare import prepare

    t0 = time.perf_counter()
    with tqdm(desc="tokenize", unit="char", unit_scale=True, dynamic_ncols=True, disable=None,
              file=sys.stderr) as bar:
        bar.total = sum(Path(f).stat().st_size for f in args.data if Path(f).is_file())
        meta = prepare(args.data, args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                       shard_size=args.shard_size, workers=args.workers, progress=bar)
    _say(f"wrote {len(meta['train'])} train shard(s) ({meta['train_tokens']:,} tokens) and {len(meta['val'])} val "
         f"shard(s) ({meta['val_tokens']:,} tokens) to {args.out} in {time.perf_counter() - t0:.1f} s "
         f"({meta['tokenizer']['kind']} tokenizer, vocab {meta['vocab_size']:,})")
    _say(f"next: {PROG} train --data {args.out} --backend torch ...")
    return 0


# ---- finetune, chat -----------------------------------------------------------------------------------------------

def add_finetune_command(sub: argparse._SubParsersAction) -> None:
    from gpt.finetune_cli import add_finetune_commands

    add_finetune_commands(sub)


# ---- main ---------------------------------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train_command, add_generate_command, add_eval_command, add_convert_command, add_download_command,
    add_tokenizer_command, add_finetune_command, add_prepare_command,
]


def register(add_command: Callable[[argparse._SubParsersAction], None]) -> None:
    """Add a subcommand family: `add_command(subparsers)` adds parsers whose `func(args) -> int` runs them."""
    if add_command not in COMMANDS:
        COMMANDS.append(add_command)


def build_parser() -> argparse.ArgumentParser:
    """The `tinygpt` parser with every registered subcommand."""
    parser = _Parser(prog=PROG, description="tinygpt: a GPT-2 built from first principles (train, generate, ...)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tinygpt` with `argv` (default sys.argv[1:]); returns the exit status."""
    from gpt.train import TrainingDiverged

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except TrainingDiverged as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the same command with --resume (and the same --out) continues from the last "
              f"checkpoint", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, ImportError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
