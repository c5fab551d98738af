import re

import pytest

from tfft.data.conll import read_conll
from tfft.data.examples import TextExample, TokenExample
from tfft.data.labels import LabelMap
from tfft.data.memory import from_texts, from_tokens
from tfft.errors import ConfigError, DataFormatError


def test_token_labels_are_o_then_b_and_i_by_type():
    examples = [TokenExample(["a", "b", "c"], ["B-PER", "I-PER", "O"]), TokenExample(["d"], ["B-LOC"])]
    label_map = LabelMap.from_token_examples(examples)
    # I-LOC is included although only B-LOC was seen, so a longer LOC elsewhere is not an error.
    assert label_map.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert (label_map.id("B-PER"), label_map.label(2), len(label_map)) == (3, "I-LOC", 5)


def test_token_labels_need_iob2_and_entities():
    with pytest.raises(DataFormatError, match=r"^<tokens>:0: tag 'S-PER' is not IOB2"):
        LabelMap.from_token_examples([TokenExample(["a"], ["S-PER"], "<tokens>:0")])
    with pytest.raises(DataFormatError, match="every tag is 'O'"):
        LabelMap.from_token_examples([TokenExample(["a"], ["O"])])
    with pytest.raises(DataFormatError, match="^x.txt:4: cannot build labels from unlabelled examples"):
        LabelMap.from_token_examples([TokenExample(["a"], None, "x.txt:4")])


def test_text_labels_sort_numerically_when_all_are_integers():
    assert LabelMap.from_text_examples(from_texts(list("abcd"), ["10", "2", "1", "-1"])).labels == ("-1", "1", "2", "10")
    assert LabelMap.from_text_examples(from_texts(list("abc"), ["pos", "neg", "nil"])).labels == ("neg", "nil", "pos")


def test_labels_mixing_integers_and_names_are_refused_naming_both():
    examples = [TextExample("a", None, "1", "train.jsonl:1"), TextExample("b", None, "neg", "train.jsonl:2")]
    with pytest.raises(DataFormatError, match=r"^train.jsonl:2: the label column mixes integers \('1' at "
                                              r"train.jsonl:1\) and names \('neg'\)"):
        LabelMap.from_text_examples(examples)


def test_a_single_class_is_rejected_naming_the_file(tmp_path):
    examples = [TextExample("a", None, "1", "train.tsv:2"), TextExample("b", None, "1", "train.tsv:3")]
    with pytest.raises(DataFormatError, match=r"^train.tsv: sequence classification needs at least 2 classes, found only '1'$"):
        LabelMap.from_text_examples(examples)
    with pytest.raises(DataFormatError, match="found no labelled examples"):
        LabelMap.from_text_examples([])


def test_dict_round_trip_in_hugging_face_shape():
    label_map = LabelMap(["O", "B-PER", "I-PER"])
    data = label_map.to_dict()
    assert data == {"id2label": {"0": "O", "1": "B-PER", "2": "I-PER"}, "label2id": {"O": 0, "B-PER": 1, "I-PER": 2}}
    assert LabelMap.from_dict(data) == label_map
    assert LabelMap.from_dict({"id2label": {1: "b", 0: "a"}}).labels == ("a", "b")


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "no 'id2label'"),
        ({"id2label": {"0": "a", "2": "b"}}, r"label ids must be 0\.\.1"),
        ({"id2label": {"x": "a"}}, "label ids must be integers"),
        ({"id2label": {"0": "a", "1": "b"}, "label2id": {"a": 1, "b": 0}}, "does not match"),
    ],
)
def test_from_dict_rejects_inconsistent_maps(data, message):
    with pytest.raises(ConfigError, match=message):
        LabelMap.from_dict(data)


def test_lookups_of_unknown_labels_and_ids():
    label_map = LabelMap(["neg", "pos"])
    with pytest.raises(DataFormatError, match="unknown label 'meh'; known labels: neg, pos"):
        label_map.id("meh")
    with pytest.raises(IndexError):
        label_map.label(2)
    with pytest.raises(ConfigError, match="duplicate labels"):
        LabelMap(["a", "a"])


def test_check_names_the_line_of_an_unseen_tag(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("EU B-ORG\nrejects O\n")
    valid = tmp_path / "valid.txt"
    valid.write_text("EU B-ORG\n\nPeter O\nand O\nFoo B-FOO\n")
    label_map = LabelMap.from_token_examples(read_conll(train))
    expected = f"{valid}:5: label 'B-FOO' was not seen in the training data; known labels: O, B-ORG, I-ORG"
    with pytest.raises(DataFormatError, match="^" + re.escape(expected) + "$"):
        label_map.check(read_conll(valid))


def test_check_text_and_in_memory_examples():
    label_map = LabelMap(["neg", "pos"])
    label_map.check(from_texts(["a", "b"], ["pos", "neg"]))
    label_map.check(from_texts(["a"]))  # unlabelled examples pass
    with pytest.raises(DataFormatError, match="^<texts>:1: label 'meh' was not seen"):
        label_map.check(from_texts(["a", "b"], ["pos", "meh"]))
    with pytest.raises(DataFormatError, match="^dev.tsv: label 'meh' was not seen"):
        label_map.check([TextExample("a", None, "meh")], "dev.tsv")
    token_map = LabelMap(["O", "B-PER", "I-PER"])
    # In-memory sentences have no lines: every token reports the sentence's index.
    with pytest.raises(DataFormatError, match="^<tokens>:1: label 'B-LOC'"):
        token_map.check(from_tokens([["a"], ["b", "c", "d"]], [["O"], ["O", "O", "B-LOC"]]))
