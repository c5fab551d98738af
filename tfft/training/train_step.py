"""The training step for data parallelism and gradient accumulation: losses weighted by labelled tokens.

Why: Keras' own step averages each replica's mean loss, and the masked token loss is a mean
over a batch's labelled tokens, so a replica (or micro-batch) holding few labelled tokens
would weigh each of them more than one holding many. Here every replica divides its summed
token loss by the **global** number of labelled tokens of the step (an all-reduce of the
local counts), and the optimizer sums the replicas' gradients: the update is exactly the
one a single device computes on the whole global batch. The weights come from the task's loss
(:mod:`tfft.training.losses`): labelled tokens, examples (sequence tasks), class-weighted
examples, or examples x labels (multi-label).

Gradient accumulation: each step receives ``micro_batches`` times the batch (one length
bucket, so one padded length) and runs it as that many slices, one after the other in an
in-graph loop, so only one slice's activations are alive at a time; their gradients are
summed and the optimizer makes one update. The whole update happens inside the step with no
conditional around it, which is what lets it run under a ``tf.distribute`` strategy (an
optimizer update inside ``tf.cond`` cannot synchronise replicas). The embedding matrix keeps
its sparse update: the summed gradient goes to the optimizer as ``IndexedSlices`` of the
rows that the slices used. Without accumulation the tape's ``IndexedSlices``, summed per
row, go to the optimizer (and the replicas' all-reduce, which gathers them): no dense vocab x
hidden buffer per replica per step.
"""

from __future__ import annotations

from typing import Dict, Optional

from tfft.backend import keras, tf
from tfft.training.losses import CrossEntropy, TaskLoss
from tfft.training.packing import training_logits


def needs_token_weighted_step(strategy: tf.distribute.Strategy, micro_batches: int, packed: bool = False) -> bool:
    """Keras' own step is exact on one replica without accumulation on unpacked rows; tfft's step is
    needed otherwise (packed rows go through :func:`tfft.training.packing.packed_logits`)."""
    return strategy.num_replicas_in_sync > 1 or micro_batches > 1 or packed


class TokenWeightedTrainStep:
    """Installs itself as a compiled model's ``train_step`` (and loss metric); see the module docstring."""

    def __init__(self, model, micro_batches: int = 1, loss: Optional[TaskLoss] = None):
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be at least 1; got {micro_batches}")
        self.model = model
        self.micro_batches = micro_batches
        self.task_loss = loss or CrossEntropy()
        if not model.built:
            model(model.dummy_inputs, training=False)
        self.variables = list(model.trainable_variables)
        # Created in the caller's strategy scope: summed over replicas when read.
        self.loss = keras.metrics.Mean(name="loss")
        # Optimizer slots are created in cross-replica context before the first (replica-context) step.
        model.optimizer.build(self.variables)
        reset_keras_metrics = model.reset_metrics

        def reset_metrics() -> None:
            reset_keras_metrics()
            self.loss.reset_state()

        model.reset_metrics = reset_metrics
        model.train_step = self.train_step
        # Every replica returns the loss already averaged over all replicas: take one, not their sum.
        model.distribute_reduction_method = "first"

    def train_step(self, data) -> Dict[str, tf.Tensor]:
        features, labels = data[0], data[1]
        local_weight = self.task_loss.weight(labels)
        context = tf.distribute.get_replica_context()
        global_weight = context.all_reduce(tf.distribute.ReduceOp.SUM, local_weight) if context else local_weight
        scale = 1.0 / tf.maximum(global_weight, 1.0)

        rows = tf.shape(labels)[0]
        size = tf.maximum(-(-rows // self.micro_batches), 1)
        loss_sum, gradients = self._slice_gradients(features, labels, 0, size, scale)
        if self.micro_batches > 1:
            loss_sum, gradients = self._accumulate(features, labels, size, scale, loss_sum, gradients)
        else:  # one row per embedding row, not per token: the replicas' all-reduce gathers sparse gradients
            gradients = self.model.optimizer._deduplicate_sparse_grad(gradients)
        # Variables with no gradient are left alone, as Keras does.
        updates = [(g, v) for g, v in zip(gradients, self.variables) if g is not None]
        optimizer = self.model.optimizer
        if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
            unscaled = optimizer.get_unscaled_gradients([g for g, _ in updates])
            updates = [(g, v) for g, (_, v) in zip(unscaled, updates)]
        optimizer.apply_gradients(updates)
        self.loss.update_state(loss_sum / tf.maximum(local_weight, 1.0), sample_weight=local_weight)
        return {"loss": self.loss.result()}

    def _accumulate(self, features, labels, size, scale, loss_sum, gradients):
        """Add the gradients of the slices after the first (``gradients``) in an in-graph loop.

        A sparse gradient is summed in a dense buffer (plus a mask of the rows it touched), since
        the slices' row sets differ and a loop carries fixed shapes; it leaves as ``IndexedSlices``
        of the touched rows, so the optimizer still updates only those. Without accumulation no
        buffer exists: the step hands the tape's ``IndexedSlices`` (summed per row) to the optimizer.
        """
        rows = tf.shape(labels)[0]
        # Known when tracing: which variables get sparse gradients, and which none.
        kinds = [None if g is None else isinstance(g, tf.IndexedSlices) for g in gradients]
        totals = [self._dense(g, v) for g, v in zip(gradients, self.variables) if g is not None]
        touched = [self._rows(g, v) for g, v in zip(gradients, self.variables) if isinstance(g, tf.IndexedSlices)]

        def body(start, loss_sum, totals, touched):
            loss, gradients = self._slice_gradients(features, labels, start, size, scale)
            present = [(g, v) for g, v, kind in zip(gradients, self.variables, kinds) if kind is not None]
            totals = [t + self._dense(g, v) for t, (g, v) in zip(totals, present)]
            sparse = [(g, v) for g, v in present if isinstance(g, tf.IndexedSlices)]
            touched = [r | self._rows(g, v) for r, (g, v) in zip(touched, sparse)]
            return start + size, loss_sum + loss, totals, touched

        _, loss_sum, totals, touched = tf.while_loop(
            lambda start, *_: start < rows, body, (size, loss_sum, totals, touched),
            parallel_iterations=1)  # one slice's activations alive at a time
        summed, totals, touched = [], iter(totals), iter(touched)
        for kind in kinds:
            total = None if kind is None else next(totals)
            summed.append(self._touched_rows(total, next(touched)) if kind else total)
        return loss_sum, summed

    def _slice_gradients(self, features, labels, start, size, scale):
        """The summed loss of rows ``start:start+size`` and the gradients of that sum times ``scale``."""
        optimizer = self.model.optimizer
        with tf.GradientTape() as tape:
            logits = training_logits(self.model, {name: values[start:start + size]
                                                  for name, values in features.items()})
            loss_sum, _ = self.task_loss.sum_and_weight(labels[start:start + size], logits)
            loss = loss_sum * scale
            if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
                loss = optimizer.get_scaled_loss(loss)
        return loss_sum, tape.gradient(loss, self.variables)

    @staticmethod
    def _dense(gradient, variable) -> tf.Tensor:
        if isinstance(gradient, tf.IndexedSlices):
            return tf.tensor_scatter_nd_add(tf.zeros(variable.shape, gradient.values.dtype),
                                            tf.expand_dims(gradient.indices, 1), gradient.values)
        return gradient

    @staticmethod
    def _touched_rows(buffer: tf.Tensor, touched: tf.Tensor) -> tf.IndexedSlices:
        """The rows of a dense gradient ``buffer`` that the mask ``touched`` marks, as ``IndexedSlices``."""
        used = tf.where(touched)[:, 0]
        return tf.IndexedSlices(tf.gather(buffer, used), used, tf.shape(buffer, out_type=tf.int64))

    @staticmethod
    def _rows(gradient: tf.IndexedSlices, variable) -> tf.Tensor:
        """A mask of the rows a sparse gradient touched."""
        return tf.tensor_scatter_nd_update(tf.zeros([variable.shape[0]], tf.bool),
                                           tf.expand_dims(gradient.indices, 1),
                                           tf.ones_like(gradient.indices, tf.bool))


def install_train_step(model, strategy: tf.distribute.Strategy, micro_batches: int,
                       loss: Optional[TaskLoss] = None, packed: bool = False) -> Optional[TokenWeightedTrainStep]:
    """Give ``model`` tfft's step when Keras' own would not do (see :func:`needs_token_weighted_step`)."""
    if needs_token_weighted_step(strategy, micro_batches, packed):
        return TokenWeightedTrainStep(model, micro_batches, loss)
    return None

