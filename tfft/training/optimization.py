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
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-6
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAME_PARTS))
    return optimizer
