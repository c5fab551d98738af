"""TensorFlow Lite export: the converted classifier computes what the Keras model computes (float16
closely, dynamic-int8 within quantization error), ``tfft predict --tflite`` prints what ``tfft
predict RUN_DIR`` prints, the files land beside (not inside) TF Serving's version directories,
and broken or mismatched files are refused with a clear error.

The runs are test_export's: the tiny BERT trained for one epoch on the sample data, so that
predictions vary (entities of several types, both sentiment labels).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tfft.cli import main
from tfft.errors import ConfigError, ModelLoadError
from tfft.export.saved_model import next_version
from tfft.export.tflite import QUANTIZATIONS, convert_to_tflite, export_tflite
from tfft.export.tflite_predictor import TFLiteClassifier, TFLitePredictor
from tfft.inference import forward_function
from tfft.prediction import Predictor
from tfft.run_dir import load_run

from test_export import CLASSIFICATION_TEXTS, LONG_TEXT, NER_TEXTS, checkpoint, runs  # noqa: F401 (fixtures)

TEXTS = {"ner": NER_TEXTS + [LONG_TEXT], "sentiment": CLASSIFICATION_TEXTS}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> Path:  # noqa: F811
    """Both quantizations of both runs under one export root; sentiment's float16 through the CLI."""
    export_dir = tmp_path_factory.mktemp("saved_models")
    for task, run in runs.items():
        for quantize in QUANTIZATIONS:
            if (task, quantize) == ("sentiment", "float16"):
                assert main(["export", str(run), "--name", task, "--export-dir", str(export_dir),
                             "--format", "tflite", "--quantize", quantize]) == 0
            else:
                path = export_tflite(run, task, quantize, export_dir=export_dir)
                assert path == export_dir / task / "tflite" / f"model-{quantize}.tflite"
    return export_dir


def tflite_file(exported: Path, task: str, quantize: str) -> Path:
    return exported / task / "tflite" / f"model-{quantize}.tflite"


def feature_batches(model, seed: int = 0):
    """Batches of several sizes and lengths, with padding and every token type the model has."""
    rng = np.random.default_rng(seed)
    for batch, length in ((1, 5), (3, 17), (2, 64), (4, 9)):
        ids = rng.integers(5, model.config.vocab_size, (batch, length)).astype(np.int32)
        mask = (np.arange(length)[None, :] < rng.integers(1, length + 1, (batch, 1))).astype(np.int32)
        mask[0] = 1
        types = rng.integers(0, model.config.type_vocab_size, (batch, length)).astype(np.int32)
        yield {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types * mask}


@pytest.mark.parametrize("task", ["ner", "sentiment"])
def test_tflite_probabilities_match_the_keras_model_for_any_batch_shape(task, runs, exported):  # noqa: F811
    _, model, _ = load_run(runs[task], precision="fp32")
    keras_forward = forward_function(model)
    interpreters = {q: TFLiteClassifier(tflite_file(exported, task, q)) for q in QUANTIZATIONS}
    agree, total = 0, 0
    for features in feature_batches(model):  # one interpreter, resized to each shape in turn
        expected = np.asarray(keras_forward(features))
        float16 = interpreters["float16"](features)
        int8 = interpreters["dynamic-int8"](features)
        assert float16.shape == int8.shape == expected.shape
        np.testing.assert_allclose(float16, expected, atol=2e-3)
        np.testing.assert_allclose(int8, expected, atol=0.1)
        agree += int((int8.argmax(-1) == expected.argmax(-1)).sum())
        total += expected.argmax(-1).size
    assert agree / total >= 0.9


def test_convert_to_tflite_refuses_unknown_quantizations():
    with pytest.raises(ConfigError, match="--quantize must be one of dynamic-int8, float16; got 'int4'"):
        convert_to_tflite(object(), "int4")


def results_by_cli(capsys, where, texts, tmp_path) -> list:
    source = tmp_path / "input.txt"
    source.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    assert main(["predict", *where, "--input", str(source), "--words"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("task", ["ner", "sentiment"])
def test_cli_predict_tflite_prints_what_the_run_prints(task, runs, exported, tmp_path, capsys):  # noqa: F811
    texts = TEXTS[task]
    expected = results_by_cli(capsys, [str(runs[task])], texts, tmp_path)
    assert len(expected) == len(texts)
    if task == "ner":
        assert {e["type"] for r in expected for e in r["entities"]} >= {"PER", "LOC"}, "the test model should vary"
    else:
        assert len({r["label"] for r in expected}) == 2, "the test model should vary"
    for quantize, tolerance, least_agreement in (("float16", 2e-3, 1.0), ("dynamic-int8", 0.1, 0.9)):
        printed = results_by_cli(capsys, ["--tflite", str(tflite_file(exported, task, quantize))], texts, tmp_path)
        assert [sorted(r) for r in printed] == [sorted(r) for r in expected]
        if task == "ner":
            assert [[(w["text"], w["start"], w["end"]) for w in r["words"]] for r in printed] == \
                   [[(w["text"], w["start"], w["end"]) for w in r["words"]] for r in expected]
            pairs = [(w["tag"], v["tag"]) for r, e in zip(printed, expected) for w, v in zip(r["words"], e["words"])]
            scores = [(w["score"], v["score"]) for r, e in zip(printed, expected)
                      for w, v in zip(r["words"], e["words"]) if w["tag"] == v["tag"]]
        else:
            pairs = [(r["label"], e["label"]) for r, e in zip(printed, expected)]
            scores = [(p, e["probabilities"][label]) for r, e in zip(printed, expected)
                      for label, p in r["probabilities"].items()]
        assert sum(a == b for a, b in pairs) / len(pairs) >= least_agreement, quantize
        np.testing.assert_allclose(*zip(*scores), atol=tolerance)
        if quantize == "float16" and task == "ner":
            assert [[(e["type"], e["start"], e["end"]) for e in r["entities"]] for r in printed] == \
                   [[(e["type"], e["start"], e["end"]) for e in r["entities"]] for r in expected]


def test_tflite_predictor_is_the_run_predictor_with_another_forward_step(runs, exported):  # noqa: F811
    run_predictor = Predictor.from_run_dir(runs["ner"])
    predictor = TFLitePredictor.from_file(tflite_file(exported, "ner", "float16"))
    for name in ("task", "stride", "batch_size", "word_inputs", "with_pairs", "max_length", "window_length"):
        assert getattr(predictor, name) == getattr(run_predictor, name), name
    assert predictor.word_inputs.shapes, "the NER run gives word shapes as token types"
    assert predictor.label_map.labels == run_predictor.label_map.labels
    assert predictor.tokenizer.get_vocab() == run_predictor.tokenizer.get_vocab()
    assert isinstance(predictor.forward(), TFLiteClassifier)


def test_layout_beside_the_served_versions(runs, exported):  # noqa: F811
    for task, run in runs.items():
        directory = exported / task / "tflite"
        assert sorted(p.name for p in (exported / task).iterdir()) == ["tflite"]  # no version for TF Serving
        assert sorted(p.name for p in directory.iterdir()) == ["assets", "model-dynamic-int8.tflite",
                                                               "model-float16.tflite"]
        assets = directory / "assets"
        assert sorted(p.name for p in assets.iterdir()) == ["config.yaml", "model_card.json", "tokenizer"]
        assert (assets / "config.yaml").read_bytes() == (run / "config.yaml").read_bytes()
        assert (assets / "tokenizer" / "vocab.txt").read_bytes() == (run / "model" / "vocab.txt").read_bytes()
        card = json.loads((assets / "model_card.json").read_text())
        id2label = json.loads((run / "labels.json").read_text())["id2label"]
        assert card["name"] == task and card["labels"] == [id2label[str(i)] for i in range(len(id2label))]
        assert "tokenization" in card["inputs"] and "Python" in card["inputs"]
        assert sorted(card["files"]) == ["model-dynamic-int8.tflite", "model-float16.tflite"]
        sizes = {name: entry["bytes"] for name, entry in card["files"].items()}
        assert sizes == {name: (directory / name).stat().st_size for name in sizes}
        # Smaller, though the tiny model's tensors under 1,024 values stay float (bench/ measures the real ratio).
        assert sizes["model-dynamic-int8.tflite"] < sizes["model-float16.tflite"]
        assert next_version(exported / task) == 1  # the first SavedModel export: tflite/ is not a version


def test_export_refusals(runs, exported, capsys):  # noqa: F811
    with pytest.raises(ConfigError, match=r"model-float16.tflite already exists; remove it to export again"):
        export_tflite(runs["ner"], "ner", "float16", export_dir=exported)
    with pytest.raises(ConfigError, match=r"ner/tflite holds the TensorFlow Lite export of another model"):
        export_tflite(runs["sentiment"], "ner", "float16", export_dir=exported)
    (exported / "bare" / "tflite" / "assets").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"bare/tflite/assets has no model_card.json: not written by tfft export"):
        export_tflite(runs["ner"], "bare", "float16", export_dir=exported)
    for flags, message in ((["--format", "tflite"], "--format tflite needs --quantize"),
                           (["--format", "tflite", "--quantize", "float16", "--version", "3"], "takes no --version"),
                           (["--quantize", "float16"], "--quantize applies to --format tflite")):
        assert main(["export", str(runs["ner"]), "--name", "other", "--export-dir", str(exported), *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (exported / "other").exists()


def test_predict_refuses_broken_or_mismatched_files(runs, exported, tmp_path, capsys):  # noqa: F811
    source = tflite_file(exported, "sentiment", "dynamic-int8")
    with pytest.raises(ModelLoadError, match="no such file"):
        TFLitePredictor.from_file(tmp_path / "missing.tflite")
    alone = tmp_path / "alone" / source.name
    alone.parent.mkdir()
    shutil.copy(source, alone)
    with pytest.raises(ModelLoadError, match=r"its assets are missing \(assets/model_card.json, assets/config.yaml"):
        TFLitePredictor.from_file(alone)
    # The sentiment file with the NER assets: labels and settings would be wrong.
    swapped = tmp_path / "swapped"
    shutil.copytree(exported / "ner" / "tflite", swapped)
    shutil.copy(source, swapped / "model-float16.tflite")
    with pytest.raises(ModelLoadError, match=r"not the file .*model_card.json describes"):
        TFLitePredictor.from_file(swapped / "model-float16.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(ModelLoadError, match="not a TensorFlow Lite model"):
        TFLiteClassifier(corrupt)
    text = tmp_path / "in.txt"
    text.write_text("the film is good .\n", encoding="utf-8")
    assert main(["predict", str(runs["sentiment"]), "--tflite", str(source), "--input", str(text)]) == 2
    assert "give one of RUN_DIR, --saved-model DIR or --tflite FILE" in capsys.readouterr().err
    assert main(["predict", "--tflite", str(alone), "--input", str(text)]) == 2
    error = capsys.readouterr().err
    assert "its assets are missing" in error and "Traceback" not in error
