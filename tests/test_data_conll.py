import re
import types

import pytest

from tfft.data.conll import iter_conll, read_conll
from tfft.data.examples import TokenExample
from tfft.errors import ConfigError, DataFormatError


def write(tmp_path, text, name="train.txt", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))  # bytes, so line endings are exactly as written
    return path


def at(path, line=None):
    """The start of an error message located at path:line."""
    return "^" + re.escape(f"{path}:{line}: " if line is not None else f"{path}: ")


def test_space_separated_with_docstart_and_no_final_blank_line(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER")
    examples = read_conll(path)
    assert examples == [
        TokenExample(["EU", "rejects"], ["B-ORG", "O"]),
        TokenExample(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    assert [e.source for e in examples] == [f"{path}:3", f"{path}:6"]


def test_tabs_trailing_whitespace_crlf_and_several_blank_lines(tmp_path):
    path = write(tmp_path, "EU\tB-ORG \r\nrejects \t O\t\r\n\r\n\r\n  \r\nPeter   B-PER\r\n\r\n")
    assert read_conll(path) == [TokenExample(["EU", "rejects"], ["B-ORG", "O"]), TokenExample(["Peter"], ["B-PER"])]


def test_docstart_ends_a_sentence_without_a_blank_line(tmp_path):
    path = write(tmp_path, "EU B-ORG\n-DOCSTART- -X- -X- O\nPeter B-PER\n")
    assert [e.tokens for e in read_conll(path)] == [["EU"], ["Peter"]]


def test_tag_in_last_column_of_a_multi_column_file(tmp_path):
    path = write(tmp_path, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_conll(path) == [TokenExample(["EU", "rejects"], ["B-ORG", "O"])]


def test_chosen_token_and_tag_columns(tmp_path):
    path = write(tmp_path, "1\tEU\tB-ORG\tNNP\n2\trejects\tO\tVBZ\n")
    assert read_conll(path, token_column=1, tag_column=2) == [TokenExample(["EU", "rejects"], ["B-ORG", "O"])]


def test_tab_delimiter_keeps_spaces_inside_tokens(tmp_path):
    path = write(tmp_path, "New York\tB-LOC\nis\tO\n")
    assert read_conll(path, delimiter="\t")[0].tokens == ["New York", "is"]


def test_utf8_bom_is_not_part_of_the_first_token(tmp_path):
    path = write(tmp_path, "\ufeffEU B-ORG\n")
    assert read_conll(path)[0].tokens == ["EU"]


def test_iob1_and_bioes_files_are_converted_to_iob2(tmp_path):
    iob1 = write(tmp_path, "EU I-ORG\nrejects O\nGerman I-MISC\n\nPeter I-PER\nBlackburn I-PER\n", "iob1.txt")
    assert [e.tags for e in read_conll(iob1)] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert [e.tags for e in read_conll(iob1, scheme="IOB1")] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    bioes = write(tmp_path, "Peter B-PER\nBlackburn E-PER\nin O\nBonn S-LOC\n", "bioes.txt")
    assert read_conll(bioes)[0].tags == ["B-PER", "I-PER", "O", "B-LOC"]


def test_explicit_scheme_violation_names_the_tags_line(tmp_path):
    path = write(tmp_path, "EU B-ORG\n\nin O\nGerman I-MISC\n")
    with pytest.raises(DataFormatError, match=at(path, 4) + "tag 'I-MISC' after 'O' starts an entity"):
        read_conll(path, scheme="IOB2")
    with pytest.raises(ConfigError, match="unknown tagging scheme"):
        read_conll(path, scheme="BIO")


def test_comment_lines_before_a_sentence_are_skipped_but_hash_tokens_are_kept(tmp_path):
    text = "# sent_id = 1\n# text = EU rejects\nEU B-ORG\nrejects O\n\n#\n# O\nhashtag O\n"
    examples = read_conll(write(tmp_path, text))
    assert [e.tokens for e in examples] == [["EU", "rejects"], ["#", "hashtag"]]
    assert examples[1].source.endswith(":7")


def test_iter_conll_streams_the_tags_as_written(tmp_path):
    path = write(tmp_path, "EU I-ORG\n\nPeter S-PER\n")
    stream = iter_conll(path)
    assert isinstance(stream, types.GeneratorType)
    assert next(stream) == TokenExample(["EU"], ["I-ORG"])
    assert next(stream).tags == ["S-PER"]


def test_unlabelled_file_has_one_token_per_line(tmp_path):
    path = write(tmp_path, "EU\nrejects\n#\n\nPeter\n")
    examples = read_conll(path, labelled=False)
    assert examples == [TokenExample(["EU", "rejects", "#"], None), TokenExample(["Peter"], None)]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:5"]


def test_too_few_columns(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\n\nEU\n")
    expected = "expected 'TOKEN ... TAG' (at least 2 columns), got 1 column: 'EU'"
    with pytest.raises(DataFormatError, match=at(path, 3) + re.escape(expected)) as info:
        read_conll(path)
    assert (info.value.path, info.value.line) == (str(path), 3)


def test_too_few_columns_for_a_chosen_tag_column(tmp_path):
    path = write(tmp_path, "1 EU B-ORG\n2 rejects\n")
    with pytest.raises(DataFormatError, match=at(path, 2) + r".*tag in column 2 \(at least 3 columns\), got 2 columns"):
        read_conll(path, token_column=1, tag_column=2)


def test_malformed_tag(tmp_path):
    path = write(tmp_path, "EU B-ORG\nrejects 0\n")
    with pytest.raises(DataFormatError, match=at(path, 2) + "malformed tag '0'"):
        read_conll(path)


def test_empty_token_with_tab_delimiter(tmp_path):
    path = write(tmp_path, "EU\tB-ORG\n\tO\n")
    with pytest.raises(DataFormatError, match=at(path, 2) + "empty token in column 0"):
        read_conll(path, delimiter="\t")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("\n \r\n\n", "the file is empty"),
        ("-DOCSTART- O\n\n-DOCSTART- O\n", r"contains no sentences \(only -DOCSTART- or comment lines\)"),
    ],
)
def test_file_without_sentences(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError, match=at(path) + message):
        read_conll(path)


def test_latin1_file(tmp_path):
    path = write(tmp_path, "EU B-ORG\n\nMünchen B-LOC\n", encoding="latin-1")
    assert read_conll(path, encoding="latin-1")[1].tokens == ["München"]
    message = r"cannot decode byte 0xfc \(byte 2 of the line\) as utf-8; .*--encoding"
    with pytest.raises(DataFormatError, match=at(path, 3) + message):
        read_conll(path)


def test_missing_file_and_unusable_encodings(tmp_path):
    with pytest.raises(DataFormatError, match=at(tmp_path / "nope.txt") + "no such file"):
        read_conll(tmp_path / "nope.txt")
    path = write(tmp_path, "EU B-ORG\n")
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        read_conll(path, encoding="klingon")
    with pytest.raises(ConfigError, match="encoding 'cp037' is not supported"):
        read_conll(path, encoding="cp037")
    with pytest.raises(DataFormatError, match=at(path, 1) + "cannot decode the file as utf-16"):
        read_conll(path, encoding="utf-16")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_need_no_option(tmp_path, encoding):
    path = tmp_path / "wide.txt"
    path.write_bytes(("\ufeffEU B-ORG\r\nrejects O\r\n\r\nMünchen B-LOC\r\n").encode(encoding))
    examples = read_conll(path)
    assert [e.tokens for e in examples] == [["EU", "rejects"], ["München"]]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:4"]


def test_sentences_know_their_document(tmp_path):
    path = write(tmp_path, "-DOCSTART- -X- O\n\nEU B-ORG\n\nPeter B-PER\n\n-DOCSTART- -X- O\n\nBonn B-LOC\n")
    assert [(e.tokens, e.document) for e in read_conll(path)] == [(["EU"], 0), (["Peter"], 0), (["Bonn"], 1)]
    assert [e.document for e in iter_conll(path)] == [0, 0, 1]
    assert [e.document for e in read_conll(write(tmp_path, "EU B-ORG\n\nPeter B-PER\n"))] == [None, None]
