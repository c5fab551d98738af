"""How large one request to an exported SavedModel may be, checked in the graph before any work.

Why: a model server runs every request it accepts to the end, so the only protection against a
request that would exhaust its memory is to refuse it first. Every signature passes its inputs
through :func:`checked_texts` or :func:`checked_ids`, which return them gated on the checks
(control dependencies): the word rule, the tokenizer and the model consume only the gated
tensors, so none of their ops can start before the size is known to be within the limits, and a
refused request costs a scan of its characters (milliseconds, no copy of the text). Below the
limits, a request costs time and memory linear in its size (``bench/serving_memory.py``).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from tfft.backend import tf

# Characters of one text (of a text and its pair together, for pair classification).
MAX_TEXT_CHARS = 100_000
# Texts (rows of token ids, for predict_ids) in one request.
MAX_REQUEST_TEXTS = 1_024
# Characters of one request counted as the graph holds them: the number of texts times the longest,
# since the outputs of token classification are padded to the longest text of the request. Twice the
# longest text: no request costs more than about two of the longest texts (0.9 GB each for NER with
# the default model, docs/results.md).
MAX_REQUEST_CHARS = 2 * MAX_TEXT_CHARS
# Token ids of one predict_ids request (rows times length): 128 rows of 512 tokens.
MAX_REQUEST_TOKENS = 65_536


# The graph name scope of the size checks (what tests/test_export.py finds them by).
CHECKS_SCOPE = "request_limits"


def request_limits() -> Dict[str, int]:
    """The limits, as the model card records them."""
    return {"max_text_chars": MAX_TEXT_CHARS, "max_request_texts": MAX_REQUEST_TEXTS,
            "max_request_chars": MAX_REQUEST_CHARS, "max_request_tokens": MAX_REQUEST_TOKENS}


def checked_texts(*texts: tf.Tensor) -> Tuple[tf.Tensor, ...]:
    """``texts`` (tf.string ``[batch]`` each: a text and, for pairs, its pair) once the request is within
    the limits; an InvalidArgument error naming the limit otherwise."""
    with tf.name_scope(CHECKS_SCOPE):
        return _gated(_text_checks(texts), texts)


def _text_checks(texts: Sequence[tf.Tensor]) -> list:
    rows = tf.size(texts[0], out_type=tf.int64)
    # UTF8_CHAR counts lead bytes: a scan of the bytes, allocating one number per text.
    chars = tf.add_n([tf.strings.length(text, unit="UTF8_CHAR") for text in texts])
    longest = tf.reduce_max(tf.concat([chars, [0]], 0))
    return [
        tf.debugging.assert_less_equal(
            rows, tf.constant(MAX_REQUEST_TEXTS, tf.int64),
            message=f"a request holds more than {MAX_REQUEST_TEXTS} texts (MAX_REQUEST_TEXTS); send fewer at a time"),
        tf.debugging.assert_less_equal(
            longest, MAX_TEXT_CHARS,
            message=f"a text is longer than {MAX_TEXT_CHARS} characters (MAX_TEXT_CHARS); split it before sending it"),
        tf.debugging.assert_less_equal(
            rows * tf.cast(longest, tf.int64), tf.constant(MAX_REQUEST_CHARS, tf.int64),
            message=f"a request holds more than {MAX_REQUEST_CHARS} characters counting each text as long as "
                    "the longest (MAX_REQUEST_CHARS); send long texts in smaller requests"),
    ]


def checked_ids(ids: Sequence[tf.Tensor], max_length: int) -> Tuple[tf.Tensor, ...]:
    """``ids`` (int ``[batch, length]`` each, same shape) once the request is within the limits and no
    longer than ``max_length`` tokens, the model's positions; an InvalidArgument error otherwise."""
    with tf.name_scope(CHECKS_SCOPE):
        return _gated(_id_checks(ids, max_length), ids)


def _id_checks(ids: Sequence[tf.Tensor], max_length: int) -> list:
    shape = tf.shape(ids[0], out_type=tf.int64)
    checks = [tf.debugging.assert_equal(tf.shape(other, out_type=tf.int64), shape,
                                        message="input_ids, attention_mask and token_type_ids differ in shape")
              for other in ids[1:]]
    checks += [
        tf.debugging.assert_less_equal(
            shape[0], tf.constant(MAX_REQUEST_TEXTS, tf.int64),
            message=f"a request holds more than {MAX_REQUEST_TEXTS} rows (MAX_REQUEST_TEXTS); send fewer at a time"),
        tf.debugging.assert_less_equal(
            shape[1], tf.constant(max_length, tf.int64),
            message=f"rows are longer than the {max_length} positions of the model"),
        tf.debugging.assert_less_equal(
            shape[0] * shape[1], tf.constant(MAX_REQUEST_TOKENS, tf.int64),
            message=f"a request holds more than {MAX_REQUEST_TOKENS} token ids (MAX_REQUEST_TOKENS); "
                    "send fewer rows at a time"),
    ]
    return checks


def _gated(checks, tensors: Sequence[tf.Tensor]) -> Tuple[tf.Tensor, ...]:
    """``tensors`` as new tensors that exist only after ``checks`` passed, so that every op consuming
    them waits for the checks (a graph runs independent ops in any order, or at once)."""
    with tf.control_dependencies(checks):
        return tuple(tf.identity(tensor) for tensor in tensors)
