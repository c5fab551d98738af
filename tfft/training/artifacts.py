"""What a finished run leaves: the model, tokenizer, config, labels, metrics, history and reports.

Written into the work directory, which then replaces the run directory in one move.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from tfft.config import TrainConfig
from tfft.data import MULTI_LABEL_CLASSIFICATION
from tfft.evaluation import evaluate_examples, plot_training_curves
from tfft.features import inference_length
from tfft.files import hdf5_written_in_memory, replace_directory, write_json
from tfft.lora import save_adapters
from tfft.metrics import decision_metric_for
from tfft.ownership import RUN, check_owned, mark, resolved
from tfft.run_dir import (
    BACKUP_SUBDIR, BEST_WEIGHTS, CONFIG_FILE, HISTORY_FILE, LABELS_FILE, METRICS_FILE, MODEL_SUBDIR, REPORTS_SUBDIR,
    RUN_KEY_FILE,
)
from tfft.training.callbacks import BestWeightsCheckpoint
from tfft.training.data import PreparedData
from tfft.training.timing import Stopwatch


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: Optional[int]
    best_scores: Dict[str, float]
    history: Dict[str, List[float]]
    num_truncated: int
    seconds: float


def write_run(config: TrainConfig, data: PreparedData, model, work_dir: Path, best_epoch: Optional[int],
              history: Dict[str, List[float]], started: float, stopwatch: Optional[Stopwatch] = None) -> TrainResult:
    """Complete ``work_dir`` (model, tokenizer, config, labels, metrics, reports) and move it onto the run directory.

    ``stopwatch``: the run's phases so far; the final report and the writing are added, and all of
    them printed and kept in ``metrics.json`` (``seconds``)."""
    stopwatch = stopwatch or Stopwatch()
    best_scores = scores_of_epoch(history, best_epoch)
    report = None
    if data.validation_examples is not None:  # first: it chooses a multi-label model's decision rule, saved with it
        with stopwatch.phase("validation report"):
            report = evaluate_examples(
                model, data.tokenizer, data.validation_examples, data.label_map,
                max_length=inference_length(data.tokenizer, config.task, config.max_length),
                stride=config.stride, batch_size=config.eval_batch_size, jit_compile=config.xla,
                word_inputs=config.word_inputs, at_least_one=data.every_text_labelled,
                choose_rule_for=decision_metric_for(config.monitor_metric) if config.task == MULTI_LABEL_CLASSIFICATION
                else None,
            )
    with stopwatch.phase("writing"), hdf5_written_in_memory():  # a full disk: an OSError, not a crash
        if config.lora_rank:  # the adapters and head alone: the base checkpoint is named, not copied
            save_adapters(model, work_dir / MODEL_SUBDIR, config.model)
        else:
            model.save_pretrained(str(work_dir / MODEL_SUBDIR))
        data.tokenizer.save_pretrained(str(work_dir / MODEL_SUBDIR))
        config.save(work_dir / CONFIG_FILE)
        write_json(work_dir / LABELS_FILE, data.label_map.to_dict())
        write_json(work_dir / HISTORY_FILE, history)
        plot_training_curves(history, work_dir / REPORTS_SUBDIR / "training_curves.png")
        if report is not None:
            report.write(work_dir / REPORTS_SUBDIR, "validation")
        shutil.rmtree(work_dir / BACKUP_SUBDIR, ignore_errors=True)
        BestWeightsCheckpoint.discard(work_dir / BEST_WEIGHTS)
    # What no phase timed: locking and claiming the work directory, fit's set-up, restoring the best weights.
    stopwatch.add("other", time.time() - started - sum(v for k, v in stopwatch.seconds.items() if k != "start-up"))
    write_json(work_dir / METRICS_FILE, {
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "monitor": config.monitor_metric,
        "best": best_scores,
        "truncated_training_examples": data.encoding.num_truncated,
        "seconds": {name: round(seconds, 2) for name, seconds in stopwatch.seconds.items()},
    })
    if report is not None:
        print(report.text, flush=True)
    print(f"Time {stopwatch.report()}", flush=True)
    (work_dir / RUN_KEY_FILE).unlink(missing_ok=True)
    mark(work_dir, RUN)
    run_dir = resolved(config.run_dir)
    check_owned(config.run_dir, RUN)  # again: the directory may have changed while the run trained
    replace_directory(work_dir, run_dir)
    return TrainResult(run_dir, best_epoch, best_scores, history, data.encoding.num_truncated, time.time() - started)


def scores_of_epoch(history: Dict[str, List[float]], epoch: Optional[int]) -> Dict[str, float]:
    """The validation scores of ``epoch`` (0-based) in ``history``; none without an epoch."""
    if epoch is None:
        return {}
    return {k: v[epoch] for k, v in history.items() if k.startswith("val_") and len(v) > epoch}
