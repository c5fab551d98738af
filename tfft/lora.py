"""LoRA: train low-rank adapters on a frozen encoder, save them alone, merge them for export.

Each chosen projection ``y = x W + b`` becomes ``y = x W + b + dropout(x) A B * alpha / rank``
(:class:`LoraDense`), with ``A`` ``[in, rank]`` drawn like PEFT's (uniform, +-1/sqrt(in)) and
``B`` ``[rank, out]`` zeros, so a fresh adapter leaves the pretrained function unchanged.
The encoder's own weights are frozen; what trains is the adapters, the classification head
(everything outside the encoder) and, with word shapes, the token type embedding: its rows
1-7 are new parameters tfft adds (copies of row 0, see ``models._widen_token_types``) that
would otherwise keep every shape identical.

A LoRA run's ``model/`` holds the Hugging Face ``config.json`` (labels, widened token types),
the tokenizer and :data:`ADAPTERS_FILE`: the trainable variables only, with the base
checkpoint's identity (``--model`` value, a local directory made absolute, and the SHA-256 of
the weight files ``from_pretrained`` loads) in the file's metadata, so a load onto other base
weights is refused instead of predicting nonsense.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from tfft.backend import keras, tf
from tfft.config import LORA_TARGETS, TrainConfig
from tfft.errors import ModelLoadError
from tfft.files import add_file_to_digest, atomic_write
from tfft.heads import saved_head_config
from tfft.families import family_of
from tfft.models import DEFAULT_MODEL, build_model, label_map_of_config, resolve_model

ADAPTERS_FILE = "adapters.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    """Adapter shape and the projections that get one (names of :data:`tfft.families.base.PROJECTIONS`,
    which each family maps to its own layers)."""

    rank: int
    alpha: float
    dropout: float
    projections: Tuple[str, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def of(cls, config: TrainConfig) -> Optional["LoraSettings"]:
        """The run's adapters, or None for full fine-tuning (``lora_rank`` 0)."""
        if not config.lora_rank:
            return None
        return cls(config.lora_rank, config.lora_alpha, config.lora_dropout, LORA_TARGETS[config.lora_targets])


class LoraDense(keras.layers.Layer):
    """A frozen ``Dense`` plus a trainable low-rank update (see the module docstring).

    Takes the wrapped layer's name, so the variables ``A`` and ``B`` are named after the
    projection they adapt (``.../attention/self/query/lora_a``).
    """

    def __init__(self, base: keras.layers.Dense, rank: int, alpha: float, dropout: float = 0.0):
        if base.activation is not keras.activations.linear:
            raise ValueError(f"LoRA adapts linear projections; {base.name} has activation {base.activation}")
        super().__init__(name=base.name, dtype=base.dtype_policy)
        self.base = base
        self.scale = alpha / rank
        self.dropout = keras.layers.Dropout(dropout) if dropout else None
        fan_in, units = int(base.kernel.shape[0]), int(base.kernel.shape[1])
        with tf.name_scope(base.kernel.name.rsplit("/", 1)[0] + "/"):  # the base kernel's scope, absolute
            self.lora_a = self.add_weight(
                name="lora_a", shape=(fan_in, rank),
                initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"))
            self.lora_b = self.add_weight(name="lora_b", shape=(rank, units), initializer="zeros")

    def call(self, inputs, training=None):
        adapted = inputs if self.dropout is None else self.dropout(inputs, training=training)
        update = _last_axis_matmul(_last_axis_matmul(adapted, self.lora_a), self.lora_b * self.scale)
        return self.base(inputs) + update

    def merged_kernel(self) -> tf.Tensor:
        """The base kernel with the adapter folded in: ``W + A B * alpha / rank`` (float32)."""
        update = tf.matmul(tf.convert_to_tensor(self.lora_a), tf.convert_to_tensor(self.lora_b)) * self.scale
        return tf.convert_to_tensor(self.base.kernel) + update


def _last_axis_matmul(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``inputs @ kernel`` over the last axis, as one 2-D matmul (BERT's Dense inputs are 2-D or 3-D)."""
    if inputs.shape.rank == 2:
        return tf.matmul(inputs, kernel)
    return tf.tensordot(inputs, kernel, axes=1)


def _projection_slots(model, projections: Tuple[str, ...]):
    """``(parent layer, attribute name)`` of every adapted projection, block by block, where the
    model's family keeps them (BERT's ``query``, DistilBERT's ``q_lin``, DeBERTa's ``query_proj`` ...)."""
    family = family_of(model)
    slots = []
    for block in family.blocks(model):
        for projection in projections:
            *parents, attribute = family.projections[projection]
            parent = block
            for name in parents:
                parent = getattr(parent, name, None)
            if not isinstance(getattr(parent, attribute, None), (keras.layers.Dense, LoraDense)):
                raise ModelLoadError(f"LoRA cannot find the '{projection}' projection of {type(model).__name__} "
                                     f"(expected a Dense layer at {'.'.join(family.projections[projection])})")
            slots.append((parent, attribute))
    return slots


def add_adapters(model, settings: LoraSettings, *, word_shapes: bool = False) -> None:
    """Wrap the projections ``settings`` names in :class:`LoraDense` and freeze the encoder's own weights.

    Call on a built model (``build_model`` builds it) before compiling, so the optimizer
    only ever sees (and keeps slots for) the adapters and the head. ``word_shapes``: the
    model's token type embedding was widened for word shapes and keeps training.
    """
    if not model.built:
        model(model.dummy_inputs, training=False)
    for parent, attribute in _projection_slots(model, settings.projections):
        setattr(parent, attribute, LoraDense(getattr(parent, attribute), settings.rank, settings.alpha,
                                             settings.dropout))
    encoder = family_of(model).base_model(model)
    _freeze(encoder, keep=[encoder.embeddings.token_type_embeddings] if word_shapes else [])


def _freeze(encoder, keep) -> None:
    """Make every weight of ``encoder`` non-trainable except LoRA layers' and the variables in ``keep``.

    Keras freezes whole layers (recursively), so layers that own weights are frozen one by one;
    a layer owning a kept variable instead moves its other variables to its non-trainable list.
    """
    kept = {id(variable) for variable in keep}
    for layer in [encoder, *encoder.submodules]:
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, LoraDense):
            continue
        owned = list(layer._trainable_weights)
        if any(id(variable) in kept for variable in owned):
            # Plain assignments, as Keras makes them in Layer.__init__: its tracking setattr would
            # re-add every variable of a list it is given to _trainable_weights.
            layer._self_setattr_tracking = False
            layer._non_trainable_weights = list(layer._non_trainable_weights) + [v for v in owned if id(v) not in kept]
            layer._trainable_weights = [v for v in owned if id(v) in kept]
            layer._self_setattr_tracking = True
        elif owned:
            layer.trainable = False


def merge_adapters(model) -> None:
    """Fold every adapter into its base kernel and put the plain ``Dense`` back: same function,
    no LoRA layers left (what an export serves)."""
    for layer in list(model.submodules):
        for attribute, value in list(vars(layer).items()):
            if isinstance(value, LoraDense):
                value.base.kernel.assign(value.merged_kernel())
                setattr(layer, attribute, value.base)


def trainable_count(model) -> int:
    """Number of trainable values (what the optimizer updates)."""
    return sum(int(tf.size(variable)) for variable in model.trainable_variables)


def _key(variable) -> str:
    """A variable's name without the model's own (instance-numbered) prefix and ``:0``."""
    return variable.name.split("/", 1)[-1].rsplit(":", 1)[0]


# The weight files transformers' TF ``from_pretrained`` reads from a directory (4.5x, without
# ``from_pt``), in its order of preference: the first one present is the one it loads.
LOADED_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "tf_model.h5", "tf_model.h5.index.json")


def loaded_weight_files(directory: Path) -> List[Path]:
    """The files ``from_pretrained`` reads the weights from: the preferred file present, or an index
    and every shard it names (``weight_map``)."""
    for name in LOADED_WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            try:
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as error:
                raise ModelLoadError(f"{path}: not a sharded checkpoint index (expected a 'weight_map'): {error}")
            return [path, *(directory / shard for shard in shards)]
    return []


def base_fingerprint(base_model: str) -> Dict[str, str]:
    """The identity of a base checkpoint: the ``--model`` value and one SHA-256 over the weight files
    ``from_pretrained`` reads (an index and all its shards in order; hub names not yet
    downloaded: the name alone)."""
    source = Path(resolve_model(base_model))
    identity = {"base_model": str(base_model)}
    files = loaded_weight_files(source) if source.is_dir() else []
    if files:
        digest = hashlib.sha256()
        for path in files:
            if not path.is_file():
                raise ModelLoadError(f"{path}: a shard that {files[0]} names is missing")
            add_file_to_digest(digest, path)
        identity.update(base_weights=", ".join(path.name for path in files), base_weights_sha256=digest.hexdigest())
    return identity


def absolute_base_model(model: str) -> str:
    """A LoRA run's ``--model`` as recorded: a local directory as an absolute path (the run loads the
    base again wherever it is used from); the default model and hub names as they are."""
    resolved = resolve_model(model)
    return str(Path(resolved).resolve()) if Path(resolved).is_dir() and model != DEFAULT_MODEL else model


def save_adapters(model, directory: Union[str, Path], base_model: str) -> Path:
    """Write the model's config and its trainable variables (not the frozen base) into ``directory``."""
    from safetensors.numpy import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    tensors = {_key(v): v.numpy() for v in model.trainable_variables}
    content = save(tensors, metadata={"format": "tfft-lora", **base_fingerprint(base_model)})
    path = directory / ADAPTERS_FILE
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(content))
    return path


def load_adapted_model(task: str, directory: Union[str, Path], base_model: str, settings: LoraSettings, *,
                       word_shapes: bool = False, dropout: Optional[float] = None):
    """Rebuild a LoRA run's model: the base checkpoint, fresh adapters, then the saved values.

    Refuses a base whose weights differ from those the adapters were trained on.
    """
    from safetensors import safe_open
    from transformers import AutoConfig

    directory = Path(directory)
    path = directory / ADAPTERS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{directory}: no LoRA adapters here (expected {ADAPTERS_FILE})")
    with safe_open(str(path), framework="np") as handle:
        saved = {key: handle.get_tensor(key) for key in handle.keys()}
        recorded = handle.metadata() or {}
    current = base_fingerprint(base_model)
    if recorded.get("base_weights_sha256") != current.get("base_weights_sha256"):
        raise ModelLoadError(
            f"{path}: the adapters were trained on base model {recorded.get('base_model')!r} with weights "
            f"{recorded.get('base_weights')} (SHA-256 {recorded.get('base_weights_sha256')}), but {base_model!r} "
            f"now has {current.get('base_weights')} (SHA-256 {current.get('base_weights_sha256')})")
    saved_config = AutoConfig.from_pretrained(str(directory))
    model = build_model(task, label_map_of_config(saved_config), base_model, dropout=dropout, word_shapes=word_shapes,
                        head=saved_head_config(saved_config))
    add_adapters(model, settings, word_shapes=word_shapes)
    variables = {_key(v): v for v in model.trainable_variables}
    if set(variables) != set(saved):
        missing, unexpected = sorted(set(variables) - set(saved)), sorted(set(saved) - set(variables))
        raise ModelLoadError(f"{path}: the adapters do not match the run's LoRA settings (missing: "
                             f"{', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(unexpected[:3]) or 'none'})")
    for key, variable in variables.items():
        if tuple(variable.shape) != saved[key].shape:
            raise ModelLoadError(f"{path}: {key} has shape {saved[key].shape}, the model {tuple(variable.shape)}")
        variable.assign(saved[key])
    return model


def describe(model, settings: Optional[LoraSettings]) -> str:
    """One line for the training log: what trains (LoRA or everything), against the model's size."""
    total = sum(int(tf.size(v)) for v in model.weights)
    trainable = trainable_count(model)
    what = "Full fine-tuning" if settings is None else (
        f"LoRA rank {settings.rank} (alpha {settings.alpha:g}, dropout {settings.dropout:g}) on "
        f"{', '.join(settings.projections)}")
    return f"{what}: {trainable:,} trainable of {total:,} values ({100 * trainable / max(total, 1):.2f}%)"
