"""Run configuration: one dataclass that the CLI flags, YAML files and Python share.

Each field's ``help`` metadata is the documentation of the matching ``--flag`` and YAML
key, so the three cannot drift apart. Precedence: defaults < ``--config`` YAML < flags.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import yaml

from tfft.data import (MULTI_LABEL_CLASSIFICATION, REGRESSION, SEQUENCE_CLASSIFICATION, SEQUENCE_TASKS, TASKS,
                       TOKEN_CLASSIFICATION)
from tfft.errors import ConfigError
from tfft.words import NATURAL, WORD_SPLITS, WordInputs

PRECISIONS = ("fp32", "bf16", "fp16")
# tf.distribute strategies (tfft.distribution creates them) and where a multi-worker cluster is described.
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker", "tpu")
CLUSTER_RESOLVERS = ("tf-config", "slurm")
# What `tfft export --precision` offers: fp16 (mixed_float16) is for GPU training, not CPU serving.
EXPORT_PRECISIONS = ("fp32", "bf16")
# Small training sets need more, smaller steps: with 300 sentences, batch 32 and 3 epochs (30
# updates) never left F1 0; see docs/results.md "Small training sets" for the grid these were chosen from.
# The fewest epochs a run trains unless told, per task: on CoNLL-2003 the default model's validation F1 was
# 0.9370 after 3 epochs and 0.9414 after 4 (docs/results.md "NER accuracy levers").
DEFAULT_EPOCHS = {TOKEN_CLASSIFICATION: 4, SEQUENCE_CLASSIFICATION: 3, MULTI_LABEL_CLASSIFICATION: 3, REGRESSION: 3}
DEFAULT_MAX_LENGTH = 256
MAX_DEFAULT_EPOCHS = 20
MIN_UPDATES = 500
# (fewer training examples than this, batch size)
SMALL_DATA_BATCH_SIZES = ((500, 8), (2000, 16))
DEFAULT_BATCH_SIZE = 32
# Measured with the default model (all-MiniLM-L6-v2, batch 32, 3 epochs on CoNLL-2003: val F1
# 0.8965 at 1e-4, 0.9062 at 2e-4); small distilled encoders want larger steps than BERT-base.
# What ValidationMetrics puts into the logs, per task: the values --monitor may name.
# All of them (ValidationMetrics scores these, on the chief of a cluster); the first of each is the default
# --monitor (sequence classification: val_macro_f1 on skewed labels, see IMBALANCE_RATIO).
VALIDATION_METRICS = {
    TOKEN_CLASSIFICATION: ("val_f1", "val_precision", "val_recall", "val_accuracy", "val_loss"),
    SEQUENCE_CLASSIFICATION: ("val_accuracy", "val_macro_f1", "val_macro_precision", "val_macro_recall", "val_loss"),
    MULTI_LABEL_CLASSIFICATION: ("val_micro_f1", "val_macro_f1", "val_micro_precision", "val_micro_recall",
                                 "val_macro_precision", "val_macro_recall", "val_loss"),
    REGRESSION: ("val_pearson", "val_spearman", "val_rmse", "val_mae", "val_loss"),
}
# Metrics where lower is better (early stopping and the best checkpoint minimise them).
LOWER_IS_BETTER = ("val_loss", "val_rmse", "val_mae")
# Sequence classification monitors val_macro_f1 instead of val_accuracy when the most frequent training
# class has at least this many times the examples of the rarest: accuracy then rewards ignoring rare classes.
IMBALANCE_RATIO = 3.0
DEFAULT_LEARNING_RATES = {TOKEN_CLASSIFICATION: 2e-4, SEQUENCE_CLASSIFICATION: 1e-4, MULTI_LABEL_CLASSIFICATION: 1e-4,
                          REGRESSION: 1e-4}
DEFAULT_LABEL_SEPARATOR = ","
REGRESSION_LOSSES = ("mse", "huber")
# --pooling: what a sequence head reads (tfft.pooling); auto takes the checkpoint's own.
POOLINGS = ("auto", "first", "mean")
BALANCED = "balanced"
# LoRA trains a few small matrices from zero and wants larger steps; see docs/memory.md (LoRA).
DEFAULT_LORA_LEARNING_RATE = 2e-3
# A fixed alpha (as in the LoRA paper) keeps the update's scale alpha/rank in step with the rank,
# so a rank change needs no new learning rate.
DEFAULT_LORA_ALPHA = 16.0
DEFAULT_LORA_DROPOUT = 0.1
# --lora-targets: the transformer-block projections (tfft.families.base.PROJECTIONS) that get adapters.
LORA_TARGETS = {
    "query-value": ("query", "value"),
    "attention": ("query", "key", "value", "attention_output"),
    "all": ("query", "key", "value", "attention_output", "intermediate", "output"),
}
LORA_OPTIONS = ("lora_alpha", "lora_dropout", "lora_targets")


Number = Union[int, float]
# Integers stay within TensorFlow's int32 sizes and NumPy's seeds.
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: finite, whole where ``integer``, within its bounds.

    Why one declaration per option: flags, YAML keys, ``TrainConfig(...)`` and search-space values
    are all checked by it, so no entry point (and no new option) can skip a check. ``low_open``
    and ``high_open`` exclude the bound itself. Integers are also bounded by int32.
    """

    integer: bool
    low: Optional[Number] = None
    high: Optional[Number] = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """What an error message says is expected, e.g. ``a finite number > 0``."""
        if self.integer:
            low = INT32_MIN if self.low is None else self.low + (1 if self.low_open else 0)
            high = INT32_MAX if self.high is None else self.high - (1 if self.high_open else 0)
            return f"an integer from {low} to {high}"
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"a number in {opening}{self.low:g}, {self.high:g}{closing}"
        if self.low is not None:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"a finite number {'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"

    def convert(self, value: Any) -> Optional[Number]:
        """``value`` (a number, or text as a flag or YAML 1.1 gives ``1e-4``) as an int or float; None when it
        is not one. Booleans are not numbers here; ``3.0`` is the integer 3."""
        if isinstance(value, bool):
            return None
        if self.integer and _is_integral(value):
            return int(value)
        if self.integer and isinstance(value, str):
            with contextlib.suppress(ValueError):  # exact for long integers, which float() would round
                return int(value.strip())
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if self.integer:
            return int(number) if math.isfinite(number) and number.is_integer() else None
        return number

    def contains(self, value: Number) -> bool:
        if not _is_integral(value) and not math.isfinite(value):  # (an int may be too large for a float)
            return False
        low = INT32_MIN if self.integer and self.low is None else self.low
        high = INT32_MAX if self.integer and self.high is None else self.high
        above = low is None or (value > low if self.low_open else value >= low)
        below = high is None or (value < high if self.high_open else value <= high)
        return above and below

    def check(self, name: str, value: Any, source: Optional[str] = None) -> Number:
        """``value`` as the option's number, or a ConfigError naming the option.

        With ``source`` (a YAML file, a mapping) text and integral floats are converted, as YAML
        needs; a Python value must already be of the option's kind (an int for an integer option)."""
        number = self.convert(value) if source is not None else (value if self._same_kind(value) else None)
        if number is None or not self.contains(number):
            where = f"{source}: the" if source is not None else "The"
            raise ConfigError(f"{where} '{name}' option must be {self.describe()}. Got {value!r} instead.")
        return number

    def parse_flag(self, text: str) -> Number:
        """An argparse ``type``: the flag's number, or a usage error (exit 2, before any work) saying the range."""
        number = self.convert(text)
        if number is None or not self.contains(number):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}; got {text!r}")
        return number

    def _same_kind(self, value: Any) -> bool:
        """Python values are not converted: an integer option takes an integer, a number option any real."""
        return not isinstance(value, bool) and (_is_integral(value) if self.integer else _is_real(value))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


POSITIVE_INT = Range(integer=True, low=1)
NON_NEGATIVE_INT = Range(integer=True, low=0)
ANY_INT = Range(integer=True)
POSITIVE = Range(integer=False, low=0, low_open=True)
NON_NEGATIVE = Range(integer=False, low=0)
FRACTION = Range(integer=False, low=0, high=1, high_open=True)  # dropout rates, warmup
# NumPy takes seeds below 2**32; each worker of a cluster adds its index (tfft.training.fit).
SEED = Range(integer=True, low=0, high=INT32_MAX)


def non_empty(text: str) -> str:
    """An argparse ``type`` for a text option: an empty one (``--output-dir ""``) is a usage error, not
    a silent default such as the current directory."""
    if text == "":
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _option(default: Any, help: str, values: Optional[Range] = None, **extra: Any):
    """A TrainConfig field: its flag's help text, and for a number the range of values it accepts."""
    metadata = {"help": help, **extra}
    if values is not None:
        metadata["range"] = values
    return field(default=default, metadata=metadata)


def option_range(f: dataclasses.Field) -> Optional[Range]:
    """The declared range of a numeric TrainConfig field (None for other fields)."""
    return f.metadata.get("range")


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run; saved as ``config.yaml`` in the run directory."""

    task: Optional[str] = _option(None, "what to fine-tune for", choices=TASKS)
    train: Optional[str] = _option(None, "training data: a CoNLL file (token task), a CSV/TSV/JSONL file "
                                         "(sequence task) or tfds:NAME[:SPLIT]")
    validation: Optional[str] = _option(None, "validation data, same format as --train; drives early stopping")
    model: str = _option("default", "pretrained checkpoint: 'default' (the packaged all-MiniLM-L6-v2), "
                                    "a local Hugging Face directory, or a hub name (needs network)")
    output_dir: Optional[str] = _option(None, "run directory to create (default: runs/<task>)")
    epochs: Optional[int] = _option(None, "maximum number of epochs (early stopping may end sooner; default: "
                                          "4 for token classification, 3 otherwise, more for small training "
                                          "sets, see --min-updates)", values=POSITIVE_INT)
    batch_size: Optional[int] = _option(None, "training batch size in sentences per step (default: 32; 16 below "
                                              "2,000 training examples, 8 below 500)", values=POSITIVE_INT)
    min_updates: int = _option(MIN_UPDATES, "when --epochs is not given, train for enough epochs to make at least "
                                            "this many optimizer updates (small data sets need more epochs)",
                               values=POSITIVE_INT)
    gradient_accumulation_steps: int = _option(1, "micro-batches per optimizer update: the effective batch is this "
                                                  "many times --batch-size, weighted by labelled tokens so it equals "
                                                  "one large batch (single device)", values=POSITIVE_INT)
    batch_tokens: Optional[int] = _option(None, "size training batches by tokens instead: about this many "
                                                "tokens per batch (overrides --batch-size per length bucket)",
                                          values=POSITIVE_INT)
    learning_rate: Optional[float] = _option(None, "peak AdamW learning rate (default: 2e-4 for token "
                                                   "classification, 1e-4 for sequence classification, "
                                                   f"{DEFAULT_LORA_LEARNING_RATE:g} with --lora-rank)", values=POSITIVE)
    warmup_fraction: float = _option(0.1, "fraction of the training steps spent warming the learning rate up",
                                     values=FRACTION)
    weight_decay: float = _option(0.01, "decoupled AdamW weight decay (not applied to LayerNorm and biases)",
                                  values=NON_NEGATIVE)
    dropout: Optional[float] = _option(None, "classifier dropout (default: the checkpoint's)", values=FRACTION)
    pooling: Optional[str] = _option(None, "sequence tasks: what the classification head reads: first (the first "
                                           "token, as the family's own head does), mean (the mean of the last "
                                           "layer over the text's tokens) or auto (default: mean for a checkpoint "
                                           "trained to embed a text as that mean, as sentence-transformers models "
                                           "such as the default are; first otherwise)", choices=POOLINGS)
    attention_dropout: Optional[float] = _option(None, "dropout on the encoder's attention probabilities (default: "
                                                       "0 on packed rows, where it cost a fifth of a step; the "
                                                       "checkpoint's otherwise, 0.1 for BERT models)", values=FRACTION)
    lora_rank: int = _option(0, "LoRA: freeze the encoder and train rank-R adapters on its projections, with the "
                                "classification head; the run directory keeps only those (0: full fine-tuning)",
                             values=NON_NEGATIVE_INT)
    lora_alpha: Optional[float] = _option(None, "LoRA: adapters add alpha/rank * x A B to a projection "
                                                f"(default: {DEFAULT_LORA_ALPHA:g} for every rank)", values=POSITIVE)
    lora_dropout: Optional[float] = _option(None, f"LoRA: dropout on the adapters' input (default: "
                                                  f"{DEFAULT_LORA_DROPOUT:g})", values=FRACTION)
    lora_targets: Optional[str] = _option(None, "LoRA: projections that get adapters: query-value (default), "
                                                "attention (query, key, value and attention output) or all "
                                                "(attention and feed-forward dense layers)", choices=tuple(LORA_TARGETS))
    max_length: int = _option(DEFAULT_MAX_LENGTH, "maximum tokens per training example; longer ones are truncated "
                                                  "(and counted); at most the model's window (default: "
                                                  f"{DEFAULT_MAX_LENGTH}, or the window when it is shorter)",
                              values=POSITIVE_INT)
    stride: int = _option(32, "tokens of overlap between windows when predicting on longer inputs",
                          values=NON_NEGATIVE_INT)
    label_all_subwords: bool = _option(False, "train on every subword of a word, not only its first")
    word_shapes: Optional[bool] = _option(None, "token classification: give the encoder each word's shape (lower, "
                                                "Title, UPPER, mixed, digits, other) as its token type, so an uncased "
                                                "model sees capitalisation (default: on for uncased tokenizers)")
    context_window: int = _option(0, "token classification: encode each sentence with up to this many subwords "
                                     "of the previous and of the next sentences of its document (-DOCSTART- "
                                     "boundaries) as context, in training, evaluation and `predict --context "
                                     "document` (0: none)", values=NON_NEGATIVE_INT)
    word_split: str = _option(NATURAL, "token classification: how prediction splits raw text into words: "
                                       "natural (text as people write it: punctuation, quotes and clitics "
                                       "split off as in CoNLL tokens, so `Paris.` gives `Paris` and U.S., Corp. "
                                       "and Anglo-Dutch stay whole) or whitespace (text already tokenized with "
                                       "spaces)", choices=WORD_SPLITS)
    patience: int = _option(2, "epochs without improvement before early stopping", values=NON_NEGATIVE_INT)
    average_epochs: int = _option(1, "the final model is the mean of the weights at the ends of the last N epochs "
                                     "(1: the last epoch's own weights); a run that stops early averages nothing",
                                  values=POSITIVE_INT)
    monitor: Optional[str] = _option(None, "metric for early stopping and the best checkpoint "
                                           "(default: val_f1 for tokens, val_accuracy for sequences)")
    seed: int = _option(42, "random seed for initialisation, shuffling and dropout", values=SEED)
    precision: str = _option("fp32", "numeric precision: fp32; bf16 (mixed_bfloat16: CPUs with AVX512-BF16/AMX, "
                                     "recent GPUs); fp16 (mixed_float16 with dynamic loss scaling: GPUs)",
                             choices=PRECISIONS)
    xla: bool = _option(False, "compile training and prediction steps with XLA")
    packing: Optional[bool] = _option(None, "token classification: train on rows that pack several sentences, "
                                            "each attending only to itself (no padding in batches; the same "
                                            "function as unpacked rows). Default: on for BERT encoders")
    strategy: str = _option("auto", "tf.distribute strategy: auto (mirrored when this process sees more than one "
                                    "GPU, else one device), one-device, mirrored (all local GPUs), multi-worker "
                                    "(MultiWorkerMirroredStrategy; every worker runs the same command, see "
                                    "--cluster-resolver), tpu (experimental: untested on TPUs, and steps are not "
                                    "compiled with the static shapes TPUs need; see --tpu); --batch-size is "
                                    "the global batch",
                            choices=STRATEGIES)
    cluster_resolver: str = _option("tf-config", "--strategy multi-worker: read the cluster from the TF_CONFIG "
                                                 "environment variable, or from Slurm's (slurm)",
                                    choices=CLUSTER_RESOLVERS)
    tpu: Optional[str] = _option(None, "--strategy tpu (experimental): the TPU's name or grpc:// address "
                                       "(default: the local TPU VM)")
    gradient_checkpointing: bool = _option(False, "recompute each encoder layer's activations in the backward "
                                                  "pass instead of keeping them: less memory for long inputs "
                                                  "and large batches, for about one more forward pass per step")
    num_buckets: int = _option(8, "length buckets for batching (bounded set of batch shapes)", values=POSITIVE_INT)
    eval_batch_size: int = _option(64, "batch size for validation and prediction", values=POSITIVE_INT)
    max_train_examples: Optional[int] = _option(None, "use only the first N training examples", values=POSITIVE_INT)
    max_validation_examples: Optional[int] = _option(None, "use only the first N validation examples",
                                                     values=POSITIVE_INT)
    text_column: Optional[str] = _option(None, "text column of tabular data (default: 'text' or 'sentence')")
    text_pair_column: Optional[str] = _option(None, "second text column, for sentence-pair classification")
    label_column: str = _option("label", "label column of tabular data (regression: the numeric target; "
                                         "multi-label: label names or ids joined by --label-separator)")
    label_columns: Optional[str] = _option(None, "multi-label classification: comma-separated 0/1 columns, one per "
                                                 "label (the label is the column's name), instead of --label-column")
    label_separator: Optional[str] = _option(None, "multi-label classification: the separator of the labels in "
                                                   f"--label-column (default: '{DEFAULT_LABEL_SEPARATOR}'; "
                                                   "JSON Lines may hold a list instead)")
    label_smoothing: Optional[float] = _option(None, "token and single-label classification: train towards targets "
                                                     "that spread this share of each label's weight evenly over all "
                                                     "classes (default: none; it did not help CoNLL-2003)",
                                               values=FRACTION)
    class_weight: Optional[str] = _option(None, "classification: weigh the loss by class: 'balanced' (each class "
                                                "by total / (classes x its count); multi-label: each label's "
                                                "positives by its negatives / positives) or LABEL=WEIGHT,... "
                                                "(YAML: a mapping) for sequence classification, "
                                                "LABEL=POSITIVE_WEIGHT,... for multi-label (unnamed labels: 1)")
    loss: Optional[str] = _option(None, "regression: mse (default) or huber (less pulled by outlying targets)",
                                  choices=REGRESSION_LOSSES)
    normalize_targets: Optional[bool] = _option(None, "regression: train on targets scaled to mean 0 and "
                                                      "standard deviation 1 (the scale is stored with the model "
                                                      "and undone in every prediction; default: on)")
    token_column: int = _option(0, "CoNLL column holding the token", values=ANY_INT)
    tag_column: int = _option(-1, "CoNLL column holding the tag (-1: the last)", values=ANY_INT)
    tag_scheme: str = _option("auto", "tagging scheme of CoNLL input, normalised to IOB2",
                              choices=("auto", "IOB1", "IOB2", "BIOES"))
    encoding: str = _option("utf-8", "text encoding of the data files")
    tfds_data_dir: Optional[str] = _option(None, "TensorFlow Datasets data_dir holding prepared datasets "
                                                 "(for tfds:NAME[:SPLIT] data)")
    tensorboard: bool = _option(True, "write TensorBoard logs to <output_dir>/logs")

    def __post_init__(self) -> None:
        self.check_values()
        if self.lora_rank > 0:  # LoRA's defaults are recorded in config.yaml; without LoRA they stay unset
            self.lora_alpha = DEFAULT_LORA_ALPHA if self.lora_alpha is None else self.lora_alpha
            self.lora_dropout = DEFAULT_LORA_DROPOUT if self.lora_dropout is None else self.lora_dropout
            self.lora_targets = self.lora_targets or next(iter(LORA_TARGETS))
        if self.task == REGRESSION and self.normalize_targets is None:
            self.normalize_targets = True
        if self.learning_rate is None and self.task in DEFAULT_LEARNING_RATES:
            self.learning_rate = DEFAULT_LORA_LEARNING_RATE if self.lora_rank > 0 else DEFAULT_LEARNING_RATES[self.task]

    @property
    def monitor_metric(self) -> str:
        if self.monitor:
            return self.monitor
        return VALIDATION_METRICS.get(self.task, ("val_accuracy",))[0]

    @property
    def monitor_mode(self) -> str:
        """``min`` for a monitored loss or error, ``max`` for a score."""
        return "min" if self.monitor_metric in LOWER_IS_BETTER else "max"

    @property
    def label_column_list(self) -> Optional[List[str]]:
        """``label_columns`` as a list of column names (None when not given)."""
        if self.label_columns is None:
            return None
        return [name.strip() for name in self.label_columns.split(",") if name.strip()]

    def monitor_for(self, class_counts: Dict[str, int]) -> Tuple[Dict[str, str], List[str]]:
        """For sequence classification on skewed training labels (``class_counts``: examples per class),
        ``{"monitor": "val_macro_f1"}`` unless --monitor was given, with a sentence for the run's log;
        else nothing. (See :meth:`schedule_for` for the form.)"""
        if self.monitor or not self.validation or self.task != SEQUENCE_CLASSIFICATION or not class_counts:
            return {}, []
        ratio = max(class_counts.values()) / max(min(class_counts.values()), 1)
        if ratio < IMBALANCE_RATIO:
            return {}, []
        return {"monitor": "val_macro_f1"}, [
            f"monitor val_macro_f1: the training labels are skewed ({ratio:.1f} times more examples of the most "
            f"frequent class than of the rarest, at least {IMBALANCE_RATIO:g}), where accuracy rewards ignoring "
            "the rare classes"]

    def schedule_for(self, num_examples: int, replicas: int = 1) -> Tuple[Dict[str, int], List[str]]:
        """An unset batch size and number of epochs for ``num_examples`` training examples, trained by
        ``replicas`` replicas (a default batch size is rounded up to a multiple of them).

        Returns the values chosen (``{option: value}``, for ``dataclasses.replace``; this configuration
        is left as it is) and a sentence per value, for the run's log.
        """
        chosen: Dict[str, int] = {}
        sentences = []
        batch_size = self.batch_size
        if batch_size is None:
            size = next((size for below, size in SMALL_DATA_BATCH_SIZES if num_examples < below), DEFAULT_BATCH_SIZE)
            batch_size = chosen["batch_size"] = _ceil_div(size, replicas) * replicas
            sentences.append(f"batch size {batch_size} for {num_examples} training examples"
                             + (f" ({batch_size // replicas} for each of {replicas} replicas)" if replicas > 1 else ""))
        if self.epochs is None:
            steps = _ceil_div(_ceil_div(num_examples, batch_size), self.gradient_accumulation_steps)  # updates
            epochs = chosen["epochs"] = min(MAX_DEFAULT_EPOCHS, max(DEFAULT_EPOCHS[self.task],
                                                                  _ceil_div(self.min_updates, steps)))
            sentences.append(f"{epochs} epochs ({steps} updates each; at least {self.min_updates} updates "
                             f"in all, at most {MAX_DEFAULT_EPOCHS} epochs)")
        return chosen, sentences

    def frozen(self) -> "TrainConfig":
        """This configuration, marked resolved: assigning to it raises from now on (``dataclasses.replace``
        makes a changed copy). Why: config.yaml, the resume key and every step of a run read the one
        configuration :func:`tfft.training.data.prepare_data` resolved; a value changed half-way would make
        them disagree."""
        object.__setattr__(self, "_frozen", True)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise dataclasses.FrozenInstanceError(
                f"cannot assign to '{name}': this configuration was resolved for its data and is frozen; "
                f"make a changed copy with dataclasses.replace(config, {name}=...)")
        super().__setattr__(name, value)

    def check_replica_split(self, replicas: int) -> None:
        """Refuse a global batch that ``replicas`` replicas cannot share evenly. The batch is sized
        by ``batch_tokens`` when given (then ``batch_size`` does not size it), else by ``batch_size``."""
        name = "batch_tokens" if self.batch_tokens is not None else "batch_size"
        value = getattr(self, name)
        if replicas > 1 and value is not None and value % replicas:
            lower, upper = value // replicas * replicas, _ceil_div(value, replicas) * replicas
            unit = "tokens" if name == "batch_tokens" else "rows"
            raise ConfigError(f"The '{name}' option is the global batch ({unit} per step), split evenly among the "
                              f"{replicas} replicas; {value} does not divide by {replicas} "
                              f"({' or '.join(str(v) for v in (lower, upper) if v > 0)} would).")

    @property
    def word_inputs(self) -> WordInputs:
        """The run's word shapes and document context, as the encoders take them."""
        return WordInputs(shapes=self.uses_word_shapes,
                          context_window=self.context_window if self.task == TOKEN_CLASSIFICATION else 0)

    @property
    def uses_word_shapes(self) -> bool:
        """Whether the model takes word shapes as token types (unset, as in older runs: no)."""
        return self.task == TOKEN_CLASSIFICATION and bool(self.word_shapes)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.task}")

    def check_values(self) -> None:
        """Refuse a numeric option outside its declared range, and an empty text (on construction, and
        again by ``validate`` for values set since)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if option_range(f) is not None and value is not None:
                option_range(f).check(f.name, value)
            elif value == "":
                raise ConfigError(f"The '{f.name}' option must not be empty.")

    def validate(self) -> "TrainConfig":
        """Check values a run cannot start with; returns self for chaining."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and (value is not None or f.name == "task"):  # task: required
                raise ConfigError(f"The '{f.name}' option must be one of {', '.join(choices)}. Got {value!r} instead.")
        if not self.train:
            raise ConfigError("The 'train' option is required (a training data file).")
        self.check_values()
        if not self.stride < self.max_length:
            raise ConfigError(f"The 'stride' option must be below max_length ({self.max_length}). "
                              f"Got {self.stride!r} instead.")
        if not self.lora_rank and any(getattr(self, name) is not None for name in LORA_OPTIONS):
            given = [name for name in LORA_OPTIONS if getattr(self, name) is not None]
            raise ConfigError(f"The '{given[0]}' option applies to LoRA only; set --lora-rank R (> 0) or remove it.")
        if self.learning_rate is None:  # no default for an unknown task, which is refused above
            raise ConfigError("The 'learning_rate' option needs a value.")
        if self.task != TOKEN_CLASSIFICATION and (self.word_shapes or self.context_window or self.packing):
            raise ConfigError("The 'word_shapes', 'context_window' and 'packing' options are for token "
                              f"classification; remove them for {self.task}.")
        self._validate_task_options()
        if self.tpu is not None and self.strategy != "tpu":
            raise ConfigError(f"The 'tpu' option is for --strategy tpu (the strategy is {self.strategy!r}).")
        if self.cluster_resolver != "tf-config" and self.strategy != "multi-worker":
            raise ConfigError(f"The 'cluster_resolver' option is for --strategy multi-worker "
                              f"(the strategy is {self.strategy!r}).")
        metrics = VALIDATION_METRICS.get(self.task, ())
        if self.monitor and self.monitor not in metrics:
            raise ConfigError(f"The 'monitor' option must be one of the metrics {self.task} produces: "
                              f"{', '.join(metrics)}. Got {self.monitor!r} instead.")
        if self.monitor and not self.validation:
            raise ConfigError(f"The 'monitor' option ({self.monitor}) needs validation data (--validation).")
        return self

    def _validate_task_options(self) -> None:
        """Options that belong to one task are refused elsewhere, rather than silently ignored."""
        for name, tasks in (("label_columns", (MULTI_LABEL_CLASSIFICATION,)),
                            ("label_separator", (MULTI_LABEL_CLASSIFICATION,)),
                            ("class_weight", (SEQUENCE_CLASSIFICATION, MULTI_LABEL_CLASSIFICATION)),
                            ("label_smoothing", (TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION)),
                            ("pooling", SEQUENCE_TASKS),
                            ("loss", (REGRESSION,)), ("normalize_targets", (REGRESSION,))):
            if getattr(self, name) is not None and self.task not in tasks:
                raise ConfigError(f"The '{name}' option is for {' and '.join(tasks)}, not {self.task}.")
        if self.label_columns is not None:
            if not self.label_column_list:
                raise ConfigError(f"The 'label_columns' option must name columns, e.g. anger,joy. "
                                  f"Got {self.label_columns!r} instead.")
            if self.label_separator is not None:
                raise ConfigError("The 'label_separator' option splits --label-column; with 'label_columns' "
                                  "(one 0/1 column per label) there is nothing to split: remove one of them.")
            if self.train.startswith("tfds:"):
                raise ConfigError("The 'label_columns' option is for CSV/TSV/JSON Lines files; tfds data reads "
                                  "its labels from --label-column.")
        if self.class_weight is not None:
            parse_class_weight(self.class_weight)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Union[str, Path]) -> None:
        from tfft.files import write_text

        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = "configuration") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        normalised = option_keys(values, source)
        unknown = sorted(set(normalised) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if isinstance(normalised.get("class_weight"), dict):  # YAML's mapping form: the flag's LABEL=WEIGHT,...
            normalised["class_weight"] = ",".join(f"{label}={weight}"
                                                  for label, weight in normalised["class_weight"].items())
        return cls(**{name: coerce_option(fields[name], value, source) for name, value in normalised.items()})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), source=str(path))


def option_keys(values: Dict[Any, Any], source: str) -> Dict[str, Any]:
    """``values`` keyed by option name (``learning-rate`` is ``learning_rate``); two spellings of one
    option are refused rather than one silently winning."""
    spelled: Dict[str, str] = {}
    for key in values:
        name = str(key).replace("-", "_")
        if name in spelled:
            raise ConfigError(f"{source}: {spelled[name]!r} and {str(key)!r} name the same option; keep one")
        spelled[name] = str(key)
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def parse_class_weight(value: str) -> Union[str, Dict[str, float]]:
    """``balanced``, or the ``LABEL=WEIGHT,...`` map (``{label: weight}``); ConfigError for anything else."""
    if value.strip() == BALANCED:
        return BALANCED
    weights = {}
    for part in value.split(","):
        label, found, weight = part.rpartition("=")
        try:
            number = float(weight)
        except ValueError:
            number = float("nan")
        if not found or not label.strip() or not number > 0 or number == float("inf"):
            raise ConfigError(f"The 'class_weight' option must be '{BALANCED}' or LABEL=WEIGHT pairs with weights "
                              f"> 0, e.g. neg=1,pos=4. Got {value!r} instead.")
        weights[label.strip()] = number
    return weights


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce_option(f: dataclasses.Field, value: Any, source: str = "configuration") -> Any:
    """``value`` converted to the option's declared type (a number: within its declared range), or a
    ConfigError naming the option and ``source``.

    Why: YAML 1.1 reads ``1e-4`` as a string and users quote numbers (``"32"``); both mean
    what they say. Booleans accept true/false, yes/no, on/off and 1/0.
    """
    name, annotation = f.name, str(f.type)
    if value is None:
        if annotation.startswith("Optional"):
            return None
        raise ConfigError(f"{source}: the '{name}' option needs a value")
    if option_range(f) is not None:
        return option_range(f).check(name, value, source)
    text = str(value).strip().lower()
    if "bool" in annotation:
        if isinstance(value, bool) or text in _TRUE + _FALSE:
            return value if isinstance(value, bool) else text in _TRUE
        raise ConfigError(f"{source}: the '{name}' option must be true or false. Got {value!r} instead.")
    if isinstance(value, (dict, list, bool)):
        raise ConfigError(f"{source}: the '{name}' option must be a string. Got {value!r} instead.")
    if str(value) == "":
        raise ConfigError(f"{source}: the '{name}' option must not be empty.")
    return str(value)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is refused (SafeLoader keeps the
    last value silently, so the first line a user edits may be the one that is ignored)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_lines: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                with contextlib.suppress(TypeError):  # an unhashable key: SafeLoader's own error follows
                    line = key_node.start_mark.line + 1
                    if key in first_lines:
                        raise _DuplicateKey(key, line, first_lines[key])
                    first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


def read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (and the line: bytes that are not UTF-8, a
    key given twice)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a YAML configuration file")
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(f"{path}:{line}: cannot decode byte 0x{data[error.start:error.end].hex()} (byte {column} "
                          "of the line) as utf-8; YAML configuration files are read as UTF-8: save the file as "
                          "UTF-8") from None
    try:
        values = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKey as duplicate:
        raise ConfigError(f"{path}:{duplicate.line}: the key {duplicate.key!r} is given twice (first on line "
                          f"{duplicate.first_line}); remove one of them") from None
    except yaml.YAMLError as error:  # PyYAML's message runs to several lines, quoting the file: keep one
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        message = f"{problem} ({context})" if context else problem
        raise ConfigError(f"{path}{where}: invalid YAML: {' '.join(message.split())}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(values).__name__}")
    return values
