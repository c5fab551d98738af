"""Words with exact offsets under both word rules, the natural rule on text as people write it, and shapes."""

from pathlib import Path

import numpy as np
import pytest

from tfft.data import read_conll
from tfft.data.natural import natural_text
from tfft.words import NATURAL, SHAPES, WHITESPACE, char_class, char_class_ranges, word_shape, word_spans

SHARED_VALID = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "valid.txt"
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "ner_valid.txt"


def words(text, word_split=NATURAL):
    return [text[s:e] for s, e in word_spans(text, word_split)]


def test_whitespace_rule_splits_at_whitespace_only_with_offsets():
    text = "  Anglo-Dutch group\tUnilever said S.AFRICA\u00a0results ,\r\nCorp. rose."
    spans = word_spans(text, WHITESPACE)
    assert [text[s:e] for s, e in spans] == ["Anglo-Dutch", "group", "Unilever", "said", "S.AFRICA", "results", ",",
                                             "Corp.", "rose."]
    assert spans[0] == (2, 13)


@pytest.mark.parametrize("word_split", [NATURAL, WHITESPACE])
def test_joined_conll_tokens_split_back_into_the_same_tokens(word_split):
    tokens = ["U.S.", "'s", "Xerox", "Corp.", "(", "NYSE:XRX", ")", "@user", "#tag", "http://x.co/a?b=1", "1-0",
              "Anglo-Dutch", "S.AFRICA", "3.5", "1,000", "n't", "vs.", "M.", "C$", "+44", ".500", "--", "..."]
    assert words(" ".join(tokens), word_split) == tokens


def test_empty_and_blank_texts_have_no_words():
    for word_split in (NATURAL, WHITESPACE):
        assert word_spans("", word_split) == [] and word_spans(" \t ", word_split) == []


@pytest.mark.parametrize("text, expected", [
    ("Angela Merkel visited Paris.", ["Angela", "Merkel", "visited", "Paris", "."]),
    ("Samsung, LG and Sony", ["Samsung", ",", "LG", "and", "Sony"]),
    ("LONDON (Reuters) -", ["LONDON", "(", "Reuters", ")", "-"]),
    ('He said "Apple" is big.', ["He", "said", '"', "Apple", '"', "is", "big", "."]),
    ("Apple Inc.'s shares", ["Apple", "Inc.", "'s", "shares"]),
    ("Apple's, England's.", ["Apple", "'s", ",", "England", "'s", "."]),
    ("GERMANY'S Kohl we're I'm they'll she'd you've", ["GERMANY", "'S", "Kohl", "we", "'re", "I", "'m", "they",
                                                       "'ll", "she", "'d", "you", "'ve"]),
    ("It didn't, DOESN'T.", ["It", "did", "n't", ",", "DOES", "N'T", "."]),
    ("U.S.-based Anglo-Dutch S.AFRICA won 1-0.", ["U.S.-based", "Anglo-Dutch", "S.AFRICA", "won", "1-0", "."]),
    ("Xerox Corp. said Mr. Smith of Acme Corp.", ["Xerox", "Corp.", "said", "Mr.", "Smith", "of", "Acme", "Corp", "."]),
    ("in the U.S. on Monday", ["in", "the", "U.S.", "on", "Monday"]),
    ("in the U.S..", ["in", "the", "U.S.", "."]),
    ("Chang (U.S.)", ["Chang", "(", "U.S.", ")"]),
    ("John F. Kennedy", ["John", "F.", "Kennedy"]),
    ("1. Lance Armstrong", ["1.", "Lance", "Armstrong"]),
    ("up 3.5% to $1,000 or C$100.", ["up", "3.5", "%", "to", "$", "1,000", "or", "C$", "100", "."]),
    ("@user: see https://t.co/x?a=1, me@x.com #win!!!", ["@user", ":", "see", "https://t.co/x?a=1", ",", "me@x.com",
                                                         "#win", "!", "!", "!"]),
    ("wait...what? yes\u2014no --ok", ["wait", "...", "what", "?", "yes", "\u2014", "no", "--", "ok"]),
    ("\u201cParis\u201d \u00abRome\u00bb \u00bfQu\u00e9?", ["\u201c", "Paris", "\u201d", "\u00ab", "Rome", "\u00bb",
                                                        "\u00bf", "Qu\u00e9", "?"]),
    ('"(Reuters)."', ['"', "(", "Reuters", ")", ".", '"']),
    ("Jones' car", ["Jones", "'", "car"]),
    ("I \u2764\ufe0f NY \U0001F600!", ["I", "\u2764\ufe0f", "NY", "\U0001F600", "!"]),
    # CJK ideographs are words of their own, as BERT's pre-tokenizer makes them; kana stay runs.
    ("北京是中国的首都。Tokyo", ["北", "京", "是", "中", "国", "的", "首", "都", "。", "Tokyo"]),
    ("ソニー（Sony）本社は東京にある。", ["ソニー", "（", "Sony", "）", "本", "社", "は", "東", "京", "にある", "。"]),
    ("「東京」は、ジョン・スミス！", ["「", "東", "京", "」", "は", "、", "ジョン・スミス", "！"]),
    ("\U00020000x 漢字.", ["\U00020000", "x", "漢", "字", "."]),
])
def test_natural_rule_splits_text_as_people_write_it_into_treebank_words(text, expected):
    assert words(text) == expected


def test_natural_offsets_cover_exactly_the_word():
    text = "\tMerkel visited Paris.\u00a0(Reuters)"
    spans = word_spans(text)
    assert spans == [(1, 7), (8, 15), (16, 21), (21, 22), (23, 24), (24, 31), (31, 32)]
    assert text[16:21] == "Paris"


def test_natural_rule_leaves_no_working_character_behind():
    # The rule's own marks in the input are ordinary characters of a word.
    assert words("a\x1fb \x1e. c\x1c\x1d") == ["a\x1fb", "\x1e", ".", "c\x1c\x1d"]


@pytest.mark.parametrize("path", [SAMPLE, SHARED_VALID], ids=["shipped-sample", "conll2003-valid"])
def test_natural_rule_rebuilds_conll_tokens_from_written_text(path):
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared CoNLL-2003 data is not on this machine)")
    sentences = [example.tokens for example in read_conll(path)]
    same = sum(words(natural_text(tokens)[0]) == list(tokens) for tokens in sentences)
    assert same / len(sentences) >= 0.99, f"{same} of {len(sentences)} sentences"
    # Whitespace splitting cannot: the test is not one that any rule passes.
    assert sum(words(natural_text(t)[0], WHITESPACE) == list(t) for t in sentences) / len(sentences) < 0.9


@pytest.mark.parametrize("word, shape", [
    ("paris", "lower"), ("Paris", "title"), ("McDonald", "title"), ("Anglo-Dutch", "title"), ("U.S.", "upper"),
    ("S.AFRICA", "upper"), ("A", "upper"), ("iPhone", "mixed"), ("1996", "digits"), ("3-0", "digits"),
    (",", "other"), ("--", "other"), ("東京", "uncased"), ("Ölçek", "title"), ("1990s", "lower"), ("", "other"),
])
def test_word_shapes(word, shape):
    assert SHAPES[word_shape(word)] == shape


def test_char_class_ranges_cover_every_code_point():
    starts, classes = char_class_ranges()
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    for cp in [0, 65, 97, 48, 0x3042, 0x0130, 0x1F600, 0x10FFFF, 0x2160]:
        run = np.searchsorted(starts, cp, side="right") - 1
        assert classes[run] == char_class(chr(cp))
