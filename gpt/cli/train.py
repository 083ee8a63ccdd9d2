"""`tinygpt train` (pretraining, any size, one process or torchrun DDP), `tinygpt eval` and `tinygpt prepare`.

A fresh run never destroys an old one: when --out already holds a run, that run is moved aside to the first free
`DIR-N` (and said so), unless --replace asks for it to be deleted. `--resume` continues the run in --out; the
model and tokenizer flags may be repeated with the values the run was started with (re-running the command with
--resume appended is how people resume), and only a conflicting value is refused, by name.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends.base import Backend
from gpt.cli.common import (DEFAULT_RUN_DIR, PROG, add_common_args, event_printer, make_backend, positive,
                            run_training, say)
from gpt.training.config import DEFAULT_MODEL_CONFIG, TrainConfig

# TrainConfig fields settable from the command line (flag name = field name with dashes)
TRAIN_FLAGS = ("max_steps", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps", "weight_decay", "beta2",
               "grad_clip", "eval_interval", "eval_iters", "keep_last", "sample_prompt", "autocast", "peak_flops")
TRAIN_SWITCHES = ("compile", "tf32", "fused_adamw")   # store_true flags: only a given one changes the config
MODEL_FLAGS = ("context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "weight_init")
ARCHS = ("gpt2", "llama", "qwen3", "bert")
# A post-LN encoder trained on 15% of its positions wants a gentler recipe than the pre-LN decoder's lr 2e-3: at
# 2e-3 (warmup 40, dropout 0.1) the default run's BERT stays at the unigram distribution (val MLM loss 6.05 after 350
# steps, unigram entropy 5.95); with warmup 100 and no dropout, 450 steps reach 5.70 at lr 5e-4 and 5.50 (masked
# accuracy 12%) at lr 1e-3 (the issue 15 closing note has the runs).
ARCH_TRAIN_DEFAULTS = {"bert": {"lr": 1e-3, "min_lr": 5e-5, "warmup_steps": 100}}
ARCH_MODEL_DEFAULTS = {"bert": {"drop_rate": 0.0}}


def _dflt(name: str) -> str:
    """' (default X)' for a TrainConfig field or a default-model key, for the help text (and bert's own, if any)."""
    value = getattr(TrainConfig(), name) if hasattr(TrainConfig(), name) else DEFAULT_MODEL_CONFIG.get(name)
    show = (lambda v: f"{v:g}") if isinstance(value, float) else str
    own = {**ARCH_TRAIN_DEFAULTS["bert"], **ARCH_MODEL_DEFAULTS["bert"]}
    return f" (default {show(value)}; bert {show(own[name])})" if name in own else f" (default {show(value)})"


def _add_data_model_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="FILE", help="UTF-8 text or token file, or a `prepare` directory (default: "
                                                  "the embedded pydoc corpus)")
    d.add_argument("--out", metavar="DIR", default=DEFAULT_RUN_DIR,
                   help="run directory: checkpoints, metrics.jsonl, loss.png; a run already there is moved to DIR-N")
    d.add_argument("--replace", action="store_true", help="delete the run already in --out instead of keeping it")
    d.add_argument("--tokenizer", choices=("bpe", "gpt2", "bytes"), default=None,
                   help="bpe: trained on the data (default for text); gpt2: GPT-2's (default for token files); "
                        "bytes: 256 byte symbols")
    d.add_argument("--vocab-size", type=positive(int), metavar="N", help="BPE vocabulary size (default 1024)")
    m = p.add_argument_group("model (default: a ~2.2 M-parameter GPT)")
    m.add_argument("--arch", choices=ARCHS, default=None,
                   help="model family: gpt2 (default; next-token prediction), llama (RMSNorm + RoPE + SwiGLU + "
                        "grouped-query attention), qwen3 (llama + QK-norm; gpt/families.py), bert (an encoder, "
                        "masked-LM: 15%%, 80/10/10; gpt/bert.py)")
    m.add_argument("--config", choices=("124M", "355M", "774M", "1558M"), help="a GPT-2 size")
    m.add_argument("--context-length", type=positive(int), metavar="N", help="tokens per window" + _dflt("context_length"))
    m.add_argument("--emb-dim", type=positive(int), metavar="N", help="residual width" + _dflt("emb_dim"))
    m.add_argument("--n-heads", type=positive(int), metavar="N", help="attention heads" + _dflt("n_heads"))
    m.add_argument("--n-layers", type=positive(int), metavar="N", help="transformer blocks" + _dflt("n_layers"))
    m.add_argument("--drop-rate", type=positive(float, allow_zero=True), metavar="P", help="dropout" + _dflt("drop_rate"))
    m.add_argument("--weight-init", choices=("gpt2", "torch"), help="initial weights: gpt2 (default: N(0, 0.02), "
                                                                   "scaled residual projections) or torch (PyTorch's "
                                                                   "layer defaults, as the book's model)")


def _add_optim_args(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("optimization")
    t.add_argument("--max-steps", type=positive(int), metavar="N", help="optimizer steps" + _dflt("max_steps"))
    t.add_argument("--batch-size", type=positive(int), metavar="N", help="windows per micro-batch" + _dflt("batch_size"))
    t.add_argument("--grad-accum", type=positive(int), metavar="N", help="micro-batches per step" + _dflt("grad_accum"))
    t.add_argument("--lr", type=positive(float), metavar="LR", help="peak learning rate" + _dflt("lr"))
    t.add_argument("--min-lr", type=positive(float, allow_zero=True), metavar="LR", help="cosine floor" + _dflt("min_lr"))
    t.add_argument("--warmup-steps", type=positive(int, allow_zero=True), metavar="N", help="linear warmup"
                                                                                           + _dflt("warmup_steps"))
    t.add_argument("--weight-decay", type=positive(float, allow_zero=True), metavar="W", help="AdamW decay"
                                                                                             + _dflt("weight_decay"))
    t.add_argument("--beta2", type=positive(float), metavar="B", help="Adam's second-moment decay" + _dflt("beta2"))
    t.add_argument("--grad-clip", type=positive(float, allow_zero=True), metavar="C",
                   help="max gradient norm, 0 disables clipping" + _dflt("grad_clip"))
    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-interval", type=positive(int), metavar="N", help="evaluate and checkpoint every N steps"
                                                                           + _dflt("eval_interval"))
    e.add_argument("--eval-iters", type=positive(int), metavar="N", help="batches per loss estimate" + _dflt("eval_iters"))
    e.add_argument("--keep-last", type=positive(int), metavar="K", help="step checkpoints kept besides best/"
                                                                       + _dflt("keep_last"))
    e.add_argument("--sample-prompt", metavar="TEXT", help="prompt of the sample printed at each evaluation"
                                                           + _dflt("sample_prompt"))
    e.add_argument("--no-plot", action="store_true", help="do not write loss.png")
    e.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")


def _add_full_scale_args(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("full scale (torch backend; see gpt/training/)")
    f.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager, saying so)")
    f.add_argument("--autocast", choices=("bfloat16", "float16"), help="mixed precision: float32 master weights, "
                                                                       "forward in this dtype (float16 adds a grad scaler)")
    f.add_argument("--tf32", action="store_true", help="TF32 tensor cores for float32 matmuls (CUDA)")
    f.add_argument("--fused-adamw", action="store_true", help="torch's fused AdamW kernel")
    f.add_argument("--tie-weights", action="store_true", help="the output head shares the token embedding (GPT-2)")
    f.add_argument("--pad-vocab", type=positive(int), metavar="M", help="pad the vocabulary rows to a multiple "
                                                                        "of M (64 on GPUs); padding ids are never used")
    f.add_argument("--peak-flops", type=positive(float), metavar="F", help="device peak FLOP/s for MFU "
                                                                         "(default: the table in gpt/training/flops.py)")
    f.add_argument("--dist-backend", choices=("nccl", "gloo"), help="under torchrun: nccl (GPUs, default there) "
                                                                    "or gloo (CPU, default there)")


def add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a GPT (default: a small one on the embedded pydoc corpus)",
                       description="Pretrain a GPT. With no arguments: a ~2.2 M-parameter model on the Python "
                                   "documentation text that ships with CPython, BPE tokenizer trained on it, "
                                   "two to five minutes on 2 CPU cores.")
    _add_data_model_args(p)
    _add_optim_args(p)
    _add_full_scale_args(p)
    add_common_args(p)
    p.set_defaults(func=cmd_train)


# ---- configs from flags ------------------------------------------------------------------------------------------

def train_config(args: argparse.Namespace, base: dict | None = None) -> TrainConfig:
    """TrainConfig from the flags given, over `base` (a resumed run's saved config) or the defaults."""
    cfg = TrainConfig.from_dict(base) if base else TrainConfig(**ARCH_TRAIN_DEFAULTS.get(args.arch or "gpt2", {}))
    updates = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.no_plot:
        updates["plot"] = False
    updates.update({name: True for name in TRAIN_SWITCHES if getattr(args, name, False)})
    for name, value in updates.items():
        setattr(cfg, name, value)
    return cfg.validate()


def model_config(args: argparse.Namespace, vocab_size: int) -> dict:
    """The model config from --config and the size flags, checked with the flags' names in the messages."""
    from gpt.families import ARCH_CONFIGS
    from gpt.model import GPT_CONFIGS, GPTConfig

    cfg = dict(GPT_CONFIGS[args.config] if args.config else DEFAULT_MODEL_CONFIG)
    cfg.update(ARCH_CONFIGS.get(args.arch or "gpt2", {}))   # the family's switches over the same sizes
    cfg.update(ARCH_MODEL_DEFAULTS.get(args.arch or "gpt2", {}))
    if args.config and args.context_length and args.context_length > cfg["context_length"]:
        raise ValueError(f"--context-length {args.context_length} exceeds the {args.config} config's context "
                         f"length {cfg['context_length']}; choose at most {cfg['context_length']}")
    for name in MODEL_FLAGS:
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


def run_arch(state: dict) -> str:
    """A saved run's model family: bert (state.json's "arch"), else its model_config's (gpt2, llama, qwen3)."""
    return state.get("arch") or state["model_config"].get("arch", "gpt2")


def resume_conflicts(args: argparse.Namespace, state: dict) -> list[str]:
    """The model/tokenizer flags given with --resume whose values differ from the saved run's, as 'flag X (run: Y)'."""
    saved, conflicts = state["model_config"], []
    wanted = model_config(args, saved["vocab_size"]) if any(getattr(args, n) is not None for n in
                                                             MODEL_FLAGS + ("config",)) else {}
    for name in MODEL_FLAGS + ("tie_weights", "pad_vocab_multiple"):
        flag_given = getattr(args, name, None) not in (None, False) or (args.config and name in wanted)
        if flag_given and name in wanted and wanted[name] != saved.get(name, DEFAULT_MODEL_CONFIG.get(name)):
            conflicts.append(f"--{name.replace('_', '-')} {wanted[name]} (the run has {saved.get(name)})")
    if args.arch is not None and args.arch != run_arch(state):
        conflicts.append(f"--arch {args.arch} (the run has {run_arch(state)})")
    kind = (state.get("tokenizer") or {}).get("kind")
    if args.tokenizer is not None and args.tokenizer != kind:
        conflicts.append(f"--tokenizer {args.tokenizer} (the run has {kind})")
    if args.vocab_size is not None and args.vocab_size != saved["vocab_size"]:
        conflicts.append(f"--vocab-size {args.vocab_size} (the run has {saved['vocab_size']})")
    return conflicts


def free_out_dir(out: Path, replace: bool) -> Path | None:
    """Make --out free for a new run: delete the run there (--replace) or move it to the first free `out-N`;
    returns where it went (None when nothing was there or it was deleted)."""
    from gpt.training.checkpoint import read_index
    from gpt.training.metrics import METRICS_FILE

    if not out.exists():
        return None
    if not (read_index(out).get("latest") or (out / METRICS_FILE).exists()):
        if out.is_dir() and not any(out.iterdir()):
            return None
        raise ValueError(f"{out} exists and holds no tinygpt run; choose another --out")
    if replace:
        shutil.rmtree(out)
        return None
    n = 2
    while Path(f"{out}-{n}").exists():
        n += 1
    kept = Path(f"{out}-{n}")
    out.rename(kept)
    return kept


# ---- the command -------------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from gpt.training import distributed

    # under torchrun each process drives the GPU of its LOCAL_RANK; rank 0 alone prints (library code never does)
    env = distributed.launch_env(os.environ)
    if env is not None and env.world_size > 1 and str(args.device or "").startswith("cuda"):
        args.device = f"cuda:{env.local_rank}"
    B = make_backend(args)
    dist = distributed.setup(B, os.environ, args.dist_backend)
    try:
        return _train(args, B, dist, say if dist.rank == 0 else (lambda *parts: None))
    finally:
        dist.close()


def _resumed_run(args: argparse.Namespace, out: Path) -> dict:
    """Tokenizer, configs and data of the run in --out being resumed; conflicting flags and finished runs refused."""
    from gpt.training import corpus
    from gpt.training.checkpoint import read_checkpoint

    ckpt = read_checkpoint(out, with_optimizer=False)
    conflicts = resume_conflicts(args, ckpt.state)
    if conflicts:
        raise ValueError(f"--resume continues the saved model and tokenizer, and these flags differ from it: "
                         f"{'; '.join(conflicts)}; drop them, or start a new run with another --out")
    cfg = train_config(args, ckpt.state["train_config"])
    if ckpt.step >= cfg.total_steps(1):
        raise ValueError(f"the run in {out} is finished (step {ckpt.step} of {cfg.max_steps}); give a larger "
                         f"--max-steps to train it further, or start a new run")
    arch = run_arch(ckpt.state)
    run = {"tokenizer": corpus.load_tokenizer(ckpt.state["tokenizer"], ckpt.path), "spec": ckpt.state["tokenizer"],
           "model_cfg": ckpt.state["model_config"], "cfg": cfg, "arch": arch,
           "data": load_data(args.data or ckpt.state["data"]["source"])}
    if arch == "bert":
        from gpt.mlm import SpecialIds

        run["special"] = SpecialIds(**ckpt.state["mlm"]["special_ids"])
    return run


def _new_run(args: argparse.Namespace, say_: Callable[..., None]) -> dict:
    """Tokenizer, configs and data of a fresh run (its arguments checked before the slower data work)."""
    from gpt.training import corpus, shards

    cfg = train_config(args)
    model_cfg = model_config(args, 0)
    data = load_data(args.data)
    shard_tok = shards.read_meta(data.source)["tokenizer"] if shards.is_shard_dir(data.source) else None
    kind = (shard_tok or {}).get("kind") or args.tokenizer or ("gpt2" if data.ids is not None else "bpe")
    if shard_tok and args.tokenizer not in (None, kind):
        raise ValueError(f"{data.source} was prepared with the {kind} tokenizer; drop --tokenizer {args.tokenizer}")
    if args.vocab_size is not None and (kind != "bpe" or shard_tok):
        raise ValueError(f"--vocab-size applies to --tokenizer bpe only (the {kind} tokenizer has a fixed "
                         f"vocabulary)")
    t0 = time.perf_counter()
    if shard_tok:
        tokenizer, spec = corpus.load_tokenizer(shard_tok, data.source), shard_tok
    else:
        tokenizer, spec = corpus.build_tokenizer(kind, data.text, args.vocab_size or 1024)
    if kind == "bpe" and not shard_tok:
        say_(f"trained a BPE tokenizer ({tokenizer.n_vocab} tokens) in {time.perf_counter() - t0:.1f} s")
    model_cfg["vocab_size"] = tokenizer.n_vocab
    run = {"tokenizer": tokenizer, "spec": spec, "model_cfg": model_cfg, "cfg": cfg, "data": data,
           "arch": args.arch or "gpt2"}
    if run["arch"] == "bert":
        run.update(bert_run(args, tokenizer, model_cfg))
    return run


def _objective(run: dict) -> tuple[Any, int, int]:
    """The language-modelling objective over the run's data (memory-mapped shards or tokenized text)."""
    from gpt.training import corpus, shards
    from gpt.training.objectives import LanguageModeling

    data, model_cfg, ctx = run["data"], run["model_cfg"], run["model_cfg"]["context_length"]
    if run["arch"] == "bert" and shards.is_shard_dir(data.source):
        raise ValueError(f"train --arch bert reads a text or token file, not a `{PROG} prepare` directory "
                         f"({data.source})")
    if shards.is_shard_dir(data.source):
        meta = shards.read_meta(data.source)
        if meta["vocab_size"] > model_cfg["vocab_size"]:
            raise ValueError(f"{data.source} holds ids of a {meta['vocab_size']}-token vocabulary, larger than the "
                             f"model's {model_cfg['vocab_size']}")
        train_ids = shards.ShardDataset(data.source, "train", ctx)
        val_ids = shards.ShardDataset(data.source, "val", ctx)
        n_train, n_val = meta["train_tokens"], meta["val_tokens"]
    else:
        ids = corpus.tokenize(data, run["tokenizer"])
        if len(ids) and int(np.max(ids)) >= model_cfg["vocab_size"]:
            raise ValueError(f"the data holds token id {int(np.max(ids))}, outside the {run['spec']['kind']} "
                             f"tokenizer's {model_cfg['vocab_size']} ids; pick the --tokenizer that made the token "
                             f"file")
        train_ids, val_ids = corpus.split_train_val(ids, run["cfg"].val_fraction)
        n_train, n_val = len(train_ids), len(val_ids)
    if run["arch"] == "bert":
        from gpt.training.objectives import MaskedLM

        return MaskedLM(train_ids, val_ids, ctx, run["special"], model_cfg["vocab_size"]), n_train, n_val
    return LanguageModeling(train_ids, val_ids, ctx, tokenizer=run["tokenizer"]), n_train, n_val


def _describe_eval(event: dict) -> str:
    acc = f", val masked acc {event['val_mlm_acc']:.3f}" if "val_mlm_acc" in event else ""
    return (f"step {event['step']:>5}: train loss {event['train_loss']:.3f}, val loss {event['val_loss']:.3f}{acc}, "
            f"lr {event['lr']:.2e}, {event['tokens_seen']:,} tokens")


def bert_run(args: argparse.Namespace, tokenizer: Any, model_cfg: dict) -> dict:
    """The special ids and the BERT config of a new `train --arch bert` run, from the size flags (hidden 4·emb)."""
    from gpt.bert import BertConfig
    from gpt.mlm import special_ids_for

    if args.config or args.weight_init or args.tie_weights or args.pad_vocab:
        flag = next(f for f, v in (("--config", args.config), ("--weight-init", args.weight_init),
                                   ("--tie-weights", args.tie_weights), ("--pad-vocab", args.pad_vocab)) if v)
        raise ValueError(f"{flag} applies to --arch gpt2 only; a BERT is sized with --context-length, --emb-dim, "
                         f"--n-heads, --n-layers and --drop-rate (its decoder is always tied)")
    special, vocab = special_ids_for(tokenizer, tokenizer.n_vocab)
    cfg = BertConfig(vocab_size=vocab, context_length=model_cfg["context_length"], emb_dim=model_cfg["emb_dim"],
                     n_heads=model_cfg["n_heads"], n_layers=model_cfg["n_layers"], hidden_dim=4 * model_cfg["emb_dim"],
                     drop_rate=model_cfg["drop_rate"], att_drop_rate=model_cfg["drop_rate"], pad_token_id=special.pad)
    return {"special": special, "model_cfg": cfg.to_dict()}


def _train(args: argparse.Namespace, B: Backend, dist: Any, say_: Callable[..., None]) -> int:
    """`tinygpt train` in one process of a (possibly distributed) run; `say_` prints on rank 0 only."""
    from gpt.model import GPTModel
    from gpt.training.trainer import Trainer

    out = Path(args.out)
    # a diverging run overflows before the NaN guard stops it: its one-line error says more than NumPy's warnings
    warnings.filterwarnings("ignore", category=RuntimeWarning, message="(overflow|invalid value)")
    run = _resumed_run(args, out) if args.resume else _new_run(args, say_)
    objective, n_train, n_val = _objective(run)
    if not args.resume and dist.rank == 0:
        kept = free_out_dir(out, args.replace)
        if kept is not None:
            say_(f"{out} held an earlier run: kept it as {kept} (pass --replace to delete it instead)")
    cfg, model_cfg = run["cfg"], run["model_cfg"]
    if run["arch"] == "bert":
        from gpt.bert import BertModel

        model = BertModel(model_cfg, backend=B, seed=cfg.seed)
    else:
        model = GPTModel(model_cfg, backend=B, seed=cfg.seed)
    say_(f"data: {run['data'].source} ({n_train + n_val:,} tokens: {n_train:,} train, {n_val:,} val); model: "
         f"{model.num_parameters():,} parameters ({run['arch']}: {model_cfg['n_layers']} layers, "
         f"{model_cfg['n_heads']} heads, "
         f"emb {model_cfg['emb_dim']}, context {model_cfg['context_length']}, vocab {model_cfg['vocab_size']}); "
         f"backend {B.name} {B.dtype_name}" + (f"; {dist.world_size} processes (DDP)" if dist.world_size > 1 else ""))
    trainer = Trainer(model, objective, cfg, out_dir=out, tokenizer=run["tokenizer"], tokenizer_spec=run["spec"],
                      data_source=run["data"].source, on_event=event_printer(_describe_eval), distributed=dist)
    if args.resume:
        trainer.resume(out)
        say_(f"resumed {out} at step {trainer.step}")
    result = run_training(trainer, "train", dist.world_size, dist.rank)
    if result.stopped:
        say_(f"stopped at step {result.step}; checkpoint {result.checkpoint}; `{PROG} train --out {out} --resume` "
             f"continues exactly from there")
        return 130
    summary = f"done: step {result.step} in {result.seconds:.0f} s"
    if result.evals:
        summary += f"; val loss {result.evals[0]['val_loss']:.3f} -> {result.evals[-1]['val_loss']:.3f}"
    say_(f"{summary}; checkpoint {result.checkpoint}; metrics {out / 'metrics.jsonl'}"
         + (f"; plot {out / 'loss.png'}" if cfg.plot and (out / "loss.png").exists() else ""))
    if run["arch"] == "bert":
        say_(f"next: {PROG} fill-mask --checkpoint {out} --text \"... [MASK] ...\"")
    else:
        say_(f"next: {PROG} generate --checkpoint {out} --prompt \"{cfg.sample_prompt}\"")
    return 0


def load_data(source: str | None) -> Any:
    """A corpus (text or token file, gpt.training.corpus) or, for a directory from `tinygpt prepare`, its source."""
    from gpt.training import corpus, shards

    if source is not None and Path(source).is_dir():
        if not shards.is_shard_dir(source):
            raise ValueError(f"{source} is a directory without meta.json; give a text or token file, or a "
                             f"directory written by `{PROG} prepare`")
        return corpus.Corpus(str(source))
    return corpus.load_corpus(source)


# ---- eval ----------------------------------------------------------------------------------------------------------

def add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss and perplexity of a checkpoint on a text or token file")
    p.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN_DIR)
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text or token file")
    p.add_argument("--batch-size", type=positive(int), default=8, metavar="N")
    p.add_argument("--eval-iters", type=positive(int), default=None, metavar="N", help="at most N batches")
    add_common_args(p, seed=False)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from gpt.data import GPTDatasetV1
    from gpt.pretrain import calc_loss_loader
    from gpt.training import corpus
    from gpt.training.checkpoint import load_model
    from gpt.training.objectives import fixed_batches

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
    batches = fixed_batches(GPTDatasetV1(ids, None, ctx, ctx), args.batch_size, args.eval_iters)
    model.eval()
    with B.no_grad():
        loss = calc_loss_loader(batches, model)
    n_windows = sum(len(x) for x, _ in batches)
    say(f"loss {loss:.4f}  perplexity {math.exp(min(loss, 700)):.2f}  ({n_windows} windows of {ctx} tokens, "
        f"{len(ids):,} tokens in {args.data})")
    return 0


# ---- prepare -------------------------------------------------------------------------------------------------------

def add_prepare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="tokenize text files into token shards for `train --data DIR`",
                       description="Tokenize UTF-8 text files in parallel into uint16 token shards "
                                   "(gpt/training/shards.py) with a train/validation split; train on them with "
                                   "`train --data DIR`.")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 text files (one document each)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the shards and meta.json")
    p.add_argument("--tokenizer", default="gpt2", metavar="gpt2|bytes|PATH",
                   help="gpt2, bytes, or a BPE file from `tinygpt tokenizer train`")
    p.add_argument("--val-fraction", type=positive(float), default=0.1, metavar="F",
                   help="the last F of the tokens are the validation split")
    p.add_argument("--shard-size", type=positive(int), default=100_000_000, metavar="N",
                   help="token ids per shard file (200 MB at the default)")
    p.add_argument("--workers", type=positive(int), default=max(1, min(8, (os.cpu_count() or 2) // 2)),
                   metavar="N", help="tokenizer processes (half the CPUs, at most 8)")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from gpt.training.shards import prepare

    t0 = time.perf_counter()
    with tqdm(desc="tokenize", unit="char", unit_scale=True, dynamic_ncols=True, disable=None,
              file=sys.stderr) as bar:
        meta = prepare(args.data, args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                       shard_size=args.shard_size, workers=args.workers, progress=bar)
    say(f"wrote {len(meta['train'])} train shard(s) ({meta['train_tokens']:,} tokens) and {len(meta['val'])} val "
        f"shard(s) ({meta['val_tokens']:,} tokens) to {args.out} in {time.perf_counter() - t0:.1f} s "
        f"({meta['tokenizer']['kind']} tokenizer, vocab {meta['vocab_size']:,})")
    say(f"next: {PROG} train --data {args.out} --backend torch ...")
    return 0
