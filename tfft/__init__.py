"""tfft: fine-tune TF BERT token and sequence classifiers the Keras way.

The public API, layer by layer (each depends only on the ones above it):

* data: ``read_examples``, ``read_conll``, ``read_table``, ``read_tfds``, ``from_texts``,
  ``from_tokens``, ``from_dataframe``, ``LabelMap``
* features and pipelines: ``encode_for_training``, ``encode_for_inference``, ``make_dataset``
* models: ``build_model``, ``load_tokenizer``; LoRA: ``LoraSettings``, ``add_adapters``, ``merge_adapters``
* training: ``create_optimizer``, ``masked_sparse_categorical_crossentropy``, ``task_loss``,
  ``ValidationMetrics``, ``BestWeightsCheckpoint``, ``TrainConfig``, ``train``
* results: ``evaluate_examples``, ``evaluate_run``, ``Predictor``

KerasTuner (``tfft.tuning``) and export (``tfft.export``) are imported on use.
"""

import importlib

import tfft._environment  # noqa: F401  (before anything imports TensorFlow)

__version__ = "0.6.0"

# Public name -> module. Imported on first use (PEP 562), so `import tfft` and
# `import tfft.data` stay free of TensorFlow until a TensorFlow-backed name is used.
_EXPORTS = {
    "TrainConfig": "tfft.config",
    **{name: "tfft.data" for name in (
        "LabelMap", "TextExample", "TokenExample", "from_dataframe", "from_texts", "from_tokens", "read_conll",
        "read_examples", "read_table", "read_tfds")},
    **{name: "tfft.errors" for name in ("ConfigError", "DataFormatError", "ModelLoadError", "TfftError")},
    **{name: "tfft.evaluation" for name in ("EvaluationReport", "evaluate_examples", "evaluate_run")},
    **{name: "tfft.features" for name in ("encode_for_inference", "encode_for_training")},
    **{name: "tfft.models" for name in ("build_model", "load_tokenizer")},
    **{name: "tfft.lora" for name in ("LoraSettings", "add_adapters", "merge_adapters")},
    "make_dataset": "tfft.pipeline",
    "Predictor": "tfft.prediction",
    **{name: "tfft.training" for name in (
        "BestWeightsCheckpoint", "ValidationMetrics", "create_optimizer", "masked_sparse_categorical_crossentropy",
        "task_loss", "train")},
    "export_run": "tfft.export.saved_model",
    "export_tflite": "tfft.export.tflite",
    "TFLitePredictor": "tfft.export.tflite_predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfft' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
