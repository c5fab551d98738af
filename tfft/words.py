"""Words of raw text and their shapes: the units a token classifier tags, as in training.

Why: the model learns to tag a word from its *first* subword, on training data whose words
are treebank-style tokens: punctuation, quotes and clitics are words of their own
(``Paris`` ``.``, ``(`` ``Reuters`` ``)``, ``Apple`` ``'s``), while inner punctuation stays
(``U.S.``, ``Anglo-Dutch``, ``S.AFRICA``, ``1-0``). People write ``Paris.``, ``(Reuters)``
and ``Apple's``; tagging those as one word asks the model to tag from a ``(`` or ``"``,
which it never learned, and returns spans with punctuation attached. So prediction splits
raw text with the ``natural`` rule, which rebuilds treebank tokens from text as people
write it; ``whitespace`` (split at whitespace only) remains for text that is already
tokenized with spaces.

The ``natural`` rule is a list of regular-expression rewrites (:data:`NATURAL_REWRITES`)
written in the common subset of Python's ``re`` and RE2 (no look-around, no anchors,
explicit character classes), which insert a break mark between words. Python applies them
with ``re.sub``; the serving graph applies the same list with ``tf.strings.regex_replace``
(a core op), so both split every text the same way, character for character.

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

NATURAL = "natural"
WHITESPACE = "whitespace"
WORD_SPLITS = (NATURAL, WHITESPACE)

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


# Punctuation as BERT's pre-tokenizer isolates it: ASCII punctuation plus the Unicode
# categories P* (probed from tokenizers 0.21.4; code points in hexadecimal, "a-b" for ranges).
PUNCTUATION_RANGES = """
21-2f 3a-40 5b-60 7b-7e a1 a7 ab b6-b7 bb bf 37e 387 55a-55f 589-58a 5be 5c0 5c3 5c6 5f3-5f4
609-60a 60c-60d 61b 61e-61f 66a-66d 6d4 700-70d 7f7-7f9 830-83e 85e 964-965 970 af0 df4 e4f
e5a-e5b f04-f12 f14 f3a-f3d f85 fd0-fd4 fd9-fda 104a-104f 10fb 1360-1368 1400 166d-166e
169b-169c 16eb-16ed 1735-1736 17d4-17d6 17d8-17da 1800-180a 1944-1945 1a1e-1a1f 1aa0-1aa6
1aa8-1aad 1b5a-1b60 1bfc-1bff 1c3b-1c3f 1c7e-1c7f 1cc0-1cc7 1cd3 2010-2027 2030-2043 2045-2051
2053-205e 207d-207e 208d-208e 2308-230b 2329-232a 2768-2775 27c5-27c6 27e6-27ef 2983-2998
29d8-29db 29fc-29fd 2cf9-2cfc 2cfe-2cff 2d70 2e00-2e2e 2e30-2e42 3001-3003 3008-3011 3014-301f
3030 303d 30a0 30fb a4fe-a4ff a60d-a60f a673 a67e a6f2-a6f7 a874-a877 a8ce-a8cf a8f8-a8fa a8fc
a92e-a92f a95f a9c1-a9cd a9de-a9df aa5c-aa5f aade-aadf aaf0-aaf1 abeb fd3e-fd3f fe10-fe19
fe30-fe52 fe54-fe61 fe63 fe68 fe6a-fe6b ff01-ff03 ff05-ff0a ff0c-ff0f ff1a-ff1b ff1f-ff20
ff3b-ff3d ff3f ff5b ff5d ff5f-ff65 10100-10102 1039f 103d0 1056f 10857 1091f 1093f 10a50-10a58
10a7f 10af0-10af6 10b39-10b3f 10b99-10b9c 11047-1104d 110bb-110bc 110be-110c1 11140-11143
11174-11175 111c5-111c9 111cd 111db 111dd-111df 11238-1123d 112a9 114c6 115c1-115d7 11641-11643
1173c-1173e 12470-12474 16a6e-16a6f 16af5 16b37-16b3b 16b44 1bc9f 1da87-1da8b
"""

# CJK ideographs, as BERT's pre-tokenizer finds them (``_is_chinese_char``): text in Chinese, and the
# kanji of Japanese, is written without spaces, so each ideograph is a word of its own (as in CJK
# NER corpora, which put one character on each line), and the encoder's tokenizer makes each one a
# token of its own too. Kana, Hangul and Thai are not in these ranges; like BERT, they stay runs.
CJK_IDEOGRAPH_RANGES = "3400-4dbf 4e00-9fff f900-faff 20000-2a6df 2a700-2b73f 2b740-2b81f 2b820-2ceaf 2f800-2fa1f"
# The punctuation of text written without spaces (CJK symbols and full-width forms: 、。「」（）！？)
# stands between words with no space beside it, so it is a word wherever it stands; the
# full-width twins of the marks that are never peeled (＠＃．－…) and the middle dots that join
# the parts of a name written in katakana (ジョン・スミス) are left to the other rules.
WIDE_PUNCTUATION_BLOCKS = ((0x3000, 0x303F), (0xFF00, 0xFF65))

# Characters the natural rule writes into its working copy of a text; a text's own
# occurrences are replaced first (one character for one, so offsets stay put).
BREAK = "\x1f"  # a word boundary
KEPT = "\x1e"  # a punctuation mark that stays in its word: the periods of U.S. and Corp., a lone 's
TEXT_START, TEXT_END = "\x1c", "\x1d"
WORKING_CHARACTERS = BREAK + KEPT + TEXT_START + TEXT_END
WORKING_REPLACEMENT = "\x1a"

# Never peeled off a word's edge: they belong to handles, hashtags, numbers, e-mail and web
# addresses and dashes (``@user``, ``#tag``, ``.500``, ``+44``, ``-5``); periods have rules of
# their own. ``$`` is peeled off the front of a word only (``$5``, but ``US$``).
_NEVER_PEELED = "@#.-+_&/\\~*=<>^|"
_LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_CLOSING_QUOTES = "\"'\u201d\u2019\u00bb"
_CURRENCY = "$\u00a3\u20ac\u00a5"
_CLITICS = ("s", "S", "re", "RE", "ve", "VE", "ll", "LL", "m", "M", "d", "D")
# Abbreviations whose period stays when a word follows (``Corp. said``, ``Mr. Smith``, ``Oct. 5``);
# at the very end of a text the period is a full stop of its own.
ABBREVIATIONS = (
    "Mr", "Mrs", "Ms", "Dr", "Prof", "Sr", "Jr", "St", "Mt", "Ft", "Gen", "Gov", "Sen", "Rep", "Rev", "Lt",
    "Col", "Capt", "Maj", "Sgt", "Cmdr", "Adm", "Hon", "Pres", "Supt", "Insp", "Messrs", "Mme", "Mlle",
    "Inc", "Corp", "Co", "Ltd", "Bros", "Cie", "Dept", "Univ", "Assn", "Ave", "Blvd", "Rd",
    "vs", "etc", "approx", "est", "vol", "Vol", "pp", "cf", "al",
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
    "Ala", "Ariz", "Ark", "Calif", "Colo", "Conn", "Del", "Fla", "Ga", "Ill", "Ind", "Kan", "Ky", "La", "Md",
    "Mass", "Mich", "Minn", "Miss", "Mo", "Mont", "Neb", "Nev", "Okla", "Ore", "Pa", "Tenn", "Tex", "Va", "Vt",
    "Wash", "Wis", "Wyo",
)


def code_point_ranges(spec: str) -> List[Tuple[int, int]]:
    """``(first, last)`` code points of each item of a hexadecimal range list like ``"21-2f b6-b7 bb"``."""
    ranges = []
    for item in spec.split():
        first, _, last = item.partition("-")
        ranges.append((int(first, 16), int(last or first, 16)))
    return ranges


def _class(ranges: Sequence[Tuple[int, int]]) -> str:
    """A regular-expression character class that Python's ``re`` and RE2 read alike."""
    def literal(cp: int) -> str:
        return ("\\" + chr(cp)) if chr(cp) in "\\]^-[&~|" else chr(cp)

    return "[" + "".join(literal(a) if a == b else f"{literal(a)}-{literal(b)}" for a, b in ranges) + "]"


def _without(ranges: Sequence[Tuple[int, int]], excluded: str) -> List[Tuple[int, int]]:
    """``ranges`` less the characters of ``excluded``."""
    out = []
    for first, last in ranges:
        run_start = None
        for cp in range(first, last + 1):
            if chr(cp) in excluded:
                if run_start is not None:
                    out.append((run_start, cp - 1))
                run_start = None
            elif run_start is None:
                run_start = cp
        if run_start is not None:
            out.append((run_start, last))
    return out


def _within(ranges: Sequence[Tuple[int, int]], blocks: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The parts of ``ranges`` that lie inside ``blocks``."""
    return [(max(first, low), min(last, high)) for first, last in ranges for low, high in blocks
            if first <= high and last >= low]


def _natural_rewrites() -> Tuple[Tuple[str, str], ...]:
    """The natural rule's rewrites, in order, as ``(pattern, replacement)`` with ``\\1``-style groups.

    They run on ``TEXT_START + text + TEXT_END`` with whitespace turned into spaces. Each one
    inserts ``BREAK`` between two words or marks punctuation to keep in its word (``KEPT``); passes
    that consume the character after a match are repeated so that neighbours are all reached.
    """
    punctuation = code_point_ranges(PUNCTUATION_RANGES)
    # Peeled off the front of a word, and a word of its own wherever it stands next to another.
    isolated = _class(_without(punctuation, _NEVER_PEELED))
    trailing = _class(_without(punctuation, _NEVER_PEELED + "$"))
    never_peeled_wide = "".join(chr(ord(c) + 0xFEE0) for c in _NEVER_PEELED) + "\u30fb\uff65"  # ＠ is @ + 0xFEE0
    wide = _class(_without(_within(punctuation, WIDE_PUNCTUATION_BLOCKS), never_peeled_wide))
    b, k, s, e = BREAK, KEPT, TEXT_START, TEXT_END
    before = f"[ {b}{s}]"  # what may stand before a word
    after = f"[ {b}{e}]"  # what may stand after a word
    inside = f"[^ {b}{s}{e}]"  # a character of a word
    letter = f"[{_LATIN_LETTERS}]"
    not_letter = f"[^{_LATIN_LETTERS}]"
    clitic = "['\u2019](?:" + "|".join(_CLITICS) + ")"
    abbreviations = "|".join(sorted({*ABBREVIATIONS, *(a.upper() for a in ABBREVIATIONS)}, key=lambda a: (-len(a), a)))
    kept_periods = [
        (f"(\\.{letter})\\.({after})", f"\\1{k}\\2"),  # U.S. a.m. Iraq-U.N. (anywhere)
        (f"({before}{letter})\\.([ {b}])", f"\\1{k}\\2"),  # initials: M. Smith (not at the end)
        (f"({before}(?:{abbreviations}))\\.([ {b}])", f"\\1{k}\\2"),  # Corp. said (not at the end)
        (f"({s}[0-9]+)\\.( )", f"\\1{k}\\2"),  # a numbered list item: "1. Lance Armstrong"
    ]
    edges = [
        (f"({inside})({trailing}+)({after})", f"\\1{b}\\2\\3"),  # Paris, (Reuters) Apple,"
        (f"([^ {b}{s}{e}.]\\.)\\.({after})", f"\\1{b}.\\2"),  # U.S.. (an abbreviation, then a full stop)
        # The text's last period (before closing quotes) is a full stop, split off as treebank data
        # does: "Acme Corp." ends "Corp" "." (but "(U.S.)" keeps its period).
        (f"([^ {b}{s}{e}.])\\.((?:{b}[{_CLOSING_QUOTES}]+)?{e})", f"\\1{b}.\\2"),
        *kept_periods,
        (f"([^ {b}{s}{e}.])\\.({after})", f"\\1{b}.\\2"),  # Paris.  (not an ellipsis)
    ]
    return (
        (f"({_class(code_point_ranges(CJK_IDEOGRAPH_RANGES))})", f"{b}\\1{b}"),  # 北京 -> 北 京
        (f"({wide})", f"{b}\\1{b}"),  # ソニー、パナソニック
        ("(\u2014|\u2015|--+|\\.\\.\\.+|\u2026)", f"{b}\\1{b}"),  # dashes and ellipses between words
        (f"({before})['\u2019]((?:{'|'.join(_CLITICS)})(?:{after}))", f"\\1{k}\\2"),  # a lone 's stays whole
        (f"({before})({isolated}+)({inside})", f"\\1\\2{b}\\3"),  # (Reuters "Apple $5
        (f"([{_CURRENCY}])([0-9])", f"\\1{b}\\2"),  # C$100, US$5
        (f"([{_LATIN_LETTERS}0-9.])({clitic})({not_letter})", f"\\1{b}\\2\\3"),  # Apple's we're I'm Inc.'s 20's
        (f"({letter})([nN]['\u2019][tT])({not_letter})", f"\\1{b}\\2\\3"),  # didn't
        *(edges * 3),
        # What peeling left side by side is a word each: ," ). ?!
        *((f"({isolated})({isolated})", f"\\1{b}\\2"),) * 2,
    )


NATURAL_REWRITES = _natural_rewrites()
# Every rule's first rewrites of the text itself, one character for one: the working characters, then whitespace.
PREPARE_REWRITES = (
    (_class([(ord(c), ord(c)) for c in WORKING_CHARACTERS]), WORKING_REPLACEMENT),
    (_class([(ord(c), ord(c)) for c in WHITESPACE_CHARACTERS]), " "),
)
_COMPILED_PREPARE = tuple((re.compile(p), r) for p, r in PREPARE_REWRITES)
_COMPILED = {NATURAL: tuple((re.compile(p), r) for p, r in NATURAL_REWRITES), WHITESPACE: ()}
_DELIMITERS = " " + TEXT_START + TEXT_END


def rewrites(word_split: str) -> Tuple[Tuple[str, str], ...]:
    """The rewrites of ``word_split``, applied in order to ``TEXT_START + prepared text + TEXT_END``."""
    if word_split not in WORD_SPLITS:
        raise ValueError(f"word_split must be one of {', '.join(WORD_SPLITS)}; got {word_split!r}")
    return NATURAL_REWRITES if word_split == NATURAL else ()


def working_text(text: str, word_split: str = NATURAL) -> str:
    """``text`` prepared by :data:`PREPARE_REWRITES`, between ``TEXT_START`` and ``TEXT_END``, with
    ``BREAK`` inserted between words by the rewrites of ``word_split``.

    Apart from the inserted breaks, characters stay in their places (rewrites replace one
    character by one), so a word's offsets in ``text`` follow from its place here. The
    serving graph builds the same string with the same rewrites (:mod:`tfft.export.graph_words`).
    """
    rewrites(word_split)  # a clear error for an unknown rule
    for pattern, replacement in _COMPILED_PREPARE:
        text = pattern.sub(replacement, text)
    marked = TEXT_START + text + TEXT_END
    for pattern, replacement in _COMPILED[word_split]:
        marked = pattern.sub(replacement, marked)
    return marked


def word_spans(text: str, word_split: str = NATURAL) -> List[Tuple[int, int]]:
    """``(start, end)`` character offsets of the words of ``text`` under ``word_split``."""
    spans: List[Tuple[int, int]] = []
    start, index = None, -2  # index: the original offset of the current character (TEXT_START's is -1)
    for character in working_text(text, word_split):
        if character != BREAK:
            index += 1
        if character == BREAK or character in _DELIMITERS:
            if start is not None:
                spans.append((start, index + (character == BREAK)))
            start = None
        elif start is None:
            start = index
    return spans


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
