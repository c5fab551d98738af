"""Losses that ignore padding, special tokens and continuation subwords."""

from __future__ import annotations

from typing import Tuple

from tfft.backend import tf
from tfft.features import IGNORE_INDEX


def masked_sparse_categorical_crossentropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over the positions whose label is not ``IGNORE_INDEX``.

    Works for token logits ``[batch, length, classes]`` and sequence logits
    ``[batch, classes]`` alike. Averaging over scored positions only (not over the
    padded length) keeps the loss scale independent of how much padding a batch has.
    """
    total, count = masked_loss_sum(labels, logits)
    return total / tf.maximum(count, 1.0)


def masked_loss_sum(labels: tf.Tensor, logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """``(summed cross-entropy, number of scored positions)``, both float32: the parts of the mean
    that data-parallel and accumulated steps combine across replicas and micro-batches."""
    logits = tf.cast(logits, tf.float32)
    # Keras hands per-example labels over as [batch, 1]; match them to the logits' batch shape.
    labels = tf.reshape(tf.cast(labels, tf.int32), tf.shape(logits)[:-1])
    scored = tf.not_equal(labels, IGNORE_INDEX)
    safe_labels = tf.where(scored, labels, tf.zeros_like(labels))
    per_position = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(scored, tf.float32)
    return tf.reduce_sum(per_position * weights), tf.reduce_sum(weights)
