"""The chat prompt formats of the model families, as token ids: ChatML for Qwen3 and Llama 3's header format.

ChatML (Qwen's chat_template in Qwen/Qwen3-0.6B tokenizer_config.json): each turn is
`<|im_start|>{role}\\n{text}<|im_end|>\\n`, and the prompt ends `<|im_start|>assistant\\n`; Qwen3's template with
enable_thinking=False (a direct answer, no reasoning trace) follows that with an empty `<think>\\n\\n</think>\\n\\n`.
Llama 3 (Meta's "Llama 3 model card, prompt format"): `<|begin_of_text|>`, then per turn
`<|start_header_id|>{role}<|end_header_id|>\\n\\n{text}<|eot_id|>`, and the prompt ends with the assistant's
header. Special tokens are looked up by name in the model's own tokenizer, so user text that merely spells one is
never read as a control token; the answer ends at the format's end-of-turn token.
"""
from __future__ import annotations

from typing import Any, Sequence

# arch -> (special tokens, how to spell a conversation); see the module docstring
CHAT_STYLES = {"qwen3": "chatml", "llama": "llama3"}
_STOPS = {"chatml": ("<|im_end|>", "<|endoftext|>"), "llama3": ("<|eot_id|>", "<|end_of_text|>")}


def chat_style(arch: str) -> str:
    """The chat format of a model family; ValueError for one without a chat format."""
    if arch not in CHAT_STYLES:
        raise ValueError(f"a {arch} model has no chat format of its own; chat with a Llama 3 or Qwen3 directory, "
                         f"or a `finetune instruct` model")
    return CHAT_STYLES[arch]


def _lookup(tok: Any, text: str) -> int | None:
    """The id of special token `text` in `tok` (tokenizer.json's added tokens, or our BPE's special_tokens)."""
    return tok.token_to_id(text) if hasattr(tok, "token_to_id") else getattr(tok, "special_tokens", {}).get(text)


def _special(tok: Any, text: str) -> int:
    """The id of special token `text` in `tok`; ValueError naming it when the tokenizer lacks it."""
    i = _lookup(tok, text)
    if i is None:
        raise ValueError(f"the tokenizer has no {text!r} token, which this chat format needs; use the model's "
                         f"own tokenizer.json")
    return int(i)


def chat_prompt_ids(tok: Any, messages: Sequence[dict[str, str]], style: str) -> list[int]:
    """Token ids of a conversation ([{"role": "user" | "assistant" | "system", "content": ...}, ...]) ending
    where the assistant's next answer starts."""
    text = tok.encode_ordinary
    ids: list[int] = []
    if style == "chatml":
        start, end, nl = _special(tok, "<|im_start|>"), _special(tok, "<|im_end|>"), text("\n")
        for m in messages:
            ids += [start, *text(f"{m['role']}\n{m['content']}"), end, *nl]
        ids += [start, *text("assistant\n")]
        return ids + [_special(tok, "<think>"), *text("\n\n"), _special(tok, "</think>"), *text("\n\n")]
    if style == "llama3":
        head, head_end, eot = (_special(tok, t) for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
        ids.append(_special(tok, "<|begin_of_text|>"))
        for m in messages:
            ids += [head, *text(m["role"]), head_end, *text("\n\n" + m["content"]), eot]
        return ids + [head, *text("assistant"), head_end, *text("\n\n")]
    raise ValueError(f"unknown chat style {style!r}; choose one of {sorted(_STOPS)}")


def stop_ids(tok: Any, style: str) -> list[int]:
    """The token ids that end an answer in this format (those the tokenizer has)."""
    found = [_lookup(tok, t) for t in _STOPS[style]]
    return [int(i) for i in found if i is not None]


def answer_stop_ids(tok: Any, style: str) -> list[int]:
    """stop_ids plus the tokenizer's own eos (tokenizer_config.json's eos_token) when it is another token: where
    `tinygpt chat` and `tinygpt serve` end a family model's answer."""
    stops = stop_ids(tok, style)
    eos = getattr(tok, "eos_token_id", None)
    return stops + [int(eos)] if eos is not None and int(eos) not in stops else stops


def model_chat_style(model: Any, state: dict[str, Any]) -> str | None:
    """The chat format a loaded model answers in: its family's (Llama 3, Qwen3) unless it was fine-tuned (a
    `finetune instruct` model keeps the Alpaca prompt it learned); None for the book's Alpaca prompt."""
    if (state.get("finetune") or {}).get("task"):
        return None
    return CHAT_STYLES.get(getattr(model.cfg, "arch", "gpt2"))


__all__ = ["CHAT_STYLES", "chat_style", "chat_prompt_ids", "stop_ids", "answer_stop_ids", "model_chat_style"]
