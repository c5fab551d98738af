"""Whitespace words with exact offsets, and the word-shape rule, on hand-made strings."""

import numpy as np
import pytest

from tfft.words import SHAPES, char_class, char_class_ranges, word_shape, word_spans


def test_words_are_whitespace_tokens_with_offsets():
    text = "  Anglo-Dutch group\tUnilever said S.AFRICA\u00a0results ,\r\nCorp. rose."
    spans = word_spans(text)
    assert [text[s:e] for s, e in spans] == ["Anglo-Dutch", "group", "Unilever", "said", "S.AFRICA", "results", ",",
                                             "Corp.", "rose."]
    assert spans[0] == (2, 13)


def test_joined_conll_tokens_split_back_into_the_same_tokens():
    tokens = ["U.S.", "'s", "Xerox", "Corp.", "(", "NYSE:XRX", ")", "@user", "#tag", "http://x.co/a?b=1"]
    assert [" ".join(tokens)[s:e] for s, e in word_spans(" ".join(tokens))] == tokens


def test_empty_and_blank_texts_have_no_words():
    assert word_spans("") == [] and word_spans(" \t ") == []


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
