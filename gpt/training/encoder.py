"""Loading an encoder for inference: a `tinygpt train --arch bert` run or checkpoint, or a Hugging Face BERT
directory (gpt/bert.py's model, gpt/mlm.py's special ids), for fill-mask and for fine-tuning from a BERT."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends.base import Backend
from gpt.mlm import SpecialIds
from gpt.pretrained import load_hf_bert_dir
from gpt.training.checkpoint import INDEX_FILE, build_model, find_checkpoint, is_checkpoint_dir, read_checkpoint
from gpt.training.corpus import load_tokenizer


def is_masked_lm(path: str | Path) -> bool:
    """True for a `train --arch bert` run or checkpoint, or a Hugging Face directory with model_type "bert"."""
    path = Path(path)
    hf_config = path / "config.json"
    if hf_config.is_file() and not is_checkpoint_dir(path):
        try:
            return json.loads(hf_config.read_text(encoding="utf-8")).get("model_type") == "bert"
        except (OSError, ValueError):
            return False
    try:
        state = json.loads((find_checkpoint(path) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return state.get("arch") == "bert" or (state.get("finetune") or {}).get("arch") == "bert"


def load_masked_lm(path: str | Path, backend: Backend) -> tuple[Any, Any, SpecialIds, dict]:
    """(BertModel in eval mode, tokenizer, special ids, state) from a `tinygpt train --arch bert` run or
    checkpoint, or a Hugging Face BERT directory (config.json + model.safetensors + vocab.txt; its state describes
    the tokenizer as {"kind": "pretrained", "path": DIR}); a decoder's checkpoint (GPT-2 and the like) is a
    ValueError that says so."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found; give a `tinygpt train --arch bert` --out "
                                f"directory or a Hugging Face BERT directory")
    hf_config = path / "config.json"
    if hf_config.is_file() and not is_checkpoint_dir(path) and not (path / INDEX_FILE).is_file():
        model_type = json.loads(hf_config.read_text(encoding="utf-8")).get("model_type")
        if model_type != "bert":
            raise ValueError(f"{path} holds a {model_type!r} model, not a masked-LM encoder; fill-mask needs a BERT "
                             f"(model_type 'bert') or a `tinygpt train --arch bert` run")
        model, tok, state = load_hf_bert_dir(path, backend)
        return model, tok, SpecialIds(**state["mlm"]["special_ids"]), state
    ckpt = read_checkpoint(path, with_optimizer=False)
    if ckpt.state.get("finetune"):
        raise ValueError(f"{ckpt.path} is a fine-tuned {ckpt.state['finetune'].get('task')} model, without a "
                         f"masked-LM head; fill-mask needs a `tinygpt train --arch bert` run")
    arch = ckpt.state.get("arch") or ckpt.state["model_config"].get("arch", "gpt2")
    if arch != "bert":
        raise ValueError(f"{ckpt.path} is a {arch} checkpoint, a decoder without a masked-LM head; fill-mask needs "
                         f"one trained with `tinygpt train --arch bert`")
    model = build_model(ckpt, backend)          # the config checked against the weights; errors name the file
    tok = load_tokenizer(ckpt.state["tokenizer"], ckpt.path)
    return model, tok, SpecialIds(**ckpt.state["mlm"]["special_ids"]), ckpt.state


__all__ = ["is_masked_lm", "load_masked_lm"]
