"""TensorFlow Lite export of a run's classifier on token ids, with int8 or float16 weights.

Why token ids only: TFLite's builtin ops have no string processing, and the SavedModel's
in-graph tokenizer (hash tables, ragged tensors, while loops) would need the Flex delegate,
which most TFLite runtimes lack. So tokenization, word splitting, long-text windows and
Viterbi decoding stay in Python, in the code ``tfft predict`` runs on a run directory
(:class:`tfft.export.tflite_predictor.TFLitePredictor`); the ``.tflite`` file holds the
encoder and classifier head: ``input_ids``, ``attention_mask`` and, for families with token types,
``token_type_ids`` (int32 ``[batch, length]``, both dimensions free) to ``logits`` and
``probabilities`` (float32).

Layout, beside the version directories TF Serving loads (it loads only the numeric
subdirectories of ``EXPORT_DIR/NAME/``)::

    EXPORT_DIR/NAME/tflite/model-dynamic-int8.tflite
    EXPORT_DIR/NAME/tflite/model-float16.tflite
    EXPORT_DIR/NAME/tflite/assets/model_card.json   labels, settings, the model files' SHA-256
    EXPORT_DIR/NAME/tflite/assets/config.yaml       the run's configuration (windows, word shapes)
    EXPORT_DIR/NAME/tflite/assets/tokenizer/        the run's tokenizer files (and model config.json)

The quantizations of one trained model share the assets; exporting another model (other
weights) into the same directory is refused.

* ``dynamic-int8``: dynamic-range quantization -- weights stored as int8 with float scales,
  activations quantized per batch at run time, so matrix products run in int8.
* ``float16``: weights stored as float16 and widened to float32 when the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Union

from tfft.errors import ConfigError
from tfft.files import add_file_to_digest, atomic_directory, atomic_write, sha256_of, write_json
from tfft.ownership import checked_name

# TensorFlow is imported on use: the CLI reads QUANTIZATIONS to build its parser.

QUANTIZATIONS = ("dynamic-int8", "float16")
TFLITE_SUBDIR = "tflite"
ASSETS_SUBDIR = "assets"
TOKENIZER_SUBDIR = "tokenizer"
CONFIG_ASSET = "config.yaml"
# Tells a reader of the card why the file alone does not predict.
TOKENIZATION_NOTE = "token ids in: tokenization, windows and decoding run in Python (tfft predict --tflite FILE)"


def tflite_file_name(quantize: str) -> str:
    return f"model-{quantize}.tflite"


def check_quantization(quantize: str) -> None:
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")


def convert_to_tflite(model, quantize: str) -> bytes:
    """The classifier's token-id function as a TFLite flatbuffer with ``quantize``d weights.

    The same function the SavedModel's ``predict_ids`` serves (:func:`tfft.lean_bert.inference_logits`
    in float32), with the batch and sequence length left free: the interpreter resizes its
    inputs to each batch. Its ``probabilities`` output is the head's output
    (:func:`tfft.heads.logits_to_outputs`): a regression model's values, ``[batch, 1]``, come under that name.
    """
    from tfft.backend import tf
    from tfft.families import family_of
    from tfft.heads import logits_to_outputs
    from tfft.lean_bert import inference_logits
    from tfft.pipeline import model_input_signature

    check_quantization(quantize)
    # The inputs the model's family takes: no token_type_ids for DistilBERT, MPNet or DeBERTa-v3.
    family = family_of(model)
    spec = family.model_inputs(model.config, model_input_signature())

    # The specs' names become the TFLite signature's input names.
    @tf.function(input_signature=[spec])
    def token_ids_to_probabilities(features):
        logits = tf.cast(inference_logits(model, features), tf.float32)
        return {"logits": logits, "probabilities": logits_to_outputs(model.config, logits)}

    with family.tflite_tracing(model):
        function = token_ids_to_probabilities.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises several unrelated types (ConverterError, ValueError ...)
        raise ConfigError(f"this model cannot be converted to TensorFlow Lite: {error}") from error


def model_fingerprint(model_dir: Union[str, Path]) -> str:
    """SHA-256 over the names and contents of a run's ``model/`` files: which trained model an export holds."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file():
            digest.update(path.name.encode("utf-8") + b"\0")
            add_file_to_digest(digest, path)
    return digest.hexdigest()


def export_tflite(run_dir: Union[str, Path], name: str, quantize: str,
                  export_dir: Union[str, Path] = "saved_models") -> Path:
    """Convert a ``tfft train`` run to ``export_dir/name/tflite/model-QUANTIZE.tflite`` (plus its
    assets) and return the file's path."""
    from tfft.export.saved_model import MODEL_CARD, model_card
    from tfft.lora import merge_adapters
    from tfft.models import label_map_of
    from tfft.run_dir import CONFIG_FILE, MODEL_SUBDIR, load_run, load_run_config

    check_quantization(quantize)
    directory = Path(export_dir) / checked_name(name, "--name") / TFLITE_SUBDIR
    target = directory / tflite_file_name(quantize)
    load_run_config(run_dir)  # a clear error for a directory that is not a run
    fingerprint = model_fingerprint(Path(run_dir) / MODEL_SUBDIR)
    assets = directory / ASSETS_SUBDIR
    card_path = assets / MODEL_CARD
    if assets.exists() and not card_path.is_file():
        raise ConfigError(f"{assets} has no {MODEL_CARD}: not written by tfft export; remove it and export again")
    if card_path.is_file():
        recorded = json.loads(card_path.read_text(encoding="utf-8")).get("model_sha256")
        if recorded != fingerprint:
            raise ConfigError(f"{directory} holds the TensorFlow Lite export of another model (model_sha256 "
                              f"{recorded}, this run's {fingerprint}); remove it or choose another --name")
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it to export again")

    # Quantization starts from float32 weights whatever the training precision.
    config, model, tokenizer = load_run(run_dir, precision="fp32")
    merge_adapters(model)  # a LoRA run converts as a plain model: adapters folded into the kernels
    flatbuffer = convert_to_tflite(model, quantize)
    if not card_path.is_file():
        card = {**model_card(run_dir, config, tokenizer, label_map_of(model).labels, name, model.config),
                "model_sha256": fingerprint, "inputs": TOKENIZATION_NOTE, "files": {}}
        try:
            with atomic_directory(assets, replace=False) as staging:
                tokenizer.save_pretrained(str(staging / TOKENIZER_SUBDIR))
                model.config.save_pretrained(str(staging / TOKENIZER_SUBDIR))  # tells AutoTokenizer the model type
                (staging / CONFIG_ASSET).write_bytes((Path(run_dir) / CONFIG_FILE).read_bytes())
                write_json(staging / MODEL_CARD, card)
        except FileExistsError:  # another export wrote them meanwhile
            raise ConfigError(f"{assets} was created by another export while this one ran; run it again") from None
    atomic_write(target, lambda temporary: Path(temporary).write_bytes(flatbuffer))
    _record_file(card_path, target)
    return target


def _record_file(card_path: Path, model_file: Path) -> None:
    """Add the file's SHA-256 to the card, so a predictor can tell that file and assets belong together."""
    card: Dict = json.loads(card_path.read_text(encoding="utf-8"))
    card["files"][model_file.name] = {"sha256": sha256_of(model_file), "bytes": model_file.stat().st_size}
    write_json(card_path, card)
