"""Training data, read, checked and encoded once: what a fit (or every tuner trial) trains on.

Everything here fails before anything is written: bad options, bad labels, a validation
label never seen in training. Under a multi-worker cluster each process then keeps only its
share of the encoded rows (:meth:`PreparedData.worker_share`), plus what must be the same
everywhere: every row's length (bucket boundaries, steps per epoch) and the targets (a
regression model's target scale, balanced class weights).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from tfft.backend import tf
from tfft.config import DEFAULT_MAX_LENGTH, VALIDATION_METRICS, TrainConfig
from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from tfft.data.labels import LabelMap
from tfft.data.tfds import default_text_keys
from tfft.distribution import Cluster
from tfft.errors import ConfigError
from tfft.features import Encoding, encode_for_training, inference_length
from tfft.lora import absolute_base_model
from tfft.families import family_of, note_once
from tfft.metrics import decision_metric_for
from tfft.models import checkpoint_config, load_tokenizer, word_shapes_by_default
from tfft.pipeline import make_dataset, pack_length_for, worker_input_fn
from tfft.run_dir import read_config_examples
from tfft.training.callbacks import ValidationMetrics
from tfft.training.losses import class_weights


@dataclass
class PreparedData:
    """Everything read and encoded from the data once, reusable across fits (and tuner trials).

    ``encoding`` and ``train_examples``: this process's rows, ``share`` = ``(i, W)``: rows ``i, i + W,
    ...`` (all of them, ``(0, 1)``, except on a worker of a multi-worker cluster). ``row_lengths`` and
    ``targets``: those of every training row.
    """

    tokenizer: object
    label_map: LabelMap
    train_examples: list
    validation_examples: Optional[list]
    encoding: Encoding
    row_lengths: Optional[np.ndarray] = None
    targets: Optional[np.ndarray] = None
    share: Tuple[int, int] = (0, 1)
    config: Optional[TrainConfig] = None  # resolved and frozen by prepare_data (None: data put together by hand)

    def __post_init__(self):
        if self.row_lengths is None:
            self.row_lengths = self.encoding.row_lengths
        if self.targets is None and self.encoding.word_index is None:
            # A sequence task's training targets, one per example (see tfft.features.text_targets).
            self.targets = self.encoding.labels

    @property
    def every_text_labelled(self) -> bool:
        """Multi-label: whether every training text has at least one label (then "at least one label" may
        be the decision rule)."""
        targets = self.targets
        return targets is not None and targets.ndim == 2 and len(targets) > 0 and bool(targets.sum(axis=1).min() > 0)

    def worker_share(self, cluster: Cluster) -> "PreparedData":
        """This worker's rows of a multi-worker cluster: rows ``i, i + W, ...`` for worker ``i`` of ``W``
        (all of them outside one). The rest can then be freed: only the share is trained on here."""
        share = (cluster.index, cluster.workers)
        if share == self.share:
            return self
        if self.share != (0, 1):
            raise ValueError(f"data shared out as rows {self.share[0]}::{self.share[1]} cannot be shared again")
        if self.encoding.num_rows < cluster.workers:
            raise ConfigError(f"{self.encoding.num_rows} training rows cannot be shared out among {cluster.workers} "
                              f"workers: each needs at least one. Train on more data or with fewer workers.")
        encoding = self.encoding.take(np.arange(cluster.index, self.encoding.num_rows, cluster.workers))
        examples = [self.train_examples[i] for i in encoding.example_index]
        encoding = replace(encoding, example_index=np.arange(len(examples)))  # rows of the share's examples
        return replace(self, encoding=encoding, train_examples=examples, share=share)

    def train_dataset(self, config: TrainConfig, cluster: Cluster) -> Tuple[tf.data.Dataset, int]:
        """``(dataset, steps per epoch)``: the shuffled training pipeline of ``cluster`` (packed rows with
        ``config.packing``, length buckets otherwise), whose steps each take ``gradient_accumulation_steps``
        batches of ``config.batch_size`` (the global batch, split among the replicas)."""
        micro_batches = config.gradient_accumulation_steps
        options = dict(batch_size=config.batch_size * micro_batches, pad_token_id=self.tokenizer.pad_token_id,
                       seed=config.seed, num_buckets=config.num_buckets,
                       batch_tokens=config.batch_tokens and config.batch_tokens * micro_batches,
                       pack_length=pack_length_for(self.row_lengths) if config.packing else None)
        model_config = checkpoint_config(config.model)
        family = family_of(model_config)

        def for_model(dataset: tf.data.Dataset) -> tf.data.Dataset:
            """The features the model takes (DistilBERT, MPNet, DeBERTa-v3: no token types)."""
            if family.uses_token_types(model_config):
                return dataset
            return dataset.map(lambda features, labels: (family.model_inputs(model_config, features), labels))

        if cluster.replicas == 1:
            dataset = for_model(make_dataset(self.encoding, shuffle=True, **options))
            return dataset, int(dataset.cardinality())
        config.check_replica_split(cluster.replicas)  # a tuner trial's batch size reaches here unchecked
        dataset_fn, steps = worker_input_fn(self.worker_share(cluster).encoding, all_row_lengths=self.row_lengths,
                                            replicas=cluster.replicas, worker=cluster.index,
                                            num_workers=cluster.workers, **options)
        return cluster.strategy.distribute_datasets_from_function(lambda context: for_model(dataset_fn(context))), steps

    def validation_metrics(self, config: TrainConfig, cluster: Cluster) -> Optional[ValidationMetrics]:
        """The callback that adds the validation scores to each epoch's logs (None without validation data).

        The chief encodes the validation set once and scores it; the other workers of a cluster, which
        take the chief's scores, get a callback that knows only the scores' names and encodes nothing.
        """
        if self.validation_examples is None:
            return None
        names = [name[len("val_"):] for name in VALIDATION_METRICS[config.task]]
        if not cluster.is_chief:
            return ValidationMetrics(None, [], self.label_map, names=names, cluster=cluster)
        return ValidationMetrics.from_examples(
            self.tokenizer, self.validation_examples, self.label_map,
            max_length=inference_length(self.tokenizer, config.task, config.max_length), stride=config.stride,
            batch_size=config.eval_batch_size, jit_compile=config.xla, word_inputs=config.word_inputs,
            names=names, cluster=cluster, decision_metric=decision_metric_for(config.monitor_metric),
            at_least_one=self.every_text_labelled,
        )


def prepare_data(config: TrainConfig, replicas: Optional[int] = None) -> PreparedData:
    """Read, check and encode the data of ``config``, to be trained by ``replicas`` replicas
    (default: those of the strategy in scope); fails before anything is written.

    What ``config`` leaves to tfft is decided here, once (:func:`resolve_config`): the data's
    ``config`` is that resolved configuration, frozen, and it is what config.yaml, the resume key
    and every later step read. ``config`` itself is left as given.
    """
    config.validate()
    replicas = replicas or Cluster.current().replicas
    tokenizer = load_tokenizer(config.model)
    check_model_window(config, tokenizer)
    train_examples = read_config_examples(config, config.train, config.max_train_examples)
    config, chosen = resolve_config(config, tokenizer, train_examples, replicas)
    for sentence in chosen:
        print(f"Chose {sentence}", flush=True)
    config.check_replica_split(replicas)
    label_map = label_map_for(config, train_examples)
    validation_examples = None
    if config.validation:
        validation_examples = read_config_examples(config, config.validation, config.max_validation_examples)
        label_map.check(validation_examples)
    data = PreparedData(tokenizer, label_map, train_examples, validation_examples,
                        encode_training_examples(config, tokenizer, train_examples, label_map), config=config)
    weights = class_weights(config, label_map, data.targets)
    if weights is not None:
        kind = "positive weights" if config.task == MULTI_LABEL_CLASSIFICATION else "class weights"
        print(f"Loss {kind}: " + ", ".join(f"{label}={w:.3g}" for label, w in zip(label_map.labels, weights)),
              flush=True)
    return data


def check_model_window(config: TrainConfig, tokenizer) -> None:
    """Refuse a ``max_length`` or ``stride`` the model's position window cannot hold (before any data is read)."""
    window = inference_length(tokenizer)
    if config.max_length > window and config.max_length != DEFAULT_MAX_LENGTH:
        raise ConfigError(f"The 'max_length' option must be at most {window} for this model, whose inputs hold "
                          f"at most {window} tokens (its position window). Got {config.max_length!r} instead.")
    if config.task == TOKEN_CLASSIFICATION and not config.stride < window - 3:
        raise ConfigError(f"The 'stride' option must be below {window - 3} for this model, whose windows hold "
                          f"{window} tokens. Got {config.stride!r} instead.")


def resolve_config(config: TrainConfig, tokenizer, train_examples: list,
                   replicas: int = 1) -> Tuple[TrainConfig, List[str]]:
    """``config`` with every option it leaves to tfft filled in from the model and the training examples,
    frozen (:meth:`TrainConfig.frozen`), and a sentence per choice worth a line in the run's log.

    The one place these are decided: the default max length for a model with a shorter window,
    the LoRA base model's absolute path (a run loads it again from wherever it is used), word
    shapes, packing (and attention dropout on packed rows), the pair column of a TFDS set, the
    batch size and number of epochs, and the monitored metric for skewed labels.
    """
    window = inference_length(tokenizer)
    changes: Dict[str, Any] = {}
    if config.max_length > window:  # the default (check_model_window refuses any other value)
        changes["max_length"] = window
    if config.lora_rank:
        changes["model"] = absolute_base_model(config.model)
    if config.word_shapes is None and config.task == TOKEN_CLASSIFICATION:
        changes["word_shapes"] = word_shapes_by_default(changes.get("model", config.model), tokenizer)
    elif config.uses_word_shapes:
        model_config = checkpoint_config(config.model)
        refusal = family_of(model_config).word_shapes_refusal(model_config)
        if refusal is not None:
            raise ConfigError(refusal[0].upper() + refusal[1:])
    changes.update(packing_options(config))
    if config.text_pair_column is None and any(getattr(e, "text_pair", None) is not None for e in train_examples):
        # Pairs found by the TFDS reader's default features: recorded, so export and predict serve pairs.
        changes["text_pair_column"] = default_text_keys(config.train, config.tfds_data_dir)[1]
    schedule, sentences = config.schedule_for(len(train_examples), replicas)
    changes.update(schedule)
    if config.task == SEQUENCE_CLASSIFICATION:
        monitor, why = config.monitor_for(dict(Counter(example.label for example in train_examples)))
        changes.update(monitor)
        sentences += why
    return replace(config, **changes).frozen(), sentences


def packing_options(config: TrainConfig) -> Dict[str, Any]:
    """``packing`` (and ``attention_dropout``) as ``config`` trains with them: packing is on for token
    classification with an encoder whose family packs rows (:meth:`tfft.families.Family.packing_refusal`:
    :mod:`tfft.training.packing` calls BERT's layers), unless set; refused when set for another encoder,
    and otherwise length buckets, the reason printed once.

    Packed rows also train without attention-probability dropout unless ``attention_dropout`` is set:
    on 128-token packs the attention probabilities are a step's largest tensor, and drawing their
    dropout masks cost a fifth of the step, with no loss of F1 (docs/results.md, the NER levers)."""
    if config.task != TOKEN_CLASSIFICATION or config.packing is False:
        return {"packing": False}
    model_config = checkpoint_config(config.model)
    refusal = family_of(model_config).packing_refusal(model_config)
    if config.packing and refusal is not None:
        raise ConfigError(f"The 'packing' option cannot apply: {refusal}. Remove --packing to train on length buckets.")
    if refusal is not None:
        note_once("packing off", refusal + "; training on length buckets")
        return {"packing": False}
    if config.attention_dropout is None:
        return {"packing": True, "attention_dropout": 0.0}
    return {"packing": True}


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
