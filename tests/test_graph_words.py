"""The serving graph's words, shapes and Viterbi decoding equal the Python ones they mirror."""

import numpy as np
import pytest

from tfft.backend import tf
from tfft.decoding import viterbi_tags
from tfft.export.graph_words import split_words, valid_utf8, viterbi_decode
from tfft.words import ABBREVIATIONS, PUNCTUATION_RANGES, WHITESPACE_CHARACTERS, WORD_SPLITS, WORKING_CHARACTERS, \
    code_point_ranges, word_shape, word_spans

TEXTS = [
    "Anglo-Dutch group Unilever said S.AFRICA results were strong .",
    "  New York-based Xerox Corp. rose.\t",
    "",
    "   ",
    "iPhone 3-0 1996 , ;東京 Tokyo Ölçek ǅemal \u00a0x\u2003y\u3000z",
    "a\x00b\u200bc\x07d\te\x1bf Anna\x1c@user #Tag http://x.co/A?b=1",
    "I ❤️ 🍕 in PARIS !! 🏳️‍🌈 \ud7ff\U0010ffff",
    '(Reuters) - "Apple Inc.\'s" U.S.-based unit didn\'t say, Mr. Smith told Acme Corp.',
    "«Paris» ¿Qué? — 5% of C$100... (U.S.)\x1f\x1e.",
    "北京是中国的首都。Tokyo ソニー（Sony）本社、「東京」ジョン・スミス！\U00020000ｘ＠ｙ",
]


def _graph_spans(texts, word_split):
    """Words and shapes from a signature traced for any batch, as TF Serving calls it."""
    serve = tf.function(lambda text: split_words(valid_utf8(text), word_split),
                        input_signature=[tf.TensorSpec([None], tf.string)])
    words = serve(tf.constant(texts))
    return [(list(zip(words.start[row].numpy().tolist(), words.end[row].numpy().tolist())),
             words.shape[row].numpy().tolist()) for row in range(len(texts))]


def _random_texts(count: int, seed: int = 0):
    """Unicode-heavy strings built from what the word rule looks at: every punctuation mark it knows,
    whitespace of all kinds, its working characters, clitics, abbreviations, digits, letters of
    several scripts, combining marks, emoji and CJK."""
    rng = np.random.default_rng(seed)
    punctuation = [chr(cp) for first, last in code_point_ranges(PUNCTUATION_RANGES) for cp in range(first, last + 1)]
    pieces = (list("aZé0159$£€¥%@#.-+_&/~*") + punctuation + list(WHITESPACE_CHARACTERS) + list(WORKING_CHARACTERS)
              + ["'s", "'S", "n't", "\u2019re", "'ll", "'", '"', "...", "\u2026", "--", "\u2014", "U.S.", "a.m.",
                 "http://x.co/a.", "me@x.com", *[a + "." for a in ABBREVIATIONS[:20]], "Paris", "東京", "Ölçek",
                 "ソニー", "、", "（", "」", "・", "＠", "\U0002a700",
                 "e\u0301", "\U0001F600", "\u0627\u0644", "\x00", "\u200b", "\uffff", "\U0010ffff"])
    return ["".join(rng.choice(pieces, size=rng.integers(0, 25))) for _ in range(count)]


@pytest.mark.parametrize("word_split", WORD_SPLITS)
def test_graph_words_and_shapes_equal_python_character_for_character(word_split):
    texts = TEXTS + _random_texts(1500, seed=WORD_SPLITS.index(word_split))
    for text, (spans, shapes) in zip(texts, _graph_spans(texts, word_split)):
        assert spans == word_spans(text, word_split), repr(text)
        assert shapes == [word_shape(text[s:e]) for s, e in spans], repr(text)


def test_graph_reads_invalid_utf8_as_replacement_characters():
    (spans, _), = _graph_spans([b"Paris\xff. \xc3(Tokyo)"], "natural")
    assert spans == word_spans("Paris\ufffd. \ufffd(Tokyo)", "natural")


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


def test_traced_viterbi_decodes_batches_whose_longest_sentence_has_one_word_or_none():
    labels = ["O", "B-LOC", "I-LOC"]
    decode = tf.function(lambda p, v: viterbi_decode(p, v, labels),  # any batch and length, as TF Serving calls it
                         input_signature=[tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None], tf.bool)])
    inside_first = np.array([0.05, 0.15, 0.8], np.float32)  # arg-max I-LOC: invalid at a sentence start
    for lengths in ([1], [1, 0], [0, 1, 1], [0, 0]):
        probabilities = np.broadcast_to(inside_first, (len(lengths), max(lengths), 3)).copy()
        valid = np.arange(max(lengths))[None] < np.array(lengths)[:, None]
        decoded = decode(tf.constant(probabilities), tf.constant(valid)).numpy()
        assert decoded.shape == (len(lengths), max(lengths))
        for row, n in enumerate(lengths):
            assert decoded[row, :n].tolist() == [1] * n  # repaired to B-LOC
