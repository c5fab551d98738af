"""Byte-level BPE (RoBERTa, GPT-2 pre-tokenization) as core TensorFlow ops, built from tokenizer.json.

The pipeline of ``tokenizers`` with a ``ByteLevel`` pre-tokenizer and a ``BPE`` model:

* added tokens (``<s>``, ``<mask>`` ...) written in the text are matched first and split
  the text into segments (:class:`~tfft.export.graph_tokenizers.common.AddedTokenMatcher`);
* ``add_prefix_space`` puts a space before every segment that does not start with one;
* the GPT-2 regular expression
  ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`` splits a
  segment into pieces. RE2 has no look-ahead, so it is evaluated as rules over character
  classes (letter / number / whitespace / other): a run of one class is a piece, a single
  space before a non-space run joins it, and a whitespace run followed by a non-space keeps
  its last character apart;
* each piece's UTF-8 bytes become the byte-level alphabet (``Ġ`` for a space) and BPE merges
  the adjacent pair of lowest rank, all pieces at once, until no pair is in the merges;
* offsets are trimmed of the spaces a token carries as the ``RobertaProcessing`` /
  ``ByteLevel`` post-processor does with ``trim_offsets``.

Cost: one merge round per loop step, over the symbols of the pieces that still merge; a piece
of ``n`` bytes needs at most ``n - 1`` rounds, so a single word of ``n`` bytes costs ``O(n²)``
(``n`` is bounded by the serving signature's ``MAX_TEXT_CHARS``); ordinary words (a few to a
few dozen bytes) keep it linear in the text. Character classes come from Python's
``unicodedata`` (letters ``L*``, numbers ``N*``); characters assigned after its Unicode version
may be classed differently from the Rust regex crate's tables.
"""

from __future__ import annotations

import functools

import numpy as np

from tfft.backend import tf
from tfft.export.graph_tokenizers.common import (
    NUM_CODE_POINTS, WHITESPACE, AddedTokenMatcher, PostProcessor, added_tokens_of, assemble, code_point_table,
    decode_characters, general_categories, lookup, on_cpu, pack,
)

_LETTER, _NUMBER, _OTHER, _SPACE, _CONTRACTION, _ADDED = range(6)
_NO_RANK = np.iinfo(np.int64).max
_CONTRACTION_2 = [ord(c) for c in "stmd"]  # 's 't 'm 'd
_CONTRACTION_3 = [(ord(a), ord(b)) for a, b in ("re", "ve", "ll")]


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


@functools.lru_cache(maxsize=1)
def _regex_classes():
    """The GPT-2 regex's class of every code point: \\p{L}, \\p{N}, \\s or other."""
    category = general_categories()
    classes = np.full(NUM_CODE_POINTS, _OTHER, dtype=np.int32)
    classes[category == ord("L")] = _LETTER
    classes[category == ord("N")] = _NUMBER
    classes[sorted(WHITESPACE)] = _SPACE
    return code_point_table(classes)


def bpe_merge(symbols: tf.Tensor, piece: tf.Tensor, num_pieces: tf.Tensor, ranks: tf.lookup.StaticHashTable,
              extra: tuple = ()) -> tuple:
    """Apply BPE merges to the symbols of all pieces at once.

    ``symbols`` (strings) are in piece order, ``piece`` their piece index; ``ranks`` maps
    ``"left right"`` to the merge's rank. Each round merges, in every piece, the pair of lowest
    rank (every non-overlapping occurrence, left to right, as Hugging Face's priority queue
    does). ``extra`` are int64 tensors aligned with the symbols, merged with ``(min, max)``
    pairs: pass ``(first, last)`` byte indices to keep each symbol's span. Returns
    ``(symbols, piece, *extra)``.
    """

    def round_(done, symbols, piece, *extra):
        same = piece[:-1] == piece[1:]
        rank = ranks.lookup(tf.strings.join([symbols[:-1], symbols[1:]], separator=" "))
        rank = tf.where(same & (rank >= 0), rank, _NO_RANK)
        best = tf.math.unsorted_segment_min(rank, piece[:-1], num_pieces)
        matched = (rank < _NO_RANK) & tf.equal(rank, tf.gather(best, piece[:-1]))
        run_start = matched & ~tf.concat([[False], matched[:-1]], 0)
        starts = tf.where(run_start)[:, 0]
        run = tf.maximum(tf.cumsum(tf.cast(run_start, tf.int64)) - 1, 0)
        pair = tf.range(tf.size(matched, out_type=tf.int64))
        selected = matched & ((pair - tf.gather(tf.concat([starts, [0]], 0), run)) % 2 == 0)
        joins = tf.concat([[False], selected], 0)[: tf.size(symbols)]
        target = tf.cumsum(tf.cast(~joins, tf.int64)) - 1
        count = tf.reduce_sum(tf.cast(~joins, tf.int64))
        merged = [tf.strings.unsorted_segment_join(symbols, target, count),
                  tf.math.unsorted_segment_min(piece, target, count)]
        for index, values in enumerate(extra):
            reduce = tf.math.unsorted_segment_min if index % 2 == 0 else tf.math.unsorted_segment_max
            merged.append(reduce(values, target, count))
        return (~tf.reduce_any(selected), *merged)

    loop_vars = (tf.constant(False), symbols, piece, *extra)
    result = tf.while_loop(lambda done, *_: ~done, round_, loop_vars,
                           shape_invariants=(tf.TensorShape([]),) + (tf.TensorShape([None]),) * (len(loop_vars) - 1))
    return result[1:]


def ranks_table(merges: list) -> tf.lookup.StaticHashTable:
    """``"left right"`` -> rank, from tokenizer.json's merges (``"a b"`` strings or ``[a, b]`` pairs)."""
    pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
    if any(len(p) != 2 or any(" " in part for part in p) for p in pairs):
        raise ValueError("a BPE merge contains a space, which the graph uses to join pairs")
    keys = [" ".join(p) for p in pairs]
    ranks = {}
    for rank, key in enumerate(keys):
        ranks.setdefault(key, rank)
    with tf.device("/CPU:0"):
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(ranks), tf.string),
                                                tf.constant(list(ranks.values()), tf.int64)),
            default_value=-1)


def vocab_table(vocab: dict[str, int]) -> tf.lookup.StaticHashTable:
    """token string -> id."""
    with tf.device("/CPU:0"):
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocab), tf.string),
                                                tf.constant(list(vocab.values()), tf.int64)),
            default_value=-1)


def utf8_bytes(code_points: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The UTF-8 bytes (int32) of ``code_points`` back to back, and each byte's character index."""
    code_points = tf.cast(code_points, tf.int64)
    length = 1 + tf.add_n([tf.cast(code_points >= bound, tf.int64) for bound in (0x80, 0x800, 0x10000)])
    char = tf.repeat(tf.range(tf.size(code_points, out_type=tf.int64)), length)
    rank = tf.range(tf.reduce_sum(length)) - tf.gather(tf.cumsum(length, exclusive=True), char)
    cp = tf.gather(code_points, char)
    n = tf.gather(length, char)
    lead_mark = tf.gather(tf.constant([0, 0, 0xC0, 0xE0, 0xF0], tf.int64), n)
    shift = 6 * (n - 1 - rank)
    value = tf.where(rank == 0, lead_mark | tf.bitwise.right_shift(cp, shift),
                     0x80 | tf.bitwise.bitwise_and(tf.bitwise.right_shift(cp, shift), 0x3F))
    return tf.cast(value, tf.int32), char


class ByteLevelBpeTokenizer(tf.Module):
    """A ByteLevel + BPE tokenizer.json (RoBERTa, GPT-2 style) as graph ops; see the module docstring.

    Same interface as :class:`~tfft.export.tokenizer.InGraphBertTokenizer`: ``tokenize``
    and ``pack``.
    """

    def __init__(self, spec: dict):
        super().__init__(name="in_graph_byte_level_bpe")
        model, pre = spec["model"], spec["pre_tokenizer"]
        if pre.get("type") == "Sequence":
            (pre,) = pre["pretokenizers"]
        if spec.get("normalizer"):
            raise ValueError(f"normalizer {spec['normalizer'].get('type')!r} with a ByteLevel pre-tokenizer "
                             "is not supported in the graph")
        if not pre.get("use_regex", True):
            raise ValueError("ByteLevel pre-tokenizer with use_regex=false is not supported in the graph")
        for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(option):
                raise ValueError(f"BPE option {option}={model[option]!r} is not supported in the graph")
        self.add_prefix_space = bool(pre.get("add_prefix_space"))
        processor = spec.get("post_processor") or {}
        trimmers = [p for p in ([processor] + processor.get("processors", []))
                    if p.get("type") in ("RobertaProcessing", "ByteLevel")]
        self.trim_offsets = any(p.get("trim_offsets") for p in trimmers)
        self.trim_prefix_space = any(p.get("add_prefix_space") for p in trimmers)
        self.layout = PostProcessor.from_spec(processor)
        vocab = model["vocab"]
        self.vocab_size = max(vocab.values()) + 1
        self.unk_id = vocab.get(model.get("unk_token"), -1) if model.get("unk_token") else -1
        self.pad_id = _pad_id(spec, vocab)
        self._byte_symbols = bytes_to_unicode()
        self._vocab = vocab_table(vocab)
        self._ranks = ranks_table(model["merges"])
        self._matcher = AddedTokenMatcher(added_tokens_of(spec))
        self._classes = _regex_classes()

    @on_cpu
    def tokenize(self, text: tf.Tensor):
        """Token ids ``[batch, (tokens)]`` of ``text`` (tf.string ``[batch]``), without special tokens.

        Returns ``(token_ids, token_word_index, word_start, word_end)`` as
        :meth:`~tfft.export.tokenizer.InGraphBertTokenizer.tokenize` does; a "word" is a
        pre-tokenizer piece, its span the Hugging Face offsets of its first and last token.
        """
        code_points, row, position, row_length = decode_characters(text)
        # Whitespace that lstrip/rstrip tokens take vanishes; their offsets exclude it, as trimming would.
        added_id, covered, before, after = self._matcher.match(code_points, row, position, row_length)
        kept = tf.where(~before & ~after)[:, 0]
        code_points, row, position = (tf.gather(t, kept) for t in (code_points, row, position))
        added_id, covered = tf.gather(added_id, kept), tf.gather(covered, kept)

        # Segments: runs of text between added tokens, and each added token.
        index = tf.range(tf.size(code_points, out_type=tf.int64))
        previous = tf.maximum(index - 1, 0)
        segment_first = ((index == 0) | (tf.gather(row, previous) != row) | (added_id >= 0)
                         | (tf.gather(covered, previous) & ~covered))
        if self.add_prefix_space:  # a space before every text segment that does not start with one
            insert = segment_first & ~covered & (code_points != 32)
            source = tf.repeat(index, 1 + tf.cast(insert, tf.int64))
            out = tf.range(tf.size(source, out_type=tf.int64))
            first_copy = (out == 0) | (tf.gather(source, tf.maximum(out - 1, 0)) != source)
            virtual = first_copy & tf.gather(insert, source)
            code_points = tf.where(virtual, 32, tf.gather(code_points, source))
            segment_first = virtual | (tf.gather(segment_first, source) & ~tf.gather(insert, source))
            row, position, added_id, covered = (tf.gather(t, source) for t in (row, position, added_id, covered))
            index = tf.range(tf.size(code_points, out_type=tf.int64))
        pieces, piece_row, piece_added = self._split(code_points, covered, added_id, segment_first, row)

        # Bytes of the text pieces, in the byte-level alphabet, then BPE.
        text_char = tf.where(tf.gather(piece_added, pieces) < 0)[:, 0]
        byte, byte_char = utf8_bytes(tf.gather(code_points, text_char))
        byte_char = tf.gather(text_char, byte_char)
        byte_index = tf.range(tf.size(byte, out_type=tf.int64))
        num_pieces = tf.size(piece_row, out_type=tf.int64)
        symbols, symbol_piece, first, last = bpe_merge(
            tf.gather(tf.constant(self._byte_symbols), byte), tf.gather(pieces, byte_char), num_pieces, self._ranks,
            (byte_index, byte_index))
        token_id = self._vocab.lookup(symbols)
        if self.unk_id >= 0:
            token_id = tf.where(token_id < 0, tf.constant(self.unk_id, tf.int64), token_id)
        known = tf.where(token_id >= 0)[:, 0]  # without an unk token, Hugging Face drops unknown bytes
        token_id, symbol_piece, first, last = (tf.gather(t, known) for t in (token_id, symbol_piece, first, last))
        start = tf.gather(position, tf.gather(byte_char, first))
        end = tf.gather(position, tf.gather(byte_char, last)) + 1
        if self.trim_offsets:
            # The first token of a row: its piece comes first in the row (added tokens are pieces too).
            piece_first_in_row = tf.concat([[True], piece_row[1:] != piece_row[:-1]], 0)
            first_in_piece = tf.concat([[True], symbol_piece[1:] != symbol_piece[:-1]], 0)[: tf.size(symbol_piece)]
            start, end = self._trim(byte, first, last, start, end,
                                    first_in_piece & tf.gather(piece_first_in_row, symbol_piece))

        # Added tokens: one token per added-token piece, spanning its characters.
        added_piece = tf.where(piece_added >= 0)[:, 0]
        piece_first_char = tf.math.unsorted_segment_min(index, pieces, num_pieces)
        piece_last_char = tf.math.unsorted_segment_max(index, pieces, num_pieces)
        all_piece = tf.concat([symbol_piece, added_piece], 0)
        order = tf.argsort(all_piece, stable=True)
        return assemble(
            tf.gather(tf.concat([token_id, tf.gather(piece_added, added_piece)], 0), order),
            tf.gather(all_piece, order),
            tf.gather(tf.concat([start, tf.gather(position, tf.gather(piece_first_char, added_piece))], 0), order),
            tf.gather(tf.concat([end, tf.gather(position, tf.gather(piece_last_char, added_piece)) + 1], 0), order),
            piece_row, tf.shape(text, out_type=tf.int64)[0])

    def _split(self, code_points, covered, added_id, segment_first, row):
        """Pieces of the GPT-2 regex: each character's piece index, and each piece's row and added-token id."""
        count = tf.size(code_points, out_type=tf.int64)
        index = tf.range(count)
        segment_last = tf.concat([segment_first[1:], [True]], 0)

        def before(values, default):
            return tf.where(segment_first, default, tf.gather(values, tf.maximum(index - 1, 0)))

        def after(values, default):
            return tf.where(segment_last, default, tf.gather(values, tf.minimum(index + 1, tf.maximum(count - 1, 0))))

        char_class = tf.where(covered, _ADDED, lookup(self._classes, code_points))
        next_class = after(char_class, _ADDED)
        previous_class = before(char_class, _ADDED)
        previous_cp = before(code_points, -1)
        next_cp = after(code_points, -1)
        after_next = after(next_cp, -1)
        is_space = code_points == 32
        absorbed = is_space & (next_class != _SPACE) & (next_class != _ADDED)
        contraction_length = tf.where(
            tf.reduce_any(next_cp[:, None] == tf.constant(_CONTRACTION_2), axis=1), 2,
            tf.where(tf.reduce_any((next_cp[:, None] == tf.constant([a for a, _ in _CONTRACTION_3]))
                                   & (after_next[:, None] == tf.constant([b for _, b in _CONTRACTION_3])), axis=1),
                     3, 0))
        contraction = ((code_points == 39) & (contraction_length > 0) & ~covered
                       & (previous_class != _OTHER) & (previous_cp != 32))
        inside = tf.zeros([count], tf.bool)
        for back in (1, 2):
            earlier = tf.maximum(index - back, 0)
            inside |= ((index >= back) & tf.gather(contraction, earlier)
                       & (tf.gather(tf.cast(contraction_length, tf.int64), earlier) > back)
                       & tf.equal(tf.gather(row, earlier), row))
        char_class = tf.where(contraction | inside, _CONTRACTION, char_class)
        previous_class = before(char_class, _ADDED)
        previous_absorbed = before(absorbed, False)
        space = char_class == _SPACE
        begins = (segment_first | contraction
                  | (~space & (char_class != previous_class) & ~previous_absorbed)
                  | (space & (absorbed | (previous_class != _SPACE)))
                  | (space & ~is_space & (next_class != _SPACE) & ~segment_last))
        pieces = tf.cumsum(tf.cast(begins, tf.int64)) - 1
        starts = tf.where(begins)[:, 0]
        return pieces, tf.gather(row, starts), tf.where(tf.gather(covered, starts), tf.gather(added_id, starts), -1)

    def _trim(self, byte, first, last, start, end, first_of_row):
        """Offsets without the spaces at either end of a token (tokenizers' ``process_offsets``)."""
        count = tf.size(byte, out_type=tf.int64)
        index = tf.range(count)
        space = byte == 32
        not_space = tf.where(~space)[:, 0]
        next_other = tf.gather(tf.concat([not_space, [count]], 0),
                               tf.searchsorted(not_space, index, side="left", out_type=tf.int64))
        previous_other = tf.gather(tf.concat([[-1], not_space], 0),
                                   tf.searchsorted(not_space, index, side="right", out_type=tf.int64))
        leading = tf.minimum(tf.gather(next_other, first), last + 1) - first
        trailing = last - tf.maximum(tf.gather(previous_other, last), first - 1)
        keep_prefix = (first_of_row | (start == 0)) & tf.constant(self.trim_prefix_space) & (leading == 1)
        new_start = tf.where((leading > 0) & ~keep_prefix, tf.minimum(start + leading, end), start)
        new_end = tf.where((trailing > 0) & (end >= trailing), tf.maximum(end - trailing, new_start), end)
        return new_start, new_end

    @on_cpu
    def pack(self, token_ids: tf.RaggedTensor, max_length: int, pair_token_ids: tf.RaggedTensor | None = None):
        """Model inputs as the tokenizer's post-processor lays them out (``<s> A </s>``, ``<s> A </s></s> B </s>``)."""
        if pair_token_ids is None:
            return pack(self.layout.single, self.pad_id, max_length, [token_ids])
        return pack(self.layout.pair, self.pad_id, max_length, [token_ids, pair_token_ids])


def _pad_id(spec: dict, vocab: dict[str, int]) -> int:
    """The padding id: tokenizer.json's padding settings, else a ``<pad>`` / ``[PAD]`` token, else 0."""
    padding = spec.get("padding") or {}
    if "pad_id" in padding:
        return int(padding["pad_id"])
    tokens = {**vocab, **{t["content"]: t["id"] for t in spec.get("added_tokens", [])}}
    for token in ("<pad>", "[PAD]", "<|endoftext|>"):
        if token in tokens:
            return int(tokens[token])
    return 0
