"""tfft's training step: K micro-batches, or R replicas, give the update of one batch on one device.

The multi-replica checks run in a subprocess, because a process can split its CPU into
logical devices only before TensorFlow initialises it.
"""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tfft.backend import keras, tf
from tfft.data.labels import LabelMap
from tfft.features import IGNORE_INDEX
from tfft.models import build_model, precision_scope
from tfft.training import compile_model
from tfft.config import TrainConfig
from tfft.training.losses import masked_sparse_categorical_crossentropy

from conftest import SAMPLE_DATA, TINY_VOCAB

LABELS = LabelMap(["O", "B-X", "I-X"])


def tiny_model(task: str, word_shapes: bool = False, labels=None):
    from transformers import BertConfig

    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    keras.utils.set_random_seed(0)
    labels = labels or (LABELS if task == "token-classification" else LabelMap(["0", "1"]))
    model = build_model(task, labels, config, word_shapes=word_shapes)
    model(model.dummy_inputs, training=False)  # weights drawn now, right after the seed, whatever runs next
    return model


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
    features, labels = merged(batches(task))
    config = TrainConfig(task=task, train="x", learning_rate=1e-2, warmup_fraction=0.0, epochs=1, batch_size=5)
    big = tiny_model(task)
    compile_model(big, config, steps_per_epoch=1)  # Keras' own step
    big.fit(tf.data.Dataset.from_tensors((features, labels)), epochs=1, verbose=0)

    small = tiny_model(task)
    compile_model(small, replace(config, gradient_accumulation_steps=2), steps_per_epoch=1)
    before = small.get_weights()
    # One step of 5 rows, run as slices of 3 and 2 rows with different numbers of labelled tokens.
    history = small.fit(tf.data.Dataset.from_tensors((features, labels)), epochs=1, verbose=0).history

    assert int(small.optimizer.iterations) == 1 == int(big.optimizer.iterations)
    for index, (a, b) in enumerate(zip(big.get_weights(), small.get_weights())):
        np.testing.assert_allclose(a, b, atol=2e-6, err_msg=str(index))
    expected_loss = float(masked_sparse_categorical_crossentropy(labels, tiny_model(task)(features).logits))
    assert history["loss"][0] == pytest.approx(expected_loss, rel=1e-5)  # token-weighted, as one batch
    # The embedding update stayed sparse: rows of tokens no micro-batch used are untouched (no decay).
    [embedding] = [i for i, v in enumerate(small.weights) if "word_embeddings" in v.name]
    unused = sorted(set(range(len(TINY_VOCAB))) - {int(t) for t in features["input_ids"].ravel()})
    assert unused
    np.testing.assert_array_equal(small.get_weights()[embedding][unused], before[embedding][unused])


def sgd_step(model, config: TrainConfig, features, labels, keras_step: bool = False):
    """One step of ``model`` compiled by tfft with SGD at learning rate 1: ``(weight changes, logged loss)``.

    Why SGD: its update is minus the gradient, so comparing updates compares gradients. AdamW's
    first update is about the learning rate times the gradient's sign, and would hide a gradient
    scaled wrongly (a wrong normalisation, a loss scale left in). ``keras_step``: Keras' own step
    even where tfft installs its own."""
    compile_model(model, config, steps_per_epoch=1, optimizer=keras.optimizers.SGD(learning_rate=1.0))
    if keras_step:
        model.train_step = type(model).train_step.__get__(model)
    before = model.get_weights()
    history = model.fit(tf.data.Dataset.from_tensors((features, labels)), epochs=1, verbose=0).history
    assert int(model.optimizer.iterations.numpy()) == 1
    return [after - start for after, start in zip(model.get_weights(), before)], history["loss"][0]


def update_difference(expected, actual) -> float:
    """The largest difference between two steps' updates, as a share of the largest expected update."""
    largest = max(float(np.abs(e).max()) for e in expected)
    assert largest > 0
    return max(float(np.abs(a - e).max()) for e, a in zip(expected, actual)) / largest


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
def test_two_micro_batches_give_the_gradient_of_one_large_batch(task):
    features, labels = merged(batches(task))
    config = TrainConfig(task=task, train="x", epochs=1, batch_size=5)
    expected, loss = sgd_step(tiny_model(task), config, features, labels)  # Keras' own step
    accumulated, accumulated_loss = sgd_step(tiny_model(task), replace(config, gradient_accumulation_steps=2),
                                             features, labels)
    assert update_difference(expected, accumulated) < 1e-5
    assert accumulated_loss == pytest.approx(loss, rel=1e-5)


def test_fp16_accumulated_gradients_are_unscaled_and_those_of_one_large_batch():
    """The loss is scaled (2**15 at first) for float16 gradients; the update must see them unscaled,
    and the dynamic scale must span the micro-batches of one update."""
    task = "token-classification"
    features, labels = merged(batches(task))
    config = TrainConfig(task=task, train="x", epochs=1, batch_size=5, precision="fp16")
    with precision_scope("fp16"):
        reference, accumulated = tiny_model(task), tiny_model(task)
    expected, loss = sgd_step(reference, config, features, labels)  # Keras' own step, which unscales
    updates, accumulated_loss = sgd_step(accumulated, replace(config, gradient_accumulation_steps=2),
                                         features, labels)
    assert isinstance(accumulated.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert float(accumulated.optimizer.loss_scale) == 2.0 ** 15  # finite gradients: applied, scale kept
    assert update_difference(expected, updates) < 1e-2  # float16 activations
    assert accumulated_loss == pytest.approx(loss, rel=1e-2)


def test_token_budget_batches_accumulate_to_the_update_of_one_batch(tiny_tokenizer):
    """--batch-tokens with --gradient-accumulation-steps: a step holds K token budgets of rows,
    straight from the training pipeline, and weighs every labelled token alike."""
    from tfft.data import read_conll
    from tfft.distribution import Cluster
    from tfft.training.data import PreparedData, encode_training_examples

    examples = read_conll(SAMPLE_DATA / "ner_train.txt")[:48]
    labels = LabelMap.from_token_examples(examples)
    config = TrainConfig(task="token-classification", train="x", learning_rate=1e-2, warmup_fraction=0.0,
                         epochs=1, batch_size=32, batch_tokens=96, num_buckets=3)
    data = PreparedData(tiny_tokenizer, labels, examples, None,
                        encode_training_examples(config, tiny_tokenizer, examples, labels))
    accumulated = replace(config, gradient_accumulation_steps=2)
    single_steps = data.train_dataset(config, Cluster.current())[1]
    dataset, steps = data.train_dataset(accumulated, Cluster.current())
    assert steps < single_steps
    features, targets = next(iter(dataset))
    assert int(tf.size(features["input_ids"])) <= 2 * 96 and int(features["input_ids"].shape[0]) > 1

    big = tiny_model(config.task, labels=labels)
    compile_model(big, config, steps_per_epoch=1)  # Keras' own step on the whole step's rows
    big.fit(tf.data.Dataset.from_tensors((features, targets)), epochs=1, verbose=0)
    small = tiny_model(config.task, labels=labels)
    compile_model(small, accumulated, steps_per_epoch=1)
    small.fit(tf.data.Dataset.from_tensors((features, targets)), epochs=1, verbose=0)
    assert int(small.optimizer.iterations) == 1 == int(big.optimizer.iterations)
    for index, (a, b) in enumerate(zip(big.get_weights(), small.get_weights())):
        np.testing.assert_allclose(a, b, atol=2e-6, err_msg=str(index))


REPLICAS_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tfft.backend import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from dataclasses import replace
import numpy as np
from test_train_step import tiny_model, batches, merged, sgd_step, update_difference, TINY_VOCAB
from tfft.config import TrainConfig
from tfft.distribution import create_strategy
from tfft.training import compile_model

def spy_on_embedding_gradient(model, embedding):
    # When the step is traced: the kind of gradient the optimizer gets for the embedding matrix,
    # and which ops of the step's graph make a tensor of that matrix's shape (a dense buffer).
    # When it runs: the sparse gradient holds each row once (the replicas' all-reduce gathers them all).
    seen, apply = {}, model.optimizer.apply_gradients
    def apply_gradients(grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        seen["embedding_gradient"] = [type(g).__name__ for g, v in grads_and_vars if v is embedding]
        for g, v in grads_and_vars:
            if v is embedding and isinstance(g, tf.IndexedSlices):
                tf.debugging.assert_equal(tf.size(tf.unique(g.indices)[0]), tf.size(g.indices),
                                          message="the embedding gradient repeats rows")
        graph = tf.compat.v1.get_default_graph()
        seen["embedding_shaped_ops"] = sorted({op.type for op in graph.get_operations() for t in op.outputs
                                               if t.shape.rank == 2 and t.shape.as_list() == embedding.shape})
        return apply(grads_and_vars, *args, **kwargs)
    model.optimizer.apply_gradients = apply_gradients
    return seen

out = {}
for task in ("token-classification", "sequence-classification"):
    features, labels = merged(batches(task))
    features = {k: v[:4] for k, v in features.items()}  # replica 0 gets 2 long rows, replica 1 2 short ones
    labels = labels[:4]
    config = TrainConfig(task=task, train="x", learning_rate=1e-2, warmup_fraction=0.0, epochs=1, batch_size=4)
    one_updates, one_loss = sgd_step(tiny_model(task), config, features, labels)
    strategy = create_strategy("mirrored")
    results = {}
    variants = (("mirrored", 1), ("mirrored_accumulated", 2))
    # What Keras' own step does (average the replicas' means), once: the token task shows why tfft has its own.
    for name, micro_batches in variants + ((("keras_step", 1),) if task == "token-classification" else ()):
        with strategy.scope():
            model = tiny_model(task)
            updates, loss = sgd_step(model, replace(config, gradient_accumulation_steps=micro_batches), features,
                                     labels, keras_step=name == "keras_step")
        results[name] = {"replicas": strategy.num_replicas_in_sync, "loss_ratio": loss / one_loss,
                         "gradient_difference": update_difference(one_updates, updates)}
    if task == "token-classification":  # tfft's AdamW, which decays only the embedding rows a step used
        unused = sorted(set(range(len(TINY_VOCAB))) - {int(t) for t in features["input_ids"].ravel()})
        for name, micro_batches in variants:
            with strategy.scope():
                adamw = tiny_model(task)
                compile_model(adamw, replace(config, gradient_accumulation_steps=micro_batches), steps_per_epoch=1)
                [embedding] = [i for i, v in enumerate(adamw.weights) if "word_embeddings" in v.name]
                before = adamw.get_weights()[embedding][unused]
                seen = spy_on_embedding_gradient(adamw, adamw.weights[embedding])
                adamw.fit(tf.data.Dataset.from_tensors((features, labels)), epochs=1, verbose=0)
            results[name].update(seen)
            results[name]["unused_rows_changed"] = bool(np.any(adamw.get_weights()[embedding][unused] != before))
    if task == "token-classification":  # float16: the replicas' sparse gradients are unscaled too
        from tfft.models import precision_scope
        fp16 = replace(config, precision="fp16")
        with precision_scope("fp16"):
            one_fp16, _ = sgd_step(tiny_model(task), fp16, features, labels)
            with strategy.scope():
                scaled = tiny_model(task)
                updates, _ = sgd_step(scaled, fp16, features, labels)
        results["mirrored_fp16"] = {"gradient_difference": update_difference(one_fp16, updates),
                                    "loss_scale": float(scaled.optimizer.loss_scale)}
    # Prediction under the strategy shares each batch (5 rows: padded to 6) among the replicas.
    from tfft.features import Encoding
    from tfft.inference import forward_function, replicated, row_probabilities
    all_features, _ = merged(batches(task))
    lengths = all_features["attention_mask"].sum(1)
    encoding = Encoding(input_ids=all_features["input_ids"][all_features["attention_mask"] == 1],
                        token_type_ids=np.zeros(int(lengths.sum()), np.int32), row_lengths=lengths,
                        example_index=np.arange(len(lengths)),
                        word_index=np.zeros(int(lengths.sum()), np.int64) if task == "token-classification" else None)
    with strategy.scope():
        shared = row_probabilities(replicated(forward_function(model)), encoding, batch_size=5)
    alone = row_probabilities(replicated(forward_function(model)), encoding, batch_size=5)
    results["prediction_difference"] = float(np.abs(shared - alone).max())
    out[task] = results
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def replica_results():
    tests = str(Path(__file__).parent)
    process = subprocess.run([sys.executable, "-c", REPLICAS_SCRIPT, tests], capture_output=True, text=True,
                             timeout=300, cwd=str(Path(__file__).parents[1]))
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
@pytest.mark.parametrize("variant", ["mirrored", "mirrored_accumulated"])
def test_two_replicas_give_the_gradient_and_log_the_loss_of_one_device(replica_results, task, variant):
    # SGD's update is the gradient: a replica dividing by its own labelled tokens, or a mean of the
    # replicas' means, changes the gradient, and its scale too, which AdamW's first update would hide.
    results = replica_results[task][variant]
    assert results["replicas"] == 2
    assert results["gradient_difference"] < 1e-5
    assert results["loss_ratio"] == pytest.approx(1, rel=1e-5)  # the logged loss is the one batch's


@pytest.mark.parametrize("variant", ["mirrored", "mirrored_accumulated"])
def test_two_replicas_update_only_the_embedding_rows_they_used(replica_results, variant):
    assert not replica_results["token-classification"][variant]["unused_rows_changed"]


def test_two_replicas_in_float16_apply_the_unscaled_gradient_of_one_device(replica_results):
    results = replica_results["token-classification"]["mirrored_fp16"]
    assert results["loss_scale"] == 2.0 ** 15  # finite gradients: applied, scale kept
    assert results["gradient_difference"] < 1e-2  # float16 activations; a scaled update is 2**15 times off


def test_two_replicas_hand_the_sparse_embedding_gradient_to_the_optimizer_without_a_dense_buffer(replica_results):
    results = replica_results["token-classification"]["mirrored"]
    assert results["embedding_gradient"] == ["IndexedSlices"]
    assert results["embedding_shaped_ops"] == ["ReadVariableOp"]  # the lookup's read, no vocab x hidden buffer


def test_accumulation_sums_the_embedding_gradient_in_a_dense_buffer(replica_results):
    # What the test above would see if the step built a buffer (accumulation needs one: slices' rows differ).
    results = replica_results["token-classification"]["mirrored_accumulated"]
    assert results["embedding_gradient"] == ["IndexedSlices"]
    assert "TensorScatterAdd" in results["embedding_shaped_ops"]


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
def test_prediction_under_two_replicas_is_that_of_one_device(replica_results, task):
    assert replica_results[task]["prediction_difference"] < 1e-6  # evaluate --strategy mirrored


def test_keras_own_step_would_weight_replicas_not_tokens(replica_results):
    # Why tfft has its own step: the replicas hold different numbers of labelled tokens.
    assert replica_results["token-classification"]["keras_step"]["gradient_difference"] > 1e-2
