"""Training behaviour users rely on: the run directory, early stopping restoring the best
epoch, resuming an interrupted fit, and the CLI failing cleanly on bad input."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from tfft.backend import keras
from tfft.cli import main
from tfft.config import TrainConfig
from tfft.data.labels import LabelMap
from tfft.models import build_model
from tfft.training import BestWeightsCheckpoint
from tfft.distribution import Cluster
from tfft.run_dir import work_dir_of
from tfft.training.data import prepare_data
from tfft.training.fit import fit_model
from tfft.training.trainer import train

from conftest import SAMPLE_DATA


@pytest.fixture
def ner_config(tiny_model_dir, tmp_path):
    return TrainConfig(
        task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
        validation=str(SAMPLE_DATA / "ner_valid.txt"), model=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
        epochs=2, batch_size=16, max_train_examples=64, max_validation_examples=32, learning_rate=1e-3,
        tensorboard=False,
    )


def test_train_writes_a_complete_run_directory(ner_config):
    result = train(ner_config)
    run = result.run_dir
    assert sorted(p.name for p in run.iterdir()) == [
        ".tfft", "config.yaml", "history.csv", "history.json", "labels.json", "metrics.json", "model", "reports"]
    labels = json.loads((run / "labels.json").read_text())
    model_config = json.loads((run / "model" / "config.json").read_text())
    assert model_config["id2label"] == labels["id2label"]
    assert labels["id2label"]["0"] == "O"
    history = json.loads((run / "history.json").read_text())
    assert len(history["val_f1"]) == 2 and len(history["loss"]) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["monitor"] == "val_f1"
    assert metrics["best"]["val_f1"] == max(history["val_f1"])
    seconds = metrics["seconds"]  # where the run's time went, in the order it was spent
    assert list(seconds) == ["data", "model", "first step (tracing)", "training steps", "validation",
                             "validation report", "writing", "other"]  # `tfft train` starts with the start-up
    assert all(value >= 0 for value in seconds.values()) and seconds["first step (tracing)"] > 0
    assert seconds["validation"] > 0 and seconds["training steps"] > 0
    # The phases cover the run: what follows them is writing metrics.json and renaming the directory.
    assert result.seconds - 0.5 <= sum(seconds.values()) <= result.seconds + 0.1
    assert (run / "reports" / "validation.txt").read_text().startswith("precision=")
    assert (run / "reports" / "training_curves.png").stat().st_size > 1000
    assert not work_dir_of(run).exists()
    # What the data decided is recorded (packing and word shapes for this BERT); the caller's config is as given.
    saved = TrainConfig.load(run / "config.yaml")
    assert saved.packing is True and saved.word_shapes is not None and saved.attention_dropout == 0.0
    assert (ner_config.packing, ner_config.word_shapes, ner_config.attention_dropout) == (None, None, None)


def test_what_the_data_decides_is_resolved_once_into_a_frozen_copy(ner_config):
    import dataclasses

    config = replace(ner_config, batch_size=None, epochs=None)
    data = prepare_data(config)
    assert (config.batch_size, config.epochs, config.packing) == (None, None, None)  # left as given
    resolved = data.config
    # 64 examples: batch 8, 8 updates an epoch, enough epochs for 500 updates but at most 20
    assert (resolved.batch_size, resolved.epochs, resolved.packing) == (8, 20, True)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to 'epochs'"):
        resolved.epochs = 1
    assert replace(resolved, epochs=1).epochs == 1 and resolved.epochs == 20


def test_attention_dropout_reaches_every_encoder_layer_under_its_family_name(ner_config):
    from transformers import DistilBertConfig

    from tfft.training.model import create_model

    labels = LabelMap(["O", "B-PER", "I-PER"])
    for value, expected in ((None, 0.1), (0.0, 0.0)):  # the tiny checkpoint's own rate is 0.1
        model = create_model(replace(ner_config, attention_dropout=value), labels, steps_per_epoch=1)
        assert {layer.attention.self_attention.dropout.rate for layer in model.bert.encoder.layer} == {expected}
        assert model.config.attention_probs_dropout_prob == expected
    model = build_model("token-classification", labels, DistilBertConfig(n_layers=1, dim=8, n_heads=2, hidden_dim=16),
                        attention_dropout=0.25)
    assert model.config.attention_dropout == 0.25  # DistilBERT's name for it
    model(model.dummy_inputs)
    assert {layer.attention.dropout.rate for layer in model.distilbert.transformer.layer} == {0.25}


def test_evaluate_reproduces_the_recorded_validation_scores(ner_config):
    from tfft.evaluation import evaluate_run

    result = train(ner_config)
    report = evaluate_run(result.run_dir, ner_config.validation)  # the run's slice of 32 sentences
    assert report.num_examples == 32
    for name in ("f1", "precision", "recall", "accuracy"):
        assert report.scores[name] == pytest.approx(result.best_scores[f"val_{name}"], abs=1e-6)
    assert evaluate_run(result.run_dir, ner_config.validation, max_examples=100).num_examples == 100


class ScriptedMetric(keras.callbacks.Callback):
    """Puts a given val_f1 per epoch into logs and remembers the weights of each epoch."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_f1"] = self.values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def test_early_stopping_restores_the_best_epoch(tiny_model_dir, tiny_tokenizer, tmp_path):
    labels = LabelMap(["O", "B-X", "I-X"])
    model = build_model("token-classification", labels, str(tiny_model_dir))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(0).integers(5, 30, size=(16, 6)).astype(np.int32)
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    y = np.random.default_rng(1).integers(0, 3, size=(16, 6))
    scripted = ScriptedMetric([0.5, 0.9, 0.6, 0.4, 0.3])
    checkpoint = BestWeightsCheckpoint(tmp_path / "best.h5", monitor="val_f1")
    stopper = keras.callbacks.EarlyStopping(monitor="val_f1", mode="max", patience=2)
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[scripted, checkpoint, stopper])
    assert len(history.history["loss"]) == 4  # best at epoch 2, two epochs without improvement
    assert checkpoint.restore() == 1
    for restored, best in zip(model.get_weights(), scripted.weights[1]):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(model.get_weights()[0], scripted.weights[-1][0])


def test_early_stopping_waits_while_f1_has_never_left_zero():
    from tfft.training.callbacks import EarlyStoppingAfterLearning

    def epochs_run(scores, stopper):
        stopper.set_model(type("Model", (), {"stop_training": False})())
        stopper.on_train_begin()
        for epoch, score in enumerate(scores):
            stopper.on_epoch_end(epoch, {"val_f1": score})
            if stopper.model.stop_training:
                return epoch + 1
        return len(scores)

    scores = [0.0, 0.0, 0.0, 0.0, 0.2, 0.1, 0.1, 0.1]
    assert epochs_run(scores, EarlyStoppingAfterLearning(monitor="val_f1", mode="max", patience=2)) == 7
    assert epochs_run(scores, keras.callbacks.EarlyStopping(monitor="val_f1", mode="max", patience=2)) == 3
    loss = EarlyStoppingAfterLearning(monitor="val_loss", mode="min", patience=1)
    stopper_model = type("Model", (), {"stop_training": False})()
    loss.set_model(stopper_model)
    loss.on_train_begin()
    for epoch in range(3):
        loss.on_epoch_end(epoch, {"val_loss": 0.0})
    assert stopper_model.stop_training  # a loss of 0 is no reason to wait


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def interrupted_and_resumed(config, data, work_dir, at: int):
    """Fit until epoch ``at`` begins, interrupt, fit again: the epochs the resumed fit ran, its best
    epoch and its history."""
    with pytest.raises(KeyboardInterrupt):
        fit_model(config, data, work_dir, cluster=Cluster.current(), extra_callbacks=[InterruptAt(at)])
    recorder = EpochRecorder()
    _, best_epoch, history = fit_model(config, data, work_dir, cluster=Cluster.current(), extra_callbacks=[recorder])
    return recorder.epochs, best_epoch, history


def test_an_interrupted_fit_resumes_where_it_stopped(ner_config, tmp_path):
    data = prepare_data(replace(ner_config, epochs=3))
    resumed_epochs, best_epoch, history = interrupted_and_resumed(data.config, data, tmp_path / "work", 2)
    assert resumed_epochs == [2]
    assert len(history["val_f1"]) == 3
    assert best_epoch == int(np.argmax(history["val_f1"]))


def test_sequence_classification_reports_accuracy_and_macro_f1(tiny_model_dir, tmp_path):
    config = TrainConfig(
        task="sequence-classification", train=str(SAMPLE_DATA / "sentiment_train.tsv"),
        validation=str(SAMPLE_DATA / "sentiment_valid.tsv"), model=str(tiny_model_dir),
        output_dir=str(tmp_path / "run"), epochs=1, batch_size=16, max_train_examples=48, tensorboard=False,
    )
    result = train(config)
    assert {"val_accuracy", "val_macro_f1", "val_loss"} <= set(result.best_scores)
    report = json.loads((result.run_dir / "reports" / "validation.json").read_text())
    assert report["labels"] == ["0", "1"]
    assert np.asarray(report["confusion_matrix"]).sum() == 100
    assert (result.run_dir / "reports" / "validation_confusion.png").is_file()


BAD_INPUTS = {
    "missing tag": ("token-classification", "train.txt", "EU B-ORG\nrejects\n\n", r"train\.txt:2: .*column"),
    "empty file": ("token-classification", "train.txt", "", r"train\.txt"),
    "undecodable bytes": ("token-classification", "train.txt", "caf\xe9 O\n", r"train\.txt:1: .*decode"),
    "missing column": ("sequence-classification", "train.tsv", "sentence\tscore\ngood\t1\n", r"train\.tsv.*'label'"),
    "empty text": ("sequence-classification", "train.tsv", "text\tlabel\ngood\t1\n \t0\n", r"train\.tsv:3: .*empty"),
    "single class": ("sequence-classification", "train.tsv", "text\tlabel\ngood\t1\nfine\t1\n", r"train\.tsv.*2 classes"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_rejects_bad_training_input_and_writes_nothing(case, tiny_model_dir, tmp_path, capsys):
    task, name, content, expected = BAD_INPUTS[case]
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    run_dir = tmp_path / "run"
    code = main(["train", "--task", task, "--train", str(path), "--model", str(tiny_model_dir),
                 "--output-dir", str(run_dir)])
    assert code == 2
    error = capsys.readouterr().err
    assert re.search(expected, error), error
    assert not run_dir.exists() and not work_dir_of(run_dir).exists()


def test_a_diverging_run_stops_with_one_line_and_is_not_recorded_as_finished(tiny_model_dir, tmp_path, capsys):
    # An absurd but finite learning rate: the loss becomes NaN within the first epoch.
    run_dir = tmp_path / "run"
    code = main(["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
                 "--validation", str(SAMPLE_DATA / "ner_valid.txt"), "--model", str(tiny_model_dir),
                 "--output-dir", str(run_dir), "--epochs", "3", "--batch-size", "16", "--max-train-examples", "64",
                 "--learning-rate", "1e30", "--no-tensorboard"])
    assert code == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("tfft train: error:")]
    assert len(lines) == 1 and "Traceback" not in error
    assert re.search(r"the training loss became (nan|inf) in epoch 1: the model diverged", lines[0])
    assert "a lower --learning-rate (it was 1e+30)" in lines[0] and str(work_dir_of(run_dir)) in lines[0]
    assert not run_dir.exists()  # no finished run
    assert not (work_dir_of(run_dir) / "history.csv").is_file() or "nan" not in (
        work_dir_of(run_dir) / "history.csv").read_text()  # nothing was logged from the diverged weights


def test_cli_rejects_a_validation_label_never_seen_in_training(tiny_model_dir, tmp_path, capsys):
    valid = tmp_path / "valid.txt"
    valid.write_text("Paris B-LOC\nrocks B-GENRE\n\n", encoding="utf-8")
    code = main(["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
                 "--validation", str(valid), "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run")])
    assert code == 2
    assert re.search(r"valid\.txt:2: label 'B-GENRE' was not seen", capsys.readouterr().err)


def test_cli_rejects_a_missing_model_directory(tmp_path, capsys):
    code = main(["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
                 "--model", str(tmp_path / "no-such-model"), "--output-dir", str(tmp_path / "run")])
    assert code == 2
    assert "no-such-model: model directory not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sentence_pair_classification_trains_and_predicts_from_the_cli(tiny_model_dir, tmp_path, capsys):
    rows = ["premise\thypothesis\tlabel"] + [
        f"the film is {a}\tthe film is {b}\t{'same' if a == b else 'different'}"
        for a in ("good", "bad") for b in ("good", "bad")] * 6
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "sequence-classification", "--train", str(tmp_path / "pairs.tsv"),
                 "--text-column", "premise", "--text-pair-column", "hypothesis", "--model", str(tiny_model_dir),
                 "--output-dir", str(run_dir), "--epochs", "1", "--no-tensorboard"]) == 0
    capsys.readouterr()
    inputs = tmp_path / "input.txt"
    inputs.write_text("the film is good\tthe film is bad\nthe film is bad\tthe film is bad\n", encoding="utf-8")
    assert main(["predict", str(run_dir), "--input", str(inputs), "--pair-separator", "\t"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [sorted(line["probabilities"]) for line in lines] == [["different", "same"]] * 2
    inputs.write_text("the film is good\tthe film is bad\nno separator here\n", encoding="utf-8")
    assert main(["predict", str(run_dir), "--input", str(inputs), "--pair-separator", "\t"]) == 2
    assert re.search(r"input\.txt:2: expected TEXT", capsys.readouterr().err)
    assert main(["predict", str(run_dir), "--input", str(inputs)]) == 2
    assert "this model takes a text_pair with every text" in capsys.readouterr().err


def test_loading_a_run_leaves_the_callers_keras_policy_and_matplotlib_backend(tiny_model_dir, tmp_path):
    import matplotlib

    from tfft.prediction import Predictor

    config = TrainConfig(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
                         model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), epochs=1, batch_size=16,
                         max_train_examples=40, precision="bf16", tensorboard=False)
    backend = matplotlib.get_backend()
    run_dir = train(config).run_dir
    keras.mixed_precision.set_global_policy("float32")
    predictor = Predictor.from_run_dir(run_dir)
    assert predictor.model.compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert matplotlib.get_backend() == backend


def test_a_finished_run_is_kept_unless_overwritten(ner_config, capsys):
    first = train(ner_config)
    stamp = (first.run_dir / "metrics.json").stat().st_mtime_ns
    assert main(["train", "--config", write_config(ner_config), "--verbose"]) == 2
    assert "already holds a finished run; pass --overwrite" in capsys.readouterr().err
    assert (first.run_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert main(["train", "--config", write_config(ner_config), "--overwrite"]) == 0
    assert (first.run_dir / "metrics.json").stat().st_mtime_ns != stamp
    assert not work_dir_of(first.run_dir).exists() and not list(first.run_dir.parent.glob(".*.lock"))


def write_config(config) -> str:
    path = config.run_dir.parent / "run.yaml"
    config.save(path)
    return str(path)


def test_an_unfinished_run_resumes_only_with_the_same_options(ner_config, tmp_path):
    from tfft.errors import ConfigError
    from tfft.training.lifecycle import claim_work_dir

    work_dir = tmp_path / ".run.partial"
    claim_work_dir(work_dir, ner_config, overwrite=False)
    (work_dir / "backup").mkdir()
    claim_work_dir(work_dir, replace(ner_config, output_dir=str(tmp_path / "elsewhere")), overwrite=False)
    assert (work_dir / "backup").is_dir()  # same options: resumed, state kept
    with pytest.raises(ConfigError, match=r"other options \(learning_rate: 0\.001 -> 0\.0005\); .*--overwrite"):
        claim_work_dir(work_dir, replace(ner_config, learning_rate=5e-4), overwrite=False)
    claim_work_dir(work_dir, replace(ner_config, learning_rate=5e-4), overwrite=True)
    assert not (work_dir / "backup").exists()
    key = json.loads((work_dir / "run_key.json").read_text())
    del key["data_sha256"]  # as an earlier tfft wrote it
    (work_dir / "run_key.json").write_text(json.dumps(key))
    with pytest.raises(ConfigError, match=r"started by an earlier tfft, which recorded no digest of its data"):
        claim_work_dir(work_dir, replace(ner_config, learning_rate=5e-4), overwrite=False)


def test_two_processes_cannot_write_one_run_directory(tmp_path):
    from tfft.errors import ConfigError
    from tfft.training.lifecycle import run_lock

    with run_lock(tmp_path / "run"):
        with pytest.raises(ConfigError, match=r"being written by another tfft process"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released
        pass
    assert list(tmp_path.iterdir()) == []


def test_history_is_read_by_epoch_when_a_resumed_epoch_was_logged_twice(tmp_path):
    from tfft.training.fit import read_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_f1\n0,1.0,0.1\n1,0.8,0.3\n1,0.7,0.4\n2,0.5,0.5\n")
    assert read_history(path) == {"loss": [1.0, 0.7, 0.5], "val_f1": [0.1, 0.4, 0.5]}


def test_best_checkpoint_record_always_names_weights_of_its_epoch(tiny_model_dir, tmp_path):
    labels = LabelMap(["O", "B-X", "I-X"])
    model = build_model("token-classification", labels, str(tiny_model_dir))
    model(model.dummy_inputs)
    checkpoint = BestWeightsCheckpoint(tmp_path / "best.h5", monitor="val_f1")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_f1": 0.5})
    saved = [w.copy() for w in model.get_weights()]
    # Killed after writing a better epoch's weights but before its record: the record still names epoch 1's.
    model.set_weights([w + 1 for w in saved])
    model.save_weights(str(tmp_path / "best-epoch2.h5"))
    resumed = BestWeightsCheckpoint(tmp_path / "best.h5", monitor="val_f1")
    resumed.set_model(model)
    assert resumed.restore() == 0 and resumed.best == 0.5
    for restored, expected in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(restored, expected)
    BestWeightsCheckpoint.discard(tmp_path / "best.h5")
    assert list(tmp_path.iterdir()) == []


def test_document_context_trains_evaluates_and_predicts_from_the_cli(tiny_model_dir, tmp_path, capsys):
    from tfft.evaluation import evaluate_run

    config = TrainConfig(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
                         validation=str(SAMPLE_DATA / "ner_valid.txt"), model=str(tiny_model_dir),
                         output_dir=str(tmp_path / "run"), epochs=1, batch_size=16, max_train_examples=64,
                         max_validation_examples=32, context_window=16, tensorboard=False)
    result = train(config)
    assert evaluate_run(result.run_dir, config.validation).scores["f1"] == pytest.approx(result.best_scores["val_f1"])
    lines = tmp_path / "document.txt"
    lines.write_text("Anna flew to Tokyo .\nShe met Acme Corp there .\n", encoding="utf-8")
    capsys.readouterr()
    scores = {}
    for context in ("sentence", "document"):
        assert main(["predict", str(result.run_dir), "--input", str(lines), "--context", context, "--words"]) == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [len(p["words"]) for p in printed] == [5, 6]
        scores[context] = [w["score"] for p in printed for w in p["words"]]
    assert scores["sentence"] != scores["document"]  # the neighbouring line was seen as context

    # The SavedModel tags each text alone: the export says so in its card and warns.
    assert main(["export", str(result.run_dir), "--name", "ner", "--export-dir", str(tmp_path / "exports")]) == 0
    assert "trained with --context-window 16" in capsys.readouterr().err
    card = json.loads((tmp_path / "exports" / "ner" / "1" / "assets" / "model_card.json").read_text())
    assert (card["context_window"], card["served_context"]) == (16, "sentence")


def test_gradient_accumulation_trains_from_the_cli_with_the_schedule_in_updates(ner_config, capsys):
    from tfft.training.data import prepare_data
    from tfft.training.model import create_model

    config = replace(ner_config, gradient_accumulation_steps=2)
    assert main(["train", "--config", write_config(config), "--no-tensorboard"]) == 0
    history = json.loads((config.run_dir / "history.json").read_text())
    assert len(history["val_f1"]) == 2 and all(0 <= f <= 1 for f in history["val_f1"])
    # A step takes 2 micro-batches of 16 (the same length bucket); the schedule counts those steps.
    data = prepare_data(replace(config))
    dataset, steps = data.train_dataset(config, Cluster.current())
    rows = [int(features["input_ids"].shape[0]) for features, _ in dataset]
    assert len(rows) == steps and max(rows) == 32 and sum(rows) == 64
    assert steps < data.train_dataset(replace(config, gradient_accumulation_steps=1), Cluster.current())[1]
    schedule = create_model(config, data.label_map, steps).optimizer.get_config()["learning_rate"]["config"]
    assert schedule["total_steps"] == steps * config.epochs


def test_fp16_trains_with_loss_scaling_and_exports_in_float32(ner_config):
    from tfft.run_dir import load_run

    result = train(replace(ner_config, precision="fp16"))
    assert all(np.isfinite(result.history["loss"])) and 0 <= result.best_scores["val_f1"] <= 1
    _, model, _ = load_run(result.run_dir)
    assert model.compute_dtype == "float16" and model.dtype == "float32"  # float32 weights
    _, exported, _ = load_run(result.run_dir, precision="fp32")
    assert exported.compute_dtype == "float32"


def scripted_validation(monkeypatch, scores):
    """Every ValidationMetrics reports ``scores[epoch]`` as val_f1 (a resumed fit's new one too)."""
    from tfft.training.callbacks import ValidationMetrics

    def on_epoch_end(self, epoch, logs=None):
        self.last_scores = {"f1": scores[epoch]}
        logs.update(val_f1=scores[epoch])

    monkeypatch.setattr(ValidationMetrics, "on_epoch_end", on_epoch_end)


def test_a_resumed_fit_stops_early_at_the_epoch_of_an_uninterrupted_one(ner_config, tmp_path, monkeypatch):
    # Best at epoch 2; epochs 3 and 4 exhaust a patience of 2. A resume after epoch 3 must keep
    # that best and the one epoch already waited, not start counting again.
    scripted_validation(monkeypatch, [0.5, 0.6, 0.55, 0.58, 0.59, 0.9])
    data = prepare_data(replace(ner_config, epochs=6, patience=2))
    config = data.config
    _, whole_best, whole = fit_model(config, data, tmp_path / "whole", cluster=Cluster.current())
    assert len(whole["val_f1"]) == 4
    resumed_epochs, best_epoch, history = interrupted_and_resumed(config, data, tmp_path / "work", 3)
    assert resumed_epochs == [3]
    assert history["val_f1"] == whole["val_f1"] and best_epoch == whole_best == 1


def test_a_data_file_edited_after_a_kill_is_not_resumed(ner_config, tmp_path, capsys, monkeypatch):
    import shutil

    from tfft.training import trainer

    train_file = tmp_path / "train.txt"
    shutil.copy(SAMPLE_DATA / "ner_train.txt", train_file)
    config_file = write_config(replace(ner_config, train=str(train_file), epochs=1))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill")

    with monkeypatch.context() as patched:
        patched.setattr(trainer, "fit_model", killed)
        assert main(["train", "--config", config_file]) == 130
    work_dir = work_dir_of(ner_config.run_dir)
    assert (work_dir / "run_key.json").is_file()
    lines = train_file.read_text().splitlines(keepends=True)
    train_file.write_text("".join(lines[:3] + lines[3:][::-1]))  # same size, other rows
    key_before = (work_dir / "run_key.json").read_text()
    capsys.readouterr()
    assert main(["train", "--config", config_file]) == 2
    error = capsys.readouterr().err
    assert f"{train_file} changed since the unfinished run in {work_dir} started" in error
    assert "--overwrite" in error
    assert (work_dir / "run_key.json").read_text() == key_before and not ner_config.run_dir.exists()
    assert main(["train", "--config", config_file, "--overwrite"]) == 0
    assert ner_config.run_dir.is_dir() and not work_dir.exists()


class TrainableWeights(keras.callbacks.Callback):
    """The trainable weights after every epoch's last step (before any callback after it changes them)."""

    def __init__(self):
        super().__init__()
        self.after_step, self.by_epoch = None, {}

    def on_train_batch_end(self, batch, logs=None):
        self.after_step = [variable.numpy() for variable in self.model.trainable_variables]

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch[epoch] = self.after_step


def assert_weights_equal(model, expected):
    for variable, value in zip(model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("average_epochs", [1, 3])
def test_the_final_model_is_the_mean_of_the_last_epochs_weights(ner_config, tmp_path, monkeypatch, average_epochs):
    scripted_validation(monkeypatch, [0.5, 0.6, 0.7])  # the last epoch is the best: the run keeps it
    data = prepare_data(replace(ner_config, epochs=3, average_epochs=average_epochs))
    weights = TrainableWeights()
    model, best_epoch, _ = fit_model(data.config, data, tmp_path / "work", cluster=Cluster.current(),
                                     extra_callbacks=[weights])
    assert best_epoch == 2
    kept = [weights.by_epoch[epoch] for epoch in range(3 - average_epochs, 3)]
    assert_weights_equal(model, [np.mean(values, axis=0) for values in zip(*kept)])
    if average_epochs > 1:  # and it is not simply the last epoch's weights
        assert not np.allclose(model.trainable_variables[0].numpy(), weights.by_epoch[2][0])


def test_a_fit_resumed_at_its_last_epoch_averages_the_epoch_it_did_not_rerun(ner_config, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.5, 0.6, 0.7])
    data = prepare_data(replace(ner_config, epochs=3, average_epochs=2))
    first = TrainableWeights()
    with pytest.raises(KeyboardInterrupt):
        fit_model(data.config, data, tmp_path / "work", cluster=Cluster.current(),
                  extra_callbacks=[first, InterruptAt(2)])
    resumed = TrainableWeights()
    model, _, _ = fit_model(data.config, data, tmp_path / "work", cluster=Cluster.current(),
                            extra_callbacks=[resumed])
    assert sorted(resumed.by_epoch) == [2]  # epoch 2 (index 1) was only in the interrupted process
    assert_weights_equal(model, [(a + b) / 2 for a, b in zip(first.by_epoch[1], resumed.by_epoch[2])])
