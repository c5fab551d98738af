"""Fit orchestration: data -> features -> tf.data -> model -> ``model.fit`` -> run directory.

A run works in a hidden sibling directory (``.<name>.partial``) and renames it onto the
run directory only when everything is written, so the run directory is never half
written. The work directory keeps ``BackupAndRestore`` state: running the same command
after a crash resumes from the last finished epoch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from tfft.backend import keras, tf
from tfft.config import TrainConfig
from tfft.data.labels import LabelMap
from tfft.evaluation import evaluate_examples, plot_training_curves
from tfft.features import encode_for_training
from tfft.files import replace_directory, write_json
from tfft.models import TOKEN_CLASSIFICATION, build_model, load_tokenizer
from tfft.pipeline import make_dataset
from tfft.run_dir import CONFIG_FILE, MODEL_SUBDIR, REPORTS_SUBDIR, read_config_examples
from tfft.training.callbacks import BestWeightsCheckpoint, ValidationMetrics
from tfft.training.losses import masked_sparse_categorical_crossentropy
from tfft.training.optimization import create_optimizer

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


def set_precision(precision: str) -> None:
    """Select the Keras dtype policy before models are built (bf16 = mixed_bfloat16)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")


def compile_model(model, config: TrainConfig, steps_per_epoch: int) -> None:
    """Attach tfft's optimizer and masked loss to a model built by ``build_model``."""
    optimizer = create_optimizer(
        config.learning_rate,
        total_steps=steps_per_epoch * config.epochs,
        warmup_fraction=config.warmup_fraction,
        weight_decay=config.weight_decay,
    )
    model.compile(optimizer=optimizer, loss=masked_sparse_categorical_crossentropy, jit_compile=config.xla)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune per ``config`` and write the run directory; see the module docstring."""
    config.validate()
    started = time.time()
    # Everything that can fail on bad input is checked before anything is written.
    tokenizer = load_tokenizer(config.model)
    train_examples = read_config_examples(config, config.train, config.max_train_examples)
    label_map = (LabelMap.from_token_examples(train_examples) if config.task == TOKEN_CLASSIFICATION
                 else LabelMap.from_text_examples(train_examples))
    validation_examples = None
    if config.validation:
        validation_examples = read_config_examples(config, config.validation, config.max_validation_examples)
        label_map.check(validation_examples)

    keras.utils.set_random_seed(config.seed)
    set_precision(config.precision)
    encoding = encode_for_training(tokenizer, train_examples, label_map, config.max_length, config.label_all_subwords)
    train_dataset = make_dataset(
        encoding, batch_size=config.batch_size, pad_token_id=tokenizer.pad_token_id,
        shuffle=True, seed=config.seed, num_buckets=config.num_buckets,
    )
    steps_per_epoch = int(train_dataset.cardinality())

    run_dir = config.run_dir
    work_dir = run_dir.parent / f".{run_dir.name}.partial"
    work_dir.mkdir(parents=True, exist_ok=True)
    with tf.distribute.get_strategy().scope():
        model = build_model(config.task, label_map, config.model, dropout=config.dropout)
        compile_model(model, config, steps_per_epoch)

    checkpoint = BestWeightsCheckpoint(work_dir / "best_weights.h5", monitor=config.monitor_metric,
                                       mode=checkpoint_mode(config))
    callbacks: List[keras.callbacks.Callback] = []
    if validation_examples is not None:
        callbacks += [
            ValidationMetrics.from_examples(
                tokenizer, validation_examples, label_map, max_length=min(config.max_length, tokenizer.model_max_length),
                stride=config.stride, batch_size=config.eval_batch_size, jit_compile=config.xla,
            ),
            checkpoint,
            keras.callbacks.EarlyStopping(monitor=config.monitor_metric, mode=checkpoint_mode(config),
                                          patience=config.patience, verbose=1),
        ]
    callbacks.append(keras.callbacks.CSVLogger(str(work_dir / "history.csv"), append=True))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(work_dir / "logs"), update_freq="epoch"))
    callbacks.append(keras.callbacks.BackupAndRestore(str(work_dir / "backup")))

    print(
        f"Training {config.task} on {len(train_examples)} examples ({encoding.num_truncated} truncated to "
        f"{config.max_length} tokens), {len(label_map)} labels, {steps_per_epoch} steps/epoch", flush=True,
    )
    model.fit(train_dataset, epochs=config.epochs, callbacks=callbacks, verbose=1 if os.isatty(1) else 2)
    best_epoch = checkpoint.restore() if validation_examples is not None else None
    history = read_history(work_dir / "history.csv")
    best_scores = {}
    if best_epoch is not None:
        best_scores = {k: v[best_epoch] for k, v in history.items() if k.startswith("val_") and len(v) > best_epoch}

    _finalize_run(work_dir, model, tokenizer, config, label_map, history, best_epoch, best_scores, encoding.num_truncated)
    if validation_examples is not None:
        report = evaluate_examples(
            model, tokenizer, validation_examples, label_map, max_length=min(config.max_length, tokenizer.model_max_length),
            stride=config.stride, batch_size=config.eval_batch_size, jit_compile=config.xla,
        )
        report.write(work_dir / REPORTS_SUBDIR, "validation")
        print(report.text, flush=True)
    replace_directory(work_dir, run_dir)
    return TrainResult(run_dir, best_epoch, best_scores, history, encoding.num_truncated, time.time() - started)


def checkpoint_mode(config: TrainConfig) -> str:
    return "min" if config.monitor_metric.endswith("loss") else "max"


def read_history(path: Path) -> Dict[str, List[float]]:
    """Read Keras' CSVLogger file (which survives a resume) into ``{metric: [per epoch]}``."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")] for key in (rows[0] if rows else {})}


def _finalize_run(work_dir: Path, model, tokenizer, config, label_map, history, best_epoch, best_scores, num_truncated):
    model.save_pretrained(str(work_dir / MODEL_SUBDIR))
    tokenizer.save_pretrained(str(work_dir / MODEL_SUBDIR))
    config.save(work_dir / CONFIG_FILE)
    write_json(work_dir / "labels.json", label_map.to_dict())
    write_json(work_dir / "metrics.json", {
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "monitor": config.monitor_metric,
        "best": best_scores,
        "truncated_training_examples": num_truncated,
    })
    write_json(work_dir / "history.json", history)
    plot_training_curves(history, work_dir / REPORTS_SUBDIR / "training_curves.png")
    for leftover in ("backup", "best_weights.h5", "best_weights.json"):
        target = work_dir / leftover
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
