"""Every encoder family through the user's path (``tfft train``, ``evaluate``, ``predict``, LoRA, gradient
accumulation with checkpointing, several replicas) on tiny checkpoints built offline
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
from families import FAMILY_NAMES, NER, SENTIMENT

TEXTS = SAMPLE_DATA.joinpath("ner_predict.txt").read_text(encoding="utf-8").splitlines() + [
    "Zoë  Müller met Anna Schmidt in São Paulo on Monday .",
    "  Acme Corp   shares rose in Berlin.",
]


def losses(run: Path) -> list:
    return json.loads((run / "history.json").read_text())["loss"]


def predicted(capsys, where, path: Path, *extra) -> list:
    capsys.readouterr()
    assert main(["predict", *where, "--input", str(path), *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def trained(request, family_run, tmp_path_factory):
    """One family's runs (tests/families.py's RUNS, shared with tests/test_family_serving.py): NER (packed rows
    where the family packs, Keras' own step on length buckets elsewhere), sentiment with gradient accumulation
    and checkpointing (tfft's step, recomputed blocks), NER with LoRA adapters (no validation)."""
    family = request.param
    root = tmp_path_factory.mktemp(f"runs-{family}")
    runs = {"family": family, "root": root, **{name: family_run(family, name) for name in ("ner", "sentiment", "lora")}}
    texts = root / "texts.txt"
    texts.write_text("".join(text + "\n" for text in TEXTS), encoding="utf-8")
    runs["texts"] = texts
    return runs


def test_training_lowers_the_loss_on_every_path(trained):
    for name in ("ner", "sentiment", "lora"):
        history = losses(trained[name])
        assert history[-1] < 0.9 * history[0], (trained["family"], name, history)


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
    if run_name == "ner":
        assert len(entities) >= 3, f"{trained['family']}: the trained model should find entities"
    for text, entity in entities:
        assert text[entity["start"]:entity["end"]] == entity["text"]
    for result in results:
        words = [(w["text"], w["start"], w["end"]) for w in result["words"]]
        assert all(result["text"][start:end] == word for word, start, end in words)
        assert "".join(word for word, _, _ in words) == "".join(result["text"].split())  # every character, once


def test_sequence_predictions_follow_the_evaluated_model(trained, capsys):
    source = SAMPLE_DATA / "sentiment_valid.tsv"
    rows = [line.split("\t") for line in source.read_text(encoding="utf-8").splitlines()[1:41]]  # the validated 40
    path = trained["root"] / "sentences.txt"
    path.write_text("".join(text + "\n" for text, _ in rows), encoding="utf-8")
    results = predicted(capsys, [str(trained["sentiment"])], path)
    accuracy = sum(r["label"] == label for r, (_, label) in zip(results, rows)) / len(rows)
    best = json.loads((trained["sentiment"] / "metrics.json").read_text())["best"]
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)


# The SavedModel and TFLite exports of every family: tests/test_family_serving.py.


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
from tfft.training.data import PreparedData
replicas, train_dataset = [], PreparedData.train_dataset
def recording(self, config, cluster):  # the replicas the training pipeline is split among
    replicas.append(cluster.replicas)
    return train_dataset(self, config, cluster)
PreparedData.train_dataset = recording
root = Path(sys.argv[2])
model = write_family_checkpoint(sys.argv[3], root / "model")
code = main(["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
             "--model", str(model), "--strategy", "mirrored", "--epochs", "2", "--batch-size", "8",
             "--learning-rate", "1e-2", "--no-tensorboard", "--output-dir", str(root / "run")])
history = json.loads((root / "run" / "history.json").read_text()) if code == 0 else {}
print("RESULT " + json.dumps({"code": code, "replicas": replicas, "loss": history.get("loss")}))
"""


def test_two_replicas_train_a_family_without_token_types(tmp_path):
    process = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(Path(__file__).parent), str(tmp_path),
                              "distilbert"], capture_output=True, text=True, timeout=300, cwd=REPO)
    line = next((line for line in process.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert line, process.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["code"] == 0 and result["replicas"] == [2]
    assert result["loss"][-1] < 0.8 * result["loss"][0]


def test_the_family_guide_table_is_rendered_from_the_adapters():
    text = (REPO / "docs" / "families.md").read_text(encoding="utf-8")
    assert family_table() in text
    assert {family.name for family in FAMILIES} == {"BERT", "ELECTRA", "DistilBERT", "MPNet", "RoBERTa",
                                                     "XLM-RoBERTa", "ALBERT", "DeBERTa-v2/v3"}


def run_cli(capsys, *args) -> tuple:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_unknown_family_is_refused_with_the_supported_list(tmp_path, capsys):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    code, _, err = run_cli(capsys, "train", *NER, "--model", str(tmp_path / "gpt"), "--output-dir", str(tmp_path / "run"))
    assert code == 2 and not (tmp_path / "run").exists()
    assert "tfft does not support gpt2 models; it supports the families bert, electra, distilbert" in err
    assert len(err.strip().splitlines()) == 1


def test_word_shapes_and_packing_are_refused_in_one_line_where_the_family_cannot(family_checkpoint, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", *NER, "--model", str(family_checkpoint("distilbert")), "--word-shapes",
                           "--output-dir", str(tmp_path / "run"))
    assert code == 2 and not (tmp_path / "run").exists()
    assert err.strip() == ("tfft train: error: The 'word_shapes' option needs a token type embedding to carry the "
                           "shapes; a DistilBERT model has none. Use --no-word-shapes (or a cased checkpoint, which "
                           "sees capitalisation itself)")
    code, _, err = run_cli(capsys, "train", *NER, "--model", str(family_checkpoint("deberta-v2")), "--packing",
                           "--output-dir", str(tmp_path / "run"))
    assert code == 2 and not (tmp_path / "run").exists()
    assert err.strip() == ("tfft train: error: The 'packing' option cannot apply: packed rows are built for BERT's "
                           "block layout, which DeBERTa-v2/v3 lacks: its disentangled attention adds relative "
                           "position embeddings in every block. Remove --packing to train on length buckets.")


def test_speed_ups_a_family_lacks_are_switched_off_saying_why_once(family_checkpoint, tmp_path, capsys):
    from tfft.config import TrainConfig
    from tfft.families import base
    from tfft.training.data import prepare_data

    base._noted.clear()
    config = TrainConfig(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
                         model=str(family_checkpoint("distilbert")), max_train_examples=8)
    for _ in range(2):
        resolved = prepare_data(config).config
        assert (resolved.packing, resolved.word_shapes) == (False, False)
    err = capsys.readouterr().err
    assert err.count("packing off: packed rows are built for BERT's block layout, which DistilBERT lacks: its "
                     "embedding layer takes no position ids and its blocks (attention.q_lin, ffn.lin1) are laid out "
                     "otherwise; training on length buckets") == 1
    assert err.count("word shapes off: an uncased DistilBERT model cannot take them as token types") == 1


def write_sentencepiece_only_checkpoint(directory: Path) -> Path:
    """A DeBERTa-v3 checkpoint as published: ``spm.model`` (trained on the sample data), no tokenizer.json."""
    import io

    import sentencepiece
    from transformers import DebertaV2Config

    from families import sample_texts

    directory.mkdir()
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sample_texts())), model_writer=model, vocab_size=200, hard_vocab_limit=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", user_defined_symbols=["[MASK]"], minloglevel=2)
    (directory / "spm.model").write_bytes(model.getvalue())
    DebertaV2Config(vocab_size=200).save_pretrained(str(directory))
    return directory


def test_a_sentencepiece_only_checkpoint_is_converted_or_refused_naming_the_package(tmp_path, monkeypatch):
    import importlib.util

    from tfft.errors import ModelLoadError
    from tfft.models import load_tokenizer

    pytest.importorskip("sentencepiece")
    directory = write_sentencepiece_only_checkpoint(tmp_path / "deberta-v3")
    tokenizer = load_tokenizer(str(directory))
    assert tokenizer.is_fast and type(tokenizer).__name__ == "DebertaV2TokenizerFast"
    encoding = tokenizer(["Anna", "flew", "to", "Tokyo"], is_split_into_words=True)
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens[1].startswith("▁")
    assert sorted(set(w for w in encoding.word_ids() if w is not None)) == [0, 1, 2, 3]

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece"
                        else find_spec(name, *a))
    with pytest.raises(ModelLoadError, match=r"deberta-v3: the tokenizer is a SentencePiece model \(spm.model, no "
                                             r"tokenizer.json\); converting it needs the sentencepiece package: "
                                             r"pip install 'tfft\[sentencepiece\]'"):
        load_tokenizer(str(directory))


def test_the_tflite_position_buckets_are_the_transformers_ones():
    """MPNet and DeBERTa trace their relative-position buckets in float32 for TFLite: the same buckets."""
    from transformers.models.deberta_v2 import modeling_tf_deberta_v2 as deberta
    from transformers.models.mpnet.modeling_tf_mpnet import TFMPNetEncoder

    from tfft.backend import tf
    from tfft.data.labels import LabelMap
    from tfft.models import build_model

    from families import tiny_config

    relative = tf.range(-1100, 1100)[None, :]
    mpnet = build_model("token-classification", LabelMap(["O"]), tiny_config("mpnet", 50))
    expected = TFMPNetEncoder._relative_position_bucket(relative, 32, 128)
    with REGISTRY["mpnet"].tflite_tracing(mpnet):
        traced = mpnet.mpnet.encoder._relative_position_bucket(relative, 32, 128)
    assert tf.reduce_all(traced == expected) and len(set(expected.numpy().ravel())) >= 30
    original = deberta.make_log_bucket_position
    for bucket_size, max_position in ((256, 512), (16, 64)):
        expected = original(relative, bucket_size, max_position)
        with REGISTRY["deberta-v2"].tflite_tracing(None):
            traced = deberta.make_log_bucket_position(relative, bucket_size, max_position)
        assert tf.reduce_all(traced == expected), bucket_size
    assert deberta.make_log_bucket_position is original


def test_tune_searches_a_family_without_token_types(family_checkpoint, tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", *SENTIMENT, "--model", str(family_checkpoint("mpnet")), "--output-dir", str(out),
                 "--epochs", "1", "--max-train-examples", "64", "--max-validation-examples", "16",
                 "--no-tensorboard", "--batch-sizes", "16", "--max-trials", "2"]) == 0
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert len(trials) == 2 and all(t["status"] == "COMPLETED" for t in trials), trials
    results = predicted(capsys, [str(out / "best")], SAMPLE_DATA / "sentiment_predict.txt")
    assert {r["label"] for r in results} <= {"0", "1"} and len(results) == 2


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dropout_reaches_each_family_head_under_its_config_name(family, family_checkpoint):
    """``--dropout`` (searched by ``tune``) and ``--attention-dropout`` under the names each family's config uses."""
    from tfft.data.labels import LabelMap
    from tfft.models import build_model

    for task in ("token-classification", "sequence-classification"):
        model = build_model(task, LabelMap(["a", "b"]), str(family_checkpoint(family)), dropout=0.3,
                            attention_dropout=0.2)
        adapter = REGISTRY[family]
        assert all(getattr(model.config, name) == 0.3 for name in adapter.classifier_dropout(task))
        assert getattr(model.config, adapter.attention_dropout) == 0.2
        rates = {round(float(getattr(layer, "rate", getattr(layer, "drop_prob", -1))), 3) for layer in model.submodules
                 if "dropout" in type(layer).__name__.lower()}
        assert {0.3, 0.2} <= rates, (task, rates)
