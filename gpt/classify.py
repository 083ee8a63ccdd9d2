"""Fine-tuning a GPT as a text classifier: the book's chapter 6 (SMS spam), written once for every backend.

The recipe (Raschka, *Build a Large Language Model (From Scratch)*, ch. 6): read the SMS Spam Collection
(`label<TAB>text` lines, ham/spam), balance it by drawing as many ham messages as there are spam ones (747 + 747 =
1,494), shuffle and split 70/10/20 with the book's `int()` truncation (1,045 / 149 / 300), pad every message with
token 50256 (GPT-2's <|endoftext|>) to the longest one, replace the vocabulary head by a 2-class Linear, freeze all
but the last transformer block, the final LayerNorm and the head, and train on the logits of the LAST position.

Why the last position: with causal attention only the last token has attended to every other token. With right
padding that position is usually a pad token, which the book accepts (the model learns to read the message
through the pads); `pad_token_id` on the loss/accuracy functions selects the last non-pad token instead.

The book draws the balanced ham sample and the shuffle with pandas (`sample(..., random_state=123)`); here both
come from `np.random.default_rng(seed)`, so the rows differ from the book's but the sizes are the same.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from backends.base import Backend
from .nn import Linear, to_numpy_any

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
LABELS = {"ham": 0, "spam": 1}               # the book's label map
CLASS_NAMES = ("not spam", "spam")           # classify_review's answers, by class index

Row = tuple[str, int]                         # (text, label)


# ---- data -------------------------------------------------------------------------------------------------------

SMS_SPAM_MEMBER = "SMSSpamCollection"         # the tab-separated file inside the UCI zip


def extract_sms_spam(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write the SMSSpamCollection file of the UCI zip at `zip_path` to `dest` (atomically: temporary file, rename)."""
    import tempfile
    import zipfile

    dest = Path(dest)
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = [n for n in z.namelist() if Path(n).name == SMS_SPAM_MEMBER]
            if not names:
                raise ValueError(f"{zip_path} holds no {SMS_SPAM_MEMBER} file (it has {z.namelist()[:5]}); is it "
                                 f"the zip from {SMS_SPAM_URL}?")
            data = z.read(names[0])
    except zipfile.BadZipFile as e:
        raise ValueError(f"{zip_path} is not a zip file ({e}); delete it and download {SMS_SPAM_URL} again") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def read_sms_spam(path: str | os.PathLike) -> list[Row]:
    """The SMS Spam Collection as (text, label) rows, label 0 = ham, 1 = spam, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMS spam file {str(path)!r} not found; `tinygpt download sms-spam` fetches it "
                                f"into ~/.cache/tinygpt/sms-spam/SMSSpamCollection (from {SMS_SPAM_URL})")
    rows: list[Row] = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            label, sep, text = line.partition("\t")
            if not sep or label not in LABELS:
                raise ValueError(f"{path}:{n}: expected 'ham<TAB>text' or 'spam<TAB>text', got {line[:60]!r}; "
                                 f"give the SMSSpamCollection file of the UCI archive")
            rows.append((text, LABELS[label]))
    if not rows:
        raise ValueError(f"{path} holds no messages")
    return rows


def create_balanced_dataset(rows: Sequence[Row], seed: int = 123) -> list[Row]:
    """As many ham rows (drawn without replacement) as there are spam rows, then all spam rows (book §6.2)."""
    ham = [r for r in rows if r[1] == 0]
    spam = [r for r in rows if r[1] == 1]
    if not spam or len(ham) < len(spam):
        raise ValueError(f"cannot balance {len(ham)} ham and {len(spam)} spam rows: need at least one spam row "
                         f"and at least as many ham rows")
    pick = np.random.default_rng(seed).choice(len(ham), size=len(spam), replace=False)
    return [ham[i] for i in pick] + spam


def random_split(rows: Sequence[Any], train_frac: float = 0.7, validation_frac: float = 0.1,
                 seed: int = 123) -> tuple[list, list, list]:
    """Shuffle, then cut at int(n·train_frac) and that + int(n·validation_frac); the rest is the test set."""
    if not (0 < train_frac < 1 and 0 <= validation_frac < 1 and train_frac + validation_frac <= 1):
        raise ValueError(f"train_frac={train_frac} and validation_frac={validation_frac} must be fractions "
                         f"summing to at most 1 (the book uses 0.7 and 0.1)")
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    train_end = int(len(shuffled) * train_frac)
    validation_end = train_end + int(len(shuffled) * validation_frac)
    return shuffled[:train_end], shuffled[train_end:validation_end], shuffled[validation_end:]


def write_split_csv(rows: Sequence[Row], path: str | os.PathLike) -> Path:
    """Write rows as the book's CSV files (train.csv, ...): a `Label,Text` header, label 0/1."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Label", "Text"])
        w.writerows([(label, text) for text, label in rows])
    return path


def read_split_csv(path: str | os.PathLike) -> list[Row]:
    """Rows of a CSV written by write_split_csv (or the book's pandas to_csv with columns Label, Text)."""
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["Text"], int(r["Label"])) for r in csv.DictReader(f)]


def end_of_text_id(tokenizer: Any) -> int:
    """The tokenizer's <|endoftext|> id (50256 for GPT-2), used as the pad token; ValueError if it has none."""
    try:
        return int(tokenizer.eot_token)
    except (AttributeError, KeyError):
        raise ValueError(f"the tokenizer {getattr(tokenizer, 'name', type(tokenizer).__name__)!r} has no "
                         f"<|endoftext|> token, which fine-tuning pads with; use GPT-2's tokenizer or one trained "
                         f"with special_tokens=['<|endoftext|>']") from None


class SpamDataset:
    """Token ids of each message padded with `pad_token_id` to one length, and its label (book listing 6.4).

    rows: (text, label) pairs, or the path of a CSV written by write_split_csv. max_length None: the longest
    message; otherwise longer messages are truncated to max_length.
    """

    def __init__(self, rows: Sequence[Row] | str | os.PathLike, tokenizer: Any, max_length: int | None = None,
                 pad_token_id: int = 50256):
        if isinstance(rows, (str, os.PathLike)):
            rows = read_split_csv(rows)
        if len(rows) == 0:
            raise ValueError("SpamDataset got no rows")
        self.labels = np.asarray([int(label) for _, label in rows], dtype=np.int64)
        self.encoded_texts = [list(tokenizer.encode(text)) for text, _ in rows]
        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            if max_length < 1:
                raise ValueError(f"max_length={max_length} must be >= 1")
            self.max_length = int(max_length)
            self.encoded_texts = [ids[:self.max_length] for ids in self.encoded_texts]
        self.pad_token_id = int(pad_token_id)
        self.inputs = np.full((len(rows), self.max_length), self.pad_token_id, dtype=np.int64)
        for i, ids in enumerate(self.encoded_texts):
            self.inputs[i, :len(ids)] = ids

    def _longest_encoded_length(self) -> int:
        return max(len(ids) for ids in self.encoded_texts)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        return self.inputs[index].copy(), self.labels[index]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (b, max_length), labels (b,)) int64 for gpt.data.DataLoader."""
        return self.inputs[indices], self.labels[indices]


def eval_batches(dataset: Any, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The whole dataset in order as batches (the last may be short): the book's shuffle=False, drop_last=False."""
    n = len(dataset)
    return [dataset.get_batch(np.arange(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


# ---- the model --------------------------------------------------------------------------------------------------

def replace_head(model: Any, num_classes: int = 2, seed: int = 123) -> Any:
    """Swap the vocabulary head for a seeded Linear(emb_dim, num_classes) with bias (torch.nn.Linear's default)."""
    if hasattr(model, "replace_head"):  # an encoder (gpt/bert.py): a head on its pooled [CLS]
        return model.replace_head(num_classes, seed)
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be >= 2")
    emb_dim = model.out_head.in_features
    model.out_head = Linear(model.B, emb_dim, int(num_classes), bias=True, rng=np.random.default_rng(seed))
    return model


TRAINABLE_CHOICES = ("last-block", "all", "head")


def set_trainable(model: Any, trainable: str = "last-block") -> Any:
    """Freeze the model, then unfreeze: the head ("head"); + last block and final norm ("last-block", the book's);
    or everything ("all"). Frozen parameters keep requires_grad False and stay in state_dict."""
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable={trainable!r} is not one of {list(TRAINABLE_CHOICES)}")
    for p in model.parameters():
        p.requires_grad = trainable == "all"
    if hasattr(model, "trainable_parts"):  # an encoder names its own head and last block
        parts = model.trainable_parts(trainable)
    else:
        parts = {"head": [model.out_head], "last-block": [model.trf_blocks[-1], model.final_norm, model.out_head],
                 "all": []}[trainable]
    for part in parts:
        for p in part.parameters():
            p.requires_grad = True
    return model


def _pool(logits: Any, input_batch: Any, pad_token_id: int | None, B: Backend) -> Any:
    """(b, num_classes) logits of the last position, or of the last non-pad token when pad_token_id is given."""
    if pad_token_id is None:
        return logits[:, -1, :]
    ids = to_numpy_any(input_batch) if hasattr(input_batch, "shape") else np.asarray(input_batch)
    is_tok = ids != pad_token_id
    # right padding: the last real token sits just before the first pad; an all-pad row uses position 0
    last = np.where(is_tok.any(axis=1), ids.shape[1] - 1 - np.argmax(is_tok[:, ::-1], axis=1), 0)
    return logits[B.tensor(np.arange(ids.shape[0])), B.tensor(last)]


def classifier_logits(model: Any, input_batch: Any, pad_token_id: int | None = None) -> Any:
    """The class logits (b, num_classes) of a batch: the last position's (book) or the last non-pad token's; an
    encoder's (gpt/bert.py) from its pooled [CLS]."""
    if hasattr(model, "classify"):
        return model.classify(input_batch)
    return _pool(model(input_batch), input_batch, pad_token_id, model.B)


def calc_loss_batch_classifier(input_batch: Any, target_batch: Any, model: Any, device: Any = None,
                               pad_token_id: int | None = None) -> Any:
    """Cross-entropy of the class logits against the labels (book §6.6's calc_loss_batch); a scalar with a graph."""
    B = model.B
    return B.F.cross_entropy(classifier_logits(model, input_batch, pad_token_id), B.tensor(target_batch))


def _limit(data_loader: Iterable, num_batches: int | None) -> int | None:
    try:
        n = len(data_loader)
    except TypeError:
        return num_batches
    return n if num_batches is None else min(num_batches, n)


def calc_loss_loader_classifier(data_loader: Iterable, model: Any, device: Any = None, num_batches: int | None = None,
                                pad_token_id: int | None = None) -> float:
    """Mean classification loss over the first num_batches batches (all when None); NaN for an empty loader."""
    limit, total, count = _limit(data_loader, num_batches), 0.0, 0
    if limit == 0:
        return float("nan")
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if limit is not None and i >= limit:
            break
        total += float(calc_loss_batch_classifier(input_batch, target_batch, model, device, pad_token_id).item())
        count += 1
    return total / count if count else float("nan")


def calc_accuracy_loader(data_loader: Iterable, model: Any, device: Any = None, num_batches: int | None = None,
                         pad_token_id: int | None = None) -> float:
    """Fraction of correctly classified examples in the first num_batches batches (book listing 6.8).

    Runs in eval mode without a graph and restores the model's mode afterwards.
    """
    was_training = model.training
    model.eval()
    limit, correct, seen = _limit(data_loader, num_batches), 0, 0
    try:
        with model.B.no_grad():
            for i, (input_batch, target_batch) in enumerate(data_loader):
                if limit is not None and i >= limit:
                    break
                logits = model.B.to_numpy(classifier_logits(model, input_batch, pad_token_id))
                labels = to_numpy_any(target_batch) if hasattr(target_batch, "shape") else np.asarray(target_batch)
                correct += int((logits.argmax(axis=-1) == labels).sum())
                seen += len(labels)
    finally:
        model.train(was_training)
    return correct / seen if seen else float("nan")


def evaluate_model_classifier(model: Any, train_loader: Iterable, val_loader: Iterable, device: Any = None,
                              eval_iter: int | None = None, pad_token_id: int | None = None) -> tuple[float, float]:
    """Training and validation classification loss over eval_iter batches each, in eval mode, no graph."""
    was_training = model.training
    model.eval()
    try:
        with model.B.no_grad():
            train_loss = calc_loss_loader_classifier(train_loader, model, device, eval_iter, pad_token_id)
            val_loss = calc_loss_loader_classifier(val_loader, model, device, eval_iter, pad_token_id)
    finally:
        model.train(was_training)
    return train_loss, val_loss


def train_classifier_simple(model: Any, train_loader: Iterable, val_loader: Iterable, optimizer: Any, device: Any,
                            num_epochs: int, eval_freq: int, eval_iter: int,
                            log: Callable[[str], None] | None = None, pad_token_id: int | None = None
                            ) -> tuple[list[float], list[float], list[float], list[float], int]:
    """The book's listing 6.10: epochs of optimizer steps, losses every eval_freq steps, accuracies every epoch.

    Returns (train_losses, val_losses, train_accs, val_accs, examples_seen); the book's lines go to `log`.
    """
    train_losses: list[float] = []
    val_losses: list[float] = []
    train_accs: list[float] = []
    val_accs: list[float] = []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch_classifier(input_batch, target_batch, model, device, pad_token_id)
            loss.backward()
            optimizer.step()
            examples_seen += int(np.shape(input_batch)[0])
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model_classifier(model, train_loader, val_loader, device, eval_iter,
                                                                 pad_token_id)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                if log:
                    log(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, "
                        f"Val loss {val_loss:.3f}")
        train_accuracy = calc_accuracy_loader(train_loader, model, device, eval_iter, pad_token_id)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, eval_iter, pad_token_id)
        if log:
            log(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def class_probabilities(text: str, model: Any, tokenizer: Any, max_length: int | None = None,
                        pad_token_id: int = 50256, pool_pad: bool = False) -> np.ndarray:
    """Softmax over the classes for one message, encoded as in training: ids truncated to min(max_length, context
    length) and right-padded to max_length; pooled from the last position (the book) or, with pool_pad, from the
    last non-pad token."""
    was_training = model.training
    model.eval()
    input_ids = list(tokenizer.encode(text))
    supported = int(model.cfg.context_length)
    input_ids = input_ids[:supported if max_length is None else min(max_length, supported)]
    if max_length is not None:
        input_ids += [pad_token_id] * (max_length - len(input_ids))
    if not input_ids:
        input_ids = [pad_token_id]
    try:
        with model.B.no_grad():
            ids = np.asarray([input_ids], dtype=np.int64)
            logits = model.B.to_numpy(classifier_logits(model, ids, pad_token_id if pool_pad else None))[0]
    finally:
        model.train(was_training)
    logits = logits.astype(np.float64) - logits.max()
    return np.exp(logits) / np.exp(logits).sum()


def classify_review(text: str, model: Any, tokenizer: Any, device: Any = None, max_length: int | None = None,
                    pad_token_id: int = 50256) -> str:
    """"spam" or "not spam" for one message (book listing 6.12); `device` is the book's, unused."""
    probs = class_probabilities(text, model, tokenizer, max_length, pad_token_id)
    return CLASS_NAMES[1] if int(probs.argmax()) == 1 else CLASS_NAMES[0]


def majority_baseline(labels: Sequence[int]) -> float:
    """Accuracy of always answering the most frequent label (0.5 on the balanced spam data)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    return float(counts.max() / counts.sum()) if counts.sum() else float("nan")


__all__ = ["SMS_SPAM_URL", "extract_sms_spam", "read_sms_spam", "create_balanced_dataset", "random_split", "write_split_csv",
           "read_split_csv", "end_of_text_id", "SpamDataset", "eval_batches", "replace_head", "set_trainable",
           "TRAINABLE_CHOICES", "classifier_logits", "calc_loss_batch_classifier", "calc_loss_loader_classifier",
           "calc_accuracy_loader", "evaluate_model_classifier", "train_classifier_simple", "classify_review",
           "class_probabilities",
           "majority_baseline"]
