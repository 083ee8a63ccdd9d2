"""Direct Preference Optimization: the book's chapter 7 bonus (ch07/04_preference-tuning-with-dpo), every backend.

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model") tunes
a policy πθ on pairs (x, y_w, y_l) of a prompt with a preferred ("chosen") and a dispreferred ("rejected") answer,
against a frozen reference πref (the starting weights). Eq. 7 of the paper:

    L_DPO = −E[ log σ( β·(log πθ(y_w|x) − log πref(y_w|x)) − β·(log πθ(y_l|x) − log πref(y_l|x)) ) ]

As in the book's code, log π(y|x) is the *mean* log-probability of the response tokens (prompt and padding masked,
`compute_logprobs`), not the paper's sum, and the loss is the batch mean. The "rewards" returned with the loss are
the book's: batch means of the detached log-ratios log πθ(y|x) − log πref(y|x); the paper's implicit reward
r(x, y) = β·log(πθ(y|x) / πref(y|x)) (its eq. 5, up to the partition term) is β times those.

Data: the book's preference records {"instruction", "input", "chosen", "rejected"} (instruction-data-with-
preference.json), its 85/10/5 train/test/validation split (gpt.instruct.split_instruction_data) and the Alpaca
prompt (gpt.instruct.format_input). Everything is written with tensor methods (PyTorch's names), so the same code
runs on numpy, cupy and torch tensors; batches stay NumPy until the model reads them. `DPOObjective` makes DPO one
more objective of the one training loop (gpt/training/trainer.py), with the book's recipe as `DPO_DEFAULTS`.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from gpt.instruct import RESPONSE_HEADER, format_input, split_instruction_data
from gpt.nn import to_numpy_any
from gpt.training.config import TrainConfig
from gpt.training.objectives import Objective

PREFERENCE_DATA_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
                       "04_preference-tuning-with-dpo/instruction-data-with-preference.json")
REFERENCE_DIR = "reference"     # where `finetune dpo` keeps the frozen starting weights inside its run directory


def log_sigmoid(x: Any) -> Any:
    """log σ(x) = min(x, 0) − log1p(e^(−|x|)), stable for any x (the exponent is never positive).

    min(x, 0) is (x − |x|) / 2, exact in floating point; tensor methods only, so every backend's tensors work.
    """
    magnitude = x.abs()
    return 0.5 * (x - magnitude) - (-magnitude).exp().log1p()


def compute_dpo_loss(model_chosen_logprobs: Any, model_rejected_logprobs: Any, reference_chosen_logprobs: Any,
                     reference_rejected_logprobs: Any, beta: float = 0.1) -> tuple[Any, Any, Any]:
    """(loss, chosen_rewards, rejected_rewards) of eq. 7 for (batch,) log-prob tensors (book's name and return).

    loss = mean −log σ(β·((π_c − ref_c) − (π_r − ref_r))); the rewards are batch means of the detached log-ratios
    π − ref (multiply by beta for the paper's implicit reward).
    """
    model_logratios = model_chosen_logprobs - model_rejected_logprobs
    reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs
    losses = -log_sigmoid(beta * (model_logratios - reference_logratios))
    chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
    rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def compute_logprobs(logits: Any, labels: Any, selection_mask: Any = None) -> Any:
    """Per-sequence mean log-probability (batch,) of `labels` (b, t) under `logits` (b, t, vocab), the book's.

    Position j predicts token j + 1, so labels and mask are shifted by one; with a selection mask (b, t) of the
    tokens that count (the response: prompt and padding False) the mean runs over those tokens only.
    """
    labels = to_numpy_any(labels).astype(np.int64)[:, 1:]
    logits = logits[:, :-1, :]                                          # (b, t-1, vocab)
    # log p(label) = logit_label − log Σ_v e^logit_v, the sum shifted by the row max (a constant: no gradient)
    shift = logits.detach().amax(dim=-1, keepdim=True)                  # (b, t-1, 1)
    log_norm = (logits - shift).exp().sum(dim=-1).log() + shift.squeeze(-1)   # (b, t-1)
    rows, cols = np.meshgrid(np.arange(labels.shape[0]), np.arange(labels.shape[1]), indexing="ij")
    selected = logits[rows, cols, labels] - log_norm                    # (b, t-1)
    if selection_mask is None:
        return selected.mean(dim=-1)
    mask = logits.new_tensor(to_numpy_any(selection_mask)[:, 1:].astype(np.float64))   # (b, t-1) of 0/1
    return (selected * mask).sum(dim=-1) / mask.sum(dim=-1)


# ---- data -----------------------------------------------------------------------------------------------------

def load_preference_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """The records of a preference JSON file: a list of {"instruction", "input", "chosen", "rejected"} objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference data {str(path)!r} not found; download {PREFERENCE_DATA_URL}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); give a list of preference records") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path} must hold a non-empty JSON list of {{instruction, input, chosen, rejected}} "
                         f"records")
    for i, entry in enumerate(data):
        missing = [k for k in ("instruction", "chosen", "rejected") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"{path}: record {i} has no {', '.join(repr(k) for k in missing)}; each record needs "
                             f"instruction, chosen, rejected and optionally input")
    return data


class PreferenceDataset:
    """Each record encoded as prompt + chosen and prompt + rejected (the book's PreferenceDataset).

    Item i is {"prompt_length", "chosen", "rejected"}: the token count of the prompt (format_input and the
    response header) and the two full id lists.
    """

    def __init__(self, data: Sequence[dict[str, str]], tokenizer: Any):
        self.data = list(data)
        self.items: list[dict[str, Any]] = []
        for entry in self.data:
            prompt = format_input(entry) + RESPONSE_HEADER
            chosen = list(tokenizer.encode(prompt + entry["chosen"]))
            rejected = list(tokenizer.encode(prompt + entry["rejected"]))
            # BPE may merge across the prompt/response boundary; the prompt's own encoding is the safe count
            n = min(len(tokenizer.encode(prompt)), len(chosen), len(rejected))
            self.items.append({"prompt_length": n, "chosen": chosen, "rejected": rejected})

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)


def dpo_collate_fn(batch: Sequence[dict[str, Any]], pad_token_id: int = 50256, allowed_max_length: int | None = None,
                   mask_prompt_tokens: bool = True) -> dict[str, np.ndarray]:
    """Pad a batch of preference items to one length: {"chosen", "rejected"} int64 (b, L) and their bool masks.

    L is the longest chosen or rejected sequence + 1 (the book's common length); a mask is True on the response
    tokens (False on padding and, with mask_prompt_tokens, on the prompt). allowed_max_length truncates all four.
    """
    items = list(batch)
    if not items:
        raise ValueError("dpo_collate_fn got an empty batch")
    length = max(len(it[key]) + 1 for it in items for key in ("chosen", "rejected"))
    out: dict[str, list] = {"chosen": [], "rejected": [], "chosen_mask": [], "rejected_mask": []}
    for it in items:
        for key in ("chosen", "rejected"):
            ids = np.full(length, pad_token_id, dtype=np.int64)
            ids[:len(it[key])] = it[key]
            mask = np.zeros(length, dtype=bool)
            mask[:len(it[key])] = True
            if mask_prompt_tokens:
                mask[:it["prompt_length"]] = False
            out[key].append(ids)
            out[f"{key}_mask"].append(mask)
    return {k: np.stack(v)[:, :allowed_max_length] for k, v in out.items()}


# ---- models and losses ------------------------------------------------------------------------------------------

def make_reference_model(model: Any) -> Any:
    """A frozen copy of `model` (DPO's πref): the same weights in new tensors, no gradients, eval mode."""
    reference = copy.deepcopy(model, memo={id(model.B): model.B})   # one backend object, shared
    for p in reference.parameters():
        p.requires_grad = False
    reference.eval()
    return reference


def _sequence_logprobs(model: Any, batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """(chosen, rejected) per-sequence response log-probs (batch,) of one model."""
    return tuple(compute_logprobs(model(batch[key]), batch[key], batch[f"{key}_mask"])
                 for key in ("chosen", "rejected"))


def batch_logprobs(batch: dict[str, np.ndarray], policy_model: Any, reference_model: Any) -> tuple[Any, ...]:
    """(policy chosen, policy rejected, reference chosen, reference rejected) log-probs; the reference without a
    graph."""
    policy = _sequence_logprobs(policy_model, batch)
    with reference_model.B.no_grad():
        reference = _sequence_logprobs(reference_model, batch)
    return policy + reference


def compute_dpo_loss_batch(batch: dict[str, np.ndarray], policy_model: Any, reference_model: Any,
                           beta: float = 0.1) -> tuple[Any, Any, Any]:
    """compute_dpo_loss on one collated batch (the book's name): (loss with a graph, chosen, rejected rewards)."""
    return compute_dpo_loss(*batch_logprobs(batch, policy_model, reference_model), beta=beta)


def dpo_metrics(batches: Iterable[dict[str, np.ndarray]], policy_model: Any, reference_model: Any,
                beta: float = 0.1, num_batches: int | None = None) -> dict[str, float]:
    """Means over the first num_batches batches: loss, chosen and rejected rewards, their margin, and the reward
    accuracy (the fraction of pairs whose chosen reward beats the rejected one). Call under no_grad."""
    sums = {"loss": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0, "reward_accuracy": 0.0}
    count = 0
    for i, batch in enumerate(batches):
        if num_batches is not None and i >= num_batches:
            break
        pc, pr, rc, rr = batch_logprobs(batch, policy_model, reference_model)
        loss, chosen, rejected = compute_dpo_loss(pc, pr, rc, rr, beta=beta)
        sums["loss"] += float(loss.item())
        sums["chosen_reward"] += float(chosen.item())
        sums["rejected_reward"] += float(rejected.item())
        margins = to_numpy_any((pc - rc) - (pr - rr))
        sums["reward_accuracy"] += float(np.mean(margins > 0))
        count += 1
    if not count:
        return {k: float("nan") for k in (*sums, "reward_margin")}
    means = {k: v / count for k, v in sums.items()}
    means["reward_margin"] = means["chosen_reward"] - means["rejected_reward"]
    return means


def compute_dpo_loss_loader(data_loader: Iterable[dict[str, np.ndarray]], policy_model: Any, reference_model: Any,
                            beta: float = 0.1, num_batches: int | None = None) -> tuple[float, float, float]:
    """(mean loss, chosen reward, rejected reward) over a loader's first num_batches batches (the book's name)."""
    m = dpo_metrics(data_loader, policy_model, reference_model, beta, num_batches)
    return m["loss"], m["chosen_reward"], m["rejected_reward"]


# ---- the objective of the one training loop ---------------------------------------------------------------------

# The book's DPO recipe: AdamW lr 5e-6, weight decay 0.01, batch 8, one epoch, a constant rate, evaluation every
# 5 steps on 5 batches; beta 0.1 is DPOObjective's default.
DPO_DEFAULTS = TrainConfig(max_steps=None, epochs=1, batch_size=8, lr=5e-6, min_lr=None, warmup_steps=0,
                           weight_decay=0.01, beta2=0.999, grad_clip=0.0, eval_interval=5, eval_iters=5,
                           sample_tokens=0)


class DPOObjective(Objective):
    """Eq. 7 on collated preference pairs against a frozen reference model (book ch. 7 bonus); each evaluation
    reports, for the train and validation batches, the loss, the chosen and rejected rewards, their margin and
    the reward accuracy (train_loss, val_loss, train_chosen_reward, ..., val_reward_accuracy)."""

    task = "dpo"
    unit = "pairs"
    small_hint = "lower --batch-size or raise --limit"

    def __init__(self, train_set: Any, val_set: Any, reference_model: Any, beta: float = 0.1):
        if not (isinstance(beta, (int, float)) and beta > 0 and np.isfinite(beta)):
            raise ValueError(f"beta={beta!r} must be a positive number (the book's is 0.1)")
        self.train_set, self.val_set = train_set, val_set
        self.reference, self.beta = reference_model, float(beta)

    def loss(self, model: Any, batch: dict[str, np.ndarray]) -> Any:
        return compute_dpo_loss_batch(batch, model, self.reference, self.beta)[0]

    def evaluate(self, model: Any) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for split, batches in self.eval_sets.items():
            metrics = dpo_metrics(batches, model, self.reference, self.beta, self.cfg.eval_iters)
            record.update({f"{split}_{name}": value for name, value in metrics.items()})
        return record

    def count(self, batch: dict[str, np.ndarray]) -> tuple[int, int]:
        return int(batch["chosen"].shape[0]), int(batch["chosen"].size + batch["rejected"].size)

    def state(self) -> dict[str, Any]:
        return {"dpo": {"beta": self.beta}}


def preference_objective(train: Sequence[dict], val: Sequence[dict], tokenizer: Any, reference_model: Any,
                         beta: float, pad_token_id: int, context_length: int) -> tuple[DPOObjective, list[str]]:
    """The DPOObjective on collated Alpaca-prompted pairs, and notes about records left out: a prompt that fills the
    context leaves no response token to score (its mean log-prob would be 0/0)."""
    from functools import partial

    from gpt.instruct import CollatedDataset

    collate = partial(dpo_collate_fn, pad_token_id=pad_token_id, allowed_max_length=context_length)
    notes, sets = [], []
    for name, entries in (("train", train), ("val", val)):
        dataset = PreferenceDataset(entries, tokenizer)
        keep = [i for i, it in enumerate(dataset.items)
                if it["prompt_length"] < min(len(it["chosen"]), len(it["rejected"]), context_length)]
        if len(keep) < len(entries):
            notes.append(f"{len(entries) - len(keep)} {name} records leave no response token within the context "
                         f"length {context_length}; they are left out")
        if not keep:
            raise ValueError(f"every {name} prompt fills the context length {context_length}; use a model with a "
                             f"longer context")
        dataset.data, dataset.items = [dataset.data[i] for i in keep], [dataset.items[i] for i in keep]
        sets.append(CollatedDataset(dataset, collate))
    return DPOObjective(sets[0], sets[1], reference_model, beta), notes


def preference_splits(path: str | os.PathLike, limit: int | None = None) -> tuple[list, list, list]:
    """The preference records of a file split as the book does, (train 85%, test 10%, validation 5%), optionally
    of its first `limit` records only."""
    data = load_preference_data(path)[:limit]
    splits = split_instruction_data(data)
    if min(len(s) for s in splits) == 0:
        raise ValueError(f"--limit {limit} leaves an empty split ({'/'.join(str(len(s)) for s in splits)} "
                         f"train/test/val); give --limit 20 or more")
    return splits


__all__ = ["PREFERENCE_DATA_URL", "REFERENCE_DIR", "DPO_DEFAULTS", "DPOObjective", "preference_objective",
           "preference_splits", "log_sigmoid", "compute_dpo_loss", "compute_logprobs", "load_preference_data",
           "PreferenceDataset", "dpo_collate_fn", "make_reference_model", "batch_logprobs", "compute_dpo_loss_batch",
           "dpo_metrics", "compute_dpo_loss_loader"]
