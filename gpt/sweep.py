"""Hyperparameter search over real training runs with Optuna: the book's chapter 5 bonus (a grid search over model
size, layers, learning rate and batch size), done with a Tree-structured Parzen Estimator instead of a grid.

Each trial draws its settings from a search space, trains a GPT exactly as `tinygpt train` does (the one Trainer,
its own run directory `trial-NNNN/` with checkpoints, metrics.jsonl and loss.png) and is scored by the validation
loss of its last evaluation. The TPE sampler (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization")
proposes the next settings from the finished trials; a median pruner (Optuna's MedianPruner, the rule of Google
Vizier, Golovin et al. 2017) stops a trial whose validation loss at an evaluation is worse than the median of the
earlier trials at that step. The study lives in an Optuna RDB storage (a SQLite file by default), so processes that
share one storage URL share one study: that is how a search spans several processes or machines.

Search space (`DEFAULT_SPACE`, or a JSON file, see `parse_space`): one entry per setting,
    {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": true},
     "n_layers": {"type": "int", "low": 1, "high": 6, "step": 1},
     "emb_dim": {"type": "categorical", "choices": [64, 128]},
     "drop_rate": 0.0}                                  # a bare value: fixed, not searched
naming settings of the model (SPACE_MODEL_KEYS) or of the training (SPACE_TRAIN_KEYS); settings not named keep
`tinygpt train`'s defaults, except min_lr, which follows lr / 10 unless the space names it. Library code: nothing
here prints; the command is `tinygpt sweep` (gpt/cli).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backends.base import Backend

SPACE_MODEL_KEYS = ("context_length", "emb_dim", "n_heads", "n_layers", "drop_rate")
SPACE_TRAIN_KEYS = ("lr", "min_lr", "warmup_steps", "weight_decay", "beta2", "batch_size", "grad_clip", "grad_accum")
_INT_KEYS = ("context_length", "emb_dim", "n_heads", "n_layers", "warmup_steps", "batch_size", "grad_accum")

# The default search, around `tinygpt train`'s default model (4 layers, 4 heads, width 192, lr 2e-3, batch 16):
# every n_heads choice divides every emb_dim choice, so each combination is a valid model.
DEFAULT_SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 3e-4, "high": 5e-3, "log": True},   # log-uniform: rates differ by factors
    "n_layers": {"type": "int", "low": 2, "high": 6},
    "emb_dim": {"type": "categorical", "choices": [64, 128, 192, 256]},
    "n_heads": {"type": "categorical", "choices": [2, 4, 8]},
    "batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    "warmup_steps": {"type": "int", "low": 0, "high": 100, "step": 20},
}
TRIAL_DIR = "trial-{:04d}"
REPORT_FILE = "sweep.md"
PLOT_FILE = "sweep.png"
DB_FILE = "sweep.db"


@dataclass(frozen=True)
class Param:
    """One entry of a search space: a float/int range (optionally log or stepped), a categorical, or a fixed value."""

    name: str
    kind: str                          # "float" | "int" | "categorical" | "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None       # categorical choices, or (value,) for "fixed"

    def values(self) -> list:
        """Every value an int/categorical/fixed entry can take (for the n_heads-divides-emb_dim check)."""
        if self.kind in ("categorical", "fixed"):
            return list(self.choices)
        return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))

    def suggest(self, trial: Any) -> Any:
        """The value of this setting in an Optuna trial."""
        if self.kind == "fixed":
            return self.choices[0]
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return value


def _parse_param(name: str, spec: Any) -> Param:
    """One space entry, checked; ValueError names the entry and what it must be."""
    where = f"search space entry {name!r}"
    is_int = name in _INT_KEYS
    if not isinstance(spec, dict):
        value = _number(spec, f"{where} (a fixed value)")
        if is_int and value != int(value):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return Param(name, "fixed", choices=(int(value) if is_int else value,))
    kind = spec.get("type")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
    if kind not in allowed or (kind == "float" and is_int):
        kinds = "int or categorical" if is_int else "float, int or categorical"
        raise ValueError(f"{where} has type {kind!r}; use {kinds}, e.g. "
                         f"{{\"type\": \"int\", \"low\": 1, \"high\": 4}}")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; a {kind} entry takes {sorted(allowed[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where} needs a non-empty list \"choices\"")
        for c in choices:
            if _number(c, f"{where}: choice {c!r}") != int(c) and is_int:
                raise ValueError(f"{where}: choice {c!r} must be an integer")
        return Param(name, kind, choices=tuple(int(c) if is_int else c for c in choices))
    low, high = _number(spec.get("low"), f"{where}: low"), _number(spec.get("high"), f"{where}: high")
    step, log = spec.get("step"), spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false, got {log!r}")
    if kind == "int" and (low != int(low) or high != int(high) or (step is not None and step != int(step))):
        raise ValueError(f"{where}: low, high and step of an int entry must be integers")
    if low > high or (log and low <= 0) or (step is not None and (_number(step, f"{where}: step") <= 0 or log)):
        raise ValueError(f"{where}: need low <= high, low > 0 with log, and a positive step without log; got "
                         f"low={low}, high={high}, step={step}, log={log}")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def parse_space(space: Any) -> dict[str, Param]:
    """A search space from its JSON form (see the module docstring); ValueError for anything malformed."""
    if not isinstance(space, dict) or not space:
        raise ValueError("the search space must be a non-empty JSON object mapping setting names to entries")
    known = SPACE_MODEL_KEYS + SPACE_TRAIN_KEYS
    unknown = [k for k in space if k not in known]
    if unknown:
        raise ValueError(f"search space setting {unknown[0]!r} is unknown; choose among {', '.join(known)}")
    params = {name: _parse_param(name, spec) for name, spec in space.items()}
    _check_heads(params)
    return params


def _check_heads(params: dict[str, Param]) -> None:
    """Every n_heads the space can draw must divide every emb_dim it can draw (else some trials are no model)."""
    from gpt.training.config import DEFAULT_MODEL_CONFIG

    fixed = {k: Param(k, "fixed", choices=(DEFAULT_MODEL_CONFIG[k],)) for k in ("emb_dim", "n_heads")}
    dims, heads = (params.get(k, fixed[k]).values() for k in ("emb_dim", "n_heads"))
    for d in dims:
        for h in heads:
            if d % h:
                raise ValueError(f"search space: n_heads {h} does not divide emb_dim {d}; give choices where every "
                                 f"n_heads divides every emb_dim")


def load_space(path: str | os.PathLike | None) -> dict[str, Param]:
    """The search space of a JSON file (None: DEFAULT_SPACE); errors name the file."""
    if path is None:
        return parse_space(DEFAULT_SPACE)
    try:
        space = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"search space file {str(path)!r} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"search space file {path} is not valid JSON ({e})") from None
    try:
        return parse_space(space)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def space_to_json(space: dict[str, Param]) -> dict[str, Any]:
    """The JSON form of a parsed space (what --space takes), e.g. to record it beside the study."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        if p.kind == "fixed":
            out[name] = p.choices[0]
        elif p.kind == "categorical":
            out[name] = {"type": "categorical", "choices": list(p.choices)}
        else:
            out[name] = {"type": p.kind, "low": p.low, "high": p.high, "log": p.log,
                         **({"step": p.step} if p.step is not None else {})}
    return out


# ---- one trial: a `tinygpt train` run ---------------------------------------------------------------------------

@dataclass
class SweepData:
    """What every trial trains on, prepared once: the tokenizer (and how to reload it) and the id split."""

    source: str
    tokenizer: Any
    tokenizer_spec: dict
    train_ids: np.ndarray
    val_ids: np.ndarray


def prepare_data(data: str | None, tokenizer: str | None = None, vocab_size: int = 1024,
                 val_fraction: float = 0.1) -> SweepData:
    """The corpus of `tinygpt train --data` (None: the embedded pydoc text), tokenized as train would do it."""
    from gpt.training import corpus

    text = corpus.load_corpus(data)
    kind = tokenizer or ("gpt2" if text.ids is not None else "bpe")
    tok, spec = corpus.build_tokenizer(kind, text.text, vocab_size)
    ids = corpus.tokenize(text, tok)
    if len(ids) and int(np.max(ids)) >= tok.n_vocab:
        raise ValueError(f"the data holds token id {int(np.max(ids))}, outside the {kind} tokenizer's "
                         f"{tok.n_vocab} ids; pick the --tokenizer that made the token file")
    train_ids, val_ids = corpus.split_train_val(ids, val_fraction)
    return SweepData(text.source, tok, spec, train_ids, val_ids)


def trial_configs(params: dict[str, Any], base_train: Any, vocab_size: int) -> tuple[dict, Any]:
    """(model config, TrainConfig) of a trial: `tinygpt train`'s defaults with the trial's settings applied."""
    from gpt.training.config import DEFAULT_MODEL_CONFIG, TrainConfig

    model_cfg = {**DEFAULT_MODEL_CONFIG, "vocab_size": vocab_size,
                 **{k: v for k, v in params.items() if k in SPACE_MODEL_KEYS}}
    train = TrainConfig.from_dict({**base_train.to_dict(), **{k: v for k, v in params.items()
                                                              if k in SPACE_TRAIN_KEYS}})
    if "lr" in params and "min_lr" not in params:
        train.min_lr = train.lr / 10      # keep train's floor-to-peak ratio (2e-4 / 2e-3)
    return model_cfg, train.validate()


def _make_trainer(model: Any, data: SweepData, cfg: Any, out_dir: Path, on_event: Callable[[dict], None]) -> Any:
    from gpt.training.trainer import pretrainer

    return pretrainer(model, data.train_ids, data.val_ids, cfg, tokenizer=data.tokenizer, out_dir=out_dir,
                      tokenizer_spec=data.tokenizer_spec, data_source=data.source, on_event=on_event)


def run_trial(trial: Any, space: dict[str, Param], data: SweepData, base_train: Any, backend: Backend,
              out_dir: str | os.PathLike, on_event: Callable[[dict], None] | None = None) -> float:
    """Train the trial's model in out_dir/trial-NNNN; its last validation loss, or optuna.TrialPruned when the
    pruner stops it at an evaluation (checkpointed there) or the loss diverges."""
    import optuna

    from gpt.model import GPTModel
    from gpt.training.trainer import TrainingDiverged

    params = {name: p.suggest(trial) for name, p in space.items()}
    model_cfg, cfg = trial_configs(params, base_train, data.tokenizer.n_vocab)
    run_dir = Path(out_dir) / TRIAL_DIR.format(trial.number)
    if (run_dir / "checkpoints.json").exists() or any(run_dir.glob("step-*")):
        raise ValueError(f"{run_dir} already holds a run from another study; give another --out or --study")
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    trial.set_user_attr("settings", params)
    state = {"pruned": False, "trainer": None}

    def hook(event: dict) -> None:
        if event["event"] == "eval" and event["step"] > 0:
            trial.report(event["val_loss"], event["step"])
            if trial.should_prune():
                state["pruned"] = True
                state["trainer"].request_stop()   # finish the step, checkpoint it, return
        if on_event is not None:
            on_event({**event, "trial": trial.number})

    model = GPTModel(model_cfg, backend=backend, seed=cfg.seed)
    trainer = state["trainer"] = _make_trainer(model, data, cfg, run_dir, hook)
    try:
        result = trainer.run()
    except TrainingDiverged as e:
        trial.set_user_attr("diverged", str(e))
        raise optuna.TrialPruned(f"diverged: {e}") from None
    trial.set_user_attr("steps", result.step)
    if state["pruned"]:
        raise optuna.TrialPruned(f"pruned at step {result.step}")
    return float(result.evals[-1]["val_loss"])


# ---- the study ------------------------------------------------------------------------------------------------

def default_storage(out_dir: str | os.PathLike) -> str:
    """The SQLite URL of the study file inside the sweep directory."""
    return f"sqlite:///{(Path(out_dir) / DB_FILE).resolve()}"


def rdb_storage(url: str, attempts: int = 6) -> Any:
    """An Optuna RDBStorage for `url`; SQLite waits up to a minute for a lock instead of failing, and the schema
    creation is retried, since processes that start together on a new database race to create its tables."""
    import optuna
    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.25 * (attempt + 1))


def open_study(storage: str, study_name: str, seed: int = 123, startup_trials: int = 3) -> Any:
    """Create or load the study `study_name` in an Optuna RDB storage: minimise the validation loss with TPE,
    pruning trials below the median after `startup_trials` finished trials.

    The sampler's seed mixes in the trials already there and the process id, so processes that join one study at
    once do not propose identical settings; each trial's training is seeded by the run's own --seed.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)   # the command reports trials itself
    rdb = rdb_storage(storage)
    study = optuna.create_study(study_name=study_name, storage=rdb, direction="minimize", load_if_exists=True)
    entropy = [seed, len(study.trials), os.getpid()]
    study.sampler = optuna.samplers.TPESampler(seed=int(np.random.SeedSequence(entropy).generate_state(1)[0]),
                                               n_startup_trials=startup_trials, constant_liar=True)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    return study


def finished_trials(study: Any) -> list[Any]:
    """The study's completed and pruned trials (what counts towards --trials)."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=done)


def run_sweep(study: Any, objective: Callable[[Any], float], n_trials: int,
              should_stop: Callable[[], bool] = lambda: False,
              on_trial: Callable[[Any], None] | None = None) -> int:
    """Run trials until the study holds n_trials finished ones (counting other processes' trials) or should_stop()
    turns true after a trial; returns how many this call ran. Each process may finish one trial past the target."""
    ran = 0
    report = [] if on_trial is None else [lambda _study, trial: on_trial(trial)]   # the trial this process ran
    while len(finished_trials(study)) < n_trials and not should_stop():
        study.optimize(objective, n_trials=1, catch=(), callbacks=report)
        ran += 1
    return ran


# ---- reports --------------------------------------------------------------------------------------------------

def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value (val loss), steps, seconds, settings, run_dir; best first."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)]
                                                     if t.intermediate_values else None)
        state = "diverged" if "diverged" in t.user_attrs else t.state.name.lower()
        rows.append({"number": t.number, "state": state, "value": value,
                     "steps": t.user_attrs.get("steps", max(t.intermediate_values, default=0)),
                     "seconds": t.duration.total_seconds() if t.duration is not None else None,
                     "settings": t.user_attrs.get("settings", t.params), "run_dir": t.user_attrs.get("run_dir")})
    order = {"complete": 0, "pruned": 1}
    rows.sort(key=lambda r: (order.get(r["state"], 2), r["value"] if r["value"] is not None else math.inf,
                             r["number"]))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(study: Any, path: str | os.PathLike, generate_command: str = "tinygpt generate") -> Path:
    """DIR/sweep.md: the trials by validation loss (completed, then pruned at their last evaluation), with their
    settings, steps, wall time and run directory; the best run's generate command on top."""
    rows = trial_rows(study)
    names = sorted({k for r in rows for k in r["settings"]})
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "diverged", "fail", "running")}
    lines = [f"# Sweep `{study.study_name}`", "",
             f"{len(rows)} trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['diverged']} "
             f"diverged, {counts['fail']} failed, {counts['running']} running. Objective: the validation loss of "
             f"the last evaluation (lower is better); a pruned trial shows its loss where it stopped.", ""]
    best = next((r for r in rows if r["state"] == "complete"), None)
    if best is not None:
        lines += [f"Best: trial {best['number']}, validation loss {best['value']:.4f}. Its run:", "",
                  f"    {generate_command} --checkpoint {best['run_dir']} --prompt \"The for statement\"", ""]
    lines.append("| rank | trial | state | val loss | steps | wall s | " + " | ".join(names) + " | run |")
    lines.append("|" + "---|" * (len(names) + 7))
    for rank, r in enumerate(rows, 1):
        cells = [str(rank), str(r["number"]), r["state"], _fmt(r["value"]), _fmt(r["steps"]),
                 _fmt(None if r["seconds"] is None else round(r["seconds"], 1))]
        cells += [_fmt(r["settings"].get(n)) for n in names] + [f"`{r['run_dir']}`" if r["run_dir"] else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _render(ax: Any) -> np.ndarray:
    """The pixels of the figure holding `ax` (Optuna's plot functions draw on figures of their own)."""
    import matplotlib.pyplot as plt

    fig = ax.figure
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return pixels


def plot_study(study: Any, path: str | os.PathLike) -> Path:
    """DIR/sweep.png: Optuna's optimisation history beside its parameter importances (fANOVA), the latter replaced
    by a note while fewer than 2 trials have completed."""
    import matplotlib

    matplotlib.use("Agg")   # files only: no display needed
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the matplotlib plots are marked experimental
        panels = [_render(plot_optimization_history(study))]
        n_complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        note = None
        if n_complete >= 2:
            try:
                panels.append(_render(plot_param_importances(study)))
            except (RuntimeError, ValueError) as e:   # e.g. every completed trial drew the same settings
                note = f"no parameter importances: {e}"
        else:
            note = f"parameter importances need at least 2 completed trials ({n_complete} so far)"
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    axes[0].imshow(panels[0])
    if note is None:
        axes[1].imshow(panels[1])
    else:
        axes[1].text(0.5, 0.5, note, ha="center", va="center", wrap=True)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["DEFAULT_SPACE", "SPACE_MODEL_KEYS", "SPACE_TRAIN_KEYS", "Param", "parse_space", "load_space",
           "space_to_json", "SweepData", "prepare_data", "trial_configs", "run_trial", "default_storage",
           "rdb_storage", "open_study", "finished_trials", "run_sweep", "trial_rows", "write_report", "plot_study"]
