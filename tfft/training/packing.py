"""The forward pass over packed rows: several sentences in one row, each attending only to itself.

Why: sentences padded to a shared length spend a third or more of a step's matmuls on padding
(CoNLL-2003 rows fill 59 % of tfft's length buckets and 75 % of a plain bucketed pipeline's);
packed rows (:func:`tfft.pipeline.pack_rows`) fill ~99 %. The transformers ``call`` only takes a
``[batch, length]`` padding mask, so this calls the model's own embedding layer (with each
sentence's own ``position_ids``), its encoder (with a block-diagonal additive mask built from
``segment_ids``) and its head: the same layers, variables and dropout, so a packed row computes
for each sentence exactly what that sentence alone computes.
"""

from __future__ import annotations

from typing import Dict

from tfft.backend import tf
from tfft.families import family_of


def training_logits(model, features: Dict[str, tf.Tensor], training: bool = True) -> tf.Tensor:
    """The model's logits on a training batch, packed (:func:`packed_logits`: it has ``segment_ids``) or not."""
    if "segment_ids" in features:
        return packed_logits(model, features, training)
    return model(family_of(model).model_inputs(model.config, features), training=training).logits


def packed_logits(model, features: Dict[str, tf.Tensor], training: bool) -> tf.Tensor:
    """Token logits ``[rows, length, labels]`` of a BERT token classifier on packed rows.

    ``features``: ``input_ids``, ``token_type_ids``, ``position_ids`` and ``segment_ids`` (0 on
    padding), as :func:`tfft.pipeline.packed_dataset` makes them. Token ``i`` attends to token
    ``j`` only when both belong to the same sentence; padding attends to nothing that counts.
    """
    bert = model.bert
    segments = tf.cast(features["segment_ids"], tf.int32)
    hidden = bert.embeddings(input_ids=tf.cast(features["input_ids"], tf.int32),
                             position_ids=tf.cast(features["position_ids"], tf.int32),
                             token_type_ids=tf.cast(features["token_type_ids"], tf.int32), training=training)
    same_sentence = tf.logical_and(tf.equal(segments[:, :, None], segments[:, None, :]), segments[:, None, :] > 0)
    # transformers' additive mask, here per query: 0 where attended, -10000 elsewhere; [rows, 1, length, length].
    mask = (1.0 - tf.cast(same_sentence, hidden.dtype)) * tf.constant(-10000.0, hidden.dtype)
    encoded = bert.encoder(hidden_states=hidden, attention_mask=mask[:, None], head_mask=[None] * len(bert.encoder.layer),
                           encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                           use_cache=False, output_attentions=False, output_hidden_states=False, return_dict=True,
                           training=training)
    return model.classifier(model.dropout(encoded.last_hidden_state, training=training))
