"""What a sequence head reads from the encoder: its first token, or the mean of its last layer.

Why: a transformers sequence classifier reads the first token (BERT's and ALBERT's through the
pooler, a tanh layer pretrained on next-sentence prediction; RoBERTa's, ELECTRA's and the others'
heads directly). A sentence-transformers checkpoint such as the default all-MiniLM-L6-v2 was
trained to put a text's meaning in the *mean* of its tokens, and its pooler was never trained
(zero bias, weights at their initial scale), so by default (``--pooling auto``) such a checkpoint's
head reads the mean. What it changes is in docs/results.md ("SST-2 on whole sentences" and
"Multi-label, regression and imbalanced classes").

The choice is kept in the model's config (:data:`POOLING`), so training, validation, ``evaluate``,
``predict``, LoRA runs and the exports read the same vector: :func:`use_pooling` makes the model's
own ``call`` pool as recorded, and the lean inference pass (:mod:`tfft.lean_bert`) asks
:func:`pooling_of`. A run saved before the option existed reads the first token, as it was trained.
"""

from __future__ import annotations

import json
import types
from typing import Optional

from tfft.backend import tf
from tfft.config import POOLINGS
from tfft.families import family_of

POOLING = "tfft_pooling"  # the model config attribute: FIRST or MEAN
AUTO, FIRST, MEAN = POOLINGS
# sentence-transformers checkpoints describe their modules in modules.json; the Pooling module's config says
# how the sentence embedding is made (pooling_mode_mean_tokens for the mean of the token embeddings).
_MODULES_FILE = "modules.json"
_POOLING_MODULE = "sentence_transformers.models.Pooling"


def checkpoint_pooling(source: str) -> str:
    """The pooling a checkpoint was trained for: :data:`MEAN` when it is a sentence-transformers model whose
    sentence embedding is the mean of its tokens (only that mode), :data:`FIRST` otherwise."""
    from transformers.utils import cached_file

    def read(name: str) -> Optional[object]:
        path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    modules = read(_MODULES_FILE)
    if not isinstance(modules, list):
        return FIRST
    for module in modules:
        if isinstance(module, dict) and module.get("type") == _POOLING_MODULE:
            settings = read(f"{module.get('path', '')}/config.json".lstrip("/"))
            if not isinstance(settings, dict):
                return FIRST
            modes = [name for name, on in settings.items() if name.startswith("pooling_mode_") and on is True]
            return MEAN if modes == ["pooling_mode_mean_tokens"] else FIRST
    return FIRST


def pooling_of(config) -> str:
    """The pooling a model's config records (:data:`FIRST` for a model saved without one)."""
    return getattr(config, POOLING, None) or FIRST


def masked_mean(hidden: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
    """The mean of ``hidden`` ``[batch, length, width]`` over each row's attended positions (zeros for a row
    with none), as sentence-transformers pools."""
    weights = tf.cast(attention_mask, hidden.dtype)[:, :, None]
    counts = tf.maximum(tf.reduce_sum(weights, axis=1), tf.constant(1.0, hidden.dtype))
    return tf.reduce_sum(hidden * weights, axis=1) / counts


def use_pooling(model) -> None:
    """Make a sequence classifier's ``call`` read what its config records (:func:`pooling_of`); a
    first-token model is left as transformers built it.

    For the mean, the call runs the model's encoder, pools its last layer over the attention mask and
    applies the family's head to that vector (:meth:`tfft.families.Family.head_logits`). A pooler the
    head then bypasses (BERT's, ALBERT's) stops training, so it gets no optimizer slots.
    """
    if pooling_of(model.config) != MEAN:
        return
    from transformers.modeling_tf_outputs import TFSequenceClassifierOutput
    from transformers.modeling_tf_utils import unpack_inputs

    family = family_of(model)
    encoder = family.base_model(model)

    @unpack_inputs
    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, labels=None,
             training=False):
        if attention_mask is None:
            attention_mask = tf.ones_like(input_ids)
        inputs = family.model_inputs(self.config, {"input_ids": input_ids, "attention_mask": attention_mask,
                                                   "token_type_ids": token_type_ids})
        hidden = encoder(**{name: value for name, value in inputs.items() if value is not None},
                         training=training)[0]
        logits = family.head_logits(self, masked_mean(hidden, attention_mask), training)
        return TFSequenceClassifierOutput(logits=logits)

    model.call = types.MethodType(call, model)
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None and family.pooled_sequence_head:
        pooler.trainable = False
