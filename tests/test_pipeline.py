"""tf.data pipelines: bounded shapes, nothing lost or duplicated, masks and padding right,
and inference outputs returned in the caller's order whatever the internal sorting."""

import numpy as np
import pytest

from tfft.data.examples import TokenExample
from tfft.data.labels import LabelMap
from tfft.features import IGNORE_INDEX, encode_for_training, encode_for_inference
from tfft.pipeline import fit_bucket_boundaries, make_dataset

LABELS = LabelMap(["O", "B-LOC", "I-LOC"])
WORDS = ["the", "film", "is", "good", "tokyo", "unbelievable"]


def random_examples(count, seed=0):
    rng = np.random.default_rng(seed)
    return [
        TokenExample([str(w) for w in rng.choice(WORDS, size=rng.integers(1, 20))],
                     None) for _ in range(count)
    ]


def labelled(examples):
    return [TokenExample(e.tokens, ["B-LOC" if t == "tokyo" else "O" for t in e.tokens]) for e in examples]


def test_bucket_boundaries_follow_the_length_distribution():
    lengths = np.array([5] * 50 + [9] * 30 + [40] * 20)
    boundaries = fit_bucket_boundaries(lengths, num_buckets=4)
    assert boundaries == sorted(boundaries)
    assert all(b % 8 == 0 for b in boundaries)
    assert boundaries[0] == 8 and boundaries[-1] == 40
    assert fit_bucket_boundaries(np.array([3, 3, 3]), num_buckets=8) == [8]


def test_training_batches_have_bounded_shapes_and_cover_every_row_once(tiny_tokenizer):
    examples = labelled(random_examples(203))
    encoding = encode_for_training(tiny_tokenizer, examples, LABELS, max_length=64)
    boundaries = fit_bucket_boundaries(encoding.row_lengths, num_buckets=4)
    dataset = make_dataset(encoding, batch_size=16, shuffle=True, seed=1, bucket_boundaries=boundaries)
    shapes, real_tokens, rows, scored = set(), 0, 0, 0
    batches = 0
    for features, labels in dataset:
        batches += 1
        shapes.add(tuple(features["input_ids"].shape))
        assert features["input_ids"].shape[1] in boundaries
        mask = features["attention_mask"].numpy()
        assert ((features["input_ids"].numpy() != 0) == (mask == 1)).all()
        assert (labels.numpy()[mask == 0] == IGNORE_INDEX).all()
        real_tokens += int(mask.sum())
        scored += int((labels.numpy() != IGNORE_INDEX).sum())
        rows += mask.shape[0]
    assert batches == int(dataset.cardinality())
    assert rows == len(examples)
    assert real_tokens == int(encoding.row_lengths.sum())
    assert scored == sum(len(e.tokens) for e in examples)
    assert len({s[1] for s in shapes}) <= len(boundaries)


def test_shuffling_is_seeded(tiny_tokenizer):
    encoding = encode_for_training(tiny_tokenizer, labelled(random_examples(64)), LABELS, max_length=64)

    def first_batch(seed):
        features, _ = next(iter(make_dataset(encoding, batch_size=8, shuffle=True, seed=seed)))
        return features["input_ids"].numpy()

    np.testing.assert_array_equal(first_batch(3), first_batch(3))


def test_fixed_padding_baseline(tiny_tokenizer):
    encoding = encode_for_training(tiny_tokenizer, labelled(random_examples(20)), LABELS, max_length=32)
    for features, _ in make_dataset(encoding, batch_size=8, pad_to_length=32):
        assert features["input_ids"].shape[1] == 32


def test_row_probabilities_match_unpadded_single_row_calls(tiny_model_dir, tiny_tokenizer):
    """Bucketing, padding and length-sorting must not change any output."""
    from tfft.inference import forward_function, row_probabilities
    from tfft.models import build_model
    from tfft.backend import tf

    model = build_model("token-classification", LABELS, str(tiny_model_dir))
    examples = random_examples(30, seed=5)
    encoding = encode_for_inference(tiny_tokenizer, examples, max_length=64, stride=8)
    batched = row_probabilities(forward_function(model), encoding, batch_size=7)
    starts = encoding.row_starts()
    for row in range(encoding.num_rows):
        span = slice(starts[row], starts[row] + encoding.row_lengths[row])
        features = {
            "input_ids": tf.constant(encoding.input_ids[span][None]),
            "attention_mask": tf.ones((1, encoding.row_lengths[row]), tf.int32),
            "token_type_ids": tf.constant(encoding.token_type_ids[span][None]),
        }
        single = tf.nn.softmax(model(features).logits)[0].numpy()
        np.testing.assert_allclose(batched[span], single, atol=1e-5)


def test_token_budget_batches_grow_as_rows_shrink(tiny_tokenizer):
    encoding = encode_for_training(tiny_tokenizer, labelled(random_examples(300, seed=2)), LABELS, max_length=64)
    boundaries = fit_bucket_boundaries(encoding.row_lengths, num_buckets=3)
    dataset = make_dataset(encoding, batch_size=8, shuffle=True, seed=0, bucket_boundaries=boundaries,
                           batch_tokens=128)
    rows = 0
    for features, _ in dataset:
        width = features["input_ids"].shape[1]
        assert features["input_ids"].shape[0] <= 128 // width
        rows += features["input_ids"].shape[0]
    assert rows == 300
    assert int(dataset.cardinality()) == sum(1 for _ in dataset)


def test_each_worker_reads_its_own_shard_in_per_replica_batches_for_the_same_number_of_steps(tiny_tokenizer):
    import tensorflow as tf

    from tfft.pipeline import worker_input_fn

    examples = labelled(random_examples(101))
    encoding = encode_for_training(tiny_tokenizer, examples, LABELS, max_length=64)
    seen, all_steps = [], set()
    for worker in range(2):
        # 2 workers with 2 replicas each: a global batch of 16 is 4 rows per replica. A worker holds its shard alone.
        dataset_fn, steps = worker_input_fn(shard_of(encoding, worker, 2), all_row_lengths=encoding.row_lengths,
                                            replicas=4, worker=worker, num_workers=2, batch_size=16, seed=3,
                                            num_buckets=3)
        all_steps.add(steps)
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=4)
        dataset = dataset_fn(context)
        assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY  # repeats: every worker runs `steps` steps
        first_pass = []
        for features, _ in dataset.take(steps * 2):  # `steps` steps of this worker's 2 replicas
            ids = features["input_ids"].numpy()
            assert len(ids) <= 4
            first_pass += [tuple(row[row != 0]) for row in ids if (row != 0).any()]  # not the [PAD] filler rows
        assert len(first_pass) >= encoding.num_rows // 2  # the whole shard fits in an epoch's steps
        seen.append(first_pass)
    rows = [tuple(encoding.input_ids[s:s + n]) for s, n in zip(encoding.row_starts(), encoding.row_lengths)]
    shards = [set(rows[i::2]) for i in range(2)]
    for worker in range(2):
        assert set(seen[worker]) == shards[worker]  # its own rows, all of them, nothing of the other's
    assert len(all_steps) == 1  # the same number of steps on every worker


def shard_of(encoding, worker, workers):
    return encoding.take(np.arange(worker, encoding.num_rows, workers))


def test_a_worker_refuses_a_shard_or_a_pipeline_that_is_not_its_own(tiny_tokenizer):
    import tensorflow as tf

    from tfft.pipeline import worker_input_fn

    encoding = encode_for_training(tiny_tokenizer, labelled(random_examples(40)), LABELS, max_length=64)
    options = dict(all_row_lengths=encoding.row_lengths, replicas=2, num_workers=2, batch_size=4)
    with pytest.raises(ValueError, match="not rows 1::2"):
        worker_input_fn(shard_of(encoding, 0, 2), worker=1, **options)
    dataset_fn, _ = worker_input_fn(shard_of(encoding, 1, 2), worker=1, **options)
    with pytest.raises(ValueError, match="asked it for pipeline 0 of 2"):
        dataset_fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=2))


def test_an_epoch_is_one_pass_over_every_workers_shard(tiny_tokenizer):
    import collections

    import tensorflow as tf

    from tfft.pipeline import worker_input_fn

    encoding = encode_for_training(tiny_tokenizer, labelled(random_examples(101)), LABELS, max_length=64)
    rows = [tuple(encoding.input_ids[s:s + n]) for s, n in zip(encoding.row_starts(), encoding.row_lengths)]
    for worker in range(2):
        dataset_fn, steps = worker_input_fn(shard_of(encoding, worker, 2), all_row_lengths=encoding.row_lengths,
                                            replicas=4, worker=worker, num_workers=2, batch_size=16, seed=3,
                                            num_buckets=3)
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=4)
        epoch = collections.Counter()
        for features, labels in dataset_fn(context).take(steps * 2):  # one epoch: `steps` steps of 2 replicas
            # A row counts when it is trained on: padding rows with no labelled token would not.
            for row, row_labels in zip(features["input_ids"].numpy(), labels.numpy()):
                if (row_labels != IGNORE_INDEX).any():
                    epoch[tuple(row[row != 0])] += 1
        assert epoch == collections.Counter(rows[worker::2])  # each of its rows once, nothing of the next pass
