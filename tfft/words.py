"""Words of raw text and their shapes: the units a token classifier tags, as in training.

Why: CoNLL-style training data is split at whitespace only (``U.S.``, ``Anglo-Dutch`` and
``S.AFRICA`` are single tokens), and the model learns to tag a word from its *first*
subword. Splitting raw text any other way (e.g. at every punctuation mark, as BERT's
pre-tokenizer does) asks the model to tag subwords it never learned to tag and cuts
entities apart. So prediction splits raw text at whitespace, exactly as the reader did.

Word shapes give an uncased encoder (which lower-cases everything) the capitalisation of
each word -- the strongest single cue for names -- as a token type id (see
``tfft.models.build_model``). The export computes the same shapes in the serving graph
from :func:`char_class_ranges`, built from the same per-character rule, so both agree.

No TensorFlow here.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

WHITESPACE = "whitespace"
WORD_SPLITS = (WHITESPACE,)

# Character classes (the shape rule looks at nothing else).
OTHER_CHAR, UPPER_CHAR, LOWER_CHAR, DIGIT_CHAR, UNCASED_LETTER = range(5)

SHAPES = ("lower", "title", "upper", "mixed", "digits", "other", "uncased")
LOWER, TITLE, UPPER, MIXED, DIGITS, OTHER, UNCASED = range(len(SHAPES))
# Token type ids of a shaped model: 0 for [CLS]/[SEP]/padding, 1 + shape for a word's subwords.
NUM_SHAPE_TOKEN_TYPES = 1 + len(SHAPES)

# Whitespace: what str.split() splits at, less the control characters among them (\v, \f,
# U+001C-U+001F, U+0085), which BERT's normaliser deletes rather than treating as spaces: a
# word never straddles what the tokenizer sees as one piece. Joined CoNLL tokens split back
# into exactly those tokens (the reader splits columns at any whitespace).
# (No whitespace character lies above U+3000, IDEOGRAPHIC SPACE.)
WHITESPACE_CHARACTERS = "".join(chr(cp) for cp in range(0x3001)
                     if chr(cp).isspace() and (unicodedata.category(chr(cp)) != "Cc" or chr(cp) in "\t\n\r"))
_WORD = re.compile(f"[^{re.escape(WHITESPACE_CHARACTERS)}]+")


@dataclass(frozen=True)
class WordInputs:
    """What a token classifier sees of its words besides their subwords; fixed at training time.

    ``shapes``: each subword's token type id is ``1 + its word's shape`` (see
    :mod:`tfft.words`; the model must be built with ``build_model(word_shapes=True)``).
    ``context_window``: up to this many subwords of the previous and of the next sentences
    of the same document (``TokenExample.document``) are added on each side as context.
    """

    shapes: bool = False
    context_window: int = 0


def word_spans(text: str) -> List[Tuple[int, int]]:
    """``(start, end)`` offsets of the whitespace-separated words of ``text`` (``WHITESPACE_CHARACTERS``)."""
    return [match.span() for match in _WORD.finditer(text)]


def char_class(character: str) -> int:
    """The class of one character for the shape rule: upper, lower, digit, uncased letter or other."""
    if character.isupper():
        return UPPER_CHAR
    if character.islower():
        return LOWER_CHAR
    if character.isdigit():
        return DIGIT_CHAR
    if character.isalpha():
        return UNCASED_LETTER
    return OTHER_CHAR


def shape_of_classes(upper: int, lower: int, digit: int, uncased: int, first_cased: int) -> int:
    """The shape of a word from its character class counts and the class of its first cased letter."""
    if upper + lower == 0:
        return UNCASED if uncased else DIGITS if digit else OTHER
    if lower == 0:
        return UPPER
    if upper == 0:
        return LOWER
    return TITLE if first_cased == UPPER_CHAR else MIXED


def word_shape(word: str) -> int:
    """``lower`` (paris), ``title`` (Paris, McDonald, Anglo-Dutch), ``upper`` (U.S., S.AFRICA),
    ``mixed`` (iPhone), ``digits`` (1996, 3-0), ``other`` (punctuation), ``uncased`` (scripts
    without case); an index into :data:`SHAPES`."""
    classes = [char_class(c) for c in word]
    first_cased = next((c for c in classes if c in (UPPER_CHAR, LOWER_CHAR)), OTHER_CHAR)
    return shape_of_classes(classes.count(UPPER_CHAR), classes.count(LOWER_CHAR), classes.count(DIGIT_CHAR),
                            classes.count(UNCASED_LETTER), first_cased)


def shape_token_types(words: Sequence[str]) -> np.ndarray:
    """The token type id of each word's subwords in a shaped model (``1 + shape``)."""
    return np.fromiter((1 + word_shape(w) for w in words), dtype=np.int32, count=len(words))


@functools.lru_cache(maxsize=1)
def char_class_ranges() -> Tuple[np.ndarray, np.ndarray]:
    """:func:`char_class` over all of Unicode as runs: ``(first code point of each run, its class)``.

    Lets a graph classify a code point with one ``searchsorted`` (a few thousand runs).
    """
    classes = np.fromiter((char_class(chr(cp)) for cp in range(0x110000)), dtype=np.int32, count=0x110000)
    starts = np.flatnonzero(np.concatenate([[True], classes[1:] != classes[:-1]]))
    return starts.astype(np.int32), classes[starts]
