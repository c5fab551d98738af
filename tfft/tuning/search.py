"""``tfft tune`` end to end: search, write the results, and make the best trial a run directory.

    DIR/search/         KerasTuner's project (see tfft.tuning.tuner); rerunning resumes it
    DIR/trials.csv      every trial, best first (also .json, and .png plots)
    DIR/best/           the best trial as a ``tfft train`` run directory, written by
                        ``training.artifacts.write_run``, so ``tfft evaluate`` and ``tfft predict`` take it
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import keras_tuner as kt

from tfft.config import TrainConfig
from tfft.distribution import Cluster
from tfft.ownership import RUN, mark, remove_owned, resolved
from tfft.run_dir import HISTORY_CSV, work_dir_of
from tfft.training.artifacts import TrainResult, write_run
from tfft.training.data import PreparedData, encode_training_examples
from tfft.training.fit import fit_model, read_history
from tfft.training.lifecycle import refuse_data_inside
from tfft.tuning.distributed import DEFAULT_LEASE_SECONDS, search_role, workers_told_of_failure
from tfft.tuning.options import SearchSpace
from tfft.tuning.results import SearchReport
from tfft.tuning.tuner import ScheduleSegment, TfftTuner, create_tuner, tune_dir_of

BEST_SUBDIR = "best"


@dataclass
class TuneResult:
    """What ``tune`` produced."""

    directory: Path
    report: SearchReport
    best_run: TrainResult
    files: List[Path]


def tune(config: TrainConfig, *, tuner: str = "random", max_trials: int = 10, space: Optional[SearchSpace] = None,
         hyperparameters: Optional[kt.HyperParameters] = None, tune_new_entries: bool = True,
         retrain_on_all: bool = False, overwrite: bool = False, hyperband_factor: int = 3,
         callbacks: Sequence = (), data: Optional[PreparedData] = None,
         lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Optional[TuneResult]:
    """Search (resuming an existing search unless ``overwrite``), print and write the trial
    table, and write the best trial to ``DIR/best`` (see ``export_best``). ``data``: the
    config's data if already read (``prepare_data(config)``). A worker of a distributed search
    (``tfft.tuning.distributed``) runs trials and returns None: the chief writes the results. A
    chief that fails before serving the search tells the workers why for ``lease_seconds``, then raises."""
    directory = tune_dir_of(config)
    with workers_told_of_failure(search_role(), lease_seconds):  # else they wait for an oracle that never comes
        refuse_data_inside(config, directory, "the search partly replaces (search/, best/)")
        search = create_tuner(config, tuner=tuner, max_trials=max_trials, space=space,
                              hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
                              directory=directory, overwrite=overwrite, hyperband_factor=hyperband_factor, data=data,
                              lease_seconds=lease_seconds)
    data = search.hypermodel.data
    print(f"Tuning {config.task} on {len(data.train_examples)} examples with {tuner} search, at most {max_trials} "
          f"trials, objective {search.oracle.objective.name} ({search.oracle.objective.direction})", flush=True)
    report = search.search(callbacks)
    if report is None:
        return None
    print(report.table(), flush=True)
    files = report.write(directory)
    best_run = export_best(search, directory / BEST_SUBDIR, retrain_on_all=retrain_on_all)
    return TuneResult(directory, report, best_run, files + [best_run.run_dir])


def export_best(tuner: TfftTuner, run_dir: Path, retrain_on_all: bool = False) -> TrainResult:
    """Write the best trial as a run directory with :func:`tfft.training.artifacts.write_run`.

    By default that is the trial's own model (best-epoch weights) and history. With
    ``retrain_on_all`` its configuration is retrained on train+validation data (no
    validation left for early stopping) for ``epochs_to_best`` epochs of the same
    learning-rate schedule; the saved config then names no validation file.
    """
    started = time.time()
    trial = tuner.oracle.get_best_trials(1)[0]
    data = tuner.hypermodel.data
    config = dataclasses.replace(tuner.hypermodel.config_for(trial.hyperparameters.copy()), output_dir=str(run_dir))
    work_dir = work_dir_of(resolved(run_dir))
    remove_owned(work_dir, RUN)  # a leftover of an earlier export may hold another trial
    mark(work_dir, RUN)
    if retrain_on_all:
        examples = data.train_examples + data.validation_examples
        data = PreparedData(data.tokenizer, data.label_map, examples, None,
                            encode_training_examples(config, data.tokenizer, examples, data.label_map))
        config = dataclasses.replace(config, validation=None)
        print(f"Retraining trial {trial.trial_id}'s configuration on {len(examples)} train+validation examples",
              flush=True)
        model, best_epoch, history = fit_model(  # under the trials' strategy
            config, data, work_dir, cluster=Cluster.of(config), backup=False,
            extra_callbacks=[ScheduleSegment(0, tuner.epochs_to_best(trial))])
        return write_run(config, data, model, work_dir, best_epoch, history, started)
    shutil.copytree(tuner.fit_dir(trial.trial_id), work_dir, dirs_exist_ok=True)
    model = tuner.load_model(trial)
    return write_run(config, data, model, work_dir, tuner.trial_info(trial.trial_id)["best_epoch"],
                     read_history(work_dir / HISTORY_CSV), started)
