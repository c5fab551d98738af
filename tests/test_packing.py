"""Packed training rows: every sentence packed once, and a packed row computes what its sentences compute alone."""

import numpy as np
import pytest

from tfft.backend import tf
from tfft.data.labels import LabelMap
from tfft.features import IGNORE_INDEX, Encoding
from tfft.models import build_model
from tfft.pipeline import make_dataset, pack_length_for, pack_rows, packed_rows_per_batch, worker_input_fn
from tfft.training.losses import CrossEntropy
from tfft.training.packing import packed_logits

TAGS = LabelMap(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


def token_encoding(lengths, seed: int = 0, type_vocab: int = 2) -> Encoding:
    """Rows of the given lengths: [CLS] ids [SEP] with random ids, types (below ``type_vocab``) and labels
    (ignored on the ends)."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, np.int64)
    ids, types, labels = [], [], []
    for length in lengths:
        ids += [2] + list(rng.integers(5, 30, length - 2)) + [3]
        types += list(rng.integers(0, type_vocab, length))
        labels += [IGNORE_INDEX] + list(rng.integers(0, len(TAGS), length - 2)) + [IGNORE_INDEX]
    return Encoding(input_ids=np.asarray(ids, np.int32), token_type_ids=np.asarray(types, np.int32),
                    row_lengths=lengths, example_index=np.arange(len(lengths)), labels=np.asarray(labels, np.int32),
                    num_examples=len(lengths))


def test_pack_rows_puts_every_row_in_one_pack_within_capacity():
    lengths = np.random.default_rng(1).integers(3, 60, 500)
    packs = pack_rows(lengths, 128, seed=7)
    members = np.concatenate(packs)
    assert sorted(members.tolist()) == list(range(500))
    assert max(lengths[p].sum() for p in packs) <= 128
    assert lengths.sum() / (128 * len(packs)) > 0.95  # nearly no padding
    assert [p.tolist() for p in pack_rows(lengths, 128, seed=7)] == [p.tolist() for p in packs]
    assert [p.tolist() for p in pack_rows(lengths, 128, seed=8)] != [p.tolist() for p in packs]
    with pytest.raises(ValueError, match="a row of 59 tokens does not fit in packed rows of 40"):
        pack_rows(lengths, 40)
    assert pack_length_for(np.array([20, 130])) == 136 and pack_length_for(np.array([20, 30])) == 128


def test_packed_dataset_rows_hold_each_sentence_with_its_positions_segments_and_labels():
    encoding = token_encoding([5, 7, 4, 9, 3, 6])
    dataset = make_dataset(encoding, batch_size=2, shuffle=True, seed=0, pack_length=16)
    starts = encoding.row_starts()
    rows = {tuple(encoding.input_ids[s:s + n]): (encoding.token_type_ids[s:s + n], encoding.labels[s:s + n])
            for s, n in zip(starts, encoding.row_lengths)}
    seen = []
    batches = list(dataset)
    assert len(batches) == int(dataset.cardinality())
    for features, labels in batches:
        assert features["input_ids"].shape[1] == 16
        for row in range(features["input_ids"].shape[0]):
            segments = features["segment_ids"][row].numpy()
            for segment in range(1, segments.max() + 1):
                where = np.flatnonzero(segments == segment)
                assert np.array_equal(where, np.arange(where[0], where[0] + len(where)))  # contiguous
                ids = tuple(features["input_ids"][row].numpy()[where])
                assert np.array_equal(features["position_ids"][row].numpy()[where], np.arange(len(where)))
                assert np.array_equal(features["token_type_ids"][row].numpy()[where], rows[ids][0])
                assert np.array_equal(labels[row].numpy()[where], rows[ids][1])
                seen.append(ids)
            padding = segments == 0
            assert not features["attention_mask"][row].numpy()[padding].any()
            assert (labels[row].numpy()[padding] == IGNORE_INDEX).all()
    assert sorted(seen) == sorted(rows)
    with pytest.raises(ValueError, match="pack_length makes shuffled, labelled training batches"):
        make_dataset(encoding, batch_size=2, pack_length=16)  # an evaluation pipeline would come back shuffled


def test_packed_rows_per_batch_keeps_about_the_sentences_of_a_batch():
    lengths = np.full(100, 20)
    assert packed_rows_per_batch(lengths, 128, batch_size=32) == 5  # 640 tokens
    assert packed_rows_per_batch(lengths, 128, batch_size=32, batch_tokens=1024) == 8
    assert packed_rows_per_batch(lengths, 128, batch_size=1) == 1


PACKING_FAMILIES = ("bert", "electra", "roberta", "xlm-roberta")


@pytest.mark.parametrize("family", PACKING_FAMILIES)
def test_a_packed_row_gives_the_logits_and_gradients_of_its_sentences_unpacked(family, family_checkpoint):
    """Each family that packs (BERT's block layout; ELECTRA's embedding projection, RoBERTa's positions past
    the padding id): a packed row's logits are each sentence's alone through the model's own call, and a
    packed batch's loss and gradients are the unpacked batch's."""
    from tfft.families import family_of

    model = build_model("token-classification", TAGS, str(family_checkpoint(family)))
    config = model.config
    assert family_of(model).packing_refusal(config) is None
    encoding = token_encoding([5, 7, 4], type_vocab=config.type_vocab_size)
    unpacked_features, unpacked_labels = next(iter(make_dataset(encoding, batch_size=3, bucket_boundaries=[8],
                                                                pad_token_id=config.pad_token_id)))
    packed_features, packed_labels = next(iter(make_dataset(encoding, batch_size=3, shuffle=True, seed=0,
                                                            pack_length=24, pad_token_id=config.pad_token_id)))
    assert packed_features["input_ids"].shape == (1, 24)
    loss = CrossEntropy()

    def loss_and_gradients(logits_of, features, labels):
        with tf.GradientTape() as tape:
            logits = logits_of(features)
            total, _ = loss.sum_and_weight(labels, logits)
        gradients = tape.gradient(total, model.trainable_variables)
        return logits, total, [tf.convert_to_tensor(g) for g in gradients]

    _, total, gradients = loss_and_gradients(lambda f: model(f, training=False).logits, unpacked_features,
                                             unpacked_labels)
    packed, packed_total, packed_gradients = loss_and_gradients(
        lambda f: packed_logits(model, f, training=False), packed_features, packed_labels)
    # Each sentence alone through the model's call, found in the packed row by its ids.
    segments = packed_features["segment_ids"][0].numpy()
    for row, length in enumerate(encoding.row_lengths):
        alone = {name: unpacked_features[name][row:row + 1, :length] for name in
                 ("input_ids", "attention_mask", "token_type_ids")}
        expected = model(alone, training=False).logits[0].numpy()
        segment = next(s for s in range(1, 4)
                       if np.array_equal(packed_features["input_ids"][0].numpy()[segments == s],
                                         alone["input_ids"][0].numpy()))
        np.testing.assert_allclose(packed[0].numpy()[segments == segment], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed_total.numpy(), total.numpy(), rtol=1e-5)
    for packed_gradient, gradient in zip(packed_gradients, gradients):
        np.testing.assert_allclose(packed_gradient.numpy(), gradient.numpy(), rtol=1e-4, atol=1e-6)


def test_workers_count_the_same_packed_steps_and_fill_short_epochs(tiny_model_dir):
    encoding = token_encoding(np.random.default_rng(3).integers(4, 20, 41))
    steps = set()
    for worker in range(2):
        shard = encoding.take(np.arange(worker, encoding.num_rows, 2))
        dataset_fn, count = worker_input_fn(shard, all_row_lengths=encoding.row_lengths, replicas=2, worker=worker,
                                            num_workers=2, batch_size=8, seed=5, pack_length=32)
        steps.add(count)
        batches = list(dataset_fn(tf.distribute.InputContext(2, worker, 1)).take(count))
        real = [b for b in batches if (b[1].numpy() != IGNORE_INDEX).any()]
        assert sum(int((f["segment_ids"].numpy() > 0).sum()) for f, _ in real) == shard.row_lengths.sum()
        assert all(set(f) == {"input_ids", "attention_mask", "token_type_ids", "position_ids", "segment_ids"}
                   for f, _ in batches)
    assert len(steps) == 1


def test_packing_is_on_for_bert_token_classifiers_and_refused_where_it_cannot_apply(tiny_model_dir, tmp_path):
    from transformers import DistilBertConfig

    from tfft.config import TrainConfig
    from tfft.errors import ConfigError
    from tfft.training.data import packing_options

    config = TrainConfig(task="token-classification", train="x", model=str(tiny_model_dir))
    assert packing_options(config) == {"packing": True, "attention_dropout": 0.0}  # packed rows: no attention dropout
    config = TrainConfig(task="token-classification", train="x", model=str(tiny_model_dir), attention_dropout=0.2)
    assert packing_options(config) == {"packing": True}  # attention dropout as set
    config = TrainConfig(task="token-classification", train="x", model=str(tiny_model_dir), packing=False)
    assert packing_options(config) == {"packing": False}  # attention dropout: the checkpoint's
    DistilBertConfig(vocab_size=30, dim=8, n_layers=1, n_heads=2, hidden_dim=16).save_pretrained(tmp_path)
    config = TrainConfig(task="token-classification", train="x", model=str(tmp_path))
    assert packing_options(config) == {"packing": False}  # unpacked by default, refuses --packing
    with pytest.raises(ConfigError, match="'packing' option cannot apply: packed rows are built for BERT's block "
                                          "layout, which DistilBERT lacks: its embedding layer takes no position ids"):
        packing_options(TrainConfig(task="token-classification", train="x", model=str(tmp_path), packing=True))
    with pytest.raises(ConfigError, match="'packing' options are for token classification"):
        TrainConfig(task="sequence-classification", train="x", packing=True).validate()
