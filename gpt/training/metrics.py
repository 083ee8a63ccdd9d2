"""A run's `metrics.jsonl` (one JSON object per step; evaluation records add val_loss and the task's metrics) and
its `loss.png`, shared by every objective."""
from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


def append_record(out_dir: Path, record: dict) -> None:
    """Append one record to out_dir/metrics.jsonl (creating the directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path, evals_only: bool = False) -> list[dict]:
    """The records of a metrics.jsonl (only the evaluation records, those with val_loss, if evals_only).

    A damaged line raises ValueError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n} is not JSON ({e.msg}); delete that line or the file") from None
    return [r for r in records if "val_loss" in r] if evals_only else records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after `step` (written by a run that went past its last checkpoint) before resuming."""
    if path.is_file():
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def plot_run(out_dir: Path) -> Path | None:
    """Plot the evaluation records of out_dir/metrics.jsonl to out_dir/loss.png (None with fewer than two)."""
    from gpt.pretrain import plot_losses

    evals = read_metrics(out_dir / METRICS_FILE, evals_only=True)
    if len(evals) < 2:
        return None
    return plot_losses([r["epoch"] for r in evals], [r["tokens_seen"] for r in evals],
                       [r["train_loss"] for r in evals], [r["val_loss"] for r in evals], path=out_dir / PLOT_FILE)


__all__ = ["METRICS_FILE", "PLOT_FILE", "append_record", "read_metrics", "truncate_metrics", "plot_run"]
