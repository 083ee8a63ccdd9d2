"""Pretraining on unlabeled data, the book's chapter 5 functions, written once for every backend.

`calc_loss_batch`, `calc_loss_loader`, `evaluate_model`, `generate_and_print_sample`, `train_model_simple` and
`plot_losses` keep the book's names and arguments (Raschka, *Build a Large Language Model (From Scratch)*, §5.1-5.2);
the engine comes from `model.B`, so the same code trains a numpy, cupy or torch model. The book's `device`
argument is accepted and unused: a backend already knows its device. Library code does not print:
`generate_and_print_sample` returns the text, and `train_model_simple` hands its progress lines to `log`.
The full trainer (warmup, cosine decay, clipping, checkpoints) is gpt/training/trainer.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np


def calc_loss_batch(input_batch: Any, target_batch: Any, model: Any, device: Any = None) -> Any:
    """Mean cross-entropy of the model's next-token predictions on one batch (a scalar tensor with a graph)."""
    B = model.B
    logits = model(input_batch)                                    # (b, t, vocab)
    targets = B.tensor(target_batch)                               # ndarray or any tensor -> (b, t) int64
    return B.F.cross_entropy(logits.flatten(0, 1), targets.flatten())   # (b*t, vocab) against (b*t,)


def calc_loss_loader(data_loader: Iterable, model: Any, device: Any = None, num_batches: int | None = None) -> float:
    """Average loss over the first `num_batches` batches of a loader (all of them when None); NaN if it is empty."""
    try:
        n_available = len(data_loader)
    except TypeError:
        n_available = None
    if n_available == 0:
        return float("nan")
    limit = num_batches if n_available is None or num_batches is None else min(num_batches, n_available)
    total, count = 0.0, 0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if limit is not None and i >= limit:
            break
        total += float(calc_loss_batch(input_batch, target_batch, model, device).item())
        count += 1
    return total / count if count else float("nan")


def evaluate_model(model: Any, train_loader: Iterable, val_loader: Iterable, device: Any = None,
                   eval_iter: int | None = None) -> tuple[float, float]:
    """Training and validation loss over `eval_iter` batches each, in eval mode (no dropout) and without a graph."""
    model.eval()
    try:
        with model.B.no_grad():
            train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
            val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    finally:
        model.train()
    return train_loss, val_loss


def generate_and_print_sample(model: Any, tokenizer: Any, device: Any = None, start_context: str = "Every effort",
                              max_new_tokens: int = 50, **sampling: Any) -> str:
    """Continue `start_context` with `max_new_tokens` tokens (greedy unless sampling options are given).

    Keeps the book's name; returns the text on one line instead of printing it.
    """
    from gpt.generate import generate, text_to_token_ids, token_ids_to_text

    context_size = model.pos_emb.weight.shape[0]
    was_training = model.training
    model.eval()
    try:
        with model.B.no_grad():
            ids = generate(model, text_to_token_ids(start_context, tokenizer), max_new_tokens=max_new_tokens,
                           context_size=context_size, **sampling)
    finally:
        model.train(was_training)
    return token_ids_to_text(ids, tokenizer).replace("\n", " ")


def train_model_simple(model: Any, train_loader: Iterable, val_loader: Iterable, optimizer: Any, device: Any,
                       num_epochs: int, eval_freq: int, eval_iter: int, start_context: str, tokenizer: Any,
                       log: Callable[[str], None] | None = None) -> tuple[list[float], list[float], list[int]]:
    """The book's training loop (listing 5.3): epochs of AdamW steps, evaluating every `eval_freq` steps.

    Returns (train_losses, val_losses, track_tokens_seen); the book's printed lines go to `log` when given.
    """
    train_losses: list[float] = []
    val_losses: list[float] = []
    track_tokens_seen: list[int] = []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += int(np.prod(np.shape(input_batch)))
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                if log:
                    log(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, "
                        f"Val loss {val_loss:.3f}")
        sample = generate_and_print_sample(model, tokenizer, device, start_context)
        if log:
            log(sample)
    return train_losses, val_losses, track_tokens_seen


def plot_losses(epochs_seen: Sequence[float], tokens_seen: Sequence[int], train_losses: Sequence[float],
                val_losses: Sequence[float], path: str | Path = "loss-plot.png") -> Path:
    """Plot training and validation loss against epochs (bottom axis) and tokens seen (top axis); save a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed, safe in threads and on servers
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plotting the losses needs matplotlib: pip install "tinygpt[plot]" '
                          '(or pass --no-plot)') from None
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_losses, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()                       # a second x-axis sharing the y-axis: tokens seen
    ax2.plot(tokens_seen, train_losses, alpha=0)
    ax2.set_xlabel("Tokens seen")
    # counts such as 716800 at the default density run into each other: few ticks, engineering units ("700k")
    from matplotlib.ticker import EngFormatter, MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax2.xaxis.set_major_formatter(EngFormatter(sep=""))
    finite = [v for v in list(train_losses) + list(val_losses) if math.isfinite(v)]
    if finite:
        ax1.set_ylim(min(finite) * 0.95, max(finite) * 1.05)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
