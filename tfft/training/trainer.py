"""Fit orchestration: data -> features -> tf.data -> model -> ``model.fit`` -> run directory.

A run works in a hidden sibling directory (``.<name>.partial``) and renames it onto the
run directory only when everything is written, so the run directory is never half
written. The work directory keeps ``BackupAndRestore`` state (with the early-stopping state)
and the run's options and data digests (``run_key.json``): running the same command after a
crash resumes from the last finished epoch, while a command with other options, or on a data
file edited since, is refused rather than continuing stale state.
A finished run directory is replaced only with ``overwrite``, and a lock file beside the
run directory keeps two processes from writing the same run.

Under a multi-worker strategy every worker runs ``train`` with the same options. The chief
does all of the above; the other workers train into a temporary directory that they remove,
share the chief's ``BackupAndRestore`` state (so they resume from the same epoch) and meet the
chief at barriers: after it has claimed the work directory, and before it moves the work
directory onto the run directory. The first barrier carries the chief's decision: when it
refuses to start (a finished run without ``overwrite``, the lock held, other options), every
worker stops at once with the chief's reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from tfft.backend import keras, tf
from tfft.config import DEFAULT_MAX_LENGTH, VALIDATION_METRICS, TrainConfig
from tfft.data.labels import LabelMap
from tfft.data.tfds import default_text_keys
from tfft.distribution import barrier, broadcast_reason, create_strategy, is_chief, worker_count, worker_index
from tfft.evaluation import evaluate_examples, plot_training_curves
from tfft.features import Encoding, encode_for_training, inference_length
from tfft.errors import ConfigError
from tfft.files import replace_directory, sha256_of, write_json
from tfft.lora import LoraSettings, absolute_base_model, add_adapters, describe, save_adapters
from tfft.heads import head_config
from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, TOKEN_CLASSIFICATION
from tfft.models import build_model, label_map_of, load_tokenizer, precision_scope, word_shapes_by_default
from tfft.pipeline import make_dataset, worker_input_fn
from tfft.recompute import recompute_encoder_layers
from tfft.run_dir import (
    BACKUP_SUBDIR, BEST_WEIGHTS, CONFIG_FILE, EARLY_STOPPING_STATE, MODEL_SUBDIR, REPORTS_SUBDIR, RUN_KEY_FILE,
    read_config_examples,
)
from tfft.training.callbacks import (
    BestWeightsCheckpoint, EarlyStoppingAfterLearning, ProgressLog, ValidationMetrics,
)
from tfft.training.losses import class_weights, target_scale, task_loss
from tfft.training.optimization import create_optimizer
from tfft.training.train_step import install_train_step

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: Optional[int]
    best_scores: Dict[str, float]
    history: Dict[str, List[float]]
    num_truncated: int
    seconds: float


def compile_model(model, config: TrainConfig, steps_per_epoch: int, targets: Optional[np.ndarray] = None,
                  optimizer: Optional[keras.optimizers.Optimizer] = None) -> None:
    """Attach tfft's optimizer and the task's loss to a model built by ``build_model``, in the current strategy.

    ``steps_per_epoch`` counts optimizer updates: with gradient accumulation a step takes
    ``gradient_accumulation_steps`` micro-batches (see ``tfft.training.train_step``). ``targets``:
    the training targets, which balanced class weights are computed from.
    ``optimizer`` replaces tfft's AdamW (still wrapped for fp16): the step tests use SGD, whose
    update is proportional to the gradient, where AdamW's first update (about the learning rate
    times the gradient's sign) would hide a gradient of the wrong scale.
    """
    optimizer = optimizer or create_optimizer(
        config.learning_rate,
        total_steps=steps_per_epoch * config.epochs,
        warmup_fraction=config.warmup_fraction,
        weight_decay=config.weight_decay,
    )
    if config.precision == "fp16":  # float16 gradients underflow without loss scaling
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    loss = task_loss(config, label_map_of(model), model.config, targets)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=config.xla)
    install_train_step(model, tf.distribute.get_strategy(), config.gradient_accumulation_steps, loss)


@dataclass
class PreparedData:
    """Everything read and encoded from the data once, reusable across fits (and tuner trials)."""

    tokenizer: object
    label_map: LabelMap
    train_examples: list
    validation_examples: Optional[list]
    encoding: Encoding

    @property
    def targets(self) -> Optional[np.ndarray]:
        """A sequence task's training targets, one per example (see :func:`tfft.features.text_targets`)."""
        return None if self.encoding.word_index is not None else self.encoding.labels

    def train_dataset(self, config: TrainConfig):
        """``(dataset, steps per epoch)``: the shuffled, length-bucketed training pipeline of the current
        strategy, whose steps each take ``gradient_accumulation_steps`` batches of ``config.batch_size``
        (the global batch, split among the replicas)."""
        strategy = tf.distribute.get_strategy()
        micro_batches = config.gradient_accumulation_steps
        options = dict(batch_size=config.batch_size * micro_batches, pad_token_id=self.tokenizer.pad_token_id,
                       seed=config.seed, num_buckets=config.num_buckets,
                       batch_tokens=config.batch_tokens and config.batch_tokens * micro_batches)
        if strategy.num_replicas_in_sync == 1:
            dataset = make_dataset(self.encoding, shuffle=True, **options)
            return dataset, int(dataset.cardinality())
        config.check_replica_split(strategy.num_replicas_in_sync)  # a tuner trial's batch size reaches here unchecked
        dataset_fn, steps = worker_input_fn(self.encoding, replicas=strategy.num_replicas_in_sync,
                                            num_workers=worker_count(strategy), **options)
        return strategy.distribute_datasets_from_function(dataset_fn), steps

    def validation_metrics(self, config: TrainConfig) -> Optional[ValidationMetrics]:
        if self.validation_examples is None:
            return None
        return ValidationMetrics.from_examples(
            self.tokenizer, self.validation_examples, self.label_map,
            max_length=inference_length(self.tokenizer, config.task, config.max_length), stride=config.stride,
            batch_size=config.eval_batch_size, jit_compile=config.xla, word_inputs=config.word_inputs,
            names=[name[len("val_"):] for name in VALIDATION_METRICS[config.task]],
        )


def prepare_data(config: TrainConfig, replicas: Optional[int] = None) -> PreparedData:
    """Read, check and encode the data of ``config``, to be trained by ``replicas`` replicas
    (default: the current strategy's); fails before anything is written."""
    config.validate()
    replicas = replicas or tf.distribute.get_strategy().num_replicas_in_sync
    tokenizer = load_tokenizer(config.model)
    window = inference_length(tokenizer)
    if config.max_length > window:
        if config.max_length != DEFAULT_MAX_LENGTH:
            raise ConfigError(f"The 'max_length' option must be at most {window} for this model, whose inputs hold "
                              f"at most {window} tokens (its position window). Got {config.max_length!r} instead.")
        config.max_length = window  # the default, for a model with a shorter window (recorded in config.yaml)
    if config.task == TOKEN_CLASSIFICATION and not config.stride < window - 3:
        raise ConfigError(f"The 'stride' option must be below {window - 3} for this model, whose windows hold "
                          f"{window} tokens. Got {config.stride!r} instead.")
    if config.lora_rank:  # the run loads its base again, from wherever it is used
        config.model = absolute_base_model(config.model)
    if config.word_shapes is None and config.task == TOKEN_CLASSIFICATION:
        config.word_shapes = word_shapes_by_default(config.model, tokenizer)
    train_examples = read_config_examples(config, config.train, config.max_train_examples)
    if config.text_pair_column is None and any(getattr(e, "text_pair", None) is not None for e in train_examples):
        # Pairs found by the TFDS reader's default features: recorded, so export and predict serve pairs.
        config.text_pair_column = default_text_keys(config.train, config.tfds_data_dir)[1]
    for choice in config.resolve_schedule(len(train_examples), replicas):
        print(f"Chose {choice}", flush=True)
    config.check_replica_split(replicas)
    label_map = label_map_for(config, train_examples)
    validation_examples = None
    if config.validation:
        validation_examples = read_config_examples(config, config.validation, config.max_validation_examples)
        label_map.check(validation_examples)
    data = PreparedData(tokenizer, label_map, train_examples, validation_examples,
                        encode_training_examples(config, tokenizer, train_examples, label_map))
    if data.targets is not None and data.targets.dtype == np.int32:  # sequence classification: class ids
        counts = np.bincount(data.targets, minlength=len(label_map))
        chosen = config.choose_monitor(dict(zip(label_map.labels, counts.tolist())))
        if chosen:
            print(f"Chose {chosen}", flush=True)
    weights = class_weights(config, label_map, data.targets)
    if weights is not None:
        kind = "positive weights" if config.task == MULTI_LABEL_CLASSIFICATION else "class weights"
        print(f"Loss {kind}: " + ", ".join(f"{label}={w:.3g}" for label, w in zip(label_map.labels, weights)),
              flush=True)
    return data


def label_map_for(config: TrainConfig, train_examples: list) -> LabelMap:
    """The labels a model for ``config`` gets from its training examples."""
    if config.task == TOKEN_CLASSIFICATION:
        return LabelMap.from_token_examples(train_examples)
    if config.task == MULTI_LABEL_CLASSIFICATION:
        return LabelMap.from_label_sets(train_examples, config.label_column_list)
    if config.task == REGRESSION:
        return LabelMap.for_target(config.label_column)
    return LabelMap.from_text_examples(train_examples)


def encode_training_examples(config: TrainConfig, tokenizer, examples, label_map: LabelMap) -> Encoding:
    """``encode_for_training`` with the options of ``config``."""
    return encode_for_training(tokenizer, examples, label_map, config.max_length, config.label_all_subwords,
                               word_inputs=config.word_inputs)


def create_model(config: TrainConfig, label_map: LabelMap, steps_per_epoch: int,
                 targets: Optional[np.ndarray] = None):
    """Build and compile the model (and optimizer) inside the current distribution strategy.

    ``steps_per_epoch`` counts optimizer updates (see :func:`compile_model`). ``targets``: the
    training targets (:func:`tfft.features.text_targets`), from which a regression model's target
    scale and balanced class weights are computed."""
    with precision_scope(config.precision), tf.distribute.get_strategy().scope():
        lora = LoraSettings.of(config)
        scale = target_scale(targets) if config.task == REGRESSION and config.normalize_targets else None
        model = build_model(config.task, label_map, config.model, dropout=config.dropout,
                            word_shapes=config.uses_word_shapes, head=head_config(config.task, scale))
        if lora is not None:
            add_adapters(model, lora, word_shapes=config.uses_word_shapes)
        if config.gradient_checkpointing:  # after any adapters, whose dropouts must recompute their masks too
            recompute_encoder_layers(model)
        print(describe(model, lora), flush=True)
        compile_model(model, config, steps_per_epoch, targets)
    return model


def fit_model(config: TrainConfig, data: PreparedData, work_dir: Optional[Path], *, backup: bool = True,
              extra_callbacks: Sequence = (), backup_dir: Optional[Path] = None):
    """Seed, build, ``model.fit`` with tfft's callbacks, and restore the best epoch's weights.

    ``work_dir`` receives the best checkpoint, ``history.csv``, TensorBoard logs and
    (with ``backup``) the ``BackupAndRestore`` state that lets a rerun resume, in
    ``backup_dir`` (default: ``work_dir/backup``; the chief's, on the other workers of a cluster).
    Runs in the current distribution strategy. Returns ``(model, best_epoch or None, history)``.

    The other workers of a cluster (``work_dir`` None) write nothing of their own: they skip the
    validation scoring (they take the chief's scores), the best checkpoint, the CSV and TensorBoard
    logs, whose results only the chief keeps, and return the best epoch of the history ``fit``
    returns. Every worker draws its own dropout masks (the seed is offset by the worker's index
    once the model's initial weights, which the strategy takes from the chief, are built).
    """
    strategy = tf.distribute.get_strategy()
    writer = work_dir is not None
    if not writer and is_chief(strategy):
        raise ValueError("the chief of a run needs a work directory")
    keras.utils.set_random_seed(config.seed)
    train_dataset, steps_per_epoch = data.train_dataset(config)
    model = create_model(config, data.label_map, steps_per_epoch, data.targets)
    keras.utils.set_random_seed(config.seed + worker_index(strategy))
    callbacks: List[keras.callbacks.Callback] = []
    backup_dir = backup_dir or work_dir / BACKUP_SUBDIR
    validation_metrics = data.validation_metrics(config)
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
                                                    save_state=is_chief(strategy)))
    callbacks += list(extra_callbacks)
    if writer:
        work_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(work_dir / "history.csv"), append=True))
        if config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(work_dir / "logs"), update_freq="epoch"))
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir)))
    interactive = os.isatty(1)
    if not interactive:
        # Mean rows per step: right for fixed batch sizes and for --batch-tokens alike.
        callbacks.append(ProgressLog(data.encoding.num_rows / steps_per_epoch))
    fitted = model.fit(train_dataset, epochs=config.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                       verbose=1 if interactive else 2)
    if not writer:
        history = {name: [float(v) for v in values] for name, values in fitted.history.items()}
        return model, best_epoch_of(history.get(config.monitor_metric), config.monitor_mode), history
    best_epoch = checkpoint.restore() if checkpoint is not None else None
    return model, best_epoch, read_history(work_dir / "history.csv")


def best_epoch_of(values: Optional[List[float]], mode: str) -> Optional[int]:
    """The first epoch (0-based) with the best value, as the best checkpoint keeps it; None without values."""
    if not values:
        return None
    return int(np.argmin(values) if mode == "min" else np.argmax(values))


def write_run(config: TrainConfig, data: PreparedData, model, work_dir: Path, best_epoch: Optional[int],
              history: Dict[str, List[float]], started: float) -> TrainResult:
    """Complete ``work_dir`` (model, tokenizer, config, labels, metrics, reports) and move it onto the run directory."""
    best_scores = scores_of_epoch(history, best_epoch)
    report = None
    if data.validation_examples is not None:  # first: it tunes a multi-label model's thresholds, saved with it
        report = evaluate_examples(
            model, data.tokenizer, data.validation_examples, data.label_map,
            max_length=inference_length(data.tokenizer, config.task, config.max_length),
            stride=config.stride, batch_size=config.eval_batch_size, jit_compile=config.xla,
            word_inputs=config.word_inputs, tune_thresholds=True,
        )
    if config.lora_rank:  # the adapters and head alone: the base checkpoint is named, not copied
        save_adapters(model, work_dir / MODEL_SUBDIR, config.model)
    else:
        model.save_pretrained(str(work_dir / MODEL_SUBDIR))
    data.tokenizer.save_pretrained(str(work_dir / MODEL_SUBDIR))
    config.save(work_dir / CONFIG_FILE)
    write_json(work_dir / "labels.json", data.label_map.to_dict())
    write_json(work_dir / "metrics.json", {
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "monitor": config.monitor_metric,
        "best": best_scores,
        "truncated_training_examples": data.encoding.num_truncated,
    })
    write_json(work_dir / "history.json", history)
    plot_training_curves(history, work_dir / REPORTS_SUBDIR / "training_curves.png")
    if report is not None:
        report.write(work_dir / REPORTS_SUBDIR, "validation")
        print(report.text, flush=True)
    shutil.rmtree(work_dir / BACKUP_SUBDIR, ignore_errors=True)
    BestWeightsCheckpoint.discard(work_dir / BEST_WEIGHTS)
    (work_dir / RUN_KEY_FILE).unlink(missing_ok=True)
    replace_directory(work_dir, config.run_dir)
    return TrainResult(config.run_dir, best_epoch, best_scores, history, data.encoding.num_truncated,
                       time.time() - started)


def work_dir_of(run_dir: Path) -> Path:
    """The hidden sibling a run is built in; a rerun of the same command resumes from it."""
    return run_dir.parent / f".{run_dir.name}.partial"


def train(config: TrainConfig, overwrite: bool = False) -> TrainResult:
    """Fine-tune per ``config`` and write the run directory; see the module docstring.

    ``overwrite`` replaces a finished run directory and discards an unfinished run of the
    same directory instead of resuming it.
    """
    started = time.time()
    config.validate()
    strategy = create_strategy(config.strategy, config.cluster_resolver, config.tpu)
    if not is_chief(strategy):
        return _train_as_worker(config, strategy, started)
    with contextlib.ExitStack() as claimed:
        try:
            claimed.enter_context(run_lock(config.run_dir))
            if config.run_dir.exists() and not overwrite:
                raise ConfigError(f"{config.run_dir} already holds a finished run; pass --overwrite to replace it, "
                                  "or choose another --output-dir")
            data = prepare_data(config, strategy.num_replicas_in_sync)
            print(
                f"Training {config.task} on {len(data.train_examples)} examples ({data.encoding.num_truncated} "
                f"truncated to {config.max_length} tokens), {len(data.label_map)} labels", flush=True,
            )
            work_dir = work_dir_of(config.run_dir)
            claim_work_dir(work_dir, config, overwrite)
        except Exception as error:
            with contextlib.suppress(Exception):  # a failed broadcast must not hide the reason itself
                broadcast_reason(strategy, str(error) or type(error).__name__)  # the other workers stop with it
            raise
        broadcast_reason(strategy, None)  # the other workers may now read the backup state
        with strategy.scope():
            model, best_epoch, history = fit_model(config, data, work_dir)
        barrier(strategy)  # every worker is done with the work directory
        return write_run(config, data, model, work_dir, best_epoch, history, started)


def _train_as_worker(config: TrainConfig, strategy: tf.distribute.Strategy, started: float) -> TrainResult:
    """A non-chief worker's part of ``train``: the same steps, nothing written that outlives it."""
    data = prepare_data(config, strategy.num_replicas_in_sync)
    refusal = broadcast_reason(strategy, None)
    if refusal is not None:
        raise ConfigError(f"the chief refused to start: {refusal}")
    with strategy.scope():
        _, best_epoch, history = fit_model(config, data, None, backup_dir=work_dir_of(config.run_dir) / BACKUP_SUBDIR)
    barrier(strategy)
    print(f"Worker done; the chief writes {config.run_dir}", flush=True)
    return TrainResult(config.run_dir, best_epoch, scores_of_epoch(history, best_epoch), history,
                       data.encoding.num_truncated, time.time() - started)


def scores_of_epoch(history: Dict[str, List[float]], epoch: Optional[int]) -> Dict[str, float]:
    """The validation scores of ``epoch`` (0-based) in ``history``; none without an epoch."""
    if epoch is None:
        return {}
    return {k: v[epoch] for k, v in history.items() if k.startswith("val_") and len(v) > epoch}


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<name>.lock`` beside ``run_dir``, or refuse at once."""
    run_dir = Path(run_dir)
    created = [p for p in (run_dir.parent, *run_dir.parent.parents) if not p.exists()]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f".{run_dir.name}.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked a file that a finishing process has just removed: another one may lock a new file.
            if not path.exists() or os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
                raise BlockingIOError
        except BlockingIOError:
            raise ConfigError(f"{run_dir} is being written by another tfft process (lock file {path}); wait for "
                              "it to finish or choose another --output-dir") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            for directory in created:  # a run refused before writing anything leaves no empty directories
                with contextlib.suppress(OSError):
                    directory.rmdir()


def claim_work_dir(work_dir: Path, config: TrainConfig, overwrite: bool) -> None:
    """Start or resume the run in ``work_dir``: resume only the same options on the same data, refuse others.

    The options (all but the output directory) and a digest of each data file's content are
    kept in ``run_key.json``: a file edited after a kill would otherwise resume on other rows.
    ``overwrite`` discards an unfinished run instead.
    """
    key = json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k != "output_dir"}))
    key[DATA_KEY] = {name: data_digest(path) for name, path in (("train", config.train),
                                                                 ("validation", config.validation)) if path}
    if work_dir.exists():
        if overwrite:
            shutil.rmtree(work_dir)
        else:
            path = work_dir / RUN_KEY_FILE
            saved = json.loads(path.read_text()) if path.is_file() else {}
            options = {k: v for k, v in key.items() if k != DATA_KEY}
            if {k: v for k, v in saved.items() if k != DATA_KEY} == options and saved.get(DATA_KEY) != key[DATA_KEY]:
                if DATA_KEY not in saved:
                    raise ConfigError(
                        f"{work_dir} holds an unfinished run started by an earlier tfft, which recorded no digest "
                        "of its data, so it cannot be checked to resume on the same rows; pass --overwrite to "
                        "start afresh")
                changed = [getattr(config, name) for name in key[DATA_KEY]
                           if saved[DATA_KEY].get(name) != key[DATA_KEY][name]]
                raise ConfigError(
                    f"{', '.join(changed)} changed since the unfinished run in {work_dir} started (its content "
                    "differs), so the run cannot resume on the same rows; restore the file to resume, or pass "
                    "--overwrite to start afresh on the data as it is now")
            if saved != key:
                changes = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in options.items() if saved.get(k) != v]
                raise ConfigError(
                    f"{work_dir} holds an unfinished run started with other options ({'; '.join(changes[:4])}"
                    f"{'; ...' if len(changes) > 4 else ''}); rerun the original command to resume it, or pass "
                    "--overwrite to start afresh")
            print(f"Resuming the unfinished run in {work_dir}", flush=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json(work_dir / RUN_KEY_FILE, key)


DATA_KEY = "data_sha256"


def data_digest(path: str) -> Optional[str]:
    """SHA-256 of a data file's bytes (None for ``tfds:`` data, whose prepared files TFDS versions)."""
    return None if path.startswith("tfds:") else sha256_of(path)


def read_history(path: Path) -> Dict[str, List[float]]:
    """Read Keras' CSVLogger file (which survives a resume) into ``{metric: [per epoch]}``.

    Rows are keyed by their ``epoch`` column, the last row of an epoch winning: a run killed
    after the CSV row but before the backup repeats that epoch on resume and logs it twice.
    """
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle) if row.get("epoch", "").isdigit()}
    ordered = [rows[epoch] for epoch in sorted(rows)]
    keys = [key for key in (ordered[0] if ordered else {}) if key != "epoch"]
    return {key: [float(row[key]) for row in ordered if row.get(key) not in (None, "", "NA")] for key in keys}
