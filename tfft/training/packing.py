"""The forward pass over packed rows: several sentences in one row, each attending only to itself.

Why: sentences padded to a shared length spend a third or more of a step's matmuls on padding
(CoNLL-2003 rows fill 59 % of tfft's length buckets and 75 % of a plain bucketed pipeline's);
packed rows (:func:`tfft.pipeline.pack_rows`) fill ~99 %. The transformers ``call`` only takes a
``[batch, length]`` padding mask, so this calls the model's own embedding layer (with each
sentence's own ``position_ids``), its encoder (with a block-diagonal additive mask built from
``segment_ids``) and its head: the same layers, variables and dropout, so a packed row computes
for each sentence exactly what that sentence alone computes. Families of BERT's block layout pack
(:attr:`tfft.families.Family.packing`); the others train on length buckets.
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
    """Token logits ``[rows, length, labels]`` of a token classifier of BERT's block layout (BERT, ELECTRA,
    RoBERTa, XLM-R: :meth:`tfft.families.Family.packing_refusal`) on packed rows.

    ``features``: ``input_ids``, ``position_ids`` (each sentence counts from 0), ``segment_ids`` (0 on
    padding) and ``token_type_ids`` where the family takes them, as :func:`tfft.pipeline.packed_dataset`
    makes them. The family says what differs: the encoder's attribute, where positions start (RoBERTa's
    past its padding id, so each sentence gets the positions it gets alone), ELECTRA's embedding projection.
    Token ``i`` attends to token ``j`` only when both belong to the same sentence; padding attends to
    nothing that counts.
    """
    family = family_of(model)
    encoder_model = family.base_model(model)
    segments = tf.cast(features["segment_ids"], tf.int32)
    token_types = features.get("token_type_ids")
    positions = tf.cast(features["position_ids"], tf.int32) + family.position_offset(encoder_model.embeddings)
    hidden = encoder_model.embeddings(input_ids=tf.cast(features["input_ids"], tf.int32), position_ids=positions,
                                      token_type_ids=None if token_types is None else tf.cast(token_types, tf.int32),
                                      training=training)
    projection = family.embedding_projection(encoder_model)
    if projection is not None:
        hidden = projection(hidden, training=training)
    same_sentence = tf.logical_and(tf.equal(segments[:, :, None], segments[:, None, :]), segments[:, None, :] > 0)
    # transformers' additive mask, here per query: 0 where attended, -10000 elsewhere; [rows, 1, length, length].
    mask = (1.0 - tf.cast(same_sentence, hidden.dtype)) * tf.constant(-10000.0, hidden.dtype)
    encoder = encoder_model.encoder
    encoded = encoder(hidden_states=hidden, attention_mask=mask[:, None], head_mask=[None] * len(encoder.layer),
                      encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None, use_cache=False,
                      output_attentions=False, output_hidden_states=False, return_dict=True, training=training)
    return model.classifier(model.dropout(encoded.last_hidden_state, training=training))
