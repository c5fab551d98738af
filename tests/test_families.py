"""Every encoder family through the user's path (``tfft train``, ``evaluate``, ``predict``, LoRA, gradient
accumulation with checkpointing, TFLite, several replicas) on tiny checkpoints built offline
(tests/families.py): what each family's adapter (tfft/families) claims is what the paths do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfft.cli import main
from tfft.families import FAMILIES, REGISTRY, family_table

from conftest import REPO, SAMPLE_DATA
from families import FAMILY_NAMES

TEXTS = SAMPLE_DATA.joinpath("ner_predict.txt").read_text(encoding="utf-8").splitlines() + [
    "Zoë  Müller met Anna Schmidt in São Paulo on Monday .",
    "  Acme Corp   shares rose in Berlin.",
]
COMMON = ["--learning-rate", "1e-2", "--no-tensorboard", "--seed", "3", "--max-validation-examples", "40"]
NER = ["--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
       "--validation", str(SAMPLE_DATA / "ner_valid.txt")]
SENTIMENT = ["--task", "sequence-classification", "--train", str(SAMPLE_DATA / "sentiment_train.tsv"),
             "--validation", str(SAMPLE_DATA / "sentiment_valid.tsv")]


def losses(run: Path) -> list:
    return json.loads((run / "history.json").read_text())["loss"]


def predicted(capsys, where, path: Path, *extra) -> list:
    capsys.readouterr()
    assert main(["predict", *where, "--input", str(path), *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def trained(request, family_checkpoint, tmp_path_factory):
    """One family's runs: NER (the plain Keras step), sentiment with gradient accumulation and checkpointing
    (tfft's step, recomputed blocks), NER with LoRA adapters."""
    family = request.param
    model = ["--model", str(family_checkpoint(family))]
    root = tmp_path_factory.mktemp(f"runs-{family}")
    runs = {"family": family, "root": root, "model": model}
    commands = {
        "ner": [*NER, "--epochs", "2"],
        "sentiment": [*SENTIMENT, "--epochs", "3", "--batch-size", "8", "--gradient-accumulation-steps", "2",
                      "--gradient-checkpointing"],
        "lora": [*NER, "--epochs", "2", "--lora-rank", "4", "--learning-rate", "2e-2"],
    }
    for name, args in commands.items():
        runs[name] = root / name
        assert main(["train", *args, *model, *COMMON, "--output-dir", str(runs[name])]) == 0, (family, name)
    texts = root / "texts.txt"
    texts.write_text("".join(text + "\n" for text in TEXTS), encoding="utf-8")
    runs["texts"] = texts
    return runs


def test_training_lowers_the_loss_on_every_path(trained):
    for name in ("ner", "sentiment", "lora"):
        history = losses(trained[name])
        assert history[-1] < 0.8 * history[0], (trained["family"], name, history)


def test_evaluate_reproduces_the_validation_scores(trained, capsys):
    run = trained["ner"]
    best = json.loads((run / "metrics.json").read_text())["best"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(SAMPLE_DATA / "ner_valid.txt")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"f1={best['val_f1']:.4f}" in first, (first, best)


@pytest.mark.parametrize("run_name", ["ner", "lora"])
def test_predicted_entities_index_the_written_text(trained, run_name, capsys):
    results = predicted(capsys, [str(trained[run_name])], trained["texts"], "--words")
    assert [r["text"] for r in results] == TEXTS
    entities = [(r["text"], e) for r in results for e in r["entities"]]
    assert len(entities) >= 3, f"{trained['family']}: the trained model should find entities"
    for text, entity in entities:
        assert text[entity["start"]:entity["end"]] == entity["text"]
    for result in results:
        words = [(w["text"], w["start"], w["end"]) for w in result["words"]]
        assert all(result["text"][start:end] == word for word, start, end in words)
        assert "".join(word for word, _, _ in words) == "".join(result["text"].split())  # every character, once


def test_sequence_predictions_follow_the_evaluated_model(trained, capsys):
    source = SAMPLE_DATA / "sentiment_valid.tsv"
    rows = [line.split("\t") for line in source.read_text(encoding="utf-8").splitlines()[1:]]
    path = trained["root"] / "sentences.txt"
    path.write_text("".join(text + "\n" for text, _ in rows), encoding="utf-8")
    results = predicted(capsys, [str(trained["sentiment"])], path)
    accuracy = sum(r["label"] == label for r, (_, label) in zip(results, rows)) / len(rows)
    best = json.loads((trained["sentiment"] / "metrics.json").read_text())["best"]
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)


def test_tflite_export_predicts_the_run_entities(trained, capsys):
    export_dir = trained["root"] / "exports"
    assert main(["export", str(trained["ner"]), "--name", "ner", "--export-dir", str(export_dir),
                 "--format", "tflite", "--quantize", "float16"]) == 0
    expected = predicted(capsys, [str(trained["ner"])], trained["texts"])
    tflite = predicted(capsys, ["--tflite", str(export_dir / "ner" / "tflite" / "model-float16.tflite")],
                       trained["texts"])
    assert [[(e["type"], e["start"], e["end"]) for e in r["entities"]] for r in tflite] == \
           [[(e["type"], e["start"], e["end"]) for e in r["entities"]] for r in expected]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_words_map_to_subwords_as_the_family_says(family, family_checkpoint):
    from tfft.models import load_tokenizer

    tokenizer = load_tokenizer(str(family_checkpoint(family)))
    adapter = REGISTRY[family]
    words = ["Anna", "Schmidt", "flew", "to", "Tokyo", "unbelievably", "."]
    encoding = tokenizer(words, is_split_into_words=True)
    tokens, word_ids = tokenizer.convert_ids_to_tokens(encoding["input_ids"]), encoding.word_ids()
    firsts = [t for i, (t, w) in enumerate(zip(tokens, word_ids)) if w is not None and w != word_ids[i - 1]]
    rests = [t for i, (t, w) in enumerate(zip(tokens, word_ids)) if w is not None and w == word_ids[i - 1]]
    assert len(firsts) == len(words) and rests, tokens
    marker = {"wordpiece": "##", "byte_bpe": "Ġ", "sentencepiece": "▁"}[adapter.tokenizer]
    if adapter.tokenizer == "wordpiece":
        assert all(t.startswith(marker) for t in rests) and not any(t.startswith(marker) for t in firsts), tokens
    else:  # every word, the first included, carries its leading space
        assert all(t.startswith(marker) for t in firsts) and not any(t.startswith(marker) for t in rests), tokens


MIRRORED_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tfft.backend import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from conftest import SAMPLE_DATA
from families import write_family_checkpoint
from tfft.cli import main
root = Path(sys.argv[2])
model = write_family_checkpoint(sys.argv[3], root / "model")
code = main(["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
             "--model", str(model), "--strategy", "mirrored", "--epochs", "2", "--batch-size", "8",
             "--learning-rate", "1e-2", "--no-tensorboard", "--output-dir", str(root / "run")])
history = json.loads((root / "run" / "history.json").read_text()) if code == 0 else {}
print("RESULT " + json.dumps({"code": code, "replicas": len(tf.config.list_logical_devices("CPU")),
                              "loss": history.get("loss")}))
"""


def test_two_replicas_train_a_family_without_token_types(tmp_path):
    process = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(Path(__file__).parent), str(tmp_path),
                              "distilbert"], capture_output=True, text=True, timeout=300, cwd=REPO)
    line = next((line for line in process.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert line, process.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["code"] == 0 and result["replicas"] == 2
    assert result["loss"][-1] < 0.8 * result["loss"][0]


def test_the_family_guide_table_is_rendered_from_the_adapters():
    text = (REPO / "docs" / "families.md").read_text(encoding="utf-8")
    assert family_table() in text
    assert {family.name for family in FAMILIES} == {"BERT", "ELECTRA", "DistilBERT", "MPNet", "RoBERTa",
                                                     "XLM-RoBERTa", "ALBERT", "DeBERTa-v2/v3"}
