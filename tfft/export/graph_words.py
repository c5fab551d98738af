"""Whitespace words, word shapes and constrained Viterbi decoding as core TensorFlow ops.

The serving graph's counterparts of :mod:`tfft.words` and :mod:`tfft.decoding`, built from
the same rules and tables so that a SavedModel splits, shapes and decodes exactly as
``tfft predict`` does (the export tests compare them on the same texts).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tfft.backend import tf
from tfft.decoding import FORBIDDEN, MIN_PROBABILITY, transition_mask
from tfft.words import (
    DIGIT_CHAR, DIGITS, LOWER, LOWER_CHAR, MIXED, OTHER, OTHER_CHAR, TITLE, UNCASED, UNCASED_LETTER, UPPER, UPPER_CHAR,
    WHITESPACE_CHARACTERS, char_class_ranges,
)

WHITESPACE_CODE_POINTS = np.array(sorted(ord(c) for c in WHITESPACE_CHARACTERS), np.int32)


class Words(NamedTuple):
    """The whitespace-separated words of a batch, ``[batch, (words)]`` each."""

    start: tf.RaggedTensor  # int64 code point offset of the first character
    end: tf.RaggedTensor  # int64 one past the last character
    shape: tf.RaggedTensor  # int32 index into tfft.words.SHAPES


def whitespace_words(text: tf.Tensor) -> Words:
    """Split ``text`` (tf.string ``[batch]``) at whitespace, with offsets as Python ``str`` indices."""
    chars = tf.strings.unicode_decode(text, "UTF-8", errors="replace")
    code_points = chars.flat_values
    count = tf.size(code_points, out_type=tf.int64)
    row = chars.value_rowids()
    index = tf.range(count)
    position = index - tf.gather(chars.row_starts(), row)
    last_in_row = position == tf.gather(chars.row_lengths(), row) - 1
    spaces = tf.constant(WHITESPACE_CODE_POINTS)
    nearest = tf.gather(spaces, tf.minimum(tf.searchsorted(spaces, code_points), len(WHITESPACE_CODE_POINTS) - 1))
    space = tf.equal(nearest, code_points)
    after_space = (position == 0) | tf.gather(space, tf.maximum(index - 1, 0))
    before_space = last_in_row | tf.gather(space, tf.minimum(index + 1, tf.maximum(count - 1, 0)))
    begins, ends = ~space & after_space, ~space & before_space
    first_char, last_char = tf.where(begins)[:, 0], tf.where(ends)[:, 0]
    num_words = tf.size(first_char, out_type=tf.int64)

    starts, classes = char_class_ranges()
    char_class = tf.gather(tf.constant(classes), tf.searchsorted(tf.constant(starts), code_points, side="right") - 1)
    # Each character's word (whitespace goes to an extra segment that is dropped).
    segment = tf.where(space, num_words, tf.cumsum(tf.cast(begins, tf.int64)) - 1)
    counts = tf.math.unsorted_segment_sum(tf.one_hot(char_class, 5, dtype=tf.int32), segment, num_words + 1)[:-1]
    cased = (char_class == UPPER_CHAR) | (char_class == LOWER_CHAR)
    first_cased = tf.math.unsorted_segment_min(tf.where(cased, index, count), segment, num_words + 1)[:-1]
    first_cased_class = tf.gather(tf.concat([char_class, [OTHER_CHAR]], 0), tf.minimum(first_cased, count))
    upper, lower = counts[:, UPPER_CHAR], counts[:, LOWER_CHAR]
    digit, uncased = counts[:, DIGIT_CHAR], counts[:, UNCASED_LETTER]
    shape = tf.where(
        upper + lower == 0,
        tf.where(uncased > 0, UNCASED, tf.where(digit > 0, DIGITS, OTHER)),
        tf.where(lower == 0, UPPER,
                 tf.where(upper == 0, LOWER, tf.where(first_cased_class == UPPER_CHAR, TITLE, MIXED))),
    )
    word_row = tf.gather(row, first_char)
    nrows = tf.shape(text, out_type=tf.int64)[0]

    def ragged(values):
        return tf.RaggedTensor.from_value_rowids(values, word_row, nrows=nrows, validate=False)

    return Words(ragged(tf.gather(position, first_char)), ragged(tf.gather(position, last_char) + 1),
                 ragged(tf.cast(shape, tf.int32)))


def viterbi_decode(probabilities: tf.Tensor, valid: tf.Tensor, labels: Sequence[str]) -> tf.Tensor:
    """Label ids ``[batch, words]`` of the most probable valid IOB2 sequence of each row.

    ``probabilities`` is ``[batch, words, labels]``; ``valid`` ``[batch, words]`` marks real
    words (a prefix of each row). Same algorithm, mask and float32 arithmetic as
    :func:`tfft.decoding.viterbi`; padded positions carry the score through unchanged.
    """
    start_allowed, allowed = transition_mask(labels)
    # Most sentences' arg-max tags are already valid, and then they are the optimum: the search
    # (a loop over words) runs only for a batch where some row's arg-max is not.
    best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    previous = tf.pad(best, [[0, 0], [1, 0]], constant_values=-1)[:, :-1]
    first = tf.range(tf.shape(best)[1])[None] == 0
    fine = tf.where(first, tf.gather(tf.constant(start_allowed), best),
                    tf.gather_nd(tf.constant(allowed), tf.stack([tf.maximum(previous, 0), best], -1)))
    return tf.cond(tf.reduce_all(fine | ~valid), lambda: best,
                   lambda: _viterbi_search(probabilities, valid, start_allowed, allowed))


def _viterbi_search(probabilities: tf.Tensor, valid: tf.Tensor, start_allowed: np.ndarray,
                    allowed: np.ndarray) -> tf.Tensor:
    num_labels = len(start_allowed)
    penalty = tf.constant(np.where(allowed, 0.0, FORBIDDEN), tf.float32)
    start_penalty = tf.constant(np.where(start_allowed, 0.0, FORBIDDEN), tf.float32)
    # At least one position, so that an all-empty batch still has a first step.
    width = tf.shape(probabilities)[1]
    padded = tf.pad(probabilities, [[0, 0], [0, tf.maximum(1 - width, 0)], [0, 0]], constant_values=1.0)
    valid = tf.pad(valid, [[0, 0], [0, tf.maximum(1 - width, 0)]])
    log_probabilities = tf.math.log(tf.maximum(padded, MIN_PROBABILITY))
    identity = tf.broadcast_to(tf.range(num_labels)[None], tf.shape(log_probabilities[:, 0]))

    def forward(carry, step):
        score, _ = carry
        step_log_probabilities, step_valid = step
        candidates = score[:, :, None] + penalty[None]
        best_previous = tf.argmax(candidates, axis=1, output_type=tf.int32)
        advanced = tf.reduce_max(candidates, axis=1) + step_log_probabilities
        return (tf.where(step_valid[:, None], advanced, score), tf.where(step_valid[:, None], best_previous, identity))

    first = log_probabilities[:, 0] + start_penalty[None]
    steps = (tf.transpose(log_probabilities[:, 1:], [1, 0, 2]), tf.transpose(valid[:, 1:]))
    scores, back = tf.scan(forward, steps, initializer=(first, identity))
    final = tf.concat([first[None], scores], 0)[-1]
    last = tf.argmax(final, axis=1, output_type=tf.int32)
    earlier = tf.scan(lambda label, pointers: tf.gather(pointers, label, batch_dims=1), back, initializer=last,
                      reverse=True)
    path = tf.transpose(tf.concat([earlier, last[None]], 0))
    return path[:, :width]
