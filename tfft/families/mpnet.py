"""MPNet: a WordPiece tokenizer, no token types, positions offset past the padding id plus a relative bias."""

import contextlib
import math

from tfft.families.base import Family


class MPNetFamily(Family):
    @contextlib.contextmanager
    def tflite_tracing(self, model):
        """transformers buckets MPNet's relative positions with ``int / int`` (float64 in TensorFlow, which
        TFLite has no builtin for); the same buckets computed in float32 convert."""
        from tfft.backend import tf

        encoder = self.base_model(model).encoder

        def float32_bucket(relative_position, num_buckets=32, max_distance=128):
            num_buckets //= 2
            max_exact = num_buckets // 2
            n = -relative_position
            backwards = tf.cast(n < 0, relative_position.dtype) * num_buckets
            n = tf.abs(n)
            scaled = (tf.math.log(tf.cast(n, tf.float32) / max_exact) / math.log(max_distance / max_exact)
                      * (num_buckets - max_exact))
            large = tf.minimum(max_exact + tf.cast(scaled, relative_position.dtype), num_buckets - 1)
            return backwards + tf.where(n < max_exact, n, large)

        encoder._relative_position_bucket = float32_bucket
        try:
            yield
        finally:
            del encoder._relative_position_bucket


FAMILY = MPNetFamily(
    name="MPNet",
    model_types=("mpnet",),
    tokenizer="wordpiece",
    token_types=False,
    positions="padding-offset absolute and relative",
    projections={
        "query": ("attention", "attn", "q"),
        "key": ("attention", "attn", "k"),
        "value": ("attention", "attn", "v"),
        "attention_output": ("attention", "attn", "o"),
        "intermediate": ("intermediate", "dense"),
        "output": ("out", "dense"),
    },
    head_dropout=("hidden_dropout_prob", "hidden_dropout_prob"),
    pooled_sequence_head=False,
    layout_note="its blocks (attention.attn.q, out) are laid out otherwise and its encoder adds a relative "
                "position bias of its own",
    checkpoints="microsoft/mpnet-base, all-mpnet-base-v2",
)
