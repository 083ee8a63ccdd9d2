"""Training checkpoints: weights, optimizer state keyed by parameter name, configs, data position; atomic writes.

A checkpoint is a directory (DESIGN.md §4.6: names are data, never positions):
    model.safetensors      the model's state_dict, keyed by the book's parameter names
    optimizer.safetensors  the optimizer's per-parameter arrays, keyed "<parameter name>:<state key>"
    state.json             step, model and train configs, tokenizer description, optimizer scalars, data position,
                           RNG scheme, validation loss
    tokenizer.bpe          the trained BPE tokenizer, when the run trained one
A run directory holds `step-NNNNNN/` checkpoints (the last `keep_last`), `best/` (lowest validation loss) and
`checkpoints.json`, the index naming the latest. Every directory is built under a temporary name and moved into
place with `os.replace`, and the index is replaced the same way, so a crash mid-write leaves the previous
checkpoint and index untouched.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends.base import Backend
from gpt.nn import to_numpy_any
from gpt.weights import read_safetensors, write_safetensors

FORMAT = "tinygpt-checkpoint"
VERSION = 1
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
INDEX_FILE = "checkpoints.json"
BEST_DIR = "best"


# ---- optimizer state by parameter name -------------------------------------------------------------------------

def _flat_params(optimizer: Any) -> list[Any]:
    """The optimizer's parameters in state_dict index order (groups in order, then params within a group)."""
    return [p for g in optimizer.param_groups for p in g["params"]]


def optimizer_state_by_name(optimizer: Any, model: Any) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Split an optimizer's positional state_dict into arrays {"name:key": ndarray} and scalars {name: {key: x}}.

    Works for tinytensor's and torch's optimizers: both index state by position in their param groups.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    params = _flat_params(optimizer)
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, dict] = {}
    for i, st in optimizer.state_dict()["state"].items():
        name = names.get(id(params[int(i)]))
        if name is None:
            raise ValueError(f"optimizer parameter {i} is not a parameter of the model; build the optimizer from "
                             f"model.parameters()")
        entry = scalars.setdefault(name, {})
        for key, value in st.items():
            if getattr(value, "ndim", 0) > 0:
                arrays[f"{name}:{key}"] = np.ascontiguousarray(to_numpy_any(value))
            else:
                # 0-d tensors (torch's step) and numbers: keep int vs float so numpy resumes bit for bit
                entry[key] = value.item() if hasattr(value, "item") else value
    return arrays, scalars


def load_optimizer_state_by_name(optimizer: Any, model: Any, B: Backend, arrays: dict[str, np.ndarray],
                                 scalars: dict[str, dict]) -> None:
    """Restore state saved by optimizer_state_by_name into `optimizer`, matching parameters by name."""
    names = {id(p): n for n, p in model.named_parameters()}
    params = _flat_params(optimizer)
    by_name = {names[id(p)]: i for i, p in enumerate(params)}
    unknown = sorted(set(scalars) - set(by_name))
    if unknown:
        raise ValueError(f"the checkpoint's optimizer state names parameters this model lacks: {unknown[:3]}; "
                         f"it was saved from a different model")
    state: dict[int, dict] = {}
    for name, entry in scalars.items():
        st = {}
        for key, value in entry.items():
            # .data is the engine's own storage on both engines (an xp array for tinytensor, a torch tensor
            # for torch), which is what each optimizer's load_state_dict expects
            st[key] = B.tensor(value).data
        for akey, arr in arrays.items():
            pname, _, key = akey.rpartition(":")
            if pname == name:
                st[key] = B.tensor(arr).data
        state[by_name[name]] = st
    sd = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


# ---- atomic files and directories -------------------------------------------------------------------------------

def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, allow_nan=True)
            f.write("\n")
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore_training(ckpt: Any, model: Any, optimizer: Any, loader: Any) -> int:
    """Load a checkpoint's weights, optimizer state (matched by name) and data position into a run being resumed;
    returns the checkpoint's step. Shared by the pretraining Trainer and the fine-tuning runs."""
    model.load_state_dict(ckpt.weights)
    opt = ckpt.state.get("optimizer")
    if opt is not None:
        load_optimizer_state_by_name(optimizer, model, model.B, ckpt.optimizer_arrays, opt["scalars"])
    loader.load_state_dict(ckpt.state["data"]["loader"])
    return ckpt.step


def build_dir_atomic(final: Path, build: Callable[[Path], None]) -> Path:
    """Fill a temporary directory with `build(tmp)`, then move it to `final` (replacing an old one)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())          # mkdtemp makes 0700; give the directory the usual mode
        build(tmp)
        if final.exists():
            # rename() cannot replace a non-empty directory: move the old one aside first
            trash = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- one checkpoint ---------------------------------------------------------------------------------------------

def _json_safe(x: Any) -> Any:
    """NaN/inf floats as strings, so state.json stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_checkpoint(directory: Path, model: Any, optimizer: Any = None, state: dict | None = None,
                     tokenizer: Any = None) -> None:
    """Write the checkpoint files into an existing (temporary) directory; see the module docstring."""
    directory = Path(directory)
    weights = {name: np.ascontiguousarray(to_numpy_any(t)) for name, t in model.state_dict().items()}
    write_safetensors(directory / MODEL_FILE, weights)
    state = dict(state or {})
    if optimizer is not None:
        arrays, scalars = optimizer_state_by_name(optimizer, model)
        write_safetensors(directory / OPTIMIZER_FILE, arrays)
        state["optimizer"] = {"scalars": scalars}
    tok_spec = state.get("tokenizer") or {}
    if tok_spec.get("kind") == "bpe" and tokenizer is not None:
        tokenizer.save(directory / tok_spec.get("file", "tokenizer.bpe"), vocab=False)
    with open(directory / STATE_FILE, "w", encoding="utf-8") as f:
        json.dump(_json_safe({"format": FORMAT, "version": VERSION, **state}), f, indent=1)
        f.write("\n")


def save_checkpoint(directory: str | Path, model: Any, optimizer: Any = None, state: dict | None = None,
                    tokenizer: Any = None) -> Path:
    """Write a checkpoint directory atomically (a crash leaves either the old directory or the new one)."""
    return build_dir_atomic(Path(directory), lambda tmp: write_checkpoint(tmp, model, optimizer, state, tokenizer))


@dataclass
class Checkpoint:
    """A checkpoint read back: its directory, state.json, weights, and optimizer arrays (empty if none)."""

    path: Path
    state: dict
    weights: dict[str, np.ndarray]
    optimizer_arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))


def is_checkpoint_dir(path: str | Path) -> bool:
    """True for a directory holding a checkpoint (state.json + model.safetensors)."""
    path = Path(path)
    return (path / STATE_FILE).is_file() and (path / MODEL_FILE).is_file()


def read_json(path: Path, what: str) -> Any:
    """A JSON file's contents; ValueError naming the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {what}") from None


def _check_state(path: Path, state: Any) -> dict:
    """state.json's fields that loading relies on, checked; ValueError naming the file and the field."""
    def bad(field: str, rule: str) -> ValueError:
        return ValueError(f"{path}: {field} {rule}; the checkpoint is damaged (write it again, or use another)")
    if not isinstance(state, dict):
        raise bad("the file", f"holds a JSON {type(state).__name__}, not an object")
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tinygpt checkpoint (format {state.get('format')!r})")
    step = state.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad("step", f"is {step!r}, not an integer >= 0")
    for key in ("model_config", "train_config", "tokenizer", "data", "finetune", "optimizer"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise bad(key, f"is {state[key]!r}, not an object")
    if "model_config" not in state:
        raise bad("model_config", "is missing")
    return state


def read_checkpoint(path: str | Path, with_optimizer: bool = True) -> Checkpoint:
    """Read a checkpoint directory (or a run directory's latest checkpoint)."""
    path = find_checkpoint(path)
    state = _check_state(path / STATE_FILE, read_json(path / STATE_FILE, "the checkpoint is damaged"))
    weights = read_safetensors(path / MODEL_FILE)
    opt = {}
    if with_optimizer and (path / OPTIMIZER_FILE).is_file():
        opt = read_safetensors(path / OPTIMIZER_FILE)
    return Checkpoint(path, state, weights, opt)


def read_index(run_dir: str | Path) -> dict:
    """The run directory's checkpoints.json (an empty index when there is none); ValueError naming it if damaged."""
    path = Path(run_dir) / INDEX_FILE
    if not path.is_file():
        return {"latest": None, "checkpoints": [], "best": None}
    index = read_json(path, f"delete it and {run_dir}'s newest step-* directory is used")
    ok = (isinstance(index, dict) and isinstance(index.get("latest"), (str, type(None)))
          and isinstance(index.get("checkpoints", []), list)
          and all(isinstance(c, str) for c in index.get("checkpoints", []))
          and isinstance(index.get("best"), (dict, type(None))))
    if not ok:
        raise ValueError(f"{path} is damaged (expected {{\"latest\": name, \"checkpoints\": [names], \"best\": ...}}); "
                         f"delete it and {run_dir}'s newest step-* directory is used")
    return index


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the latest checkpoint of a run directory; FileNotFoundError otherwise."""
    path = Path(path)
    if is_checkpoint_dir(path):
        return path
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found; give the --out directory of `tinygpt train`")
    latest = read_index(path).get("latest")
    if latest and is_checkpoint_dir(path / latest):
        return path / latest
    steps = sorted(p for p in path.glob("step-*") if is_checkpoint_dir(p))
    if steps:
        return steps[-1]
    raise FileNotFoundError(f"no checkpoint in {str(path)!r}: expected the --out directory of `tinygpt train` or "
                            f"one of its step-* directories")


# ---- a run directory: keep the last K and the best ------------------------------------------------------------

class CheckpointManager:
    """Saves `step-NNNNNN/` checkpoints into a run directory, keeps the last `keep_last` and the best (`best/`)."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.index = read_index(self.run_dir)

    def latest(self) -> Path | None:
        """The newest checkpoint directory, or None before the first save."""
        try:
            return find_checkpoint(self.run_dir)
        except FileNotFoundError:
            return None

    def save(self, step: int, model: Any, optimizer: Any = None, state: dict | None = None, tokenizer: Any = None,
             val_loss: float | None = None) -> Path:
        """Write checkpoint `step` atomically, refresh best/ if val_loss is the lowest so far, prune, update index."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:06d}"
        final = save_checkpoint(self.run_dir / name, model, optimizer, state, tokenizer)
        index = dict(self.index)
        kept = [c for c in index.get("checkpoints", []) if c != name] + [name]
        best = index.get("best")
        if val_loss is not None and math.isfinite(val_loss) and (best is None or val_loss < best["val_loss"]):
            build_dir_atomic(self.run_dir / BEST_DIR, lambda tmp: _copy_files(final, tmp))
            best = {"dir": BEST_DIR, "step": step, "val_loss": val_loss}
        pruned, kept = kept[:-self.keep_last], kept[-self.keep_last:]
        index.update(latest=name, checkpoints=kept, best=best)
        write_json_atomic(self.run_dir / INDEX_FILE, index)   # the index moves first, then old dirs go
        self.index = index
        for old in pruned:
            shutil.rmtree(self.run_dir / old, ignore_errors=True)
        return final


def _copy_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        shutil.copy2(f, dst / f.name)


# ---- models for inference -----------------------------------------------------------------------------------------

def load_model(path: str | Path, backend: Backend) -> tuple[Any, Any, dict]:
    """(model, tokenizer, state) from a tinygpt checkpoint or run directory, a Hugging Face GPT-2, Llama or Qwen3
    directory, or a GPT-2 hub name ("gpt2", ...) that `tinygpt download` has fetched.

    The model is in eval mode; a Hugging Face directory comes with its tokenizer.json (GPT-2's when a GPT-2
    directory has none) and state {"tokenizer": {"kind": "hf" | "gpt2"}}. Weights that do not fit the saved config
    raise the model's KeyError/ValueError.
    """
    from gpt.pretrained import resolve_hub_name
    from gpt.weights import resolve_gpt2_name

    path = Path(path)
    if not path.exists():   # "gpt2", "gpt2-medium", ..., "qwen3-0.6b": the directory `tinygpt download` wrote
        path = resolve_gpt2_name(str(path)) or resolve_hub_name(str(path)) or path
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found; give a `tinygpt train --out` directory, a "
                                f"checkpoint, a Hugging Face GPT-2 directory (config.json + model.safetensors), or "
                                f"gpt2 / gpt2-medium / gpt2-large / gpt2-xl after `tinygpt download` of it")
    if not is_checkpoint_dir(path) and (path / "config.json").is_file() and not (path / INDEX_FILE).is_file():
        from gpt.pretrained import load_pretrained_dir

        try:
            return load_pretrained_dir(path, backend)   # GPT-2, Llama or Qwen3, with the directory's own tokenizer
        except (TypeError, KeyError, AttributeError, OverflowError, ValueError) as e:
            if isinstance(e, ValueError) and str(path) in str(e):
                raise                      # already names the file at fault
            # a value of the wrong kind in config.json (the weights' own errors name model.safetensors)
            raise ValueError(f"{path / 'config.json'}: a setting has a value of the wrong kind ({e})") from None
    ckpt = read_checkpoint(path, with_optimizer=False)
    model = build_model(ckpt, backend)
    return model, checkpoint_tokenizer(ckpt), ckpt.state


def build_model(ckpt: Checkpoint, backend: Backend, finetune: Callable[[Any], Any] | None = None) -> Any:
    """The model of a checkpoint (eval mode): its config checked against the weights before anything is allocated,
    `finetune(model)` applied (a head, LoRA) before the weights load; errors name the file at fault. The state's
    "arch" ("bert": gpt/bert.py's encoder; else the GPT) picks the class."""
    if (ckpt.state.get("arch") or (ckpt.state.get("finetune") or {}).get("arch")) == "bert":
        from gpt.bert import BertConfig as Config, BertModel as Model
    else:
        from gpt.model import GPTConfig as Config, GPTModel as Model

    state_file, model_file = ckpt.path / STATE_FILE, ckpt.path / MODEL_FILE
    try:
        cfg = Config.from_dict(ckpt.state["model_config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{state_file}: model_config is invalid ({e}); the checkpoint is damaged") from None
    if hasattr(cfg, "padded_vocab_size"):  # the GPT's shapes (an encoder's load_state_dict names its own)
        _check_shapes(cfg, ckpt.weights, state_file, model_file)
    model = Model(cfg, backend=backend, seed=0)
    if finetune is not None:
        finetune(model)
    try:
        model.load_state_dict(ckpt.weights)
    except (KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ValueError(f"{model_file} does not fit the model_config in {state_file}: {msg}") from None
    model.eval()
    return model


def _check_shapes(cfg: Any, weights: dict[str, np.ndarray], state_file: Path, model_file: Path) -> None:
    """The embedding shapes and the block count of the weights against the config (cheap, before allocation)."""
    want = {"tok_emb.weight": (cfg.padded_vocab_size, cfg.emb_dim)}
    if cfg.positions == "learned":   # a RoPE model has no position table
        want["pos_emb.weight"] = (cfg.context_length, cfg.emb_dim)
    for name, shape in want.items():
        got = tuple(weights[name].shape) if name in weights else None
        if got != shape:
            raise ValueError(f"{model_file}: {name} has shape {got}, which does not fit the model_config of "
                             f"{state_file} (it needs {shape}); one of the two files is damaged")
    blocks = {k.split(".")[1] for k in weights if k.startswith("trf_blocks.")}
    if len(blocks) != cfg.n_layers:
        raise ValueError(f"{model_file} holds {len(blocks)} transformer blocks, which does not fit the model_config "
                         f"of {state_file} (n_layers={cfg.n_layers}); one of the two files is damaged")


def checkpoint_tokenizer(ckpt: Checkpoint) -> Any:
    """The tokenizer a checkpoint names (GPT-2's when it names none); errors name state.json."""
    from gpt.training.corpus import load_tokenizer

    spec = ckpt.state.get("tokenizer") or {"kind": "gpt2"}
    try:
        return load_tokenizer(spec, ckpt.path)
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"{ckpt.path / STATE_FILE}: tokenizer {spec!r} cannot be loaded ({e})") from None
