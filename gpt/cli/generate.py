"""Using a model: `tinygpt generate` (continue a prompt), `tinygpt chat` (an instruction-tuned model, book ch. 7)
and `tinygpt classify` (a fine-tuned spam classifier, the book's `classify_review`, ch. 6).

Each command reads what the others write: a `train`/`finetune` run directory or checkpoint, or a Hugging Face
GPT-2 directory. A model of the wrong kind for the command (a classifier given to generate, say) is named as what
it is, with the command that uses it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

import numpy as np

from gpt.cli.common import DEFAULT_RUN_DIR, PROG, add_common_args, make_backend, positive, say, warn, write_tokens


def _add_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int, temperature: float,
                       top_k: int | None) -> None:
    p.add_argument("--max-new-tokens", type=positive(int), default=max_new_tokens, metavar="N",
                   help="tokens to generate")
    p.add_argument("--temperature", type=positive(float, allow_zero=True), default=temperature, metavar="T",
                   help="sampling temperature, 0 for greedy")
    p.add_argument("--top-k", type=positive(int), default=top_k, metavar="K", help="keep the K likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling, 0 < P <= 1")


def _check_top_p(args: argparse.Namespace) -> None:
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p} must be in (0, 1]")


def _task(state: dict) -> str | None:
    return (state.get("finetune") or {}).get("task")


def _refuse_encoder(state: dict, checkpoint: str, command: str) -> None:
    """An encoder (BERT) predicts masked tokens, not the next one: generating from it would be noise."""
    if state.get("arch") == "bert" and _task(state) != "classify":
        raise ValueError(f"{checkpoint} is a BERT encoder (masked-LM), which does not continue text; use `{PROG} "
                         f"fill-mask --checkpoint {checkpoint} --text \"... [MASK] ...\"`, or {command} a decoder")


def prompt_ids(text: str, tok: Any, context_length: int, room: int = 1) -> np.ndarray:
    """The prompt as a (1, n) batch keeping its last tokens so `room` new ones fit the context; an empty prompt
    is a ValueError, a cut one is said on stderr."""
    from gpt.generate import text_to_token_ids

    if not text:
        raise ValueError("--prompt is empty; give the text to continue, e.g. --prompt \"The for statement\"")
    ids = text_to_token_ids(text, tok)
    keep = max(context_length - room, 1)
    if ids.shape[1] > keep:
        warn(f"note: the prompt is {ids.shape[1]} tokens, more than fit the model's context of {context_length} "
             f"with room to generate; it was cut to its last {keep} tokens")
        ids = ids[:, -keep:]
    return ids


# ---- generate ------------------------------------------------------------------------------------------------------

def add_generate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt from a checkpoint or a Hugging Face GPT-2, Llama or "
                                        "Qwen3 directory")
    p.add_argument("--checkpoint", metavar="DIR", default=DEFAULT_RUN_DIR,
                   help="a `train --out` directory, a checkpoint, a Hugging Face GPT-2, Llama or Qwen3 directory "
                        "(with its tokenizer.json), or gpt2 (gpt2-medium, ..., qwen3-0.6b) once `download`ed")
    p.add_argument("--prompt", required=True, metavar="TEXT")
    _add_sampling_args(p, max_new_tokens=100, temperature=0.8, top_k=40)
    add_common_args(p)
    p.set_defaults(func=cmd_generate)


def _load_decoder(args: argparse.Namespace, verb: str, if_classifier: str) -> tuple:
    """(model, tokenizer, state) of --checkpoint for generating text, the sampling flags checked first; an encoder
    or a classifier is refused with one line ("DIR is " + if_classifier)."""
    from gpt.training.finetune import load_finetuned

    _check_top_p(args)
    model, tok, state = load_finetuned(args.checkpoint, make_backend(args), merge=True)
    _refuse_encoder(state, args.checkpoint, verb)
    if _task(state) == "classify":
        raise ValueError(f"{args.checkpoint} is {if_classifier}")
    return model, tok, state


def cmd_generate(args: argparse.Namespace) -> int:
    from gpt.generate import generate_stream

    model, tok, state = _load_decoder(args, "generate from", f"a spam classifier (`finetune classify`), not a text "
                                      f"generator; use `{PROG} classify --checkpoint {args.checkpoint} --text TEXT`")
    ctx = model.cfg.context_length
    ids = prompt_ids(args.prompt, tok, ctx)
    eos = getattr(tok, "eos_token_id", None)   # a Hugging Face directory's tokenizer_config.json names it
    if eos is None and hasattr(tok, "special_tokens"):
        eos = tok.special_tokens.get("<|endoftext|>")
    # a window no longer than this run needs: the KV cache of Qwen3's 40960-token context would take gigabytes
    window = min(ctx, ids.shape[1] + args.max_new_tokens)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    write_tokens(generate_stream(model, ids, args.max_new_tokens, window, temperature=args.temperature,
                                 top_k=args.top_k, top_p=args.top_p, eos_id=eos, seed=args.seed), tok, out)
    return 0


# ---- chat ----------------------------------------------------------------------------------------------------------

def add_chat_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask an instruction-tuned model questions, one per line (book ch. 7 prompts; "
                                    "Llama 3 / Qwen3 chat formats)",
                       description="Reads questions from standard input, one per line, and streams the answers. A "
                                   "`finetune instruct` model gets the Alpaca template used in training, one question "
                                   "at a time; a Llama 3 or Qwen3 directory its own chat format (Llama 3's headers, "
                                   "ChatML) and the whole conversation. Ends on end of input or a line '/exit'.")
    p.add_argument("--checkpoint", metavar="DIR", required=True,
                   help="a `finetune instruct --out` directory, a checkpoint, or a Hugging Face GPT-2, Llama 3 or "
                        "Qwen3 directory (with its tokenizer.json), or qwen3-0.6b once `download`ed")
    _add_sampling_args(p, max_new_tokens=128, temperature=0.0, top_k=None)
    add_common_args(p)
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from gpt.chat_format import model_chat_style

    model, tok, state = _load_decoder(args, "chat with", "a classifier; chat needs a `finetune instruct` model")
    # a Llama 3 / Qwen3 directory speaks its own chat format and keeps the conversation; a book model, Alpaca's
    style = model_chat_style(model, state)
    if _task(state) != "instruct" and style is None:
        warn(f"note: {args.checkpoint} was not instruction-tuned (no `{PROG} finetune instruct` run): it continues "
             f"text rather than answering; fine-tune it with `{PROG} finetune instruct --init {args.checkpoint}`")
    ask = _family_turn(model, tok, style, args) if style else _alpaca_turn(model, tok, args)
    interactive, out = sys.stdin.isatty(), sys.stdout
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            break
        if line.strip():
            write_tokens(ask(line.strip()), tok, out)
    return 0


def _stream(model: Any, ids: list[int], args: argparse.Namespace, eos: int | None) -> Any:
    """generate_stream over the last tokens of `ids` that fit, with a cache no longer than this answer needs."""
    from gpt.generate import generate_stream

    ctx = model.cfg.context_length
    prompt = np.asarray([ids], dtype=np.int64)[:, -(ctx - 1):]
    window = min(ctx, prompt.shape[1] + args.max_new_tokens)
    return generate_stream(model, prompt, args.max_new_tokens, window, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, eos_id=eos, seed=args.seed)


def _alpaca_turn(model: Any, tok: Any, args: argparse.Namespace) -> Callable[[str], Any]:
    """One question, one answer, in the book's ch. 7 Alpaca template (no history)."""
    from gpt.classify import end_of_text_id
    from gpt.instruct import format_chat_prompt

    eos = end_of_text_id(tok)
    return lambda question: _stream(model, tok.encode(format_chat_prompt(question)), args, eos)


def _family_turn(model: Any, tok: Any, style: str, args: argparse.Namespace) -> Callable[[str], Any]:
    """A conversation in the family's chat format: each answer ends at an end-of-turn token (or the tokenizer's
    eos) and joins the history."""
    from gpt.chat_format import answer_stop_ids, chat_prompt_ids

    history: list[dict[str, str]] = []
    stops = set(answer_stop_ids(tok, style))

    def ask(question: str) -> Any:
        history.append({"role": "user", "content": question})
        answer: list[int] = []
        for token in _stream(model, chat_prompt_ids(tok, history, style), args, None):
            if token in stops:
                break
            answer.append(token)
            yield token
        history.append({"role": "assistant", "content": tok.decode(answer)})

    return ask


# ---- classify ------------------------------------------------------------------------------------------------------

def add_classify_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="label a message with a `finetune classify` model (book ch. 6)",
                       description="Prints 'spam' or 'not spam' and the model's probability for each --text (or each "
                                   "line of standard input when --text is not given), as the book's classify_review.")
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="a `finetune classify --out` directory")
    p.add_argument("--text", action="append", metavar="TEXT", help="a message to classify (repeatable)")
    add_common_args(p, seed=False)
    p.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    from gpt.classify import CLASS_NAMES, class_probabilities
    from gpt.training.finetune import classify_tokenizer, load_finetuned

    B = make_backend(args)
    model, tok, state = load_finetuned(args.checkpoint, B, merge=True)
    ft = state.get("finetune") or {}
    tok = classify_tokenizer(tok, ft)  # an encoder reads [CLS] text [SEP]
    if ft.get("task") != "classify":
        what = f"a `finetune {ft['task']}` model" if ft else "a pretrained language model"
        raise ValueError(f"{args.checkpoint} is not a classifier ({what}); train one with `{PROG} finetune "
                         f"classify`, or use `{PROG} generate` for text")
    texts = args.text if args.text is not None else [line.rstrip("\n") for line in sys.stdin]
    for text in texts:
        if not text.strip():
            raise ValueError("--text is empty; give the message to classify")
        probs = class_probabilities(text, model, tok, int(ft["max_length"]), int(ft["pad_token_id"]),
                                    pool_pad=ft.get("pool") == "last-non-pad")
        label = int(probs.argmax())
        say(f"{CLASS_NAMES[label]}\t{probs[label]:.3f}\t{text}")
    return 0
