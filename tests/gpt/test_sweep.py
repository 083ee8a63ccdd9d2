"""`tinygpt sweep` (gpt/sweep.py, gpt/sweep_cli.py): a 3-trial study of tiny real runs and its report, continuing
a study, two processes on one SQLite study, pruning at an evaluation, Ctrl-C after the running trial, and the
search-space file's errors (exit 2, one line)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import backends
from gpt import sweep
from gpt.cli import main
from gpt.cli.sweep import _stop_after_trial
from gpt.training.config import TrainConfig
from gpt.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "n_layers": {"type": "int", "low": 1, "high": 2},
         "emb_dim": {"type": "categorical", "choices": [16, 32]},
         "n_heads": 2, "context_length": 16, "batch_size": 4, "warmup_steps": 0}


@pytest.fixture
def files(tmp_path):
    """A ~30 kB text corpus (the start of CPython's pydoc topics) and the tiny search space."""
    import pydoc_data.topics

    text = tmp_path / "small.txt"
    text.write_text("\n".join(list(pydoc_data.topics.topics.values())[:6]), encoding="utf-8")
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE), encoding="utf-8")
    return text, space


def sweep_args(out, text, space, trials, *extra):
    return ["sweep", "--trials", str(trials), "--out", str(out), "--data", str(text), "--tokenizer", "bytes",
            "--max-steps", "4", "--eval-interval", "2", "--eval-iters", "1", "--space", str(space), *extra]


def load(out, name="sweep"):
    return optuna.load_study(study_name=name, storage=sweep.default_storage(out))


def test_three_trial_sweep_writes_runs_report_and_plot_and_continues(files, tmp_path, capsys):
    text, space = files
    out = tmp_path / "sw"
    assert main(sweep_args(out, text, space, 3)) == 0
    study = load(out)
    trials = sweep.finished_trials(study)
    assert len(trials) == 3 and {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED}
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert run == (out / f"trial-{t.number:04d}").resolve()
        evals = read_metrics(run / "metrics.jsonl", evals_only=True)
        assert (run / "checkpoints.json").is_file() and evals[-1]["step"] == t.user_attrs["steps"]
        if t.value is not None:
            assert t.value == pytest.approx(evals[-1]["val_loss"], rel=1e-12)
        assert t.user_attrs["settings"]["context_length"] == 16 and 1e-3 <= t.params["lr"] <= 1e-2
    rows = [line.split(" | ") for line in (out / "sweep.md").read_text().splitlines() if line.startswith("| ")
            and not line.startswith("| rank")]
    assert len(rows) == 3
    complete = [float(r[3]) for r in rows if r[2] == "complete"]
    assert complete == sorted(complete)
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = sweep.trial_rows(study)[0]["run_dir"]
    capsys.readouterr()
    assert main(["generate", "--checkpoint", best, "--prompt", "The", "--max-new-tokens", "3"]) == 0
    # running the command again continues the same study up to the new target
    assert main(sweep_args(out, text, space, 4)) == 0
    assert sorted(t.number for t in sweep.finished_trials(load(out))) == [0, 1, 2, 3]
    assert "ran 1 trials here" in capsys.readouterr().out


def test_two_processes_share_one_sqlite_study(files, tmp_path):
    text, space = files
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "gpt", *sweep_args(tmp_path / f"out{i}", text, space, 4,
                                                                         "--storage", storage, "--seed", str(i))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    study = optuna.load_study(study_name="sweep", storage=storage)
    finished = sweep.finished_trials(study)
    assert 4 <= len(finished) <= 5     # each process may finish one trial past the target
    numbers = sorted(t.number for t in finished)
    assert numbers == list(range(len(finished)))
    on_disk = sorted(int(d.name[6:]) for i in range(2) for d in (tmp_path / f"out{i}").glob("trial-*"))
    assert on_disk == numbers          # every trial ran once, in the directory of the process that ran it
    ran = [int(out.split("ran ")[1].split(" trials here")[0]) for out, _ in results]
    assert sum(ran) == len(finished)   # the two processes' trials together are the study's
    reports = [[line for line in (tmp_path / f"out{i}" / "sweep.md").read_text().splitlines()
                if line.startswith("| ") and not line.startswith("| rank")] for i in range(2)]
    assert max(len(r) for r in reports) == len(finished)   # the process that ended last reports every trial


def test_a_pruned_trial_stops_at_its_evaluation_with_a_checkpoint(files, tmp_path):
    text, _ = files
    data = sweep.prepare_data(str(text), "bytes")
    space = sweep.parse_space(SPACE)
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))   # prunes any loss > 0
    base = TrainConfig(max_steps=6, eval_interval=2, eval_iters=1, sample_tokens=0)
    B = backends.get_backend("numpy")
    study.optimize(lambda t: sweep.run_trial(t, space, data, base, B, tmp_path), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["steps"] == 2
    assert list(trial.intermediate_values) == [2]
    assert sorted(p.name for p in (tmp_path / "trial-0000").glob("step-*")) == ["step-000002"]


def test_run_sweep_stops_after_the_running_trial_when_asked():
    study = optuna.create_study()
    calls = []
    ran = sweep.run_sweep(study, lambda t: calls.append(t.number) or t.suggest_float("x", 0, 1), 10,
                          should_stop=lambda: len(calls) >= 2)
    assert ran == 2 and len(study.trials) == 2


def test_ctrl_c_sets_the_stop_flag_and_a_second_aborts():
    said = []
    with _stop_after_trial(said.append) as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop() and "stopping after the running trial" in said[0]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


BAD_SPACES = [
    ("missing", None, "not found"),
    ("notjson", "{", "is not valid JSON"),
    ("list", "[1, 2]", "must be a non-empty JSON object"),
    ("unknown", {"learning_rate": 1e-3}, "setting 'learning_rate' is unknown"),
    ("range", {"lr": {"type": "float", "low": 1e-2, "high": 1e-3}}, "need low <= high"),
    ("log0", {"lr": {"type": "float", "low": 0, "high": 1e-3, "log": True}}, "low > 0 with log"),
    ("type", {"n_layers": {"type": "float", "low": 1, "high": 3}}, "use int or categorical"),
    ("choices", {"batch_size": {"type": "categorical", "choices": []}}, "non-empty list"),
    ("heads", {"emb_dim": {"type": "categorical", "choices": [64, 96]}, "n_heads": {"type": "categorical",
                                                                                   "choices": [4, 5]}},
     "n_heads 5 does not divide emb_dim 64"),
    ("keys", {"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "lg": True}}, "unknown keys ['lg']"),
]


@pytest.mark.parametrize("name,content,message", BAD_SPACES, ids=[b[0] for b in BAD_SPACES])
def test_bad_space_files_exit_2_with_one_line(name, content, message, tmp_path, capsys):
    path = tmp_path / f"{name}.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    assert main(["sweep", "--trials", "1", "--out", str(tmp_path / "sw"), "--space", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinygpt: error: ") and message in err, err
    assert not (tmp_path / "sw").exists()      # refused before anything was written


def test_space_json_round_trip_and_trial_settings():
    space = sweep.parse_space({**SPACE, "warmup_steps": {"type": "int", "low": 0, "high": 40, "step": 20}})
    assert sweep.parse_space(sweep.space_to_json(space)) == space
    assert space["warmup_steps"].values() == [0, 20, 40] and space["n_heads"].kind == "fixed"
    model_cfg, cfg = sweep.trial_configs({"lr": 3e-3, "n_layers": 1, "batch_size": 4}, TrainConfig(), 300)
    assert model_cfg["n_layers"] == 1 and model_cfg["vocab_size"] == 300
    assert (cfg.lr, cfg.min_lr, cfg.batch_size) == (3e-3, 3e-3 / 10, 4)
    assert sweep.parse_space(sweep.DEFAULT_SPACE)["lr"].log


def test_a_storage_that_cannot_be_opened_exits_2_with_one_line(files, tmp_path, capsys):
    text, space = files
    assert main(sweep_args(tmp_path / "sw", text, space, 1, "--storage", "nosuchdb://host/db")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinygpt: error: --storage nosuchdb://host/db: cannot open the "
                                                   "study"), err
