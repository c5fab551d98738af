"""Encoded arrays -> tf.data pipelines with dynamic padding and a bounded set of shapes.

Rows are sliced from ragged tensors (no Python generator in the hot path), grouped by
length into buckets, padded only up to their bucket's boundary, and prefetched. The
boundaries are fitted to the data's length distribution (quantiles rounded up to a
multiple of 8), so padding stays small while the number of distinct batch shapes --
which is what XLA compiles for -- stays bounded.

Token classification trains on packed rows instead (:func:`pack_rows`): several sentences
share one row of ``pack_length`` tokens, each with its own positions and a segment id that
confines its attention to itself (``tfft.training.packing``), so batches carry almost no
padding and all have one row length.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfft.backend import tf
from tfft.features import IGNORE_INDEX, Encoding

LENGTH_MULTIPLE = 8


def fit_bucket_boundaries(lengths: np.ndarray, num_buckets: int = 8, multiple: int = LENGTH_MULTIPLE) -> List[int]:
    """Choose bucket upper bounds (inclusive) from the length distribution.

    Quantiles put about as many rows in each bucket; rounding up to ``multiple`` keeps
    shapes friendly to vectorised kernels. The last boundary covers the longest row.
    """
    lengths = np.asarray(lengths)
    quantiles = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:])
    boundaries = sorted({int(-(-q // multiple) * multiple) for q in quantiles})
    longest = int(-(-lengths.max() // multiple) * multiple)
    if boundaries[-1] < longest:
        boundaries.append(longest)
    return boundaries


def make_dataset(
    encoding: Encoding,
    *,
    batch_size: int,
    pad_token_id: int = 0,
    shuffle: bool = False,
    seed: Optional[int] = None,
    bucket_boundaries: Optional[Sequence[int]] = None,
    num_buckets: int = 8,
    with_labels: bool = True,
    pad_to_length: Optional[int] = None,
    batch_tokens: Optional[int] = None,
    pack_length: Optional[int] = None,
) -> tf.data.Dataset:
    """Build a batched ``tf.data.Dataset`` of ``(features, labels)`` (or features only).

    Training (``shuffle=True``) groups rows into length buckets after a seeded shuffle,
    so batches are random but homogeneous in length. Without shuffling (a validation set
    for ``model.evaluate``) rows keep their order and each batch is padded to its bucket
    boundary. (tfft's own prediction batches in NumPy: see ``tfft.inference``.)
    ``pad_to_length`` pads everything to one fixed length instead (the plain baseline).
    ``batch_tokens`` (training) sizes each bucket's batches to about that many tokens
    instead of ``batch_size`` rows: short rows then come in larger, more efficient batches.
    ``pack_length`` (training with token labels): rows packed into rows of that many tokens
    (:func:`packed_dataset`) instead of buckets.
    """
    if pack_length is not None:
        if not shuffle or pad_to_length is not None or not with_labels:
            raise ValueError("pack_length makes shuffled, labelled training batches: it cannot be combined with "
                             "shuffle=False, pad_to_length or with_labels=False")
        return packed_dataset(encoding, pack_length=pack_length, batch_size=batch_size, batch_tokens=batch_tokens,
                              pad_token_id=pad_token_id, seed=seed)
    lengths = encoding.row_lengths
    boundaries = list(bucket_boundaries or fit_bucket_boundaries(lengths, num_buckets))
    if pad_to_length is not None:
        boundaries = [pad_to_length]
    if lengths.max() > boundaries[-1]:
        raise ValueError(f"a row of {lengths.max()} tokens exceeds the largest bucket boundary {boundaries[-1]}")

    # Rows are sliced out of flat constant tensors by (start, length): a C++ map, no Python per row.
    starts = encoding.row_starts()
    flat_ids = tf.constant(encoding.input_ids, tf.int32)
    flat_types = tf.constant(encoding.token_type_ids, tf.int32)
    has_labels = with_labels and encoding.labels is not None
    token_labels = has_labels and len(encoding.labels) == len(encoding.input_ids)
    columns: Tuple = (starts, lengths)
    if has_labels:  # per-row labels keep their type: class ids, 0/1 label rows or float targets
        columns += (np.zeros(len(lengths), np.int32) if token_labels else encoding.labels,)
        flat_labels = tf.constant(encoding.labels, tf.int32) if token_labels else None

    def slice_row(start, length, *label):
        row = (flat_ids[start:start + length], flat_types[start:start + length])
        if not label:
            return row
        return row + ((flat_labels[start:start + length],) if token_labels else label)

    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:  # shuffling (start, length) pairs is cheaper than shuffling token rows
        dataset = dataset.shuffle(len(lengths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(slice_row, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding_values = (tf.constant(pad_token_id, tf.int32), tf.constant(0, tf.int32))
    if has_labels:
        padding_values += (tf.constant(IGNORE_INDEX, tf.int32) if token_labels
                           else tf.constant(0, tf.as_dtype(encoding.labels.dtype)),)
    padded_shapes = ([None], [None]) + (((([None] if token_labels else list(encoding.labels.shape[1:])),)
                                          if has_labels else ()))

    if shuffle:
        batch_sizes = ([batch_size] * len(boundaries) if batch_tokens is None
                       else [max(1, batch_tokens // b) for b in boundaries])
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda input_ids, *_: tf.shape(input_ids)[0],
            bucket_boundaries=[b + 1 for b in boundaries[:-1]],
            bucket_batch_sizes=batch_sizes,
            padded_shapes=padded_shapes,
            padding_values=padding_values,
        )
        num_batches = _count_bucketed_batches(lengths, boundaries, batch_sizes)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    else:
        dataset = dataset.padded_batch(batch_size, padded_shapes=padded_shapes, padding_values=padding_values)

    boundaries_tensor = tf.constant(boundaries, tf.int32)
    token_label_column = 2 if token_labels else None

    def to_model_inputs(*batch):
        ids, types = batch[0], batch[1]
        target = boundaries_tensor[tf.searchsorted(boundaries_tensor, [tf.shape(ids)[1]], side="left")[0]]
        extra = target - tf.shape(ids)[1]
        ids = tf.pad(ids, [[0, 0], [0, extra]], constant_values=pad_token_id)
        features = {
            "input_ids": ids,
            # [PAD] never occurs inside real text, so it marks padding exactly.
            "attention_mask": tf.cast(tf.not_equal(ids, pad_token_id), tf.int32),
            "token_type_ids": tf.pad(types, [[0, 0], [0, extra]]),
        }
        if len(batch) == 2:
            return features
        labels = batch[2]
        if token_label_column is not None:
            labels = tf.pad(labels, [[0, 0], [0, extra]], constant_values=IGNORE_INDEX)
        return features, labels

    dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def pack_length_for(lengths: np.ndarray, minimum: int = 128) -> int:
    """The packed row length for rows of ``lengths``: room for the longest, at least ``minimum``, a multiple of 8.

    Longer rows hold more sentences (less padding at each row's end) but spend more on attention
    across segments that the mask then discards; 128 tokens hold about six CoNLL sentences."""
    return max(minimum, int(-(-int(np.max(lengths)) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE))


def pack_rows(lengths: np.ndarray, capacity: int, seed: Optional[int] = None, open_packs: int = 16) -> List[np.ndarray]:
    """Group rows into packs of at most ``capacity`` tokens: the rows of each pack, in a seeded random order.

    Rows are taken in a random order and each goes into the first of the ``open_packs`` newest
    packs it fits in (a new pack otherwise): packs fill to ~99 % on CoNLL-2003 while which
    sentences share a pack stays random. A row longer than ``capacity`` is an error.
    """
    lengths = np.asarray(lengths)
    if len(lengths) and lengths.max() > capacity:
        raise ValueError(f"a row of {lengths.max()} tokens does not fit in packed rows of {capacity}")
    packs: List[List[int]] = []
    room: List[int] = []
    for row in np.random.default_rng(seed).permutation(len(lengths)):
        length = int(lengths[row])
        first = len(packs) - min(open_packs, len(packs))
        for index in range(first, len(packs)):
            if room[index] >= length:
                packs[index].append(int(row))
                room[index] -= length
                break
        else:
            packs.append([int(row)])
            room.append(capacity - length)
    return [np.asarray(pack, np.int64) for pack in packs]


def packed_rows_per_batch(lengths: np.ndarray, pack_length: int, batch_size: int,
                          batch_tokens: Optional[int] = None) -> int:
    """Packed rows per batch: about ``batch_size`` sentences (or ``batch_tokens`` tokens) a step, as unpacked."""
    tokens = batch_tokens or batch_size * float(np.mean(lengths))
    return max(1, int(round(tokens / pack_length)))


def packed_dataset(encoding: Encoding, *, pack_length: int, batch_size: int, batch_tokens: Optional[int] = None,
                   pad_token_id: int = 0, seed: Optional[int] = None) -> tf.data.Dataset:
    """Shuffled batches of packed rows for training a token classifier: ``(features, labels)`` of shape
    ``[rows, pack_length]``.

    The packs are made once (:func:`pack_rows`, seeded) and their order is shuffled every epoch.
    ``features`` adds to the usual three ``position_ids`` (each sentence counts from 0) and
    ``segment_ids`` (1, 2, ... for the sentences of a row, 0 on padding), which the packed
    forward pass turns into a block-diagonal attention mask.
    """
    if encoding.labels is None or len(encoding.labels) != len(encoding.input_ids):
        raise ValueError("packed rows need token labels (token classification)")
    packs = pack_rows(encoding.row_lengths, pack_length, _packing_seed(seed))
    members = np.concatenate(packs)
    sizes = [len(pack) for pack in packs]
    starts = tf.RaggedTensor.from_row_lengths(encoding.row_starts()[members], sizes)
    lengths = tf.RaggedTensor.from_row_lengths(encoding.row_lengths[members].astype(np.int64), sizes)
    flat_ids = tf.constant(encoding.input_ids, tf.int32)
    flat_types = tf.constant(encoding.token_type_ids, tf.int32)
    flat_labels = tf.constant(encoding.labels, tf.int32)

    def pack(starts, lengths):
        tokens = tf.ragged.range(starts, starts + lengths).flat_values
        return (tf.gather(flat_ids, tokens), tf.gather(flat_types, tokens),
                tf.cast(tf.ragged.range(lengths).flat_values, tf.int32),
                tf.repeat(tf.range(1, tf.size(lengths) + 1, dtype=tf.int32), lengths),
                tf.gather(flat_labels, tokens))

    rows = packed_rows_per_batch(encoding.row_lengths, pack_length, batch_size, batch_tokens)
    dataset = tf.data.Dataset.from_tensor_slices((starts, lengths))
    dataset = dataset.shuffle(len(packs), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.padded_batch(rows, padded_shapes=([pack_length],) * 5,
                                   padding_values=(pad_token_id, 0, 0, 0, IGNORE_INDEX))

    def to_model_inputs(ids, types, positions, segments, labels):
        features = {"input_ids": ids, "attention_mask": tf.cast(segments > 0, tf.int32), "token_type_ids": types,
                    "position_ids": positions, "segment_ids": segments}
        return features, labels

    dataset = dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(packs) // rows))).prefetch(tf.data.AUTOTUNE)


def worker_input_fn(
    shard: Encoding,
    *,
    all_row_lengths: np.ndarray,
    replicas: int,
    worker: int,
    num_workers: int,
    batch_size: int,
    batch_tokens: Optional[int] = None,
    pad_token_id: int = 0,
    seed: Optional[int] = None,
    num_buckets: int = 8,
    pack_length: Optional[int] = None,
) -> Tuple[Callable[[tf.distribute.InputContext], tf.data.Dataset], int]:
    """The training pipeline of :func:`make_dataset` for worker ``worker`` of ``num_workers`` processes that
    train with ``replicas`` replicas in all: ``(dataset_fn, steps per epoch)``, for
    ``strategy.distribute_datasets_from_function(dataset_fn)``.

    ``shard``: this worker's rows, ``i, i + W, i + 2W, ...`` of the whole data for worker ``i`` of
    ``W``; ``all_row_lengths``: the lengths of the whole data's rows, which every worker has, so
    the bucket boundaries and the steps per epoch come out the same everywhere.
    ``batch_size`` (or ``batch_tokens``) is the **global** batch of one step: each replica
    gets ``batch_size / replicas`` rows.

    Each worker builds its own pipeline, in its own process, from its own shard, through
    ``distribute_datasets_from_function``. The corpus arrays are therefore never serialised
    into a graph: ``experimental_distribute_dataset`` would have to serialise the dataset
    (with the corpus inside it as constants) to shard it, which fails above protobuf's 2 GB
    limit; here each process only ever holds its shard in memory. Workers' shards differ in
    size, but every worker must run the same number of steps (a worker that runs out waits
    forever for the others' collectives), so an epoch is as many steps as the largest shard
    needs (computed identically everywhere), and a worker whose shard needs fewer batches
    fills its epoch with batches that carry no label (:func:`unlabelled_batch`: their loss
    weight is 0, so they change no update). An epoch is then one pass over every shard, with
    nothing of the next pass and no row seen twice. ``pack_length``: each worker packs its own
    rows (:func:`packed_dataset`, seeded by ``seed + worker``).
    """
    all_row_lengths = np.asarray(all_row_lengths)
    if not np.array_equal(shard.row_lengths, all_row_lengths[worker::num_workers]):
        raise ValueError(f"the shard given is not rows {worker}::{num_workers} of the data whose lengths are given")
    boundaries = fit_bucket_boundaries(all_row_lengths, num_buckets)
    per_replica_rows = batch_size // replicas
    per_replica_tokens = None if batch_tokens is None else max(1, batch_tokens // replicas)
    batch_sizes = ([per_replica_rows] * len(boundaries) if per_replica_tokens is None
                   else [max(1, per_replica_tokens // b) for b in boundaries])

    replicas_per_worker = max(1, replicas // num_workers)

    def batch_count(worker: int) -> int:  # worker i's rows are i, i + W, ...: its batches need only their lengths
        lengths = all_row_lengths[worker::num_workers]
        if pack_length is None:
            return _count_bucketed_batches(lengths, boundaries, batch_sizes)
        packs = len(pack_rows(lengths, pack_length, _packing_seed(None if seed is None else seed + worker)))
        return -(-packs // packed_rows_per_batch(lengths, pack_length, per_replica_rows, per_replica_tokens))

    steps = max(-(-batch_count(i) // replicas_per_worker) for i in range(num_workers))

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        if (context.input_pipeline_id, context.num_input_pipelines) != (worker, num_workers):
            # Not a cluster of tfft's workers: a TPU with several hosts (one pipeline per host) is one.
            raise ValueError(f"worker {worker} of {num_workers} holds the rows of input pipeline {worker}, but the "
                             f"strategy asked it for pipeline {context.input_pipeline_id} of "
                             f"{context.num_input_pipelines} (a TPU with several hosts is not supported)")
        one_pass = make_dataset(
            shard, batch_size=per_replica_rows, batch_tokens=per_replica_tokens, pad_token_id=pad_token_id,
            shuffle=True, seed=None if seed is None else seed + worker, bucket_boundaries=boundaries,
            pack_length=pack_length,
        )
        missing = steps * replicas_per_worker - int(one_pass.cardinality())
        filler = unlabelled_batch(shard, pack_length or boundaries[0], pad_token_id, packed=pack_length is not None)
        filler = tf.data.Dataset.from_tensors(filler).repeat(missing)
        return one_pass.concatenate(filler).repeat()

    return dataset_fn, steps


def unlabelled_batch(encoding: Encoding, length: int, pad_token_id: int = 0, packed: bool = False):
    """One row of ``length`` [PAD] tokens whose labels carry no loss: ``IGNORE_INDEX`` for class ids and
    token labels, NaN for 0/1 label rows and regression targets (:mod:`tfft.training.losses` weighs
    both 0). What fills a worker's epoch when its shard needs fewer batches than another's;
    ``packed``: with the features of packed rows, all padding."""
    ids = np.full((1, length), pad_token_id, np.int32)
    features = {"input_ids": ids, "attention_mask": np.zeros_like(ids), "token_type_ids": np.zeros_like(ids)}
    if packed:
        features.update(position_ids=np.zeros_like(ids), segment_ids=np.zeros_like(ids))
    labels = encoding.labels
    if len(labels) == len(encoding.input_ids):  # token labels
        return features, np.full((1, length), IGNORE_INDEX, np.int32)
    if labels.dtype.kind == "f":
        return features, np.full((1,) + labels.shape[1:], np.nan, labels.dtype)
    return features, np.full((1,), IGNORE_INDEX, labels.dtype)


def _packing_seed(seed: Optional[int]) -> int:
    """Which rows share a pack is seeded even without a seed: every worker must count the same packs."""
    return 0 if seed is None else seed


def _count_bucketed_batches(lengths: np.ndarray, boundaries: Sequence[int], batch_sizes: Sequence[int]) -> int:
    bucket_of_row = np.searchsorted(np.asarray(boundaries), lengths, side="left")
    counts = np.bincount(bucket_of_row, minlength=len(boundaries))
    return int(sum(-(-c // size) for c, size in zip(counts, batch_sizes)))


def sort_by_length(encoding: Encoding) -> Tuple[Encoding, np.ndarray]:
    """Reorder rows shortest first so inference batches carry little padding.

    Returns the reordered encoding and ``order`` (new row i is old row ``order[i]``).
    """
    order = np.argsort(encoding.row_lengths, kind="stable")
    return encoding.take(order), order


def model_input_signature() -> Dict[str, tf.TensorSpec]:
    """The feature dict every tfft model and export takes."""
    return {
        name: tf.TensorSpec([None, None], tf.int32, name=name)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
