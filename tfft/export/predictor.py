"""Prediction with an exported SavedModel, in a process that has no ``transformers``.

Why: ``tfft predict --saved-model`` runs exactly the graph TF Serving will run (tokenizer,
word splitting, long-text windows and decoding included), so it checks an export before it
is deployed, and it predicts where only TensorFlow is installed. The output is
:class:`tfft.prediction.Predictor`'s JSON, produced by the same formatting functions; the
word spans, tags and probabilities come from the graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from tfft.backend import tf
from tfft.errors import ConfigError, ModelLoadError
from tfft.export.request_limits import MAX_REQUEST_CHARS, MAX_REQUEST_TEXTS, MAX_TEXT_CHARS
from tfft.export.saved_model import MODEL_CARD, PRETOKENIZED_SIGNATURE, TOKEN_CLASSIFICATION
from tfft.prediction import check_pairs, entity_result, sequence_result
from tfft.words import WHITESPACE

LABELS_ASSET = "labels.json"


class SavedModelPredictor:
    """An exported ``EXPORT_DIR/NAME/VERSION`` directory, predicting like :class:`~tfft.prediction.Predictor`.

    Texts are sent to ``serving_default`` in chunks of ``batch_size`` sorted by length, so a
    chunk pads little, and cut smaller where a chunk would pass the export's request limits
    (:mod:`tfft.export.request_limits`). Task and labels come from the SavedModel's own assets.
    """

    def __init__(self, path: Union[str, Path], batch_size: int = 64, word_split: Optional[str] = None):
        self.path = Path(path)
        assets = self.path / "assets"
        if not (self.path / "saved_model.pb").is_file() or not (assets / MODEL_CARD).is_file():
            raise ModelLoadError(f"{self.path}: not a tfft SavedModel (expected saved_model.pb and "
                                 f"assets/{MODEL_CARD}; give the version directory, e.g. saved_models/NAME/1)")
        card = json.loads((assets / MODEL_CARD).read_text(encoding="utf-8"))
        label_ids = json.loads((assets / LABELS_ASSET).read_text(encoding="utf-8"))
        self.task: str = card["task"]
        self.word_split: str = card.get("word_split", WHITESPACE)  # the rule serving_default splits text with
        self.labels: List[str] = [label_ids[str(i)] for i in range(len(label_ids))]
        self.batch_size = batch_size
        # The loaded object owns the variables and the vocabulary table the signature uses.
        self._loaded = tf.saved_model.load(str(self.path))
        self._serve = self._loaded.signatures["serving_default"]
        if word_split not in (None, self.word_split):  # another rule than the export's: only whitespace has a signature
            if word_split != WHITESPACE or PRETOKENIZED_SIGNATURE not in self._loaded.signatures:
                raise ConfigError(f"{self.path}: this export splits raw text with the {self.word_split!r} rule"
                                  + (f" and takes text already split at whitespace through {PRETOKENIZED_SIGNATURE}"
                                     if PRETOKENIZED_SIGNATURE in self._loaded.signatures else "")
                                  + f"; it cannot split with {word_split!r}")
            self._serve, self.word_split = self._loaded.signatures[PRETOKENIZED_SIGNATURE], word_split
        self.with_pairs = "text_pair" in self._serve.structured_input_signature[1]

    def predict(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None) -> List[Dict]:
        """One result per text, in :meth:`tfft.prediction.Predictor.predict`'s format."""
        check_pairs(self.with_pairs, text_pairs, f"{self.path}: this model")
        for number, text in enumerate(texts, start=1):
            if len(text) + (len(text_pairs[number - 1]) if text_pairs is not None else 0) > MAX_TEXT_CHARS:
                raise ConfigError(f"input {number} has more than the {MAX_TEXT_CHARS} characters the exported model "
                                  "accepts per text; split it")
        if self.task == TOKEN_CLASSIFICATION:
            return self._predict_entities(list(texts), self._serve)
        rows = self._serve_rows(self._serve, list(texts), None if text_pairs is None else list(text_pairs))
        return [sequence_result(self.task, text, self.labels, row["value"][None] if "value" in row
                                else row["probabilities"], row.get("predicted"))
                for text, row in zip(texts, rows)]

    def predict_words(self, sentences: Sequence[Sequence[str]]) -> List[Dict]:
        """Sentences already split into words, through the ``serving_pretokenized`` signature (words
        joined by spaces, split at whitespace in the graph); like ``Predictor.predict_words``."""
        if self.task != TOKEN_CLASSIFICATION:
            raise ConfigError(f"{self.path}: words in, entities out: this needs a token-classification model")
        signature = self._loaded.signatures.get(PRETOKENIZED_SIGNATURE)
        if signature is None:  # exports before the natural word rule split serving_default's text at whitespace
            if self.word_split != WHITESPACE:
                raise ConfigError(f"{self.path}: this export has no {PRETOKENIZED_SIGNATURE} signature for text "
                                  "already split into words; export the run again")
            signature = self._serve
        return self._predict_entities([" ".join(words) for words in sentences], signature)

    def _serve_rows(self, signature, texts: List[str], pairs: Optional[List[str]] = None) -> List[Dict[str, np.ndarray]]:
        """``serving_default``'s outputs for each text (one row each, still padded), in input order."""
        def length(i: int) -> int:
            return len(texts[i]) + (len(pairs[i]) if pairs is not None else 0)

        order = sorted(range(len(texts)), key=length)
        rows: List[Dict[str, np.ndarray]] = [{} for _ in texts]
        chunks: List[List[int]] = []
        for i in order:  # longest last: the chunk's padded size is its size times this text's length
            if not chunks or len(chunks[-1]) >= min(self.batch_size, MAX_REQUEST_TEXTS) \
                    or (len(chunks[-1]) + 1) * length(i) > MAX_REQUEST_CHARS:
                chunks.append([])
            chunks[-1].append(i)
        for chunk in chunks:
            inputs = {"text": tf.constant([texts[i] for i in chunk], tf.string)}
            if pairs is not None:
                inputs["text_pair"] = tf.constant([pairs[i] for i in chunk], tf.string)
            outputs = {name: value.numpy() for name, value in signature(**inputs).items()}
            for position, i in enumerate(chunk):
                rows[i] = {name: value[position] for name, value in outputs.items()}
        return rows

    def _predict_entities(self, texts: List[str], signature) -> List[Dict]:
        results = []
        for text, row in zip(texts, self._serve_rows(signature, texts)):
            count = int(row["num_words"])
            spans = list(zip(row["word_start"][:count].tolist(), row["word_end"][:count].tolist()))
            tags = [tag.decode("utf-8") for tag in row["tags"][:count]]
            results.append(entity_result(text, spans, tags, row["tag_scores"][:count]))
        return results
