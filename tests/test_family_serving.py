"""Every encoder family served from raw text: ``tfft export`` of a tiny trained run (tests/families.py) must
predict what the run predicts, through ``tfft predict --saved-model``, the SavedModel's signatures called
directly and a TFLite export, on texts as people write them (accents, non-Latin scripts, CJK without
spaces, emoji, combining marks, a long word, empty and whitespace-only lines)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfft.cli import main

from conftest import SAMPLE_DATA
from families import FAMILY_NAMES

TEXTS = SAMPLE_DATA.joinpath("ner_predict.txt").read_text(encoding="utf-8").splitlines() + [
    "Zoë  Müller met Anna Schmidt in São Paulo on Monday .",
    "  Acme Corp   shares rose in Berlin, didn't they?",
    "Владимир Путин посетил Москву вчера .",
    "北京是中国的首都。Tokyo 和 東京",
    "Ελληνικά γράμματα και العربية والعبرية עברית",
    "Peter 🙂 met Mary 👩‍👩‍👧 in Paris 🇫🇷 .",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 in Zu\u0308rich",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + " struck London .",
    "",
    "   \t ",
]
WORDS = [["Anna", "Schmidt", "flew", "to", "Tokyo", "with", "Acme", "Corp", "."],
         ["São", "Paulo", "is", "in", "Brazil", "🙂"], ["北京", "and", "Москва"]]
SENTENCES = SAMPLE_DATA.joinpath("sentiment_predict.txt").read_text(encoding="utf-8").splitlines()[:8] + [
    "Ein wunderbarer Film ! 🙂", "最高の映画でした", "", "  "]
# Sequence classification for the in-graph tokenizer kinds beside WordPiece (tests/test_export.py serves BERT's),
# on tests/families.py's sentiment run (gradient accumulation and checkpointing change nothing the export saves).
SEQUENCE_FAMILIES = ("roberta", "xlm-roberta")


def predicted(capsys, where, path: Path, *extra) -> list:
    capsys.readouterr()
    assert main(["predict", *where, "--input", str(path), *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def spans(results) -> list:
    return [[(e["type"], e["start"], e["end"], e["text"]) for e in r.get("entities", [])] for r in results]


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def served(request, family_run, tmp_path_factory):
    """One family's NER run (and, for SEQUENCE_FAMILIES, its sentiment run), tests/families.py's RUNS shared with
    tests/test_families.py, each exported as a SavedModel and as a float16-weight TFLite model."""
    family = request.param
    root = tmp_path_factory.mktemp(f"served-{family}")
    runs = {"family": family, "root": root}
    for name in ("ner", "sentiment") if family in SEQUENCE_FAMILIES else ("ner",):
        run = family_run(family, name)
        exports = root / "exports"
        assert main(["export", str(run), "--name", name, "--export-dir", str(exports), "--version", "1"]) == 0
        assert main(["export", str(run), "--name", name, "--export-dir", str(exports), "--format", "tflite",
                     "--quantize", "float16"]) == 0
        runs[name] = (run, exports / name / "1", exports / name / "tflite" / "model-float16.tflite")
    runs["texts"] = write_lines(root / "texts.txt", TEXTS)
    runs["sentences"] = write_lines(root / "sentences.txt", SENTENCES)
    runs["words"] = write_lines(root / "words.jsonl", [json.dumps({"tokens": words}) for words in WORDS])
    return runs


def test_the_saved_model_and_tflite_tag_the_entities_the_run_tags(served, capsys):
    run, saved, tflite = served["ner"]
    expected = predicted(capsys, [str(run)], served["texts"])
    assert [r["text"] for r in expected] == TEXTS
    for text, entities in zip(TEXTS, spans(expected)):
        assert all(text[start:end] == entity for _, start, end, entity in entities), (text, entities)
    assert sum(map(len, spans(expected))) >= 3, f"{served['family']}: the trained model should find entities"
    assert spans(predicted(capsys, ["--saved-model", str(saved)], served["texts"])) == spans(expected)
    # TFLite holds float16 weights: a token whose tags a tiny model scores nearly alike may tip the other way,
    # so its entities must index the text exactly and agree with the run's on all but a few.
    lite = spans(predicted(capsys, ["--tflite", str(tflite)], served["texts"]))
    for text, entities in zip(TEXTS, lite):
        assert all(text[start:end] == entity for _, start, end, entity in entities), (text, entities)
    run_entities = {(row, *entity) for row, entities in enumerate(spans(expected)) for entity in entities}
    lite_entities = {(row, *entity) for row, entities in enumerate(lite) for entity in entities}
    assert len(run_entities ^ lite_entities) <= 0.1 * len(run_entities), (run_entities ^ lite_entities)


def test_serving_default_called_directly_gives_the_run_entities(served, capsys):
    from tfft.backend import tf

    run, saved, _ = served["ner"]
    expected = spans(predicted(capsys, [str(run)], served["texts"]))
    outputs = tf.saved_model.load(str(saved)).signatures["serving_default"](text=tf.constant(TEXTS))
    got = []
    for row, text in enumerate(TEXTS):
        count = int(outputs["num_entities"][row])
        types = [t.decode() for t in outputs["entity_types"][row, :count].numpy()]
        starts, ends = outputs["entity_start"][row, :count].numpy(), outputs["entity_end"][row, :count].numpy()
        got.append([(kind, int(s), int(e), text[s:e]) for kind, s, e in zip(types, starts, ends)])
    assert got == expected


def test_serving_pretokenized_tags_the_words_the_run_tags(served, capsys):
    run, saved, _ = served["ner"]
    expected = predicted(capsys, [str(run)], served["words"], "--input-format", "tokens", "--words")
    got = predicted(capsys, ["--saved-model", str(saved)], served["words"], "--input-format", "tokens", "--words")
    assert [[(w["text"], w["tag"]) for w in r["words"]] for r in got] == \
           [[(w["text"], w["tag"]) for w in r["words"]] for r in expected]
    assert [[w["text"] for w in r["words"]] for r in expected] == WORDS


def test_classification_labels_and_probabilities_agree(served, capsys):
    if "sentiment" not in served:
        pytest.skip(f"sequence classification is served for {', '.join(SEQUENCE_FAMILIES)}")
    run, saved, tflite = served["sentiment"]
    expected = predicted(capsys, [str(run)], served["sentences"])
    for where in (["--saved-model", str(saved)], ["--tflite", str(tflite)]):
        got = predicted(capsys, where, served["sentences"])
        assert [r.get("label") for r in got] == [r.get("label") for r in expected], where
        for mine, theirs in zip(got, expected):
            for label, probability in theirs.get("probabilities", {}).items():
                assert mine["probabilities"][label] == pytest.approx(probability, abs=2e-3), where


def test_predict_ids_takes_what_the_family_takes(served):
    """predict_ids asks for token_type_ids only where the model has token types, and then agrees with the
    raw-text signature on the run tokenizer's ids."""
    from tfft.backend import tf
    from tfft.families import family_of
    from tfft.models import load_tokenizer
    from tfft.run_dir import MODEL_SUBDIR
    import transformers

    run, saved, _ = served["ner"]
    config = transformers.AutoConfig.from_pretrained(str(run / MODEL_SUBDIR))
    signature = tf.saved_model.load(str(saved)).signatures["predict_ids"]
    declared = set(signature.structured_input_signature[1])
    takes_types = family_of(config).uses_token_types(config)
    assert ("token_type_ids" in declared) == takes_types, (served["family"], declared)
    tokenizer = load_tokenizer(str(run / MODEL_SUBDIR))
    encoded = tokenizer(["Anna Schmidt flew to Tokyo ."], return_tensors="np")
    inputs = {name: tf.constant(encoded[name] if name in encoded else np.zeros_like(encoded["input_ids"]), tf.int32)
              for name in declared}  # RoBERTa's tokenizer returns no token types; its one type is 0
    probabilities = signature(**inputs)["probabilities"].numpy()
    assert probabilities.shape[:2] == encoded["input_ids"].shape
    assert np.allclose(probabilities.sum(-1), 1.0, atol=1e-4)
