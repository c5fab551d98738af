"""Metric values on inputs worked out by hand, and the loss/optimizer pieces they rely on."""

import math

import numpy as np
import pytest

from tfft.backend import tf
from tfft.features import IGNORE_INDEX
from tfft.metrics import classification_scores, entity_scores, mean_cross_entropy
from tfft.training.losses import masked_sparse_categorical_crossentropy
from tfft.training.optimization import WarmupLinearDecay, create_optimizer


def test_entity_scores_on_a_two_sentence_example():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # true entities: PER, LOC, ORG; predicted: PER, ORG, LOC (wrong place); correct: PER, ORG
    scores = entity_scores(true, predicted)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)


def test_entity_boundaries_must_match_exactly():
    scores = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert scores["f1"] == 0.0


def test_classification_scores_on_known_predictions():
    scores = classification_scores(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), num_labels=3)
    assert scores["accuracy"] == pytest.approx(0.6)
    # per class F1: 0.5, 0.8, 0.0
    assert scores["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert scores["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert scores["macro_recall"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_mean_cross_entropy():
    value = mean_cross_entropy(np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1]))
    assert value == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)


def test_masked_loss_ignores_masked_positions_and_padding():
    logits = tf.constant([[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]])
    labels = tf.constant([[0, 1, IGNORE_INDEX]])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.e / (1 + math.e))) / 2
    assert float(masked_sparse_categorical_crossentropy(labels, logits)) == pytest.approx(expected, rel=1e-5)
    # Sequence logits [batch, classes] use the same function.
    assert float(masked_sparse_categorical_crossentropy(tf.constant([0]), tf.constant([[0.0, 0.0]]))) == pytest.approx(math.log(2))


def test_warmup_then_linear_decay():
    schedule = WarmupLinearDecay(1e-3, total_steps=10, warmup_steps=2)
    values = [float(schedule(step)) for step in (0, 1, 2, 6, 10)]
    assert values == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4, 0.0])


def test_weight_decay_skips_layer_norm_and_bias():
    dense = tf.Variable(tf.ones((2, 2)), name="dense/kernel")
    bias = tf.Variable(tf.ones((2,)), name="dense/bias")
    gamma = tf.Variable(tf.ones((2,)), name="LayerNorm/gamma")
    optimizer = create_optimizer(0.1, total_steps=10, warmup_fraction=0.0, weight_decay=0.5)
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in (dense, bias, gamma)])
    assert float(dense[0, 0]) < 1.0
    assert float(bias[0]) == 1.0 and float(gamma[0]) == 1.0


def test_sparse_embedding_update_matches_adamw_on_touched_rows_and_leaves_others():
    from tfft.backend import keras
    from tfft.training.optimization import SparseAwareAdamW

    initial = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    lazy_var = tf.Variable(initial, name="embeddings/weight")
    dense_var = tf.Variable(initial, name="embeddings/weight")
    gradient = tf.IndexedSlices(tf.constant([[1.0, -1.0], [0.5, 0.5], [2.0, 0.0]]), tf.constant([1, 4, 1]),
                                tf.constant([6, 2]))
    lazy = SparseAwareAdamW(learning_rate=0.1, weight_decay=0.1)
    plain = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.1)
    lazy.apply_gradients([(gradient, lazy_var)])
    plain.apply_gradients([(tf.convert_to_tensor(gradient), dense_var)])
    touched = [1, 4]
    np.testing.assert_allclose(lazy_var.numpy()[touched], dense_var.numpy()[touched], atol=2e-6)
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(lazy_var.numpy()[untouched], initial[untouched])


def test_fused_dense_update_matches_keras_adamw_over_several_steps():
    from tfft.backend import keras
    from tfft.training.optimization import SparseAwareAdamW

    rng = np.random.default_rng(0)
    initial = rng.normal(size=(3, 4)).astype(np.float32)
    fused_var, plain_var = tf.Variable(initial, name="dense/kernel"), tf.Variable(initial, name="dense/kernel")
    fused = SparseAwareAdamW(learning_rate=0.05, weight_decay=0.1, epsilon=1e-6)
    plain = keras.optimizers.AdamW(learning_rate=0.05, weight_decay=0.1, epsilon=1e-6)
    for _ in range(5):
        gradient = tf.constant(rng.normal(size=(3, 4)).astype(np.float32))
        fused.apply_gradients([(gradient, fused_var)])
        plain.apply_gradients([(gradient, plain_var)])
    assert not np.allclose(fused_var.numpy(), initial)
    np.testing.assert_allclose(fused_var.numpy(), plain_var.numpy(), rtol=1e-5, atol=2e-6)  # float rounding
