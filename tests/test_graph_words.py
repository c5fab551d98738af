"""The serving graph's words, shapes and Viterbi decoding equal the Python ones they mirror."""

import numpy as np

from tfft.backend import tf
from tfft.decoding import viterbi_tags
from tfft.export.graph_words import viterbi_decode, whitespace_words
from tfft.words import word_shape, word_spans

TEXTS = [
    "Anglo-Dutch group Unilever said S.AFRICA results were strong .",
    "  New York-based Xerox Corp. rose.\t",
    "",
    "   ",
    "iPhone 3-0 1996 , ;東京 Tokyo Ölçek ǅemal \u00a0x\u2003y\u3000z",
    "a\x00b\u200bc\x07d\te\x1bf Anna\x1c@user #Tag http://x.co/A?b=1",
    "I ❤️ 🍕 in PARIS !! 🏳️‍🌈 \ud7ff\U0010ffff",
]


def test_whitespace_words_and_shapes_match_python():
    words = whitespace_words(tf.constant(TEXTS))
    for row, text in enumerate(TEXTS):
        spans = word_spans(text)
        assert list(zip(words.start[row].numpy().tolist(), words.end[row].numpy().tolist())) == spans, text
        assert words.shape[row].numpy().tolist() == [word_shape(text[s:e]) for s, e in spans], text


def test_graph_viterbi_equals_numpy_viterbi_on_random_sentences():
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    rng = np.random.default_rng(0)
    lengths = [0, 1, 2, 5, 9, 9, 3]
    probabilities = rng.dirichlet(np.full(len(labels), 0.3), size=(len(lengths), max(lengths))).astype(np.float32)
    valid = np.arange(max(lengths))[None] < np.array(lengths)[:, None]
    graph = viterbi_decode(tf.constant(probabilities), tf.constant(valid), labels).numpy()
    expected = viterbi_tags([p[:n] for p, n in zip(probabilities, lengths)], labels)
    for row, n in enumerate(lengths):
        assert graph[row, :n].tolist() == expected[row].tolist()
    empty = viterbi_decode(tf.zeros([2, 0, len(labels)]), tf.zeros([2, 0], tf.bool), labels)
    assert empty.shape == (2, 0)


def test_valid_arg_max_tags_are_kept_without_the_search():
    labels = ["O", "B-LOC", "I-LOC"]
    probabilities = np.array([[[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.9, 0.05, 0.05]]], np.float32)
    valid = np.array([[True, True, False]])
    assert viterbi_decode(tf.constant(probabilities), tf.constant(valid), labels).numpy()[0, :2].tolist() == [1, 2]
    invalid = probabilities[:, [2, 1, 0]]  # O I-LOC ...: arg-max starts with I-LOC, the search repairs it
    assert viterbi_decode(tf.constant(invalid), tf.constant(valid), labels).numpy()[0, :2].tolist() == \
        viterbi_tags([invalid[0, :2]], labels)[0].tolist()
