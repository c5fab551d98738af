"""Run configuration: one dataclass that the CLI flags, YAML files and Python share.

Each field's ``help`` metadata is the documentation of the matching ``--flag`` and YAML
key, so the three cannot drift apart. Precedence: defaults < ``--config`` YAML < flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, SEQUENCE_CLASSIFICATION, TASKS, TOKEN_CLASSIFICATION
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
DEFAULT_EPOCHS = 3
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


def _option(default: Any, help: str, **extra: Any):
    return field(default=default, metadata={"help": help, **extra})


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
                                          "3, more for small training sets, see --min-updates)")
    batch_size: Optional[int] = _option(None, "training batch size in sentences per step (default: 32; 16 below "
                                              "2,000 training examples, 8 below 500)")
    min_updates: int = _option(MIN_UPDATES, "when --epochs is not given, train for enough epochs to make at least "
                                            "this many optimizer updates (small data sets need more epochs)")
    gradient_accumulation_steps: int = _option(1, "micro-batches per optimizer update: the effective batch is this "
                                                  "many times --batch-size, weighted by labelled tokens so it equals "
                                                  "one large batch (single device)")
    batch_tokens: Optional[int] = _option(None, "size training batches by tokens instead: about this many "
                                                "tokens per batch (overrides --batch-size per length bucket)")
    learning_rate: Optional[float] = _option(None, "peak AdamW learning rate (default: 2e-4 for token "
                                                   "classification, 1e-4 for sequence classification, "
                                                   f"{DEFAULT_LORA_LEARNING_RATE:g} with --lora-rank)")
    warmup_fraction: float = _option(0.1, "fraction of the training steps spent warming the learning rate up")
    weight_decay: float = _option(0.01, "decoupled AdamW weight decay (not applied to LayerNorm and biases)")
    dropout: Optional[float] = _option(None, "classifier dropout (default: the checkpoint's)")
    attention_dropout: Optional[float] = _option(None, "dropout on the encoder's attention probabilities (default: "
                                                       "0 on packed rows, where it cost a fifth of a step; the "
                                                       "checkpoint's otherwise, 0.1 for BERT models)")
    lora_rank: int = _option(0, "LoRA: freeze the encoder and train rank-R adapters on its projections, with the "
                                "classification head; the run directory keeps only those (0: full fine-tuning)")
    lora_alpha: Optional[float] = _option(None, "LoRA: adapters add alpha/rank * x A B to a projection "
                                                f"(default: {DEFAULT_LORA_ALPHA:g} for every rank)")
    lora_dropout: Optional[float] = _option(None, f"LoRA: dropout on the adapters' input (default: "
                                                  f"{DEFAULT_LORA_DROPOUT:g})")
    lora_targets: Optional[str] = _option(None, "LoRA: projections that get adapters: query-value (default), "
                                                "attention (query, key, value and attention output) or all "
                                                "(attention and feed-forward dense layers)", choices=tuple(LORA_TARGETS))
    max_length: int = _option(DEFAULT_MAX_LENGTH, "maximum tokens per training example; longer ones are truncated "
                                                  "(and counted); at most the model's window (default: "
                                                  f"{DEFAULT_MAX_LENGTH}, or the window when it is shorter)")
    stride: int = _option(32, "tokens of overlap between windows when predicting on longer inputs")
    label_all_subwords: bool = _option(False, "train on every subword of a word, not only its first")
    word_shapes: Optional[bool] = _option(None, "token classification: give the encoder each word's shape (lower, "
                                                "Title, UPPER, mixed, digits, other) as its token type, so an uncased "
                                                "model sees capitalisation (default: on for uncased tokenizers)")
    context_window: int = _option(0, "token classification: encode each sentence with up to this many subwords "
                                     "of the previous and of the next sentences of its document (-DOCSTART- "
                                     "boundaries) as context, in training, evaluation and `predict --context "
                                     "document` (0: none)")
    word_split: str = _option(NATURAL, "token classification: how prediction splits raw text into words: "
                                       "natural (text as people write it: punctuation, quotes and clitics "
                                       "split off as in CoNLL tokens, so `Paris.` gives `Paris` and U.S., Corp. "
                                       "and Anglo-Dutch stay whole) or whitespace (text already tokenized with "
                                       "spaces)", choices=WORD_SPLITS)
    patience: int = _option(2, "epochs without improvement before early stopping")
    monitor: Optional[str] = _option(None, "metric for early stopping and the best checkpoint "
                                           "(default: val_f1 for tokens, val_accuracy for sequences)")
    seed: int = _option(42, "random seed for initialisation, shuffling and dropout")
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
    num_buckets: int = _option(8, "length buckets for batching (bounded set of batch shapes)")
    eval_batch_size: int = _option(64, "batch size for validation and prediction")
    max_train_examples: Optional[int] = _option(None, "use only the first N training examples")
    max_validation_examples: Optional[int] = _option(None, "use only the first N validation examples")
    text_column: Optional[str] = _option(None, "text column of tabular data (default: 'text' or 'sentence')")
    text_pair_column: Optional[str] = _option(None, "second text column, for sentence-pair classification")
    label_column: str = _option("label", "label column of tabular data (regression: the numeric target; "
                                         "multi-label: label names or ids joined by --label-separator)")
    label_columns: Optional[str] = _option(None, "multi-label classification: comma-separated 0/1 columns, one per "
                                                 "label (the label is the column's name), instead of --label-column")
    label_separator: Optional[str] = _option(None, "multi-label classification: the separator of the labels in "
                                                   f"--label-column (default: '{DEFAULT_LABEL_SEPARATOR}'; "
                                                   "JSON Lines may hold a list instead)")
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
    token_column: int = _option(0, "CoNLL column holding the token")
    tag_column: int = _option(-1, "CoNLL column holding the tag (-1: the last)")
    tag_scheme: str = _option("auto", "tagging scheme of CoNLL input, normalised to IOB2",
                              choices=("auto", "IOB1", "IOB2", "BIOES"))
    encoding: str = _option("utf-8", "text encoding of the data files")
    tfds_data_dir: Optional[str] = _option(None, "TensorFlow Datasets data_dir holding prepared datasets "
                                                 "(for tfds:NAME[:SPLIT] data)")
    tensorboard: bool = _option(True, "write TensorBoard logs to <output_dir>/logs")

    def __post_init__(self) -> None:
        if self.lora_rank > 0:  # LoRA's defaults are recorded in config.yaml; without LoRA they stay unset
            self.lora_alpha = DEFAULT_LORA_ALPHA if self.lora_alpha is None else self.lora_alpha
            self.lora_dropout = DEFAULT_LORA_DROPOUT if self.lora_dropout is None else self.lora_dropout
            self.lora_targets = self.lora_targets or next(iter(LORA_TARGETS))
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

    def choose_monitor(self, class_counts: Dict[str, int]) -> Optional[str]:
        """For sequence classification on skewed training labels (``class_counts``: examples per class),
        monitor val_macro_f1 unless --monitor was given; returns a sentence for the run's log when it does."""
        if self.monitor or not self.validation or self.task != SEQUENCE_CLASSIFICATION or not class_counts:
            return None
        ratio = max(class_counts.values()) / max(min(class_counts.values()), 1)
        if ratio < IMBALANCE_RATIO:
            return None
        self.monitor = "val_macro_f1"
        return (f"monitor val_macro_f1: the training labels are skewed ({ratio:.1f} times more examples of the most "
                f"frequent class than of the rarest, at least {IMBALANCE_RATIO:g}), where accuracy rewards "
                "ignoring the rare classes")

    def resolve_schedule(self, num_examples: int, replicas: int = 1) -> List[str]:
        """Fill in an unset batch size and number of epochs for ``num_examples`` training examples,
        trained by ``replicas`` replicas (a default batch size is rounded up to a multiple of them).

        Returns a sentence per value chosen, for the run's log (the values are saved in config.yaml).
        """
        chosen = []
        if self.batch_size is None:
            size = next((size for below, size in SMALL_DATA_BATCH_SIZES if num_examples < below), DEFAULT_BATCH_SIZE)
            self.batch_size = _ceil_div(size, replicas) * replicas
            chosen.append(f"batch size {self.batch_size} for {num_examples} training examples"
                          + (f" ({self.batch_size // replicas} for each of {replicas} replicas)" if replicas > 1 else ""))
        if self.epochs is None:
            steps = _ceil_div(_ceil_div(num_examples, self.batch_size), self.gradient_accumulation_steps)  # updates
            self.epochs = min(MAX_DEFAULT_EPOCHS, max(DEFAULT_EPOCHS, _ceil_div(self.min_updates, steps)))
            chosen.append(f"{self.epochs} epochs ({steps} updates each; at least {self.min_updates} updates "
                          f"in all, at most {MAX_DEFAULT_EPOCHS} epochs)")
        return chosen

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

    def validate(self) -> "TrainConfig":
        """Check values a run cannot start with; returns self for chaining."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and (value is not None or f.name == "task"):  # task: required
                raise ConfigError(f"The '{f.name}' option must be one of {', '.join(choices)}. Got {value!r} instead.")
        if not self.train:
            raise ConfigError("The 'train' option is required (a training data file).")
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size", "num_buckets", "min_updates",
                     "gradient_accumulation_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"The '{name}' option must be a positive integer. Got {getattr(self, name)!r} instead.")
        for name in ("max_train_examples", "max_validation_examples", "batch_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"The '{name}' option must be a positive integer when given. "
                                  f"Got {getattr(self, name)!r} instead.")
        for name in ("context_window", "patience", "weight_decay", "lora_rank"):
            if getattr(self, name) < 0:
                raise ConfigError(f"The '{name}' option must be >= 0. Got {getattr(self, name)!r} instead.")
        for name in ("warmup_fraction", "dropout", "attention_dropout", "lora_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"The '{name}' option must be in [0, 1). Got {value!r} instead.")
        if not 0 <= self.stride < self.max_length:
            raise ConfigError(f"The 'stride' option must be >= 0 and below max_length ({self.max_length}). "
                              f"Got {self.stride!r} instead.")
        if not self.lora_rank and any(getattr(self, name) is not None for name in LORA_OPTIONS):
            given = [name for name in LORA_OPTIONS if getattr(self, name) is not None]
            raise ConfigError(f"The '{given[0]}' option applies to LoRA only; set --lora-rank R (> 0) or remove it.")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ConfigError(f"The 'lora_alpha' option must be > 0. Got {self.lora_alpha!r} instead.")
        if self.learning_rate is None or not self.learning_rate > 0:
            raise ConfigError(f"The 'learning_rate' option must be > 0. Got {self.learning_rate!r} instead.")
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
        if self.label_separator == "":
            raise ConfigError("The 'label_separator' option must not be empty.")
        if self.class_weight is not None:
            parse_class_weight(self.class_weight)
        if self.task == REGRESSION and self.normalize_targets is None:
            self.normalize_targets = True

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Union[str, Path]) -> None:
        from tfft.files import write_text

        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: Dict[str, Any], source: str = "configuration") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        normalised = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normalised) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        if isinstance(normalised.get("class_weight"), dict):  # YAML's mapping form: the flag's LABEL=WEIGHT,...
            normalised["class_weight"] = ",".join(f"{label}={weight}"
                                                  for label, weight in normalised["class_weight"].items())
        return cls(**{name: coerce_option(name, types[name], value, source) for name, value in normalised.items()})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), source=str(path))


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


def coerce_option(name: str, annotation: str, value: Any, source: str = "configuration") -> Any:
    """``value`` converted to the option's declared type, or a ConfigError naming the option and ``source``.

    Why: YAML 1.1 reads ``1e-4`` as a string and users quote numbers (``"32"``); both mean
    what they say. Booleans accept true/false, yes/no, on/off and 1/0.
    """
    if value is None:
        if annotation.startswith("Optional"):
            return None
        raise ConfigError(f"{source}: the '{name}' option needs a value")
    expected = next(t for t in ("bool", "int", "float", "str") if t in annotation)
    text = str(value).strip().lower()
    try:
        if expected == "bool":
            if isinstance(value, bool) or text in _TRUE + _FALSE:
                return value if isinstance(value, bool) else text in _TRUE
        elif expected == "int" and not isinstance(value, bool):
            number = float(value)
            if number.is_integer():
                return int(number)
        elif expected == "float" and not isinstance(value, bool):
            return float(value)
        elif expected == "str" and not isinstance(value, (dict, list, bool)):
            return str(value)
    except (TypeError, ValueError):
        pass
    described = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[expected]
    raise ConfigError(f"{source}: the '{name}' option must be {described}, got {value!r}")


def read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(values).__name__}")
    return values
