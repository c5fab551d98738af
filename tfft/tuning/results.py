"""What a search produced: one record per trial, best first, as a printed summary and table
and as ``trials.csv``, ``trials.json`` and ``trials.png`` in the search directory.

Built from KerasTuner's own trial records (status, score, hyperparameters and the
traceback of a failed trial) plus tfft's per-trial info file, so a resumed search reports
the trials of earlier runs too. No KerasTuner import is needed to read them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from tfft.errors import TfftError
from tfft.evaluation import new_figure, save_figure
from tfft.files import write_json, write_text

if TYPE_CHECKING:
    from tfft.tuning.tuner import TfftTuner

COMPLETED = "COMPLETED"
FAILED_STATUSES = ("FAILED", "INVALID")
RESULT_FILES = ("trials.csv", "trials.json", "trials.png")


@dataclass
class TrialRecord:
    """One trial: its hyperparameters and outcome (``best_epoch`` is 1-based)."""

    trial_id: str
    status: str
    objective: Optional[float]
    hyperparameters: Dict[str, Any]
    metrics: Dict[str, float]
    epochs_run: int
    best_epoch: Optional[int]
    seconds: Optional[float]
    error: Optional[str]


@dataclass
class SearchReport:
    """All trials of a search, completed ones best first, then the others by id."""

    objective: str
    direction: str
    project_dir: str
    trials: List[TrialRecord]

    @property
    def completed(self) -> List[TrialRecord]:
        return [t for t in self.trials if t.status == COMPLETED]

    @property
    def failed(self) -> List[TrialRecord]:
        return [t for t in self.trials if t.status in FAILED_STATUSES]

    @property
    def best(self) -> Optional[TrialRecord]:
        return self.completed[0] if self.completed else None

    def summary(self) -> str:
        """Counts, the best trial, and each failed trial's error."""
        unfinished = len(self.trials) - len(self.completed) - len(self.failed)
        lines = [f"Search: {len(self.trials)} trials, {len(self.completed)} completed, {len(self.failed)} failed"
                 + (f", {unfinished} unfinished" if unfinished else "")]
        if self.best is not None:
            lines.append(f"Best: trial {self.best.trial_id}, {self.objective}={self.best.objective:.4f}")
        for record in self.failed:
            lines.append(f"  trial {record.trial_id} failed: {record.error}")
        if self.failed:
            lines.append(f"  (tracebacks in {self.project_dir}/trial_<id>/trial.json)")
        return "\n".join(lines)

    def table(self) -> str:
        """The trials as aligned text columns, best first."""
        rows = [["trial", "status", self.objective, *self.hyperparameter_names(), "epochs run", "best epoch", "seconds"]]
        for record in self.trials:
            rows.append([record.trial_id, record.status, _format(record.objective),
                         *(_format(record.hyperparameters.get(name)) for name in self.hyperparameter_names()),
                         str(record.epochs_run), _format(record.best_epoch), _format(record.seconds, ".0f")])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)

    def hyperparameter_names(self) -> List[str]:
        names: Dict[str, None] = {}
        for record in sorted(self.trials, key=_trial_number):
            names.update(dict.fromkeys(record.hyperparameters))
        return list(names)

    def to_dict(self) -> dict:
        return {
            "objective": self.objective, "direction": self.direction, "project_dir": self.project_dir,
            "completed": len(self.completed), "failed": len(self.failed),
            "best_trial": None if self.best is None else self.best.trial_id,
            "trials": [asdict(t) for t in self.trials],
        }

    def write(self, directory: Path) -> List[Path]:
        """Write ``trials.csv``, ``trials.json`` and ``trials.png`` (see ``plot_trials``) into ``directory``."""
        paths = [Path(directory) / name for name in RESULT_FILES]
        columns = ["trial_id", "status", self.objective, *self.hyperparameter_names(),
                   "epochs_run", "best_epoch", "seconds", "error"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for record in self.trials:
            writer.writerow({"trial_id": record.trial_id, "status": record.status, self.objective: record.objective,
                             **record.hyperparameters, "epochs_run": record.epochs_run,
                             "best_epoch": record.best_epoch, "seconds": record.seconds, "error": record.error})
        write_text(paths[0], buffer.getvalue())
        write_json(paths[1], self.to_dict())
        plot_trials(self, paths[2])
        return paths


class SearchFailedError(TfftError, RuntimeError):
    """A search with no completed trial, or one KerasTuner stopped after repeated failures."""

    def __init__(self, message: str, report: SearchReport):
        super().__init__(message)
        self.report = report


def collect_report(tuner: "TfftTuner") -> SearchReport:
    """The report of a ``TfftTuner``'s project, ordered as ``oracle.get_best_trials`` orders trials."""
    oracle = tuner.oracle
    trials = sorted(oracle.trials.values(), key=_trial_number)
    completed = sorted((t for t in trials if t.status == COMPLETED), key=lambda t: t.score,
                       reverse=oracle.objective.direction == "max")
    records = []
    for trial in completed + [t for t in trials if t.status != COMPLETED]:
        info = tuner.trial_info(trial.trial_id)
        records.append(TrialRecord(
            trial_id=trial.trial_id,
            status=str(trial.status),
            objective=trial.score if trial.status == COMPLETED else None,
            hyperparameters=dict(trial.hyperparameters.values),
            metrics={name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics},
            epochs_run=info.get("epochs_run", 0),
            best_epoch=None if info.get("best_epoch") is None else info["best_epoch"] + 1,
            seconds=info.get("seconds"),
            error=_error_of(trial.message) if trial.status in FAILED_STATUSES else None,
        ))
    return SearchReport(oracle.objective.name, oracle.objective.direction, str(tuner.project_dir), records)


def plot_trials(report: SearchReport, path: Path) -> None:
    """Objective per trial (failed trials marked at the bottom), and objective against learning rate."""
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(figsize=(11, 4))
    by_trial, by_rate = figure.subplots(1, 2)
    completed = sorted(report.completed, key=_trial_number)
    by_trial.plot([_trial_number(t) for t in completed], [t.objective for t in completed], "o-", label="completed")
    if report.best is not None:
        by_trial.plot([_trial_number(report.best)], [report.best.objective], "*", markersize=15, label="best")
    if report.failed:
        floor = min((t.objective for t in completed), default=0.0)
        by_trial.plot([_trial_number(t) for t in report.failed], [floor] * len(report.failed), "rx", label="failed")
    by_trial.set(xlabel="trial", ylabel=report.objective, title=f"{report.objective} per trial")
    by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_trial.legend()
    rated = [t for t in completed if "learning_rate" in t.hyperparameters]
    by_rate.scatter([t.hyperparameters["learning_rate"] for t in rated], [t.objective for t in rated])
    by_rate.set(xscale="log" if rated else "linear", xlabel="learning rate", ylabel=report.objective,
                title=f"{report.objective} vs learning rate")
    for ax in (by_trial, by_rate):
        ax.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)


def _trial_number(trial) -> int:
    """Trial ids are zero-padded counters; order by their number."""
    return int(trial.trial_id)


def _error_of(message: Optional[str]) -> str:
    """The exception line(s) that end a Python traceback, after the indented stack frames."""
    lines = (message or "").rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith(" ")]
    error = "\n".join(lines[frames[-1] + 1:] if frames else lines[-1:])
    return error or "unknown error (no message recorded)"


def _format(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
