"""Gradient accumulation: K micro-batches give the same update as one batch K times larger."""

from dataclasses import replace

import numpy as np
import pytest

from tfft.backend import keras, tf
from tfft.data.labels import LabelMap
from tfft.features import IGNORE_INDEX
from tfft.models import build_model
from tfft.training import compile_model
from tfft.training.accumulation import GradientAccumulator
from tfft.config import TrainConfig

from conftest import SAMPLE_DATA, TINY_VOCAB

LABELS = LabelMap(["O", "B-X", "I-X"])


def tiny_model(task: str, word_shapes: bool = False, labels: LabelMap = None):
    from transformers import BertConfig

    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    keras.utils.set_random_seed(0)
    if labels is None:
        labels = LABELS if task == "token-classification" else LabelMap(["0", "1"])
    return build_model(task, labels, config, word_shapes=word_shapes)


def batches(task: str):
    """Two micro-batches of different lengths and different numbers of labelled tokens."""
    rng = np.random.default_rng(0)
    out = []
    for rows, length, scored in ((3, 7, 5), (2, 11, 2)):
        ids = rng.integers(5, len(TINY_VOCAB), size=(rows, length)).astype(np.int32)
        mask = np.ones_like(ids)
        ids[-1, -1], mask[-1, -1] = 0, 0  # each has padding, as the merged batch has ([PAD] rows decay alike)
        features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        if task == "token-classification":
            labels = rng.integers(0, 3, size=(rows, length)).astype(np.int32)
            labels[:, scored:] = IGNORE_INDEX
            labels[:, 0] = IGNORE_INDEX
            labels[-1, -1] = IGNORE_INDEX
        else:
            labels = rng.integers(0, 2, size=(rows,)).astype(np.int32)
        out.append((features, labels))
    return out


def merged(parts):
    """The micro-batches as one batch, right-padded to the longest."""
    length = max(f["input_ids"].shape[1] for f, _ in parts)

    def pad(array, value):
        return np.pad(array, [(0, 0), (0, length - array.shape[1])], constant_values=value)

    features = {name: np.concatenate([pad(f[name], 0) for f, _ in parts]) for name in parts[0][0]}
    labels = [l for _, l in parts]
    labels = np.concatenate([pad(l, IGNORE_INDEX) for l in labels]) if labels[0].ndim == 2 else np.concatenate(labels)
    return features, labels


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
def test_two_micro_batches_make_the_update_of_one_large_batch(task):
    parts = batches(task)
    config = TrainConfig(task=task, train="x", learning_rate=1e-2, warmup_fraction=0.0, epochs=1, batch_size=5)
    big = tiny_model(task)
    compile_model(big, config, steps_per_epoch=1)
    features, labels = merged(parts)
    big.fit(tf.data.Dataset.from_tensors((features, labels)), epochs=1, verbose=0)

    small = tiny_model(task)
    compile_model(small, config, steps_per_epoch=1)
    GradientAccumulator(small, steps=2)
    before = small.get_weights()
    dataset = tf.data.Dataset.from_generator(lambda: iter(parts), output_signature=(
        {name: tf.TensorSpec([None, None], tf.int32) for name in parts[0][0]},
        tf.TensorSpec([None] * parts[0][1].ndim, tf.int32)))
    small.fit(dataset, epochs=1, verbose=0)

    assert int(small.optimizer.iterations) == 1 == int(big.optimizer.iterations)
    for index, (a, b) in enumerate(zip(big.get_weights(), small.get_weights())):
        np.testing.assert_allclose(a, b, atol=2e-6, err_msg=str(index))
    # The embedding update stayed sparse: rows of tokens no micro-batch used are untouched (no decay).
    [embedding] = [i for i, v in enumerate(small.weights) if "word_embeddings" in v.name]
    unused = sorted(set(range(len(TINY_VOCAB))) - {int(t) for f, _ in parts for t in f["input_ids"].ravel()})
    assert unused
    np.testing.assert_array_equal(small.get_weights()[embedding][unused], before[embedding][unused])


def test_token_sized_batches_accumulate_to_the_update_of_all_their_rows(tiny_tokenizer):
    """--batch-tokens with --gradient-accumulation-steps: micro-batches of different rows and lengths,
    straight from the training pipeline, still weigh every labelled token alike."""
    from tfft.data import read_conll
    from tfft.features import encode_for_training
    from tfft.pipeline import make_dataset

    examples = read_conll(SAMPLE_DATA / "ner_train.txt")[:24]
    labels = LabelMap.from_token_examples(examples)
    encoding = encode_for_training(tiny_tokenizer, examples, labels, max_length=64)
    dataset = make_dataset(encoding, batch_size=32, shuffle=True, seed=0, bucket_boundaries=[10, 13, 16],
                           batch_tokens=96)
    parts = [(features, targets) for features, targets in dataset.as_numpy_iterator()]
    assert len({f["input_ids"].shape for f, _ in parts}) > 2  # rows and lengths differ between micro-batches
    assert sum(len(t) for _, t in parts) == len(examples)
    config = TrainConfig(task="token-classification", train="x", learning_rate=1e-2, warmup_fraction=0.0,
                         epochs=1, batch_size=len(examples), batch_tokens=96)

    big = tiny_model(config.task, labels=labels)
    compile_model(big, config, steps_per_epoch=1)
    big.fit(tf.data.Dataset.from_tensors(merged(parts)), epochs=1, verbose=0)
    small = tiny_model(config.task, labels=labels)
    compile_model(small, replace(config, gradient_accumulation_steps=len(parts)), steps_per_epoch=len(parts))
    micro_batches = tf.data.Dataset.from_generator(lambda: iter(parts), output_signature=(
        {name: tf.TensorSpec([None, None], tf.int32) for name in parts[0][0]}, tf.TensorSpec([None, None], tf.int32)))
    small.fit(micro_batches, epochs=1, verbose=0)

    assert int(small.optimizer.iterations) == 1 == int(big.optimizer.iterations)
    assert small.optimizer.get_config()["learning_rate"]["config"]["total_steps"] == 1
    for index, (a, b) in enumerate(zip(big.get_weights(), small.get_weights())):
        np.testing.assert_allclose(a, b, atol=2e-6, err_msg=str(index))
