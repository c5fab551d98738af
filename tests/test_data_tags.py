import pytest

from tfft.data.tags import (
    TagError,
    detect_scheme,
    iob2_spans,
    normalise_sequences,
    resolve_scheme,
    split_tag,
    to_iob2,
)
from tfft.errors import ConfigError, DataFormatError


def test_split_tag_reads_prefix_and_type_and_maps_bilou_prefixes():
    assert split_tag("O") == ("O", None)
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("I-PER-DERIV") == ("I", "PER-DERIV")  # the type is everything after the first hyphen
    assert split_tag("L-LOC") == ("E", "LOC")
    assert split_tag("U-LOC") == ("S", "LOC")


@pytest.mark.parametrize("tag", ["", "o", "B", "B-", "BPER", "X-PER", "B_PER", "B-NEW YORK", "-PER"])
def test_split_tag_rejects_malformed_tags(tag):
    with pytest.raises(DataFormatError, match="malformed tag .*expected 'O' or PREFIX-TYPE"):
        split_tag(tag)


@pytest.mark.parametrize(
    "sequences, expected",
    [
        ([["B-PER", "I-PER", "O", "B-LOC"], ["O"]], "IOB2"),
        ([["B-PER", "B-PER", "I-PER"]], "IOB2"),
        ([["O", "O"]], "IOB2"),
        ([["B-PER", "I-PER"], ["O", "I-LOC", "I-LOC"]], "IOB1"),  # I- after O
        ([["I-PER", "O"]], "IOB1"),  # I- at the start of a sentence
        ([["B-PER", "I-LOC"]], "IOB1"),  # I- after another type
        ([["I-PER", "B-PER", "O"]], "IOB1"),
        ([["B-PER", "E-PER", "S-LOC"]], "BIOES"),
        ([["O"], ["S-LOC"]], "BIOES"),
        ([["B-PER", "L-PER", "U-LOC"]], "BIOES"),  # BILOU
    ],
)
def test_detect_scheme(sequences, expected):
    assert detect_scheme(sequences) == expected


def test_iob1_to_iob2():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "I-MISC", "O", "I-PER"]
    assert to_iob2(tags, "IOB1") == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "B-MISC", "O", "B-PER"]


def test_iob2_is_left_as_is():
    tags = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]
    assert to_iob2(tags, "IOB2") == tags


def test_bioes_to_iob2():
    tags = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "S-ORG", "B-MISC", "E-MISC"]
    assert to_iob2(tags, "BIOES") == ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "B-MISC", "I-MISC"]


def test_bilou_and_iobes_names_are_bioes():
    assert to_iob2(["U-PER", "B-LOC", "I-LOC", "L-LOC"], "BILOU") == ["B-PER", "B-LOC", "I-LOC", "I-LOC"]
    assert to_iob2(["S-PER", "E-PER"], "IOBES") == ["B-PER", "B-PER"]  # E- after a finished entity starts one


def test_auto_detects_per_corpus():
    # The second sentence alone looks like IOB2; the first makes the corpus IOB1.
    assert normalise_sequences([["O", "I-PER"], ["B-LOC", "I-LOC"]], "auto") == [["O", "B-PER"], ["B-LOC", "I-LOC"]]
    assert to_iob2(["O", "I-PER", "I-PER"]) == ["O", "B-PER", "I-PER"]


def test_explicit_iob2_rejects_an_entity_starting_with_i():
    with pytest.raises(TagError, match=r"tag 'I-LOC' after 'O' starts an entity, which IOB2 does not allow") as info:
        normalise_sequences([["B-PER"], ["O", "I-LOC"]], "IOB2")
    assert (info.value.sequence, info.value.index) == (1, 1)


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2"])
def test_iob_schemes_reject_bioes_tags(scheme):
    with pytest.raises(TagError, match=f"tag 'S-PER' is a BIOES tag, which {scheme} does not have") as info:
        to_iob2(["O", "S-PER"], scheme)
    assert info.value.index == 1


def test_malformed_tag_in_a_corpus_is_located():
    with pytest.raises(TagError, match="malformed tag 'PER'") as info:
        normalise_sequences([["O"], ["B-LOC", "PER"]])
    assert (info.value.sequence, info.value.index) == (1, 1)


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown tagging scheme 'IOB3'"):
        resolve_scheme("IOB3", [])


def test_iob2_spans():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    assert iob2_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6), ("ORG", 7, 8)]
    assert iob2_spans(["O", "O"]) == []
    assert iob2_spans([]) == []


def test_iob2_spans_is_lenient_with_predicted_sequences():
    # A stray I- starts an entity; an I- of another type ends the previous one.
    assert iob2_spans(["I-PER", "I-PER", "I-LOC", "O", "I-LOC"]) == [("PER", 0, 2), ("LOC", 2, 3), ("LOC", 4, 5)]
    assert iob2_spans(["S-PER", "B-LOC", "E-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]
