"""Chat messages -> the text prompt a model was trained on, and token ids -> streamed text with stop strings.

Our instruction-tuned runs learned the book's Alpaca prompt (ch. 7, gpt/instruct.py): each user turn becomes
`format_chat_prompt(question)` (header, "### Instruction:", the question, "### Response:"), each assistant turn
its answer after it, turns separated by a blank line as the training texts are, and a system message, when given,
replaces the Alpaca header line. A model directory with its own chat format registers a renderer in CHAT_FORMATS.
"""
from __future__ import annotations

import codecs
from typing import Any, Callable, Sequence

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


def chat_format(state: dict[str, Any]) -> str:
    """The name of a loaded model's chat format: its checkpoint's `chat_format`, else the book's Alpaca prompt."""
    name = state.get("chat_format") or "alpaca"
    if name not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {name!r}; known formats are {sorted(CHAT_FORMATS)}")
    return name


def render_chat(messages: Sequence[dict[str, str]], fmt: str = "alpaca") -> str:
    """The prompt for `messages` (dicts with role and content) in chat format `fmt`; the last must be the user's."""
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("the last message must have role 'user': the model answers the user")
    return CHAT_FORMATS[fmt](messages)


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


__all__ = ["render_alpaca", "CHAT_FORMATS", "chat_format", "render_chat", "encode_prompt", "TextStream"]
