"""Label alignment, truncation counts and windows on sentences whose subwords are written out by hand.

With the tiny vocabulary, "unbelievable" is ``un ##believ ##able`` and "films" is
``film ##s``; every other word used here is one token.
"""

import numpy as np

from tfft.data.examples import TextExample, TokenExample
from tfft.data.labels import LabelMap
from tfft.features import (
    IGNORE_INDEX, NO_WORD, encode_for_inference, encode_for_training,
)
from tfft.inference import word_probabilities
from tfft.words import WordInputs

LABELS = LabelMap(["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"])


def ids(tokenizer, *tokens):
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def test_first_subword_carries_the_label(tiny_tokenizer):
    example = TokenExample(["Anna", "flew", "to", "Tokyo", "unbelievable"], ["B-PER", "O", "O", "B-LOC", "O"])
    encoding = encode_for_training(tiny_tokenizer, [example], LABELS, max_length=32)
    assert encoding.input_ids.tolist() == ids(
        tiny_tokenizer, "[CLS]", "anna", "flew", "to", "tokyo", "un", "##believ", "##able", "[SEP]")
    o, b_loc, b_per = LABELS.id("O"), LABELS.id("B-LOC"), LABELS.id("B-PER")
    assert encoding.labels.tolist() == [IGNORE_INDEX, b_per, o, o, b_loc, o, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert encoding.word_index.tolist() == [NO_WORD, 0, 1, 2, 3, 4, NO_WORD, NO_WORD, NO_WORD]
    assert encoding.num_truncated == 0


def test_label_all_subwords_continues_an_entity_with_inside_tags(tiny_tokenizer):
    example = TokenExample(["films", "unbelievable"], ["O", "B-MISC"])
    encoding = encode_for_training(tiny_tokenizer, [example], LABELS, max_length=32, label_all_subwords=True)
    o, b, i = LABELS.id("O"), LABELS.id("B-MISC"), LABELS.id("I-MISC")
    # [CLS] film ##s un ##believ ##able [SEP]
    assert encoding.labels.tolist() == [IGNORE_INDEX, o, o, b, i, i, IGNORE_INDEX]


def test_truncation_is_counted_and_keeps_one_row_per_example(tiny_tokenizer):
    long_one = TokenExample(["unbelievable"] * 8, ["O"] * 8)  # 24 subwords: four windows, one example
    short_one = TokenExample(["the", "film"], ["O", "O"])
    encoding = encode_for_training(tiny_tokenizer, [long_one, short_one], LABELS, max_length=8)
    assert encoding.num_truncated == 1
    assert encoding.row_lengths.tolist() == [8, 4]
    assert encoding.example_index.tolist() == [0, 1]


def test_inference_windows_cover_every_word_and_merge_on_the_most_central_window(tiny_tokenizer):
    words = ["the", "film", "is", "good", "the", "film", "is", "bad", "."]
    encoding = encode_for_inference(tiny_tokenizer, [TokenExample(words)], max_length=6, stride=2)
    assert encoding.num_rows > 1
    assert set(encoding.example_index.tolist()) == {0}
    seen = set(encoding.word_index[encoding.word_index != NO_WORD].tolist())
    assert seen == set(range(len(words)))
    # Give each token a one-hot on its position in its row: the merged word row then
    # reveals which window position was chosen; it must never be an edge if avoidable.
    positions = np.concatenate([np.arange(n) for n in encoding.row_lengths])
    probabilities = np.eye(6, dtype=np.float32)[positions]
    merged = word_probabilities(encoding, probabilities, [len(words)])[0]
    chosen_position = merged.argmax(-1)
    assert chosen_position.shape == (len(words),)
    # Windows hold 4 words each; with stride 2 every word after the first has a window
    # where it sits at position 2 or 3 (not next to [CLS]/[SEP]) except the last one.
    assert all(p in (2, 3) for p in chosen_position[1:-1])


def test_long_sequences_keep_their_first_tokens_in_training_and_inference_alike(tiny_tokenizer):
    labels = LabelMap(["0", "1"])
    for examples, lengths in (
        ([TextExample("the film is good . " * 6, label="1"), TextExample("bad", label="0")], [10, 3]),
        ([TextExample("the film " * 10, "is good . " * 2, label="1"), TextExample("bad", "good", label="0")], [10, 5]),
    ):
        trained = encode_for_training(tiny_tokenizer, examples, labels, max_length=10)
        inferred = encode_for_inference(tiny_tokenizer, examples, max_length=10, stride=2)
        assert trained.num_truncated == 1 and inferred.row_lengths.tolist() == lengths
        np.testing.assert_array_equal(trained.input_ids, inferred.input_ids)
        np.testing.assert_array_equal(trained.token_type_ids, inferred.token_type_ids)
    # The stride is for token windows only: any value works for sequences.
    assert encode_for_inference(tiny_tokenizer, examples, max_length=10, stride=32).row_lengths.tolist() == [10, 5]
    # A pair is cut longest_first (the longer text gives way), like the export's pack(): 4 + 3 tokens.
    assert inferred.input_ids[:10].tolist() == ids(tiny_tokenizer, "[CLS]", "the", "film", "the", "film", "[SEP]",
                                                   "is", "good", ".", "[SEP]")


def test_sequence_labels_follow_the_label_map(tiny_tokenizer):
    labels = LabelMap(["neg", "pos"])
    examples = [TextExample("the film is good", label="pos"), TextExample("the film is bad", label="neg")]
    encoding = encode_for_training(tiny_tokenizer, examples, labels, max_length=16)
    assert encoding.labels.tolist() == [1, 0]
    assert encoding.word_index is None


def test_sentence_pairs_get_segment_ids(tiny_tokenizer):
    labels = LabelMap(["0", "1"])
    encoding = encode_for_training(tiny_tokenizer, [TextExample("the film", "is good", "1")], labels, max_length=16)
    assert encoding.input_ids.tolist() == ids(tiny_tokenizer, "[CLS]", "the", "film", "[SEP]", "is", "good", "[SEP]")
    assert encoding.token_type_ids.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_word_shapes_become_token_types_of_every_subword(tiny_tokenizer):
    example = TokenExample(["Anna", "flew", "UNBELIEVABLE", "."], ["B-PER", "O", "O", "O"])
    encoding = encode_for_training(tiny_tokenizer, [example], LABELS, max_length=16,
                                   word_inputs=WordInputs(shapes=True))
    # [CLS] anna flew un ##believ ##able . [SEP]: special tokens 0, then 1 + shape (title 1, lower 0, upper 2, other 5)
    assert encoding.token_type_ids.tolist() == [0, 2, 1, 3, 3, 3, 6, 0]
    plain = encode_for_training(tiny_tokenizer, [example], LABELS, max_length=16)
    assert plain.token_type_ids.tolist() == [0] * 8


def test_document_context_adds_neighbour_words_without_labels(tiny_tokenizer):
    document = [TokenExample(["Anna", "flew"], ["B-PER", "O"], document=0),
                TokenExample(["to", "Tokyo"], ["O", "B-LOC"], document=0),
                TokenExample(["the", "film", "is", "good"], ["O"] * 4, document=0),
                TokenExample(["Paris"], ["B-LOC"], document=1)]
    inputs = WordInputs(shapes=True, context_window=3)
    encoding = encode_for_training(tiny_tokenizer, document, LABELS, max_length=32, word_inputs=inputs)
    rows = np.split(encoding.input_ids, np.cumsum(encoding.row_lengths)[:-1])
    # Whole words only, nearest first, at most 3 subwords a side, never across documents.
    assert rows[1].tolist() == ids(tiny_tokenizer, "[CLS]", "anna", "flew", "to", "tokyo", "the", "film", "is", "[SEP]")
    assert rows[0].tolist() == ids(tiny_tokenizer, "[CLS]", "anna", "flew", "to", "tokyo", "the", "[SEP]")
    assert rows[3].tolist() == ids(tiny_tokenizer, "[CLS]", "paris", "[SEP]")
    starts = np.cumsum(np.concatenate([[0], encoding.row_lengths[:-1]]))
    second = slice(starts[1], starts[2])
    assert encoding.word_index[second].tolist() == [NO_WORD, NO_WORD, NO_WORD, 0, 1, NO_WORD, NO_WORD, NO_WORD, NO_WORD]
    assert encoding.labels[second].tolist() == [IGNORE_INDEX] * 3 + [LABELS.id("O"), LABELS.id("B-LOC")] + \
        [IGNORE_INDEX] * 4
    # Context words keep their shapes: Anna is a title-case word (type 2) even as context.
    assert encoding.token_type_ids[second].tolist() == [0, 2, 1, 1, 2, 1, 1, 1, 0]
    # Room is left for the sentence itself: with max_length 6 the 4-word sentence gets no context.
    short = encode_for_training(tiny_tokenizer, document, LABELS, max_length=6, word_inputs=inputs)
    assert short.row_lengths.tolist() == [5, 6, 6, 3] and short.num_truncated == 0
    blank = [TokenExample([], document=0), TokenExample([], document=0)]
    assert encode_for_inference(tiny_tokenizer, blank, 32, 4, word_inputs=inputs).row_lengths.tolist() == [2, 2]
