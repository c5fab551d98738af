"""AdamW with decoupled weight decay and a linear warmup-then-decay learning rate.

Weight decay is not applied to LayerNorm parameters and biases, as in BERT's original
recipe: decaying them only hurts. Created here so a strategy scope around the caller
covers the optimizer's slots too.
"""

from __future__ import annotations

from tfft.backend import keras, tf

NO_DECAY_NAME_PARTS = ("LayerNorm", "layer_norm", "bias")


class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Rise linearly from 0 to ``peak`` over ``warmup_steps``, then fall linearly to 0 at ``total_steps``."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = float(peak)
        self.total_steps = int(max(total_steps, 1))
        self.warmup_steps = int(max(warmup_steps, 0))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(max(self.warmup_steps, 1), tf.float32)
        decay_span = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
        rising = self.peak * (step + 1.0) / warmup
        falling = self.peak * tf.maximum(0.0, (self.total_steps - step) / decay_span)
        return tf.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


class SparseAwareAdamW(keras.optimizers.AdamW):
    """AdamW with a fused dense update, which updates an embedding matrix only in the rows a batch used.

    Dense variables: Keras' AdamW writes its update as six element-wise ops, each a full
    pass over the variable and its two moments; on a 2-core CPU that was a fifth of a
    fine-tuning step. ``ResourceApplyAdam`` computes the same formula (moments, bias
    correction, ``epsilon`` outside the square root) in one multi-threaded pass.

    Embeddings: Keras' AdamW turns a sparse (``IndexedSlices``) embedding gradient into passes over
    the whole 30k x hidden matrix -- moment decay, update and weight decay -- every
    step; on a CPU that costs more than the rest of the optimizer. Here those rows'
    moments, decay and update are computed lazily, as in TF-Addons' LazyAdam: rows not
    in the batch keep their moments until they next appear. Dense variables follow
    plain AdamW exactly.
    """

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
        grads_and_vars = list(grads_and_vars)
        # Decided at trace time: which variables take the lazy path (and lazy decay).
        self._sparse_keys = {self._var_key(v) for g, v in grads_and_vars if isinstance(g, tf.IndexedSlices)}
        return super().apply_gradients(grads_and_vars, name=name,
                                       skip_gradients_aggregation=skip_gradients_aggregation, **kwargs)

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_sparse_keys", ()):
            return False  # decayed row by row in update_step instead
        return super()._use_weight_decay(variable)

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        if not isinstance(gradient, tf.IndexedSlices):
            if self.amsgrad:
                return super().update_step(gradient, variable)
            return tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step), lr=lr, beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype), grad=gradient)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))

        # One value per row: Keras' apply_gradients sums duplicate rows (_deduplicate_sparse_grad) first.
        rows, grad = gradient.indices, gradient.values
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(grad)
        values = tf.gather(variable, rows)
        if self.weight_decay and super()._use_weight_decay(variable):
            values = values * (1 - lr * tf.cast(self.weight_decay, dtype))
        values = values - alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_update(tf.IndexedSlices(values, rows))


def create_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
) -> keras.optimizers.Optimizer:
    """AdamW over ``total_steps`` optimizer steps with ``warmup_fraction`` of them warming up."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1); got {warmup_fraction}")
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(warmup_fraction * total_steps)))
    optimizer = SparseAwareAdamW(
        learning_rate=schedule, weight_decay=weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-6
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAME_PARTS))
    return optimizer
