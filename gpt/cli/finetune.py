"""`tinygpt finetune classify|instruct|dpo`: the book's chapters 6 and 7, appendix E's LoRA and chapter 7's bonus
preference tuning (DPO, gpt/dpo.py) as commands.

All train with the one Trainer (gpt/training/trainer.py) on their objective (gpt/training/objectives.py), so
checkpoints, `--resume`, Ctrl-C, metrics.jsonl and loss.png behave as in `tinygpt train`. A command re-run with
--resume appended continues the run in --out: repeated flags must equal the run's, a differing one is refused.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from backends.base import Backend
from gpt.cli.common import (PROG, add_common_args, event_printer, make_backend, positive, progress_bar, run_training,
                            say)
from gpt.training import finetune as ftlib
from gpt.training.config import TrainConfig

CONFIG_FLAGS = ("epochs", "max_steps", "batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
                "eval_interval", "eval_iters", "keep_last")


def _add_finetune_args(p: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    p.add_argument("--init", metavar="DIR", help="pretrained model: a `tinygpt train --out` directory or checkpoint, "
                                                 "a Hugging Face GPT-2 directory, or gpt2 (gpt2-medium, ...) after "
                                                 "`tinygpt download gpt2`")
    p.add_argument("--data", metavar="FILE", help="the data file (see the command's description)")
    p.add_argument("--out", metavar="DIR", required=True, help="run directory: checkpoints, metrics.jsonl, results")
    p.add_argument("--limit", type=positive(int), metavar="N", help="use only N examples (a quick trial)")
    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=positive(int), metavar="N", help=f"passes over the training split (default "
                                                                       f"{defaults.epochs})")
    o.add_argument("--max-steps", type=positive(int), metavar="N", help="stop after N steps (default: the epochs' steps)")
    o.add_argument("--batch-size", type=positive(int), metavar="N", help=f"default {defaults.batch_size}")
    o.add_argument("--lr", type=positive(float), metavar="LR", help=f"peak learning rate (default {defaults.lr:g})")
    o.add_argument("--min-lr", type=positive(float, allow_zero=True), metavar="LR", help="cosine floor (default: "
                                                                                         "constant lr)")
    o.add_argument("--warmup-steps", type=positive(int, allow_zero=True), metavar="N", help="default 0")
    o.add_argument("--weight-decay", type=positive(float, allow_zero=True), metavar="W",
                   help=f"default {defaults.weight_decay:g}")
    o.add_argument("--grad-clip", type=positive(float, allow_zero=True), metavar="C", help="max gradient norm "
                                                                                         "(default 0: none)")
    o.add_argument("--eval-interval", type=positive(int), metavar="N", help=f"evaluate and checkpoint every N steps "
                                                                           f"(default {defaults.eval_interval})")
    o.add_argument("--eval-iters", type=positive(int), metavar="N", help=f"batches per estimate (default "
                                                                       f"{defaults.eval_iters})")
    o.add_argument("--keep-last", type=positive(int), metavar="K", help="step checkpoints to keep (default 2)")
    lo = p.add_argument_group("LoRA (book appendix E)")
    lo.add_argument("--lora-rank", type=positive(int), metavar="R", help="train rank-R LoRA matrices instead of weights")
    lo.add_argument("--lora-alpha", type=positive(float), metavar="A", help="LoRA scale (default: the rank, as the book)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    add_common_args(p)


def _config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    changes = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    if args.seed is not None:
        changes["seed"] = args.seed
    if "max_steps" not in changes and "epochs" in changes:
        changes["max_steps"] = None
    return base.replace(**changes)


def _resume_conflicts(args: argparse.Namespace, ft: dict, limit: int | None, task_flags: dict[str, Any]) -> list[str]:
    """Flags given with --resume whose values differ from the saved run's, as 'flag X (the run has Y)'."""
    given = {"init": (args.init, ft.get("init")), "limit": (args.limit, limit),
             "lora": (ftlib.lora_spec(args.lora_rank, args.lora_alpha), ft.get("lora")), **task_flags}
    names = {"init": "--init", "limit": "--limit", "lora": "--lora-rank/--lora-alpha"}
    return [f"{names.get(k, '--' + k.replace('_', '-'))} {mine} (the run has {saved})"
            for k, (mine, saved) in given.items()
            if mine is not None and mine is not False and str(mine) != str(saved)]


def _prepare(args: argparse.Namespace, task: str, defaults: TrainConfig, task_flags: dict[str, Any],
             load_init: Callable[[str, Any], tuple[Any, Any, dict]] = ftlib.load_init) -> dict:
    """The model, tokenizer, config and description of a new run, or of the run in --out being resumed.
    `load_init(path, backend)` reads --init (DPO also accepts an instruction-tuned model)."""
    from gpt.classify import end_of_text_id
    from gpt.training.checkpoint import read_checkpoint, read_index
    from gpt.training.corpus import load_tokenizer

    out, B = Path(args.out), make_backend(args)
    if args.resume:
        ckpt = read_checkpoint(out, with_optimizer=False)
        ft = ckpt.state.get("finetune") or {}
        if ft.get("task") != task:
            raise ValueError(f"{out} holds no `finetune {task}` run to resume (found task {ft.get('task')!r})")
        conflicts = _resume_conflicts(args, ft, ckpt.state["data"].get("limit"),
                                      {k: (v, ft.get(k)) for k, v in task_flags.items()})
        if conflicts:
            raise ValueError(f"--resume continues the saved model, data and settings, and these flags differ from "
                             f"them: {'; '.join(conflicts)}; drop them, or start a new run with another --out")
        cfg = _config(args, TrainConfig.from_dict(ft["config"]))
        model = ftlib.model_class(ft)(ckpt.state["model_config"], backend=B, seed=0)
        ftlib.apply_finetune_shape(model, ft, seed=cfg.seed)
        tokenizer = load_tokenizer(ckpt.state.get("tokenizer") or {"kind": "gpt2"}, ckpt.path)
        return {"model": model, "tokenizer": tokenizer, "tok_spec": ckpt.state.get("tokenizer"), "cfg": cfg,
                "ft": ft, "data": args.data or ckpt.state["data"]["source"], "limit": ckpt.state["data"].get("limit"),
                "resume_from": ckpt.path, "out": out}
    if args.init is None or args.data is None:
        raise ValueError(f"`finetune {task}` needs --init DIR (a pretrained model) and --data FILE, or --resume")
    if read_index(out).get("latest"):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    cfg = _config(args, defaults)
    model, tokenizer, state = load_init(args.init, B)
    ft = {"task": task, "lora": ftlib.lora_spec(args.lora_rank, args.lora_alpha), "init": str(args.init),
          "config": cfg.to_dict()}
    if state.get("arch") == "bert":  # an encoder: [CLS] text [SEP], padded with [PAD] (masked out of attention)
        special = state["mlm"]["special_ids"]
        ft.update(arch="bert", special_ids=special, pad_token_id=special["pad"])
    else:
        ft["pad_token_id"] = end_of_text_id(tokenizer)
    return {"model": model, "tokenizer": tokenizer, "tok_spec": state.get("tokenizer") or {"kind": "gpt2"},
            "cfg": cfg, "ft": ft, "data": args.data, "limit": args.limit, "resume_from": None, "out": out}


def _describe_eval(event: dict) -> str:
    line = f"step {event['step']:>5}: train loss {event['train_loss']:.3f}, val loss {event['val_loss']:.3f}"
    if "train_acc" in event:
        line += f", train acc {100 * event['train_acc']:.1f}%, val acc {100 * event['val_acc']:.1f}%"
    if "val_reward_margin" in event:
        line += (f", val reward margin {event['val_reward_margin']:.3f} (chosen {event['val_chosen_reward']:.3f}, "
                 f"rejected {event['val_rejected_reward']:.3f}), val reward acc {100 * event['val_reward_accuracy']:.0f}%")
    return f"{line}, lr {event['lr']:.2e}, {event['examples_seen']:,} examples"


def _train(run: dict, objective: Any) -> Any:
    """Train the run's model on `objective` with the one Trainer; returns the Trainer after its run."""
    from gpt.training.trainer import Trainer

    model, ft = run["model"], run["ft"]
    ft["config"] = run["cfg"].to_dict()
    state = {"finetune": ft, "data": {"source": str(run["data"]), "limit": run["limit"]}}
    trainer = Trainer(model, objective, run["cfg"], out_dir=run["out"], tokenizer=run["tokenizer"],
                      tokenizer_spec=run["tok_spec"], state_extra=state, on_event=event_printer(_describe_eval))
    lora = ft["lora"]
    say(f"model: {ftlib.describe_trainable(model)}"
        + (f" (LoRA rank {lora['rank']}, alpha {lora['alpha']:g})" if lora else
           f" ({ft.get('trainable')})" if ft.get("trainable") else "") + f"; backend {model.B.name} "
        f"{model.B.dtype_name}")
    if run["resume_from"] is not None:
        trainer.resume(run["resume_from"])
        if trainer.step >= trainer.total_steps:
            raise ValueError(f"the run in {run['out']} is finished (step {trainer.step} of {trainer.total_steps}); "
                             f"give a larger --max-steps or --epochs to train it further")
        say(f"resumed {run['out']} at step {trainer.step}")
    trainer.result = run_training(trainer, "finetune")
    if trainer.result.stopped:
        say(f"stopped at step {trainer.step}; checkpoint {trainer.last_checkpoint()}; the same command with --out "
            f"{run['out']} --resume continues exactly from there")
    return trainer


# ---- finetune classify ---------------------------------------------------------------------------------------------

def add_classify_command(sub: argparse._SubParsersAction) -> None:
    from gpt.classify import TRAINABLE_CHOICES

    p = sub.add_parser("classify", help="fine-tune as a spam classifier (book ch. 6)",
                       description="Fine-tune a pretrained GPT as a spam classifier on the SMS Spam Collection "
                                   "(--data: its tab-separated SMSSpamCollection file; `tinygpt download sms-spam` "
                                   "fetches it): balance, split 70/10/20, 2-class head, train the last block + "
                                   "final norm + head (book ch. 6), or LoRA.")
    _add_finetune_args(p, ftlib.CLASSIFY_DEFAULTS)
    c = p.add_argument_group("classifier")
    c.add_argument("--trainable", choices=TRAINABLE_CHOICES, default=None,
                   help="what trains without LoRA: last-block (default, the book's: last block, final norm, head), "
                        "head, or all")
    c.add_argument("--max-length", type=positive(int), metavar="N",
                   help="pad/truncate messages to N tokens (default: the longest training message, at most the "
                        "context length)")
    c.add_argument("--pool", choices=("last", "last-non-pad"), default=None,
                   help="classify from the last position (default, the book's) or the last non-pad token")
    p.set_defaults(func=cmd_finetune_classify)


def cmd_finetune_classify(args: argparse.Namespace) -> int:
    if args.trainable is not None and args.lora_rank is not None:
        raise ValueError(f"--trainable {args.trainable} and --lora-rank exclude each other: with LoRA only the "
                         f"LoRA matrices train; drop one of them")
    run = _prepare(args, "classify", ftlib.CLASSIFY_DEFAULTS,
                   {"trainable": args.trainable, "max_length": args.max_length, "pool": args.pool})
    model, tok, cfg, ft = run["model"], run["tokenizer"], run["cfg"], run["ft"]
    splits = ftlib.spam_splits(run["data"], cfg.seed, run["limit"])
    if run["resume_from"] is None:
        max_length, note = ftlib.choose_max_length(splits[0], ftlib.classify_tokenizer(tok, ft),
                                                   int(ft["pad_token_id"]), args.max_length,
                                                   model.cfg.context_length)
        if note:
            say(f"note: {note}")
        ft.update(num_classes=2, trainable=None if ft["lora"] else (args.trainable or "last-block"),
                  pool=args.pool or "last", max_length=max_length)
        ftlib.apply_finetune_shape(model, ft, seed=cfg.seed)
    objective = ftlib.classification_objective(splits, tok, ft)
    say(f"data: {run['data']}: {sum(map(len, splits))} balanced messages -> {len(objective.train_set)} train / "
        f"{len(objective.val_set)} val / {len(objective.test_set)} test, padded to {ft['max_length']} tokens with id "
        f"{ft['pad_token_id']}")
    t0 = time.perf_counter()
    trainer = _train(run, objective)
    if trainer.result.stopped:
        return 130
    results = {"step": trainer.step, "seconds": time.perf_counter() - t0,
               **ftlib.classification_results(model, objective, cfg.batch_size),
               "lora": ft["lora"], "trainable": ft["trainable"], "checkpoint": str(trainer.last_checkpoint())}
    path = run["out"] / ftlib.RESULTS_FILE
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    acc, base = results["accuracy"], results["majority_baseline"]
    say(f"done: step {trainer.step} in {results['seconds']:.0f} s. Accuracy: train {100 * acc['train']:.2f}%, "
        f"validation {100 * acc['val']:.2f}%, test {100 * acc['test']:.2f}% (majority-class baseline: train "
        f"{100 * base['train']:.2f}%, validation {100 * base['val']:.2f}%, test {100 * base['test']:.2f}%); "
        f"checkpoint {results['checkpoint']}; results {path}")
    say(f"next: {PROG} classify --checkpoint {run['out']} --text \"You won a prize! Call now\"")
    return 0


# ---- finetune instruct ---------------------------------------------------------------------------------------------

def add_instruct_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("instruct", help="instruction fine-tuning (book ch. 7)",
                       description="Fine-tune a pretrained GPT to follow instructions (--data: a JSON list of "
                                   "{instruction, input, output}, e.g. the book's instruction-data.json; `tinygpt "
                                   "download instruction-data` fetches it): split 85/10/5, Alpaca prompts, train, "
                                   "then write the test split's responses.")
    _add_finetune_args(p, ftlib.INSTRUCT_DEFAULTS)
    i = p.add_argument_group("instructions")
    i.add_argument("--mask-instruction", action="store_true", help="learn only the responses (prompt targets -100)")
    i.add_argument("--max-new-tokens", type=positive(int, allow_zero=True), default=256, metavar="N",
                   help="tokens generated per test response (256, the book's; 0 skips generation)")
    i.add_argument("--responses", metavar="FILE", help=f"where the test responses go (default DIR/"
                                                       f"{ftlib.RESPONSES_FILE})")
    p.set_defaults(func=cmd_finetune_instruct)


def _after_instruct(args: argparse.Namespace, run: dict, trainer: Any, test_data: list) -> None:
    """Merge LoRA into a plain checkpoint, then generate and write the test split's responses."""
    from gpt.instruct import generate_responses, write_responses
    from gpt.lora import merge_lora
    from gpt.training.checkpoint import save_checkpoint

    model, tok, ft, out = run["model"], run["tokenizer"], run["ft"], run["out"]
    if ft["lora"]:
        merge_lora(model)
        save_checkpoint(out / ftlib.MERGED_DIR, model, None, {"step": trainer.step, "model_config": model.cfg.to_dict(),
                                                              "tokenizer": run["tok_spec"]}, tok)
        say(f"LoRA merged into the weights: {out / ftlib.MERGED_DIR} is a plain GPT checkpoint")
    if args.max_new_tokens:
        t1 = time.perf_counter()
        responses = generate_responses(model, tok, test_data, max_new_tokens=args.max_new_tokens,
                                       eos_id=int(ft["pad_token_id"]))
        path = write_responses(responses, Path(args.responses) if args.responses else out / ftlib.RESPONSES_FILE)
        say(f"wrote {len(responses)} test responses to {path} in {time.perf_counter() - t1:.0f} s; the first:")
        for entry in responses[:3]:
            say(f"  instruction: {entry['instruction']!r}" + (f" input: {entry['input']!r}" if entry.get("input")
                                                                 else ""))
            say(f"    expected: {entry['output']!r}\n    model:    {entry['model_response']!r}")
    say(f"next: {PROG} chat --checkpoint {out / ftlib.MERGED_DIR if ft['lora'] else out}")


def cmd_finetune_instruct(args: argparse.Namespace) -> int:
    run = _prepare(args, "instruct", ftlib.INSTRUCT_DEFAULTS, {"mask_instruction": args.mask_instruction})
    model, tok, ft = run["model"], run["tokenizer"], run["ft"]
    train_data, test_data, val_data = ftlib.instruction_splits(run["data"], run["limit"])
    if run["resume_from"] is None:
        ft.update(trainable=None if ft["lora"] else "all", mask_instruction=bool(args.mask_instruction))
        ftlib.apply_finetune_shape(model, ft, seed=run["cfg"].seed)
    objective, notes = ftlib.instruction_objective(train_data, val_data, tok, ft, model.cfg.context_length)
    for note in notes:
        say(f"note: {note}")
    n = len(train_data) + len(test_data) + len(val_data)
    say(f"data: {run['data']}: {n} entries -> {len(train_data)} train / {len(test_data)} test / {len(val_data)} val; "
        f"prompts cut to {model.cfg.context_length} tokens, padded with id {ft['pad_token_id']}"
        f"{', instruction masked' if ft.get('mask_instruction') else ''}")
    t0 = time.perf_counter()
    trainer = _train(run, objective)
    if trainer.result.stopped:
        return 130
    evals = trainer.result.evals
    say(f"done: step {trainer.step} in {time.perf_counter() - t0:.0f} s"
        + (f"; val loss {evals[0]['val_loss']:.3f} -> {evals[-1]['val_loss']:.3f}" if evals else ""))
    _after_instruct(args, run, trainer, test_data)
    return 0


# ---- finetune dpo --------------------------------------------------------------------------------------------------

def add_dpo_command(sub: argparse._SubParsersAction) -> None:
    from gpt.dpo import DPO_DEFAULTS

    p = sub.add_parser("dpo", help="preference tuning with DPO (book ch. 7 bonus)",
                       description="Align an instruction model with preferences by Direct Preference Optimization "
                                   "(Rafailov et al. 2023): --init a `finetune instruct` run (or any GPT), --data a "
                                   "JSON list of {instruction, input, chosen, rejected} (the book's "
                                   "instruction-data-with-preference.json); split 85/10/5, Alpaca prompts, a frozen "
                                   "reference copy of the starting weights, then the test responses before and "
                                   "after, side by side.")
    _add_finetune_args(p, DPO_DEFAULTS)
    d = p.add_argument_group("preferences")
    d.add_argument("--beta", type=positive(float), metavar="B", help="DPO's beta: how far the policy may move from "
                                                                     "the reference (default 0.1, the book's)")
    d.add_argument("--max-new-tokens", type=positive(int, allow_zero=True), default=256, metavar="N",
                   help="tokens generated per test response (0 skips generation)")
    d.add_argument("--responses", metavar="FILE", help=f"where the test responses go (default DIR/"
                                                       f"{ftlib.RESPONSES_FILE})")
    p.set_defaults(func=cmd_finetune_dpo)


def _load_dpo_init(path: str, B: Backend) -> tuple[Any, Any, dict]:
    """The policy's starting weights: a `finetune instruct` run (LoRA merged) or a pretrained GPT."""
    model, tok, state = ftlib.load_finetuned(path, B, merge=True)
    task = (state.get("finetune") or {}).get("task")
    if task not in (None, "instruct"):
        raise ValueError(f"--init {path} is a `finetune {task}` model; DPO starts from an instruction model (the "
                         f"--out of `{PROG} finetune instruct`) or a pretrained GPT")
    model.train()
    return model, tok, {**state, "finetune": None}


def _dpo_reference(run: dict, B: Backend) -> Any:
    """The frozen reference: the starting weights, which a new run saves in DIR/reference (`_save_reference`) and
    --resume reads back, so a resumed run compares against the same model even if --init has changed since."""
    from gpt.dpo import REFERENCE_DIR, make_reference_model
    from gpt.training.checkpoint import load_model

    if run["resume_from"] is not None:
        return make_reference_model(load_model(run["out"] / REFERENCE_DIR, B)[0])
    return make_reference_model(run["model"])


def _save_reference(run: dict, reference: Any) -> None:
    from gpt.dpo import REFERENCE_DIR
    from gpt.training.checkpoint import save_checkpoint

    save_checkpoint(run["out"] / REFERENCE_DIR, reference, None, {"step": 0, "model_config": reference.cfg.to_dict(),
                                                                  "tokenizer": run["tok_spec"]}, run["tokenizer"])


def _after_dpo(args: argparse.Namespace, run: dict, trainer: Any, reference: Any, test_data: list) -> None:
    """Merge LoRA, then the test responses of the reference (before) and of the tuned policy (after)."""
    from gpt.instruct import generate_responses, write_responses
    from gpt.lora import merge_lora
    from gpt.training.checkpoint import save_checkpoint

    model, tok, ft, out = run["model"], run["tokenizer"], run["ft"], run["out"]
    if ft["lora"]:
        merge_lora(model)
        save_checkpoint(out / ftlib.MERGED_DIR, model, None, {"step": trainer.step, "model_config": model.cfg.to_dict(),
                                                              "tokenizer": run["tok_spec"]}, tok)
    if not args.max_new_tokens:
        return
    t1, eos = time.perf_counter(), int(ft["pad_token_id"])
    with progress_bar(2 * len(test_data), 0, "responses") as bar:
        before, after = [generate_responses(m, tok, test_data, max_new_tokens=args.max_new_tokens, eos_id=eos,
                                            progress=lambda i, n: bar.update(1)) for m in (reference, model)]
    entries = [{**e, "response_before": b["model_response"], "response_after": a["model_response"]}
               for e, b, a in zip(test_data, before, after)]
    path = write_responses(entries, Path(args.responses) if args.responses else out / ftlib.RESPONSES_FILE)
    say(f"wrote {len(entries)} test responses before/after to {path} in {time.perf_counter() - t1:.0f} s; the first:")
    for e in entries[:3]:
        say(f"  instruction: {e['instruction']!r}\n    chosen: {e['chosen']!r}\n    before: {e['response_before']!r}"
            f"\n    after:  {e['response_after']!r}")


def cmd_finetune_dpo(args: argparse.Namespace) -> int:
    from gpt.dpo import DPO_DEFAULTS, REFERENCE_DIR, preference_objective, preference_splits
    from gpt.training.metrics import METRICS_FILE, read_metrics

    run = _prepare(args, "dpo", DPO_DEFAULTS, {"beta": args.beta}, load_init=_load_dpo_init)
    model, tok, ft = run["model"], run["tokenizer"], run["ft"]
    train_data, test_data, val_data = preference_splits(run["data"], run["limit"])
    if run["resume_from"] is None:
        ft.update(trainable=None if ft["lora"] else "all", beta=args.beta if args.beta is not None else 0.1)
    reference = _dpo_reference(run, model.B)
    if run["resume_from"] is None:
        ftlib.apply_finetune_shape(model, ft, seed=run["cfg"].seed)   # LoRA wraps the policy, never the reference
    objective, notes = preference_objective(train_data, val_data, tok, reference, float(ft["beta"]),
                                            int(ft["pad_token_id"]), model.cfg.context_length)
    for note in notes:
        say(f"note: {note}")
    if run["resume_from"] is None:
        _save_reference(run, reference)
    say(f"data: {run['data']}: {len(train_data) + len(test_data) + len(val_data)} records -> {len(train_data)} "
        f"train / {len(test_data)} test / {len(val_data)} val; beta {ft['beta']:g}; reference "
        f"{run['out'] / REFERENCE_DIR}")
    t0 = time.perf_counter()
    trainer = _train(run, objective)
    if trainer.result.stopped:
        return 130
    evals = read_metrics(run["out"] / METRICS_FILE, evals_only=True)
    first, last = evals[0], evals[-1]
    say(f"done: step {trainer.step} in {time.perf_counter() - t0:.0f} s; " + "; ".join(
        f"{name.replace('_', ' ')} {first[name]:.3f} -> {last[name]:.3f}"
        for name in ("val_loss", "val_reward_margin", "val_reward_accuracy")))
    _after_dpo(args, run, trainer, reference, test_data)
    say(f"next: {PROG} chat --checkpoint {run['out'] / ftlib.MERGED_DIR if ft['lora'] else run['out']}")
    return 0


def add_finetune_command(sub: argparse._SubParsersAction) -> None:
    """Register `finetune classify|instruct|dpo` on the `tinygpt` subparsers."""
    p = sub.add_parser("finetune", help="fine-tune a pretrained GPT: classify (book ch. 6), instruct (ch. 7), dpo "
                                        "(ch. 7 bonus)",
                       description="Fine-tune a pretrained GPT (a `tinygpt train` run or a Hugging Face GPT-2 "
                                   "directory) as a spam classifier or an instruction follower, or align an "
                                   "instruction model with preferences (DPO), optionally with LoRA (--lora-rank).")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    add_classify_command(tasks)
    add_instruct_command(tasks)
    add_dpo_command(tasks)
