"""Multi-label classification, regression and class weights: readers, labels, options, metrics, losses
and the training step, on hand-made inputs with the numbers worked out."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tfft.backend import keras, tf
from tfft.config import TrainConfig
from tfft.data import LabelMap, from_texts, read_table
from tfft.errors import ConfigError, DataFormatError
from tfft.features import text_targets
from tfft.metrics import (
    DecisionRule, best_f1_threshold, choose_decision_rule, decide, decision_metric_for, global_threshold,
    joint_thresholds, multi_label_scores, regression_scores, shrunk_thresholds,
)
from tfft.training.losses import (BinaryCrossEntropy, CrossEntropy, RegressionLoss, class_weights, target_scale,
                                  task_loss)

ML = "multi-label-classification"
REG = "regression"
SEQ = "sequence-classification"


# --- reading labels -----------------------------------------------------------------------------------------

def test_a_label_list_column_gives_sorted_label_sets_and_an_empty_cell_no_label(tmp_path):
    path = tmp_path / "tickets.tsv"
    path.write_text("text\tlabels\nbilling and login\tlogin, billing\nthanks\t\ncrash\tbug,bug\n", encoding="utf-8")
    examples = read_table(path, label_column="labels", task=ML)
    assert [e.label for e in examples] == [("billing", "login"), (), ("bug",)]
    assert LabelMap.from_label_sets(examples).labels == ("billing", "bug", "login")


def test_label_lists_take_another_separator_and_json_lists(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("text\tlabel\nx\tjoy|anger\n", encoding="utf-8")
    assert read_table(tsv, task=ML, label_separator="|")[0].label == ("anger", "joy")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "x", "label": ["joy", 3]}\n{"text": "y", "label": []}\n', encoding="utf-8")
    assert [e.label for e in read_table(jsonl, task=ML)] == [("3", "joy"), ()]


def test_one_zero_one_column_per_label(tmp_path):
    path = tmp_path / "toxic.csv"
    path.write_text("text,toxic,insult,threat\nyou fool,1,1,0\nhello,0,0,0\nor else,true,false,1\n", encoding="utf-8")
    examples = read_table(path, task=ML, label_columns=["toxic", "insult", "threat"])
    assert [e.label for e in examples] == [("insult", "toxic"), (), ("threat", "toxic")]
    # The columns' order is the labels' order (what a user of these columns expects in outputs).
    assert LabelMap.from_label_sets(examples, ["toxic", "insult", "threat"]).labels == ("toxic", "insult", "threat")


def test_a_score_in_a_zero_one_label_column_is_refused_naming_file_line_and_column(tmp_path):
    path = tmp_path / "toxic.csv"
    path.write_text("text,toxic\nyou fool,1\nhello,0.5\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"toxic.csv:3: label column 'toxic' must hold 0 or 1 .*got '0.5'"):
        read_table(path, task=ML, label_columns=["toxic"])


def test_a_fraction_in_a_label_list_is_refused(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("text\tlabel\nx\tjoy\ny\t0.7\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"a.tsv:3: label '0.7' is a number with a fraction"):
        read_table(path, task=ML)


def test_labels_nobody_has_and_all_empty_label_sets_are_refused():
    with pytest.raises(DataFormatError, match="every example's label set is empty"):
        LabelMap.from_label_sets(from_texts(["a", "b"], [[], ""], task=ML))
    examples = from_texts(["a", "b"], [["x"], []], task=ML)
    with pytest.raises(DataFormatError, match=r"label column\(s\) 'y' are never 1 in the training data"):
        LabelMap.from_label_sets(examples, ["x", "y"])


def test_a_validation_label_list_naming_an_unknown_label_is_refused_with_its_line(tmp_path):
    path = tmp_path / "valid.tsv"
    path.write_text("text\tlabel\nx\tjoy\ny\tjoy,rage\n", encoding="utf-8")
    labels = LabelMap(["anger", "joy"])
    with pytest.raises(DataFormatError, match=r"valid.tsv:3: label 'rage' was not seen in the training data"):
        labels.check(read_table(path, task=ML))


def test_regression_targets_are_floats_and_text_or_missing_targets_are_refused(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("sentence1\tsentence2\tscore\na\tb\t4.25\nc\td\t-1e-1\n", encoding="utf-8")
    examples = read_table(path, text_column="sentence1", text_pair_column="sentence2", label_column="score", task=REG)
    assert [(e.text_pair, e.label) for e in examples] == [("b", 4.25), ("d", -0.1)]
    for bad, reason in (("high", "is not a number"), ("", "missing or non-numeric"), ("nan", "not a finite number")):
        path.write_text(f"sentence1\tsentence2\tscore\na\tb\t1\nc\td\t{bad}\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=rf"sts.tsv:3: .*{reason}"):
            read_table(path, text_column="sentence1", text_pair_column="sentence2", label_column="score", task=REG)


def test_targets_per_task_have_the_shapes_the_heads_train_on():
    labels = LabelMap(["a", "b", "c"])
    multi = text_targets(from_texts(["x", "y"], [["c", "a"], []], task=ML), labels)
    np.testing.assert_array_equal(multi, [[1, 0, 1], [0, 0, 0]])
    assert multi.dtype == np.float32
    values = text_targets(from_texts(["x", "y"], [2.5, 1], task=REG), LabelMap.for_target("score"))
    assert values.dtype == np.float32 and values.tolist() == [2.5, 1.0]
    assert text_targets(from_texts(["x", "y"], ["c", "a"]), labels).tolist() == [2, 0]


# --- options ------------------------------------------------------------------------------------------------

def test_task_options_are_refused_on_other_tasks_and_class_weight_maps_parse():
    with pytest.raises(ConfigError, match="The 'loss' option is for regression, not sequence-classification"):
        TrainConfig(task=SEQ, train="x", loss="huber").validate()
    with pytest.raises(ConfigError, match="'label_columns' option is for multi-label-classification"):
        TrainConfig(task=SEQ, train="x", label_columns="a,b").validate()
    with pytest.raises(ConfigError, match="weights > 0"):
        TrainConfig(task=SEQ, train="x", class_weight="neg=0").validate()
    config = TrainConfig.from_dict({"task": SEQ, "train": "x", "class_weight": {"neg": 1, "pos": 4}})
    assert config.class_weight == "neg=1,pos=4"
    assert TrainConfig(task=REG, train="x").validate().normalize_targets is True
    assert TrainConfig(task=REG, train="x", monitor="val_rmse").monitor_mode == "min"
    assert TrainConfig(task=ML, train="x").monitor_metric == "val_micro_f1"


def test_skewed_classes_make_macro_f1_the_monitor_unless_one_is_given():
    config = TrainConfig(task=SEQ, train="x", validation="v")
    assert config.monitor_for({"neg": 100, "pos": 40}) == ({}, []) and config.monitor_metric == "val_accuracy"
    chosen, (why,) = config.monitor_for({"neg": 100, "pos": 25})
    assert chosen == {"monitor": "val_macro_f1"} and "skewed (4.0 times more" in why
    assert config.monitor is None  # left as it is: prepare_data resolves a copy
    given = TrainConfig(task=SEQ, train="x", validation="v", monitor="val_accuracy")
    assert given.monitor_for({"neg": 100, "pos": 1}) == ({}, []) and given.monitor_metric == "val_accuracy"


# --- metrics ------------------------------------------------------------------------------------------------

def test_the_f1_threshold_cuts_between_ranked_probabilities_without_splitting_ties():
    probabilities = np.array([0.9, 0.8, 0.6, 0.6, 0.3, 0.1], np.float32)
    truth = np.array([1, 0, 1, 1, 0, 1], np.float32)
    # top-k F1: k=1 2/5, k=2 2/6, k=4 (both 0.6) 6/8, k=5 6/9, k=6 8/10: best is all six
    assert best_f1_threshold(probabilities, truth) == pytest.approx(np.float32(0.05))
    truth = np.array([1, 0, 1, 1, 0, 0], np.float32)  # now k=4: F1 6/7, cut between 0.6 and 0.3
    assert best_f1_threshold(probabilities, truth) == pytest.approx(np.float32(0.45))


def weak_rare_label():
    """20 texts: label A sure and frequent (10 positives at 0.22, negatives at 0.01), label B rare and weak
    (positives at 0.30 and 0.12, three negatives above 0.12: 0.35, 0.25, 0.20, the others at 0.02)."""
    truth = np.zeros((20, 2), np.float32)
    truth[:10, 0] = 1
    truth[[1, 4], 1] = 1
    probabilities = np.zeros((20, 2), np.float32)
    probabilities[:, 0] = np.where(truth[:, 0] > 0, 0.22, 0.01)
    probabilities[:, 1] = 0.02
    probabilities[[0, 1, 2, 3, 4], 1] = [0.35, 0.30, 0.25, 0.20, 0.12]
    return probabilities, truth


def test_joint_micro_f1_thresholds_do_not_flood_a_weak_rare_label():
    probabilities, truth = weak_rare_label()
    # B's own best F1 takes its 5 most probable texts (F1 4/7 > 2/4 for 2): 3 false positives.
    assert best_f1_threshold(probabilities[:, 1], truth[:, 1]) == pytest.approx(np.float32(0.07))
    # Micro-F1 = 2 TP / (predicted + 12 positives); A alone is perfect (TP 10, predicted 10).
    # B's 5 texts: 24/27 = 0.889; its top 2: 22/24 = 0.917; none: 20/22 = 0.909. Global cut: after 0.12 (0.889).
    assert global_threshold(probabilities, truth) == pytest.approx(np.float32(0.07))
    thresholds = joint_thresholds(probabilities, truth)
    assert thresholds.tolist() == pytest.approx([np.float32(0.07), np.float32(0.275)])
    assert multi_label_scores(truth, probabilities, thresholds)["micro_f1"] == pytest.approx(22 / 24)
    per_label_own_f1 = [best_f1_threshold(probabilities[:, j], truth[:, j]) for j in range(2)]
    assert multi_label_scores(truth, probabilities, np.float32(per_label_own_f1))["micro_f1"] == pytest.approx(24 / 27)
    # Macro-F1 is each label's own F1: B keeps its 5 texts there (4/7 > 2/4).
    assert joint_thresholds(probabilities, truth, "macro_f1")[1] == pytest.approx(np.float32(0.07))


def test_shrinkage_draws_a_rare_labels_threshold_toward_the_global_one():
    probabilities, truth = weak_rare_label()
    # (n t_label + 10 t_global) / (n + 10): A (10 positives) is at the global 0.07 already; B (2 positives)
    # moves from 0.275 to (2 * 0.275 + 10 * 0.07) / 12.
    assert shrunk_thresholds(probabilities, truth, shrinkage=10).tolist() == pytest.approx(
        [0.07, (2 * 0.275 + 10 * 0.07) / 12], rel=1e-5)


def test_at_least_one_label_gives_a_text_no_threshold_selects_its_most_probable_label():
    probabilities = np.array([[0.2, 0.4, 0.1], [0.7, 0.6, 0.1], [0.1, 0.1, 0.1]], np.float32)
    thresholds = [0.5, 0.5, 0.5]
    assert decide(probabilities, thresholds).tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert decide(probabilities, thresholds, at_least_one=True).tolist() == [[0, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert multi_label_scores(np.float32([[0, 1, 0], [1, 0, 0], [0, 0, 1]]), probabilities, thresholds,
                              at_least_one=True)["micro_f1"] == pytest.approx(2 * 2 / (4 + 3))


def one_label_each_text(copies: int = 10):
    """Every text has one label, whose probability is the text's highest but, for label a, below another
    text's false a: no threshold separates a; taking the most probable label does."""
    block_truth = np.float32([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    block = np.float32([[0.30, 0.10, 0.05], [0.35, 0.60, 0.05], [0.05, 0.10, 0.70]])
    return np.tile(block, (copies, 1)), np.tile(block_truth, (copies, 1))


def test_at_least_one_label_is_chosen_when_every_text_has_a_label_and_it_wins_held_out():
    probabilities, truth = one_label_each_text()
    choice = choose_decision_rule(probabilities, truth, "micro_f1", at_least_one=True)
    assert choice.rule.at_least_one and choice.folds == 5
    # 0.5, then the most probable label: every text right
    assert choice.rule.name == "fixed" and choice.held_out["fixed+at-least-one"]["micro_f1"] == 1.0
    assert choice.held_out["fixed"]["micro_f1"] == pytest.approx(2 * 20 / (20 + 30))  # b and c found, a never
    assert max(v["micro_f1"] for k, v in choice.held_out.items() if "at-least-one" not in k) < 1.0
    assert not choose_decision_rule(probabilities, truth, "micro_f1", at_least_one=False).rule.at_least_one


def test_the_rule_falls_back_to_0_5_when_tuning_only_fits_the_examples_it_is_tuned_on():
    rng = np.random.default_rng(1)
    truth = np.zeros((200, 2), np.float32)
    truth[:100, 0] = 1  # a frequent label the model gets right at 0.5
    truth[rng.choice(200, 10, replace=False), 1] = 1  # a rare one whose probabilities are noise below 0.5
    probabilities = np.stack([np.where(truth[:, 0] > 0, 0.9, 0.1), rng.uniform(0, 0.45, 200)], 1).astype(np.float32)
    # Tuned on all 200 texts, each rule beats 0.5 there (on noise) ...
    assert best_f1_threshold(probabilities[:, 1], truth[:, 1]) < 0.45
    fixed = multi_label_scores(truth, probabilities, [0.5, 0.5])["micro_f1"]
    assert multi_label_scores(truth, probabilities, joint_thresholds(probabilities, truth))["micro_f1"] > fixed
    # ... but not on the folds it was not tuned on: 0.5 is kept.
    choice = choose_decision_rule(probabilities, truth)
    assert choice.held_out["fixed"]["micro_f1"] == pytest.approx(fixed)
    assert all(scores["micro_f1"] < fixed for name, scores in choice.held_out.items() if name != "fixed")
    assert choice.rule == DecisionRule("fixed", (0.5, 0.5), False)


def test_at_least_one_label_is_a_candidate_only_when_every_training_text_has_a_label():
    from tfft.training.data import PreparedData

    def data(targets):
        return PreparedData(None, None, [], None, None, row_lengths=np.ones(len(targets)), targets=np.float32(targets))

    assert data([[1, 0], [0, 1], [1, 1]]).every_text_labelled
    assert not data([[1, 0], [0, 0], [1, 1]]).every_text_labelled
    assert not PreparedData(None, None, [], None, None, row_lengths=np.ones(2), targets=np.int32([0, 1])
                            ).every_text_labelled  # sequence classification: class ids


def test_the_decision_rule_maximises_the_monitored_metric():
    assert decision_metric_for("val_macro_f1") == "macro_f1"
    assert decision_metric_for("val_micro_f1") == decision_metric_for("val_loss") == "micro_f1"
    probabilities, truth = weak_rare_label()
    tiled = np.tile(probabilities, (5, 1)), np.tile(truth, (5, 1))
    micro, macro = (choose_decision_rule(*tiled, metric).rule for metric in ("micro_f1", "macro_f1"))
    assert micro.thresholds[1] == pytest.approx(0.275) and macro.thresholds[1] == pytest.approx(0.07)


def test_multi_label_scores_on_a_worked_example():
    truth = np.array([[1, 0], [1, 1], [0, 0]], np.float32)
    probabilities = np.array([[0.9, 0.6], [0.2, 0.7], [0.1, 0.1]], np.float32)
    scores = multi_label_scores(truth, probabilities, np.array([0.5, 0.5], np.float32))
    # predicted [[1,1],[0,1],[0,0]]: TP 2, FP 1, FN 1 -> micro P = R = F1 = 2/3; per label F1 2/3 and 2/3
    assert scores["micro_f1"] == pytest.approx(2 / 3) and scores["micro_precision"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx(2 / 3)
    expected = -np.mean(truth * np.log(probabilities) + (1 - truth) * np.log(1 - probabilities))
    assert scores["loss"] == pytest.approx(expected, rel=1e-5)


def test_regression_scores_on_a_worked_example():
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([[1.5], [1.5], [3.5], [5.0]])
    scores = regression_scores(targets, predicted)
    assert scores["rmse"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0.25 + 1) / 4))
    assert scores["mae"] == pytest.approx(2.5 / 4)
    assert scores["pearson"] == pytest.approx(np.corrcoef(targets, predicted[:, 0])[0, 1])
    assert scores["spearman"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3, 4])[0, 1])
    assert regression_scores(targets, np.full((4, 1), 2.0))["pearson"] == 0.0  # constant: no correlation


# --- losses -------------------------------------------------------------------------------------------------

def test_class_weighted_cross_entropy_is_the_weighted_mean():
    logits = tf.constant([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = tf.constant([0, 1, 1])
    per_example = -np.log(tf.nn.softmax(logits).numpy()[[0, 1, 2], [0, 1, 1]])
    loss = CrossEntropy([1.0, 3.0])
    expected = (1 * per_example[0] + 3 * per_example[1] + 3 * per_example[2]) / 7
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-6)
    assert float(loss.weight(labels)) == 7.0


def test_label_smoothing_moves_that_share_of_the_target_onto_every_class():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.5, 1.0, 0.0]])
    labels = tf.constant([0, 2])
    log_p = np.log(tf.nn.softmax(logits).numpy())
    targets = np.array([[0.9, 0.0, 0.0], [0.0, 0.0, 0.9]]) + 0.1 / 3
    expected = -np.mean(np.sum(targets * log_p, axis=1))
    assert float(CrossEntropy(label_smoothing=0.1)(labels, logits)) == pytest.approx(expected, rel=1e-6)
    weighted = CrossEntropy([1.0, 1.0, 3.0], label_smoothing=0.1)  # class weights still weigh each position
    per_example = -np.sum(targets * log_p, axis=1)
    assert float(weighted(labels, logits)) == pytest.approx((per_example[0] + 3 * per_example[1]) / 4, rel=1e-6)
    config = TrainConfig(task=SEQ, train="x", label_smoothing=0.1)
    assert task_loss(config, LabelMap(["a", "b", "c"])).label_smoothing == 0.1
    with pytest.raises(ConfigError, match="The 'label_smoothing' option is for token-classification and "
                                          "sequence-classification, not regression"):
        TrainConfig(task=REG, train="x", label_smoothing=0.1).validate()


def test_binary_cross_entropy_weighs_positives_by_pos_weight():
    logits = tf.constant([[2.0, -1.0], [0.5, 0.0]])
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    p = tf.sigmoid(logits).numpy()
    weight = np.array([2.0, 5.0])
    y = labels.numpy()
    expected = -np.mean(weight * y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(BinaryCrossEntropy(weight)(labels, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(BinaryCrossEntropy()(labels, logits)) == pytest.approx(
        -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-5)


def test_regression_losses_compare_with_scaled_targets():
    targets = tf.constant([12.0, 8.0, 10.0])
    outputs = tf.constant([[1.0], [0.0], [-3.0]])  # the model learns (target - 10) / 2
    scaled = np.array([1.0, -1.0, 0.0])
    errors = np.abs(np.array([1.0, 0.0, -3.0]) - scaled)
    assert float(RegressionLoss("mse", 10.0, 2.0)(targets, outputs)) == pytest.approx(np.mean(errors ** 2))
    huber = np.where(errors <= 1, 0.5 * errors ** 2, errors - 0.5)
    assert float(RegressionLoss("huber", 10.0, 2.0)(targets, outputs)) == pytest.approx(np.mean(huber))
    assert target_scale(np.array([8.0, 12.0])) == (10.0, 2.0)
    assert target_scale(np.array([3.0, 3.0])) == (3.0, 1.0)


def test_the_filler_rows_of_a_distributed_epoch_carry_no_loss():
    from tfft.features import IGNORE_INDEX

    logits = tf.constant([[2.0, -1.0], [0.5, 0.0]])
    with_filler = tf.constant([[1.0, 0.0], [np.nan, np.nan]])
    total, weight = BinaryCrossEntropy([2.0, 5.0]).sum_and_weight(with_filler, logits)
    alone, alone_weight = BinaryCrossEntropy([2.0, 5.0]).sum_and_weight(with_filler[:1], logits[:1])
    assert (float(total), float(weight)) == pytest.approx((float(alone), float(alone_weight))) and float(weight) == 2
    targets, outputs = tf.constant([12.0, np.nan]), tf.constant([[1.0], [7.0]])
    assert [float(v) for v in RegressionLoss("huber", 10.0, 2.0).sum_and_weight(targets, outputs)] == [0.0, 1.0]
    assert float(CrossEntropy([1.0, 3.0]).weight(tf.constant([1, IGNORE_INDEX]))) == 3.0


def test_balanced_weights_for_classes_and_for_label_positives():
    labels = LabelMap(["neg", "pos"])
    config = TrainConfig(task=SEQ, train="x", class_weight="balanced")
    np.testing.assert_allclose(class_weights(config, labels, np.array([0, 0, 0, 1], np.int32)), [4 / 6, 4 / 2])
    multi = np.array([[1, 0], [0, 0], [0, 0], [1, 1]], np.float32)
    config = TrainConfig(task=ML, train="x", class_weight="balanced")
    np.testing.assert_allclose(class_weights(config, labels, multi), [2 / 2, 3 / 1])
    with pytest.raises(ConfigError, match="names 'neutral', which is not a label"):
        class_weights(replace(config, class_weight="neutral=2"), labels, multi)


# --- the training step --------------------------------------------------------------------------------------

def tiny_sequence_model(task: str, labels: LabelMap, scale=None):
    from transformers import BertConfig

    from tfft.heads import head_config
    from tfft.models import build_model
    from conftest import TINY_VOCAB

    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    keras.utils.set_random_seed(0)
    return build_model(task, labels, config, head=head_config(task, scale))


def step_batch(task: str):
    """Four rows, the last two padded, and their targets."""
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 30, size=(4, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    ids[2:, 6:], mask[2:, 6:] = 0, 0
    features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    targets = {SEQ: np.array([0, 1, 1, 2], np.int32),
               ML: np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32),
               REG: np.array([3.0, 7.5, 1.0, 4.0], np.float32)}[task]
    return features, targets


STEP_CASES = [(SEQ, dict(class_weight="a=1,b=3,c=0.5")), (ML, dict(class_weight="balanced")),
              (REG, dict(loss="huber"))]


def one_sgd_step(task: str, options: dict, micro_batches: int):
    """The weights after one SGD update (whose size follows the gradient's, unlike Adam's first step)."""
    from tfft.training import compile_model

    features, targets = step_batch(task)
    labels = LabelMap.for_target("score") if task == REG else LabelMap(["a", "b", "c"])
    config = TrainConfig(task=task, train="x", learning_rate=1e-2, warmup_fraction=0.0, epochs=1, batch_size=4,
                         gradient_accumulation_steps=micro_batches, **options).validate()
    model = tiny_sequence_model(task, labels, target_scale(targets) if task == REG else None)
    compile_model(model, config, steps_per_epoch=1, targets=targets, optimizer=keras.optimizers.SGD(learning_rate=1.0))
    history = model.fit(tf.data.Dataset.from_tensors((features, targets)), epochs=1, verbose=0).history
    return model, history["loss"][0]


@pytest.mark.parametrize("task,options", STEP_CASES)
def test_two_micro_batches_make_the_sgd_update_of_one_batch(task, options):
    whole, whole_loss = one_sgd_step(task, options, 1)  # Keras' own step with the task's loss
    sliced, sliced_loss = one_sgd_step(task, options, 2)  # tfft's step: 2 rows, then 2 padded ones
    initial = tiny_sequence_model(task, LabelMap.for_target("score") if task == REG else LabelMap(["a", "b", "c"]))
    initial(initial.dummy_inputs)
    assert any(not np.allclose(a, b) for a, b in zip(initial.get_weights(), whole.get_weights()))
    for index, (a, b) in enumerate(zip(whole.get_weights(), sliced.get_weights())):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=str(index))
    assert sliced_loss == pytest.approx(whole_loss, rel=1e-5)


MIRRORED_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tfft.backend import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from tfft.distribution import create_strategy
from test_sequence_tasks import STEP_CASES, one_sgd_step
out = {}
for task, options in STEP_CASES:
    alone, _ = one_sgd_step(task, options, 1)
    with create_strategy("mirrored").scope():
        shared, _ = one_sgd_step(task, options, 1)  # 2 long rows on one replica, 2 padded ones on the other
    out[task] = max(float(np.abs(a - b).max()) for a, b in zip(alone.get_weights(), shared.get_weights()))
# A whole run under the strategy: the training pipeline feeds 0/1 label rows to 2 replicas.
from pathlib import Path
from conftest import write_tiny_checkpoint
from tfft.config import TrainConfig
from tfft.training import train
root = Path(sys.argv[2])
model = write_tiny_checkpoint(root / "tiny")
rows = [("anna flew to tokyo", "place"), ("the film is good", "mood"), ("acme corp met", ""),
        ("good paris", "mood,place")] * 8
(root / "multi.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
# (Regression targets take the same path as 0/1 label rows, one dimension fewer.)
config = TrainConfig(task="multi-label-classification", train=str(root / "multi.tsv"), validation=str(root / "multi.tsv"),
                     model=str(model), strategy="mirrored", epochs=2, batch_size=8, tensorboard=False,
                     output_dir=str(root / "runs" / "multi"))
out["trained"] = sorted(train(config).best_scores)
print("RESULT " + json.dumps(out))
"""


def test_two_replicas_make_the_sgd_update_of_one_device_and_train_a_multi_label_run(tmp_path):
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tests), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=tests.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULT "):])
    differences = {task: results[task] for task in (SEQ, ML, REG)}
    assert all(value < 1e-5 for value in differences.values()), differences
    assert "val_micro_f1" in results["trained"]
