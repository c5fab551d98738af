"""Pieces every in-graph tokenizer shares: code point tables, special tokens in the text, packing.

The tokenizers of this package read a ``tokenizer.json`` at export time and turn it into
constants and hash tables of a graph made of core TensorFlow ops only (no ``tensorflow_text``,
no ``tf.py_function``), so that a stock TF Serving binary runs them.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, Tuple, TypeVar

import numpy as np

from tfft.backend import tf

_T = TypeVar("_T")

NUM_CODE_POINTS = 0x110000
_BLOCK_BITS = 7

# Rust's char::is_whitespace / the regex crate's \s (the White_Space property).
WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)]
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


class CodePointTable(NamedTuple):
    """A value per code point, stored as shared blocks of 128 (most blocks repeat)."""

    block_index: np.ndarray
    block_values: np.ndarray


def code_point_table(values: np.ndarray) -> CodePointTable:
    """Compress ``values`` (one per code point, ``NUM_CODE_POINTS`` long) for :func:`lookup`."""
    blocks, index = np.unique(values.reshape(-1, 1 << _BLOCK_BITS), axis=0, return_inverse=True)
    return CodePointTable(index.reshape(-1).astype(np.int32), blocks.reshape(-1))


def lookup(table: CodePointTable, code_points: tf.Tensor) -> tf.Tensor:
    """``values[code_points]`` in the graph, from a :class:`CodePointTable`."""
    code_points = tf.clip_by_value(code_points, 0, NUM_CODE_POINTS - 1)
    block = tf.gather(table.block_index, tf.bitwise.right_shift(code_points, _BLOCK_BITS))
    within = tf.bitwise.bitwise_and(code_points, (1 << _BLOCK_BITS) - 1)
    return tf.gather(table.block_values, tf.bitwise.left_shift(block, _BLOCK_BITS) + within)


@functools.lru_cache(maxsize=1)
def general_categories() -> np.ndarray:
    """The first letter of every code point's general category (``L``, ``N``, ``M``, ...), as uint8."""
    return np.frombuffer(
        "".join(unicodedata.category(chr(cp))[0] for cp in range(NUM_CODE_POINTS)).encode("ascii"), np.uint8
    )


def on_cpu(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a public method's ops on the CPU (string and hash-table work) and keep autograph away."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        with tf.device("/CPU:0"):
            return method(*args, **kwargs)

    return tf.autograph.experimental.do_not_convert(run)


@dataclass(frozen=True)
class AddedToken:
    """An added token of tokenizer.json that is matched in the text before anything else."""

    content: str
    id: int
    lstrip: bool = False
    rstrip: bool = False


def added_tokens_of(spec: dict) -> list[AddedToken]:
    """The added tokens of a tokenizer.json, refusing options :class:`AddedTokenMatcher` does not implement."""
    tokens = []
    for entry in spec.get("added_tokens", []):
        if entry.get("single_word"):
            raise ValueError(f"added token {entry['content']!r} with single_word is not supported in the graph")
        tokens.append(AddedToken(entry["content"], int(entry["id"]), bool(entry.get("lstrip")),
                                 bool(entry.get("rstrip"))))
    return tokens


def decode_characters(text: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The characters of ``text`` (tf.string ``[batch]``; invalid UTF-8 read as U+FFFD) as one flat batch:
    ``(code_points, row, position, row_length)``, each character's row, place in it and its row's
    length, as :meth:`AddedTokenMatcher.match` takes them."""
    chars = tf.strings.unicode_decode(tf.convert_to_tensor(text, tf.string), "UTF-8", errors="replace")
    code_points = chars.flat_values
    row = chars.value_rowids()
    position = tf.range(tf.size(code_points, out_type=tf.int64)) - tf.gather(chars.row_starts(), row)
    return code_points, row, position, tf.gather(chars.row_lengths(), row)


class AddedTokenMatcher:
    """Finds added tokens written in the raw text, as Hugging Face does before normalising.

    Hugging Face matches them leftmost-longest; with tokens that cannot overlap (no token inside
    another, none ending with the start of one; checked here) a vectorised window comparison
    finds the same matches. ``lstrip``
    / ``rstrip`` tokens also take the whitespace next to them (which then vanishes).
    """

    def __init__(self, tokens: Sequence[AddedToken]):
        contents = [t.content for t in tokens]
        for a in contents:
            if not a:
                raise ValueError("an added token is empty")
            for b in contents:
                if a != b and a in b:
                    raise ValueError(f"added token {a!r} is inside {b!r}")
                if any(a.endswith(b[:k]) for k in range(1, min(len(a), len(b)))):
                    raise ValueError(f"added tokens {a!r} and {b!r} can overlap")
        self.tokens = list(tokens)
        width = max((len(t.content) for t in tokens), default=0)
        self.patterns = np.full((len(tokens), width), -1, dtype=np.int32)
        for i, token in enumerate(tokens):
            self.patterns[i, : len(token.content)] = [ord(ch) for ch in token.content]
        self.ids = np.array([t.id for t in tokens], dtype=np.int64)
        self.lengths = np.array([len(t.content) for t in tokens], dtype=np.int64)
        self.lstrip = np.array([t.lstrip for t in tokens], dtype=bool)
        self.rstrip = np.array([t.rstrip for t in tokens], dtype=bool)

    def match(self, code_points: tf.Tensor, row: tf.Tensor, position: tf.Tensor, row_length: tf.Tensor):
        """Per character of the flat batch: ``(token_id, covered, stripped_before, stripped_after)``.

        ``token_id`` is the id of the added token whose text starts there (-1 elsewhere),
        ``covered`` marks its characters, ``stripped_before`` / ``stripped_after`` the whitespace
        that lstrip / rstrip tokens take (it belongs to their span and vanishes from the text).
        ``row`` and ``position`` are each character's row and place in it, ``row_length`` its row's length.
        """
        count = tf.size(code_points, out_type=tf.int64)
        if not self.tokens:
            nothing = tf.zeros([count], tf.bool)
            return tf.fill([count], tf.constant(-1, tf.int64)), nothing, nothing, nothing
        width = self.patterns.shape[1]
        patterns = tf.constant(self.patterns)[None]
        offsets = tf.range(width, dtype=tf.int64)
        index = tf.range(count)[:, None] + offsets
        window = tf.where(
            position[:, None] + offsets < row_length[:, None],
            tf.gather(tf.concat([code_points, [-1]], 0), tf.minimum(index, count)),
            -1,
        )
        found = tf.reduce_all((window[:, None, :] == patterns) | (patterns < 0), axis=2)
        token_id = tf.reduce_max(tf.where(found, tf.constant(self.ids), -1), axis=1)
        start_length = tf.reduce_max(tf.where(found, tf.constant(self.lengths), 0), axis=1)
        back = tf.range(count)[:, None] - offsets
        reach = tf.gather(tf.concat([start_length, [0]], 0), tf.where(back >= 0, back, count))
        covered = tf.reduce_any(reach > offsets, axis=1)

        # Whitespace runs next to an lstrip (rstrip) token: the run's neighbour decides.
        space = tf.reduce_any(code_points[:, None] == tf.constant(sorted(WHITESPACE), tf.int32), axis=1) & ~covered
        lstrip_at = tf.reduce_any(found & tf.constant(self.lstrip), axis=1)
        end_length = tf.reduce_max(tf.where(found & tf.constant(self.rstrip), tf.constant(self.lengths), 0), axis=1)
        before = _next_after_run(space, row, lstrip_at, forward=True)
        after = _next_after_run(space, row, _shift(end_length > 0, end_length), forward=False) & ~before
        return token_id, covered, before, after


def _shift(flag: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Mark ``i + length[i] - 1`` for every ``i`` with ``flag`` (the last character of a match)."""
    count = tf.size(flag, out_type=tf.int64)
    last = tf.boolean_mask(tf.range(count) + length - 1, flag)
    return tf.scatter_nd(last[:, None], tf.ones_like(last, tf.bool), [count])


def _next_after_run(space: tf.Tensor, row: tf.Tensor, flagged: tf.Tensor, forward: bool) -> tf.Tensor:
    """Whitespace characters whose run (within a row) is followed (``forward``) or preceded by a flagged character."""
    count = tf.size(space, out_type=tf.int64)
    index = tf.range(count)
    if not forward:
        space, row, flagged = tf.reverse(space, [0]), tf.reverse(row, [0]), tf.reverse(flagged, [0])
    # For each position, the first non-space position at or after it.
    non_space = tf.where(~space)[:, 0]
    next_non_space = tf.gather(tf.concat([non_space, [count]], 0),
                               tf.searchsorted(non_space, index, side="left", out_type=tf.int64))
    safe = tf.minimum(next_non_space, count - 1)
    hit = space & (next_non_space < count) & tf.gather(flagged, safe) & tf.equal(tf.gather(row, safe), row)
    return tf.reverse(hit, [0]) if not forward else hit


class PostProcessor(NamedTuple):
    """The layout of model inputs: ``[(special id or -1 for sequence A / -2 for B, type id)]`` per template."""

    single: tuple
    pair: tuple

    @classmethod
    def from_spec(cls, spec: dict | None) -> "PostProcessor":
        """Read RobertaProcessing, BertProcessing or TemplateProcessing from a tokenizer.json."""
        if not spec:
            raise ValueError("tokenizer.json has no post_processor (the graph needs its special tokens)")
        kind = spec.get("type")
        if kind == "Sequence":
            parts = [p for p in spec.get("processors", []) if p.get("type") != "ByteLevel"]
            if len(parts) != 1:
                raise ValueError(f"post_processor Sequence of {[p.get('type') for p in spec['processors']]}")
            return cls.from_spec(parts[0])
        if kind in ("RobertaProcessing", "BertProcessing"):
            cls_id, sep_id = spec["cls"][1], spec["sep"][1]
            if kind == "RobertaProcessing":
                return cls(((cls_id, 0), (-1, 0), (sep_id, 0)),
                           ((cls_id, 0), (-1, 0), (sep_id, 0), (sep_id, 0), (-2, 0), (sep_id, 0)))
            return cls(((cls_id, 0), (-1, 0), (sep_id, 0)), ((cls_id, 0), (-1, 0), (sep_id, 0), (-2, 1), (sep_id, 1)))
        if kind == "TemplateProcessing":
            specials = spec.get("special_tokens", {})

            def layout(items: list) -> tuple:
                out = []
                for item in items:
                    if "Sequence" in item:
                        out.append((-1 if item["Sequence"]["id"] == "A" else -2, item["Sequence"]["type_id"]))
                    else:
                        ids = specials[item["SpecialToken"]["id"]]["ids"]
                        out.extend((i, item["SpecialToken"]["type_id"]) for i in ids)
                return tuple(out)

            return cls(layout(spec["single"]), layout(spec["pair"]))
        raise ValueError(f"post_processor {kind!r} is not supported in the graph")


def pack(layout: tuple, pad_id: int, max_length: int, sequences: Sequence[tf.RaggedTensor]) -> dict[str, tf.Tensor]:
    """Model inputs from token ids, like ``tokenizer(..., truncation=True, padding="longest")``.

    ``layout`` is a :class:`PostProcessor` template; sequences are truncated from the right
    with Hugging Face's ``longest_first`` rule (:func:`longest_first`) so that every row has at
    most ``max_length`` tokens, and rows are padded with ``pad_id``.
    """
    num_added = sum(1 for token, _ in layout if token >= 0)
    budget = max_length - num_added
    if budget < 0:
        raise ValueError(f"max_length={max_length} leaves no room for the {num_added} special tokens")
    if len(sequences) == 1:
        keeps = [tf.minimum(sequences[0].row_lengths(), budget)]
    else:
        keeps = list(longest_first(sequences[0].row_lengths(), sequences[1].row_lengths(), budget))
    batch = tf.shape(keeps[0], out_type=tf.int64)[0]
    lengths = [tf.ones([batch], tf.int64) if token >= 0 else keeps[-1 - token] for token, _ in layout]
    ends = tf.cumsum(tf.stack(lengths, 1), axis=1)  # [batch, sections]
    length = ends[:, -1]
    column = tf.range(tf.reduce_max(tf.concat([length, [0]], 0)))
    section = tf.searchsorted(ends, tf.broadcast_to(column[None], tf.stack([batch, tf.size(column, out_type=tf.int64)])),
                              side="right", out_type=tf.int64)
    section = tf.minimum(section, len(layout) - 1)
    within = column[None] - (tf.gather(ends, section, batch_dims=1) - tf.gather(tf.stack(lengths, 1), section,
                                                                                  batch_dims=1))
    input_ids = tf.gather(tf.constant([t for t, _ in layout], tf.int64), section)
    for number, ragged in enumerate(sequences):
        values = tf.concat([tf.cast(ragged.flat_values, tf.int64), [pad_id]], 0)
        index = tf.clip_by_value(ragged.row_starts()[:, None] + within, 0, tf.size(values, out_type=tf.int64) - 1)
        input_ids = tf.where(input_ids == -1 - number, tf.gather(values, index), input_ids)
    real = column[None] < length[:, None]
    return {
        "input_ids": tf.where(real, input_ids, tf.constant(pad_id, tf.int64)),
        "attention_mask": tf.cast(real, tf.int64),
        "token_type_ids": tf.where(real, tf.gather(tf.constant([t for _, t in layout], tf.int64), section), 0),
    }


def assemble(token_id: tf.Tensor, token_piece: tf.Tensor, token_start: tf.Tensor, token_end: tf.Tensor,
             piece_row: tf.Tensor, nrows: tf.Tensor):
    """The tokenizers' common output from flat per-token values (in order) and each piece's row.

    Returns ``(token_ids, token_word_index, word_start, word_end)`` as the WordPiece tokenizer
    does: a piece (pre-token) spans from its first token's start to its last token's end.
    """
    num_pieces = tf.size(piece_row, out_type=tf.int64)
    token = tf.range(tf.size(token_piece, out_type=tf.int64))
    # A piece without tokens (possible only when unknown bytes are dropped) spans nothing.
    count = tf.size(token, out_type=tf.int64)
    first = tf.minimum(tf.math.unsorted_segment_min(token, token_piece, num_pieces), count)
    last = tf.math.unsorted_segment_max(token, token_piece, num_pieces)
    start = tf.gather(tf.concat([token_start, [0]], 0), first)
    end = tf.gather(tf.concat([token_end, [0]], 0), tf.where(last < 0, count, last))
    word_start = tf.RaggedTensor.from_value_rowids(start, piece_row, nrows=nrows, validate=False)
    token_row = tf.gather(piece_row, token_piece)
    token_ids = tf.RaggedTensor.from_value_rowids(token_id, token_row, nrows=nrows, validate=False)
    word_index = token_piece - tf.gather(word_start.row_starts(), token_row)
    return token_ids, token_ids.with_flat_values(word_index), word_start, word_start.with_flat_values(end)


def longest_first(first: tf.Tensor, second: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
    """How many tokens of each sequence of a pair to keep: tokenizers' ``LongestFirst`` truncation.

    A transcription of ``truncate_encodings`` in tokenizers, per row (``budget`` is
    max_length minus the special tokens). When the pair is too long, the shorter sequence
    is kept whole if the longer one can take the rest of the budget; otherwise the shorter
    gets ``budget // 2`` and the longer ``budget // 2 + budget % 2`` (the second sequence
    counts as the longer one on a tie).
    """
    swap = first > second
    short = tf.minimum(first, second)
    n2 = tf.where(short > budget, short, tf.maximum(short, budget - short))
    over = short + n2 > budget
    n1 = tf.where(over, tf.constant(budget // 2, tf.int64), short)
    n2 = tf.where(over, tf.constant(budget // 2 + budget % 2, tf.int64), n2)
    fits = first + second <= budget
    first_keep = tf.where(fits, first, tf.minimum(first, tf.where(swap, n2, n1)))
    second_keep = tf.where(fits, second, tf.minimum(second, tf.where(swap, n1, n2)))
    return first_keep, second_keep
