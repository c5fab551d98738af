"""What a classifier's outputs mean, per task, recorded in the model's own config.

A model's ``config.problem_type`` (the transformers field) says how its logits become outputs,
and every path that runs a model -- training's validation, ``evaluate``, ``predict``, the
SavedModel and TFLite exports -- applies :func:`logits_to_outputs`, so they cannot disagree:

* token and single-label sequence classification: softmax probabilities;
* multi-label classification: one sigmoid probability per label, a label being predicted when its
  probability reaches that label's decision threshold and, with :data:`AT_LEAST_ONE`, the most
  probable label of a text no threshold selects (the rule chosen on validation data,
  :func:`tfft.metrics.choose_decision_rule`, kept in the config as :data:`THRESHOLDS`,
  :data:`AT_LEAST_ONE` and :data:`DECISION_RULE`);
* regression: the value, the model's output scaled back from normalised targets with the
  mean and standard deviation of the training targets (:data:`TARGET_SCALE`);
* every sequence task: what its head reads, the first token or the mean of the last layer
  (:data:`tfft.pooling.POOLING`).

Keeping these in ``config.json`` (not beside it) means a model directory, a LoRA run's
adapters and every export carry them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from tfft.backend import tf
from tfft.data import MULTI_LABEL_CLASSIFICATION, REGRESSION, SEQUENCE_CLASSIFICATION
from tfft.pooling import AUTO, POOLING

if TYPE_CHECKING:
    from tfft.metrics import DecisionRule

PROBLEM_TYPES = {SEQUENCE_CLASSIFICATION: "single_label_classification",
                 MULTI_LABEL_CLASSIFICATION: "multi_label_classification", REGRESSION: "regression"}
# Model config attributes tfft adds (saved in config.json with the standard ones).
TARGET_SCALE = "tfft_target_scale"  # [mean, standard deviation] of the training targets
THRESHOLDS = "tfft_thresholds"  # per label, the probability from which it is predicted
AT_LEAST_ONE = "tfft_at_least_one"  # true: a text no threshold selects takes its most probable label
DECISION_RULE = "tfft_decision_rule"  # the name of the rule chosen (tfft.metrics.DecisionRule.name)
DEFAULT_THRESHOLD = 0.5


def head_config(task: str, target_scale: Optional[Tuple[float, float]] = None,
                pooling: str = AUTO) -> Dict[str, object]:
    """The config entries of a new model for ``task`` (none for token classification); ``pooling``: what a
    sequence head reads (:mod:`tfft.pooling`; ``auto`` is resolved from the checkpoint by ``build_model``)."""
    entries: Dict[str, object] = {}
    if task in PROBLEM_TYPES:
        entries["problem_type"] = PROBLEM_TYPES[task]
        entries[POOLING] = pooling
    if task == REGRESSION:
        entries[TARGET_SCALE] = [float(v) for v in (target_scale or (0.0, 1.0))]
    return entries


def saved_head_config(config) -> Dict[str, object]:
    """The head entries of a saved model's config, to rebuild the same head (LoRA runs)."""
    return {name: getattr(config, name) for name in ("problem_type", TARGET_SCALE, THRESHOLDS, AT_LEAST_ONE,
                                                      DECISION_RULE, POOLING)
            if getattr(config, name, None) is not None}


def logits_to_outputs(config, logits: tf.Tensor) -> tf.Tensor:
    """float32 outputs from a model's logits: probabilities, or regression values (``[batch, 1]``)."""
    logits = tf.cast(logits, tf.float32)
    kind = getattr(config, "problem_type", None)
    if kind == PROBLEM_TYPES[MULTI_LABEL_CLASSIFICATION]:
        return tf.sigmoid(logits)
    if kind == PROBLEM_TYPES[REGRESSION]:
        mean, scale = getattr(config, TARGET_SCALE, None) or (0.0, 1.0)
        return logits * scale + mean
    return tf.nn.softmax(logits, axis=-1)


def thresholds_of(config, num_labels: int) -> List[float]:
    """A multi-label model's decision thresholds (:data:`DEFAULT_THRESHOLD` for a model without tuned ones)."""
    found = getattr(config, THRESHOLDS, None)
    return [float(t) for t in found] if found else [DEFAULT_THRESHOLD] * num_labels


def at_least_one_of(config) -> bool:
    """Whether a multi-label model gives a text that no threshold selects its most probable label (runs
    from before the rule was recorded: no)."""
    return bool(getattr(config, AT_LEAST_ONE, False))


def set_decision_rule(config, rule: "DecisionRule") -> None:
    """Keep a multi-label model's decision rule in its config (exact float32 thresholds: not rounded, so a
    probability at the threshold is decided alike everywhere)."""
    setattr(config, THRESHOLDS, [float(t) for t in rule.thresholds])
    setattr(config, AT_LEAST_ONE, bool(rule.at_least_one))
    setattr(config, DECISION_RULE, rule.name)
