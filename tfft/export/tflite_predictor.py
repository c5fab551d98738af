"""Prediction with a TensorFlow Lite export: Python tokenization and decoding around ``tf.lite.Interpreter``.

Why a :class:`~tfft.prediction.Predictor` subclass: the ``.tflite`` file takes token ids
(see :mod:`tfft.export.tflite`), so everything else -- encoding raw text, windows over long
NER inputs, word shapes as token types, Viterbi decoding, the JSON format -- must be what
``tfft predict RUN_DIR`` does. The subclass replaces only the forward step.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from tfft.backend import tf
from tfft.config import TrainConfig
from tfft.data.labels import LabelMap
from tfft.errors import ModelLoadError
from tfft.export.saved_model import MODEL_CARD
from tfft.export.tflite import ASSETS_SUBDIR, CONFIG_ASSET, TOKENIZER_SUBDIR
from tfft.files import sha256_of
from tfft.inference import Forward
from tfft.pipeline import model_input_signature
from tfft.prediction import Predictor

FEATURES = tuple(model_input_signature())
REQUIRED_FEATURES = ("input_ids", "attention_mask")


class TFLiteClassifier:
    """A ``.tflite`` token-id classifier as a :data:`tfft.inference.Forward` function.

    ``num_threads`` defaults to TFLite's choice. The interpreter resizes its inputs when a
    batch's shape differs from the previous one's.
    """

    def __init__(self, path: Union[str, Path], num_threads: Optional[int] = None):
        self.path = Path(path)
        with warnings.catch_warnings():
            # TF 2.21 warns that tf.lite.Interpreter moves to the ai_edge_litert package (same API).
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
            try:
                self._interpreter = tf.lite.Interpreter(model_path=str(self.path), num_threads=num_threads)
            except ValueError as error:
                raise ModelLoadError(f"{self.path}: not a TensorFlow Lite model: {error}") from None
        signatures = self._interpreter.get_signature_list()
        found = next(iter(signatures.values()), {})
        # The inputs its family takes: all of FEATURES, or no token_type_ids (DistilBERT, MPNet, DeBERTa-v3).
        self.inputs = tuple(name for name in FEATURES if name in found.get("inputs", []))
        if (sorted(found.get("inputs", [])) not in (sorted(FEATURES), sorted(REQUIRED_FEATURES))
                or "probabilities" not in found.get("outputs", [])):
            raise ModelLoadError(f"{self.path}: not a tfft TensorFlow Lite classifier (expected one signature from "
                                 f"{', '.join(FEATURES)} to probabilities; found {signatures})")
        self._runner = self._interpreter.get_signature_runner(next(iter(signatures)))

    @property
    def num_labels(self) -> int:
        return int(self._runner.get_output_details()["probabilities"]["shape_signature"][-1])

    def __call__(self, features: Dict[str, np.ndarray]) -> np.ndarray:
        return self._runner(**{name: np.asarray(features[name], np.int32) for name in self.inputs})["probabilities"]


class TFLitePredictor(Predictor):
    """:class:`~tfft.prediction.Predictor` with the forward step in a TFLite interpreter."""

    @classmethod
    def from_file(cls, path: Union[str, Path], batch_size: Optional[int] = None,
                  num_threads: Optional[int] = None) -> "TFLitePredictor":
        """Load ``EXPORT_DIR/NAME/tflite/model-*.tflite`` with the ``assets/`` beside it."""
        from tfft.models import load_tokenizer

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file (give a .tflite file written by `tfft export --format tflite`)")
        assets = path.parent / ASSETS_SUBDIR
        needed = [assets / MODEL_CARD, assets / CONFIG_ASSET, assets / TOKENIZER_SUBDIR]
        missing = [str(p.relative_to(path.parent)) for p in needed if not p.exists()]
        if missing:
            raise ModelLoadError(f"{path}: its assets are missing ({', '.join(missing)} beside it); keep the file "
                                 f"in the directory `tfft export --format tflite` wrote, with its {ASSETS_SUBDIR}/")
        card = json.loads((assets / MODEL_CARD).read_text(encoding="utf-8"))
        recorded = card.get("files", {}).get(path.name, {}).get("sha256")
        if recorded != sha256_of(path):
            raise ModelLoadError(f"{path}: not the file {assets / MODEL_CARD} describes (its SHA-256 differs from the "
                                 f"one recorded at export{'' if recorded else ': none recorded'}); export it again")
        classifier = TFLiteClassifier(path, num_threads=num_threads)
        labels = LabelMap(card["labels"])
        if classifier.num_labels != len(labels):
            raise ModelLoadError(f"{path}: the model has {classifier.num_labels} outputs but its card lists "
                                 f"{len(labels)} labels")
        config = TrainConfig.load(assets / CONFIG_ASSET)
        thresholds = card.get("thresholds")  # a multi-label model's, by label
        return cls.from_config(config, classifier, load_tokenizer(str(assets / TOKENIZER_SUBDIR)), labels, batch_size,
                               thresholds=None if thresholds is None else [thresholds[label] for label in labels],
                               at_least_one=bool(card.get("at_least_one", False)))

    def forward(self) -> Forward:
        return self.model
