"""Words, word shapes and constrained Viterbi decoding as core TensorFlow ops.

The serving graph's counterparts of :mod:`tfft.words` and :mod:`tfft.decoding`, built from
the same rules and tables (the word rule's regular expressions run through
``tf.strings.regex_replace``, a core op) so that a SavedModel splits, shapes and decodes
exactly as ``tfft predict`` does (``tests/test_graph_words.py`` compares them).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tfft.backend import tf
from tfft.decoding import FORBIDDEN, MIN_PROBABILITY, transition_mask
from tfft.words import (
    BREAK, DIGIT_CHAR, DIGITS, LOWER, LOWER_CHAR, MIXED, OTHER, OTHER_CHAR, PREPARE_REWRITES, TEXT_END, TEXT_START,
    TITLE, UNCASED, UNCASED_LETTER, UPPER, UPPER_CHAR, char_class_ranges, rewrites,
)

_DELIMITER_CODE_POINTS = [ord(c) for c in " " + BREAK + TEXT_START + TEXT_END]


class Words(NamedTuple):
    """The words of a batch of texts, ``[batch, (words)]`` each."""

    start: tf.RaggedTensor  # int64 code point offset of the first character
    end: tf.RaggedTensor  # int64 one past the last character
    shape: tf.RaggedTensor  # int32 index into tfft.words.SHAPES


def valid_utf8(text: tf.Tensor) -> tf.Tensor:
    """``text`` with invalid UTF-8 replaced by U+FFFD, as ``unicode_decode(errors="replace")`` reads it.

    Regular expressions, substrings and character offsets then all see the same characters.
    """
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)


def split_words(text: tf.Tensor, word_split: str) -> Words:
    """:func:`tfft.words.word_spans` and word shapes for ``text`` (valid UTF-8, tf.string ``[batch]``).

    Offsets are Python ``str`` indices. The working string is built by the same rewrites as
    :func:`tfft.words.working_text`; its characters stay in place apart from the breaks.
    """
    working = text
    for pattern, replacement in PREPARE_REWRITES:
        working = tf.strings.regex_replace(working, pattern, replacement)
    marked = tf.strings.join([TEXT_START, working, TEXT_END])
    for pattern, replacement in rewrites(word_split):
        marked = tf.strings.regex_replace(marked, pattern, replacement)

    chars = tf.strings.unicode_decode(marked, "UTF-8")
    code_points = chars.flat_values
    count = tf.size(code_points, out_type=tf.int64)
    row = chars.value_rowids()
    is_break = tf.equal(code_points, ord(BREAK))
    delimiter = tf.reduce_any(code_points[:, None] == tf.constant(_DELIMITER_CODE_POINTS), axis=1)
    # A character's offset in the text: its place in the row, less the breaks before it and TEXT_START.
    kept_before = tf.cumsum(tf.cast(~is_break, tf.int64), exclusive=True)
    offset = kept_before - tf.gather(tf.concat([kept_before, [0]], 0), tf.gather(chars.row_starts(), row)) - 1
    # Every word character has a neighbour on each side within its row (a sentinel at the least).
    index = tf.range(count)
    begins = ~delimiter & tf.gather(delimiter, tf.maximum(index - 1, 0))
    ends = ~delimiter & tf.gather(delimiter, tf.minimum(index + 1, tf.maximum(count - 1, 0)))
    first_char, last_char = tf.where(begins)[:, 0], tf.where(ends)[:, 0]
    num_words = tf.size(first_char, out_type=tf.int64)

    # Shapes come from the text's own characters (the working string has replaced some).
    original = tf.strings.unicode_decode(text, "UTF-8")
    word_char = tf.where(~delimiter)[:, 0]
    char_word = tf.gather(tf.cumsum(tf.cast(begins, tf.int64)), word_char) - 1
    char_row = tf.gather(row, word_char)
    char_code = tf.gather(original.flat_values,
                          tf.gather(original.row_starts(), char_row) + tf.gather(offset, word_char))
    shape = _word_shapes(char_code, char_word, num_words)

    word_row = tf.gather(row, first_char)
    nrows = tf.shape(text, out_type=tf.int64)[0]

    def ragged(values):
        return tf.RaggedTensor.from_value_rowids(values, word_row, nrows=nrows, validate=False)

    return Words(ragged(tf.gather(offset, first_char)), ragged(tf.gather(offset, last_char) + 1), ragged(shape))


def _word_shapes(code_points: tf.Tensor, word: tf.Tensor, num_words: tf.Tensor) -> tf.Tensor:
    """:func:`tfft.words.word_shape` of each word from its characters' code points and word numbers (in order)."""
    starts, classes = char_class_ranges()
    char_class = tf.gather(tf.constant(classes), tf.searchsorted(tf.constant(starts), code_points, side="right") - 1)
    counts = tf.math.unsorted_segment_sum(tf.one_hot(char_class, 5, dtype=tf.int32), word, num_words)
    cased = (char_class == UPPER_CHAR) | (char_class == LOWER_CHAR)
    none = tf.size(word, out_type=tf.int64)
    first_cased = tf.math.unsorted_segment_min(tf.where(cased, tf.range(none), none), word, num_words)
    first_cased_class = tf.gather(tf.concat([char_class, [OTHER_CHAR]], 0), tf.minimum(first_cased, none))
    upper, lower = counts[:, UPPER_CHAR], counts[:, LOWER_CHAR]
    digit, uncased = counts[:, DIGIT_CHAR], counts[:, UNCASED_LETTER]
    shape = tf.where(
        upper + lower == 0,
        tf.where(uncased > 0, UNCASED, tf.where(digit > 0, DIGITS, OTHER)),
        tf.where(lower == 0, UPPER,
                 tf.where(upper == 0, LOWER, tf.where(first_cased_class == UPPER_CHAR, TITLE, MIXED))),
    )
    return tf.cast(shape, tf.int32)


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
    # At least two positions (padding carries the score through), so that the scans below have a step
    # even when the longest text of the batch has one word: a scan over nothing cannot give the shape of
    # its empty result in a graph traced for any length, as TF Serving runs it.
    width = tf.shape(probabilities)[1]
    padded = tf.pad(probabilities, [[0, 0], [0, tf.maximum(2 - width, 0)], [0, 0]], constant_values=1.0)
    valid = tf.pad(valid, [[0, 0], [0, tf.maximum(2 - width, 0)]])
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
