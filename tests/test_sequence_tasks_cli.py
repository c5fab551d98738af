"""Multi-label classification, regression and imbalanced classes through the user's path: ``tfft train``,
``evaluate``, ``predict`` (run directory, SavedModel, TFLite), ``tune``, LoRA, and refused bad input."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tfft.cli import main

ML = "multi-label-classification"
REG = "regression"

WORDS = ["the", "film", "is", "good", "bad", "anna", "flew", "to", "tokyo", "paris", "acme", "corp", "berlin",
         "met", "in", "on", "monday"]
# A text's labels (multi-label) and its score (regression) follow from the words it holds.
CUES = {"place": ("tokyo", "paris", "berlin"), "firm": ("acme", "corp"), "mood": ("good", "bad")}


def labels_of(words):
    return sorted(label for label, cues in CUES.items() if any(word in words for word in cues))


def write_sets(directory: Path, count: int = 160) -> dict:
    """Multi-label TSV (a label list column), regression TSV of text pairs, and a skewed sentiment TSV."""
    rng = random.Random(7)
    multi, pairs, skewed = ["text\tlabels"], ["first\tsecond\tscore"], ["sentence\tlabel"]
    for i in range(count):
        words = rng.sample(WORDS, 4)
        other = rng.sample(WORDS, 4)
        multi.append(" ".join(words) + "\t" + ",".join(labels_of(words)))
        # The score counts the first text's kinds of cue, from 20 to 35 (the second text is a distraction).
        pairs.append(f"{' '.join(words)}\t{' '.join(other)}\t{20 + 5 * len(labels_of(words)):.1f}")
        if i % 5 == 0 or "good" not in words:
            skewed.append(" ".join(words) + "\t" + ("pos" if "good" in words else "neg"))
    paths = {}
    for name, lines in (("multi", multi), ("pairs", pairs), ("skewed", skewed)):
        paths[name] = directory / f"{name}.tsv"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """One run of each task, trained through the CLI on the tiny model."""
    root = tmp_path_factory.mktemp("sequence-tasks")
    paths = write_sets(root)
    common = ["--model", str(tiny_model_dir), "--learning-rate", "1e-2", "--no-tensorboard", "--seed", "3"]
    out = {"root": root, "paths": paths}
    commands = {
        "multi": ["--task", ML, "--train", str(paths["multi"]), "--validation", str(paths["multi"]),
                  "--label-column", "labels", "--epochs", "6"],
        "pairs": ["--task", REG, "--train", str(paths["pairs"]), "--validation", str(paths["pairs"]),
                  "--text-column", "first", "--text-pair-column", "second", "--label-column", "score", "--epochs", "6"],
        "skewed": ["--task", "sequence-classification", "--train", str(paths["skewed"]), "--validation",
                   str(paths["skewed"]), "--class-weight", "balanced", "--epochs", "2"],
    }
    for name, args in commands.items():
        out[name] = root / "runs" / name
        assert main(["train", *args, *common, "--output-dir", str(out[name])]) == 0
    return out


def texts_of(path: Path, column: int = 0):
    return [line.split("\t")[column] for line in path.read_text(encoding="utf-8").splitlines()[1:41]]


def test_multi_label_thresholds_are_tuned_on_validation_saved_with_the_model_and_reported(runs):
    config = json.loads((runs["multi"] / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    thresholds = config["tfft_thresholds"]
    report = json.loads((runs["multi"] / "reports" / "validation.json").read_text())
    labels = report["labels"]
    assert labels == ["firm", "mood", "place"]
    assert [report["per_class"][label]["threshold"] for label in labels] == pytest.approx(thresholds)
    metrics = json.loads((runs["multi"] / "metrics.json").read_text())
    assert metrics["monitor"] == "val_micro_f1"
    # The saved model at its saved thresholds scores what the best epoch logged.
    assert report["scores"]["micro_f1"] == pytest.approx(metrics["best"]["val_micro_f1"], abs=1e-6)
    assert report["scores"]["micro_f1"] > 0.5
    # The rule was chosen for the monitored micro-F1 by 5-fold cross-validation, 0.5 and global among the candidates.
    rule = report["decision_rule"]
    assert rule["chosen_for"] == "micro_f1" and rule["folds"] == 5 and rule["name"] == config["tfft_decision_rule"]
    assert rule["at_least_one"] is config["tfft_at_least_one"] is False  # some training texts have no label
    chosen = rule["held_out"][rule["name"]]["micro_f1"]
    assert chosen >= rule["held_out"]["fixed"]["micro_f1"] and "global" in rule["held_out"]
    text = (runs["multi"] / "reports" / "validation.txt").read_text()
    assert "Decision rule chosen for micro_f1" in text and "0.5" in text and "global threshold" in text
    png = runs["multi"] / "reports" / "validation_label_f1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", str(runs["multi"]), "--data", str(runs["paths"]["multi"])]) == 0
    again = json.loads((runs["multi"] / "reports" / "multi.json").read_text())
    assert again["scores"] == pytest.approx(report["scores"])


def outputs_and_labels(results, key="labels"):
    return [list(r["probabilities"].values()) for r in results], [r[key] for r in results]


def same_labels_away_from_thresholds(reference, other, thresholds, labels, margin):
    """Labels agree wherever the reference probability is not within ``margin`` of the threshold."""
    probabilities, chosen = outputs_and_labels(reference)
    _, other_chosen = outputs_and_labels(other)
    for row, mine, theirs in zip(probabilities, chosen, other_chosen):
        for label, p, t in zip(labels, row, thresholds):
            if abs(p - t) > margin:
                assert (label in mine) == (label in theirs) == (p >= t)


def test_multi_label_predictions_agree_between_the_run_the_saved_model_and_tflite(runs, tmp_path, capsys):
    from tfft.export.predictor import SavedModelPredictor
    from tfft.export.tflite_predictor import TFLitePredictor
    from tfft.prediction import Predictor

    texts = texts_of(runs["paths"]["multi"])
    predictor = Predictor.from_run_dir(runs["multi"])
    thresholds = json.loads((runs["multi"] / "model" / "config.json").read_text())["tfft_thresholds"]
    assert predictor.thresholds == pytest.approx(thresholds)
    from_run = predictor.predict(texts)
    labels = list(from_run[0]["probabilities"])
    for result in from_run:  # the labels are those at or above their threshold (printed probabilities are rounded)
        for label, threshold in zip(labels, thresholds):
            if abs(result["probabilities"][label] - threshold) > 1e-6:
                assert (label in result["labels"]) == (result["probabilities"][label] >= threshold)
    assert len({tuple(r["labels"]) for r in from_run}) > 2  # the texts get different label sets

    assert main(["export", str(runs["multi"]), "--name", "multi", "--export-dir", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "multi" / "1" / "assets" / "model_card.json").read_text())
    assert list(card["thresholds"].values()) == pytest.approx(thresholds)
    served = SavedModelPredictor(tmp_path / "multi" / "1").predict(texts)
    np.testing.assert_allclose(outputs_and_labels(served)[0], outputs_and_labels(from_run)[0], atol=1e-5)
    same_labels_away_from_thresholds(from_run, served, thresholds, labels, margin=1e-4)

    assert main(["export", str(runs["multi"]), "--name", "multi", "--export-dir", str(tmp_path), "--format", "tflite",
                 "--quantize", "float16"]) == 0
    lite = TFLitePredictor.from_file(tmp_path / "multi" / "tflite" / "model-float16.tflite").predict(texts)
    np.testing.assert_allclose(outputs_and_labels(lite)[0], outputs_and_labels(from_run)[0], atol=2e-2)
    same_labels_away_from_thresholds(from_run, lite, thresholds, labels, margin=2e-2)

    (tmp_path / "in.txt").write_text("\n".join(texts[:3]) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(runs["multi"]), "--input", str(tmp_path / "in.txt")]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["labels"] for r in printed] == [r["labels"] for r in from_run[:3]]
    assert set(printed[0]["probabilities"]) == set(labels)


def test_regression_on_text_pairs_predicts_in_target_units_on_every_path(runs, tmp_path, capsys):
    from tfft.export.predictor import SavedModelPredictor
    from tfft.export.tflite_predictor import TFLitePredictor
    from tfft.prediction import Predictor

    path = runs["paths"]["pairs"]
    targets = np.asarray([float(line.split("\t")[2]) for line in path.read_text().splitlines()[1:]])
    config = json.loads((runs["pairs"] / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    assert config["tfft_target_scale"] == pytest.approx([targets.mean(), targets.std()], rel=1e-5)
    report = json.loads((runs["pairs"] / "reports" / "validation.json").read_text())
    assert set(report["scores"]) == {"pearson", "spearman", "rmse", "mae", "loss"}
    assert report["scores"]["pearson"] > 0.3
    assert json.loads((runs["pairs"] / "metrics.json").read_text())["monitor"] == "val_pearson"
    assert (runs["pairs"] / "reports" / "validation_scatter.png").stat().st_size > 1000

    firsts, seconds = texts_of(path, 0), texts_of(path, 1)
    from_run = [r["value"] for r in Predictor.from_run_dir(runs["pairs"]).predict(firsts, seconds)]
    # Values in the targets' units (20 to 35 here), not in the normalised units the model trained in.
    assert 15 < np.mean(from_run) < 35 and np.std(from_run) > 0
    assert main(["export", str(runs["pairs"]), "--name", "pairs", "--export-dir", str(tmp_path)]) == 0
    served = SavedModelPredictor(tmp_path / "pairs" / "1").predict(firsts, seconds)
    np.testing.assert_allclose([r["value"] for r in served], from_run, atol=1e-4)
    assert main(["export", str(runs["pairs"]), "--name", "pairs", "--export-dir", str(tmp_path), "--format", "tflite",
                 "--quantize", "float16"]) == 0
    lite = TFLitePredictor.from_file(tmp_path / "pairs" / "tflite" / "model-float16.tflite").predict(firsts, seconds)
    np.testing.assert_allclose([r["value"] for r in lite], from_run, atol=0.05)

    (tmp_path / "in.txt").write_text(f"{firsts[0]}\t{seconds[0]}\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(runs["pairs"]), "--input", str(tmp_path / "in.txt"), "--pair-separator", "\t"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(from_run[0], abs=1e-5)


def test_skewed_classes_are_weighted_monitored_by_macro_f1_and_reported_by_row(runs):
    from tfft.config import TrainConfig

    config = TrainConfig.load(runs["skewed"] / "config.yaml")
    assert (config.monitor, config.class_weight) == ("val_macro_f1", "balanced")
    text = (runs["skewed"] / "reports" / "validation.txt").read_text()
    assert "Confusion matrix normalised by row" in text
    report = json.loads((runs["skewed"] / "reports" / "validation.json").read_text())
    matrix = np.asarray(report["confusion_matrix"])
    recall = report["per_class"]["pos"]["recall"]
    # The row-normalised diagonal is each class's recall.
    assert f"{matrix[1, 1] / matrix[1].sum():.3f}" in text and recall == pytest.approx(matrix[1, 1] / matrix[1].sum())


def test_lora_keeps_a_regression_models_target_scale(runs, tiny_model_dir, tmp_path):
    from tfft.export.predictor import SavedModelPredictor
    from tfft.prediction import Predictor

    path = runs["paths"]["pairs"]
    run = tmp_path / "lora"
    assert main(["train", "--task", REG, "--train", str(path), "--text-column", "first", "--text-pair-column", "second",
                 "--label-column", "score", "--model", str(tiny_model_dir), "--lora-rank", "2", "--epochs", "1",
                 "--max-train-examples", "64", "--no-tensorboard", "--output-dir", str(run)]) == 0
    predictor = Predictor.from_run_dir(run)
    targets = [float(line.split("\t")[2]) for line in path.read_text().splitlines()[1:65]]
    assert list(predictor.model.config.tfft_target_scale) == pytest.approx([np.mean(targets), np.std(targets)], rel=1e-5)
    firsts, seconds = texts_of(path, 0)[:8], texts_of(path, 1)[:8]
    values = [r["value"] for r in predictor.predict(firsts, seconds)]
    assert 15 < np.mean(values) < 35
    assert main(["export", str(run), "--name", "lora", "--export-dir", str(tmp_path)]) == 0
    served = SavedModelPredictor(tmp_path / "lora" / "1").predict(firsts, seconds)
    np.testing.assert_allclose([r["value"] for r in served], values, atol=1e-4)


def test_a_regression_search_maximises_pearson_and_writes_a_best_run_in_target_units(runs, tiny_model_dir, tmp_path):
    from tfft.prediction import Predictor

    path = runs["paths"]["pairs"]
    out = tmp_path / "tune"
    assert main(["tune", "--task", REG, "--train", str(path), "--validation", str(path), "--text-column", "first",
                 "--text-pair-column", "second", "--label-column", "score", "--model", str(tiny_model_dir),
                 "--epochs", "1", "--max-train-examples", "64", "--no-tensorboard", "--max-trials", "2",
                 "--output-dir", str(out)]) == 0
    trials = json.loads((out / "trials.json").read_text())
    assert (trials["objective"], trials["direction"]) == ("val_pearson", "max")
    values = [r["value"] for r in Predictor.from_run_dir(out / "best").predict(texts_of(path, 0)[:8],
                                                                                 texts_of(path, 1)[:8])]
    assert 15 < np.mean(values) < 35


@pytest.mark.parametrize("case", ["fraction-in-flag-column", "unknown-label", "text-target", "no-labels",
                                  "weight-on-regression"])
def test_bad_input_is_refused_before_training_naming_the_file_and_line(case, tiny_model_dir, tmp_path, capsys):
    train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
    options = []
    if case == "fraction-in-flag-column":
        train.write_text("text\tjoy\tanger\nthe film\t1\t0\nis good\t0.5\t1\n")
        valid.write_text(train.read_text())
        options = ["--task", ML, "--label-columns", "joy,anger"]
        expected = "train.tsv:3: label column 'joy' must hold 0 or 1"
    elif case == "unknown-label":
        train.write_text("text\tlabel\nthe film\tjoy\nis good\tanger,joy\n")
        valid.write_text("text\tlabel\nthe film\tjoy\nis good\trage\n")
        options = ["--task", ML]
        expected = "valid.tsv:3: label 'rage' was not seen in the training data"
    elif case == "text-target":
        train.write_text("text\tlabel\nthe film\t1.5\nis good\tvery\n")
        valid.write_text(train.read_text())
        options = ["--task", REG]
        expected = "train.tsv:3: regression target 'very' is not a number"
    elif case == "no-labels":
        train.write_text("text\tlabel\nthe film\t\nis good\t\n")
        valid.write_text(train.read_text())
        options = ["--task", ML]
        expected = "every example's label set is empty"
    else:
        train.write_text("text\tlabel\nthe film\t1.5\nis good\t2\n")
        valid.write_text(train.read_text())
        options = ["--task", REG, "--class-weight", "balanced"]
        expected = "The 'class_weight' option is for sequence-classification and multi-label-classification"
    run = tmp_path / "run"
    assert main(["train", "--train", str(train), "--validation", str(valid), "--model", str(tiny_model_dir),
                 "--output-dir", str(run), *options]) == 2
    assert expected in capsys.readouterr().err
    assert not run.exists() and not (tmp_path / ".run.partial").exists()


def test_predict_and_the_saved_model_serve_the_recorded_rule_and_old_runs_their_thresholds(runs, tmp_path, capsys):
    import shutil

    from tfft.export.predictor import SavedModelPredictor
    from tfft.export.tflite_predictor import TFLitePredictor
    from tfft.prediction import Predictor

    texts = texts_of(runs["paths"]["multi"])

    def with_rule(name, **entries):
        """A copy of the run whose model config holds thresholds no probability reaches, and ``entries``."""
        run = shutil.copytree(runs["multi"], tmp_path / name)
        path = run / "model" / "config.json"
        config = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("tfft_at_least_one",
                                                                                    "tfft_decision_rule")}
        path.write_text(json.dumps({**config, "tfft_thresholds": [1.5, 1.5, 1.5], **entries}))
        return run

    at_least_one = with_rule("at-least-one", tfft_at_least_one=True, tfft_decision_rule="fixed")
    results = Predictor.from_run_dir(at_least_one).predict(texts)
    top = [[max(r["probabilities"], key=r["probabilities"].get)] for r in results]
    assert [r["labels"] for r in results] == top  # no threshold passed: each text its most probable label
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(at_least_one), "--input", str(tmp_path / "in.txt")]) == 0
    assert [json.loads(line)["labels"] for line in capsys.readouterr().out.splitlines()] == top
    assert main(["export", str(at_least_one), "--name", "one", "--export-dir", str(tmp_path / "export")]) == 0
    card = json.loads((tmp_path / "export" / "one" / "1" / "assets" / "model_card.json").read_text())
    assert card["at_least_one"] is True
    served = SavedModelPredictor(tmp_path / "export" / "one" / "1").predict(texts)
    assert [r["labels"] for r in served] == top
    assert main(["export", str(at_least_one), "--name", "one", "--export-dir", str(tmp_path / "export"),
                 "--format", "tflite", "--quantize", "float16"]) == 0
    lite = TFLitePredictor.from_file(tmp_path / "export" / "one" / "tflite" / "model-float16.tflite").predict(texts)
    assert [r["labels"] for r in lite] == [[max(r["probabilities"], key=r["probabilities"].get)] for r in lite]

    old = with_rule("old")  # a run from before the rule was recorded: its thresholds alone decide
    assert all(r["labels"] == [] for r in Predictor.from_run_dir(old).predict(texts))
