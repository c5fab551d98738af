"""The layout of a run directory, in one place: what ``train`` writes and the rest reads.

    RUN_DIR/config.yaml      resolved TrainConfig
    RUN_DIR/labels.json      label map (also in model/config.json as id2label)
    RUN_DIR/model/           save_pretrained model + tokenizer (LoRA runs: config.json, tokenizer and
                             the adapters alone, tfft.lora.ADAPTERS_FILE; the base comes from --model)
    RUN_DIR/history.json     per-epoch metrics (history.csv: Keras' CSVLogger)
    RUN_DIR/metrics.json     best epoch and its validation scores
    RUN_DIR/reports/         evaluation reports and plots
    RUN_DIR/logs/            TensorBoard
    RUN_DIR/.tfft            the marker that tfft made it (tfft.ownership): what --overwrite may replace
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from tfft.config import DEFAULT_LABEL_SEPARATOR, TrainConfig
from tfft.data import TOKEN_CLASSIFICATION, read_examples
from tfft.errors import ModelLoadError

MODEL_SUBDIR = "model"
CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"
METRICS_FILE = "metrics.json"
REPORTS_SUBDIR = "reports"
LOGS_SUBDIR = "logs"
# Kept in the hidden work directory while a run trains, removed before it becomes the run directory.
BEST_WEIGHTS = "best_weights.h5"
RUN_KEY_FILE = "run_key.json"
# In the work directory's BackupAndRestore folder: the early-stopping state of the last epochs, for a resume.
BACKUP_SUBDIR = "backup"
EARLY_STOPPING_STATE = "early_stopping.json"


def work_dir_of(run_dir: Path) -> Path:
    """The hidden sibling a run is built in; a rerun of the same command resumes from it."""
    return run_dir.parent / f".{run_dir.name}.partial"


def load_run_config(run_dir: Union[str, Path]) -> TrainConfig:
    """Read a run directory's config, with a clear error when it is not a run."""
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file() or not (path / MODEL_SUBDIR).is_dir():
        raise ModelLoadError(f"{path}: not a tfft run directory (expected {CONFIG_FILE} and {MODEL_SUBDIR}/ in it)")
    return TrainConfig.load(path / CONFIG_FILE)


def read_config_examples(config: TrainConfig, path: str, limit: Optional[int] = None):
    """Read a data file with the reader options of ``config`` (the run's, for evaluate)."""
    token_task = config.task == TOKEN_CLASSIFICATION
    if path.startswith("tfds:"):
        options = dict(data_dir=config.tfds_data_dir)
        options.update(dict(scheme=config.tag_scheme) if token_task else dict(
            text_key=config.text_column, text_pair_key=config.text_pair_column, label_key=config.label_column))
    elif token_task:
        options = dict(token_column=config.token_column, tag_column=config.tag_column, scheme=config.tag_scheme,
                       encoding=config.encoding)
    else:
        options = dict(text_column=_column(config.text_column), text_pair_column=_column(config.text_pair_column),
                       label_column=_column(config.label_column), encoding=config.encoding,
                       label_columns=config.label_column_list and [_column(c) for c in config.label_column_list],
                       label_separator=config.label_separator or DEFAULT_LABEL_SEPARATOR)
    examples = read_examples(path, config.task, **options)
    return examples[:limit] if limit else examples


def load_run(run_dir: Union[str, Path], precision: Optional[str] = None):
    """Return ``(config, model, tokenizer)`` of a finished run, the model built in
    ``precision`` (default: the precision the run was trained in)."""
    # Imported here: the layout above is read by modules below the model code (tfft.distribution).
    from tfft.lora import LoraSettings, load_adapted_model
    from tfft.models import load_tokenizer, load_trained_model, precision_scope

    config = load_run_config(run_dir)
    model_dir = Path(run_dir) / MODEL_SUBDIR
    lora = LoraSettings.of(config)
    with precision_scope(precision or config.precision):  # the caller's Keras policy is left as it was
        if lora is None:
            model = load_trained_model(config.task, model_dir)
        else:
            model = load_adapted_model(config.task, model_dir, config.model, lora,
                                       word_shapes=config.uses_word_shapes, dropout=config.dropout)
    return config, model, load_tokenizer(str(model_dir))


def _column(name: Optional[str]):
    """Column names from flags are strings; digits mean a position in a headerless file."""
    return int(name) if isinstance(name, str) and name.isdigit() else name
