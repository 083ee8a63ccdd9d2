"""Instruction fine-tuning: the book's chapter 7, written once for every backend.

Each entry of the instruction data ({"instruction", "input", "output"}) becomes one training text in the Alpaca
prompt format (Taori et al. 2023), `format_input(entry)` followed by "\\n\\n### Response:\\n" and the output. The
collate function pads a batch with the end-of-text token (50256 for GPT-2), shifts the targets by one, keeps the
first end-of-text token of each target as a real target (so the model learns to stop) and replaces the rest of
the padding by -100, which cross_entropy ignores (book §7.3). `mask_instruction=True` also sets the targets of
the prompt to -100, so only the response is learned (the book's exercise 7.2).

The split is the book's: the first 85% for training, the next 10% for testing, the rest (5%) for validation,
with `int()` truncation (1,100 entries -> 935 / 110 / 55). Training reuses chapter 5's loss (gpt.pretrain), since
the task is again next-token prediction. Responses are generated greedily and cut out of the generated text as
the book does: the text after the prompt, with "### Response:" removed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

INSTRUCTION_DATA_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/"
                        "instruction-data.json")
PROMPT_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
RESPONSE_HEADER = "\n\n### Response:\n"


def format_input(entry: dict[str, str]) -> str:
    """The Alpaca prompt of an entry: header, "### Instruction:", and "### Input:" when the input is not empty."""
    instruction_text = f"{PROMPT_HEADER}\n\n### Instruction:\n{entry['instruction']}"
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_chat_prompt(question: str) -> str:
    """The prompt for a question typed at `tinygpt chat`: the same template, ending where the response starts."""
    return format_input({"instruction": question, "input": ""}) + RESPONSE_HEADER


def load_instruction_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """The entries of an instruction JSON file (a list of {"instruction", "input", "output"} objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"instruction data {str(path)!r} not found; `tinygpt download instruction-data` "
                                f"fetches it into ~/.cache/tinygpt/instruction-data.json (from {INSTRUCTION_DATA_URL})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); give a list of instruction entries") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path} must hold a non-empty JSON list of {{instruction, input, output}} entries")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "instruction" not in entry or "output" not in entry:
            raise ValueError(f"{path}: entry {i} has no 'instruction' and 'output' keys; each entry needs "
                             f"instruction, output and optionally input")
    return data


def split_instruction_data(data: Sequence[Any], train_frac: float = 0.85,
                           test_frac: float = 0.1) -> tuple[list, list, list]:
    """(train, test, validation) in file order: int(n·0.85), int(n·0.1), the rest (book §7.2)."""
    if not (0 < train_frac < 1 and 0 <= test_frac < 1 and train_frac + test_frac <= 1):
        raise ValueError(f"train_frac={train_frac} and test_frac={test_frac} must be fractions summing to at most 1")
    train_portion = int(len(data) * train_frac)
    test_portion = int(len(data) * test_frac)
    train = list(data[:train_portion])
    test = list(data[train_portion:train_portion + test_portion])
    val = list(data[train_portion + test_portion:])
    return train, test, val


class InstructionDataset:
    """Each entry encoded as prompt + response (book listing 7.4); item i is its list of token ids.

    `prompt_lengths[i]` is the number of tokens of the prompt part (format_input + the response header), which
    `mask_instruction` needs; `with_prompt_length=True` makes items (prompt_length, ids) pairs for the collate.
    """

    def __init__(self, data: Sequence[dict[str, str]], tokenizer: Any, with_prompt_length: bool = False):
        self.data = list(data)
        self.with_prompt_length = with_prompt_length
        self.encoded_texts: list[list[int]] = []
        self.prompt_lengths: list[int] = []
        for entry in self.data:
            prompt = format_input(entry) + RESPONSE_HEADER
            full_text = prompt + entry["output"]
            self.encoded_texts.append(list(tokenizer.encode(full_text)))
            # BPE may merge across the prompt/response boundary; the prompt's own encoding is the safe count
            self.prompt_lengths.append(min(len(tokenizer.encode(prompt)), len(self.encoded_texts[-1])))

    def __getitem__(self, index: int) -> Any:
        if self.with_prompt_length:
            return self.prompt_lengths[index], self.encoded_texts[index]
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def custom_collate_fn(batch: Sequence[Any], pad_token_id: int = 50256, ignore_index: int = -100,
                      allowed_max_length: int | None = None, mask_instruction: bool = False,
                      device: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad a batch of id lists into (inputs, targets), NumPy int64 (b, longest item length) each (book listing 7.5).

    Each item gets one end-of-text token, then padding to the longest item + 1; inputs drop the last position and
    targets the first. In the targets every pad after the first becomes ignore_index; with mask_instruction (items
    must then be (prompt_length, ids) pairs) the prompt's targets become ignore_index too. allowed_max_length
    truncates both. `device` is the book's argument, unused: batches stay NumPy until the model reads them.
    """
    items = list(batch)
    if not items:
        raise ValueError("custom_collate_fn got an empty batch")
    pairs = [(it[0], list(it[1])) if isinstance(it, tuple) else (None, list(it)) for it in items]
    if mask_instruction and any(n is None for n, _ in pairs):
        raise ValueError("mask_instruction=True needs (prompt_length, ids) items: build the dataset with "
                         "InstructionDataset(..., with_prompt_length=True)")
    batch_max_length = max(len(ids) + 1 for _, ids in pairs)
    inputs_lst, targets_lst = [], []
    for prompt_length, ids in pairs:
        padded = np.full(batch_max_length, pad_token_id, dtype=np.int64)
        padded[:len(ids)] = ids
        inputs = padded[:-1].copy()
        targets = padded[1:].copy()
        # the first pad target is the end-of-text the model must learn to emit; later ones are padding
        pad_positions = np.flatnonzero(targets == pad_token_id)
        if len(pad_positions) > 1:
            targets[pad_positions[1:]] = ignore_index
        if mask_instruction:
            targets[:max(prompt_length - 1, 0)] = ignore_index   # target j is token j + 1: prompt tokens 1..n-1
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return np.stack(inputs_lst), np.stack(targets_lst)


class CollatedDataset:
    """A dataset whose batches are `collate([dataset[i] for i in indices])`: lets gpt.data.DataLoader (seeded,
    resumable) batch variable-length items, the role of the book's DataLoader(collate_fn=...)."""

    def __init__(self, dataset: Any, collate: Callable[[list], tuple[np.ndarray, np.ndarray]]):
        self.dataset, self.collate = dataset, collate

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.collate([self.dataset[int(i)] for i in indices])


def extract_response(generated_text: str, input_text: str) -> str:
    """The response part of a generation: the text after the prompt with "### Response:" removed (book §7.6)."""
    return generated_text[len(input_text):].replace("### Response:", "").strip()


def generate_response(model: Any, tokenizer: Any, entry: dict[str, str], max_new_tokens: int = 256,
                      eos_id: int | None = 50256, **sampling: Any) -> str:
    """Greedy (or sampled) response of the model to one entry, cut out as the book does."""
    from gpt.generate import generate, text_to_token_ids, token_ids_to_text

    input_text = format_input(entry)
    context_size = int(model.pos_emb.weight.shape[0])
    ids = text_to_token_ids(input_text, tokenizer)
    if ids.shape[1] >= context_size:     # keep the end of an over-long prompt: it holds the instruction's end
        ids = ids[:, -(context_size - 1):]
    with model.B.no_grad():
        token_ids = generate(model, ids, max_new_tokens=max_new_tokens, context_size=context_size, eos_id=eos_id,
                             **sampling)
    generated_text = token_ids_to_text(token_ids, tokenizer)
    return extract_response(generated_text, token_ids_to_text(ids, tokenizer))


def generate_responses(model: Any, tokenizer: Any, data: Sequence[dict[str, str]], max_new_tokens: int = 256,
                       eos_id: int | None = 50256, progress: Callable[[int, int], None] | None = None,
                       **sampling: Any) -> list[dict[str, str]]:
    """Copies of the entries with a "model_response" key (book §7.7's test-set responses)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i, entry in enumerate(data):
            out.append({**entry, "model_response": generate_response(model, tokenizer, entry, max_new_tokens,
                                                                     eos_id, **sampling)})
            if progress is not None:
                progress(i + 1, len(data))
    finally:
        model.train(was_training)
    return out


def write_responses(entries: Sequence[dict[str, str]], path: str | os.PathLike) -> Path:
    """Write entries with their responses as indented JSON (the book's instruction-data-with-response.json)."""
    path = Path(path)
    path.write_text(json.dumps(list(entries), indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


__all__ = ["INSTRUCTION_DATA_URL", "format_input", "format_chat_prompt", "load_instruction_data",
           "split_instruction_data", "InstructionDataset", "custom_collate_fn", "CollatedDataset",
           "extract_response", "generate_response", "generate_responses", "write_responses"]
