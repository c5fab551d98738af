"""SentencePiece tokenizers (XLM-R, ALBERT, DeBERTa-v2/v3) as core TensorFlow ops, built from tokenizer.json.

The Hugging Face fast tokenizers of these models run: added tokens matched in the raw text,
a normalizer (a ``Sequence`` of ``Precompiled``, ``Strip``, ``Replace``, ``NFKD``,
``StripAccents``, ``Lowercase``), the ``Metaspace`` pre-tokenizer (spaces become ``▁``, a
``▁`` is prepended, pieces split before each ``▁``; after a ``WhitespaceSplit`` as older converters
wrote it, e.g. albert-base-v2, every word is prepended) and a ``Unigram`` model (Viterbi over
the piece scores, unknown characters fused into one unk token or spelled as byte tokens) or
a ``BPE`` model. Each step is done here on a flat "normalized string": its code points and,
per code point, the span of original characters it came from, which is how Hugging Face
aligns normalized text to offsets (a replacement's extra characters share the alignment of
the character before them).

``Precompiled`` is SentencePiece's normalization rule set (``nmt_nfkc``: NFKC plus some
maps), a trie from strings to replacements stored in the tokenizer.json. It is decoded at
export time: single characters become a code point table, and the multi-character keys that
Hugging Face can reach (it looks up a whole grapheme cluster shorter than 6 bytes before
falling back to its characters) become a hash table. Grapheme clusters are approximated in
the graph as a character followed by combining marks (categories M*), ZWJ, emoji modifiers,
or ``\\r\\n``; Hugging Face uses the full Unicode segmentation rules, which differ only for
clusters that these rules do not form and that are shorter than 6 bytes.

Known divergences: per-character normalizers (``NFKD``, ``StripAccents``, ``Lowercase``, and
``Precompiled`` when one of them precedes it, as in ALBERT) are applied character by character,
so canonical reordering of combining marks and grapheme lookups on their output are not
reproduced; added tokens marked ``normalized`` are matched in the raw text. ``NFC``/``NFKC``
normalizers and regular expressions other than runs of one character are refused.

Cost: Viterbi advances one character position per loop step over all pieces at once, so the
work is linear in the text (times the longest vocabulary piece); the loop runs as many steps as
the longest piece has characters.
"""

from __future__ import annotations

import base64
import functools
import re
import unicodedata
from typing import NamedTuple

import numpy as np

from tfft.backend import tf
from tfft.export.graph_tokenizers.bpe import _pad_id, bpe_merge, ranks_table, utf8_bytes, vocab_table
from tfft.export.graph_tokenizers.common import (
    NUM_CODE_POINTS, WHITESPACE, AddedTokenMatcher, PostProcessor, added_tokens_of, assemble, code_point_table,
    decode_characters, general_categories, lookup, on_cpu, pack,
)

_UNK_PENALTY = 10.0  # tokenizers' K_UNK_PENALTY: an unknown character scores min_score - 10
_GRAPHEME_LOOKUP_BYTES = 6  # Hugging Face's Precompiled looks up whole graphemes shorter than this
_PER_CHAR = ("NFKD", "NFD", "StripAccents", "Lowercase")


class _Text(NamedTuple):
    """A batch of normalized text segments, flat: per code point its segment and original span."""

    code_points: tf.Tensor  # int32 [C]
    start: tf.Tensor  # int64 [C], first original character (code point offset in its text)
    end: tf.Tensor  # int64 [C], one past the last
    segment: tf.Tensor  # int64 [C], nondecreasing


def _expand(count: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """For a rewrite where code point ``i`` becomes ``count[i]`` code points: each output's source and rank."""
    source = tf.repeat(tf.range(tf.size(count, out_type=tf.int64)), count)
    rank = tf.range(tf.size(source, out_type=tf.int64)) - tf.gather(tf.cumsum(count, exclusive=True), source)
    return source, rank


def _take(text: _Text, index: tf.Tensor, code_points: tf.Tensor | None = None) -> _Text:
    return _Text(tf.gather(text.code_points, index) if code_points is None else code_points,
                 tf.gather(text.start, index), tf.gather(text.end, index), tf.gather(text.segment, index))


def _segment_edges(text: _Text) -> tuple[tf.Tensor, tf.Tensor]:
    """Whether each code point is the first / last of its segment."""
    segment = text.segment
    first = tf.concat([[True], segment[1:] != segment[:-1]], 0)[: tf.size(segment)]
    last = tf.concat([segment[1:] != segment[:-1], [True]], 0)[: tf.size(segment)]
    return first, last


class _Rules(NamedTuple):
    """Replacement strings: rule ``r`` (> 0) writes ``out[start[r]: start[r] + length[r]]``; rule 0 keeps."""

    start: np.ndarray
    length: np.ndarray
    out: np.ndarray


def _rules(replacements: list[str]) -> _Rules:
    lengths = np.array([0] + [len(r) for r in replacements], np.int64)
    return _Rules(np.cumsum(lengths) - lengths, lengths,
                  np.array([ord(c) for r in replacements for c in r] + [0], np.int32))


def _apply_rules(text: _Text, rule: tf.Tensor, rules: _Rules, unit_first: tf.Tensor, unit_size: tf.Tensor) -> _Text:
    """Rewrite units (runs of code points; each starts at ``unit_first`` with ``unit_size`` code points).

    A unit with rule 0 is kept; otherwise it becomes the rule's string, whose ``k``-th code point
    is aligned to the unit's ``min(k, size - 1)``-th (Hugging Face's ``transform``).
    """
    count = tf.where(rule == 0, unit_size, tf.gather(rules.length, rule))
    unit, rank = _expand(count)
    rule_of = tf.gather(rule, unit)
    first = tf.gather(unit_first, unit)
    source = first + tf.where(rule_of == 0, rank, tf.minimum(rank, tf.gather(unit_size, unit) - 1))
    replaced = tf.gather(rules.out, tf.gather(rules.start, rule_of) + rank)
    code_points = tf.where(rule_of == 0, tf.gather(text.code_points, source), replaced)
    return _take(text, source, code_points)


@functools.lru_cache(maxsize=8)
def _per_char_table(steps: tuple) -> tuple:
    """A code point table of rule ids and the rules for a chain of per-character normalizers."""
    category = general_categories()
    marks = category == ord("M")
    replacements: dict[str, int] = {}
    rules = np.zeros(NUM_CODE_POINTS, np.int64)
    for cp in range(NUM_CODE_POINTS):
        text = chr(cp)
        for step in steps:
            text = _apply_step(step, text, marks)
        if text != chr(cp):
            rules[cp] = replacements.setdefault(text, len(replacements) + 1)
    return code_point_table(rules), _rules(list(replacements))


def _apply_step(step, text: str, marks: np.ndarray) -> str:
    if step == "NFKD" or step == "NFD":
        return unicodedata.normalize(step, text)
    if step == "StripAccents":
        return "".join(c for c in text if not marks[ord(c)])
    return text.lower()  # Lowercase


def decode_precompiled(charsmap: str, max_bytes: int = _GRAPHEME_LOOKUP_BYTES - 1) -> dict[str, str]:
    """The keys (up to ``max_bytes`` UTF-8 bytes) and replacements of a Precompiled charsmap.

    The charsmap is a little-endian ``uint32`` trie size, a darts-clone double-array trie over
    UTF-8 bytes, and the NUL-terminated replacement strings the trie's values point into.
    """
    data = base64.b64decode(charsmap)
    size = int.from_bytes(data[:4], "little")
    units = np.frombuffer(data[4 : 4 + size], dtype="<u4").astype(np.int64)
    strings = data[4 + size :]

    def offset(unit):
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    found: dict[str, str] = {}
    frontier = np.array([offset(units[0])], np.int64)
    keys = np.zeros(1, np.int64)
    labels = np.arange(1, 256, dtype=np.int64)
    for depth in range(1, max_bytes + 1):
        child = frontier[:, None] ^ labels[None]
        inside = child < len(units)
        label = np.where(inside, units[np.where(inside, child, 0)] & ((1 << 31) | 0xFF), -1)
        parent, byte = np.nonzero(label == labels[None])
        unit = units[child[parent, byte]]
        frontier = child[parent, byte] ^ offset(unit)
        keys = keys[parent] * 256 + labels[byte]
        leaf = ((unit >> 8) & 1) == 1
        for key, position in zip(keys[leaf].tolist(), frontier[leaf].tolist()):
            value = int(units[position] & ((1 << 31) - 1))
            try:
                found[key.to_bytes(depth, "big").decode("utf-8")] = \
                    strings[value : strings.index(b"\0", value)].decode("utf-8")
            except UnicodeDecodeError:  # a key that is not whole characters can never match text
                continue
    return found


@functools.lru_cache(maxsize=1)
def _grapheme_extend_table():
    """Code points that continue a grapheme cluster (approximation, see the module docstring)."""
    extend = general_categories() == ord("M")
    extend[0x200D] = True  # ZWJ
    extend[0x1F3FB:0x1F400] = True  # emoji skin tone modifiers
    extend[0xFF9E:0xFFA0] = True  # halfwidth katakana voiced sound marks
    return code_point_table(extend.astype(np.int32))


class _Precompiled:
    """Hugging Face's Precompiled normalizer: whole short graphemes first, else character by character."""

    def __init__(self, charsmap: str):
        entries = decode_precompiled(charsmap)
        self.singles = {k: v for k, v in entries.items() if len(k) == 1}
        multi = {k: v for k, v in entries.items() if len(k) > 1}
        replacements = list(dict.fromkeys(list(self.singles.values()) + list(multi.values())))
        rule_of = {r: i + 1 for i, r in enumerate(replacements)}
        rules = np.zeros(NUM_CODE_POINTS, np.int64)
        for key, value in self.singles.items():
            rules[ord(key)] = rule_of[value]
        self.table = code_point_table(rules)
        self.rules = _rules(replacements)
        self.multi = (list(multi), [rule_of[v] for v in multi.values()])
        self.longest = max((len(k) for k in multi), default=1)

    def apply(self, text: _Text, multi_table) -> _Text:
        code_points = text.code_points
        count = tf.size(code_points, out_type=tf.int64)
        index = tf.range(count)
        first, _ = _segment_edges(text)
        previous = tf.gather(code_points, tf.maximum(index - 1, 0))
        extends = ~first & ((lookup(_grapheme_extend_table(), code_points) > 0)
                            | ((code_points == 10) & (previous == 13)))
        grapheme = tf.cumsum(tf.cast(~extends, tf.int64)) - 1
        num_graphemes = tf.reduce_sum(tf.cast(~extends, tf.int64))
        grapheme_first = tf.where(~extends)[:, 0]
        size = tf.math.unsorted_segment_sum(tf.ones_like(grapheme), grapheme, num_graphemes)
        utf8 = 1 + tf.add_n([tf.cast(code_points >= b, tf.int64) for b in (0x80, 0x800, 0x10000)])
        short = (size > 1) & (tf.math.unsorted_segment_sum(utf8, grapheme, num_graphemes) < _GRAPHEME_LOOKUP_BYTES)
        single_rule = lookup(self.table, code_points)

        # Whole-grapheme rule: the shortest prefix of the grapheme that is a key (its first
        # character first), replacing the whole grapheme.
        whole = tf.where(short, tf.gather(single_rule, grapheme_first), 0)
        if self.multi[0]:
            strings = tf.strings.unicode_encode(tf.RaggedTensor.from_value_rowids(
                code_points, grapheme, nrows=num_graphemes, validate=False), "UTF-8")
            for length in range(2, self.longest + 1):
                prefix = tf.strings.substr(strings, 0, length, unit="UTF8_CHAR")
                found = tf.where(short & (size >= length) & (whole == 0), multi_table.lookup(prefix), 0)
                whole = tf.where(whole == 0, found, whole)
        # Units: a grapheme replaced whole, or each character on its own.
        char_whole = tf.gather(whole, grapheme) > 0
        unit_start = ~char_whole | ~extends
        unit = tf.cumsum(tf.cast(unit_start, tf.int64)) - 1
        unit_first = tf.where(unit_start)[:, 0]
        unit_size = tf.math.unsorted_segment_sum(tf.ones_like(unit), unit, tf.size(unit_first, out_type=tf.int64))
        rule = tf.where(tf.gather(char_whole, unit_first), tf.gather(tf.gather(whole, grapheme), unit_first),
                        tf.gather(single_rule, unit_first))
        return _apply_rules(text, rule, self.rules, unit_first, unit_size)


def _parse_replace(step: dict) -> tuple[str, int, str]:
    """A Replace normalizer as ``(text, minimum repeats, content)``: a literal, or a run like `` {2,}``."""
    pattern, content = step["pattern"], step["content"]
    if "String" in pattern:
        literal = pattern["String"]
        if not literal:
            raise ValueError("Replace normalizer with an empty pattern")
        overlaps = any(literal[-k:] == literal[:k] for k in range(1, len(literal)))
        if overlaps and len(set(literal)) != 1:
            raise ValueError(f"Replace normalizer pattern {literal!r} can overlap itself")
        return literal, 0, content
    match = re.fullmatch(r"(\\?.)\{(\d+),\}", pattern.get("Regex", ""))
    if match and len(match.group(1).lstrip("\\")) == 1:
        return match.group(1).lstrip("\\"), int(match.group(2)), content
    raise ValueError(f"Replace normalizer with regex {pattern.get('Regex')!r} is not supported in the graph "
                     "(only runs of one character, like ' {2,}')")


def _replace(text: _Text, literal: str, minimum: int, content: str) -> _Text:
    """Hugging Face's Replace: every leftmost non-overlapping match becomes ``content`` (aligned to its last character)."""
    code_points = text.code_points
    count = tf.size(code_points, out_type=tf.int64)
    index = tf.range(count)
    first, _ = _segment_edges(text)
    if minimum:  # a run of at least `minimum` copies of one character
        same = code_points == ord(literal)
        run_start = same & (first | ~tf.gather(same, tf.maximum(index - 1, 0)))
        run = tf.maximum(tf.cumsum(tf.cast(run_start, tf.int64)) - 1, 0)
        run_length = tf.math.unsorted_segment_sum(tf.cast(same, tf.int64), run,
                                                  tf.reduce_sum(tf.cast(run_start, tf.int64)) + 1)
        match_start = run_start & (tf.gather(run_length, run) >= minimum)
        match_length = tf.where(match_start, tf.gather(run_length, run), 0)
    else:
        width = len(literal)
        window_index = index[:, None] + tf.range(width, dtype=tf.int64)
        segment = tf.concat([text.segment, [-1]], 0)
        window = tf.gather(tf.concat([code_points, [-1]], 0), tf.minimum(window_index, count))
        same_segment = tf.gather(segment, tf.minimum(window_index, count)) == text.segment[:, None]
        occurs = tf.reduce_all((window == tf.constant([ord(c) for c in literal], tf.int32)) & same_segment, axis=1)
        if width > 1 and len(set(literal)) == 1:  # "``" in "```": leftmost, then every width-th
            run_start = occurs & (first | ~tf.gather(occurs, tf.maximum(index - 1, 0)))
            run_first = tf.gather(tf.concat([tf.where(run_start)[:, 0], [0]], 0),
                                  tf.maximum(tf.cumsum(tf.cast(run_start, tf.int64)) - 1, 0))
            occurs &= (index - run_first) % width == 0
        match_start = occurs
        match_length = tf.where(occurs, tf.constant(width, tf.int64), 0)
    # Per code point: inside a match (not its last) -> nothing; a match's last -> content; else itself.
    reach = tf.scatter_nd(tf.where(match_start), tf.boolean_mask(match_length, match_start), [count])
    covered_until = _cover(reach)
    inside = covered_until > 0
    last = inside & (covered_until == 1)
    new = len(content)
    output = tf.where(last, new, tf.where(inside, 0, 1))
    source, rank = _expand(tf.cast(output, tf.int64))
    replaced = tf.gather(last, source)
    content_points = tf.constant([ord(c) for c in content] + [0], tf.int32)
    code = tf.where(replaced, tf.gather(content_points, tf.minimum(rank, new)), tf.gather(code_points, source))
    return _take(text, source, code)


def _cover(reach: tf.Tensor) -> tf.Tensor:
    """For matches starting at ``i`` with length ``reach[i]`` (non-overlapping): how many match characters remain at each position, counting it."""
    count = tf.size(reach, out_type=tf.int64)
    starts = tf.where(reach > 0)[:, 0]
    index = tf.range(count)
    owner = tf.searchsorted(starts, index, side="right", out_type=tf.int64) - 1
    owner_start = tf.gather(tf.concat([starts, [0]], 0), tf.where(owner >= 0, owner, tf.size(starts, out_type=tf.int64)))
    remaining = tf.gather(reach, owner_start) - (index - owner_start)
    return tf.where((owner >= 0) & (remaining > 0), remaining, 0)


def _strip(text: _Text, left: bool, right: bool) -> _Text:
    """Remove whitespace at the start / end of every segment."""
    space = tf.reduce_any(text.code_points[:, None] == tf.constant(sorted(WHITESPACE), tf.int32), axis=1)
    keep = tf.ones_like(space)
    segments = tf.reduce_max(tf.concat([text.segment, [-1]], 0)) + 1
    index = tf.range(tf.size(space, out_type=tf.int64))
    first_text = tf.math.unsorted_segment_min(tf.where(space, tf.int64.max, index), text.segment, segments)
    last_text = tf.math.unsorted_segment_max(tf.where(space, tf.constant(-1, tf.int64), index), text.segment, segments)
    if left:
        keep &= index >= tf.gather(first_text, text.segment)
    if right:
        keep &= index <= tf.gather(last_text, text.segment)
    return _take(text, tf.where(keep)[:, 0])


class SentencePieceTokenizer(tf.Module):
    """A Metaspace + Unigram (or BPE) tokenizer.json as graph ops; see the module docstring.

    Same interface as :class:`~tfft.export.tokenizer.InGraphBertTokenizer`: ``tokenize`` and ``pack``.
    """

    def __init__(self, spec: dict):
        super().__init__(name="in_graph_sentencepiece")
        model = spec["model"]
        self.kind = model["type"]
        if self.kind == "Unigram":
            pieces = [entry[0] for entry in model["vocab"]]
            vocab = {piece: index for index, piece in enumerate(pieces)}  # a repeated piece keeps its last id
            # float64 as in tokenizers' lattice: equal-scoring segmentations then tie-break the same way.
            # (Pass tokenizers' own serialisation: its JSON parser can differ from Python's in the last bit.)
            self._scores = np.array([float(entry[1]) for entry in model["vocab"]], np.float64)
            self.unk_id = model.get("unk_id")
            self.byte_fallback = bool(model.get("byte_fallback"))
            self._max_piece = max(len(p) for p in pieces)
            self._unk_score = float(self._scores.min()) - _UNK_PENALTY
            self._single = vocab
        elif self.kind == "BPE":
            vocab = model["vocab"]
            for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
                if model.get(option):
                    raise ValueError(f"BPE option {option}={model[option]!r} is not supported in the graph")
            self.unk_id = vocab.get(model["unk_token"]) if model.get("unk_token") else None
            self.byte_fallback = bool(model.get("byte_fallback"))
            self.fuse_unk = bool(model.get("fuse_unk"))
            self._ranks = ranks_table(model["merges"])
        else:
            raise ValueError(f"model {self.kind!r} with a Metaspace pre-tokenizer is not supported in the graph")
        self._vocab = vocab_table(vocab)
        self._byte_ids = np.array([vocab.get(f"<0x{b:02X}>", -1) for b in range(256)], np.int64)
        if self.byte_fallback and (self._byte_ids < 0).any():
            raise ValueError("byte_fallback is on but the vocabulary lacks some <0xXX> byte pieces")
        self.vocab_size = max(vocab.values()) + 1
        self.pad_id = _pad_id(spec, vocab)
        self.layout = PostProcessor.from_spec(spec.get("post_processor"))
        self._matcher = AddedTokenMatcher(added_tokens_of(spec))
        self._steps = self._normalizer_steps(spec.get("normalizer"))
        self._metaspace(spec.get("pre_tokenizer"))

    # ------------------------------------------------------------------ configuration

    def _normalizer_steps(self, normalizer: dict | None) -> list:
        """The normalizer as graph steps; consecutive per-character normalizers are folded into one table."""
        if not normalizer:
            return []
        flat = normalizer["normalizers"] if normalizer.get("type") == "Sequence" else [normalizer]
        steps: list = []
        chain: list = []

        def flush():
            if chain:
                steps.append(("table", *_per_char_table(tuple(chain))))
                chain.clear()

        for index, step in enumerate(flat):
            kind = step.get("type")
            if kind in _PER_CHAR:
                chain.append(kind)
            elif kind == "Precompiled":
                flush()
                precompiled = _Precompiled(step["precompiled_charsmap"])
                keys, rules = precompiled.multi
                with tf.device("/CPU:0"):
                    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                        tf.constant(keys or [""], tf.string), tf.constant(rules or [0], tf.int64)), default_value=0)
                setattr(self, f"_precompiled_{index}", table)  # tracked, so the SavedModel keeps it
                steps.append(("precompiled", precompiled, table))
            elif kind == "Strip":
                flush()
                steps.append(("strip", bool(step.get("strip_left")), bool(step.get("strip_right"))))
            elif kind == "Replace":
                flush()
                steps.append(("replace", *_parse_replace(step)))
            else:
                raise ValueError(f"normalizer {kind!r} is not supported in the graph")
        flush()
        return steps

    def _metaspace(self, pre: dict | None) -> None:
        """Metaspace's options, alone or after a WhitespaceSplit (the older converters' pre-tokenizer,
        kept by published tokenizer.json files such as albert-base-v2's)."""
        parts = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
        self.whitespace_split = [(part or {}).get("type") for part in parts[:-1]] == ["WhitespaceSplit"]
        if len(parts) == 1 or self.whitespace_split:
            pre = parts[-1]
        if not pre or pre.get("type") != "Metaspace":
            raise ValueError(f"pre_tokenizer {(pre or {}).get('type')!r} with a {self.kind} model is not supported "
                             "in the graph (expected Metaspace)")
        self.replacement = pre.get("replacement", "▁")
        if len(self.replacement) != 1:
            raise ValueError(f"Metaspace replacement {self.replacement!r} is not one character")
        scheme = pre.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if pre.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise ValueError(f"Metaspace prepend_scheme {scheme!r} is not supported in the graph")
        self.prepend_scheme = scheme
        self.split = bool(pre.get("split", True))

    # ------------------------------------------------------------------ graph code

    @on_cpu
    def tokenize(self, text: tf.Tensor):
        """Token ids ``[batch, (tokens)]`` of ``text`` (tf.string ``[batch]``), without special tokens.

        Returns ``(token_ids, token_word_index, word_start, word_end)`` as
        :meth:`~tfft.export.tokenizer.InGraphBertTokenizer.tokenize` does; a "word" is a
        pre-tokenizer piece (``▁word``), its span the Hugging Face offsets of its first and last token.
        """
        nrows = tf.shape(text, out_type=tf.int64)[0]
        code_points, row, position, row_length = decode_characters(text)
        added_id, covered, before, after = self._matcher.match(code_points, row, position, row_length)
        stripped = before | after

        # Segments: text between added tokens (or row ends), and each added token.
        index = tf.range(tf.size(code_points, out_type=tf.int64))
        previous = tf.maximum(index - 1, 0)
        boundary = ((index == 0) | (tf.gather(row, previous) != row) | (added_id >= 0)
                    | (tf.gather(covered, previous) & ~covered) | tf.not_equal(tf.gather(stripped, previous), stripped))
        segment = tf.cumsum(tf.cast(boundary, tf.int64)) - 1
        num_segments = tf.reduce_sum(tf.cast(boundary, tf.int64))
        segment_row = tf.gather(row, tf.where(boundary)[:, 0])
        segment_added = tf.gather(tf.where(covered, added_id, -1), tf.where(boundary)[:, 0])
        segment_at_row_start = tf.gather(position, tf.where(boundary)[:, 0]) == 0
        plain = tf.where(~covered & ~stripped)[:, 0]
        normalized = _Text(tf.gather(code_points, plain), tf.gather(position, plain), tf.gather(position, plain) + 1,
                           tf.gather(segment, plain))
        for step in self._steps:
            normalized = self._normalize(normalized, step)
        normalized, piece_first = self._pre_tokenize(normalized, segment_added, segment_at_row_start)

        piece = tf.cumsum(tf.cast(piece_first, tf.int64)) - 1
        num_text_pieces = tf.reduce_sum(tf.cast(piece_first, tf.int64))
        if self.kind == "Unigram":
            token_id, token_piece, first, last = self._unigram(normalized.code_points, piece, num_text_pieces)
        else:
            token_id, token_piece, first, last = self._bpe(normalized.code_points, piece, num_text_pieces)
        start = tf.gather(normalized.start, first)
        end = tf.gather(normalized.end, last)

        # Order text pieces and added tokens by segment.
        piece_segment = tf.gather(normalized.segment, tf.where(piece_first)[:, 0])
        added_segment = tf.where(segment_added >= 0)[:, 0]
        all_segment = tf.concat([piece_segment, added_segment], 0)
        order = tf.cast(tf.argsort(all_segment, stable=True), tf.int64)
        rank = tf.scatter_nd(order[:, None], tf.range(tf.size(order, out_type=tf.int64)),
                             tf.shape(order, out_type=tf.int64))
        # An added token's span includes the whitespace its lstrip / rstrip took (a segment of its own).
        segment_first_char = tf.where(boundary)[:, 0]
        segment_start = tf.gather(position, segment_first_char)
        segment_end = tf.math.unsorted_segment_max(position, segment, num_segments) + 1
        segment_before = tf.gather(before, segment_first_char)
        segment_after = tf.gather(after, segment_first_char)
        prior = tf.maximum(added_segment - 1, 0)
        following = tf.minimum(added_segment + 1, num_segments - 1)
        same_row = tf.equal(tf.gather(segment_row, prior), tf.gather(segment_row, added_segment))
        added_first = tf.where((added_segment > 0) & tf.gather(segment_before, prior) & same_row,
                               tf.gather(segment_start, prior), tf.gather(segment_start, added_segment))
        same_row = tf.equal(tf.gather(segment_row, following), tf.gather(segment_row, added_segment))
        added_last = tf.where((following > added_segment) & tf.gather(segment_after, following) & same_row,
                              tf.gather(segment_end, following), tf.gather(segment_end, added_segment))
        tokens_piece = tf.concat([tf.gather(rank, token_piece), tf.gather(rank, num_text_pieces + tf.range(
            tf.size(added_segment, out_type=tf.int64)))], 0)
        token_order = tf.argsort(tokens_piece, stable=True)
        return assemble(
            tf.gather(tf.concat([token_id, tf.gather(segment_added, added_segment)], 0), token_order),
            tf.gather(tokens_piece, token_order),
            tf.gather(tf.concat([start, added_first], 0), token_order),
            tf.gather(tf.concat([end, added_last], 0), token_order),
            tf.gather(segment_row, tf.gather(all_segment, order)), nrows)

    def _normalize(self, text: _Text, step) -> _Text:
        kind = step[0]
        if kind == "table":
            _, table, rules = step
            index = tf.range(tf.size(text.code_points, out_type=tf.int64))
            return _apply_rules(text, lookup(table, text.code_points), rules, index, tf.ones_like(index))
        if kind == "precompiled":
            return step[1].apply(text, step[2])
        if kind == "strip":
            return _strip(text, step[1], step[2])
        return _replace(text, *step[1:])

    def _pre_tokenize(self, text: _Text, segment_added: tf.Tensor, segment_at_row_start: tf.Tensor):
        """Metaspace: spaces become ``▁``, a ``▁`` goes before segments that lack one, pieces start at each ``▁``.

        After a WhitespaceSplit, whitespace is dropped and every word is such a segment; with the
        ``first`` scheme only a word that starts the text gets the ``▁`` then (tokenizers asks whether
        the piece's original offset is 0)."""
        marker = ord(self.replacement)
        first, _ = _segment_edges(text)
        if self.whitespace_split:
            space = tf.reduce_any(text.code_points[:, None] == tf.constant(sorted(WHITESPACE), tf.int32), axis=1)
            after_space = tf.gather(space, tf.maximum(tf.range(tf.size(space, out_type=tf.int64)) - 1, 0))
            kept = tf.where(~space)[:, 0]
            first = tf.gather(first | after_space, kept)
            text = _take(text, kept)
            at_text_start = text.start == 0
        else:
            at_text_start = tf.gather(segment_at_row_start, text.segment)
        text = text._replace(code_points=tf.where(text.code_points == 32, marker, text.code_points))
        if self.prepend_scheme != "never":
            insert = first & (text.code_points != marker)
            if self.prepend_scheme == "first":
                insert &= at_text_start
            count = 1 + tf.cast(insert, tf.int64)
            source, rank = _expand(count)
            virtual = tf.gather(insert, source) & (rank == 0)
            text = _take(text, source, tf.where(virtual, marker, tf.gather(text.code_points, source)))
            first = tf.gather(first, source) & (rank == 0)
        piece_first = first | (tf.constant(self.split) & (text.code_points == marker))
        return text, piece_first

    def _unigram(self, code_points: tf.Tensor, piece: tf.Tensor, num_pieces: tf.Tensor):
        """Viterbi segmentation of every piece; returns per token its id, piece and first/last code point index."""
        count = tf.size(code_points, out_type=tf.int64)
        index = tf.range(count)
        piece_start = tf.math.unsorted_segment_min(index, piece, num_pieces)
        piece_length = tf.math.unsorted_segment_sum(tf.ones_like(index), piece, num_pieces)
        offset = index - tf.gather(piece_start, piece)
        remaining = tf.gather(piece_length, piece) - offset

        # Candidates: the substrings of up to the longest piece's length starting at each character.
        width = tf.minimum(remaining, self._max_piece)
        candidate_end = tf.cumsum(width)
        candidate_char = tf.searchsorted(candidate_end, tf.range(tf.reduce_sum(width)), side="right",
                                         out_type=tf.int64)
        length = tf.range(tf.reduce_sum(width)) - tf.gather(candidate_end - width, candidate_char) + 1
        utf8 = 1 + tf.add_n([tf.cast(code_points >= b, tf.int64) for b in (0x80, 0x800, 0x10000)])
        byte_end = tf.cumsum(utf8)
        everything = tf.strings.unicode_encode(code_points[None], "UTF-8")[0]
        begin = tf.gather(byte_end - utf8, candidate_char)
        candidate_id = self._vocab.lookup(tf.strings.substr(
            everything, begin, tf.gather(byte_end, candidate_char + length - 1) - begin))
        known = candidate_id >= 0
        # An unknown character: a one-character unk candidate where no one-character piece exists.
        has_single = tf.math.unsorted_segment_max(tf.cast(known & (length == 1), tf.int32), candidate_char, count) > 0
        unknown_char = tf.where(~has_single)[:, 0]
        candidate_char = tf.concat([candidate_char, unknown_char], 0)
        length = tf.concat([length, tf.ones_like(unknown_char)], 0)
        candidate_id = tf.concat([candidate_id, tf.fill(tf.shape(unknown_char), tf.constant(-2, tf.int64))], 0)
        score = tf.where(candidate_id >= 0, tf.gather(tf.constant(self._scores), tf.maximum(candidate_id, 0)),
                         tf.constant(self._unk_score, tf.float64))
        keep = tf.where(candidate_id != -1)[:, 0]
        candidate_char, length, candidate_id, score = (tf.gather(t, keep) for t in (candidate_char, length,
                                                                                     candidate_id, score))
        # Lattice positions: piece p's boundaries 0..n are piece_start[p] + p + (0..n).
        candidate_piece = tf.gather(piece, candidate_char)
        start_node = candidate_char + candidate_piece
        end_node = start_node + length
        num_nodes = count + num_pieces
        by_offset = tf.argsort(tf.gather(offset, candidate_char), stable=True)
        sorted_offset = tf.gather(tf.gather(offset, candidate_char), by_offset)
        longest = tf.reduce_max(tf.concat([piece_length, [0]], 0))
        bounds = tf.searchsorted(sorted_offset, tf.range(longest + 1), side="left", out_type=tf.int64)
        node = tf.range(num_nodes)
        node_piece = tf.searchsorted(piece_start + tf.range(num_pieces), node, side="right", out_type=tf.int64) - 1
        is_piece_start = tf.equal(node, tf.gather(piece_start + tf.range(num_pieces), tf.maximum(node_piece, 0)))
        best = tf.where(is_piece_start, tf.constant(0.0, tf.float64), -np.inf)

        def relax(step, best):
            chosen = by_offset[bounds[step]: bounds[step + 1]]
            value = tf.gather(best, tf.gather(start_node, chosen)) + tf.gather(score, chosen)
            return step + 1, tf.tensor_scatter_nd_max(best, tf.gather(end_node, chosen)[:, None], value)

        _, best = tf.while_loop(lambda step, best: step < longest, relax, (tf.constant(0, tf.int64), best))
        # Backpointers: the best candidate ending at each node, the earliest start on a tie.
        value = tf.gather(best, start_node) + score
        optimal = tf.equal(value, tf.gather(best, end_node))
        big = tf.int64.max
        chosen_start = tf.math.unsorted_segment_min(tf.where(optimal, start_node, big), end_node, num_nodes)
        chosen = tf.math.unsorted_segment_min(
            tf.where(optimal & tf.equal(start_node, tf.gather(chosen_start, end_node)),
                     tf.range(tf.size(start_node, out_type=tf.int64)), big), end_node, num_nodes)
        back = tf.where(chosen_start == big, tf.constant(-1, tf.int64), chosen_start)

        # Walk back from every piece's end, marking the nodes where a token ends.
        piece_start_node = piece_start + tf.range(num_pieces)

        def walk(position, on_path):
            active = position > piece_start_node
            at = tf.boolean_mask(position, active)
            on_path = tf.tensor_scatter_nd_update(on_path, at[:, None], tf.ones_like(at, tf.bool))
            return tf.where(active, tf.gather(back, tf.maximum(position, 0)), position), on_path

        _, on_path = tf.while_loop(
            lambda position, on_path: tf.reduce_any(position > piece_start_node),
            walk, (piece_start_node + piece_length, tf.zeros([num_nodes], tf.bool)))
        token_end_node = tf.where(on_path)[:, 0]
        token_candidate = tf.gather(chosen, token_end_node)
        token_id = tf.gather(candidate_id, token_candidate)
        token_piece = tf.gather(candidate_piece, token_candidate)
        first = tf.gather(candidate_char, token_candidate)
        last = first + tf.gather(length, token_candidate) - 1
        return self._unknown_tokens(code_points, token_id, token_piece, first, last)

    def _unknown_tokens(self, code_points, token_id, token_piece, first, last):
        """Fuse neighbouring unknown tokens (-2) of a piece into one; spell it in bytes with byte_fallback."""
        unknown = token_id == -2
        count = tf.size(token_id, out_type=tf.int64)
        previous = tf.maximum(tf.range(count) - 1, 0)
        joins = unknown & tf.gather(unknown, previous) & tf.equal(tf.gather(token_piece, previous), token_piece) \
            & (tf.range(count) > 0)
        target = tf.cumsum(tf.cast(~joins, tf.int64)) - 1
        total = tf.reduce_sum(tf.cast(~joins, tf.int64))
        token_id = tf.math.unsorted_segment_max(token_id, target, total)
        token_piece = tf.math.unsorted_segment_min(token_piece, target, total)
        first = tf.math.unsorted_segment_min(first, target, total)
        last = tf.math.unsorted_segment_max(last, target, total)
        if self.byte_fallback:
            unknown = token_id == -2
            spelled = tf.where(unknown, last - first + 1, 0)
            # each unknown token becomes the UTF-8 bytes of its characters, all with its span
            chars_of = tf.repeat(tf.range(total), spelled)
            char = tf.gather(first, chars_of) + (tf.range(tf.size(chars_of, out_type=tf.int64))
                                                 - tf.gather(tf.cumsum(spelled, exclusive=True), chars_of))
            byte, byte_char = utf8_bytes(tf.gather(code_points, char))
            byte_token = tf.gather(chars_of, byte_char)
            keep = tf.where(~unknown)[:, 0]
            all_token = tf.concat([keep, byte_token], 0)
            order = tf.argsort(all_token, stable=True)
            token_id = tf.gather(tf.concat([tf.gather(token_id, keep),
                                            tf.gather(tf.constant(self._byte_ids), byte)], 0), order)
            all_token = tf.gather(all_token, order)
            token_piece, first, last = (tf.gather(t, all_token) for t in (token_piece, first, last))
        else:
            token_id = tf.where(token_id == -2, tf.constant(self.unk_id if self.unk_id is not None else -1, tf.int64),
                                token_id)
        return token_id, token_piece, first, last

    def _bpe(self, code_points: tf.Tensor, piece: tf.Tensor, num_pieces: tf.Tensor):
        """SentencePiece BPE: characters (unknown ones -2), merged by rank."""
        index = tf.range(tf.size(code_points, out_type=tf.int64))
        symbols = tf.strings.unicode_encode(tf.RaggedTensor.from_row_lengths(
            code_points, tf.ones_like(index), validate=False), "UTF-8")
        unknown = self._vocab.lookup(symbols) < 0
        # unknown characters cannot merge: give them a string no merge has
        symbols = tf.where(unknown, tf.strings.join(["\x00", symbols]), symbols)
        symbols, token_piece, first, last = bpe_merge(symbols, piece, num_pieces, self._ranks, (index, index))
        token_id = self._vocab.lookup(symbols)
        token_id = tf.where(token_id < 0, tf.constant(-2, tf.int64), token_id)
        if not self.fuse_unk and not self.byte_fallback:
            return (tf.where(token_id == -2, tf.constant(self.unk_id if self.unk_id is not None else -1, tf.int64),
                             token_id), token_piece, first, last)
        return self._unknown_tokens(code_points, token_id, token_piece, first, last)

    @on_cpu
    def pack(self, token_ids: tf.RaggedTensor, max_length: int, pair_token_ids: tf.RaggedTensor | None = None):
        """Model inputs as the tokenizer's post-processor lays them out (``<s> A </s>`` or ``[CLS] A [SEP]``)."""
        if pair_token_ids is None:
            return pack(self.layout.single, self.pad_id, max_length, [token_ids])
        return pack(self.layout.pair, self.pad_id, max_length, [token_ids, pair_token_ids])
