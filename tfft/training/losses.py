"""Losses of each task, as a weighted sum and its weight so that replicas and micro-batches can combine them.

Every loss ignores what carries no label: padding, special tokens and continuation subwords in
token tasks (``IGNORE_INDEX``), and the filler rows of a distributed epoch (``IGNORE_INDEX``
class ids, NaN label rows and targets; see :func:`tfft.pipeline.unlabelled_batch`). The mean a
loss returns is ``sum / weight``; tfft's data-parallel and accumulated
step (:mod:`tfft.training.train_step`) divides each replica's sum by the step's *global* weight
instead, which makes the update the one a single device computes on the whole batch.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from tfft.backend import tf
from tfft.config import BALANCED, MULTI_LABEL_CLASSIFICATION, REGRESSION, TrainConfig, parse_class_weight
from tfft.data.labels import LabelMap
from tfft.errors import ConfigError
from tfft.features import IGNORE_INDEX
from tfft.heads import TARGET_SCALE


def _count_scored(labels: tf.Tensor) -> tf.Tensor:
    """How many float labels (0/1 label entries, regression targets) carry a loss: all but the NaN filler."""
    return tf.reduce_sum(tf.cast(~tf.math.is_nan(tf.cast(labels, tf.float32)), tf.float32))


class TaskLoss:
    """A loss ``fn(labels, logits)`` (what ``model.compile`` takes) that can also give its parts."""

    def sum_and_weight(self, labels: tf.Tensor, logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """``(weighted sum of the per-position losses, total weight)``, both float32."""
        raise NotImplementedError

    def weight(self, labels: tf.Tensor) -> tf.Tensor:
        """The total weight of ``labels`` (what :meth:`sum_and_weight` divides by), without the model."""
        raise NotImplementedError

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        total, weight = self.sum_and_weight(labels, logits)
        return total / tf.maximum(weight, 1e-12)


class CrossEntropy(TaskLoss):
    """Softmax cross-entropy over the positions whose label is not ``IGNORE_INDEX``, each weighted by its
    class's weight (all 1 without ``class_weights``): the mean is ``sum(w * loss) / sum(w)``.

    Works for token logits ``[batch, length, classes]`` and sequence logits ``[batch, classes]`` alike.
    Averaging over scored positions only (not over the padded length) keeps the loss scale
    independent of how much padding a batch has.
    """

    def __init__(self, class_weights: Optional[Sequence[float]] = None, label_smoothing: float = 0.0):
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.label_smoothing = float(label_smoothing)

    def _weights(self, labels: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        scored = tf.not_equal(labels, IGNORE_INDEX)
        safe_labels = tf.where(scored, labels, tf.zeros_like(labels))
        weights = tf.cast(scored, tf.float32)
        if self.class_weights is not None:
            weights *= tf.gather(tf.constant(self.class_weights), safe_labels)
        return safe_labels, weights

    def sum_and_weight(self, labels, logits):
        logits = tf.cast(logits, tf.float32)
        # Keras hands per-example labels over as [batch, 1]; match them to the logits' batch shape.
        labels = tf.reshape(tf.cast(labels, tf.int32), tf.shape(logits)[:-1])
        safe_labels, weights = self._weights(labels)
        per_position = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
        if self.label_smoothing:  # the target puts label_smoothing / classes on every class, the rest on the label
            uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
            per_position = (1.0 - self.label_smoothing) * per_position + self.label_smoothing * uniform
        return tf.reduce_sum(per_position * weights), tf.reduce_sum(weights)

    def weight(self, labels):
        return tf.reduce_sum(self._weights(tf.cast(labels, tf.int32))[1])


class BinaryCrossEntropy(TaskLoss):
    """Multi-label loss: a sigmoid cross-entropy per label, averaged over examples x labels; a label's
    positives weigh ``pos_weight`` times its negatives (all 1 without ``pos_weight``)."""

    def __init__(self, pos_weight: Optional[Sequence[float]] = None):
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight, np.float32)

    def sum_and_weight(self, labels, logits):
        logits = tf.cast(logits, tf.float32)
        labels = tf.reshape(tf.cast(labels, tf.float32), tf.shape(logits))
        scored = ~tf.math.is_nan(labels)  # a NaN row is a filler row of a distributed epoch
        labels = tf.where(scored, labels, 0.0)
        if self.pos_weight is None:
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            losses = tf.nn.weighted_cross_entropy_with_logits(labels, logits, tf.constant(self.pos_weight))
        weights = tf.cast(scored, tf.float32)
        return tf.reduce_sum(losses * weights), tf.reduce_sum(weights)

    def weight(self, labels):
        return _count_scored(labels)


class RegressionLoss(TaskLoss):
    """Squared error (``mse``) or Huber loss (``huber``, quadratic within 1 and linear beyond) between the
    model's output and the target scaled as the model was told to learn it: ``(target - mean) / scale``."""

    def __init__(self, kind: str = "mse", mean: float = 0.0, scale: float = 1.0):
        if kind not in ("mse", "huber"):
            raise ValueError(f"kind must be mse or huber; got {kind!r}")
        self.kind, self.mean, self.scale = kind, float(mean), float(scale)

    def sum_and_weight(self, labels, logits):
        predicted = tf.reshape(tf.cast(logits, tf.float32), [-1])
        target = (tf.reshape(tf.cast(labels, tf.float32), [-1]) - self.mean) / self.scale
        scored = ~tf.math.is_nan(target)  # a NaN target is a filler row of a distributed epoch
        error = tf.abs(predicted - tf.where(scored, target, predicted))
        losses = tf.square(error) if self.kind == "mse" else tf.where(error <= 1.0, 0.5 * tf.square(error), error - 0.5)
        return tf.reduce_sum(losses), tf.reduce_sum(tf.cast(scored, tf.float32))

    def weight(self, labels):
        return _count_scored(labels)


def masked_sparse_categorical_crossentropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over the positions whose label is not ``IGNORE_INDEX`` (:class:`CrossEntropy`
    without class weights), for ``model.compile(loss=...)`` in token and sequence classification."""
    return CrossEntropy()(labels, logits)


def target_scale(targets: np.ndarray) -> Tuple[float, float]:
    """Mean and standard deviation of regression targets (1 for a constant target: nothing to scale)."""
    std = float(np.std(targets))
    return float(np.mean(targets)), std if std > 0 else 1.0


def task_loss(config: TrainConfig, label_map: LabelMap, model_config=None,
              targets: Optional[np.ndarray] = None) -> TaskLoss:
    """The loss ``config`` asks for. ``targets`` (the training targets, as :func:`tfft.features.text_targets`
    makes them) size the balanced class weights; ``model_config`` holds a regression model's target scale."""
    if config.task == REGRESSION:
        mean, scale = getattr(model_config, TARGET_SCALE, None) or (0.0, 1.0)
        return RegressionLoss(config.loss or "mse", mean, scale)
    weights = class_weights(config, label_map, targets)
    if config.task == MULTI_LABEL_CLASSIFICATION:
        return BinaryCrossEntropy(weights)
    return CrossEntropy(weights, config.label_smoothing or 0.0)


def class_weights(config: TrainConfig, label_map: LabelMap, targets: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Per label, the weight of ``config.class_weight``: single-label classes weigh ``total / (classes x
    count)`` when balanced; multi-label positives weigh ``negatives / positives`` of their label."""
    if config.class_weight is None:
        return None
    given = parse_class_weight(config.class_weight)
    if given == BALANCED:
        if targets is None:
            raise ValueError("balanced class weights need the training targets")
        if targets.ndim == 2:  # multi-label 0/1 rows
            positives = targets.sum(axis=0)
            return ((len(targets) - positives) / np.maximum(positives, 1)).astype(np.float32)
        counts = np.bincount(targets, minlength=len(label_map)).astype(np.float32)
        return (len(targets) / (len(label_map) * np.maximum(counts, 1))).astype(np.float32)
    unknown = [label for label in given if label not in label_map]
    if unknown:
        raise ConfigError(f"The 'class_weight' option names {unknown[0]!r}, which is not a label of the training "
                          f"data; the labels are {', '.join(label_map.labels)}")
    return np.asarray([given.get(label, 1.0) for label in label_map.labels], np.float32)


__all__ = ["BinaryCrossEntropy", "CrossEntropy", "RegressionLoss", "TaskLoss", "class_weights",
           "masked_sparse_categorical_crossentropy", "target_scale", "task_loss"]
