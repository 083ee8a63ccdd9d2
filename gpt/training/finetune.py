"""Fine-tuning as the book's chapters 6 and 7 and appendix E do it, on the one training loop: the recipes (two
TrainConfig defaults), the data of each task turned into its Objective, and the model shapes a fine-tuned checkpoint
is rebuilt with.

A fine-tuned checkpoint is a trainer checkpoint whose state.json also holds "finetune": {"task": "classify" |
"instruct", "num_classes", "lora": {"rank", "alpha"} | null, "trainable", "pool", "max_length", "pad_token_id",
"config"}, which `load_finetuned` reads to rebuild the model's shape (2-class head, LoRA wrappers) before loading
the weights. An instruction run without LoRA is a plain GPT checkpoint (`tinygpt generate` reads it); with LoRA
the run also writes DIR/merged/, the LoRA-merged plain model (`tinygpt convert --to-hf` exports it as GPT-2).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends.base import Backend
from gpt.training.config import TrainConfig
from gpt.training.objectives import Classification, InstructionTuning

RESULTS_FILE = "results.json"
RESPONSES_FILE = "test-responses.json"
MERGED_DIR = "merged"

# The book's recipes: AdamW lr 5e-5, weight decay 0.1, batch 8, a constant rate, no clipping, PyTorch's default
# betas; 5 epochs for spam (eval_freq 50), 2 for instructions (eval_freq 5).
CLASSIFY_DEFAULTS = TrainConfig(max_steps=None, epochs=5, batch_size=8, lr=5e-5, min_lr=None, warmup_steps=0,
                                weight_decay=0.1, beta2=0.999, grad_clip=0.0, eval_interval=50, eval_iters=5,
                                sample_tokens=0)
INSTRUCT_DEFAULTS = CLASSIFY_DEFAULTS.replace(epochs=2, eval_interval=5)


def apply_finetune_shape(model: Any, ft: dict, seed: int) -> Any:
    """Give a GPTModel the shape a fine-tuning run trains: the class head, the trainable set, LoRA wrappers."""
    from gpt.classify import replace_head, set_trainable
    from gpt.lora import replace_linear_with_lora

    if ft["task"] == "classify":
        replace_head(model, int(ft["num_classes"]), seed=seed)
    lora = ft.get("lora")
    if lora:
        # book appendix E: freeze the whole model (new head included), then only the LoRA matrices train
        replace_linear_with_lora(model, int(lora["rank"]), float(lora["alpha"]), rng=np.random.default_rng(seed))
    else:
        set_trainable(model, ft.get("trainable") or "all")
    return model


def load_finetuned(path: str | Path, backend: Backend, merge: bool = False) -> tuple[Any, Any, dict]:
    """(model, tokenizer, state) of a fine-tuned checkpoint, a plain tinygpt checkpoint or a Hugging Face dir.

    merge: fold LoRA into the weights (for inference). The model is in eval mode.
    """
    from gpt.lora import merge_lora
    from gpt.training.checkpoint import build_model, checkpoint_tokenizer, find_checkpoint, load_model, read_checkpoint

    path = Path(path)
    try:
        ckpt_dir = find_checkpoint(path)
    except FileNotFoundError:
        ckpt_dir = None
    if ckpt_dir is None:
        return load_model(path, backend)        # a Hugging Face GPT-2 directory, or the loader's own error
    ckpt = read_checkpoint(ckpt_dir, with_optimizer=False)
    ft = ckpt.state.get("finetune")
    if not ft:
        return load_model(ckpt_dir, backend)
    try:
        model = build_model(ckpt, backend, finetune=lambda m: apply_finetune_shape(m, ft, seed=0))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{ckpt.path} does not fit its own fine-tuning description ({e})") from None
    if merge and ft.get("lora"):
        merge_lora(model)
    model.eval()
    return model, checkpoint_tokenizer(ckpt), ckpt.state


def load_init(path: str, B: Backend) -> tuple[Any, Any, dict]:
    """The model to fine-tune (a pretraining checkpoint/run dir or a Hugging Face GPT-2 dir) and its tokenizer."""
    from gpt.training.encoder import is_masked_lm, load_masked_lm
    from gpt.training.checkpoint import load_model

    if is_masked_lm(path):  # an encoder: a `train --arch bert` run or a Hugging Face BERT directory
        model, tok, _, state = load_masked_lm(path, B)
    else:
        model, tok, state = load_model(path, B)
    if state.get("finetune"):
        raise ValueError(f"--init {path} is already a fine-tuned model ({state['finetune']['task']}); start from "
                         f"a pretrained checkpoint, or pass --resume to continue that run")
    model.train()
    return model, tok, state



def model_class(ft: dict) -> Any:
    """The model class a fine-tuning description was trained on: BertModel for "arch": "bert", else GPTModel."""
    if ft.get("arch") == "bert":
        from gpt.bert import BertModel

        return BertModel
    from gpt.model import GPTModel

    return GPTModel


def classify_tokenizer(tokenizer: Any, ft: dict) -> Any:
    """The tokenizer the classification data is encoded with: an encoder's inputs are [CLS] text [SEP]."""
    if ft.get("arch") != "bert":
        return tokenizer
    from gpt.mlm import BertInputs, SpecialIds

    return BertInputs(tokenizer, SpecialIds(**ft["special_ids"]))


def lora_spec(rank: int | None, alpha: float | None) -> dict | None:
    """The "lora" entry of a fine-tuning description: None without a rank; alpha defaults to the rank (the book)."""
    if rank is None:
        if alpha is not None:
            raise ValueError("--lora-alpha needs --lora-rank (e.g. --lora-rank 16 --lora-alpha 16)")
        return None
    return {"rank": rank, "alpha": alpha if alpha is not None else rank}


def describe_trainable(model: Any) -> str:
    """'N of M parameters trainable (P%)'."""
    total, trainable = model.num_parameters(), model.num_parameters(trainable_only=True)
    return f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / max(total, 1):.2f}%)"


def _check_splits(sizes: tuple[int, ...], names: str, limit: int | None, need: int) -> None:
    if min(sizes) == 0:
        raise ValueError(f"--limit {limit} leaves an empty split ({'/'.join(map(str, sizes))} {names}); give "
                         f"--limit {need} or more")


# ---- spam classification (book ch. 6) ---------------------------------------------------------------------------

def spam_splits(path: str | Path, seed: int, limit: int | None) -> tuple[list, list, list]:
    """The book's balanced SMS spam data split 70/10/20 (train/val/test), optionally a seeded subset of `limit`."""
    from gpt.classify import create_balanced_dataset, random_split, read_sms_spam

    rows = create_balanced_dataset(read_sms_spam(path), seed=seed)
    if limit is not None:
        keep = np.random.default_rng([seed, 1]).permutation(len(rows))[:limit]
        rows = [rows[i] for i in sorted(keep)]
    splits = random_split(rows, 0.7, 0.1, seed=seed)
    _check_splits(tuple(len(s) for s in splits), "train/val/test", limit, 30)
    return splits


def choose_max_length(train_rows: list, tokenizer: Any, pad: int, requested: int | None,
                      context_length: int) -> tuple[int, str | None]:
    """The padded message length: --max-length, else the longest training message; capped at the context (with
    a note saying so)."""
    from gpt.classify import SpamDataset

    max_length = requested or SpamDataset(train_rows, tokenizer, None, pad).max_length
    if max_length <= context_length:
        return max_length, None
    what = "--max-length" if requested else "the longest training message"
    return context_length, (f"{what} is {max_length} tokens, more than the model's context length; messages are "
                            f"truncated to {context_length} tokens")


def classification_objective(splits: tuple[list, list, list], tokenizer: Any, ft: dict) -> Classification:
    """The Classification objective over the train/val splits; its `test_set` is kept for the final accuracies."""
    from gpt.classify import SpamDataset

    max_length, pad = int(ft["max_length"]), int(ft["pad_token_id"])
    tokenizer = classify_tokenizer(tokenizer, ft)
    train, val, test = (SpamDataset(rows, tokenizer, max_length, pad) for rows in splits)
    objective = Classification(train, val, pad if ft["pool"] == "last-non-pad" else None)
    objective.test_set = test
    return objective


def classification_results(model: Any, objective: Classification, batch_size: int) -> dict[str, Any]:
    """Accuracy on the whole train/val/test splits next to the majority-class baseline of each."""
    from gpt.classify import calc_accuracy_loader, eval_batches, majority_baseline

    sets = {"train": objective.train_set, "val": objective.val_set, "test": objective.test_set}
    accs = {name: calc_accuracy_loader(eval_batches(ds, batch_size), model, pad_token_id=objective.pad_token_id)
            for name, ds in sets.items()}
    labels = objective.train_set.labels
    majority = int(np.bincount(labels, minlength=2).argmax())
    return {"accuracy": accs, "majority_baseline": {n: float(np.mean(ds.labels == majority)) for n, ds in sets.items()},
            "majority_class": majority, "balanced_baseline": majority_baseline(labels),
            "sizes": {n: len(ds) for n, ds in sets.items()}}


# ---- instructions (book ch. 7) -------------------------------------------------------------------------------------

def instruction_splits(path: str | Path, limit: int | None) -> tuple[list, list, list]:
    """The book's instruction data split 85/10/5 as (train, test, val), optionally its first `limit` entries."""
    from gpt.instruct import load_instruction_data, split_instruction_data

    data = load_instruction_data(path)
    if limit is not None:
        data = data[:limit]
    splits = split_instruction_data(data)
    _check_splits(tuple(len(s) for s in splits), "train/test/val", limit, 20)
    return splits


def _collated(entries: list, tokenizer: Any, collate: Callable, masked: bool, context_length: int, name: str,
              notes: list[str]) -> Any:
    from gpt.instruct import CollatedDataset, InstructionDataset

    dataset = InstructionDataset(entries, tokenizer, with_prompt_length=masked)
    if masked:
        # a prompt that fills the whole context leaves no response target: its loss would be 0/0
        keep = [e for e, n in zip(entries, dataset.prompt_lengths) if n - 1 < context_length]
        if len(keep) < len(entries):
            notes.append(f"{len(entries) - len(keep)} {name} entries have prompts of {context_length}+ tokens, so "
                         f"--mask-instruction leaves them nothing to learn; they are left out")
        if not keep:
            raise ValueError(f"every {name} prompt is longer than the context length {context_length}; drop "
                             f"--mask-instruction or use a model with a longer context")
        dataset = InstructionDataset(keep, tokenizer, with_prompt_length=True)
    return CollatedDataset(dataset, collate)


def instruction_objective(train: list, val: list, tokenizer: Any, ft: dict, context_length: int
                          ) -> tuple[InstructionTuning, list[str]]:
    """The InstructionTuning objective on collated Alpaca prompts, and notes about entries left out."""
    from gpt.instruct import custom_collate_fn

    masked, notes = bool(ft.get("mask_instruction")), []
    collate = partial(custom_collate_fn, pad_token_id=int(ft["pad_token_id"]), allowed_max_length=context_length,
                      mask_instruction=masked)
    sets = [_collated(entries, tokenizer, collate, masked, context_length, name, notes)
            for name, entries in (("train", train), ("val", val))]
    return InstructionTuning(*sets), notes


__all__ = ["CLASSIFY_DEFAULTS", "INSTRUCT_DEFAULTS", "apply_finetune_shape", "load_finetuned", "load_init",
           "lora_spec", "describe_trainable", "spam_splits", "choose_max_length", "classification_objective",
           "classification_results", "instruction_splits", "instruction_objective", "RESULTS_FILE",
           "RESPONSES_FILE", "MERGED_DIR"]
