"""A BERT WordPiece tokenizer made only of core TensorFlow ops, for SavedModels served by TF Serving.

Why this exists: the exported model must accept raw text, but a stock TF Serving binary has
no ``tensorflow_text`` ops and cannot run Python (``tf.py_function``). So the Hugging Face
fast tokenizer (``BertTokenizerFast``: the Rust ``BertNormalizer`` + ``BertPreTokenizer`` +
``WordPiece`` of ``tokenizers``) is re-implemented here with ordinary tensor ops, and it must
give exactly the ids the model was trained with. This module deliberately never imports
``transformers`` or ``tokenizers``; the tests compare against them.

How it works:

* Normalisation is a per-code-point rewrite, so it is precomputed in Python at construction
  time (``_build_normalisation_tables``) into a two-level lookup table, code point -> rule.
  A rule is either "keep the character" (with its pre-tokenizer class) or an explicit
  replacement string. In graph: ``unicode_decode`` -> two ``gather`` ops -> expansion.
* Pre-tokenisation is a vectorised run-splitting over per-character classes
  (regular / isolated punctuation or CJK / whitespace / special token).
* WordPiece looks every candidate substring of every word up in one hash-table lookup, then
  a short ``tf.while_loop`` walks the greedy longest-match-first chain of all words at once.
* Special tokens written literally in the text (``[MASK]``, ``[SEP]`` ...) are matched on
  the raw text and become one token, as Hugging Face's added-token handling does.

Unicode versions: ``tokenizers`` classifies characters with the ``unicode_categories`` crate
(Unicode 8.0 tables), lowercases with Rust's ``char::to_lowercase`` (Unicode 16) and
decomposes with NFD tables older than Unicode 13, while Python 3.11's ``unicodedata`` is 14.0.
So the three category predicates (removed controls, nonspacing marks, punctuation) are
embedded below as code point ranges, probed from ``tokenizers`` 0.21.4 over every code point,
and do not depend on Python; case mappings and decompositions come from ``unicodedata`` with
the few corrections listed below. ``tests/test_export_tokenizer.py`` re-checks every code
point against the installed ``tokenizers`` (rerun it after upgrading Python or tokenizers).

Known divergences from Hugging Face:

* HF applies NFD to whole strings, which canonically reorders runs of combining marks; this
  tokenizer decomposes per character. They differ only when ``strip_accents`` is on and two
  combining marks that are *not* stripped (spacing marks with a non-zero combining class, or
  marks newer than Unicode 8.0) follow each other out of canonical order.
* Invalid UTF-8 (which a Python ``str`` cannot hold, so HF never sees it) is decoded with
  U+FFFD replacements, which ``clean_text`` then drops.
"""

from __future__ import annotations

import functools
import json
import pathlib
import unicodedata
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, TypeVar

import numpy as np

from tfft.backend import tf
from tfft.export.graph_tokenizers.common import AddedToken, AddedTokenMatcher, PostProcessor, pack
from tfft.words import PUNCTUATION_RANGES as _PUNCTUATION

__all__ = ["InGraphBertTokenizer"]

_T = TypeVar("_T")

_NUM_CODE_POINTS = 0x110000
_BLOCK_BITS = 7  # the code point table is split in blocks of 128; identical blocks are shared

# Pre-tokenizer classes of a normalised character (and ids of the rules that keep a
# character unchanged with that class; explicit replacement rules are numbered after them).
_REGULAR = 0  # part of a word
_ISOLATED = 1  # a word on its own: punctuation, or a CJK ideograph
_SPACE = 2  # separates words and is dropped
_SPECIAL = 3  # part of a special token written in the text, e.g. "[MASK]"
_FIRST_EXPLICIT_RULE = 4

# Rust's char::is_whitespace (the White_Space property), which both BertNormalizer and
# BertPreTokenizer use.
_WHITESPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)]
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)

# tokenizers' is_chinese_char: the CJK ideograph blocks that get spaces around them.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# Code points in hexadecimal, "a-b" for inclusive ranges; probed from tokenizers 0.21.4.
# Removed by clean_text: NUL, U+FFFD and the crate's is_other (Cc, Cf, Co; not Cn), keeping \t\n\r.
_CLEAN_TEXT_REMOVED = """
0-8 b-c e-1f 7f-9f ad 600-605 61c 6dd 70f 180e 200b-200f 202a-202e 2060-2064 2066-206f e000-f8ff
feff fff9-fffb fffd 110bd 1bca0-1bca3 1d173-1d17a e0001 e0020-e007f f0000-ffffd 100000-10fffd
"""
# Stripped by strip_accents after NFD: the crate's is_mark_nonspacing (Mn), listed for the
# characters that NFD leaves alone (the others are decomposed before the test).
_NONSPACING_MARKS = """
300-33f 342 345-36f 483-487 591-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-65f 670 6d6-6dc 6df-6e4
6e7-6e8 6ea-6ed 711 730-74a 7a6-7b0 7eb-7f3 816-819 81b-823 825-827 829-82d 859-85b 8e3-902 93a
93c 941-948 94d 951-957 962-963 981 9bc 9c1-9c4 9cd 9e2-9e3 a01-a02 a3c a41-a42 a47-a48 a4b-a4d
a51 a70-a71 a75 a81-a82 abc ac1-ac5 ac7-ac8 acd ae2-ae3 b01 b3c b3f b41-b44 b4d b56 b62-b63 b82
bc0 bcd c00 c3e-c40 c46-c47 c4a-c4d c55-c56 c62-c63 c81 cbc cbf cc6 ccc-ccd ce2-ce3 d01 d41-d44
d4d d62-d63 dca dd2-dd4 dd6 e31 e34-e3a e47-e4e eb1 eb4-eb9 ebb-ebc ec8-ecd f18-f19 f35 f37 f39
f71-f72 f74 f77 f79-f7e f80 f82-f84 f86-f87 f8d-f92 f94-f97 f99-f9c f9e-fa1 fa3-fa6 fa8-fab
fad-fb8 fba-fbc fc6 102d-1030 1032-1037 1039-103a 103d-103e 1058-1059 105e-1060 1071-1074 1082
1085-1086 108d 109d 135d-135f 1712-1714 1732-1734 1752-1753 1772-1773 17b4-17b5 17b7-17bd 17c6
17c9-17d3 17dd 180b-180d 18a9 1920-1922 1927-1928 1932 1939-193b 1a17-1a18 1a1b 1a56 1a58-1a5e
1a60 1a62 1a65-1a6c 1a73-1a7c 1a7f 1ab0-1abd 1b00-1b03 1b34 1b36-1b3a 1b3c 1b42 1b6b-1b73
1b80-1b81 1ba2-1ba5 1ba8-1ba9 1bab-1bad 1be6 1be8-1be9 1bed 1bef-1bf1 1c2c-1c33 1c36-1c37
1cd0-1cd2 1cd4-1ce0 1ce2-1ce8 1ced 1cf4 1cf8-1cf9 1dc0-1df5 1dfc-1dff 20d0-20dc 20e1 20e5-20f0
2cef-2cf1 2d7f 2de0-2dff 302a-302d 3099-309a a66f a674-a67d a69e-a69f a6f0-a6f1 a802 a806 a80b
a825-a826 a8c4 a8e0-a8f1 a926-a92d a947-a951 a980-a982 a9b3 a9b6-a9b9 a9bc a9e5 aa29-aa2e
aa31-aa32 aa35-aa36 aa43 aa4c aa7c aab0 aab2-aab4 aab7-aab8 aabe-aabf aac1 aaec-aaed aaf6 abe5
abe8 abed fb1e fe00-fe0f fe20-fe2f 101fd 102e0 10376-1037a 10a01-10a03 10a05-10a06 10a0c-10a0f
10a38-10a3a 10a3f 10ae5-10ae6 11001 11038-11046 1107f-11081 110b3-110b6 110b9-110ba 11100-11102
11127-1112b 1112d 11130-11134 11173 11180-11181 111b6-111be 111ca-111cc 1122f-11231 11234
11236-11237 112df 112e3-112ea 11300-11301 1133c 11340 11366-1136c 11370-11374 114b3-114b8 114ba
114bf-114c0 114c2-114c3 115b2-115b5 115bc-115bd 115bf-115c0 115dc-115dd 11633-1163a 1163d
1163f-11640 116ab 116ad 116b0-116b5 116b7 1171d-1171f 11722-11725 11727-1172b 16af0-16af4
16b30-16b36 16f8f-16f92 1bc9d-1bc9e 1d167-1d169 1d17b-1d182 1d185-1d18b 1d1aa-1d1ad 1d242-1d244
1da00-1da36 1da3b-1da6c 1da75 1da84 1da9b-1da9f 1daa1-1daaf 1e8d0-1e8d6 e0100-e01ef
"""

# Lowercase mappings of letters added after Unicode 14 (Python 3.11's unicodedata) that
# Rust's char::to_lowercase already knows; on newer Pythons they agree with str.lower().
_LOWERCASE_AFTER_UNICODE_14 = {
    0x1C89: "\u1c8a",
    0xA7CB: "\u0264",
    0xA7CC: "\ua7cd",
    0xA7DA: "\ua7db",
    0xA7DC: "\u019b",
    **{cp: chr(cp + 0x20) for cp in range(0x10D50, 0x10D66)},
}

# Canonical decompositions added after tokenizers' NFD tables (Unicode 13.0): not applied.
_NFD_UNKNOWN_TO_TOKENIZERS = frozenset([0x11938])


def _range_mask(spec: str) -> np.ndarray:
    """Return a boolean array over all code points that is True inside the ranges of ``spec``."""
    mask = np.zeros(_NUM_CODE_POINTS, dtype=bool)
    for item in spec.split():
        first, _, last = item.partition("-")
        mask[int(first, 16) : int(last or first, 16) + 1] = True
    return mask


@dataclass(frozen=True)
class _NormalisationTables:
    """Numpy arrays that encode the normalisation of every code point.

    ``block_rules[block_index[cp >> 7] * 128 + (cp & 127)]`` is the rule of ``cp``. Rules below
    ``_FIRST_EXPLICIT_RULE`` keep the character (the rule id is its class); rule ``r`` above
    replaces it with ``out_code_points[rule_start[r]: rule_start[r] + rule_length[r]]`` whose
    classes are the same slice of ``out_classes``.
    """

    block_index: np.ndarray
    block_rules: np.ndarray
    rule_start: np.ndarray
    rule_length: np.ndarray
    out_code_points: np.ndarray
    out_classes: np.ndarray


@functools.lru_cache(maxsize=8)
def _build_normalisation_tables(
    lowercase: bool, strip_accents: bool, handle_chinese_chars: bool, clean_text: bool
) -> _NormalisationTables:
    """Precompute BertNormalizer + the pre-tokenizer's character classes for every code point.

    This follows ``tokenizers``' BertNormalizer step by step for one character: clean_text,
    then spaces around CJK ideographs, then NFD and removal of nonspacing marks, then
    lowercasing. Most code points are unchanged and only get a class; the others (a few
    thousand, plus the removed ranges) become explicit rules, deduplicated. Cached because it takes a
    few tenths of a second and every tokenizer with the same settings shares it.
    """
    removed = _range_mask(_CLEAN_TEXT_REMOVED)
    nonspacing = _range_mask(_NONSPACING_MARKS)
    punctuation = _range_mask(_PUNCTUATION)

    def char_class(cp: int) -> int:
        if cp in _WHITESPACE:
            return _SPACE
        return _ISOLATED if punctuation[cp] else _REGULAR

    def normalise(cp: int) -> str:
        text = chr(cp)
        if clean_text:
            if removed[cp]:
                return ""
            if cp in _WHITESPACE:
                text = " "
        if handle_chinese_chars and any(lo <= cp <= hi for lo, hi in _CJK_RANGES):
            text = f" {text} "
        if strip_accents:
            decomposed = "".join(
                ch if ord(ch) in _NFD_UNKNOWN_TO_TOKENIZERS else unicodedata.normalize("NFD", ch)
                for ch in text
            )
            text = "".join(ch for ch in decomposed if not nonspacing[ord(ch)])
        if lowercase:
            text = "".join(_LOWERCASE_AFTER_UNICODE_14.get(ord(ch), ch.lower()) for ch in text)
        return text

    # Characters that keep themselves only need their class; set those in bulk.
    rules = np.full(_NUM_CODE_POINTS, _REGULAR, dtype=np.int32)
    rules[punctuation] = _ISOLATED
    rules[list(_WHITESPACE)] = _SPACE  # whitespace normalises to whitespace in every setting
    if handle_chinese_chars:
        for lo, hi in _CJK_RANGES:
            rules[lo : hi + 1] = _ISOLATED  # " X " splits exactly like an isolated X

    # Everything else that can change goes through normalise(); removed code points first
    # because they are many and all map to the same empty rule.
    explicit: dict[tuple[tuple[int, int], ...], int] = {}

    def rule_for(replacement: str) -> int:
        key = tuple((ord(ch), char_class(ord(ch))) for ch in replacement)
        return explicit.setdefault(key, _FIRST_EXPLICIT_RULE + len(explicit))

    if clean_text:
        rules[removed] = rule_for("")
    may_change = nonspacing.copy() if strip_accents else np.zeros(_NUM_CODE_POINTS, dtype=bool)
    may_change[list(_LOWERCASE_AFTER_UNICODE_14)] = lowercase
    for cp in range(_NUM_CODE_POINTS):
        ch = chr(cp)
        if (lowercase and ch.lower() != ch) or (
            strip_accents and not unicodedata.is_normalized("NFD", ch)
        ):
            may_change[cp] = True
    if clean_text:
        may_change &= ~removed
    for cp in np.flatnonzero(may_change).tolist():
        replacement = normalise(cp)
        if replacement != chr(cp):
            rules[cp] = rule_for(replacement)

    blocks, block_index = np.unique(rules.reshape(-1, 1 << _BLOCK_BITS), axis=0, return_inverse=True)
    explicit_lengths = np.array([len(key) for key in explicit], dtype=np.int32)
    flat = [pair for key in explicit for pair in key]
    return _NormalisationTables(
        block_index=block_index.reshape(-1).astype(np.int32),
        block_rules=blocks.reshape(-1).astype(np.int32),
        rule_start=np.concatenate(
            [np.zeros(_FIRST_EXPLICIT_RULE), np.cumsum(explicit_lengths) - explicit_lengths]
        ).astype(np.int32),
        rule_length=np.concatenate([np.ones(_FIRST_EXPLICIT_RULE), explicit_lengths]).astype(np.int32),
        # one padding entry so that gathers stay in bounds when no rule is explicit
        out_code_points=np.array([cp for cp, _ in flat] + [0], dtype=np.int32),
        out_classes=np.array([cls for _, cls in flat] + [_REGULAR], dtype=np.int32),
    )


def _normalise(tables: _NormalisationTables, text: str) -> str:
    """``text`` normalised as the graph normalises it (an added token's content, matched in normalised text)."""
    out = []
    for ch in text:
        cp = ord(ch)
        rule = int(tables.block_rules[int(tables.block_index[cp >> _BLOCK_BITS]) * (1 << _BLOCK_BITS)
                                      + (cp & ((1 << _BLOCK_BITS) - 1))])
        if rule < _FIRST_EXPLICIT_RULE:
            out.append(ch)
        else:
            start = int(tables.rule_start[rule])
            out.extend(chr(c) for c in tables.out_code_points[start: start + int(tables.rule_length[rule])])
    return "".join(out)


def _on_cpu(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a public method's ops on the CPU, and keep autograph from converting it.

    Tokenizing is string and small-integer work: on a GPU server, GPU placement would only
    add transfers (string and hash-table ops are CPU-only anyway). The methods have no
    tensor-dependent Python control flow, so autograph would only slow down tracing.
    """

    @functools.wraps(method)
    def on_cpu(*args, **kwargs):
        with tf.device("/CPU:0"):
            return method(*args, **kwargs)

    return tf.autograph.experimental.do_not_convert(on_cpu)


class _Words(NamedTuple):
    """The pre-tokenized words of a batch, flattened over the batch (``W`` words in all)."""

    code_points: tf.RaggedTensor  # [W, (chars)] int32, the normalised characters
    special_id: tf.Tensor  # [W] int64, the id of a special-token word, -1 for other words
    row: tf.Tensor  # [W] int64, the batch row the word is in
    start: tf.Tensor  # [W] int64, code point offset of its first character in the input
    end: tf.Tensor  # [W] int64, one past the offset of its last character
    nrows: tf.Tensor  # scalar int64, the batch size


def _token_content(value: object) -> str:
    """Return a token string from a tokenizer config entry (a string or a serialised AddedToken)."""
    return value["content"] if isinstance(value, dict) else str(value)


class InGraphBertTokenizer(tf.Module):
    """BERT tokenization (BertTokenizerFast-exact) as TensorFlow ops that a SavedModel can carry.

    Every public method takes and returns tensors and can run eagerly or inside a
    ``tf.function`` (with input signature ``tf.TensorSpec([None], tf.string)``). The vocabulary
    hash table is tracked by this module, so saving a ``tf.Module`` that holds it restores it
    from the SavedModel; the normalisation tables become constants of the traced graphs.
    Special tokens (``special_tokens``, by default unk/sep/pad/cls and ``[MASK]`` where in the
    vocabulary) written literally in the input become single tokens, as in Hugging Face.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
        clean_text: bool = True,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        max_input_chars_per_word: int = 100,
        continuing_subword_prefix: str = "##",
        special_tokens: Sequence[str] | None = None,
        normalized_tokens: Sequence[str] = (),
        layout: PostProcessor | None = None,
    ) -> None:
        super().__init__(name="in_graph_bert_tokenizer")
        tokens = list(vocab)
        if not tokens:
            raise ValueError("the vocabulary is empty")
        # A token listed twice keeps its last id, like transformers' load_vocab.
        token_ids = {token: index for index, token in enumerate(tokens)}

        def id_of(token: str, role: str) -> int:
            if token not in token_ids:
                raise ValueError(f"the {role} token {token!r} is not in the vocabulary")
            return token_ids[token]

        self.vocab_size = len(tokens)
        self.unk_id = id_of(unk_token, "unk")
        self.cls_id = id_of(cls_token, "cls")
        self.sep_id = id_of(sep_token, "sep")
        self.pad_id = id_of(pad_token, "pad")
        # Where the special tokens go (tokenizer.json's post-processor; BERT's by default).
        self.layout = layout or PostProcessor.from_spec(
            {"type": "BertProcessing", "cls": [cls_token, self.cls_id], "sep": [sep_token, self.sep_id]})
        self.lowercase = lowercase
        # tokenizers' BertNormalizer: strip_accents=None means "strip iff lowercase".
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.handle_chinese_chars = handle_chinese_chars
        self.clean_text = clean_text
        self.max_input_chars_per_word = max_input_chars_per_word
        self.continuing_subword_prefix = continuing_subword_prefix
        # No vocabulary entry is longer than this, so longer substrings need no lookup.
        self._max_piece_chars = max(len(token) for token in token_ids)

        # The normalisation tables (~150 KB) become constants of the traced graphs rather than
        # variables, so that with the ops they stay on the CPU when a GPU server loads the model.
        self._tables = _build_normalisation_tables(
            self.lowercase, self.strip_accents, self.handle_chinese_chars, self.clean_text
        )
        with tf.device("/CPU:0"):
            self._vocab_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(list(token_ids), tf.string),
                    tf.constant(list(token_ids.values()), tf.int64),
                ),
                default_value=-1,
            )

        if special_tokens is None:
            special_tokens = [t for t in (unk_token, sep_token, pad_token, cls_token, "[MASK]") if t in token_ids]
        # Matched leftmost-longest by Hugging Face; the matcher needs tokens that cannot overlap
        # (BERT's bracketed tokens cannot) and refuses others.
        self._matcher = AddedTokenMatcher(
            [AddedToken(t, id_of(t, "special")) for t in dict.fromkeys(special_tokens)])
        # Added tokens marked "normalized" (MPNet's as transformers converts them) are matched, as in
        # Hugging Face, in the normalised text by their normalised content: "<S>" and "[unk]" match too.
        self._normalized_matcher = AddedTokenMatcher(
            [AddedToken(_normalise(self._tables, t), id_of(t, "added")) for t in dict.fromkeys(normalized_tokens)])

    @classmethod
    def from_pretrained_dir(cls, path: str | pathlib.Path) -> "InGraphBertTokenizer":
        """Build the tokenizer of a Hugging Face BERT checkpoint directory, without transformers.

        Settings are resolved the way ``BertTokenizerFast.from_pretrained`` resolves them, so
        that the ids match what the model was trained with:

        * the vocabulary, WordPiece options, ``clean_text`` and the literal-text special tokens
          come from ``tokenizer.json`` when it exists (transformers then ignores vocab.txt);
          otherwise from ``vocab.txt`` read like transformers' ``load_vocab``;
        * ``lowercase`` / ``strip_accents`` / ``handle_chinese_chars`` come from
          ``tokenizer_config.json`` (``do_lower_case``, ``strip_accents``,
          ``tokenize_chinese_chars``, defaults True / None / True): ``BertTokenizerFast``
          rebuilds the normalizer from these whenever they differ from tokenizer.json's;
        * special token strings come from ``tokenizer_config.json`` (then
          ``special_tokens_map.json``), defaulting to BERT's.

        Raises ``ValueError`` for tokenizer.json pipelines this class does not implement.
        """
        path = pathlib.Path(path)

        def read_json(name: str) -> dict:
            file = path / name
            return json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}

        config = {**read_json("special_tokens_map.json"), **read_json("tokenizer_config.json")}
        names = {
            role: _token_content(config.get(f"{role}_token", default))
            for role, default in (
                ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("mask", "[MASK]")
            )
        }
        options: dict = {
            "lowercase": config.get("do_lower_case", True),
            "strip_accents": config.get("strip_accents"),
            "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
            "unk_token": names["unk"],
            "cls_token": names["cls"],
            "sep_token": names["sep"],
            "pad_token": names["pad"],
        }
        spec = read_json("tokenizer.json")
        if spec:
            normalizer = spec.get("normalizer") or {}
            pre_tokenizer = spec.get("pre_tokenizer") or {}
            model = spec.get("model") or {}
            found = (normalizer.get("type"), pre_tokenizer.get("type"), model.get("type"))
            if found != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
                raise ValueError(f"{path}/tokenizer.json is not a BERT WordPiece pipeline: {found}")
            id_to_token = {index: token for token, index in model["vocab"].items()}
            if sorted(id_to_token) != list(range(len(id_to_token))):
                raise ValueError(f"{path}/tokenizer.json: vocabulary ids are not 0..n-1")
            vocab = [id_to_token[i] for i in range(len(id_to_token))]
            # lstrip / rstrip (MPNet's <mask>) only move whitespace into the token's span: BERT's
            # pre-tokenizer drops whitespace between words anyway, so the ids are the same.
            unsupported = [
                t["content"]
                for t in spec.get("added_tokens", [])
                if t.get("single_word") or model["vocab"].get(t["content"]) != t["id"]
            ]
            if unsupported:
                raise ValueError(f"{path}/tokenizer.json: unsupported added tokens {unsupported}")
            options.update(
                clean_text=normalizer.get("clean_text", True),
                max_input_chars_per_word=model.get("max_input_chars_per_word", 100),
                continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
                special_tokens=[t["content"] for t in spec.get("added_tokens", []) if not t.get("normalized")],
                normalized_tokens=[t["content"] for t in spec.get("added_tokens", []) if t.get("normalized")],
                layout=PostProcessor.from_spec(spec["post_processor"]) if spec.get("post_processor") else None,
            )
            if model.get("unk_token", options["unk_token"]) != options["unk_token"]:
                raise ValueError(f"{path}: tokenizer.json and tokenizer_config.json disagree on the unk token")
        else:
            with open(path / "vocab.txt", encoding="utf-8") as reader:
                vocab = [line.rstrip("\n") for line in reader.readlines()]
            options["special_tokens"] = [
                t for t in (names["unk"], names["sep"], names["pad"], names["cls"], names["mask"]) if t in vocab
            ]
        return cls(vocab, **options)

    # ------------------------------------------------------------------ graph code

    def _segment(self, text: tf.Tensor) -> _Words:
        """Normalise (BertNormalizer) and pre-tokenize (BertPreTokenizer) a batch of strings."""
        text = tf.convert_to_tensor(text, dtype=tf.string)
        chars = tf.strings.unicode_decode(text, "UTF-8", errors="replace")
        code_points = chars.flat_values
        count = tf.size(code_points, out_type=tf.int64)
        row = chars.value_rowids()
        position = tf.range(count) - tf.gather(chars.row_starts(), row)

        tables = self._tables
        block = tf.gather(tables.block_index, tf.bitwise.right_shift(code_points, _BLOCK_BITS))
        in_block = tf.bitwise.bitwise_and(code_points, (1 << _BLOCK_BITS) - 1)
        rule = tf.gather(tables.block_rules, tf.bitwise.left_shift(block, _BLOCK_BITS) + in_block)
        if self._matcher.tokens:
            special_start, covered, _, _ = self._matcher.match(
                code_points, row, position, tf.gather(chars.row_lengths(), row)
            )
            rule = tf.where(covered, _SPECIAL, rule)

        # Expand every input character into its 0..n normalised characters.
        out_length = tf.cast(tf.gather(tables.rule_length, rule), tf.int64)
        out_end = tf.cumsum(out_length)
        out = tf.range(tf.reduce_sum(out_length))
        source = tf.searchsorted(out_end, out, side="right", out_type=tf.int64)
        rank = out - tf.gather(out_end - out_length, source)
        out_rule = tf.gather(rule, source)
        explicit = out_rule >= _FIRST_EXPLICIT_RULE
        table_index = tf.cast(tf.gather(tables.rule_start, out_rule), tf.int64) + rank
        out_code_point = tf.where(
            explicit, tf.gather(tables.out_code_points, table_index), tf.gather(code_points, source)
        )
        out_class = tf.where(explicit, tf.gather(tables.out_classes, table_index), out_rule)
        out_row = tf.gather(row, source)
        out_special = tf.gather(special_start, source) if self._matcher.tokens else tf.fill(
            tf.shape(source), tf.constant(-1, tf.int64))
        if self._normalized_matcher.tokens:
            nrows = tf.shape(text, out_type=tf.int64)[0]
            row_first = tf.math.unsorted_segment_min(out, out_row, nrows)
            row_length = tf.math.unsorted_segment_sum(tf.ones_like(out), out_row, nrows)
            found, covered, _, _ = self._normalized_matcher.match(
                tf.where(out_class == _SPECIAL, -1, out_code_point), out_row, out - tf.gather(row_first, out_row),
                tf.gather(row_length, out_row))
            out_class = tf.where(covered, _SPECIAL, out_class)
            out_special = tf.where(found >= 0, found, out_special)

        # Split into words: runs of regular characters; every isolated character alone; each
        # special-token match alone; whitespace dropped.
        previous = tf.maximum(out - 1, 0)
        new_row = (out == 0) | (tf.gather(out_row, previous) != out_row)
        previous_class = tf.gather(out_class, previous)
        begins = (out_class == _ISOLATED) | (
            (out_class == _REGULAR) & (new_row | (previous_class != _REGULAR))
        )
        begins |= (out_class == _SPECIAL) & (out_special >= 0)
        kept = tf.where(out_class != _SPACE)[:, 0]
        kept_source = tf.gather(source, kept)
        words = tf.RaggedTensor.from_row_starts(
            tf.gather(out_code_point, kept), tf.where(tf.gather(begins, kept))[:, 0], validate=False
        )
        first_source = tf.gather(kept_source, words.row_starts())
        last_source = tf.gather(kept_source, words.row_limits() - 1)
        return _Words(
            code_points=words,
            special_id=tf.gather(tf.gather(out_special, kept), words.row_starts()),
            row=tf.gather(row, first_source),
            start=tf.gather(position, first_source),
            end=tf.gather(position, last_source) + 1,
            nrows=tf.shape(text, out_type=tf.int64)[0],
        )

    def _wordpiece(self, words: _Words) -> tuple[tf.Tensor, tf.Tensor]:
        """Greedy longest-match-first WordPiece over all words at once.

        Returns, for every token in order, the index of its word (into ``words``) and its id.
        """
        chars = words.code_points
        code_points = chars.flat_values
        count = tf.size(code_points, out_type=tf.int64)
        char_word = chars.value_rowids()
        word_length = chars.row_lengths()
        offset = tf.range(count) - tf.gather(chars.row_starts(), char_word)
        pieceable = (word_length <= self.max_input_chars_per_word) & (words.special_id < 0)

        # Candidate pieces: every substring starting at each character, up to the longest
        # vocabulary entry; candidate (c, k) is the k+1 characters starting at character c.
        candidates = tf.where(
            tf.gather(pieceable, char_word),
            tf.minimum(tf.gather(word_length, char_word) - offset, self._max_piece_chars),
            0,
        )
        candidate_end = tf.cumsum(candidates)
        candidate_first = candidate_end - candidates
        total = tf.reduce_sum(candidates)
        candidate = tf.range(total)
        candidate_char = tf.searchsorted(candidate_end, candidate, side="right", out_type=tf.int64)
        candidate_length = candidate - tf.gather(candidate_first, candidate_char) + 1

        # Cut the pieces out of one UTF-8 string holding all words back to back.
        utf8_length = 1 + tf.add_n(
            [tf.cast(code_points >= bound, tf.int64) for bound in (0x80, 0x800, 0x10000)]
        )
        byte_end = tf.cumsum(utf8_length)
        all_words = tf.strings.unicode_encode(code_points[None], "UTF-8")[0]
        piece_begin = tf.gather(byte_end - utf8_length, candidate_char)
        piece_end = tf.gather(byte_end, candidate_char + candidate_length - 1)
        piece = tf.strings.substr(all_words, piece_begin, piece_end - piece_begin)
        key = tf.where(
            tf.gather(offset, candidate_char) > 0,
            tf.strings.join([self.continuing_subword_prefix, piece]),
            piece,
        )
        candidate_id = self._vocab_table.lookup(key)
        best_length = tf.maximum(
            tf.math.unsorted_segment_max(
                tf.where(candidate_id >= 0, candidate_length, 0), candidate_char, count
            ),
            0,
        )

        # Walk the greedy chain of every word in parallel, marking where each piece starts.
        step_at = tf.concat([best_length, [0]], 0)
        word_limit = chars.row_limits()

        def walk(position, alive, failed, piece_start):
            step = tf.gather(step_at, position)
            advance = alive & (step > 0)
            piece_start = tf.tensor_scatter_nd_update(
                piece_start,
                tf.boolean_mask(position, advance)[:, None],
                tf.ones_like(tf.boolean_mask(position, advance), tf.bool),
            )
            position += tf.where(advance, step, 0)
            return position, advance & (position < word_limit), failed | (alive & ~advance), piece_start

        _, _, failed, piece_start = tf.while_loop(
            lambda position, alive, failed, piece_start: tf.reduce_any(alive),
            walk,
            (chars.row_starts(), pieceable, tf.zeros_like(pieceable), tf.zeros([count], tf.bool)),
            maximum_iterations=self.max_input_chars_per_word,
        )

        # Words that are special tokens, too long or not segmentable become a single token.
        whole = ~pieceable | failed
        whole_id = tf.where(words.special_id >= 0, words.special_id, tf.constant(self.unk_id, tf.int64))
        token_char = tf.where(tf.where(tf.gather(whole, char_word), offset == 0, piece_start))[:, 0]
        token_word = tf.gather(char_word, token_char)
        token_whole = tf.gather(whole, token_word)
        piece_index = tf.gather(candidate_first, token_char) + tf.gather(best_length, token_char) - 1
        piece_id = tf.gather(
            tf.concat([candidate_id, [-1]], 0), tf.where(token_whole, total, piece_index)
        )
        return token_word, tf.where(token_whole, tf.gather(whole_id, token_word), piece_id)

    # ------------------------------------------------------------------ public API

    @_on_cpu
    def split_words(self, text: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
        """Normalise and pre-tokenize ``text`` (tf.string ``[batch]``).

        Returns ``(words, word_start, word_end)``: the normalised words as strings
        ``[batch, (words)]`` and, as int64 ``[batch, (words)]``, each word's start and end
        in the original string as code point offsets (Python ``str`` indices), i.e. the
        span Hugging Face's offset mapping gives from the word's first to last token.
        """
        words = self._segment(text)
        strings = tf.RaggedTensor.from_value_rowids(
            tf.strings.unicode_encode(words.code_points, "UTF-8"), words.row, nrows=words.nrows, validate=False
        )
        return strings, strings.with_flat_values(words.start), strings.with_flat_values(words.end)

    @_on_cpu
    def tokenize(
        self, text: tf.Tensor
    ) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
        """Tokenize ``text`` (tf.string ``[batch]``) into WordPiece ids, without special tokens.

        Returns int64 ragged tensors ``(token_ids, token_word_index, word_start, word_end)``:
        ``token_ids`` and ``token_word_index`` (the index of each token's word within its
        row) are ``[batch, (tokens)]``; ``word_start`` / ``word_end`` are ``[batch, (words)]``
        as in :meth:`split_words`.
        """
        words = self._segment(text)
        token_word, token_id = self._wordpiece(words)
        word_start = tf.RaggedTensor.from_value_rowids(words.start, words.row, nrows=words.nrows, validate=False)
        token_row = tf.gather(words.row, token_word)
        token_ids = tf.RaggedTensor.from_value_rowids(token_id, token_row, nrows=words.nrows, validate=False)
        word_index = token_word - tf.gather(word_start.row_starts(), token_row)
        return token_ids, token_ids.with_flat_values(word_index), word_start, word_start.with_flat_values(words.end)

    @_on_cpu
    def pack(
        self, token_ids: tf.RaggedTensor, max_length: int, pair_token_ids: tf.RaggedTensor | None = None
    ) -> dict[str, tf.Tensor]:
        """Build model inputs from ``tokenize`` ids, like ``tokenizer(..., truncation=True, padding="longest")``.

        Laid out as the tokenizer's post-processor does: BERT's ``[CLS] a [SEP]`` or, with
        ``pair_token_ids``, ``[CLS] a [SEP] b [SEP]`` with ``token_type_ids`` 1 on ``b [SEP]`` (MPNet's
        tokenizer.json says ``<s> a </s></s> b </s>``); sequences are truncated from the right with
        Hugging Face's ``longest_first`` rule so that each row has at most ``max_length`` tokens, and
        rows are padded with the pad id to the longest row of the batch. Returns int64
        ``[batch, length]`` tensors ``input_ids``, ``attention_mask`` and ``token_type_ids``.
        """
        if pair_token_ids is None:
            return pack(self.layout.single, self.pad_id, max_length, [token_ids])
        return pack(self.layout.pair, self.pad_id, max_length, [token_ids, pair_token_ids])
