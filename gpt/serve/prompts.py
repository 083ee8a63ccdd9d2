"""Chat messages -> the text prompt a model was trained on, and token ids -> streamed text with stop strings.

Our instruction-tuned runs learned the book's Alpaca prompt (ch. 7, gpt/instruct.py): each user turn becomes
`format_chat_prompt(question)` (header, "### Instruction:", the question, "### Response:"), each assistant turn
its answer after it, turns separated by a blank line as the training texts are, and a system message, when given,
replaces the Alpaca header line. A text format registers its renderer in CHAT_FORMATS. A model family with a chat
format of its own (Qwen3's ChatML, Llama 3's headers: gpt/chat_format.py, as `tinygpt chat` uses them) is built as
token ids instead, its special tokens by id, and its answer ends at the format's end-of-turn ids.
"""
from __future__ import annotations

import codecs
from typing import Any, Callable, Sequence

from gpt.chat_format import CHAT_STYLES, answer_stop_ids, chat_prompt_ids
from gpt.instruct import PROMPT_HEADER, format_chat_prompt


def render_alpaca(messages: Sequence[dict[str, str]]) -> str:
    """The book's Alpaca prompt for a conversation that ends with a user message."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    parts = []
    for m in messages:
        if m["role"] == "user":
            prompt = format_chat_prompt(m["content"])
            parts.append(prompt.replace(PROMPT_HEADER, system, 1) if system else prompt)
        elif m["role"] == "assistant":
            parts.append(m["content"] + "\n\n")
    return "".join(parts)


CHAT_FORMATS: dict[str, Callable[[Sequence[dict[str, str]]], str]] = {"alpaca": render_alpaca}
FAMILY_FORMATS = frozenset(CHAT_STYLES.values())   # "chatml", "llama3": prompts built as ids (gpt/chat_format.py)


def chat_format(state: dict[str, Any], style: str | None = None, tok: Any = None) -> str:
    """The name of a loaded model's chat format: `style` (gpt.chat_format.model_chat_style: the family's own) when
    given and `tok`, if given, has its special tokens; else its checkpoint's `chat_format`; else Alpaca's."""
    if style is not None:
        if style not in FAMILY_FORMATS:
            raise ValueError(f"unknown chat style {style!r}; known styles are {sorted(FAMILY_FORMATS)}")
        try:
            if tok is not None:
                chat_prompt_ids(tok, [{"role": "user", "content": ""}], style)
            return style
        except ValueError:   # a tokenizer without the format's special tokens (a `train --arch qwen3` BPE)
            pass
    name = state.get("chat_format") or "alpaca"
    if name not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {name!r}; known formats are {sorted(CHAT_FORMATS)}")
    return name


def _check_turns(messages: Sequence[dict[str, str]]) -> None:
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("the last message must have role 'user': the model answers the user")


def render_chat(messages: Sequence[dict[str, str]], fmt: str = "alpaca") -> str:
    """The prompt for `messages` (dicts with role and content) in chat format `fmt`; the last must be the user's."""
    _check_turns(messages)
    return CHAT_FORMATS[fmt](messages)


def chat_prompt(tok: Any, messages: Sequence[dict[str, str]], fmt: str = "alpaca") -> list[int]:
    """Token ids of the prompt for `messages` in chat format `fmt`: a family format as `tinygpt chat` builds it
    (chat_prompt_ids), a text format rendered and encoded as `tinygpt generate` encodes a prompt."""
    if fmt in FAMILY_FORMATS:
        _check_turns(messages)
        return chat_prompt_ids(tok, messages, fmt)
    return encode_prompt(tok, render_chat(messages, fmt))


def chat_stop_ids(tok: Any, fmt: str) -> list[int]:
    """The ids that end an answer in chat format `fmt`: a family format's end-of-turn ids and the tokenizer's eos
    (as `tinygpt chat`); [] for a text format, whose answers end at the model's end of text as completions do."""
    return answer_stop_ids(tok, fmt) if fmt in FAMILY_FORMATS else []


def encode_prompt(tok: Any, text: str) -> list[int]:
    """Token ids of `text` as `tinygpt generate` encodes a prompt (`<|endoftext|>` allowed where the tokenizer has it)."""
    try:
        return list(tok.encode(text, allowed_special={"<|endoftext|>"}))
    except TypeError:   # a tokenizer without special-token options
        return list(tok.encode(text))


class TextStream:
    """Token ids -> text deltas: UTF-8 characters split across tokens are held until whole (as `tinygpt
    generate` writes them), and text is cut before the first stop string, held back while one may be starting."""

    def __init__(self, tok: Any, stop: Sequence[str] = ()):
        self.tok, self.stop = tok, [s for s in stop if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""          # decoded text not yet released: it may be the start of a stop string
        self.stopped = False

    def _bytes(self, token: int) -> bytes:
        decode_bytes = getattr(self.tok, "decode_bytes", None)
        return decode_bytes([token]) if decode_bytes else self.tok.decode([token]).encode("utf-8")

    def push(self, token: int) -> str:
        """The text that may be sent after one more token ('' while held); sets `stopped` at a stop string."""
        return self._release(self.held + self.decoder.decode(self._bytes(token)))

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._release(self.held + self.decoder.decode(b"", final=True), final=True)

    def _release(self, text: str, final: bool = False) -> str:
        if self.stopped:
            return ""
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped, self.held = True, ""
            return text[:min(hits)]
        keep = 0 if final else max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])),
                                   default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]


__all__ = ["render_alpaca", "CHAT_FORMATS", "FAMILY_FORMATS", "chat_format", "render_chat", "chat_prompt",
           "chat_stop_ids", "encode_prompt", "TextStream"]
