"""SavedModel export for TF Serving, end to end: the version layout, the assets, and that the
exported signatures predict what the in-memory model predicts, in a process that cannot
import ``transformers``, ``tokenizers`` or ``tensorflow_text`` (as in a stock model server).

The tiny test BERT gets a vocabulary of the sample data's frequent words and one epoch of
training, so that predictions vary (entities of several types, both sentiment labels) and a
mix-up of labels, words or offsets would show.
"""

from __future__ import annotations

import collections
import json
import os
import string
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

import tfft
from tfft.backend import keras, tf
from tfft.cli import main
from tfft.config import TrainConfig
from tfft.errors import ConfigError
from tfft.export.request_limits import CHECKS_SCOPE
from tfft.export.predictor import SavedModelPredictor
from tfft.export.saved_model import ServingModule, export_run
from tfft.prediction import Predictor
from tfft.training import train

from conftest import REPO, SAMPLE_DATA, TINY_VOCAB, write_tiny_checkpoint

HARD_TEXTS = [
    "Café Déjà vu naïve Ångström in São Paulo",
    "我爱北京天安门 and 東京 Tokyo",
    "I ❤️ 🍕 in Paris !! 🏳️‍🌈",
    "a\x00b\u200bc\x07d\te\x1bf Anna",  # control characters, removed or splitting
    "foo\x1cbar a\x0bb Anna\x85Paris c\u2028d",  # control characters Python calls spaces: not word breaks
    "x" * 300,  # longer than a word may be: one [UNK]
    "",
    "   \t ",
    "hello [MASK] Anna [SEP] x[CLS]y",
]
NER_TEXTS = [
    "Anna flew to Tokyo on Monday .",
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn met Werner Zwingmann in Brussels",
    "The Nobel team beat Sydney 2-1 on Sunday .",
    *HARD_TEXTS,
]
CLASSIFICATION_TEXTS = [
    "the film is good .",
    "the dialogue was gripping and gripping .",
    "what a tedious experience ; the soundtrack is tedious .",
    "honestly , the cast felt charming .",
    "the story is tedious .",
    "a dull , boring mess",
    " ".join(["the film is tedious ."] * 9 + ["the cast felt charming ."] * 9),  # past the 64-token maximum
    *HARD_TEXTS,
]
# More tokens than the tiny model's 64: tagged in three overlapping windows, in the graph too.
LONG_TEXT = " ".join(["Anna flew to Tokyo on Monday ."] * 15)
BLOCKED_MODULES = ("transformers", "tokenizers", "tensorflow_text")

NER_OUTPUTS = {
    "tags": "string", "tag_ids": "int32", "tag_scores": "float32", "word_start": "int64", "word_end": "int64",
    "num_words": "int32", "entity_types": "string", "entity_start": "int64",
    "entity_end": "int64", "entity_scores": "float32", "num_entities": "int32",
}
WORD_PADDING = {"tags": "", "tag_ids": -1, "tag_scores": 0.0, "word_start": -1, "word_end": -1}
ENTITY_PADDING = {"entity_types": "", "entity_start": -1, "entity_end": -1, "entity_scores": 0.0}


def write_vocab_checkpoint(directory: Path) -> None:
    """The tiny test BERT, but with the sample data's frequent words (and letters) in its vocabulary."""
    counts: collections.Counter = collections.Counter()
    for line in (SAMPLE_DATA / "ner_train.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("-DOCSTART-"):
            counts[line.split()[0].lower()] += 1
    for line in (SAMPLE_DATA / "sentiment_train.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        counts.update(line.split("\t")[0].split())
    letters = list(string.ascii_lowercase)
    vocab = TINY_VOCAB + letters + ["##" + c for c in letters] + [w for w, _ in counts.most_common(400)]
    keras.utils.set_random_seed(0)
    write_tiny_checkpoint(directory, list(dict.fromkeys(vocab)))


@pytest.fixture(scope="module")
def checkpoint(built_once) -> Path:
    return built_once("vocab-bert", write_vocab_checkpoint)


@pytest.fixture(scope="module")
def runs(checkpoint, built_once) -> Dict[str, Path]:
    """One-epoch runs of both tasks (settings found to give varied predictions with this seed), trained once
    for this module and tests/test_tflite.py."""
    def train_both(root: Path) -> None:
        ner = TrainConfig(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
                          model=str(checkpoint), output_dir=str(root / "ner"), epochs=1, batch_size=16,
                          learning_rate=5e-2, tensorboard=False)
        sentiment = TrainConfig(task="sequence-classification", train=str(SAMPLE_DATA / "sentiment_train.tsv"),
                                model=str(checkpoint), output_dir=str(root / "sentiment"), epochs=1, batch_size=4,
                                max_train_examples=200, learning_rate=3e-2, warmup_fraction=0.0, weight_decay=0.0,
                                tensorboard=False)
        train(ner)
        train(sentiment)

    root = built_once("export-runs", train_both)
    return {"ner": root / "ner", "sentiment": root / "sentiment"}


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> Path:
    """``ner/1`` written by ``export_run``, ``sentiment/1`` by the CLI."""
    export_dir = tmp_path_factory.mktemp("saved_models")
    assert export_run(runs["ner"], "ner", export_dir=export_dir) == export_dir / "ner" / "1"
    assert main(["export", str(runs["sentiment"]), "--name", "sentiment", "--export-dir", str(export_dir)]) == 0
    return export_dir


@pytest.fixture(scope="module")
def predictors(runs) -> Dict[str, Predictor]:
    return {task: Predictor.from_run_dir(run) for task, run in runs.items()}


def assert_same_results(expected: Any, actual: Any, where: str = "result") -> None:
    """Equal JSON structures, except that floats (scores, probabilities) may differ by 1e-4."""
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same_results(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (e, a) in enumerate(zip(expected, actual)):
            assert_same_results(e, a, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-4), where
    else:
        assert actual == expected, where


def test_versions_assets_and_refusals(checkpoint, runs, exports, capsys, monkeypatch):
    ner_dir = exports / "ner"
    previous = os.umask(0o022)
    try:
        version = export_run(runs["ner"], "ner", export_dir=exports)
    finally:
        os.umask(previous)
    assert version == ner_dir / "2" and sorted(os.listdir(ner_dir)) == ["1", "2"]
    # Readable by a model server running as another user: the modes of a plain mkdir/open under umask 022.
    for path in [version, *version.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path

    with pytest.raises(ConfigError, match=r"ner/1 already exists; choose another --version"):
        export_run(runs["ner"], "ner", version=1, export_dir=exports)
    capsys.readouterr()
    assert main(["export", str(runs["ner"]), "--name", "ner", "--version", "2", "--export-dir", str(exports)]) == 2
    assert "tfft export: error:" in capsys.readouterr().err

    def fail_midway(obj, export_dir, **kwargs):
        (Path(export_dir) / "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        export_run(runs["ner"], "ner", export_dir=exports)
    assert sorted(os.listdir(ner_dir)) == ["1", "2"]  # no 3/, no temporary directories

    for task, run in runs.items():
        version = exports / task / "1"
        assert sorted(os.listdir(version)) == [".tfft", "assets", "fingerprint.pb", "saved_model.pb", "variables"]
        assets = version / "assets"
        assert sorted(os.listdir(assets)) == ["labels.json", "model_card.json", "tokenizer.json", "vocab.txt"]
        assert (assets / "vocab.txt").read_bytes() == (run / "model" / "vocab.txt").read_bytes()
        labels = json.loads((assets / "labels.json").read_text())
        assert labels == json.loads((run / "labels.json").read_text())["id2label"]
        card = json.loads((assets / "model_card.json").read_text())
        assert card["task"] == ("token-classification" if task == "ner" else "sequence-classification")
        assert card["labels"] == [labels[str(i)] for i in range(len(labels))]
        assert (card["name"], card["version"], card["max_length"]) == (task, 1, 64)
        assert card["base_model"] == str(checkpoint)
        assert (card["tfft_version"], card["tensorflow_version"]) == (tfft.__version__, tf.__version__)


SERVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in {blocked!r}:
        sys.modules[name] = None  # importing it now raises ImportError
    import tensorflow as tf
    from tfft.export.predictor import SavedModelPredictor

    def plain(value):
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.decode("utf-8") if isinstance(value, bytes) else value

    result = {{}}
    for task, request in json.load(sys.stdin).items():
        loaded = tf.saved_model.load(request["path"])
        result[task] = {{"predictions": SavedModelPredictor(request["path"]).predict(request["texts"])}}
        calls = {{"serving_default": {{"text": tf.constant(request["texts"])}},
                 "predict_ids": {{k: tf.constant(v, tf.int32) for k, v in request["ids"].items()}}}}
        for name, inputs in calls.items():
            signature = loaded.signatures[name]
            result[task][name] = {{
                "inputs": sorted(signature.structured_input_signature[1]),
                "outputs": {{k: {{"dtype": v.dtype.name, "shape": v.shape.as_list(),
                                 "value": plain(v.numpy().tolist())}} for k, v in signature(**inputs).items()}},
            }}
    result["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r} and sys.modules[m] is not None)
    print(json.dumps(result))
    """
).format(blocked=BLOCKED_MODULES)


@pytest.fixture(scope="module")
def served(exports, predictors) -> Dict[str, Any]:
    """What the SavedModels answer in a process without transformers, tokenizers and tensorflow_text."""
    request = {}
    for task, texts in (("ner", NER_TEXTS + [LONG_TEXT]), ("sentiment", CLASSIFICATION_TEXTS)):
        ids = predictors[task].tokenizer(texts[:4], padding=True, return_tensors="np")
        request[task] = {"path": str(exports / task / "1"), "texts": texts,
                         "ids": {k: ids[k].tolist() for k in ("input_ids", "attention_mask", "token_type_ids")}}
    process = subprocess.run([sys.executable, "-c", SERVE_SCRIPT], input=json.dumps(request), capture_output=True,
                             text=True, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result.pop("imported") == []
    for task in result:
        result[task]["ids"] = request[task]["ids"]
    return result


def check_predict_ids(served_task: Dict[str, Any], predictor: Predictor, num_labels: int) -> None:
    signature = served_task["predict_ids"]
    assert signature["inputs"] == ["attention_mask", "input_ids", "token_type_ids"]
    outputs = signature["outputs"]
    assert sorted(outputs) == ["logits", "probabilities"]
    features = {k: tf.constant(v, tf.int32) for k, v in served_task["ids"].items()}
    expected = predictor.model(features, training=False).logits.numpy()
    for name in ("logits", "probabilities"):
        assert outputs[name]["dtype"] == "float32"
        assert outputs[name]["shape"] == list(expected.shape) and expected.shape[-1] == num_labels
    logits, probabilities = np.asarray(outputs["logits"]["value"]), np.asarray(outputs["probabilities"]["value"])
    if expected.ndim == 3:  # token logits: padding is not computed, its logits are 0
        attended = np.asarray(served_task["ids"]["attention_mask"]).astype(bool)
        np.testing.assert_array_equal(logits[~attended], 0.0)
        logits, probabilities, expected = logits[attended], probabilities[attended], expected[attended]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(expected).numpy(), atol=1e-6)


def test_token_classification_signatures_match_the_in_memory_model(served, predictors):
    predictor = predictors["ner"]
    expected = predictor.predict(NER_TEXTS + [LONG_TEXT])
    assert any(result["entities"] for result in expected), "the test model should find entities"
    signature = served["ner"]["serving_default"]
    assert signature["inputs"] == ["text"]
    outputs = signature["outputs"]
    assert {name: output["dtype"] for name, output in outputs.items()} == NER_OUTPUTS
    values = {name: output["value"] for name, output in outputs.items()}
    batch, words, entities = len(NER_TEXTS) + 1, max(values["num_words"]), max(values["num_entities"])
    for name, output in outputs.items():
        width = words if name in WORD_PADDING else entities if name in ENTITY_PADDING else None
        assert output["shape"] == ([batch] if width is None else [batch, width]), name

    for row, result in enumerate(expected):
        count, found = values["num_words"][row], values["num_entities"][row]
        for name, padding in WORD_PADDING.items():
            assert values[name][row][count:] == [padding] * (words - count), (row, name)
        for name, padding in ENTITY_PADDING.items():
            assert values[name][row][found:] == [padding] * (entities - found), (row, name)
        graph_words = [(values["word_start"][row][i], values["word_end"][row][i], values["tags"][row][i])
                       for i in range(count)]
        graph_entities = [(values["entity_types"][row][i], values["entity_start"][row][i], values["entity_end"][row][i])
                          for i in range(found)]
        assert graph_words == [(w["start"], w["end"], w["tag"]) for w in result["words"]], row
        assert graph_entities == [(e["type"], e["start"], e["end"]) for e in result["entities"]], row
        np.testing.assert_allclose(values["tag_scores"][row][:count], [w["score"] for w in result["words"]], atol=1e-4)
        np.testing.assert_allclose(values["entity_scores"][row][:found], [e["score"] for e in result["entities"]],
                                   atol=1e-4)
        assert values["tag_ids"][row][:count] == [predictor.label_map.labels.index(w[2]) for w in graph_words]

    assert values["num_words"][-1] == len(LONG_TEXT.split())
    assert_same_results(expected, served["ner"]["predictions"])

    check_predict_ids(served["ner"], predictor, len(predictor.label_map))


def test_sequence_classification_signatures_match_the_in_memory_model(served, predictors):
    predictor = predictors["sentiment"]
    expected = predictor.predict(CLASSIFICATION_TEXTS)
    assert len({result["label"] for result in expected}) > 1, "the test model should predict both labels"
    signature = served["sentiment"]["serving_default"]
    assert signature["inputs"] == ["text"]
    outputs = signature["outputs"]
    batch, classes = len(CLASSIFICATION_TEXTS), len(predictor.label_map)
    assert {name: (o["dtype"], o["shape"]) for name, o in outputs.items()} == {
        "label": ("string", [batch]), "label_id": ("int32", [batch]), "probabilities": ("float32", [batch, classes])}
    assert outputs["label"]["value"] == [result["label"] for result in expected]
    assert outputs["label_id"]["value"] == [predictor.label_map.labels.index(r["label"]) for r in expected]
    np.testing.assert_allclose(outputs["probabilities"]["value"],
                               [list(result["probabilities"].values()) for result in expected], atol=1e-4)
    assert_same_results(expected, served["sentiment"]["predictions"])
    check_predict_ids(served["sentiment"], predictor, classes)


@pytest.mark.parametrize("task", ["ner", "sentiment"])
def test_cli_predict_with_a_saved_model_prints_what_the_run_prints(task, runs, exports, tmp_path, capsys):
    texts = NER_TEXTS if task == "ner" else CLASSIFICATION_TEXTS
    source = tmp_path / "input.txt"
    source.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    printed = []
    for where in ([str(runs[task])], ["--saved-model", str(exports / task / "1")]):
        assert main(["predict", *where, "--input", str(source), "--words"]) == 0
        printed.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert len(printed[0]) == len(texts)
    assert_same_results(printed[0], printed[1])


def test_raw_text_words_follow_the_word_rule_in_every_path(runs, exports, predictors):
    text = '(Reuters) Anna flew to "Tokyo," Anglo-Dutch S.AFRICA Xerox Corp.\'s unit didn\'t rise in Paris.'
    natural = ["(", "Reuters", ")", "Anna", "flew", "to", '"', "Tokyo", ",", '"', "Anglo-Dutch", "S.AFRICA", "Xerox",
               "Corp.", "'s", "unit", "did", "n't", "rise", "in", "Paris", "."]
    whitespace_predictor = Predictor.from_run_dir(runs["ner"])
    whitespace_predictor.word_split = "whitespace"
    paths = {
        ("natural", "run"): predictors["ner"],
        ("natural", "saved model"): SavedModelPredictor(exports / "ner" / "1"),
        ("whitespace", "run"): whitespace_predictor,
        ("whitespace", "saved model"): SavedModelPredictor(exports / "ner" / "1", word_split="whitespace"),
    }
    results = {key: predictor.predict([text])[0] for key, predictor in paths.items()}
    for (rule, _), result in results.items():
        assert [w["text"] for w in result["words"]] == (natural if rule == "natural" else text.split())
        assert all(text[w["start"]:w["end"]] == w["text"] for w in result["words"])
        for entity in result["entities"]:  # spans cover whole words
            assert text[entity["start"]:entity["end"]] == entity["text"]
            assert entity["start"] in {w["start"] for w in result["words"]}
            assert entity["end"] in {w["end"] for w in result["words"]}
    assert results[("natural", "run")]["entities"], "the test model should find entities"
    for rule in ("natural", "whitespace"):
        assert_same_results(results[(rule, "run")], results[(rule, "saved model")])


def test_cli_predicts_pre_tokenized_input_word_for_word(runs, exports, tmp_path, capsys):
    # Tokens the natural rule would split further ("Brussels.", "(EU", "German's") stay whole words.
    sentences = [["Peter", "Blackburn", "met", "Werner", "Zwingmann", "in", "Brussels."], [],
                 ["(EU", "rejects", "German's", "call", "to", "boycott", "British", "lamb", "."]]
    source = tmp_path / "tokens.jsonl"
    source.write_text("".join((json.dumps({"tokens": t}) if t else "") + "\n" for t in sentences), encoding="utf-8")
    plain = tmp_path / "plain.txt"
    plain.write_text("".join(" ".join(t) + "\n" for t in sentences), encoding="utf-8")
    outputs = {}
    for name, where in (("run", [str(runs["ner"])]), ("saved model", ["--saved-model", str(exports / "ner" / "1")])):
        assert main(["predict", *where, "--input", str(source), "--input-format", "tokens", "--words"]) == 0
        outputs[name] = printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["tokens"] for r in printed] == sentences
        for result, tokens in zip(printed, sentences):
            assert [w["text"] for w in result["words"]] == tokens
            assert [w["token_start"] for w in result["words"]] == list(range(len(tokens)))
            for entity in result["entities"]:
                assert " ".join(tokens[entity["token_start"]:entity["token_end"]]) == entity["text"]
        assert any(r["entities"] for r in printed), "the test model should find entities"
    # The graph splits the joined tokens at whitespace; Python encodes the tokens as given: same answers.
    assert_same_results(outputs["run"], outputs["saved model"])
    # Raw text of the same tokens goes through the natural rule instead, and gets other words.
    assert main(["predict", str(runs["ner"]), "--input", str(plain), "--words"]) == 0
    natural = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [w["text"] for w in natural[0]["words"]][-2:] == ["Brussels", "."]

    bad = tmp_path / "bad.jsonl"
    for line, message in (('{"tokens": "Anna"}', '"tokens" list'), ('{"tokens": ["New York"]}', "no whitespace"),
                          ("not json", '"tokens" list'), ('{"tokens": ["Anna", "\\ud800"]}', "UTF-8")):
        bad.write_text('{"tokens": ["ok"]}\n' + line + "\n", encoding="utf-8")
        assert main(["predict", str(runs["ner"]), "--input", str(bad), "--input-format", "tokens"]) == 2
        error = capsys.readouterr().err
        assert f"{bad}:2" in error and message in error and "Traceback" not in error, error


class _TagsEveryTokenInside(ServingModule):
    """Serves every token's arg-max as the first I- label (its B- label second): the worst start the
    decoder can get."""

    def probabilities(self, features):
        inside = next(i for i, label in enumerate(self.labels) if label.startswith("I-"))
        begin = self.labels.index("B-" + self.labels[inside][2:])
        shape = tf.shape(features["input_ids"])
        return (0.8 * tf.one_hot(tf.fill(shape, inside), len(self.labels))
                + 0.1 * tf.one_hot(tf.fill(shape, begin), len(self.labels)) + 0.1 / len(self.labels))


@pytest.mark.parametrize("batch", [[""], ["", "  "], ["Tokyo"], ["Tokyo", ""], ["", "Anna"], ["Anna flew", "x"]])
def test_serving_signature_answers_one_word_and_empty_batches_whatever_the_tags(runs, batch):
    from tfft.export.tokenizer import InGraphBertTokenizer
    from tfft.models import label_map_of
    from tfft.run_dir import MODEL_SUBDIR, load_run

    config, model, _ = load_run(runs["ner"])
    labels = label_map_of(model).labels
    module = _TagsEveryTokenInside(model, InGraphBertTokenizer.from_pretrained_dir(runs["ner"] / MODEL_SUBDIR),
                                   config.task, labels, 64, assets={}, word_shapes=config.uses_word_shapes)
    serve = module.signatures()["serving_default"]  # traced for any batch and length, as TF Serving runs it
    outputs = {name: value.numpy() for name, value in serve(text=tf.constant(batch)).items()}
    inside = next(label for label in labels if label.startswith("I-"))
    for row, text in enumerate(batch):
        count = int(outputs["num_words"][row])
        assert count == len(text.split())
        tags = [tag.decode() for tag in outputs["tags"][row][:count]]
        # Viterbi repairs the invalid start: the first word begins its entity.
        assert tags == ["B-" + inside[2:]] + [inside] * (count - 1) if count else tags == []
        assert int(outputs["num_entities"][row]) == (1 if count else 0)


def test_saved_model_predictor_rejects_what_it_cannot_serve(exports, tmp_path):
    from tfft.export.request_limits import MAX_TEXT_CHARS

    too_long = "x" * (MAX_TEXT_CHARS + 1)
    with pytest.raises(ConfigError, match=r"input 2 has more than the 100000 characters"):
        SavedModelPredictor(exports / "ner" / "1").predict(["ok", too_long])
    serve = tf.saved_model.load(str(exports / "ner" / "1")).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="longer than 100000 characters"):
        serve(text=tf.constant([too_long]))
    with pytest.raises(tfft.ModelLoadError, match="not a tfft SavedModel"):
        SavedModelPredictor(exports / "ner")
    with pytest.raises(ConfigError, match="single texts, not text pairs"):
        SavedModelPredictor(exports / "sentiment" / "1").predict(["a"], text_pairs=["b"])


def _request_body(function, inputs):
    """The FunctionDef that computes ``function`` (a signature, loaded or traced): the largest one taking
    every request input, whether ``function`` itself or one it calls."""
    candidates = [function.function_def, *function.graph.as_graph_def().library.function]
    takes_all = [f for f in candidates if set(inputs) <= {arg.name for arg in f.signature.input_arg}]
    return max(takes_all, key=lambda f: len(f.node_def))


def unchecked_ops(function, inputs):
    """The ops of a signature that read the request (``inputs``) but can run before one of its size checks
    passed: through data or control edges, they do not follow every check."""
    body = _request_body(function, inputs)
    nodes = {node.name: node for node in body.node_def}
    parents = {name: {i.lstrip("^").split(":")[0] for i in node.input} for name, node in nodes.items()}
    # The size checks (other Asserts, e.g. a ragged tensor's own, read the request like any other op).
    checks = {name for name, node in nodes.items() if name.startswith(CHECKS_SCOPE + "/")
              and (node.op == "Assert" or (node.op in ("If", "StatelessIf") and name.endswith("AssertGuard")))}
    assert checks, "the signature checks nothing"
    reads, follows, order = {}, {}, []
    pending = {name: {p for p in parents[name] if p in nodes} for name in nodes}
    ready = [name for name, waiting in pending.items() if not waiting]
    children = collections.defaultdict(list)
    for name, waiting in pending.items():
        for parent in waiting:
            children[parent].append(name)
    while ready:  # topological order
        name = ready.pop()
        order.append(name)
        for child in children[name]:
            pending[child].discard(name)
            if not pending[child]:
                ready.append(child)
    for name in order:
        reads[name] = any(p in inputs or reads.get(p, False) for p in parents[name])
        follows[name] = set().union(*[follows[p] | ({p} & checks) for p in parents[name] if p in nodes])
    support = set()  # what computes the checks' conditions
    stack = list(checks)
    while stack:
        for parent in parents[stack.pop()] & nodes.keys():
            if parent not in support:
                support.add(parent)
                stack.append(parent)
    # And what belongs to a check, e.g. a guard's output.
    support |= {name for name in nodes if any(name.startswith(check + "/") for check in checks)}
    return sorted(f"{name} ({nodes[name].op})" for name in order
                  if reads[name] and name not in checks | support and follows[name] != checks)


def test_every_signature_checks_the_request_size_before_any_other_op(runs, exports):
    """The word rule, tokenizer and model wait for the size checks (control dependencies): a graph runs
    independent ops in any order, so a check that gates nothing could pass after the work, or with it."""
    from tfft.export.tokenizer import InGraphBertTokenizer
    from tfft.run_dir import MODEL_SUBDIR, load_run

    ids = ["input_ids", "attention_mask", "token_type_ids"]
    signatures = {"ner": {"serving_default": ["text"], "serving_pretokenized": ["text"], "predict_ids": ids},
                  "sentiment": {"serving_default": ["text"], "predict_ids": ids}}
    for task, inputs_of in signatures.items():
        loaded = tf.saved_model.load(str(exports / task / "1"))
        assert sorted(loaded.signatures) == sorted(inputs_of)
        for name, inputs in inputs_of.items():
            assert unchecked_ops(loaded.signatures[name], inputs) == [], (task, name)
    config, model, _ = load_run(runs["sentiment"])  # pair classification: traced here, as export_run traces it
    pairs = ServingModule(model, InGraphBertTokenizer.from_pretrained_dir(runs["sentiment"] / MODEL_SUBDIR),
                          config.task, ["negative", "positive"], 64, assets={}, with_pairs=True)
    assert unchecked_ops(pairs.signatures()["serving_default"], ["text", "text_pair"]) == []


REFUSAL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    def kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    path, requests = sys.argv[1], json.load(sys.stdin)
    loaded = tf.saved_model.load(path)
    loaded.signatures["serving_default"](text=tf.constant(["Anna flew to Tokyo ."]))  # traced, warm
    results = []
    for signature, inputs in requests:
        inputs = {name: tf.constant(value["text"] * value["times"]) if "text" in value
                  else tf.zeros(value["shape"], tf.int32) for name, value in inputs.items()}
        with open("/proc/self/clear_refs", "w") as reset:
            reset.write("5")  # VmHWM := VmRSS
        before = kib("VmHWM")
        try:
            loaded.signatures[signature](**inputs)
            refused = None
        except tf.errors.InvalidArgumentError as error:
            refused = error.message
        results.append({"refused": refused, "peak_mib": (kib("VmHWM") - before) / 1024})
    print(json.dumps(results))
    """
)


def test_a_refused_request_costs_no_more_memory_than_its_own_text(exports):
    """A request over a limit is refused, naming the limit, before the graph works on it: the process grows
    by less than 40 MiB (a 2-million-character text is 2 MB; tagging a text of 100,000 takes about 100 MiB
    with this tiny model)."""
    from tfft.export.request_limits import MAX_REQUEST_CHARS, MAX_REQUEST_TEXTS, MAX_TEXT_CHARS

    ids = ("input_ids", "attention_mask", "token_type_ids")
    # One word: the graph before the fix ran its word rule and tokenizer on it (+500 MiB) before refusing it,
    # and would have copied a text of many words once per word.
    huge = {"text": ["x" * 2_000_000], "times": 1}
    long_texts = {"text": ["x" * MAX_TEXT_CHARS], "times": MAX_REQUEST_CHARS // MAX_TEXT_CHARS + 1}
    expected = {
        "ner": [("serving_default", {"text": huge}, "MAX_TEXT_CHARS"),
                ("serving_pretokenized", {"text": huge}, "MAX_TEXT_CHARS"),
                ("serving_default", {"text": {"text": ["a"], "times": MAX_REQUEST_TEXTS + 1}}, "MAX_REQUEST_TEXTS"),
                ("serving_default", {"text": long_texts}, "MAX_REQUEST_CHARS"),
                ("predict_ids", {name: {"shape": [1, 65]} for name in ids}, "longer than the 64 positions"),
                ("predict_ids", {name: {"shape": [MAX_REQUEST_TEXTS + 1, 2]} for name in ids}, "MAX_REQUEST_TEXTS")],
        "sentiment": [("serving_default", {"text": huge}, "MAX_TEXT_CHARS")],
    }
    for task, requests in expected.items():
        process = subprocess.run([sys.executable, "-c", REFUSAL_SCRIPT, str(exports / task / "1")],
                                 input=json.dumps([request[:2] for request in requests]), capture_output=True,
                                 text=True, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
        assert process.returncode == 0, process.stderr[-3000:]
        for (signature, _, limit), result in zip(requests, json.loads(process.stdout.strip().splitlines()[-1])):
            assert result["peak_mib"] < 40, (task, signature, result)
            assert result["refused"] is not None and limit in result["refused"], (task, signature, result)


def test_predictor_cuts_requests_within_the_limits(exports, monkeypatch):
    import tfft.export.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "MAX_REQUEST_TEXTS", 3)
    monkeypatch.setattr(predictor_module, "MAX_REQUEST_CHARS", 40)
    predictor = SavedModelPredictor(exports / "ner" / "1", batch_size=64)
    sent = []
    serve = predictor._serve
    predictor._serve = lambda **inputs: sent.append(inputs["text"].numpy().tolist()) or serve(**inputs)
    texts = ["Anna", "Tokyo flew", "x" * 15, "a b", "Monday", "y" * 30]
    results = predictor.predict(texts)
    assert [r["text"] for r in results] == texts
    # Sorted by length; at most 3 texts; texts times the longest at most 40 characters.
    assert [[len(t) for t in chunk] for chunk in sent] == [[3, 4, 6], [10, 15], [30]]


def test_bf16_export_predicts_like_the_float32_one(runs, exports, predictors, tmp_path):
    path = export_run(runs["sentiment"], "sentiment", export_dir=tmp_path, precision="bf16")
    assert json.loads((path / "assets" / "model_card.json").read_text())["precision"] == "bf16"
    expected = predictors["sentiment"].predict(CLASSIFICATION_TEXTS)
    served = SavedModelPredictor(path).predict(CLASSIFICATION_TEXTS)
    # bfloat16 keeps about 3 significant digits: labels agree wherever float32 is not a near tie.
    clear = [max(r["probabilities"].values()) - min(r["probabilities"].values()) > 0.05 for r in expected]
    assert sum(clear) >= len(expected) // 2
    assert [r["label"] for r, c in zip(served, clear) if c] == [r["label"] for r, c in zip(expected, clear) if c]
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in served],
                               [list(r["probabilities"].values()) for r in expected], atol=2e-2)
    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16 for an export; got 'fp16'"):
        export_run(runs["sentiment"], "sentiment", export_dir=tmp_path, precision="fp16")
