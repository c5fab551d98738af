"""One ``model.fit`` with tfft's callbacks: validation scores, best checkpoint, early stopping, logs, backup.

Callbacks go in the order Keras needs: ``ValidationMetrics`` first, so that the best
checkpoint, early stopping and the CSV log see the ``val_*`` scores it writes.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfft.backend import keras
from tfft.config import TrainConfig
from tfft.distribution import Cluster
from tfft.run_dir import BACKUP_SUBDIR, BEST_WEIGHTS, EARLY_STOPPING_STATE, HISTORY_CSV, LOGS_SUBDIR
from tfft.training.callbacks import (BestWeightsCheckpoint, EarlyStoppingAfterLearning, LastEpochsAveraging, ProgressLog,
                                     StopOnNonFiniteLoss)
from tfft.training.data import PreparedData
from tfft.training.model import create_model
from tfft.training.timing import FitTimes, Stopwatch


def fit_model(config: TrainConfig, data: PreparedData, work_dir: Optional[Path], *, cluster: Cluster,
              backup_dir: Optional[Path] = None, backup: bool = True, extra_callbacks: Sequence = (),
              stopwatch: Optional[Stopwatch] = None) -> Tuple[keras.Model, Optional[int], Dict[str, List[float]]]:
    """Seed, build, ``model.fit`` with tfft's callbacks, and restore the best epoch's weights.

    ``work_dir`` receives the best checkpoint, ``history.csv``, TensorBoard logs and
    (with ``backup``) the ``BackupAndRestore`` state that lets a rerun resume, in
    ``backup_dir`` (default: ``work_dir/backup``; the chief's, on the other workers of a cluster).
    Runs in ``cluster``'s strategy. Returns ``(model, best_epoch or None, history)``.

    The other workers of a cluster (``work_dir`` None) write nothing of their own: they skip the
    validation scoring (they take the chief's scores), the best checkpoint, the CSV and TensorBoard
    logs, whose results only the chief keeps, and return the best epoch of the history ``fit``
    returns. Every worker draws its own dropout masks (the seed is offset by the worker's index
    once the model's initial weights, which the strategy takes from the chief, are built).
    ``stopwatch`` receives the seconds spent building the input pipeline and the model, on the
    first step, on the other steps and on validation.
    """
    stopwatch = stopwatch or Stopwatch()
    writer = work_dir is not None
    if not writer and cluster.is_chief:
        raise ValueError("the chief of a run needs a work directory")
    keras.utils.set_random_seed(config.seed)
    with stopwatch.phase("data"):
        train_dataset, steps_per_epoch = data.train_dataset(config, cluster)
    with stopwatch.phase("model"):
        model = create_model(config, data.label_map, steps_per_epoch, data.targets, cluster)
    keras.utils.set_random_seed(config.seed + cluster.index)
    fit_times = FitTimes()
    callbacks: List[keras.callbacks.Callback] = [StopOnNonFiniteLoss(divergence_advice(config, work_dir)), fit_times]
    backup_dir = backup_dir or work_dir / BACKUP_SUBDIR
    if config.average_epochs > 1:  # before the validation scores: the last epoch is scored (and kept) as the average
        callbacks.append(LastEpochsAveraging(config.average_epochs, backup_dir if backup else None,
                                             save_state=cluster.is_chief))
    validation_metrics = data.validation_metrics(config, cluster)
    checkpoint = None
    if validation_metrics is not None:
        callbacks.append(validation_metrics)
        if writer:
            checkpoint = BestWeightsCheckpoint(work_dir / BEST_WEIGHTS, monitor=config.monitor_metric,
                                               mode=config.monitor_mode)
            callbacks.append(checkpoint)
        # Its state lives with the backup (the chief's, which every worker resumes from).
        callbacks.append(EarlyStoppingAfterLearning(monitor=config.monitor_metric, mode=config.monitor_mode,
                                                    patience=config.patience, verbose=1,
                                                    state_path=backup_dir / EARLY_STOPPING_STATE if backup else None,
                                                    save_state=cluster.is_chief))
    callbacks += list(extra_callbacks)
    if writer:
        work_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(work_dir / HISTORY_CSV), append=True))
        if config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(work_dir / LOGS_SUBDIR), update_freq="epoch"))
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir)))
    interactive = os.isatty(1)
    if not interactive:
        # Mean rows per step: right for fixed batch sizes and for --batch-tokens alike.
        callbacks.append(ProgressLog(len(data.row_lengths) / steps_per_epoch))  # every worker's rows
    with cluster.scope(), cluster.peers_watched():
        fitted = model.fit(train_dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                           callbacks=callbacks, verbose=1 if interactive else 2)
    fit_times.record(stopwatch, validation_metrics.seconds if validation_metrics is not None else 0.0)
    if not writer:
        history = {name: [float(v) for v in values] for name, values in fitted.history.items()}
        return model, best_epoch_of(history.get(config.monitor_metric), config.monitor_mode), history
    best_epoch = checkpoint.restore() if checkpoint is not None else None
    return model, best_epoch, read_history(work_dir / HISTORY_CSV)


def divergence_advice(config: TrainConfig, work_dir: Optional[Path]) -> str:
    """What a diverged fit's error tells the user: the options to change, and what became of the run."""
    options = [f"a lower --learning-rate (it was {config.learning_rate:g})"]
    if config.precision != "fp32":
        options.append(f"--precision fp32 (it was {config.precision})")
    kept = (f"; the unfinished run stays in {work_dir} for inspection, and a run with other options there needs "
            "--overwrite" if work_dir is not None else "")
    return f"Train again with {' or '.join(options)}. Nothing was recorded as a finished run{kept}."


def best_epoch_of(values: Optional[List[float]], mode: str) -> Optional[int]:
    """The first epoch (0-based) with the best value, as the best checkpoint keeps it; None without values."""
    if not values:
        return None
    return int(np.argmin(values) if mode == "min" else np.argmax(values))


def read_history(path: Path) -> Dict[str, List[float]]:
    """Read Keras' CSVLogger file (which survives a resume) into ``{metric: [per epoch]}``.

    Rows are keyed by their ``epoch`` column, the last row of an epoch winning: a run killed
    after the CSV row but before the backup repeats that epoch on resume and logs it twice.
    """
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle) if row.get("epoch", "").isdigit()}
    ordered = [rows[epoch] for epoch in sorted(rows)]
    keys = [key for key in (ordered[0] if ordered else {}) if key != "epoch"]
    return {key: [float(row[key]) for row in ordered if row.get(key) not in (None, "", "NA")] for key in keys}
