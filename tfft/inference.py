"""Run a classifier over encoded rows and merge window outputs back into examples.

Shared by the validation callback, ``evaluate`` and ``predict`` so that all three score
exactly the same way: rows sorted by length, batches padded to bucket boundaries,
one compiled forward function per model, and for long examples the prediction of each
word taken from the window where that word has the most context on both sides. Under a
one-process strategy with several replicas (``mirrored``, ``tpu``) each batch is split
among the replicas.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from tfft.backend import tf
from tfft.distribution import Cluster
from tfft.features import NO_WORD, Encoding
from tfft.heads import logits_to_outputs
from tfft.lean_bert import inference_logits
from tfft.pipeline import LENGTH_MULTIPLE, model_input_signature, sort_by_length

# A batch of padded int32 ``input_ids``/``attention_mask``/``token_type_ids`` -> float32 class
# probabilities (array-like). A Keras model's is :func:`forward_function`; other runtimes (a
# TensorFlow Lite interpreter, a SavedModel signature) bring theirs, and are scored the same way.
Forward = Callable[[Dict[str, np.ndarray]], object]


def forward_function(model, jit_compile: bool = False) -> Forward:
    """A compiled ``features -> outputs`` function, cached on the model: class probabilities, or
    regression values (:func:`tfft.heads.logits_to_outputs`).

    Outputs are computed in float32 even under a bfloat16 policy.
    """
    key = f"_tfft_forward_{int(jit_compile)}"
    cached = getattr(model, key, None)
    if cached is None:

        def forward(features):
            return logits_to_outputs(model.config, inference_logits(model, features))

        # One trace for every batch shape (XLA, when on, still compiles per shape).
        cached = tf.function(forward, jit_compile=jit_compile, input_signature=[model_input_signature()])
        object.__setattr__(model, key, cached)
    return cached


def row_probabilities(forward: Forward, encoding: Encoding, *, batch_size: int = 64,
                      pad_token_id: int = 0) -> np.ndarray:
    """Class probabilities for every row, in the encoding's row order, from ``forward``
    (a Keras model's :func:`forward_function` or another runtime's).

    Token tasks get one flat ``[total_tokens, classes]`` array aligned with
    ``encoding.input_ids``; sequence tasks get ``[rows, classes]``.
    """
    ordered, order = sort_by_length(encoding)
    token_task = encoding.word_index is not None
    pieces = []
    for features, lengths in padded_batches(ordered, batch_size, pad_token_id):
        probabilities = np.asarray(forward(features))
        if token_task:
            pieces.append(probabilities[np.arange(probabilities.shape[1])[None, :] < lengths[:, None]])
        else:
            pieces.append(probabilities)
    sorted_output = np.concatenate(pieces)
    if not token_task:
        unsorted = np.empty_like(sorted_output)
        unsorted[order] = sorted_output
        return unsorted
    # Undo the row sort at token granularity.
    sorted_starts = ordered.row_starts()
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    positions = np.concatenate(
        [np.arange(sorted_starts[inverse[r]], sorted_starts[inverse[r]] + encoding.row_lengths[r]) for r in range(len(order))]
    )
    return sorted_output[positions]


def replicated(forward: Forward, cluster: Optional[Cluster] = None) -> Forward:
    """``forward`` over a batch whose rows are shared out among the replicas of ``cluster`` (default:
    the strategy in scope); unchanged outside a one-process strategy with several replicas.

    The batch is padded to a multiple of the replica count with copies of its last row, so
    every replica gets the same shape; the padding rows' outputs are dropped.
    """
    cluster = cluster or Cluster.current()
    strategy, replicas = cluster.strategy, cluster.replicas
    if replicas == 1 or cluster.workers > 1:
        return forward

    def run(features):
        rows = int(features["input_ids"].shape[0])
        share = -(-rows // replicas)
        padded = {name: tf.concat([values, tf.repeat(values[-1:], share * replicas - rows, axis=0)], 0)
                  for name, values in features.items()}
        pieces = strategy.experimental_distribute_values_from_function(
            lambda context: {name: values[context.replica_id_in_sync_group * share:][:share]
                             for name, values in padded.items()})
        outputs = strategy.experimental_local_results(run_replicas(pieces))
        return tf.concat([tf.identity(output) for output in outputs], 0)[:rows]

    # In a graph, where the strategy runs fastest. ``forward`` goes in a plain callable: the strategy
    # gives each replica's call its own piece (it would hand a tf.function all of them).
    run_replicas = tf.function(lambda pieces: strategy.run(lambda piece: forward(piece), args=(pieces,)),
                               reduce_retracing=True)
    return run


def padded_batches(encoding: Encoding, batch_size: int, pad_token_id: int):
    """Yield ``(features, row_lengths)`` for consecutive rows, padded to a multiple of 8.

    Built with NumPy rather than tf.data: for a single sentence, setting up a tf.data
    pipeline costs more than running the model. Rows are expected sorted by length, so
    each batch carries little padding; widths rounded to 8 keep the set of shapes small.
    Features are NumPy int32 arrays, which a tf.function and a TFLite interpreter both take.
    """
    starts = encoding.row_starts()
    for begin in range(0, encoding.num_rows, batch_size):
        end = min(begin + batch_size, encoding.num_rows)
        lengths = encoding.row_lengths[begin:end]
        width = int(-(-lengths.max() // LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
        filled = np.arange(width)[None, :] < lengths[:, None]
        span = slice(starts[begin], starts[begin] + int(lengths.sum()))
        ids = np.full((end - begin, width), pad_token_id, np.int32)
        ids[filled] = encoding.input_ids[span]
        types = np.zeros((end - begin, width), np.int32)
        types[filled] = encoding.token_type_ids[span]
        features = {"input_ids": ids, "attention_mask": filled.astype(np.int32), "token_type_ids": types}
        yield features, lengths


def word_probabilities(encoding: Encoding, token_probabilities: np.ndarray, words_per_example: List[int]) -> List[np.ndarray]:
    """Per example, a ``[words, classes]`` array from first-subword token probabilities.

    A word seen in several windows takes the window where its distance to the nearer
    window edge is largest. Words with no token at all (possible only for words the
    tokenizer maps to nothing, e.g. a lone control character) get a uniform row.
    """
    num_classes = token_probabilities.shape[-1]
    row_of_token = np.repeat(np.arange(encoding.num_rows), encoding.row_lengths)
    position = np.arange(len(row_of_token)) - encoding.row_starts()[row_of_token]
    scored = np.flatnonzero(encoding.word_index != NO_WORD)
    example = encoding.example_index[row_of_token[scored]]
    word = encoding.word_index[scored]
    context = np.minimum(position[scored], encoding.row_lengths[row_of_token[scored]] - 1 - position[scored])
    best_first = np.lexsort((-context, word, example))
    chosen = best_first[np.concatenate([[True], (np.diff(example[best_first]) != 0) | (np.diff(word[best_first]) != 0)])] \
        if len(best_first) else best_first
    offsets = np.concatenate([[0], np.cumsum(words_per_example)]).astype(np.int64)
    flat = np.full((offsets[-1], num_classes), 1.0 / num_classes, dtype=np.float32)
    flat[offsets[example[chosen]] + word[chosen]] = token_probabilities[scored][chosen]
    return np.split(flat, offsets[1:-1])


def predict_encoded(model, encoding: Encoding, *, words_per_example: Optional[List[int]] = None,
                    batch_size: int = 64, pad_token_id: int = 0, jit_compile: bool = False,
                    cluster: Optional[Cluster] = None):
    """Class probabilities per example: a ``[words, classes]`` array per sentence for
    token tasks (``words_per_example`` required), one ``[examples, classes]`` array for
    sequence tasks. ``cluster``: whose replicas share each batch (default: the strategy in scope)."""
    return predict_with(replicated(forward_function(model, jit_compile), cluster), encoding,
                        words_per_example=words_per_example, batch_size=batch_size, pad_token_id=pad_token_id)


def predict_with(forward: Forward, encoding: Encoding, *, words_per_example: Optional[List[int]] = None,
                 batch_size: int = 64, pad_token_id: int = 0):
    """:func:`predict_encoded` with any :data:`Forward` function, so another runtime scores exactly alike."""
    probabilities = row_probabilities(forward, encoding, batch_size=batch_size, pad_token_id=pad_token_id)
    if encoding.word_index is not None:
        return word_probabilities(encoding, probabilities, words_per_example)
    return probabilities  # sequence tasks: one row per example
