"""tfft: fine-tune TF BERT token and sequence classifiers the Keras way.

The public API, layer by layer (each depends only on the ones above it):

* data: ``read_examples``, ``read_conll``, ``read_table``, ``read_tfds``, ``from_texts``,
  ``from_tokens``, ``from_dataframe``, ``LabelMap``
* features and pipelines: ``encode_for_training``, ``encode_for_inference``, ``make_dataset``
* models: ``build_model``, ``load_tokenizer``
* training: ``create_optimizer``, ``masked_sparse_categorical_crossentropy``,
  ``ValidationMetrics``, ``BestWeightsCheckpoint``, ``TrainConfig``, ``train``
* results: ``evaluate_examples``, ``evaluate_run``, ``Predictor``

KerasTuner (``tfft.tuning``) and export (``tfft.export``) are imported on use.
"""

from tfft.backend import keras, tf  # noqa: F401  (first: selects tf-keras before TensorFlow loads)
from tfft.config import TrainConfig
from tfft.data import (
    LabelMap, TextExample, TokenExample, from_dataframe, from_texts, from_tokens, read_conll, read_examples,
    read_table, read_tfds,
)
from tfft.errors import ConfigError, DataFormatError, ModelLoadError, TfftError
from tfft.evaluation import EvaluationReport, evaluate_examples, evaluate_run
from tfft.features import encode_for_inference, encode_for_training
from tfft.models import build_model, load_tokenizer
from tfft.pipeline import make_dataset
from tfft.prediction import Predictor
from tfft.training import (
    BestWeightsCheckpoint, ValidationMetrics, create_optimizer, masked_sparse_categorical_crossentropy, train,
)

__version__ = "0.1.0"

__all__ = [
    "TrainConfig", "LabelMap", "TextExample", "TokenExample", "from_dataframe", "from_texts", "from_tokens",
    "read_conll", "read_examples", "read_table", "read_tfds", "ConfigError", "DataFormatError", "ModelLoadError",
    "TfftError", "EvaluationReport", "evaluate_examples", "evaluate_run", "encode_for_inference",
    "encode_for_training", "build_model", "load_tokenizer", "make_dataset", "Predictor", "BestWeightsCheckpoint",
    "ValidationMetrics", "create_optimizer", "masked_sparse_categorical_crossentropy", "train",
]
