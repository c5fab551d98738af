"""Gradient checkpointing: the same loss and gradients for less memory, and no trace in the saved weights."""

import json

import numpy as np
import pytest

from tfft.backend import keras, tf
from tfft.config import TrainConfig
from tfft.data.labels import LabelMap
from tfft.models import build_model, load_trained_model
from tfft.recompute import recompute_encoder_layers

from conftest import SAMPLE_DATA, TINY_VOCAB

TAGS = LabelMap(["O", "B-X", "I-X"])


def tiny_config(dropout: float):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=16, max_position_embeddings=64, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


def tiny_model(task: str, checkpointing: bool, dropout: float = 0.0):
    keras.utils.set_random_seed(0)
    labels = TAGS if task == "token-classification" else LabelMap(["0", "1"])
    model = build_model(task, labels, tiny_config(dropout))
    if checkpointing:
        recompute_encoder_layers(model)
    return model


def batch(task: str):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, len(TINY_VOCAB), size=(3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    ids[-1, -3:], mask[-1, -3:] = 0, 0
    shape = (3, 9) if task == "token-classification" else (3,)
    return {"input_ids": ids, "attention_mask": mask}, rng.integers(0, 2, size=shape).astype(np.int32)


def loss_of(model, features, labels):
    logits = model(features, training=True).logits
    weights = features["attention_mask"] if labels.ndim == 2 else None
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits, sample_weight=weights)


def loss_and_gradients(model, task: str):
    """In a ``tf.function``, as ``model.fit`` runs it."""
    features, labels = batch(task)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_of(model, features, labels)
        gradients = tape.gradient(loss, model.trainable_variables)  # None for an unused pooler (MPNet): zeros
        return loss, [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                      for g, v in zip(gradients, model.trainable_variables)]

    loss, gradients = step()
    return float(loss), [g.numpy() for g in gradients]


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
def test_checkpointing_gives_the_same_loss_and_gradients(task):
    plain_loss, plain = loss_and_gradients(tiny_model(task, checkpointing=False), task)
    checkpointed = tiny_model(task, checkpointing=True)
    calls = []
    attention = checkpointed.bert.encoder.layer[0].attention
    keras_call = attention.call
    attention.call = lambda *args, **kwargs: calls.append(1) or keras_call(*args, **kwargs)
    loss, gradients = loss_and_gradients(checkpointed, task)
    assert len(calls) == 2  # traced once forward, once more for the recomputation in the backward pass
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    assert len(gradients) == len(plain) == len(checkpointed.trainable_variables)
    for variable, a, b in zip(checkpointed.trainable_variables, plain, gradients):
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=variable.name)


def test_with_dropout_the_gradient_is_that_of_the_forward_pass():
    """The recomputation must reuse the forward pass's dropout masks: checked by finite differences
    (in float64, with the same random draws for each loss), an independent reference."""
    keras.mixed_precision.set_global_policy("float64")
    try:
        model = tiny_model("token-classification", checkpointing=True, dropout=0.3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    features, labels = batch("token-classification")

    def loss():
        tf.random.set_seed(7)  # the same seeds (and so masks) on every call
        return loss_of(model, features, labels)

    variables = [v for v in model.trainable_variables if "encoder" in v.name]
    with tf.GradientTape() as tape:
        value = loss()
    gradients = tape.gradient(value, variables)
    assert float(loss()) == float(value)
    direction = [tf.random.stateless_normal(v.shape, seed=[i, 0], dtype=tf.float64) for i, v in enumerate(variables)]
    step = 1e-5
    for v, d in zip(variables, direction):
        v.assign_add(step * d)
    above = float(loss())
    for v, d in zip(variables, direction):
        v.assign_sub(2 * step * d)
    below = float(loss())
    expected = sum(float(tf.reduce_sum(g * d)) for g, d in zip(gradients, direction))
    assert abs(expected) > 1e-3
    assert (above - below) / (2 * step) == pytest.approx(expected, rel=1e-6)


def test_a_model_trained_with_checkpointing_saves_weights_a_plain_model_loads(tiny_model_dir, tmp_path):
    """Also with gradient accumulation, whose train step calls the checkpointed layers the same way."""
    from tfft.training.data import prepare_data
    from tfft.distribution import Cluster
    from tfft.training.fit import fit_model

    config = TrainConfig(task="token-classification", train=str(SAMPLE_DATA / "ner_train.txt"),
                         model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), epochs=1, batch_size=16,
                         max_train_examples=32, learning_rate=1e-3, tensorboard=False, gradient_checkpointing=True,
                         gradient_accumulation_steps=2, packing=False)  # rows, not packs: one step of 32
    data = prepare_data(config)
    model, _, history = fit_model(data.config, data, tmp_path / "work", cluster=Cluster.current(), backup=False)
    assert np.isfinite(history["loss"][0]) and int(model.optimizer.iterations) == 1  # 2 batches, 1 update
    model.save_pretrained(str(tmp_path / "saved"))
    plain = load_trained_model(config.task, tmp_path / "saved")
    def names(m):
        return [v.name.split("/", 1)[1] for v in m.weights]  # without the instance's model prefix

    assert names(plain) == names(model)
    for loaded, trained in zip(plain.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(loaded, trained)
    config.save(tmp_path / "config.yaml")
    assert TrainConfig.load(tmp_path / "config.yaml") == config


def test_the_cli_flag_reaches_the_model_and_the_run_config(tiny_model_dir, tmp_path, monkeypatch):
    from tfft import recompute
    from tfft.cli import main

    wrapped, wrap = [], recompute._recompute_in_backward
    monkeypatch.setattr(recompute, "_recompute_in_backward", lambda layer: wrapped.append(layer) or wrap(layer))
    assert main(["train", "--task", "token-classification", "--train", str(SAMPLE_DATA / "ner_train.txt"),
                 "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                 "--max-train-examples", "16", "--no-tensorboard", "--gradient-checkpointing"]) == 0
    assert len(wrapped) == 1  # the tiny model's one encoder layer
    assert TrainConfig.load(tmp_path / "run" / "config.yaml").gradient_checkpointing is True
    assert TrainConfig().gradient_checkpointing is False
    seconds = json.loads((tmp_path / "run" / "metrics.json").read_text())["seconds"]
    assert next(iter(seconds)) == "start-up" and seconds["start-up"] > 0  # the CLI times the process's start


@pytest.mark.parametrize("family", ["distilbert", "mpnet", "albert", "deberta-v2"])
def test_every_family_recomputes_its_blocks_with_the_same_loss_and_gradients(family):
    from families import tiny_config

    from tfft.families import family_of

    config = tiny_config(family, len(TINY_VOCAB))
    results = []
    for checkpointing in (False, True):
        keras.utils.set_random_seed(0)
        model = build_model("token-classification", TAGS, config)
        model(model.dummy_inputs, training=False)
        if checkpointing:
            assert recompute_encoder_layers(model) == 1  # ALBERT: its one shared layer
        query = family_of(model).blocks(model)[0]
        for name in family_of(model).projections["query"]:
            query = getattr(query, name)
        calls, keras_call = [], query.call
        query.call = lambda *args, **kwargs: calls.append(1) or keras_call(*args, **kwargs)
        results.append(loss_and_gradients(model, "token-classification") + (len(calls),))
    (plain_loss, plain, plain_calls), (loss, gradients, calls) = results
    assert plain_calls and calls == 2 * plain_calls  # traced once more for the recomputation in the backward pass
    assert loss == pytest.approx(plain_loss, abs=1e-6)
    for a, b in zip(plain, gradients):
        np.testing.assert_allclose(a, b, atol=1e-6)