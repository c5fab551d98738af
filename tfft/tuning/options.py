"""What a user sets for a search: the search space (Python, YAML, flags) and the ``tune`` flags.

Nothing here imports KerasTuner (or TensorFlow), so ``tfft --help`` and every other
command stay as fast as before; a ``Dimension`` only calls the methods of the
``HyperParameters`` object it is handed.

A dimension is one of: a range ``{min: LOW, max: HIGH}`` (log-uniform by default for the
learning rate), a list of choices, one fixed value, or ``null`` (not searched: the run's
own option value is used). Precedence: defaults < ``--search-space`` YAML < flags <
entries of a ``kt.HyperParameters`` passed from Python (KerasTuner keeps the first
registration of a name).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from tfft.config import DEFAULT_EPOCHS, POSITIVE, POSITIVE_INT, Range, TrainConfig, non_empty, option_range, read_yaml
from tfft.errors import ConfigError

TUNERS = ("random", "bayesian", "hyperband")
# The TrainConfig options a search can vary, and the default sampling of a range of each. Their values
# are checked against the option's declared range (tfft.config.Range), as a run's own options are.
TUNED_OPTIONS: Dict[str, str] = {
    "learning_rate": "log",
    "batch_size": "linear",
    "epochs": "linear",
    "warmup_fraction": "linear",
    "weight_decay": "linear",
    "dropout": "linear",
    "lora_rank": "linear",
}
# BERT's hidden_dropout_prob, which its classifier uses when classifier_dropout is unset:
# the untuned dropout when --dropout is not given (a hyperparameter cannot be None).
CHECKPOINT_DROPOUT = 0.1
RANGE_KEYS = {"min", "max", "sampling", "step"}
# KerasTuner's Hyperband keeps 1/factor of the trials each round: a factor of 1 never narrows.
HYPERBAND_FACTOR = Range(integer=True, low=2)

Number = Union[int, float]


@dataclass(frozen=True)
class Dimension:
    """How one option is searched: ``low``..``high`` (a range) or ``choices`` (one choice = fixed)."""

    low: Optional[Number] = None
    high: Optional[Number] = None
    choices: Tuple[Number, ...] = ()
    sampling: str = "linear"
    step: Optional[Number] = None

    @classmethod
    def parse(cls, name: str, value: Any, source: str = "search space") -> Optional["Dimension"]:
        """A YAML/flag value: ``None``, a scalar (fixed), a list (choices) or a min/max mapping (range)."""
        sampling = TUNED_OPTIONS[name]
        if value is None:
            return None
        if isinstance(value, Mapping):
            unknown = set(value) - RANGE_KEYS
            if unknown or not {"min", "max"} <= set(value):
                raise ConfigError(f"{source}: '{name}' as a range needs 'min' and 'max' (optional: 'sampling', "
                                  f"'step'); got keys {sorted(value)}")
            low, high = _number(name, value["min"], source), _number(name, value["max"], source)
            step = None if value.get("step") is None else _step(name, value["step"], source)
            dimension = cls(low=low, high=high, sampling=str(value.get("sampling", sampling)), step=step)
        else:
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values:
                raise ConfigError(f"{source}: '{name}' has an empty list of choices")
            dimension = cls(choices=tuple(_number(name, v, source) for v in values))
        return dimension.checked(name, source)

    def checked(self, name: str, source: str = "search space", label: Optional[str] = None) -> "Dimension":
        """Reject what KerasTuner would only reject at the first trial, naming the option as the user gave
        it: ``label``, else ``SOURCE: 'name'`` (the key of a search-space file)."""
        what = label or f"{source}: '{name}'"
        smallest = min(self.choices) if self.choices else self.low
        if name == "lora_rank" and smallest is not None and smallest < 1:
            raise ConfigError(f"{what} values must be >= 1 (compare with full fine-tuning in a separate run: its "
                              f"learning rate differs); got {list(self.choices) or self.low}")
        if self.choices:
            return self
        if self.low is None or self.high is None or self.low > self.high:
            raise ConfigError(f"{what} range needs min <= max; got {self.low}..{self.high}")
        if self.sampling not in ("linear", "log", "reverse_log"):
            raise ConfigError(f"{what} sampling must be linear, log or reverse_log; got {self.sampling!r}")
        if self.sampling != "linear" and self.low <= 0:
            raise ConfigError(f"{what} {self.sampling} sampling needs min > 0; got {self.low}")
        return self

    def declare(self, hp, name: str, default: Optional[Number]) -> Number:
        """Register this dimension in ``hp`` and return the trial's value.

        ``default`` (the run's own option value, moved inside the dimension) is what
        KerasTuner uses for an entry it does not tune (``tune_new_entries=False``).
        """
        kind = int if _option_range(name).integer else float
        if len(self.choices) == 1 or (not self.choices and self.low == self.high):
            return hp.Fixed(name, self.choices[0] if self.choices else self.low)
        if self.choices:
            return hp.Choice(name, list(self.choices), default=default if default in self.choices else None)
        if default is not None:
            default = kind(min(max(default, self.low), self.high))
        method = hp.Int if kind is int else hp.Float
        return method(name, self.low, self.high, step=self.step, sampling=self.sampling, default=default)


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of a search over tfft's training options (``None``: not searched)."""

    learning_rate: Optional[Dimension]
    batch_size: Optional[Dimension]
    epochs: Optional[Dimension]
    warmup_fraction: Optional[Dimension]
    weight_decay: Optional[Dimension]
    dropout: Optional[Dimension]
    lora_rank: Optional[Dimension] = None

    @classmethod
    def default(cls, config: TrainConfig) -> "SearchSpace":
        """The default space; epochs range from 1 to the run's ``epochs`` (each trial also stops early;
        an unset ``epochs`` counts as the default of 3 until ``prepare_data`` settles it for the data).
        LoRA runs (``lora_rank`` > 0) search ten times larger learning rates; the rank is not searched
        unless asked for."""
        return cls(
            learning_rate=Dimension(1e-4, 3e-3, sampling="log") if config.lora_rank else Dimension(1e-5, 3e-4,
                                                                                                  sampling="log"),
            batch_size=Dimension(choices=(16, 32)),
            epochs=Dimension(1, config.epochs or DEFAULT_EPOCHS[config.task]),
            warmup_fraction=Dimension(0.0, 0.2),
            weight_decay=Dimension(0.0, 0.1),
            dropout=Dimension(0.0, 0.3),
        )

    def updated(self, values: Mapping[str, Any], source: str = "search space") -> "SearchSpace":
        """This space with the entries of a YAML-style mapping (see ``Dimension.parse``) replaced."""
        unknown = sorted(set(values) - set(TUNED_OPTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown search-space option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(TUNED_OPTIONS)}")
        return dataclasses.replace(self, **{k: Dimension.parse(k, v, source) for k, v in values.items()})

    def apply(self, hp, config: TrainConfig) -> TrainConfig:
        """Declare every searched option in ``hp``; return ``config`` with the trial's values."""
        if self.lora_rank is not None and not config.lora_rank:
            raise ConfigError("Searching 'lora_rank' needs a LoRA run: pass --lora-rank R (its learning rate, "
                              "learning-rate range and LoRA alpha, dropout and targets apply to every rank tried)")
        values = {}
        for name, dimension in self.dimensions().items():
            default = getattr(config, name)
            if name == "dropout" and default is None:
                default = CHECKPOINT_DROPOUT
            values[name] = dimension.declare(hp, name, default)
        return dataclasses.replace(config, **values).validate()

    def dimensions(self) -> Dict[str, Dimension]:
        return {name: getattr(self, name) for name in TUNED_OPTIONS if getattr(self, name) is not None}


# ---- the `tfft tune` command line -------------------------------------------------------

# flag -> (option, how its comma-separated values are read: a range or a list of choices)
SPACE_FLAGS = {
    "--learning-rate-range": ("learning_rate", "range"),
    "--batch-sizes": ("batch_size", "choices"),
    "--epochs-range": ("epochs", "range"),
    "--warmup-range": ("warmup_fraction", "range"),
    "--weight-decay-range": ("weight_decay", "range"),
    "--dropout-range": ("dropout", "range"),
    "--lora-ranks": ("lora_rank", "choices"),
}

TUNE_DESCRIPTION = """\
Search training hyperparameters with KerasTuner, each trial a tfft fit (early stopping on the
validation metric, which is also the objective: --monitor, default val_f1 for tokens and
val_accuracy for sequences). The search lives in OUTPUT_DIR (default runs/<task>-tune):
search/trial_*/trial.json (KerasTuner's project: running the same command again resumes it,
skipping finished trials), trials.csv/.json/.png (all trials, best first) and best/ (the best
trial as a tfft run directory for `tfft evaluate` and `tfft predict`).

Search space (default): learning_rate 1e-5..3e-4 (log; 1e-4..3e-3 with --lora-rank), batch_size
16,32, epochs 1..--epochs, warmup_fraction 0..0.2, weight_decay 0..0.1, dropout 0..0.3; with
--lora-rank R, --lora-ranks A,B,... also searches the adapters' rank (lora_rank). Change it with --search-space
YAML (keys as those names; a value is {min: LOW, max: HIGH[, sampling: log|linear][, step: S]},
a list of choices, one fixed value, or null to use the run's own option such as
--weight-decay) and/or the range flags below (flags win; one value fixes the option).
Hyperband sets each trial's epochs itself, up to --epochs."""


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The tune-only flags; ``tfft tune`` also takes every ``tfft train`` flag."""
    group = parser.add_argument_group("search")
    group.add_argument("--tuner", choices=TUNERS, default="random", help="search algorithm (default: random)")
    group.add_argument("--max-trials", type=POSITIVE_INT.parse_flag, default=10, metavar="N",
                       help="trials to run at most, counting those of a resumed search (default: 10)")
    group.add_argument("--search-space", metavar="YAML", type=non_empty, help="search-space file (see above)")
    for flag, (option, style) in SPACE_FLAGS.items():
        what = "comma-separated choices" if style == "choices" else "LOW,HIGH range"
        group.add_argument(flag, metavar="LOW,HIGH" if style == "range" else "A,B,...", type=_SpaceFlag(option, style),
                           help=f"{option}: {what}; one value fixes it")
    group.add_argument("--hyperband-factor", type=HYPERBAND_FACTOR.parse_flag, default=3, metavar="F",
                       help="Hyperband's reduction factor between rounds (default: 3)")
    group.add_argument("--retrain-on-all", action="store_true",
                       help="write best/ by retraining the best configuration on train+validation data, for "
                            "as many epochs as its trial needed to reach its best score")
    group.add_argument("--overwrite", action="store_true", help="discard an existing search in OUTPUT_DIR")
    group.add_argument("--trial-lease", type=POSITIVE.parse_flag, default=120.0, metavar="SECONDS",
                       help="distributed search (KERASTUNER_TUNER_ID etc., see docs/scaling.md): the chief runs "
                            "a trial again on another worker when its worker has been silent this long (default: 120)")


def search_space_from_args(args: argparse.Namespace, config: TrainConfig) -> SearchSpace:
    """Default space, then the ``--search-space`` file, then the range flags given (each already a
    checked ``Dimension``)."""
    space = SearchSpace.default(config)
    if args.search_space:
        space = space.updated(read_yaml(args.search_space), source=args.search_space)
    flags = {option: getattr(args, flag[2:].replace("-", "_")) for flag, (option, _) in SPACE_FLAGS.items()}
    return dataclasses.replace(space, **{option: value for option, value in flags.items() if value is not None})


class _SpaceFlag:
    """The argparse ``type`` of a range flag: its comma-separated numbers, each within the option's range,
    as a checked ``Dimension``, so a bad value is a usage error naming the flag before any data is read."""

    def __init__(self, option: str, style: str):
        self.option, self.style = option, style

    def __call__(self, text: str) -> Dimension:
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or "" in parts or (self.style == "range" and len(parts) > 2):
            expected = "LOW,HIGH or one value" if self.style == "range" else "comma-separated values"
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        values = []
        for part in parts:
            try:
                values.append(_number(self.option, part, "command line"))
            except ConfigError:
                raise argparse.ArgumentTypeError(f"each value must be {_option_range(self.option).describe()} "
                                                 f"({self.option}); got {part!r}") from None
        if self.style == "range" and len(values) == 2:
            dimension = Dimension(low=values[0], high=values[1], sampling=TUNED_OPTIONS[self.option])
        else:
            dimension = Dimension(choices=tuple(values))
        try:
            return dimension.checked(self.option, label=self.option)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None


def _option_range(name: str) -> Range:
    return option_range(next(f for f in dataclasses.fields(TrainConfig) if f.name == name))


def _number(name: str, value: Any, source: str) -> Number:
    """``value`` (a YAML number or a flag's text) as the option's number, within its declared range."""
    return _option_range(name).check(name, value, source)


def _step(name: str, value: Any, source: str) -> Number:
    """A range's step: a positive number (an integer for an integer option)."""
    positive = POSITIVE_INT if _option_range(name).integer else POSITIVE
    return positive.check(f"{name}' range's 'step", value, source)
