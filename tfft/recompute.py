"""Gradient checkpointing: recompute each encoder layer's activations in the backward pass.

Why: at long inputs (``--max-length 512``) the activations a fine-tuning step keeps for its
backward pass -- attention probabilities grow with the square of the length -- dominate the
memory. Wrapping each encoder layer in ``tf.recompute_grad`` keeps only the layer's inputs;
the backward pass runs the layer again to get the rest, for about one more forward pass of
compute.

Two details make the recomputed gradient the exact gradient of the forward pass:

* ``tf.recompute_grad`` takes tensors only, as positional arguments (its graph-mode custom
  gradient refuses keyword arguments), so the layer's other arguments (``training``,
  ``output_attentions``, ``None`` masks) are bound into the recomputed function instead.
* Dropout: Keras draws a fresh mask on every call, so the recomputation would back-propagate
  through other masks than the forward pass used. The layer's dropouts draw their masks with
  stateless ops instead, from one seed drawn per layer call and reused by its recomputation.
  The masks have the same distribution as Keras', but not the same values: a run with
  checkpointing and dropout is not bitwise the run without it.

The model's variables and their names are unchanged, so weights saved from a model trained
with checkpointing load into a plain one. Only the instance's ``call`` methods are replaced.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Iterator, Optional

from tfft.backend import keras, tf
from tfft.families import family_of

_SEED_RANGE = 2**31 - 1


def recompute_encoder_layers(model) -> int:
    """Make every encoder layer of a transformers TF classifier recompute its activations in the backward pass.

    Builds the model first if needed (variables must exist before the layers are wrapped).
    Returns the number of layers wrapped: the blocks the model's family names (ALBERT's shared
    layer is one, recomputed at each of its calls).
    """
    layers = family_of(model).blocks(model)
    if not model.built:
        model(model.dummy_inputs, training=False)
    for layer in layers:
        _recompute_in_backward(layer)
    return len(layers)


class _DropoutSeed:
    """The seed of the current call of one encoder layer, which its dropouts derive their masks from."""

    def __init__(self) -> None:
        self.value: Optional[tf.Tensor] = None

    @contextlib.contextmanager
    def using(self, seed: tf.Tensor) -> Iterator[None]:
        previous, self.value = self.value, seed
        try:
            yield
        finally:
            self.value = previous


def _recompute_in_backward(layer: keras.layers.Layer) -> None:
    original_call = layer.call
    signature = inspect.signature(original_call)
    seed = _DropoutSeed()
    for index, dropout in enumerate(d for d in layer.submodules if isinstance(d, keras.layers.Dropout)):
        dropout.call = _seeded_dropout_call(dropout, seed, index)

    @functools.wraps(original_call)
    def call(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        if not arguments.arguments.get("training"):
            return original_call(*args, **kwargs)  # no backward pass to save memory for
        names = [name for name, value in arguments.arguments.items() if tf.is_tensor(value)]
        layer_seed = tf.random.uniform([2], maxval=_SEED_RANGE, dtype=tf.int32)

        def forward(*tensors):
            with seed.using(layer_seed):
                return original_call(**{**arguments.arguments, **dict(zip(names, tensors))})

        return tf.recompute_grad(forward)(*(arguments.arguments[name] for name in names))

    layer.call = call


def _seeded_dropout_call(dropout: keras.layers.Dropout, seed: _DropoutSeed, index: int):
    """``dropout.call`` drawing its mask from the enclosing layer call's seed (see module docstring)."""
    keras_call = dropout.call

    def call(inputs, training=None):
        if seed.value is None:
            return keras_call(inputs, training=training)
        if training is None:
            training = keras.backend.learning_phase()
        mask_seed = tf.random.experimental.stateless_fold_in(seed.value, index)
        return tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: tf.nn.experimental.stateless_dropout(inputs, dropout.rate, seed=mask_seed,
                                                         noise_shape=dropout._get_noise_shape(inputs)),
            lambda: tf.identity(inputs),
        )

    return call
