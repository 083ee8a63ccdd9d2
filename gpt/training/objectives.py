"""What a training run optimises: one small class per task over the one loop in gpt/training/trainer.py.

An objective says which batches to train on (`setup` builds a seeded, resumable gpt.data.DataLoader over its
training set), how a batch becomes a loss (`loss`), what an evaluation measures (`evaluate`, run by the trainer in
eval mode without a graph) and what else a checkpoint must remember (`state`). Everything that does not vary
between tasks (schedule, clipping, accumulation, evaluation cadence, checkpoints, exact resume, Ctrl-C, metrics,
progress) lives once, in the Trainer. The three here are the book's: next-token prediction (ch. 5), spam
classification from the last position (ch. 6) and instruction following on collated prompts (ch. 7).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gpt.data import DataLoader, GPTDatasetV1
from gpt.pretrain import calc_loss_batch, calc_loss_loader, generate_and_print_sample


def fixed_batches(dataset: Any, batch_size: int, n_batches: int | None = None) -> list[Any]:
    """The first `n_batches` batches of a dataset in order (all when None; the last may be short)."""
    n = len(dataset)
    stop = n if n_batches is None else min(n, batch_size * n_batches)
    return [dataset.get_batch(np.arange(i, min(i + batch_size, stop))) for i in range(0, stop, batch_size)]


class Objective:
    """The part of a training run that varies by task. Subclasses set `train_set` and `val_set` (datasets with
    `__len__` and `get_batch(indices)`) and implement `loss` and `evaluate`."""

    task = "objective"
    unit = "examples"                 # what one training example is called in messages
    small_hint = "lower --batch-size or give more data"
    train_set: Any
    val_set: Any

    def setup(self, cfg: Any, shard: Callable[[Any], Any] = lambda d: d) -> DataLoader:
        """The training loader (this process's shard of the training set) and the fixed evaluation batches."""
        train = shard(self.train_set)
        if len(train) < cfg.batch_size:
            raise ValueError(f"the training split has {len(train)} {self.unit}, fewer than --batch-size "
                             f"{cfg.batch_size}; {self.small_hint}")
        self.cfg = cfg
        self.eval_sets = {"train": fixed_batches(train, cfg.batch_size, cfg.eval_iters),
                          "val": fixed_batches(self.val_set, cfg.batch_size, cfg.eval_iters)}
        return DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)

    def loss(self, model: Any, batch: Any) -> Any:
        """The batch's scalar loss as a backend tensor with a graph."""
        raise NotImplementedError

    def evaluate(self, model: Any) -> dict[str, Any]:
        """Metrics on the fixed evaluation batches: at least train_loss and val_loss."""
        return {f"{split}_loss": calc_loss_loader(batches, model) for split, batches in self.eval_sets.items()}

    def count(self, batch: Any) -> tuple[int, int]:
        """(examples, tokens) in a batch, for the examples_seen / tokens_seen counters."""
        shape = np.shape(batch[0])
        return int(shape[0]), int(np.prod(shape))

    def state(self) -> dict[str, Any]:
        """What a checkpoint records for this objective (merged into state.json)."""
        return {}


class LanguageModeling(Objective):
    """Next-token prediction on non-overlapping windows of a token stream (book ch. 5), with a sample per evaluation.

    train_ids/val_ids: id arrays (windows of context_length + 1 are cut here, copied into RAM as int64), or
    datasets with get_batch such as gpt.training.shards.ShardDataset (read from disk as batches ask for them).
    """

    task = "pretrain"
    unit = "windows"

    def __init__(self, train_ids: Any, val_ids: Any, context_length: int, tokenizer: Any = None):
        self.context_length, self.tokenizer = context_length, tokenizer
        self.small_hint = "lower --batch-size or --context-length, or give more data"
        self.train_set = _windows(train_ids, context_length, "training split")
        self.val_set = _windows(val_ids, context_length, "validation split")

    def loss(self, model: Any, batch: Any) -> Any:
        inputs, targets = batch
        return calc_loss_batch(inputs, targets, model)

    def evaluate(self, model: Any) -> dict[str, Any]:
        record = super().evaluate(model)
        c = self.cfg
        if self.tokenizer is not None and c.sample_tokens:
            # a fixed seed, so samples compare across evaluations and never disturb the training stream
            record["sample"] = generate_and_print_sample(model, self.tokenizer, None, c.sample_prompt,
                                                         c.sample_tokens, temperature=c.sample_temperature,
                                                         top_k=c.sample_top_k, seed=c.seed)
        return record


def _windows(ids: Any, context_length: int, what: str) -> Any:
    if hasattr(ids, "get_batch"):
        return ids
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < context_length + 1:
        raise ValueError(f"the {what} has {len(ids)} tokens, fewer than context_length + 1 = {context_length + 1}; "
                         f"lower --context-length or give more data")
    return GPTDatasetV1(ids, None, context_length, context_length)


class Classification(Objective):
    """Cross-entropy of a class head on the last (or last non-pad) position (book ch. 6), with accuracies."""

    task = "classify"
    unit = "messages"
    small_hint = "lower --batch-size or raise --limit"

    def __init__(self, train_set: Any, val_set: Any, pad_token_id: int | None = None):
        self.train_set, self.val_set, self.pad_token_id = train_set, val_set, pad_token_id

    def setup(self, cfg: Any, shard: Callable[[Any], Any] = lambda d: d) -> DataLoader:
        loader = super().setup(cfg, shard)
        from gpt.classify import eval_batches

        # the book evaluates on whole loaders in order; eval_iters batches of each per estimate
        self.eval_sets = {"train": eval_batches(self.train_set, cfg.batch_size),
                          "val": eval_batches(self.val_set, cfg.batch_size)}
        return loader

    def loss(self, model: Any, batch: Any) -> Any:
        from gpt.classify import calc_loss_batch_classifier

        inputs, targets = batch
        return calc_loss_batch_classifier(inputs, targets, model, pad_token_id=self.pad_token_id)

    def evaluate(self, model: Any) -> dict[str, Any]:
        from gpt.classify import calc_accuracy_loader, calc_loss_loader_classifier

        n, pad, record = self.cfg.eval_iters, self.pad_token_id, {}
        for split, batches in self.eval_sets.items():
            record[f"{split}_loss"] = calc_loss_loader_classifier(batches, model, num_batches=n, pad_token_id=pad)
        for split, batches in self.eval_sets.items():
            record[f"{split}_acc"] = calc_accuracy_loader(batches, model, num_batches=n, pad_token_id=pad)
        return record


class InstructionTuning(Objective):
    """Next-token loss on Alpaca-formatted, collated instruction/response pairs (book ch. 7): the batches come from
    gpt.instruct.CollatedDataset, whose targets are already shifted, padded with -100 and optionally masked."""

    task = "instruct"
    unit = "entries"
    small_hint = "lower --batch-size or raise --limit"

    def __init__(self, train_set: Any, val_set: Any):
        self.train_set, self.val_set = train_set, val_set

    def loss(self, model: Any, batch: Any) -> Any:
        inputs, targets = batch
        return calc_loss_batch(inputs, targets, model)


class MaskedLM(Objective):
    """BERT's masked-language-model objective (Devlin et al. 2019, §3.1): [CLS] window [SEP] inputs with 15% of
    the tokens chosen and replaced 80/10/10 (gpt/mlm.py), cross-entropy at the chosen positions only, and the
    share of them predicted exactly (`*_mlm_acc`) at each evaluation.

    The masks are drawn from (seed, the batch's sample indices), so a resumed run sees the same ones and the
    evaluation batches are masked the same way at every evaluation (their losses compare across steps).
    """

    task = "mlm"
    unit = "windows"

    def __init__(self, train_ids: Any, val_ids: Any, context_length: int, special: Any, vocab_size: int,
                 masking: Any = None):
        from gpt.mlm import MaskedLMDataset, MaskingConfig

        self.special, self.masking = special, masking or MaskingConfig()
        self.small_hint = "lower --batch-size or --context-length, or give more data"
        self.train_set, self.val_set = (MaskedLMDataset(ids, context_length, special, vocab_size,
                                                        masking=self.masking, what=what)
                                        for ids, what in ((train_ids, "training split"),
                                                          (val_ids, "validation split")))

    def setup(self, cfg: Any, shard: Callable[[Any], Any] = lambda d: d) -> DataLoader:
        self.train_set.seed, self.val_set.seed = cfg.seed, cfg.seed + 1  # the masks follow the run's seed
        return super().setup(cfg, shard)

    def loss(self, model: Any, batch: Any) -> Any:
        from gpt.mlm import mlm_loss

        inputs, labels, attention_mask = batch
        return mlm_loss(model, inputs, labels, attention_mask)

    def evaluate(self, model: Any) -> dict[str, Any]:
        from gpt.mlm import mlm_logits

        record: dict[str, Any] = {}
        for split, batches in self.eval_sets.items():
            total, correct, n = 0.0, 0, 0
            for inputs, labels, attention_mask in batches:
                logits, targets = mlm_logits(model, inputs, labels, attention_mask)
                loss = model.B.F.cross_entropy(logits, model.B.tensor(targets))
                total += float(model.B.to_numpy(loss)) * len(targets)  # weighted: batches differ in labels
                correct += int((model.B.to_numpy(logits).argmax(-1) == targets).sum())
                n += len(targets)
            record[f"{split}_loss"] = total / n if n else float("nan")
            record[f"{split}_mlm_acc"] = correct / n if n else float("nan")
        return record

    def count(self, batch: Any) -> tuple[int, int]:
        return int(np.shape(batch[0])[0]), int(np.sum(batch[2]))  # real (unpadded) tokens

    def state(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"arch": "bert", "mlm": {"special_ids": self.special.to_dict(), "masking": asdict(self.masking)}}


__all__ = ["Objective", "LanguageModeling", "Classification", "InstructionTuning", "MaskedLM", "fixed_batches"]
