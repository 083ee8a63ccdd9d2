"""Fine-tuning data (book ch. 6 and 7): the collate function on the book's worked example, instruction masking and
truncation, the Alpaca prompt, the book's split sizes on the real files, SpamDataset padding, the pad token."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import require_data

from gpt.classify import (SpamDataset, create_balanced_dataset, end_of_text_id, majority_baseline, random_split,
                          read_sms_spam, read_split_csv, write_split_csv)
from gpt.instruct import (CollatedDataset, InstructionDataset, custom_collate_fn, extract_response,
                          format_chat_prompt, format_input, load_instruction_data, split_instruction_data)


def test_collate_reproduces_the_books_worked_example():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256],
                                           [7, 8, 9, 50256, 50256]])
    np.testing.assert_array_equal(targets, [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100],
                                            [8, 9, 50256, -100, -100]])
    assert inputs.dtype == np.int64 and targets.dtype == np.int64


def test_collate_truncates_and_masks_the_instruction():
    batch = [(3, [0, 1, 2, 3, 4]), (2, [5, 6]), (1, [7, 8, 9])]
    inputs, targets = custom_collate_fn(batch, pad_token_id=99, mask_instruction=True)
    # item 0: prompt tokens 0,1,2 -> targets of positions 0,1 (tokens 1, 2) are masked; the response 3, 4 stays
    np.testing.assert_array_equal(targets, [[-100, -100, 3, 4, 99], [-100, 99, -100, -100, -100],
                                            [8, 9, 99, -100, -100]])
    np.testing.assert_array_equal(inputs[1], [5, 6, 99, 99, 99])
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6]], allowed_max_length=3)
    assert inputs.shape == targets.shape == (2, 3)
    np.testing.assert_array_equal(targets, [[1, 2, 3], [6, 50256, -100]])
    with pytest.raises(ValueError, match="with_prompt_length"):
        custom_collate_fn([[0, 1]], mask_instruction=True)


class ByteTok:
    """A stand-in tokenizer: one id per byte, <|endoftext|> = 256."""

    eot_token = 256

    def encode(self, text, **_):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def test_format_input_is_the_books_alpaca_prompt():
    header = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
              "request.\n\n### Instruction:\n")
    assert format_input({"instruction": "Do X.", "input": "abc", "output": "y"}) == header + \
        "Do X.\n\n### Input:\nabc"
    assert format_input({"instruction": "Do X.", "input": "", "output": "y"}) == header + "Do X."
    assert format_chat_prompt("Hi?") == header + "Hi?\n\n### Response:\n"
    assert extract_response("PROMPT\n\n### Response:\n  answer ", "PROMPT") == "answer"


def test_instruction_dataset_and_masked_batches():
    entry = {"instruction": "Add.", "input": "1+1", "output": "2"}
    ds = InstructionDataset([entry], ByteTok(), with_prompt_length=True)
    n_prompt, ids = ds[0]
    text = format_input(entry) + "\n\n### Response:\n2"
    assert ids == list(text.encode()) and n_prompt == len(text) - 1
    x, y = CollatedDataset(ds, lambda b: custom_collate_fn(b, pad_token_id=256, mask_instruction=True)).get_batch(
        np.array([0]))
    assert list(y[0][y[0] != -100]) == [ord("2"), 256]


def test_instruction_split_has_the_books_sizes():
    data = load_instruction_data(require_data("instruction-data.json"))
    train, test, val = split_instruction_data(data)
    assert (len(data), len(train), len(test), len(val)) == (1100, 935, 110, 55)
    assert train[0] == data[0] and test[0] == data[935] and val[-1] == data[-1]


def test_spam_split_has_the_books_sizes(tmp_path):
    rows = read_sms_spam(require_data("sms-spam/SMSSpamCollection"))
    assert len(rows) == 5574 and sum(label for _, label in rows) == 747
    balanced = create_balanced_dataset(rows, seed=123)
    assert len(balanced) == 1494 and sum(label for _, label in balanced) == 747
    assert majority_baseline([label for _, label in balanced]) == 0.5
    train, val, test = random_split(balanced, 0.7, 0.1, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    assert sorted(train + val + test) == sorted(balanced)
    assert random_split(balanced, 0.7, 0.1, seed=123)[0] == train          # seeded
    assert read_split_csv(write_split_csv(train, tmp_path / "train.csv")) == train


def test_spam_dataset_pads_to_the_longest_or_truncates():
    rows = [("abc", 0), ("hello there", 1)]
    ds = SpamDataset(rows, ByteTok(), pad_token_id=256)
    assert ds.max_length == 11
    x, y = ds[0]
    np.testing.assert_array_equal(x, list(b"abc") + [256] * 8)
    assert y == 0
    xb, yb = ds.get_batch(np.array([1, 0]))
    assert xb.shape == (2, 11) and list(yb) == [1, 0]
    short = SpamDataset(rows, ByteTok(), max_length=4, pad_token_id=256)
    np.testing.assert_array_equal(short.get_batch(np.array([0, 1]))[0], [list(b"abc") + [256], list(b"hell")])


def test_bad_data_files_and_tokenizers_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("maybe\tsome text\n")
    with pytest.raises(ValueError, match="ham<TAB>text"):
        read_sms_spam(bad)
    with pytest.raises(FileNotFoundError, match="SMSSpamCollection"):
        read_sms_spam(tmp_path / "missing")
    (tmp_path / "bad.json").write_text('[{"question": "x"}]')
    with pytest.raises(ValueError, match="instruction"):
        load_instruction_data(tmp_path / "bad.json")

    class NoEot:
        name = "plain"

    with pytest.raises(ValueError, match="endoftext"):
        end_of_text_id(NoEot())
    with pytest.raises(ValueError, match="balance"):
        create_balanced_dataset([("a", 1), ("b", 1)])
