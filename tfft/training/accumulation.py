"""Gradient accumulation: K micro-batches make one optimizer update, weighted by labelled tokens.

Why: a large effective batch on a machine whose memory holds only a small one. Each
micro-batch's loss is a mean over its own labelled tokens (or examples), so plain averaging
of K gradients would weight a token of a short batch more than one of a long batch. Here
each micro-batch gradient is scaled by its number of labelled tokens and the sum divided by
the total, so K micro-batches give exactly the gradient of one batch K times larger.

The embedding matrix keeps its sparse update: its accumulated gradient is handed to the
optimizer as ``IndexedSlices`` of the rows the K micro-batches used, the rows one large
batch would have used. The optimizer's ``iterations`` (and so the learning-rate schedule)
count updates, not micro-batches. Micro-batches left over at the end of an epoch carry into
the next update. Single-device training only (no ``tf.distribute`` strategy yet).
"""

from __future__ import annotations

from typing import Dict

from tfft.backend import tf
from tfft.features import IGNORE_INDEX


class GradientAccumulator:
    """Replaces a compiled Keras model's ``train_step`` with an accumulating one (see module docstring)."""

    def __init__(self, model, steps: int):
        if steps < 2:
            raise ValueError(f"accumulation needs at least 2 micro-batches per update; got {steps}")
        self.model = model
        self.steps = steps
        if not model.built:
            model(model.dummy_inputs, training=False)
        self.variables = list(model.trainable_variables)
        self.sums = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in self.variables]
        # Which rows of each variable a sparse (embedding) gradient touched since the last update.
        self.touched = [tf.Variable(tf.zeros([v.shape[0] if v.shape.rank else 1], tf.bool), trainable=False)
                        for v in self.variables]
        self.weight = tf.Variable(0.0, trainable=False)
        self.micro_batches = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Optimizer slots must exist before the update can run inside a conditional branch.
        model.optimizer.build(self.variables)
        model.train_step = self.train_step

    def train_step(self, data) -> Dict[str, tf.Tensor]:
        features, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            logits = self.model(features, training=True).logits
            loss = self.model.compiled_loss(labels, logits, regularization_losses=self.model.losses)
        gradients = tape.gradient(loss, self.variables)
        weight = tf.reduce_sum(tf.cast(tf.not_equal(tf.cast(labels, tf.int32), IGNORE_INDEX), tf.float32))
        for gradient, total, touched in zip(gradients, self.sums, self.touched):
            if gradient is None:
                continue
            if isinstance(gradient, tf.IndexedSlices):
                total.scatter_add(tf.IndexedSlices(tf.cast(gradient.values, tf.float32) * weight, gradient.indices))
                touched.scatter_update(tf.IndexedSlices(tf.ones_like(gradient.indices, tf.bool), gradient.indices))
            else:
                total.assign_add(tf.cast(gradient, tf.float32) * weight)
        self.weight.assign_add(weight)
        self.micro_batches.assign_add(1)
        # Known when tracing: which gradients are sparse, and which variables have none (left alone).
        sparse = [None if gradient is None else isinstance(gradient, tf.IndexedSlices) for gradient in gradients]
        tf.cond(self.micro_batches % self.steps == 0, lambda: self._apply(sparse), lambda: tf.constant(False))
        return {metric.name: metric.result() for metric in self.model.metrics}

    def _apply(self, sparse) -> tf.Tensor:
        scale = 1.0 / tf.maximum(self.weight, 1.0)
        updates = []
        for variable, total, touched, is_sparse in zip(self.variables, self.sums, self.touched, sparse):
            if is_sparse is None:
                continue
            if is_sparse:
                rows = tf.where(touched)[:, 0]
                updates.append((tf.IndexedSlices(tf.gather(total, rows) * scale, rows, tf.shape(total)), variable))
            else:
                updates.append((total * scale, variable))
        self.model.optimizer.apply_gradients(updates)
        for total, touched in zip(self.sums, self.touched):
            total.assign(tf.zeros_like(total))
            touched.assign(tf.zeros_like(touched))
        self.weight.assign(0.0)
        return tf.constant(True)
