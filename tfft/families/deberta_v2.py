"""DeBERTa-v2 and -v3: SentencePiece, relative (disentangled) attention, no token type embedding
(``type_vocab_size`` 0 in the published checkpoints: the model's call takes the ids and ignores them)."""

import contextlib

from tfft.families.base import Family


class DebertaV2Family(Family):
    def head_logits(self, model, pooled, training: bool = False):
        """DeBERTa's head on a pooled vector: its context pooler (which reads a sequence's first token), dropout
        and classifier."""
        return model.classifier(model.dropout(model.pooler(pooled[:, None, :], training=training), training=training))

    @contextlib.contextmanager
    def tflite_tracing(self, model):
        """transformers buckets DeBERTa's log positions with ``int / int`` (float64 in TensorFlow, which TFLite
        has no builtin for); the same buckets computed in float32 convert. The module function is swapped
        only while the export traces."""
        from transformers.models.deberta_v2 import modeling_tf_deberta_v2 as module

        from tfft.backend import tf

        def float32_log_bucket_position(relative_pos, bucket_size, max_position):
            sign = tf.cast(tf.sign(relative_pos), tf.float32)
            mid = bucket_size // 2
            abs_pos = tf.where((relative_pos < mid) & (relative_pos > -mid), tf.cast(mid - 1, relative_pos.dtype),
                               tf.abs(relative_pos))
            log_pos = tf.math.ceil(tf.math.log(tf.cast(abs_pos, tf.float32) / mid)
                                   / tf.math.log(tf.constant((max_position - 1) / mid, tf.float32))
                                   * (mid - 1)) + mid
            return tf.cast(tf.where(abs_pos <= mid, tf.cast(relative_pos, tf.float32), log_pos * sign), tf.int32)

        original = module.make_log_bucket_position
        module.make_log_bucket_position = float32_log_bucket_position
        try:
            yield
        finally:
            module.make_log_bucket_position = original


FAMILY = DebertaV2Family(
    name="DeBERTa-v2/v3",
    model_types=("deberta-v2",),
    tokenizer="sentencepiece",
    token_types=False,
    positions="relative",
    projections={
        "query": ("attention", "self", "query_proj"),
        "key": ("attention", "self", "key_proj"),
        "value": ("attention", "self", "value_proj"),
        "attention_output": ("attention", "dense_output", "dense"),
        "intermediate": ("intermediate", "dense"),
        "output": ("bert_output", "dense"),
    },
    head_dropout=("hidden_dropout_prob", "cls_dropout"),
    layout_note="its disentangled attention adds relative position embeddings in every block",
    checkpoints="microsoft/deberta-v3-base, microsoft/deberta-v3-small",
)
