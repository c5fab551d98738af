"""SavedModel export for TF Serving: raw-text and token-id signatures, core TF ops only.

Layout: ``EXPORT_DIR/NAME/VERSION/`` (the directory TF Serving watches), written to a
temporary sibling and renamed into place so a serving process never sees half a model.

Signatures:

* ``serving_default`` -- input ``text`` (tf.string ``[batch]``; plus ``text_pair`` for
  pair classification). Tokenization runs in the graph with core TensorFlow ops only
  (:class:`~tfft.export.tokenizer.InGraphBertTokenizer`), so a stock model server loads it.

  Sequence classification returns ``label`` (string ``[batch]``), ``label_id`` (int32)
  and ``probabilities`` (float32 ``[batch, classes]``).

  Token classification returns per word (padded to the longest sentence of the batch):
  ``tags`` (string, padding ``""``), ``tag_ids`` (int32, padding -1), ``tag_scores``
  (float32, padding 0), ``word_start``/``word_end`` (int64 character offsets, padding -1),
  ``num_words`` (int32); and per entity: ``entity_types`` (string, padding ``""``),
  ``entity_start``/``entity_end`` (int64 character offsets, end exclusive, padding -1),
  ``entity_scores`` (float32, padding 0), ``num_entities`` (int32). Words beyond the
  model's maximum length are not tagged; ``truncated`` (bool ``[batch]``) says so.

* ``predict_ids`` -- ``input_ids``, ``attention_mask``, ``token_type_ids`` (int32
  ``[batch, length]``) to ``logits`` and ``probabilities``, for clients that tokenize.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from tfft.backend import tf
from tfft.export.tokenizer import InGraphBertTokenizer
from tfft.data import TOKEN_CLASSIFICATION
from tfft.errors import ConfigError
from tfft.features import inference_length
from tfft.files import replace_directory

MODEL_CARD = "model_card.json"


class ServingModule(tf.Module):
    """A trained classifier plus the in-graph tokenizer and label decoding it serves with."""

    def __init__(self, model, tokenizer: InGraphBertTokenizer, task: str, labels: Sequence[str], max_length: int,
                 assets: Dict[str, str], with_pairs: bool = False):
        super().__init__(name="tfft_serving")
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = int(max_length)
        self.with_pairs = with_pairs
        self.label_names = tf.constant(list(labels))
        # Assets are copied into the SavedModel's assets/ directory and tracked by path.
        self.asset_files = {name: tf.saved_model.Asset(path) for name, path in assets.items()}
        prefixes, types, type_names = _label_structure(labels)
        self.label_prefix = tf.constant(prefixes, tf.int32)  # 0 = O, 1 = B, 2 = I
        self.label_type = tf.constant(types, tf.int32)  # index into type_names, -1 for O
        self.type_names = tf.constant(type_names or [""])

    def probabilities(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
        logits = self.model({k: tf.cast(v, tf.int32) for k, v in features.items()}, training=False).logits
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    def predict_ids(self, input_ids, attention_mask, token_type_ids):
        features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = tf.cast(self.model(features, training=False).logits, tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    def classify(self, text, text_pair=None):
        token_ids, _, _, _ = self.tokenizer.tokenize(text)
        pair_ids = None if text_pair is None else self.tokenizer.tokenize(text_pair)[0]
        probabilities = self.probabilities(self.tokenizer.pack(token_ids, self.max_length, pair_ids))
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"label": tf.gather(self.label_names, label_id), "label_id": label_id, "probabilities": probabilities}

    def tag(self, text):
        token_ids, token_word, word_start, word_end = self.tokenizer.tokenize(text)
        kept = self.max_length - 2
        truncated = token_ids.row_lengths() > kept
        token_ids, token_word = token_ids[:, :kept], token_word[:, :kept]
        probabilities = self.probabilities(self.tokenizer.pack(token_ids, self.max_length))

        # The first subword of each word (after [CLS], hence +1) carries the word's tag.
        flat_word, flat_row = token_word.flat_values, token_word.value_rowids()
        minus_one = tf.constant([-1], tf.int64)
        is_first = token_word.with_flat_values(
            tf.not_equal(flat_word, tf.concat([minus_one, flat_word[:-1]], 0))
            | tf.not_equal(flat_row, tf.concat([minus_one, flat_row[:-1]], 0)))
        positions = tf.ragged.range(token_word.row_lengths(), dtype=tf.int64) + 1
        word_positions = tf.ragged.boolean_mask(positions, is_first)
        word_index = tf.ragged.boolean_mask(token_word, is_first)
        word_probabilities = tf.gather(probabilities, word_positions, batch_dims=1)
        tag_ids = tf.ragged.map_flat_values(tf.argmax, word_probabilities, axis=-1, output_type=tf.int32)
        tag_scores = tf.ragged.map_flat_values(tf.reduce_max, word_probabilities, axis=-1)
        starts = tf.gather(word_start, word_index, batch_dims=1)
        ends = tf.gather(word_end, word_index, batch_dims=1)
        entities = self._decode_entities(tag_ids, tag_scores, starts, ends)
        return {
            "tags": tf.gather(self.label_names, tag_ids).to_tensor(default_value=""),
            "tag_ids": tag_ids.to_tensor(default_value=-1),
            "tag_scores": tag_scores.to_tensor(default_value=0.0),
            "word_start": starts.to_tensor(default_value=-1),
            "word_end": ends.to_tensor(default_value=-1),
            "num_words": tf.cast(tag_ids.row_lengths(), tf.int32),
            "truncated": truncated,
            **entities,
        }

    def _decode_entities(self, tag_ids, tag_scores, starts, ends):
        """IOB2 spans, lenient like conlleval: an I-X that does not continue an X entity starts one."""
        prefix = tf.gather(self.label_prefix, tag_ids).to_tensor(default_value=0)
        entity_type = tf.gather(self.label_type, tag_ids).to_tensor(default_value=-1)
        scores = tag_scores.to_tensor(default_value=0.0)
        batch, width = tf.shape(prefix)[0], tf.shape(prefix)[1]
        inside = prefix > 0
        previous_inside = tf.pad(inside[:, :-1], [[0, 0], [1, 0]])
        previous_type = tf.pad(entity_type[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
        continues = (prefix == 2) & previous_inside & tf.equal(previous_type, entity_type)
        begins = inside & ~continues
        index = tf.cumsum(tf.cast(begins, tf.int32), axis=1) - 1  # entity number within the row
        segment = tf.where(inside, tf.range(batch)[:, None] * width + index, batch * width)
        word = tf.broadcast_to(tf.range(width)[None], [batch, width])
        segments = batch * width + 1
        first_word = tf.math.unsorted_segment_min(word, segment, segments)[:-1]
        last_word = tf.math.unsorted_segment_max(word, segment, segments)[:-1]
        mean_score = tf.math.unsorted_segment_mean(scores, segment, segments)[:-1]
        count = tf.reduce_sum(tf.cast(begins, tf.int32), axis=1)
        most = tf.reduce_max(tf.concat([count, [0]], 0))
        valid = tf.range(most)[None] < count[:, None]

        def per_entity(values, padding):
            values = tf.reshape(values, [batch, width])[:, :most]
            return tf.where(valid, values, padding)

        first = per_entity(first_word, 0)
        last = per_entity(last_word, 0)
        dense_starts = starts.to_tensor(default_value=-1)
        dense_ends = ends.to_tensor(default_value=-1)
        types = tf.gather(entity_type, first, batch_dims=1)
        return {
            "entity_types": tf.where(valid, tf.gather(self.type_names, tf.maximum(types, 0)), ""),
            "entity_start": tf.where(valid, tf.gather(dense_starts, first, batch_dims=1), tf.constant(-1, tf.int64)),
            "entity_end": tf.where(valid, tf.gather(dense_ends, last, batch_dims=1), tf.constant(-1, tf.int64)),
            "entity_scores": per_entity(mean_score, 0.0),
            "num_entities": count,
        }

    def signatures(self) -> dict:
        """Concrete functions for ``serving_default`` and ``predict_ids``."""
        text = tf.TensorSpec([None], tf.string, name="text")
        if self.task == TOKEN_CLASSIFICATION:
            serve = tf.function(self.tag, input_signature=[text])
        elif self.with_pairs:
            serve = tf.function(self.classify, input_signature=[text, tf.TensorSpec([None], tf.string, name="text_pair")])
        else:
            serve = tf.function(lambda text: self.classify(text), input_signature=[text])
        ids = [tf.TensorSpec([None, None], tf.int32, name=n) for n in ("input_ids", "attention_mask", "token_type_ids")]
        self.serve = serve
        self.serve_ids = tf.function(self.predict_ids, input_signature=ids)
        return {"serving_default": serve.get_concrete_function(), "predict_ids": self.serve_ids.get_concrete_function()}


def _label_structure(labels: Sequence[str]):
    """Per label: IOB prefix code and entity-type index; and the entity type names."""
    type_names: List[str] = []
    prefixes, types = [], []
    for label in labels:
        head, _, entity_type = label.partition("-")
        if label == "O" or head not in ("B", "I") or not entity_type:
            prefixes.append(0)
            types.append(-1)
            continue
        if entity_type not in type_names:
            type_names.append(entity_type)
        prefixes.append(1 if head == "B" else 2)
        types.append(type_names.index(entity_type))
    return prefixes, types, type_names


def next_version(model_dir: Path) -> int:
    """1 + the highest numeric version directory under ``model_dir`` (1 when there is none)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_run(run_dir: Union[str, Path], name: str, version: Optional[int] = None,
               export_dir: Union[str, Path] = "saved_models") -> Path:
    """Export a ``tfft train`` run as ``export_dir/name/version`` and return that path."""
    from tfft.models import label_map_of
    from tfft.run_dir import MODEL_SUBDIR, load_run

    target_parent = Path(export_dir) / name
    version = version if version is not None else next_version(target_parent)
    target = target_parent / str(version)
    if target.exists():
        raise ConfigError(f"{target} already exists; choose another --version or omit it for the next free one")
    # Exports compute in float32 whatever the training precision: any server can run it.
    config, model, tokenizer = load_run(run_dir, precision="fp32")
    model_dir = Path(run_dir) / MODEL_SUBDIR
    labels = list(label_map_of(model).labels)
    metrics_path = Path(run_dir) / "metrics.json"
    card = {
        "name": name, "version": version, "task": config.task, "labels": labels,
        "base_model": config.model, "max_length": inference_length(tokenizer),
        "training_metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        "tfft_version": _tfft_version(), "tensorflow_version": tf.__version__, "python_version": platform.python_version(),
        "signatures": {"serving_default": "raw text in", "predict_ids": "token ids in"},
    }
    target_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_parent, prefix=f".{version}.assets-") as scratch:
        card_path = Path(scratch) / MODEL_CARD
        card_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
        labels_path = Path(scratch) / "labels.json"
        labels_path.write_text(json.dumps({str(i): label for i, label in enumerate(labels)}), encoding="utf-8")
        module = ServingModule(
            model, InGraphBertTokenizer.from_pretrained_dir(model_dir), config.task, labels, card["max_length"],
            assets={"vocab": str(model_dir / "vocab.txt"), "model_card": str(card_path), "labels": str(labels_path)},
            with_pairs=bool(config.text_pair_column),
        )
        staging = Path(tempfile.mkdtemp(dir=target_parent, prefix=f".{version}.tmp-"))
        try:
            tf.saved_model.save(module, str(staging), signatures=module.signatures())
            try:
                replace_directory(staging, target, replace=False)
            except FileExistsError:  # another export took this version number meanwhile
                raise ConfigError(f"{target} was created by another export while this one ran; run it again") from None
        finally:
            if staging.exists():
                import shutil

                shutil.rmtree(staging, ignore_errors=True)
    return target


def _tfft_version() -> str:
    from tfft import __version__

    return __version__
