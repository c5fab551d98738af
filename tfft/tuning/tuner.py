"""A KerasTuner ``Tuner`` whose trials are tfft fits, and the oracle (search algorithm) choice.

KerasTuner 1.4.8 works with Keras 3 and rejects the tf-keras models tfft trains, and its
callbacks cannot be given to a tf-keras ``fit``. ``TfftTuner`` therefore overrides the
extension points KerasTuner provides for custom training: ``run_trial`` fits with
``tfft.training.fit.fit_model`` (tfft's validation metrics, early stopping and best-epoch restore)
and returns the best epoch's metrics; ``save_model``/``load_model`` keep each trial's best
weights. Everything else (oracles, resuming a project, ``results_summary``,
``get_best_hyperparameters``, ``get_best_models``) is KerasTuner's own.

    DIR/search/trial_<id>/trial.json        KerasTuner's trial record (hyperparameters, score, status)
    DIR/search/trial_<id>/weights.h5        the trial's best-epoch weights
    DIR/search/trial_<id>/tfft_trial.json   epochs run, best epoch, seconds spent
    DIR/search/trial_<id>/fit/              the fit's history.csv and TensorBoard logs

A search can also run on several processes, KerasTuner's chief/worker way: see
``tfft.tuning.distributed``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import keras_tuner as kt

from tfft.backend import keras
from tfft.config import TrainConfig
from tfft.distribution import Cluster
from tfft.errors import ConfigError
from tfft.files import atomic_write, hdf5_written_in_memory, write_json
from tfft.ownership import Kind, check_owned, checked_name, mark
from tfft.training.callbacks import BestWeightsCheckpoint
from tfft.run_dir import BEST_WEIGHTS, HISTORY_CSV
from tfft.training.data import PreparedData, prepare_data
from tfft.training.fit import fit_model, read_history
from tfft.tuning.distributed import (
    CHIEF, DEFAULT_LEASE_SECONDS, WORKER, SearchStoppedError, TrialLease, forget_ended_retries, lease_renewal,
    nothing_left, patient_client, search_role, serve_oracle,
)
from tfft.tuning.hypermodels import TfftHyperModel
from tfft.tuning.options import TUNERS, SearchSpace
from tfft.tuning.results import SearchFailedError, SearchReport, collect_report

SEARCH_SUBDIR = "search"
FIT_SUBDIR = "fit"
WEIGHTS_FILE = "weights.h5"
TRIAL_INFO_FILE = "tfft_trial.json"
TUNER_KEY = "tfft_tuner"  # in KerasTuner's record of a tuner (DIR/search/<tuner id>.json): the search's --tuner
# A search directory; one written before tfft marked its directories holds KerasTuner's oracle.json.
SEARCH = Kind("search", legacy=((f"{SEARCH_SUBDIR}/oracle.json",),))


def tune_dir_of(config: TrainConfig) -> Path:
    """Where a search over ``config`` lives: ``--output-dir``, else ``runs/<task>-tune``."""
    return Path(config.output_dir or f"runs/{config.task}-tune")


class ScheduleSegment(keras.callbacks.Callback):
    """Train only epochs ``[start_epoch, stop_epoch)`` of a fit whose schedule spans ``config.epochs``.

    Hyperband trains a configuration in rounds: a later round continues the earlier
    round's best weights (``initial_weights``) and the optimizer step count is moved to
    ``start_epoch``, so the learning rate carries on along the same warmup/decay
    schedule rather than warming up again. Put before ``BackupAndRestore`` (as
    ``fit_model``'s extra callbacks are) so a resumed fit restores its own later state.
    """

    def __init__(self, start_epoch: int, stop_epoch: int, initial_weights: Optional[Path] = None):
        super().__init__()
        self.start_epoch = start_epoch
        self.stop_epoch = stop_epoch
        self.initial_weights = initial_weights

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        if self.initial_weights is not None:
            self.model.load_weights(str(self.initial_weights))
        self.model.optimizer.iterations.assign(self.start_epoch * self.params["steps"])

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if epoch + 1 >= self.stop_epoch - self.start_epoch:
            self.model.stop_training = True


class LeaseGuard(keras.callbacks.Callback):
    """Stop a worker's fit once its lease on the trial is lost, and confirm the lease after an
    epoch's last batch, before the epoch-end callbacks (checkpoint, history, backup) write
    into the trial directory: a worker that lost its trial never writes there again."""

    def __init__(self, lease: TrialLease):
        super().__init__()
        self.lease = lease

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.lease.check()

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if batch + 1 >= (self.params.get("steps") or float("inf")):
            self.lease.check()
        else:
            self.lease.raise_if_lost()


class BoundedHyperbandOracle(kt.oracles.HyperbandOracle):
    """KerasTuner's Hyperband, also stopping at ``max_trials`` (which ``Oracle.create_trial``
    honours), so ``--max-trials`` bounds every tuner alike."""

    def __init__(self, max_trials: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.max_trials = max_trials


def _free_or_search(directory: Path) -> bool:
    """Whether ``directory`` is absent, empty or a search directory; a worker leaves any other to the chief,
    which refuses it and tells the workers why."""
    try:
        check_owned(directory, SEARCH)
    except ConfigError:
        return False
    return True


class TfftTuner(kt.Tuner):
    """A KerasTuner ``Tuner`` over a ``TfftHyperModel``: ``search``, ``results_summary``,
    ``get_best_hyperparameters`` and ``get_best_models`` (tf-keras models with the trial's
    best weights) work as for any tuner. ``overwrite=False`` resumes a project: finished
    trials are kept and an interrupted one is rerun, resuming its fit where it stopped.

    In a distributed search (``tfft.tuning.distributed``) the chief serves the oracle and
    workers run trials, renewing a lease on each every ``lease_seconds / 4``; a worker never
    deletes the shared project (``overwrite`` is ignored there)."""

    def __init__(self, oracle: kt.Oracle, hypermodel: TfftHyperModel, directory: Path,
                 project_name: str = SEARCH_SUBDIR, overwrite: bool = False,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS):
        if not isinstance(hypermodel, TfftHyperModel):
            raise TypeError(f"TfftTuner trains through tfft's fit loop and needs a TfftHyperModel; got {hypermodel!r}")
        self.role = search_role()
        self.lease_seconds = lease_seconds
        if overwrite and self.role == WORKER:
            print("--overwrite is ignored on a worker: only the chief may discard the shared search", flush=True)
            overwrite = False
        if self.role != WORKER:
            check_owned(directory, SEARCH)
        elif _free_or_search(directory):  # a worker that starts first marks it, so the chief finds its own kind
            mark(directory, SEARCH)
        super().__init__(oracle=oracle, hypermodel=hypermodel, directory=str(directory),
                         project_name=project_name, overwrite=overwrite)
        if self.role != WORKER:
            mark(directory, SEARCH)
        if self.role == WORKER:
            self.oracle = patient_client(self.oracle)

    def reload(self) -> None:
        """KerasTuner's resume of the project; a project it cannot read is refused with a ConfigError
        naming the file and ``--overwrite`` (KerasTuner raises its own Python advice, or a JSON error)."""
        project = Path(self.project_dir)
        own = Path(self._get_tuner_fname())
        records = [own]
        if self.role != WORKER:  # a worker reads only its own record; the chief reads the oracle's
            records += [project / "oracle.json", *sorted(project.glob("trial_*/trial.json"))]
        states = {}
        for path in records:
            try:
                states[path] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise _unreadable(path, project, error) from None
        # Checked by the chief (or a search alone); the workers learn of a refusal from it.
        started_with = states[own].get(TUNER_KEY) if self.role != WORKER and isinstance(states[own], dict) else None
        if started_with not in (None, _tuner_name(self.oracle)):
            raise ConfigError(f"{own}: the search in {project} was started with --tuner {started_with}; rerun with "
                              f"--tuner {started_with}, or pass --overwrite to discard it")
        try:
            super().reload()
        except RuntimeError:  # KerasTuner's reload: the oracle's state lacks this oracle's keys
            raise ConfigError(f"{project / 'oracle.json'}: cannot resume the search with --tuner "
                              f"{_tuner_name(self.oracle)}: it was started with another --tuner (or another "
                              "KerasTuner version); rerun with its own --tuner, or pass --overwrite to discard it"
                              ) from None
        except (KeyError, TypeError, ValueError) as error:  # JSON of the wrong shape in a record
            raise _unreadable(project, project, error) from None
        if self.role != WORKER:
            forget_ended_retries(self.oracle)

    def get_state(self) -> dict:
        """What KerasTuner saves as this tuner's record: which ``--tuner`` the search is (checked on resume)."""
        return {**super().get_state(), TUNER_KEY: _tuner_name(self.oracle)}

    def _populate_initial_space(self) -> None:
        # KerasTuner builds the model repeatedly here to discover conditional
        # hyperparameters. tfft's space has none and is declared without a model,
        # which saves loading a checkpoint whenever a tuner is created.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def search(self, callbacks: Sequence = (), verbose: int = 1) -> Optional[SearchReport]:
        """Run trials until ``max_trials`` (counting earlier runs of the project) or the oracle is done.

        ``callbacks``: extra tf-keras callbacks for every trial's ``fit`` (copied per trial).
        Prints how many trials completed and failed, with each failure's error, and returns
        the report. Raises ``SearchFailedError`` (with that summary) when no trial has
        completed, or when KerasTuner stopped the search after ``max_consecutive_failed_trials``
        failures in a row. The chief of a distributed search serves the oracle until the
        search is over, then reports; a worker runs trials and returns None (its copy of the
        oracle knows nothing of the other workers' trials).
        """
        if self.role == WORKER:
            with self.oracle.watchdog(self.lease_seconds + self.oracle.connect_seconds):
                super().search(callbacks=list(callbacks))
            print(f"{self.tuner_id}: no trials left; the chief writes the results", flush=True)
            return None
        self.oracle.verbose = verbose
        if nothing_left(self.oracle):
            print(f"The search in {self.project_dir} is finished: its {len(self.oracle.trials)} trials have ended "
                  f"(--max-trials {self.oracle.max_trials}); none is run again. Pass a larger --max-trials to run "
                  "more, or --overwrite to start over.", flush=True)
        try:
            if self.role == CHIEF:
                self.save()
                serve_oracle(self.oracle, self.lease_seconds)
            else:
                super().search(callbacks=list(callbacks))
        except SearchStoppedError as error:  # the chief's servicer stopped it (trials failed in a row)
            report = collect_report(self)
            raise SearchFailedError(f"{error}\n{report.summary()}", report) from error
        except RuntimeError as error:
            report = collect_report(self)
            if not report.failed:
                raise
            raise SearchFailedError(f"KerasTuner stopped the search: {str(error).splitlines()[0]}\n"
                                    f"{report.summary()}", report) from error
        report = collect_report(self)
        if not report.completed:
            raise SearchFailedError(report.summary(), report)
        print(report.summary(), flush=True)
        return report

    def run_trial(self, trial: kt.engine.trial.Trial, callbacks: Sequence = ()) -> Dict[str, float]:
        """Fit the trial's configuration; return its best epoch's metrics (``val_*`` and ``loss``)."""
        started = time.monotonic()
        with lease_renewal(self.oracle, trial.trial_id, self.lease_seconds) as lease:
            return self._run_trial(trial, callbacks, lease, started)

    def _run_trial(self, trial: kt.engine.trial.Trial, callbacks: Sequence, lease: Optional[TrialLease],
                   started: float) -> Dict[str, float]:
        hp = trial.hyperparameters
        fit_dir = self.fit_dir(trial.trial_id)
        previous = self.trial_info(trial.trial_id)
        if "best_epoch" in previous:
            # This trial's fit finished before the process stopped: start over rather than
            # append to its history. An interrupted fit resumes (fit_model's BackupAndRestore).
            shutil.rmtree(fit_dir, ignore_errors=True)
        info = {"seconds": previous.get("seconds", 0.0)}
        try:
            config = self.hypermodel.config_for(hp)
            # Only while this worker holds the trial (a distributed search) may it write there.
            guard = [LeaseGuard(lease)] if lease is not None else []
            segment = []
            if "tuner/epochs" in hp.values:
                parent = hp.values.get("tuner/trial_id")
                segment.append(ScheduleSegment(hp.values["tuner/initial_epoch"], hp.values["tuner/epochs"],
                                               self.weights_path(parent) if parent else None))
            keras.backend.clear_session()  # free the previous trial's graphs
            if self.role == WORKER:
                print(f"{self.tuner_id}: running trial {trial.trial_id}", flush=True)
            model, best_epoch, history = fit_model(config, self.hypermodel.data, fit_dir, cluster=Cluster.of(config),
                                                   extra_callbacks=guard + copy.deepcopy(list(callbacks)) + segment)
            if lease is not None:
                lease.check()
            self.save_model(trial.trial_id, model, step=best_epoch)
            BestWeightsCheckpoint.discard(fit_dir / BEST_WEIGHTS)  # superseded by weights.h5
            info["best_epoch"] = best_epoch
            return {name: values[best_epoch] for name, values in history.items()
                    if name != "epoch" and len(values) > best_epoch}
        finally:
            if lease is None or not lease.lost:
                info["seconds"] += time.monotonic() - started
                info["epochs_run"] = max(map(len, read_history(fit_dir / HISTORY_CSV).values()), default=0)
                write_json(self.trial_dir(trial.trial_id) / TRIAL_INFO_FILE, info)
            else:
                print(f"{self.tuner_id}: stopped trial {trial.trial_id}: {lease.refusal}", flush=True)

    def save_model(self, trial_id: str, model, step: int = 0) -> None:
        """Keep the trial's best-epoch weights (``step``: that epoch, recorded in ``tfft_trial.json``)."""
        with hdf5_written_in_memory():  # a full disk: an OSError, not a crash
            atomic_write(self.weights_path(trial_id), lambda tmp: model.save_weights(tmp))

    def load_model(self, trial: kt.engine.trial.Trial):
        """The trial's tf-keras model with its best-epoch weights."""
        model = self.hypermodel.build(trial.hyperparameters.copy())
        model.load_weights(str(self.weights_path(trial.trial_id)))
        return model

    def trial_dir(self, trial_id: str) -> Path:
        checked_name(trial_id, "a trial id")  # from the chief of a distributed search: stays in the search
        return Path(self.get_trial_dir(trial_id))

    def fit_dir(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / FIT_SUBDIR

    def weights_path(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / WEIGHTS_FILE

    def trial_info(self, trial_id: str) -> dict:
        """``{"seconds", "epochs_run", "best_epoch" (0-based; only when completed)}``, or {} before a trial ran."""
        path = self.trial_dir(trial_id) / TRIAL_INFO_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def epochs_to_best(self, trial: kt.engine.trial.Trial) -> int:
        """Epochs from scratch to the trial's best epoch (a Hyperband round counts its parents' epochs)."""
        return trial.hyperparameters.values.get("tuner/initial_epoch", 0) + self.trial_info(trial.trial_id)["best_epoch"] + 1


def _unreadable(path: Path, project: Path, error: Exception) -> ConfigError:
    return ConfigError(f"{path}: cannot resume the search in {project}: not a readable KerasTuner record "
                       f"({type(error).__name__}: {error}); pass --overwrite to discard the search, or choose "
                       "another --output-dir")


def _tuner_name(oracle: kt.Oracle) -> str:
    """The ``--tuner`` that makes ``oracle`` (see ``make_oracle``), else the oracle's class name."""
    oracle = getattr(oracle, "_oracle", oracle)  # a worker's client: the oracle it was made from
    for name, kind in (("hyperband", kt.oracles.HyperbandOracle), ("bayesian", kt.oracles.BayesianOptimizationOracle),
                       ("random", kt.oracles.RandomSearchOracle)):
        if isinstance(oracle, kind):
            return name
    return type(oracle).__name__


def make_oracle(tuner: str, objective: kt.Objective, *, max_trials: int, max_epochs: int,
                hyperparameters: Optional[kt.HyperParameters] = None, tune_new_entries: bool = True,
                seed: Optional[int] = None, hyperband_factor: int = 3,
                max_consecutive_failed_trials: int = 3) -> kt.Oracle:
    """KerasTuner's oracle for ``tuner`` (random, bayesian or hyperband, bounded by ``max_trials``)."""
    common = dict(objective=objective, hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
                  seed=seed, max_consecutive_failed_trials=max_consecutive_failed_trials)
    if tuner == "random":
        return kt.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if tuner == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    if tuner == "hyperband":
        return BoundedHyperbandOracle(max_trials=max_trials, max_epochs=max_epochs, factor=hyperband_factor, **common)
    raise ConfigError(f"The 'tuner' option must be one of {', '.join(TUNERS)}. Got {tuner!r} instead.")


def create_tuner(config: TrainConfig, *, tuner: str = "random", max_trials: int = 10,
                 space: Optional[SearchSpace] = None, hyperparameters: Optional[kt.HyperParameters] = None,
                 tune_new_entries: bool = True, directory: Optional[Path] = None, overwrite: bool = False,
                 data: Optional[PreparedData] = None, hyperband_factor: int = 3,
                 max_consecutive_failed_trials: int = 3, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> TfftTuner:
    """A tuner searching ``space`` (default ``SearchSpace.default(config)``) around ``config``.

    The objective is ``config.monitor_metric`` (val_f1 for tokens, val_accuracy or e.g.
    val_macro_f1 for sequences), maximised (minimised for a loss). ``hyperparameters`` and
    ``tune_new_entries`` are KerasTuner's: register entries there to override the space,
    and with ``tune_new_entries=False`` only those are searched, the rest keeping the
    config's values. The project lives in ``directory/search`` (default
    ``tune_dir_of(config)``); an existing one is resumed unless ``overwrite``. ``data``:
    the config's data if already read (default: ``prepare_data(config)``), whose resolved
    configuration (``data.config``) is the one searched. ``lease_seconds``: in a
    distributed search, how long the chief waits for a silent worker before running its trial again.
    """
    if not config.validation:
        raise ConfigError("Tuning needs validation data (--validation): the objective is a validation metric.")
    if max_trials < 1:
        raise ConfigError(f"The 'max_trials' option must be a positive integer. Got {max_trials!r} instead.")
    if config.strategy == "multi-worker":
        raise ConfigError("A search runs each trial in one process: give trials --strategy mirrored (a worker's "
                          "GPUs) and spread trials over processes with a distributed search (docs/tuning.md, 'A distributed search').")
    data = data or prepare_data(config)
    config = data.config or config  # resolved for the data (an unset batch size and number of epochs settled)
    space = space or SearchSpace.default(config)
    if tuner == "hyperband":
        if space.epochs not in (None, SearchSpace.default(config).epochs):
            raise ConfigError("Hyperband sets each trial's epochs itself, up to --epochs; drop the epochs search range.")
        space = dataclasses.replace(space, epochs=None)
    oracle = make_oracle(
        tuner, kt.Objective(config.monitor_metric, config.monitor_mode), max_trials=max_trials,
        max_epochs=config.epochs, hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
        seed=config.seed, hyperband_factor=hyperband_factor, max_consecutive_failed_trials=max_consecutive_failed_trials,
    )
    return TfftTuner(oracle, TfftHyperModel(config, data, space), directory=directory or tune_dir_of(config),
                     overwrite=overwrite, lease_seconds=lease_seconds)

